/* Unit tests of gateway/ratelimit.c, the memory store, driven through the
 * public API on a real loop thread with an injected clock: a burst then
 * refusal, refill over time (whole and fractional rates), the RateLimit-* and
 * Retry-After values, separate buckets per key and per policy, the bound on
 * keys under a flood (early and lossless evictions), exact counts under
 * concurrent takes, metrics, URL validation, and the Redis mode falling back
 * to memory at once when nothing listens. The shared Redis mode is tested in
 * tests/integration/ratelimit against a real server. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "agora/agora.h"
#include "ratelimit.h"

static ag_loopset *g_loops;
static ag_metrics *g_metrics;
static _Atomic uint64_t g_now = 1000000;

static uint64_t fake_now(void *ud)
{
    (void)ud;
    return atomic_load(&g_now);
}

static void advance_ms(uint64_t ms)
{
    atomic_fetch_add(&g_now, ms);
}

typedef struct call {
    gw_ratelimit *rl;
    const char *key;
    const gw_rl_policy *p;
    gw_rl_result r;
    atomic_int done;     /* cb ran */
    atomic_int returned; /* take returned */
    int done_at_return;  /* cb had run when take returned */
} call;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;

static void set_flag(atomic_int *flag)
{
    pthread_mutex_lock(&g_mu);
    atomic_store(flag, 1);
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static void on_result(void *ud, const gw_rl_result *r)
{
    call *c = ud;
    c->r = *r;
    set_flag(&c->done);
}

static void take_task(void *arg)
{
    call *c = arg;
    assert_non_null(ag_loop_current());
    gw_ratelimit_take(c->rl, c->key, c->p, on_result, c);
    c->done_at_return = atomic_load(&c->done);
    set_flag(&c->returned);
}

/* Waits up to 5 s for a flag set by the loop thread. */
static void wait_for(atomic_int *flag)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&g_mu);
    while (!atomic_load(flag))
        if (pthread_cond_timedwait(&g_cv, &g_mu, &until) != 0) break;
    pthread_mutex_unlock(&g_mu);
    assert_true(atomic_load(flag));
}

/* One take on the loop thread; returns its result. */
static gw_rl_result take(gw_ratelimit *rl, const char *key, const gw_rl_policy *p)
{
    call c;
    memset(&c, 0, sizeof c);
    c.rl = rl, c.key = key, c.p = p;
    assert_int_equal(ag_loop_post(ag_loopset_get(g_loops, 0), take_task, &c), 0);
    wait_for(&c.returned);
    wait_for(&c.done);
    return c.r;
}

static gw_ratelimit *mem_limiter(size_t max_keys)
{
    gw_rl_opts o = {.url = "memory", .max_keys = max_keys, .metrics = g_metrics};
    gw_ratelimit *rl = NULL;
    assert_int_equal(gw_ratelimit_new_opts(&o, &rl), 0);
    assert_false(gw_ratelimit_is_redis(rl));
    gw_ratelimit_set_clock(rl, fake_now, NULL);
    return rl;
}

static double metric(const char *family, int n, const char *const *labels,
                     const char *const *values, ag_metric_type type)
{
    ag_metric *f = ag_metrics_family(g_metrics, type, family, "", n, labels, NULL, 0);
    return ag_series_value(ag_metric_series(f, values));
}

static double decisions(const char *policy, const char *outcome)
{
    static const char *const l[] = {"policy", "outcome"};
    const char *v[] = {policy, outcome};
    return metric("agora_ratelimit_requests_total", 2, l, v, AG_COUNTER);
}

static double evictions(const char *state)
{
    static const char *const l[] = {"state"};
    const char *v[] = {state};
    return metric("agora_ratelimit_evictions_total", 1, l, v, AG_COUNTER);
}

static int setup(void **state)
{
    (void)state;
    ag_log_setup("ratelimit-test", AG_LOG_OFF);
    g_metrics = ag_metrics_new();
    if (ag_loopset_new(1, &g_loops) < 0 || ag_loopset_start(g_loops) < 0) return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ag_loopset_free(g_loops);
    ag_metrics_free(g_metrics);
    return 0;
}

static void test_burst_then_refusal(void **state)
{
    (void)state;
    gw_ratelimit *rl = mem_limiter(0);
    const gw_rl_policy p = {.name = "burst", .rate = 1, .burst = 5};
    double allowed0 = decisions("burst", "allowed"), limited0 = decisions("burst", "limited");
    for (int i = 0; i < 5; i++) {
        call c;
        memset(&c, 0, sizeof c);
        c.rl = rl, c.key = "ip:192.0.2.1", c.p = &p;
        assert_int_equal(ag_loop_post(ag_loopset_get(g_loops, 0), take_task, &c), 0);
        wait_for(&c.returned);
        assert_true(c.done_at_return); /* memory: answered before take returns */
        assert_true(c.r.allowed);
        assert_false(c.r.degraded);
        assert_int_equal(c.r.limit, 5);
        assert_int_equal(c.r.remaining, 4 - i);
        assert_int_equal(c.r.reset_s, i + 1); /* 1 token/s: i+1 tokens missing */
        assert_int_equal(c.r.retry_after_s, 0);
    }
    for (int i = 0; i < 3; i++) {
        gw_rl_result r = take(rl, "ip:192.0.2.1", &p);
        assert_false(r.allowed);
        assert_int_equal(r.remaining, 0);
        assert_int_equal(r.retry_after_s, 1);
        assert_int_equal(r.reset_s, 5);
    }
    assert_true(decisions("burst", "allowed") - allowed0 == 5);
    assert_true(decisions("burst", "limited") - limited0 == 3);
    gw_ratelimit_free(rl);
}

static void test_refill_over_time(void **state)
{
    (void)state;
    gw_ratelimit *rl = mem_limiter(0);
    const gw_rl_policy p = {.name = "refill", .rate = 2, .burst = 4};
    for (int i = 0; i < 4; i++)
        assert_true(take(rl, "user:u-1", &p).allowed);
    gw_rl_result r = take(rl, "user:u-1", &p);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_s, 1); /* 0.5 s rounds up */
    assert_int_equal(r.reset_s, 2);       /* 4 tokens at 2/s */

    advance_ms(499); /* not quite one token */
    assert_false(take(rl, "user:u-1", &p).allowed);
    advance_ms(1);
    r = take(rl, "user:u-1", &p);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
    assert_false(take(rl, "user:u-1", &p).allowed);

    advance_ms(1250); /* 2.5 tokens */
    r = take(rl, "user:u-1", &p);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 1); /* 1.5 left */
    assert_int_equal(r.reset_s, 2);   /* 2.5 missing at 2/s: 1.25 s, rounded up */

    advance_ms(3600 * 1000); /* never past the burst */
    r = take(rl, "user:u-1", &p);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 3);
    assert_int_equal(r.reset_s, 1);

    /* one token every 4 s */
    const gw_rl_policy slow = {.name = "slow", .rate = 0.25, .burst = 1};
    assert_true(take(rl, "user:u-1", &slow).allowed);
    r = take(rl, "user:u-1", &slow);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_s, 4);
    advance_ms(3000);
    r = take(rl, "user:u-1", &slow);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_s, 1);
    advance_ms(1000);
    assert_true(take(rl, "user:u-1", &slow).allowed);
    gw_ratelimit_free(rl);
}

static void test_headers(void **state)
{
    (void)state;
    gw_ratelimit *rl = mem_limiter(0);
    const gw_rl_policy p = {.name = "hdr", .rate = 10, .burst = 100};
    gw_rl_headers h;
    gw_rl_result r = take(rl, "ip:198.51.100.7", &p);
    gw_rl_headers_format(&r, &p, &h);
    assert_string_equal(h.limit, "100");
    assert_string_equal(h.remaining, "99");
    assert_string_equal(h.reset, "1");
    assert_string_equal(h.policy, "100;w=10");
    assert_string_equal(h.retry_after, "");

    const gw_rl_policy one = {.name = "hdr1", .rate = 0.1, .burst = 2};
    take(rl, "ip:198.51.100.7", &one);
    r = take(rl, "ip:198.51.100.7", &one);
    gw_rl_headers_format(&r, &one, &h);
    assert_string_equal(h.remaining, "0");
    assert_string_equal(h.reset, "20");
    assert_string_equal(h.retry_after, "");
    r = take(rl, "ip:198.51.100.7", &one);
    assert_false(r.allowed);
    gw_rl_headers_format(&r, &one, &h);
    assert_string_equal(h.limit, "2");
    assert_string_equal(h.remaining, "0");
    assert_string_equal(h.retry_after, "10");
    assert_string_equal(h.reset, "20");
    assert_string_equal(h.policy, "2;w=20");
    gw_ratelimit_free(rl);
}

static void test_separate_keys_and_policies(void **state)
{
    (void)state;
    gw_ratelimit *rl = mem_limiter(0);
    const gw_rl_policy a = {.name = "a", .rate = 1, .burst = 1};
    const gw_rl_policy b = {.name = "b", .rate = 1, .burst = 1};
    const gw_rl_policy ab = {.name = "a:b", .rate = 1, .burst = 1};
    assert_true(take(rl, "ip:1.2.3.4", &a).allowed);
    assert_false(take(rl, "ip:1.2.3.4", &a).allowed);
    assert_true(take(rl, "ip:1.2.3.5", &a).allowed);   /* another client */
    assert_true(take(rl, "ip:1.2.3.4", &b).allowed);   /* another policy */
    assert_true(take(rl, "user:1.2.3.4", &a).allowed); /* a user is not an IP */
    /* no confusion between (policy "a:b", key "c") and (policy "a", key "b:c") */
    assert_true(take(rl, "b:c", &a).allowed);
    assert_true(take(rl, "c", &ab).allowed);
    assert_false(take(rl, "b:c", &a).allowed);
    assert_false(take(rl, "c", &ab).allowed);
    assert_int_equal(gw_ratelimit_mem_keys(rl), 6);
    gw_ratelimit_free(rl);
}

static void test_eviction_bound(void **state)
{
    (void)state;
    gw_ratelimit *rl = mem_limiter(1000);
    const gw_rl_policy p = {.name = "flood", .rate = 1, .burst = 2};
    char key[64];
    double early0 = evictions("early"), refilled0 = evictions("refilled");

    /* A client that has used its burst keeps its bucket while there is room. */
    assert_true(take(rl, "ip:10.0.0.1", &p).allowed);
    assert_true(take(rl, "ip:10.0.0.1", &p).allowed);
    for (int i = 0; i < 998; i++) {
        snprintf(key, sizeof key, "ip:10.1.%d.%d", i / 256, i % 256);
        assert_true(take(rl, key, &p).allowed);
    }
    assert_int_equal(gw_ratelimit_mem_keys(rl), 999);
    assert_false(take(rl, "ip:10.0.0.1", &p).allowed);
    assert_true(evictions("early") == early0);

    /* A flood of distinct clients within one refill time: the store stays at
     * its bound, evicting buckets that had not refilled yet (counted). */
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof key, "ip:10.2.%d.%d", i / 256, i % 256);
        take(rl, key, &p);
        if (i % 1000 == 0) assert_true(gw_ratelimit_mem_keys(rl) <= 1000);
    }
    assert_int_equal(gw_ratelimit_mem_keys(rl), 1000);
    assert_true(evictions("early") - early0 >= 19000);

    /* Once time has refilled every bucket, each take drops up to two from the
     * cold end (lossless, counted as refilled): the table shrinks to the
     * clients active since, without any early eviction. */
    advance_ms(2000);
    double early1 = evictions("early");
    for (int i = 0; i < 600; i++) {
        snprintf(key, sizeof key, "ip:10.3.%d.%d", i / 256, i % 256);
        assert_true(take(rl, key, &p).allowed);
    }
    assert_int_equal(gw_ratelimit_mem_keys(rl), 600);
    assert_true(evictions("refilled") - refilled0 == 1000);
    assert_true(evictions("early") == early1);
    gw_ratelimit_free(rl);
}

typedef struct hammer {
    gw_ratelimit *rl;
    const gw_rl_policy *p;
    int allowed;
} hammer;

static void count_cb(void *ud, const gw_rl_result *r)
{
    hammer *h = ud;
    if (r->allowed) h->allowed++;
}

static void *hammer_main(void *arg)
{
    hammer *h = arg;
    for (int i = 0; i < 5000; i++)
        gw_ratelimit_take(h->rl, "ip:203.0.113.1", h->p, count_cb, h);
    return NULL;
}

static void test_concurrent_takes_are_exact(void **state)
{
    (void)state;
    gw_ratelimit *rl = mem_limiter(0);
    const gw_rl_policy p = {.name = "hammer", .rate = 1e-6, .burst = 7777};
    hammer h[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        h[i] = (hammer){.rl = rl, .p = &p};
        assert_int_equal(pthread_create(&t[i], NULL, hammer_main, &h[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        total += h[i].allowed;
    }
    assert_int_equal(total, 7777);
    gw_ratelimit_free(rl);
}

static void test_bad_config(void **state)
{
    (void)state;
    const char *bad[] = {"redis://",        "http://127.0.0.1:6379", "redis://h:0",
                         "redis://h:70000", "redis://h:x",           "redis://h/abc",
                         "redis://u:p@h:1", "redis://[::1",          "redis://h:6379/1?x=1",
                         "memcached://h"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        gw_ratelimit *rl = (gw_ratelimit *)&bad; /* must stay untouched */
        assert_int_equal(gw_ratelimit_new(bad[i], g_metrics, &rl), AG_ECONFIG);
        assert_ptr_equal(rl, (gw_ratelimit *)&bad);
    }
    const char *good[] = {"redis://127.0.0.1", "redis://127.0.0.1:6380/2", "redis://[::1]:7000",
                          "redis://redis.internal:6379/"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        gw_ratelimit *rl = NULL;
        assert_int_equal(gw_ratelimit_new(good[i], g_metrics, &rl), 0);
        assert_true(gw_ratelimit_is_redis(rl));
        gw_ratelimit_free(rl);
    }
    gw_ratelimit *rl = NULL;
    assert_int_equal(gw_ratelimit_new(NULL, g_metrics, &rl), 0);
    assert_false(gw_ratelimit_is_redis(rl));
    gw_ratelimit_free(rl);

    setenv("AGORA_RATELIMIT_TIMEOUT", "soon", 1);
    assert_int_equal(gw_ratelimit_new(NULL, g_metrics, &rl), AG_ECONFIG);
    unsetenv("AGORA_RATELIMIT_TIMEOUT");
    setenv("AGORA_RATELIMIT", "redis://127.0.0.1:1", 1);
    rl = NULL;
    assert_int_equal(gw_ratelimit_from_env(g_metrics, &rl), 0);
    assert_true(gw_ratelimit_is_redis(rl));
    gw_ratelimit_free(rl);
    unsetenv("AGORA_RATELIMIT");
}

static void release_task(void *arg)
{
    gw_ratelimit_loop_release(arg);
}

static void noop_task(void *arg)
{
    set_flag(arg);
}

/* Nothing listens: the limiter answers from memory, promptly, marked
 * degraded and counted, and keeps counting tokens in memory. */
static void test_redis_unreachable_falls_back(void **state)
{
    (void)state;
    gw_rl_opts o = {.url = "redis://127.0.0.1:1", .metrics = g_metrics};
    gw_ratelimit *rl = NULL;
    assert_int_equal(gw_ratelimit_new_opts(&o, &rl), 0);
    gw_ratelimit_set_clock(rl, fake_now, NULL);
    const gw_rl_policy p = {.name = "down", .rate = 1, .burst = 2};
    static const char *const l[] = {"reason"};
    double fb0 = metric("agora_ratelimit_fallbacks_total", 1, l, (const char *[]){"unavailable"},
                        AG_COUNTER);
    uint64_t t0 = ag_now_ms();
    gw_rl_result r = take(rl, "ip:192.0.2.9", &p);
    assert_true(r.allowed);
    assert_true(r.degraded);
    r = take(rl, "ip:192.0.2.9", &p);
    assert_true(r.allowed && r.degraded);
    r = take(rl, "ip:192.0.2.9", &p);
    assert_false(r.allowed);
    assert_true(r.degraded);
    assert_true(ag_now_ms() - t0 < 2000);
    assert_true(metric("agora_ratelimit_fallbacks_total", 1, l, (const char *[]){"unavailable"},
                       AG_COUNTER) -
                    fb0 >=
                3);
    /* off the loop threads: memory too */
    call c;
    memset(&c, 0, sizeof c);
    gw_ratelimit_take(rl, "ip:192.0.2.10", &p, on_result, &c);
    assert_true(atomic_load(&c.done));
    assert_true(c.r.allowed && c.r.degraded);

    assert_int_equal(ag_loop_post(ag_loopset_get(g_loops, 0), release_task, rl), 0);
    atomic_int flushed = 0; /* a second task: the timer's close callback has run */
    assert_int_equal(ag_loop_post(ag_loopset_get(g_loops, 0), noop_task, &flushed), 0);
    wait_for(&flushed);
    gw_ratelimit_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_refusal),
        cmocka_unit_test(test_refill_over_time),
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_separate_keys_and_policies),
        cmocka_unit_test(test_eviction_bound),
        cmocka_unit_test(test_concurrent_takes_are_exact),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_redis_unreachable_falls_back),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
