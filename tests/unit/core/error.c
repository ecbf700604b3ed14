/* Unit tests of src/lib/core/error.c: names and messages of every AG_E* code, and the errno/libuv mapping. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include <uv.h>

#include "agora/error.h"

typedef struct code {
    int err;
    const char *name; /* as the X-macro spells it */
    const char *msg;
} code;

#define AS_CODE(n, m) {AG_E##n, "AG_E" #n, m},
static const code codes[] = {AG_ERRNO_MAP(AS_CODE)};
#undef AS_CODE
#define NCODES (sizeof codes / sizeof codes[0])

static void test_codes_negative_and_distinct(void **state)
{
    (void)state;
    assert_int_equal(AG_OK, 0);
    for (size_t i = 0; i < NCODES; i++) {
        assert_true(codes[i].err < 0);
        for (size_t j = i + 1; j < NCODES; j++) assert_int_not_equal(codes[i].err, codes[j].err);
    }
}

static void test_names_match_and_distinct(void **state)
{
    (void)state;
    for (size_t i = 0; i < NCODES; i++) {
        const char *name = ag_err_name(codes[i].err);
        assert_non_null(name);
        assert_string_equal(name, codes[i].name);
        for (size_t j = 0; j < NCODES; j++)
            if (i != j) assert_string_not_equal(name, ag_err_name(codes[j].err));
    }
    assert_string_equal(ag_err_name(AG_OK), "AG_OK");
}

static void test_messages_match_and_distinct(void **state)
{
    (void)state;
    for (size_t i = 0; i < NCODES; i++) {
        const char *msg = ag_strerror(codes[i].err);
        assert_non_null(msg);
        assert_string_equal(msg, codes[i].msg);
        assert_true(strlen(msg) > 0);
        assert_string_not_equal(msg, "unknown error");
        for (size_t j = 0; j < NCODES; j++)
            if (i != j) assert_string_not_equal(msg, ag_strerror(codes[j].err));
    }
    assert_string_equal(ag_strerror(AG_ENOMEM), "out of memory");
    assert_string_equal(ag_strerror(AG_OK), "success");
}

static void test_unknown_codes_never_null(void **state)
{
    (void)state;
    static const int odd[] = {1, -1, -999, AG__ERR_FIRST, AG__ERR_LAST, -5000, 12345};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        assert_non_null(ag_strerror(odd[i]));
        assert_non_null(ag_err_name(odd[i]));
    }
    assert_string_equal(ag_strerror(-1), "unknown error");
    assert_string_equal(ag_err_name(-1), "AG_E?");
    assert_string_equal(ag_err_name(AG__ERR_LAST), "AG_E?");
}

static void test_from_errno(void **state)
{
    (void)state;
    assert_int_equal(ag_err_from_errno(UV_ECONNREFUSED), AG_ECONNREFUSED);
    assert_int_equal(ag_err_from_errno(UV_ETIMEDOUT), AG_ETIMEDOUT);
    assert_int_equal(ag_err_from_errno(UV_EOF), AG_ECLOSED);
    assert_int_equal(ag_err_from_errno(UV_ECONNRESET), AG_ECLOSED);
    assert_int_equal(ag_err_from_errno(UV_EPIPE), AG_ECLOSED);
    assert_int_equal(ag_err_from_errno(UV_ENOMEM), AG_ENOMEM);
    assert_int_equal(ag_err_from_errno(UV_EADDRINUSE), AG_EEXISTS);
    assert_int_equal(ag_err_from_errno(UV_EMFILE), AG_EUNAVAIL);
    assert_int_equal(ag_err_from_errno(UV_ECANCELED), AG_ECANCELED);
    /* On Unix libuv codes are negative errno values: both spellings agree. */
    assert_int_equal(ag_err_from_errno(-ECONNREFUSED), AG_ECONNREFUSED);
    assert_int_equal(ag_err_from_errno(-ETIMEDOUT), AG_ETIMEDOUT);
    assert_int_equal(ag_err_from_errno(-ENOENT), AG_ENOTFOUND);
    assert_int_equal(ag_err_from_errno(-EAGAIN), AG_EBUSY);
    /* Anything unmapped is a system error; success stays success. */
    assert_int_equal(ag_err_from_errno(-EROFS), AG_ESYS);
    assert_int_equal(ag_err_from_errno(0), AG_OK);
    assert_int_equal(ag_err_from_errno(5), AG_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes_negative_and_distinct),
        cmocka_unit_test(test_names_match_and_distinct),
        cmocka_unit_test(test_messages_match_and_distinct),
        cmocka_unit_test(test_unknown_codes_never_null),
        cmocka_unit_test(test_from_errno),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
