/* Unit tests of src/lib/core/clock.c: monotonic/wall time, RFC 3339 stamps, deadlines and the X-Agora-Deadline-Ms parser. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agora/clock.h"

static void test_monotonic_advances(void **state)
{
    (void)state;
    uint64_t a = ag_now_ns();
    usleep(20 * 1000);
    uint64_t b = ag_now_ns();
    assert_true(b > a);
    assert_true(b - a >= 20u * 1000 * 1000);
    assert_true(b - a < 2000u * 1000 * 1000);
    uint64_t ms = ag_now_ms();
    assert_true(ms >= b / 1000000 && ms <= b / 1000000 + 1000);
}

static void test_wall_clock_is_epoch_ms(void **state)
{
    (void)state;
    uint64_t w = ag_wall_ms();
    uint64_t t = (uint64_t)time(NULL);
    assert_true(w / 1000 >= t - 1 && w / 1000 <= t + 1);
}

static void check_rfc3339_shape(const char *s)
{
    /* YYYY-MM-DDTHH:MM:SS.mmmZ */
    static const char pat[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    assert_int_equal(strlen(s), 24);
    for (size_t i = 0; i < 24; i++) {
        if (pat[i] == 'd') {
            if (!isdigit((unsigned char)s[i])) fail_msg("char %zu of \"%s\" is not a digit", i, s);
        } else if (s[i] != pat[i]) {
            fail_msg("char %zu of \"%s\" should be '%c'", i, s, pat[i]);
        }
    }
}

static void test_rfc3339_known_values(void **state)
{
    (void)state;
    char out[32];
    ag_time_rfc3339(out, sizeof out, 0);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    check_rfc3339_shape(out);
    ag_time_rfc3339(out, sizeof out, 1795294143120ull); /* the header's example */
    assert_string_equal(out, "2026-11-21T20:49:03.120Z");
    /* Same second, other milliseconds (the per-thread cache must not stick). */
    ag_time_rfc3339(out, sizeof out, 1795294143999ull);
    assert_string_equal(out, "2026-11-21T20:49:03.999Z");
    ag_time_rfc3339(out, sizeof out, 1795294144001ull);
    assert_string_equal(out, "2026-11-21T20:49:04.001Z");
    ag_time_rfc3339(out, sizeof out, 951782400000ull); /* leap day 2000 */
    assert_string_equal(out, "2000-02-29T00:00:00.000Z");
    /* Exactly 25 bytes is enough. */
    char exact[25];
    ag_time_rfc3339(exact, sizeof exact, 1795294143120ull);
    assert_string_equal(exact, "2026-11-21T20:49:03.120Z");
}

static void test_rfc3339_now_shape(void **state)
{
    (void)state;
    char out[25];
    uint64_t now = ag_wall_ms();
    ag_time_rfc3339(out, sizeof out, now);
    check_rfc3339_shape(out);
    assert_int_equal(out[23], 'Z');
    /* The milliseconds printed are the input's. */
    char ms[4] = {out[20], out[21], out[22], 0};
    char want[4];
    snprintf(want, sizeof want, "%03u", (unsigned)(now % 1000));
    assert_string_equal(ms, want);
}

static void test_deadline_remaining_and_expired(void **state)
{
    (void)state;
    ag_deadline d = ag_deadline_in(1000);
    uint64_t left = ag_deadline_remaining(d);
    assert_true(left <= 1000);
    assert_true(left >= 990);
    assert_false(ag_deadline_expired(d));

    ag_deadline soon = ag_deadline_in(30);
    usleep(60 * 1000);
    assert_true(ag_deadline_expired(soon));
    assert_int_equal(ag_deadline_remaining(soon), 0);

    ag_deadline now = ag_deadline_in(0);
    assert_true(ag_deadline_expired(now));
    assert_int_equal(ag_deadline_remaining(now), 0);

    assert_false(ag_deadline_expired(AG_DEADLINE_NONE));
    assert_true(ag_deadline_remaining(AG_DEADLINE_NONE) == UINT64_MAX);
}

static void test_deadline_min(void **state)
{
    (void)state;
    ag_deadline a = ag_deadline_in(100), b = ag_deadline_in(5000);
    assert_true(ag_deadline_min(a, b) == a);
    assert_true(ag_deadline_min(b, a) == a);
    assert_true(ag_deadline_min(a, AG_DEADLINE_NONE) == a);
    assert_true(ag_deadline_min(AG_DEADLINE_NONE, b) == b);
    assert_true(ag_deadline_min(AG_DEADLINE_NONE, AG_DEADLINE_NONE) == AG_DEADLINE_NONE);
}

static void test_parse_header_accepts(void **state)
{
    (void)state;
    ag_deadline d = 0;
    assert_int_equal(ag_deadline_parse_header("500", &d), 0);
    uint64_t left = ag_deadline_remaining(d);
    assert_true(left <= 500 && left >= 490);
    assert_int_equal(ag_deadline_parse_header("0", &d), 0);
    assert_true(ag_deadline_expired(d));
    assert_int_equal(ag_deadline_parse_header("86400000", &d), 0); /* one day */
    left = ag_deadline_remaining(d);
    assert_true(left <= 86400000 && left >= 86400000 - 10);
}

static void test_parse_header_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {"",  "-5",  "12ab", "99999999999", "86400001", " 5",
                                      "5 ", "+5", "0x10", "1e3",         "1.5",
                                      "99999999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ag_deadline d = 1234;
        if (ag_deadline_parse_header(bad[i], &d) != AG_EINVAL)
            fail_msg("\"%s\" accepted", bad[i]);
        assert_true(d == 1234); /* untouched */
    }
    ag_deadline d = 1234;
    assert_int_equal(ag_deadline_parse_header(NULL, &d), AG_EINVAL);
    assert_true(d == 1234);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_monotonic_advances),
        cmocka_unit_test(test_wall_clock_is_epoch_ms),
        cmocka_unit_test(test_rfc3339_known_values),
        cmocka_unit_test(test_rfc3339_now_shape),
        cmocka_unit_test(test_deadline_remaining_and_expired),
        cmocka_unit_test(test_deadline_min),
        cmocka_unit_test(test_parse_header_accepts),
        cmocka_unit_test(test_parse_header_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
