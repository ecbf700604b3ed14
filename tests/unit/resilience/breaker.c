/* breaker.c — the circuit breaker's state machine (src/lib/resilience). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <time.h>

#include "agora/metrics.h"
#include "agora/resilience.h"

static ag_metrics *g_m;

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static ag_breaker *make(int window, int min_calls, uint64_t open_ms, int probes)
{
    ag_breaker_opts o = {.window = window, .min_calls = min_calls, .failure_rate = 0.5,
                         .slow_ms = 10000, .open_ms = open_ms, .max_open_ms = open_ms * 4,
                         .probes = probes, .metrics = g_m};
    return ag_breaker_new("test", &o);
}

static void call(ag_breaker *b, bool ok)
{
    ag_breaker_ticket t;
    assert_int_equal(ag_breaker_acquire(b, &t), 0);
    ag_breaker_release(b, &t, ok);
}

static void test_stays_closed_below_min_calls_and_rate(void **state)
{
    (void)state;
    ag_breaker *b = make(10, 5, 100, 2);
    for (int i = 0; i < 4; i++) call(b, false); /* 4 failures < min_calls 5 */
    assert_int_equal(ag_breaker_get_state(b), AG_BREAKER_CLOSED);
    ag_breaker_free(b);
    b = make(10, 5, 100, 2);
    for (int i = 0; i < 20; i++) call(b, i % 3 != 0); /* a third fail: under 0.5 */
    assert_int_equal(ag_breaker_get_state(b), AG_BREAKER_CLOSED);
    ag_breaker_free(b);
}

static void test_opens_refuses_then_half_opens_and_closes(void **state)
{
    (void)state;
    ag_breaker *b = make(10, 4, 100, 2);
    for (int i = 0; i < 4; i++) call(b, false);
    assert_int_equal(ag_breaker_get_state(b), AG_BREAKER_OPEN);
    ag_breaker_ticket t;
    assert_int_equal(ag_breaker_acquire(b, &t), AG_EUNAVAIL);
    uint64_t left = ag_breaker_retry_after_ms(b);
    assert_true(left > 0 && left <= 100);
    sleep_ms(120);
    /* Half-open: exactly `probes` calls may go while their verdict is out. */
    ag_breaker_ticket p1, p2, p3;
    assert_int_equal(ag_breaker_acquire(b, &p1), 0);
    assert_int_equal(ag_breaker_get_state(b), AG_BREAKER_HALF_OPEN);
    assert_int_equal(ag_breaker_acquire(b, &p2), 0);
    assert_int_equal(ag_breaker_acquire(b, &p3), AG_EUNAVAIL);
    ag_breaker_release(b, &p1, true);
    ag_breaker_release(b, &p2, true);
    assert_int_equal(ag_breaker_get_state(b), AG_BREAKER_CLOSED);
    /* History forgotten: one failure does not reopen it. */
    call(b, false);
    assert_int_equal(ag_breaker_get_state(b), AG_BREAKER_CLOSED);
    ag_breaker_free(b);
}

static void test_failed_probe_reopens_for_longer(void **state)
{
    (void)state;
    ag_breaker *b = make(10, 2, 50, 1);
    call(b, false);
    call(b, false);
    assert_int_equal(ag_breaker_get_state(b), AG_BREAKER_OPEN);
    sleep_ms(70);
    ag_breaker_ticket t;
    assert_int_equal(ag_breaker_acquire(b, &t), 0);
    ag_breaker_release(b, &t, false);
    assert_int_equal(ag_breaker_get_state(b), AG_BREAKER_OPEN);
    uint64_t left = ag_breaker_retry_after_ms(b);
    assert_true(left > 50 && left <= 100); /* doubled */
    json_t *j = ag_breaker_json(b);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "open");
    assert_int_equal(json_integer_value(json_object_get(j, "openedCount")), 2);
    json_decref(j);
    ag_breaker_free(b);
}

static void test_slow_calls_open_it(void **state)
{
    (void)state;
    ag_breaker_opts o = {.window = 4, .min_calls = 4, .failure_rate = 0.9, .slow_rate = 0.5,
                         .slow_ms = 20, .open_ms = 100, .probes = 1, .metrics = g_m};
    ag_breaker *b = ag_breaker_new("slow", &o);
    for (int i = 0; i < 4; i++) {
        ag_breaker_ticket t;
        assert_int_equal(ag_breaker_acquire(b, &t), 0);
        if (i % 2 == 0) sleep_ms(25);
        ag_breaker_release(b, &t, true);
    }
    assert_int_equal(ag_breaker_get_state(b), AG_BREAKER_OPEN);
    ag_breaker_free(b);
}

static void test_window_slides(void **state)
{
    (void)state;
    ag_breaker *b = make(4, 4, 100, 1);
    call(b, false);
    for (int i = 0; i < 10; i++) call(b, true); /* the failure slides out */
    call(b, false);
    assert_int_equal(ag_breaker_get_state(b), AG_BREAKER_CLOSED); /* 1 of 4 */
    call(b, false);
    assert_int_equal(ag_breaker_get_state(b), AG_BREAKER_OPEN); /* 2 of 4 */
    ag_breaker_free(b);
}

static void test_concurrency_limit(void **state)
{
    (void)state;
    ag_breaker_opts o = {.max_concurrent = 2, .metrics = g_m};
    ag_breaker *b = ag_breaker_new("bulkhead", &o);
    ag_breaker_ticket a, c, d;
    assert_int_equal(ag_breaker_acquire(b, &a), 0);
    assert_int_equal(ag_breaker_acquire(b, &c), 0);
    assert_int_equal(ag_breaker_acquire(b, &d), AG_EBUSY);
    ag_breaker_release(b, &a, true);
    assert_int_equal(ag_breaker_acquire(b, &d), 0);
    ag_breaker_release(b, &c, true);
    ag_breaker_release(b, &d, true);
    ag_breaker_free(b);
}

static ag_breaker *g_shared;

static void *hammer(void *arg)
{
    for (int i = 0; i < 2000; i++) {
        ag_breaker_ticket t;
        if (ag_breaker_acquire(g_shared, &t) == 0) ag_breaker_release(g_shared, &t, i % 2);
    }
    return NULL;
}

static void test_threads_keep_counts_consistent(void **state)
{
    (void)state;
    g_shared = make(50, 10, 1, 2);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, hammer, NULL);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    json_t *j = ag_breaker_json(g_shared);
    assert_int_equal(json_integer_value(json_object_get(j, "inFlight")), 0);
    json_decref(j);
    ag_breaker_free(g_shared);
}

int main(void)
{
    g_m = ag_metrics_new();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stays_closed_below_min_calls_and_rate),
        cmocka_unit_test(test_opens_refuses_then_half_opens_and_closes),
        cmocka_unit_test(test_failed_probe_reopens_for_longer),
        cmocka_unit_test(test_slow_calls_open_it),
        cmocka_unit_test(test_window_slides),
        cmocka_unit_test(test_concurrency_limit),
        cmocka_unit_test(test_threads_keep_counts_consistent),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    ag_metrics_free(g_m);
    return rc;
}
