/* Unit tests of the validators of src/lib/json/json.c (ag_v_*) and of its list
 * envelope (ag_page_envelope), run directly on jansson objects. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/json.h"

static json_t *obj(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    if (!j) fail_msg("bad test JSON %s: %s", text, err.text);
    return j;
}

/* Number of problems recorded. */
static size_t nproblems(const ag_validator *v)
{
    return json_array_size(v->details);
}

/* The message of problem `i`, after checking the entry's shape. */
static const char *problem(const ag_validator *v, size_t i, const char *field)
{
    json_t *d = json_array_get(v->details, i);
    assert_non_null(d);
    assert_true(json_is_object(d));
    assert_int_equal(json_object_size(d), 2);
    assert_true(json_is_string(json_object_get(d, "field")));
    assert_string_equal(json_string_value(json_object_get(d, "field")), field);
    json_t *m = json_object_get(d, "message");
    assert_true(json_is_string(m));
    return json_string_value(m);
}

static void test_required_missing(void **state)
{
    (void)state;
    json_t *body = obj("{\"name\":\"Ada\"}");
    ag_validator v;
    ag_v_init(&v);
    assert_true(ag_v_ok(&v));
    assert_null(ag_v_email(&v, body, "email", AG_V_REQUIRED));
    assert_false(ag_v_ok(&v));
    assert_int_equal(nproblems(&v), 1);
    assert_string_equal(problem(&v, 0, "email"), "email is required");
    assert_string_equal(v.first, "email is required");
    ag_v_release(&v);
    assert_null(v.details);
    json_decref(body);
}

static void test_optional_absent_records_nothing(void **state)
{
    (void)state;
    json_t *body = obj("{}");
    ag_validator v;
    ag_v_init(&v);
    long long q = 5;
    bool b = true;
    assert_null(ag_v_str(&v, body, "nick", 0, 1, 10));
    assert_false(ag_v_int(&v, body, "quantity", 0, 1, 100, &q));
    assert_false(ag_v_bool(&v, body, "flag", 0, &b));
    assert_null(ag_v_object(&v, body, "addr", 0));
    assert_null(ag_v_array(&v, body, "tags", 0, 0, 10));
    assert_null(ag_v_email(&v, body, "email", 0));
    assert_true(ag_v_ok(&v));
    assert_int_equal(q, 5); /* out untouched */
    assert_true(b);
    assert_string_equal(v.first, "");
    ag_v_release(&v);
    json_decref(body);
}

static void test_values_returned(void **state)
{
    (void)state;
    json_t *body = obj("{\"name\":\"Ada\",\"qty\":7,\"ok\":false,\"addr\":{\"c\":1},"
                       "\"tags\":[1,2],\"email\":\"ada@example.com\"}");
    ag_validator v;
    ag_v_init(&v);
    const char *name = ag_v_str(&v, body, "name", AG_V_REQUIRED, 1, 10);
    assert_string_equal(name, "Ada");
    assert_ptr_equal(name, json_string_value(json_object_get(body, "name"))); /* borrowed */
    long long q = 0;
    assert_true(ag_v_int(&v, body, "qty", AG_V_REQUIRED, 1, 100, &q));
    assert_int_equal(q, 7);
    bool b = true;
    assert_true(ag_v_bool(&v, body, "ok", AG_V_REQUIRED, &b));
    assert_false(b);
    assert_ptr_equal(ag_v_object(&v, body, "addr", AG_V_REQUIRED), json_object_get(body, "addr"));
    assert_ptr_equal(ag_v_array(&v, body, "tags", AG_V_REQUIRED, 1, 5),
                     json_object_get(body, "tags"));
    assert_string_equal(ag_v_email(&v, body, "email", AG_V_REQUIRED), "ada@example.com");
    assert_true(ag_v_ok(&v));
    ag_v_release(&v);
    json_decref(body);
}

static void test_wrong_types(void **state)
{
    (void)state;
    json_t *body = obj("{\"name\":5,\"qty\":\"7\",\"ok\":1,\"addr\":[],\"tags\":{},"
                       "\"real\":1.5,\"email\":true}");
    ag_validator v;
    ag_v_init(&v);
    long long q = 3;
    bool b = true;
    assert_null(ag_v_str(&v, body, "name", AG_V_REQUIRED, 0, 0));
    assert_false(ag_v_int(&v, body, "qty", AG_V_REQUIRED, 0, 10, &q));
    assert_false(ag_v_bool(&v, body, "ok", 0, &b));
    assert_null(ag_v_object(&v, body, "addr", 0));
    assert_null(ag_v_array(&v, body, "tags", 0, 0, 0));
    assert_false(ag_v_int(&v, body, "real", 0, 0, 10, &q));
    assert_null(ag_v_email(&v, body, "email", 0));
    assert_int_equal(nproblems(&v), 7);
    assert_string_equal(problem(&v, 0, "name"), "name must be a string");
    assert_string_equal(problem(&v, 1, "qty"), "qty must be an integer");
    assert_string_equal(problem(&v, 2, "ok"), "ok must be true or false");
    assert_string_equal(problem(&v, 3, "addr"), "addr must be an object");
    assert_string_equal(problem(&v, 4, "tags"), "tags must be an array");
    assert_string_equal(problem(&v, 5, "real"), "real must be an integer");
    assert_string_equal(problem(&v, 6, "email"), "email must be a string");
    assert_string_equal(v.first, "name must be a string"); /* the first one */
    assert_int_equal(q, 3);
    assert_true(b);
    ag_v_release(&v);
    json_decref(body);
}

static void test_string_lengths_in_code_points(void **state)
{
    (void)state;
    /* "héllo" is 5 code points in 6 bytes; "日本語" 3 code points in 9 bytes;
     * an emoji is 1 code point in 4 bytes. */
    json_t *body = obj("{\"a\":\"h\\u00e9llo\",\"b\":\"\\u65e5\\u672c\\u8a9e\","
                       "\"c\":\"\\ud83d\\ude00\",\"d\":\"ab\",\"e\":\"abcdef\"}");
    ag_validator v;
    ag_v_init(&v);
    assert_non_null(ag_v_str(&v, body, "a", 0, 5, 5));
    assert_non_null(ag_v_str(&v, body, "b", 0, 3, 3));
    assert_non_null(ag_v_str(&v, body, "c", 0, 1, 1));
    assert_true(ag_v_ok(&v));
    assert_null(ag_v_str(&v, body, "a", 0, 0, 4));
    assert_null(ag_v_str(&v, body, "b", 0, 4, 10));
    assert_null(ag_v_str(&v, body, "d", 0, 3, 50));
    assert_null(ag_v_str(&v, body, "e", 0, 0, 5));
    assert_null(ag_v_str(&v, body, "d", 0, 3, 0)); /* max 0: no upper bound */
    assert_non_null(ag_v_str(&v, body, "e", 0, 3, 0));
    assert_int_equal(nproblems(&v), 5);
    assert_string_equal(problem(&v, 0, "a"), "a must be at most 4 characters long");
    assert_string_equal(problem(&v, 1, "b"), "b must be 4 to 10 characters long");
    assert_string_equal(problem(&v, 2, "d"), "d must be 3 to 50 characters long");
    assert_string_equal(problem(&v, 3, "e"), "e must be at most 5 characters long");
    assert_string_equal(problem(&v, 4, "d"), "d must be at least 3 characters long");
    ag_v_release(&v);
    json_decref(body);
}

static void test_string_with_nul_refused(void **state)
{
    (void)state;
    json_t *body = json_object();
    json_object_set_new(body, "s", json_stringn("a\0b", 3));
    ag_validator v;
    ag_v_init(&v);
    assert_null(ag_v_str(&v, body, "s", AG_V_REQUIRED, 0, 10));
    assert_int_equal(nproblems(&v), 1);
    assert_string_equal(problem(&v, 0, "s"), "s must not contain NUL characters");
    ag_v_release(&v);
    json_decref(body);
}

static void test_int_ranges(void **state)
{
    (void)state;
    json_t *body = obj("{\"lo\":1,\"hi\":100,\"under\":0,\"over\":101,\"neg\":-5,"
                       "\"max\":9223372036854775807}");
    ag_validator v;
    ag_v_init(&v);
    long long x = -1;
    assert_true(ag_v_int(&v, body, "lo", 0, 1, 100, &x));
    assert_int_equal(x, 1);
    assert_true(ag_v_int(&v, body, "hi", 0, 1, 100, &x));
    assert_int_equal(x, 100);
    assert_true(ag_v_int(&v, body, "neg", 0, -10, -1, &x));
    assert_int_equal(x, -5);
    assert_true(ag_v_int(&v, body, "max", 0, 0, INT64_MAX, &x));
    assert_true(x == INT64_MAX);
    assert_true(ag_v_ok(&v));
    x = 42;
    assert_false(ag_v_int(&v, body, "under", 0, 1, 100, &x));
    assert_false(ag_v_int(&v, body, "over", 0, 1, 100, &x));
    assert_int_equal(x, 42);
    assert_int_equal(nproblems(&v), 2);
    assert_string_equal(problem(&v, 0, "under"), "under must be between 1 and 100");
    assert_string_equal(problem(&v, 1, "over"), "over must be between 1 and 100");
    ag_v_release(&v);
    json_decref(body);
}

static void test_array_sizes(void **state)
{
    (void)state;
    json_t *body = obj("{\"none\":[],\"three\":[1,2,3]}");
    ag_validator v;
    ag_v_init(&v);
    assert_non_null(ag_v_array(&v, body, "three", 0, 1, 3));
    assert_non_null(ag_v_array(&v, body, "none", 0, 0, 3));
    assert_non_null(ag_v_array(&v, body, "three", 0, 0, 0)); /* max 0: unlimited */
    assert_true(ag_v_ok(&v));
    assert_null(ag_v_array(&v, body, "three", 0, 1, 2));
    assert_null(ag_v_array(&v, body, "none", 0, 1, 5));
    assert_int_equal(nproblems(&v), 2);
    assert_string_equal(problem(&v, 0, "three"), "three must have 1 to 2 items");
    assert_string_equal(problem(&v, 1, "none"), "none must have 1 to 5 items");
    ag_v_release(&v);
    json_decref(body);
}

/* With no upper bound (max_items 0) the message must not claim "1 to 0". */
static void test_array_min_only_message(void **state)
{
    (void)state;
    json_t *body = obj("{\"tags\":[]}");
    ag_validator v;
    ag_v_init(&v);
    assert_null(ag_v_array(&v, body, "tags", AG_V_REQUIRED, 1, 0));
    assert_int_equal(nproblems(&v), 1);
    char msg[256];
    snprintf(msg, sizeof msg, "%s", problem(&v, 0, "tags"));
    ag_v_release(&v);
    json_decref(body);
    if (strstr(msg, "to 0") != NULL) fail_msg("message \"%s\" names an upper bound of 0", msg);
    assert_non_null(strstr(msg, "1"));
}

static void test_email(void **state)
{
    (void)state;
    static const char *const good[] = {
        "a@b.co",
        "ada@example.com",
        "first.last+tag@sub.example.org",
        "x_y-z@e-x.io",
    };
    static const char *const bad[] = {
        "no-at-sign.com",    "@example.com",     "ada@example",
        "ada@@example.com",  "a@b@example.com",  "ada lovelace@example.com",
        "ada@.example.com",  "ada@example.com.", "ada@exa mple.com",
        "<ada@example.com>", "ada@example,com",  "a\"b@example.com",
        "ada@ex:ample.com",  "a@b.c\n",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        json_t *body = json_pack("{s:s}", "email", good[i]);
        ag_validator v;
        ag_v_init(&v);
        const char *e = ag_v_email(&v, body, "email", AG_V_REQUIRED);
        if (!e) fail_msg("\"%s\" refused: %s", good[i], v.first);
        assert_string_equal(e, good[i]);
        assert_true(ag_v_ok(&v));
        ag_v_release(&v);
        json_decref(body);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *body = json_pack("{s:s}", "email", bad[i]);
        ag_validator v;
        ag_v_init(&v);
        if (ag_v_email(&v, body, "email", AG_V_REQUIRED) != NULL)
            fail_msg("\"%s\" accepted as an e-mail address", bad[i]);
        assert_int_equal(nproblems(&v), 1);
        assert_string_equal(problem(&v, 0, "email"), "email must be a valid e-mail address");
        ag_v_release(&v);
        json_decref(body);
    }
}

static void test_email_length_reported_once(void **state)
{
    (void)state;
    char longmail[300];
    memset(longmail, 'a', sizeof longmail);
    memcpy(longmail + 280, "@example.com", 13); /* 292 characters */
    json_t *body = json_pack("{s:s, s:s}", "email", longmail, "short", "a@");
    ag_validator v;
    ag_v_init(&v);
    assert_null(ag_v_email(&v, body, "email", AG_V_REQUIRED));
    assert_null(ag_v_email(&v, body, "short", AG_V_REQUIRED));
    assert_int_equal(nproblems(&v), 2); /* one problem each, not two */
    assert_string_equal(problem(&v, 0, "email"), "email must be 3 to 254 characters long");
    assert_string_equal(problem(&v, 1, "short"), "short must be 3 to 254 characters long");
    ag_v_release(&v);
    json_decref(body);
}

static void test_nullable(void **state)
{
    (void)state;
    json_t *body = obj("{\"nick\":null,\"age\":null,\"bio\":null}");
    ag_validator v;
    ag_v_init(&v);
    long long age = 9;
    /* null is accepted for a nullable field, optional or required. */
    assert_null(ag_v_str(&v, body, "nick", AG_V_NULLABLE, 1, 10));
    assert_false(ag_v_int(&v, body, "age", AG_V_NULLABLE | AG_V_REQUIRED, 0, 150, &age));
    assert_true(ag_v_ok(&v));
    assert_int_equal(age, 9);
    /* A required nullable field must still be present. */
    assert_null(ag_v_str(&v, body, "missing", AG_V_NULLABLE | AG_V_REQUIRED, 0, 10));
    assert_int_equal(nproblems(&v), 1);
    assert_string_equal(problem(&v, 0, "missing"), "missing is required");
    /* Without AG_V_NULLABLE, null is a problem. */
    assert_null(ag_v_str(&v, body, "bio", 0, 0, 10));
    assert_int_equal(nproblems(&v), 2);
    problem(&v, 1, "bio");
    ag_v_release(&v);
    json_decref(body);
}

static void test_not_an_object(void **state)
{
    (void)state;
    json_t *arr = obj("[1,2]");
    ag_validator v;
    ag_v_init(&v);
    assert_null(ag_v_str(&v, arr, "name", AG_V_REQUIRED, 0, 0));
    assert_null(ag_v_str(&v, NULL, "email", AG_V_REQUIRED, 0, 0));
    assert_null(ag_v_str(&v, NULL, "opt", 0, 0, 0));
    assert_int_equal(nproblems(&v), 2);
    assert_string_equal(problem(&v, 0, "name"), "name is required");
    assert_string_equal(problem(&v, 1, "email"), "email is required");
    ag_v_release(&v);
    json_decref(arr);
}

static void test_fields_shape_of_a_body(void **state)
{
    (void)state;
    static const char *const allowed[] = {"name", "age", NULL};
    ag_validator v;
    ag_v_init(&v);
    json_t *arr = obj("[1]");
    assert_false(ag_v_fields(&v, arr, allowed));
    assert_int_equal(nproblems(&v), 1);
    assert_string_equal(problem(&v, 0, ""), "the body must be a JSON object");
    ag_v_release(&v);
    json_decref(arr);

    ag_v_init(&v);
    json_t *o = obj("{\"name\":\"x\",\"role\":\"admin\",\"age\":3,\"id\":1}");
    assert_true(ag_v_fields(&v, o, allowed)); /* an object: read on */
    assert_int_equal(nproblems(&v), 2);
    assert_string_equal(problem(&v, 0, "role"), "role is not a known field");
    assert_string_equal(problem(&v, 1, "id"), "id is not a known field");
    ag_v_release(&v);

    ag_v_init(&v);
    assert_true(ag_v_fields(&v, o, NULL)); /* any field */
    assert_true(ag_v_ok(&v));
    ag_v_release(&v);
    json_decref(o);
}

static void test_fail_and_details_shape(void **state)
{
    (void)state;
    ag_validator v;
    ag_v_init(&v);
    ag_v_fail(&v, "total", "%s must equal %d", "total", 12);
    ag_v_fail(&v, "items[0].sku", "unknown sku \"%s\"", "X-1");
    assert_int_equal(nproblems(&v), 2);
    assert_true(json_is_array(v.details));
    assert_string_equal(problem(&v, 0, "total"), "total must equal 12");
    assert_string_equal(problem(&v, 1, "items[0].sku"), "unknown sku \"X-1\"");
    assert_string_equal(v.first, "total must equal 12");
    /* A very long message is cut, not overflowed. */
    char big[600];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ag_validator w;
    ag_v_init(&w);
    ag_v_fail(&w, "f", "%s", big);
    assert_true(strlen(w.first) < sizeof w.first);
    assert_true(strlen(w.first) >= 200);
    ag_v_release(&w);
    ag_v_release(&v);
}

/* The §4 list envelope, key for key; pages rounds up and is 0 for no rows. */
static void test_page_envelope(void **state)
{
    (void)state;
    const struct {
        int64_t page, limit, total, pages;
    } cases[] = {{1, 20, 0, 0}, {1, 20, 1, 1}, {2, 20, 40, 2}, {3, 20, 41, 3}, {1, 1, 5, 5}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *data = obj("[{\"id\":1}]");
        json_t *env = ag_page_envelope(data, cases[i].page, cases[i].limit, cases[i].total);
        assert_non_null(env);
        char *text = json_dumps(env, JSON_COMPACT);
        char want[256];
        snprintf(want, sizeof want,
                 "{\"success\":true,\"data\":[{\"id\":1}],\"pagination\":{\"page\":%lld,"
                 "\"limit\":%lld,\"total\":%lld,\"pages\":%lld}}",
                 (long long)cases[i].page, (long long)cases[i].limit, (long long)cases[i].total,
                 (long long)cases[i].pages);
        assert_string_equal(text, want);
        free(text);
        json_decref(env);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_required_missing),
        cmocka_unit_test(test_optional_absent_records_nothing),
        cmocka_unit_test(test_values_returned),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_string_lengths_in_code_points),
        cmocka_unit_test(test_string_with_nul_refused),
        cmocka_unit_test(test_int_ranges),
        cmocka_unit_test(test_array_sizes),
        cmocka_unit_test(test_array_min_only_message),
        cmocka_unit_test(test_email),
        cmocka_unit_test(test_email_length_reported_once),
        cmocka_unit_test(test_nullable),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_fields_shape_of_a_body),
        cmocka_unit_test(test_fail_and_details_shape),
        cmocka_unit_test(test_page_envelope),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
