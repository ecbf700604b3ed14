/* Unit tests of src/lib/http/router.c: literal/param/wildcard matching, precedence, HEAD, 405 Allow lists and pattern validation. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/http.h"
#include "http/internal.h" /* the per-route stats the server labels metrics with */

static void h_a(ag_http_req *req, ag_http_res *res, void *ud)
{
    (void)req, (void)res, (void)ud;
}

static void h_b(ag_http_req *req, ag_http_res *res, void *ud)
{
    (void)req, (void)res, (void)ud;
}

/* Tags passed as ud identify which route matched. */
static int T_ME, T_ID, T_POSTS, T_POST_ID, T_LIST, T_STATIC, T_ROOT, T_CREATE, T_SETTINGS;

/* The value of parameter `name` in `m`, copied (values are not terminated). */
static const char *param(const ag_route_match *m, const char *name)
{
    static char buf[256];
    for (int i = 0; i < m->nparams; i++) {
        if (strcmp(m->params[i].name, name) == 0) {
            size_t n = m->params[i].len < sizeof buf - 1 ? m->params[i].len : sizeof buf - 1;
            memcpy(buf, m->params[i].value, n);
            buf[n] = '\0';
            return buf;
        }
    }
    return NULL;
}

static int make_router(void **state)
{
    ag_router *r = ag_router_new();
    assert_int_equal(ag_router_add(r, "GET", "/", h_a, &T_ROOT, 0), 0);
    assert_int_equal(ag_router_add(r, "GET", "/v1/users", h_a, &T_LIST, AG_ROUTE_INLINE), 0);
    assert_int_equal(ag_router_add(r, "POST", "/v1/users", h_b, &T_CREATE, AG_ROUTE_JSON), 0);
    assert_int_equal(ag_router_add(r, "GET", "/v1/users/:id", h_a, &T_ID, 0), 0);
    assert_int_equal(ag_router_add(r, "PUT", "/v1/users/:id", h_b, &T_ID, 0), 0);
    assert_int_equal(ag_router_add(r, "DELETE", "/v1/users/:id", h_b, &T_ID, 0), 0);
    assert_int_equal(ag_router_add(r, "GET", "/v1/users/me", h_b, &T_ME, 0), 0);
    assert_int_equal(ag_router_add(r, "GET", "/v1/users/:id/posts", h_a, &T_POSTS, 0), 0);
    assert_int_equal(ag_router_add(r, "GET", "/v1/users/:id/posts/:post", h_a, &T_POST_ID, 0),
                     0);
    assert_int_equal(ag_router_add(r, "GET", "/static/*", h_a, &T_STATIC, 0), 0);
    *state = r;
    return 0;
}

static int free_router(void **state)
{
    ag_router_free(*state);
    return 0;
}

static void test_literal_beats_param(void **state)
{
    ag_router *r = *state;
    ag_route_match m;
    assert_int_equal(ag_router_match(r, "GET", "/v1/users/me", &m), 0);
    assert_ptr_equal(m.ud, &T_ME);
    assert_ptr_equal(m.handler, h_b);
    assert_string_equal(m.pattern, "/v1/users/me");
    assert_int_equal(m.nparams, 0);

    assert_int_equal(ag_router_match(r, "GET", "/v1/users/42", &m), 0);
    assert_ptr_equal(m.ud, &T_ID);
    assert_string_equal(m.pattern, "/v1/users/:id");
    assert_int_equal(m.nparams, 1);
    assert_string_equal(param(&m, "id"), "42");
    /* "mee" and "m" are not "me". */
    assert_int_equal(ag_router_match(r, "GET", "/v1/users/mee", &m), 0);
    assert_ptr_equal(m.ud, &T_ID);
    assert_string_equal(param(&m, "id"), "mee");
}

static void test_params(void **state)
{
    ag_router *r = *state;
    ag_route_match m;
    assert_int_equal(ag_router_match(r, "GET", "/v1/users/7/posts/99", &m), 0);
    assert_ptr_equal(m.ud, &T_POST_ID);
    assert_int_equal(m.nparams, 2);
    assert_string_equal(m.params[0].name, "id");
    assert_string_equal(param(&m, "id"), "7");
    assert_string_equal(param(&m, "post"), "99");
    /* Under a literal prefix, a parameter still binds ("me" here is an id). */
    assert_int_equal(ag_router_match(r, "GET", "/v1/users/me/posts", &m), 0);
    assert_ptr_equal(m.ud, &T_POSTS);
    assert_string_equal(param(&m, "id"), "me");
    /* Values are raw (not decoded). */
    assert_int_equal(ag_router_match(r, "GET", "/v1/users/a%20b", &m), 0);
    assert_string_equal(param(&m, "id"), "a%20b");
    /* A parameter is one segment: too deep or too shallow does not match. */
    assert_int_equal(ag_router_match(r, "GET", "/v1/users/7/posts/99/x", &m), AG_ENOTFOUND);
    assert_int_equal(ag_router_match(r, "GET", "/v1/users/7/comments", &m), AG_ENOTFOUND);
    assert_int_equal(m.allow[0], '\0');
}

static void test_wildcard(void **state)
{
    ag_router *r = *state;
    ag_route_match m;
    assert_int_equal(ag_router_match(r, "GET", "/static/css/site.css", &m), 0);
    assert_ptr_equal(m.ud, &T_STATIC);
    assert_string_equal(param(&m, "*"), "css/site.css");
    assert_int_equal(ag_router_match(r, "GET", "/static/a", &m), 0);
    assert_string_equal(param(&m, "*"), "a");
    assert_int_equal(ag_router_match(r, "GET", "/static/a/b/c/", &m), 0);
    assert_string_equal(param(&m, "*"), "a/b/c");
    assert_int_equal(ag_router_match(r, "GET", "/staticx/a", &m), AG_ENOTFOUND);
}

static void test_trailing_slash_and_root(void **state)
{
    ag_router *r = *state;
    ag_route_match m;
    assert_int_equal(ag_router_match(r, "GET", "/v1/users/", &m), 0);
    assert_ptr_equal(m.ud, &T_LIST);
    assert_int_equal(ag_router_match(r, "GET", "/v1/users/42/", &m), 0);
    assert_ptr_equal(m.ud, &T_ID);
    assert_string_equal(param(&m, "id"), "42");
    assert_int_equal(ag_router_match(r, "GET", "/", &m), 0);
    assert_ptr_equal(m.ud, &T_ROOT);
    assert_int_equal(ag_router_match(r, "GET", "/nope", &m), AG_ENOTFOUND);
    assert_null(m.handler);
    assert_null(m.pattern);
    assert_int_equal(m.allow[0], '\0');
    /* A prefix of a route is not a route. */
    assert_int_equal(ag_router_match(r, "GET", "/v1", &m), AG_ENOTFOUND);
    assert_int_equal(m.allow[0], '\0');
}

static void test_flags_and_methods(void **state)
{
    ag_router *r = *state;
    ag_route_match m;
    assert_int_equal(ag_router_match(r, "GET", "/v1/users", &m), 0);
    assert_int_equal(m.flags, AG_ROUTE_INLINE);
    assert_ptr_equal(m.handler, h_a);
    assert_int_equal(ag_router_match(r, "POST", "/v1/users", &m), 0);
    assert_int_equal(m.flags, AG_ROUTE_JSON);
    assert_ptr_equal(m.ud, &T_CREATE);
    assert_ptr_equal(m.handler, h_b);
    assert_non_null(m.stats);
    /* Methods are case-sensitive. */
    assert_int_equal(ag_router_match(r, "get", "/v1/users", &m), AG_ENOTFOUND);
}

static void test_head_answers_get(void **state)
{
    ag_router *r = *state;
    ag_route_match m;
    assert_int_equal(ag_router_match(r, "HEAD", "/v1/users/5", &m), 0);
    assert_ptr_equal(m.ud, &T_ID);
    assert_string_equal(m.pattern, "/v1/users/:id");
    assert_string_equal(param(&m, "id"), "5");
    assert_int_equal(ag_router_match(r, "HEAD", "/v1/users/me", &m), 0);
    assert_ptr_equal(m.ud, &T_ME);
}

static void test_explicit_head_route_wins(void **state)
{
    (void)state;
    ag_router *r = ag_router_new();
    assert_int_equal(ag_router_add(r, "GET", "/x", h_a, &T_LIST, 0), 0);
    assert_int_equal(ag_router_add(r, "HEAD", "/x", h_b, &T_ME, 0), 0);
    ag_route_match m;
    assert_int_equal(ag_router_match(r, "HEAD", "/x", &m), 0);
    assert_ptr_equal(m.ud, &T_ME);
    assert_int_equal(ag_router_match(r, "DELETE", "/x", &m), AG_ENOTFOUND);
    assert_string_equal(m.allow, "GET, HEAD, OPTIONS"); /* HEAD once */
    ag_router_free(r);
}

static bool allow_has(const char *allow, const char *method)
{
    /* Exact list items, separated by ", ". */
    size_t n = strlen(method);
    for (const char *p = allow; (p = strstr(p, method)) != NULL; p += n) {
        bool start = p == allow || (p >= allow + 2 && p[-2] == ',' && p[-1] == ' ');
        bool end = p[n] == '\0' || p[n] == ',';
        if (start && end) return true;
    }
    return false;
}

static void test_405_allow(void **state)
{
    ag_router *r = *state;
    ag_route_match m;
    assert_int_equal(ag_router_match(r, "PATCH", "/v1/users/3", &m), AG_ENOTFOUND);
    assert_true(m.allow[0] != '\0'); /* the path exists: 405 */
    assert_null(m.handler);
    assert_int_equal(m.nparams, 0);
    static const char *const want[] = {"GET", "PUT", "DELETE", "HEAD", "OPTIONS"};
    for (size_t i = 0; i < 5; i++)
        if (!allow_has(m.allow, want[i])) fail_msg("Allow \"%s\" lacks %s", m.allow, want[i]);
    assert_false(allow_has(m.allow, "POST"));
    assert_false(allow_has(m.allow, "PATCH"));

    assert_int_equal(ag_router_match(r, "DELETE", "/v1/users", &m), AG_ENOTFOUND);
    assert_string_equal(m.allow, "GET, POST, HEAD, OPTIONS");

    /* Without a GET route there is no implicit HEAD. */
    ag_router *r2 = ag_router_new();
    assert_int_equal(ag_router_add(r2, "POST", "/only-post", h_a, NULL, 0), 0);
    assert_int_equal(ag_router_match(r2, "GET", "/only-post", &m), AG_ENOTFOUND);
    assert_string_equal(m.allow, "POST, OPTIONS");
    assert_int_equal(ag_router_match(r2, "HEAD", "/only-post", &m), AG_ENOTFOUND);
    assert_string_equal(m.allow, "POST, OPTIONS");
    /* An explicit OPTIONS route is listed once. */
    assert_int_equal(ag_router_add(r2, "OPTIONS", "/only-post", h_a, NULL, 0), 0);
    assert_int_equal(ag_router_match(r2, "PUT", "/only-post", &m), AG_ENOTFOUND);
    assert_string_equal(m.allow, "POST, OPTIONS");
    ag_router_free(r2);
}

static void test_duplicate_route(void **state)
{
    ag_router *r = *state;
    assert_int_equal(ag_router_add(r, "GET", "/v1/users/:id", h_b, NULL, 0), AG_EEXISTS);
    assert_int_equal(ag_router_add(r, "GET", "/v1/users/me", h_b, NULL, 0), AG_EEXISTS);
    assert_int_equal(ag_router_add(r, "GET", "/v1/users/", h_b, NULL, 0), AG_EEXISTS);
    /* The first registration still answers. */
    ag_route_match m;
    assert_int_equal(ag_router_match(r, "GET", "/v1/users/9", &m), 0);
    assert_ptr_equal(m.ud, &T_ID);
    /* Same path, other method: fine. */
    assert_int_equal(ag_router_add(r, "PATCH", "/v1/users/:id", h_b, &T_POSTS, 0), 0);
    assert_int_equal(ag_router_match(r, "PATCH", "/v1/users/9", &m), 0);
    assert_ptr_equal(m.ud, &T_POSTS);
}

static void test_bad_patterns_and_methods(void **state)
{
    ag_router *r = *state;
    static const char *const bad_patterns[] = {
        "",         "v1/users", "users",    "/v1/:",     "/v1/:/x",
        "/files/*/x", "/files/*x", "/files/x*y/*/z",
    };
    for (size_t i = 0; i < sizeof bad_patterns / sizeof bad_patterns[0]; i++)
        if (ag_router_add(r, "GET", bad_patterns[i], h_a, NULL, 0) != AG_EINVAL)
            fail_msg("pattern \"%s\" accepted", bad_patterns[i]);
    /* Two names for one parameter position. */
    assert_int_equal(ag_router_add(r, "GET", "/v1/users/:uid/likes", h_a, NULL, 0), AG_EINVAL);

    static const char *const bad_methods[] = {"", "get", "G T", "GET\n", "VERYLONGMETHODNAME"};
    for (size_t i = 0; i < sizeof bad_methods / sizeof bad_methods[0]; i++)
        if (ag_router_add(r, bad_methods[i], "/m", h_a, NULL, 0) != AG_EINVAL)
            fail_msg("method \"%s\" accepted", bad_methods[i]);
    assert_int_equal(ag_router_add(r, NULL, "/m", h_a, NULL, 0), AG_EINVAL);
    assert_int_equal(ag_router_add(r, "GET", NULL, h_a, NULL, 0), AG_EINVAL);
    assert_int_equal(ag_router_add(r, "GET", "/m", NULL, NULL, 0), AG_EINVAL);
    ag_route_match m;
    assert_int_equal(ag_router_match(r, "GET", "/m", &m), AG_ENOTFOUND);
    assert_int_equal(ag_router_use(r, NULL, NULL), AG_EINVAL);
}

/* A literal route deeper than a path must not hide a parameter route for that
 * path: with /v1/users/me/settings registered, /v1/users/me is still
 * /v1/users/:id with id "me". */
static void test_intermediate_literal_does_not_hide_param(void **state)
{
    (void)state;
    ag_router *r = ag_router_new();
    assert_int_equal(ag_router_add(r, "GET", "/v1/users/:id", h_a, &T_ID, 0), 0);
    assert_int_equal(ag_router_add(r, "GET", "/v1/users/me/settings", h_b, &T_SETTINGS, 0), 0);
    ag_route_match m;
    assert_int_equal(ag_router_match(r, "GET", "/v1/users/me/settings", &m), 0);
    assert_ptr_equal(m.ud, &T_SETTINGS);
    assert_int_equal(ag_router_match(r, "GET", "/v1/users/you", &m), 0);
    assert_ptr_equal(m.ud, &T_ID);
    int rc = ag_router_match(r, "GET", "/v1/users/me", &m);
    const void *ud = m.ud;
    char id[16];
    snprintf(id, sizeof id, "%s", rc == 0 ? param(&m, "id") : "");
    ag_router_free(r);
    if (rc != 0) fail_msg("GET /v1/users/me: %s, expected /v1/users/:id", ag_err_name(rc));
    assert_ptr_equal(ud, &T_ID);
    assert_string_equal(id, "me");
}

/* Same with a parameter route deeper than a wildcard: /files/:id/meta must
 * not hide the wildcard route under /files/ for /files/abc. */
static void test_intermediate_param_does_not_hide_wildcard(void **state)
{
    (void)state;
    ag_router *r = ag_router_new();
    assert_int_equal(ag_router_add(r, "GET", "/files/*", h_a, &T_STATIC, 0), 0);
    assert_int_equal(ag_router_add(r, "GET", "/files/:id/meta", h_b, &T_POSTS, 0), 0);
    ag_route_match m;
    assert_int_equal(ag_router_match(r, "GET", "/files/abc/meta", &m), 0);
    assert_ptr_equal(m.ud, &T_POSTS);
    assert_int_equal(ag_router_match(r, "GET", "/files/abc/def", &m), 0);
    assert_ptr_equal(m.ud, &T_STATIC);
    int rc = ag_router_match(r, "GET", "/files/abc", &m);
    const void *ud = m.ud;
    char rest[16];
    snprintf(rest, sizeof rest, "%s", rc == 0 ? param(&m, "*") : "");
    ag_router_free(r);
    if (rc != 0) fail_msg("GET /files/abc: %s, expected /files/*", ag_err_name(rc));
    assert_ptr_equal(ud, &T_STATIC);
    assert_string_equal(rest, "abc");
}

static void test_many_params_and_segments(void **state)
{
    (void)state;
    ag_router *r = ag_router_new();
    assert_int_equal(ag_router_add(r, "GET", "/:a/:b/:c/:d/:e/:f", h_a, NULL, 0), 0);
    assert_int_equal(ag_router_add(r, "GET", "/x//y", h_b, NULL, 0), 0); /* empty segment */
    ag_route_match m;
    assert_int_equal(ag_router_match(r, "GET", "/1/2/3/4/5/6", &m), 0);
    assert_int_equal(m.nparams, 6);
    assert_string_equal(param(&m, "a"), "1");
    assert_string_equal(param(&m, "f"), "6");
    assert_int_equal(ag_router_match(r, "GET", "/x/y", &m), 0);
    assert_ptr_equal(m.handler, h_b);
    ag_router_free(r);
}

/* The server labels each route's metrics with the stats the router creates
 * (route, method). Adding more methods to one path must not invalidate the
 * method string of the earlier ones. Under the sanitizer a dangling pointer
 * is a heap-use-after-free; without it the freed bytes are overwritten. */
static void test_route_stats_survive_more_methods(void **state)
{
    (void)state;
    ag_router *r = ag_router_new();
    assert_int_equal(ag_router_add(r, "GET", "/orders", h_a, NULL, 0), 0);
    ag_route_match m;
    assert_int_equal(ag_router_match(r, "GET", "/orders", &m), 0);
    const ag__route_stats *st = m.stats;
    assert_string_equal(st->method, "GET");
    /* Enough methods (any upper-case token is valid) that the endpoint
     * array must move. */
    for (int i = 0; i < 200; i++) {
        char method[8] = {'X', (char)('A' + i / 26 % 26), (char)('A' + i % 26), 0};
        assert_int_equal(ag_router_add(r, method, "/orders", h_b, NULL, 0), 0);
    }
    /* Reuse freed heap blocks of the sizes the endpoint arrays had. */
    enum { SPRAY = 64 };
    void *spray[SPRAY];
    for (int i = 0; i < SPRAY; i++) {
        size_t n = 16 + (size_t)(i % 16) * 32;
        spray[i] = malloc(n);
        memset(spray[i], 'Z', n);
    }
    assert_int_equal(ag_router_match(r, "GET", "/orders", &m), 0);
    st = m.stats;
    char method[16];
    snprintf(method, sizeof method, "%.15s", st->method);
    char route[32];
    snprintf(route, sizeof route, "%.31s", st->route);
    for (int i = 0; i < SPRAY; i++) free(spray[i]);
    ag_router_free(r);
    assert_string_equal(route, "/orders");
    assert_string_equal(method, "GET");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_literal_beats_param, make_router, free_router),
        cmocka_unit_test_setup_teardown(test_params, make_router, free_router),
        cmocka_unit_test_setup_teardown(test_wildcard, make_router, free_router),
        cmocka_unit_test_setup_teardown(test_trailing_slash_and_root, make_router, free_router),
        cmocka_unit_test_setup_teardown(test_flags_and_methods, make_router, free_router),
        cmocka_unit_test_setup_teardown(test_head_answers_get, make_router, free_router),
        cmocka_unit_test(test_explicit_head_route_wins),
        cmocka_unit_test_setup_teardown(test_405_allow, make_router, free_router),
        cmocka_unit_test_setup_teardown(test_duplicate_route, make_router, free_router),
        cmocka_unit_test_setup_teardown(test_bad_patterns_and_methods, make_router, free_router),
        cmocka_unit_test(test_intermediate_literal_does_not_hide_param),
        cmocka_unit_test(test_intermediate_param_does_not_hide_wildcard),
        cmocka_unit_test(test_many_params_and_segments),
        cmocka_unit_test(test_route_stats_survive_more_methods), /* last: may crash under ASan */
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
