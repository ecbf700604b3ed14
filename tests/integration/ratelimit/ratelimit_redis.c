/* Integration test of gateway/ratelimit.c against a real redis-server started
 * by tests/harness/with-servers (AGORA_TEST_REDIS_URL, AGORA_TEST_HARNESS_CTL).
 *
 * Two limiters stand for two gateway replicas, each on its own loop thread
 * and metrics registry: they share one budget through Redis; the script is
 * loaded again after SCRIPT FLUSH; a paused Redis is answered from memory
 * after the timeout; a killed Redis is answered from memory at once, without
 * blocking the loop; a restarted (empty) Redis is shared again. A plain
 * blocking hiredis connection inspects and pokes the server from the test. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "agora/agora.h"
#include "ratelimit.h"

static ag_loopset *g_loops;
static ag_metrics *g_metrics[2];
static gw_ratelimit *g_rl[2]; /* replica i runs on loop i */
static const char *g_url;
static int g_port;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;

typedef struct call {
    gw_ratelimit *rl;
    const char *key;
    const gw_rl_policy *p;
    gw_rl_result r;
    uint64_t start_ns, returned_ns, answered_ns;
    atomic_int done, returned;
} call;

static void set_flag(atomic_int *f)
{
    pthread_mutex_lock(&g_mu);
    atomic_store(f, 1);
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static void wait_for(atomic_int *f, int secs)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += secs;
    pthread_mutex_lock(&g_mu);
    while (!atomic_load(f))
        if (pthread_cond_timedwait(&g_cv, &g_mu, &until) != 0) break;
    pthread_mutex_unlock(&g_mu);
    assert_true(atomic_load(f));
}

static void on_result(void *ud, const gw_rl_result *r)
{
    call *c = ud;
    c->r = *r;
    c->answered_ns = ag_now_ns();
    set_flag(&c->done);
}

static void take_task(void *arg)
{
    call *c = arg;
    c->start_ns = ag_now_ns();
    gw_ratelimit_take(c->rl, c->key, c->p, on_result, c);
    c->returned_ns = ag_now_ns();
    set_flag(&c->returned);
}

/* A take by replica i on its loop; fills *c (answer and timings). */
static void take_on(int i, const char *key, const gw_rl_policy *p, call *c)
{
    memset(c, 0, sizeof *c);
    c->rl = g_rl[i], c->key = key, c->p = p;
    assert_int_equal(ag_loop_post(ag_loopset_get(g_loops, i), take_task, c), 0);
    wait_for(&c->returned, 5);
    wait_for(&c->done, 5);
}

static gw_rl_result take(int i, const char *key, const gw_rl_policy *p)
{
    call c;
    take_on(i, key, p, &c);
    return c.r;
}

static redisContext *redis_sync(void)
{
    struct timeval tv = {2, 0};
    redisContext *r = redisConnectWithTimeout("127.0.0.1", g_port, tv);
    assert_non_null(r);
    assert_int_equal(r->err, 0);
    return r;
}

static long long redis_int(redisContext *r, const char *fmt, const char *arg)
{
    redisReply *rep = redisCommand(r, fmt, arg);
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
    long long v = rep->integer;
    freeReplyObject(rep);
    return v;
}

static void redis_ok(redisContext *r, const char *cmd)
{
    redisReply *rep = redisCommand(r, cmd);
    assert_non_null(rep);
    assert_int_not_equal(rep->type, REDIS_REPLY_ERROR);
    freeReplyObject(rep);
}

static void ctl(const char *op)
{
    const char *c = getenv("AGORA_TEST_HARNESS_CTL");
    assert_non_null(c);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "'%s' %s redis", c, op);
    assert_int_equal(system(cmd), 0);
}

static double counter(int i, const char *family, const char *label, const char *value)
{
    const char *l[] = {label}, *v[] = {value};
    ag_metric *f = ag_metrics_family(g_metrics[i], AG_COUNTER, family, "", 1, l, NULL, 0);
    return ag_series_value(ag_metric_series(f, v));
}

static void release_task(void *arg)
{
    (void)arg;
    for (int i = 0; i < 2; i++)
        gw_ratelimit_loop_release(g_rl[i]);
}

static int setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN); /* as ag_service does: hiredis writes with write(2) */
    ag_log_setup("ratelimit-it", AG_LOG_WARN);
    g_url = getenv("AGORA_TEST_REDIS_URL");
    const char *port = getenv("AGORA_TEST_REDIS_PORT");
    if (!g_url || !port) {
        fprintf(stderr, "run under tests/harness/with-servers redis -- ...\n");
        return -1;
    }
    g_port = (int)strtol(port, NULL, 10);
    if (ag_loopset_new(2, &g_loops) < 0 || ag_loopset_start(g_loops) < 0) return -1;
    for (int i = 0; i < 2; i++) {
        g_metrics[i] = ag_metrics_new();
        gw_rl_opts o = {.url = g_url, .timeout_ms = 50, .metrics = g_metrics[i]};
        if (gw_ratelimit_new_opts(&o, &g_rl[i]) < 0) return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 2; i++)
        ag_loop_post(ag_loopset_get(g_loops, i), release_task, NULL);
    ag_loopset_free(g_loops);
    for (int i = 0; i < 2; i++) {
        gw_ratelimit_free(g_rl[i]);
        ag_metrics_free(g_metrics[i]);
    }
    return 0;
}

static void test_replicas_share_one_budget(void **state)
{
    (void)state;
    const gw_rl_policy p = {.name = "shared", .rate = 0.001, .burst = 10};
    for (int n = 0; n < 10; n++) {
        gw_rl_result r = take(n % 2, "ip:192.0.2.1", &p);
        assert_true(r.allowed);
        assert_false(r.degraded);
        assert_int_equal(r.limit, 10);
        assert_int_equal(r.remaining, 9 - n); /* one count across both */
    }
    for (int n = 0; n < 4; n++) {
        gw_rl_result r = take(n % 2, "ip:192.0.2.1", &p);
        assert_false(r.allowed);
        assert_false(r.degraded);
        assert_int_equal(r.remaining, 0);
        assert_true(r.retry_after_s >= 999); /* a token every 1000 s */
    }
    /* another client, another policy: their own buckets */
    assert_true(take(1, "ip:192.0.2.2", &p).allowed);
    const gw_rl_policy q = {.name = "other", .rate = 0.001, .burst = 1};
    assert_true(take(0, "ip:192.0.2.1", &q).allowed);
    assert_false(take(1, "ip:192.0.2.1", &q).allowed);

    /* The bucket lives in Redis and expires once it would be full again. */
    redisContext *r = redis_sync();
    assert_int_equal(redis_int(r, "EXISTS %s", "agora:rl:shared:ip:192.0.2.1"), 1);
    long long ttl = redis_int(r, "PTTL %s", "agora:rl:shared:ip:192.0.2.1");
    assert_true(ttl > 9000 * 1000LL && ttl <= 10001 * 1000LL);
    redisFree(r);
}

static void test_refill_on_the_servers_clock(void **state)
{
    (void)state;
    const gw_rl_policy p = {.name = "refill", .rate = 20, .burst = 2};
    assert_true(take(0, "user:u-1", &p).allowed);
    assert_true(take(1, "user:u-1", &p).allowed);
    gw_rl_result r = take(0, "user:u-1", &p);
    assert_false(r.allowed);
    assert_false(r.degraded);
    assert_int_equal(r.retry_after_s, 1);
    struct timespec ts = {0, 120 * 1000000}; /* 2.4 tokens at 20/s */
    nanosleep(&ts, NULL);
    assert_true(take(1, "user:u-1", &p).allowed);
    assert_true(take(0, "user:u-1", &p).allowed);
}

static void test_script_loaded_again_after_flush(void **state)
{
    (void)state;
    const gw_rl_policy p = {.name = "flush", .rate = 0.001, .burst = 3};
    assert_true(take(0, "ip:192.0.2.3", &p).allowed);
    redisContext *r = redis_sync();
    redis_ok(r, "SCRIPT FLUSH");
    redisFree(r);
    for (int i = 0; i < 2; i++) {
        gw_rl_result res = take(i, "ip:192.0.2.3", &p);
        assert_true(res.allowed);
        assert_false(res.degraded); /* NOSCRIPT, then EVAL: still Redis */
    }
    gw_rl_result res = take(0, "ip:192.0.2.3", &p);
    assert_false(res.allowed);
    assert_false(res.degraded);
}

/* A Redis that does not answer (CLIENT PAUSE): the take is answered from
 * memory once the 50 ms timeout passes, not when Redis wakes up. */
static void test_slow_redis_times_out_to_memory(void **state)
{
    (void)state;
    const gw_rl_policy p = {.name = "slow", .rate = 0.001, .burst = 5};
    assert_false(take(0, "ip:192.0.2.4", &p).degraded); /* connected */
    double to0 = counter(0, "agora_ratelimit_fallbacks_total", "reason", "timeout");
    redisContext *r = redis_sync();
    redis_ok(r, "CLIENT PAUSE 1500 ALL");
    call c;
    take_on(0, "ip:192.0.2.4", &p, &c);
    uint64_t waited_ms = (c.answered_ns - c.start_ns) / 1000000;
    assert_true(c.r.degraded);
    assert_true(c.r.allowed);
    assert_true(waited_ms >= 45 && waited_ms < 1000);
    assert_true(c.returned_ns - c.start_ns < 25 * 1000000ULL);
    /* while the reply is overdue, takes do not queue behind it: answered
     * well within the 50 ms timeout (bounds leave room for a loaded box) */
    take_on(0, "ip:192.0.2.4", &p, &c);
    assert_true(c.r.degraded);
    assert_true(c.answered_ns - c.start_ns < 40 * 1000000ULL);
    assert_true(counter(0, "agora_ratelimit_fallbacks_total", "reason", "timeout") - to0 >= 2);
    redis_ok(r, "CLIENT UNPAUSE");
    redisFree(r);
    /* the late replies arrive and Redis answers again */
    bool back = false;
    for (int i = 0; i < 100 && !back; i++) {
        back = !take(0, "ip:192.0.2.5", &p).degraded;
        if (!back) nanosleep(&(struct timespec){0, 50 * 1000000}, NULL);
    }
    assert_true(back);
}

static bool wait_shared_again(void)
{
    const gw_rl_policy p = {.name = "probe", .rate = 1000, .burst = 1000};
    for (int i = 0; i < 300; i++) {
        bool a = !take(0, "probe", &p).degraded;
        bool b = !take(1, "probe", &p).degraded;
        if (a && b) return true;
        nanosleep(&(struct timespec){0, 50 * 1000000}, NULL);
    }
    return false;
}

static void test_killed_then_restarted(void **state)
{
    (void)state;
    assert_true(wait_shared_again());
    double err0 = counter(0, "agora_ratelimit_redis_errors_total", "kind", "disconnect") +
                  counter(0, "agora_ratelimit_redis_errors_total", "kind", "connect");
    ctl("kill");

    /* Each replica answers from its own memory: promptly, never blocking
     * its loop, and still limiting (3 per replica now, not 3 in all). */
    const gw_rl_policy p = {.name = "outage", .rate = 0.001, .burst = 3};
    uint64_t worst_return = 0, worst_answer = 0;
    for (int i = 0; i < 2; i++) {
        for (int n = 0; n < 5; n++) {
            call c;
            take_on(i, "ip:192.0.2.6", &p, &c);
            assert_true(c.r.degraded);
            assert_int_equal(c.r.allowed, n < 3);
            if (c.returned_ns - c.start_ns > worst_return)
                worst_return = c.returned_ns - c.start_ns;
            if (c.answered_ns - c.start_ns > worst_answer)
                worst_answer = c.answered_ns - c.start_ns;
        }
    }
    assert_true(worst_return < 25 * 1000000ULL);  /* take() never waits */
    assert_true(worst_answer < 500 * 1000000ULL); /* nor the answer, for long */
    assert_true(counter(0, "agora_ratelimit_redis_errors_total", "kind", "disconnect") +
                    counter(0, "agora_ratelimit_redis_errors_total", "kind", "connect") >
                err0);
    assert_true(counter(1, "agora_ratelimit_fallbacks_total", "reason", "unavailable") > 0);

    /* Back (empty, scripts gone): both reconnect and share one budget again. */
    ctl("start");
    assert_true(wait_shared_again());
    const gw_rl_policy q = {.name = "after", .rate = 0.001, .burst = 4};
    for (int n = 0; n < 6; n++) {
        gw_rl_result r = take(n % 2, "ip:192.0.2.6", &q);
        assert_false(r.degraded);
        assert_int_equal(r.allowed, n < 4);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replicas_share_one_budget),
        cmocka_unit_test(test_refill_on_the_servers_clock),
        cmocka_unit_test(test_script_loaded_again_after_flush),
        cmocka_unit_test(test_slow_redis_times_out_to_memory),
        cmocka_unit_test(test_killed_then_restarted),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
