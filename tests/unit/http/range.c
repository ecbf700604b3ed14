/* Unit tests of ag_http_range (src/lib/http/message.c): the one-range forms
 * of RFC 9110 §14, what is ignored (the whole representation is sent) and
 * what is unsatisfiable (416). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "agora/http.h"

static int range(const char *h, uint64_t size, uint64_t *a, uint64_t *b)
{
    *a = *b = 12345;
    return ag_http_range(h, size, a, b);
}

static void test_satisfiable(void **state)
{
    uint64_t a, b;
    assert_int_equal(range("bytes=0-99", 1000, &a, &b), 1);
    assert_true(a == 0 && b == 99);
    assert_int_equal(range("bytes=900-", 1000, &a, &b), 1);
    assert_true(a == 900 && b == 999);
    assert_int_equal(range("bytes=990-5000", 1000, &a, &b), 1); /* cut to the end */
    assert_true(a == 990 && b == 999);
    assert_int_equal(range("bytes=-10", 1000, &a, &b), 1);
    assert_true(a == 990 && b == 999);
    assert_int_equal(range("bytes=-5000", 1000, &a, &b), 1); /* the whole, as a range */
    assert_true(a == 0 && b == 999);
    assert_int_equal(range("bytes= 5-5 ", 1000, &a, &b), 1);
    assert_true(a == 5 && b == 5);
}

static void test_ignored(void **state)
{
    uint64_t a, b;
    const char *ignored[] = {"items=0-1",
                             "bytes=",
                             "bytes=abc",
                             "bytes=5-4",
                             "bytes=0-1,3-4",
                             "bytes=1",
                             "bytes=--1",
                             "bytes=1-2-3",
                             "bytes=99999999999999999999-",
                             "Bytes=0-1",
                             NULL};
    assert_int_equal(range(NULL, 1000, &a, &b), 0);
    for (const char **h = ignored; *h; h++) {
        assert_int_equal(range(*h, 1000, &a, &b), 0);
        assert_true(a == 12345 && b == 12345); /* untouched */
    }
}

static void test_unsatisfiable(void **state)
{
    uint64_t a, b;
    assert_int_equal(range("bytes=1000-", 1000, &a, &b), -1);
    assert_int_equal(range("bytes=2000-3000", 1000, &a, &b), -1);
    assert_int_equal(range("bytes=-0", 1000, &a, &b), -1);
    assert_int_equal(range("bytes=0-", 0, &a, &b), -1);
    assert_int_equal(range("bytes=-5", 0, &a, &b), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_satisfiable),
        cmocka_unit_test(test_ignored),
        cmocka_unit_test(test_unsatisfiable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
