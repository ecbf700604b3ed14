/* grpc.c — the gRPC server and client of src/lib/grpc against each other,
 * in one process on loopback: what a caller of ag_grpc_client_call sees. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <time.h>

#include "agora/agora.h"
#include "agora/grpc.h"
#include "agora/loop.h"
#include "agora/metrics.h"
#include "agora/pool.h"
#include "grpc/internal.h"

static ag_loopset *g_loops;
static ag_pool *g_pool;
static ag_grpc_server *g_srv;
static ag_grpc_client *g_cli;
static char g_base[64];
static int g_ready = 0;

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void echo(ag_grpc_call *c, void *ud)
{
    size_t n;
    const uint8_t *in = ag_grpc_request(c, &n);
    const char *auth = ag_grpc_metadata(c, "authorization");
    if (auth && strcmp(auth, "Bearer secret") != 0) {
        ag_grpc_fail(c, AG_GRPC_UNAUTHENTICATED, "wrong token");
        return;
    }
    ag_grpc_reply(c, in, n);
}

static void slow(ag_grpc_call *c, void *ud)
{
    sleep_ms(300);
    ag_grpc_reply(c, "late", 4);
}

static void refuse(ag_grpc_call *c, void *ud)
{
    /* not ASCII and a %: percent-encoded on the wire, decoded by the client */
    ag_grpc_fail(c, ag_grpc_status_of(AG_ENOTFOUND), "no such thing: caf\xc3\xa9 100%%");
}

static void silent(ag_grpc_call *c, void *ud)
{
}

static int ready(void *ud)
{
    return g_ready;
}

static const ag_grpc_method k_methods[] = {
    {"/t.T/Echo", echo, NULL}, {"/t.T/Slow", slow, NULL}, {"/t.T/Refuse", refuse, NULL},
    {"/t.T/Silent", silent, NULL}, {NULL, NULL, NULL}};

static int setup(void **state)
{
    signal(SIGPIPE, SIG_IGN); /* as every service does (ag_service_run) */
    setenv("AGORA_GRPC_MAX_MESSAGE", "65536", 1);
    ag_log_setup("test", AG_LOG_OFF);
    assert_int_equal(ag_loopset_new(1, &g_loops), 0);
    assert_int_equal(ag_loopset_start(g_loops), 0);
    assert_int_equal(ag_pool_new(4, 16, &g_pool), 0);
    ag__grpc_opts o = {.host = "127.0.0.1", .port = 0, .loops = g_loops, .pool = g_pool,
                       .metrics = ag_metrics_default(), .methods = k_methods, .name = "t.T",
                       .ready = ready};
    assert_int_equal(ag__grpc_server_start(&o, &g_srv), 0);
    snprintf(g_base, sizeof g_base, "http://127.0.0.1:%d", ag__grpc_server_port(g_srv));
    assert_int_equal(ag_grpc_client_new(&g_cli), 0);
    sleep_ms(50); /* the listener is opened on the loop */
    return 0;
}

static int teardown(void **state)
{
    ag_grpc_client_free(g_cli);
    ag__grpc_server_stop(g_srv);
    ag_pool_free(g_pool);
    ag_loopset_stop(g_loops);
    ag_loopset_free(g_loops);
    return 0;
}

static void test_status_mapping(void **state)
{
    assert_int_equal(ag_grpc_status_of(0), AG_GRPC_OK);
    assert_int_equal(ag_grpc_status_of(AG_ENOTFOUND), AG_GRPC_NOT_FOUND);
    assert_int_equal(ag_grpc_status_of(AG_EINVAL), AG_GRPC_INVALID_ARGUMENT);
    assert_int_equal(ag_grpc_status_of(AG_EEXISTS), AG_GRPC_ALREADY_EXISTS);
    assert_int_equal(ag_grpc_status_of(AG_EAUTH), AG_GRPC_UNAUTHENTICATED);
    assert_int_equal(ag_grpc_status_of(AG_EDEADLINE), AG_GRPC_DEADLINE_EXCEEDED);
    assert_int_equal(ag_grpc_status_of(AG_EBUSY), AG_GRPC_RESOURCE_EXHAUSTED);
    assert_int_equal(ag_grpc_status_of(AG_EUNAVAIL), AG_GRPC_UNAVAILABLE);
    assert_int_equal(ag_grpc_status_of(AG_ECONSTRAINT), AG_GRPC_FAILED_PRECONDITION);
    assert_int_equal(ag_grpc_status_of(AG_EIO), AG_GRPC_INTERNAL);
    assert_string_equal(ag_grpc_status_name(AG_GRPC_UNAUTHENTICATED), "UNAUTHENTICATED");
    assert_string_equal(ag_grpc_status_name(99), "UNKNOWN");
}

static void test_echo_many_calls_on_kept_connections(void **state)
{
    /* Every call answered: the kept connection is reused call after call
     * (the bug that ruled libcurl out failed the second one). */
    for (int i = 0; i < 200; i++) {
        char msg[32];
        int n = snprintf(msg, sizeof msg, "hello %d", i);
        ag_grpc_answer a;
        assert_int_equal(ag_grpc_client_call(g_cli, g_base, "/t.T/Echo", "t", "Bearer secret", msg,
                                             (size_t)n, ag_deadline_in(2000), &a),
                         0);
        assert_int_equal(a.status, AG_GRPC_OK);
        assert_int_equal(a.msg_len, (size_t)n);
        assert_memory_equal(a.msg, msg, (size_t)n);
        ag_grpc_answer_clear(&a);
    }
    /* An empty message is a message. */
    ag_grpc_answer a;
    assert_int_equal(
        ag_grpc_client_call(g_cli, g_base, "/t.T/Echo", "t", NULL, "", 0, ag_deadline_in(2000), &a), 0);
    assert_int_equal(a.status, AG_GRPC_OK);
    assert_int_equal(a.msg_len, 0);
    ag_grpc_answer_clear(&a);
}

static void *caller(void *arg)
{
    int *ok = arg;
    for (int i = 0; i < 50; i++) {
        ag_grpc_answer a;
        if (ag_grpc_client_call(g_cli, g_base, "/t.T/Echo", "t", NULL, "x", 1, ag_deadline_in(5000),
                                &a) == 0 &&
            a.status == AG_GRPC_OK && a.msg_len == 1)
            (*ok)++;
        ag_grpc_answer_clear(&a);
    }
    return NULL;
}

static void test_concurrent_callers(void **state)
{
    pthread_t t[8];
    int ok[8] = {0};
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, caller, &ok[i]);
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(ok[i], 50);
    }
}

static void test_failures_reach_the_caller(void **state)
{
    ag_grpc_answer a;
    assert_int_equal(ag_grpc_client_call(g_cli, g_base, "/t.T/Refuse", "t", NULL, "", 0,
                                         ag_deadline_in(2000), &a),
                     0);
    assert_int_equal(a.status, AG_GRPC_NOT_FOUND);
    assert_string_equal(a.message, "no such thing: caf\xc3\xa9 100%");
    ag_grpc_answer_clear(&a);
    assert_int_equal(ag_grpc_client_call(g_cli, g_base, "/t.T/Echo", "t", "Bearer other", "", 0,
                                         ag_deadline_in(2000), &a),
                     0);
    assert_int_equal(a.status, AG_GRPC_UNAUTHENTICATED);
    ag_grpc_answer_clear(&a);
    assert_int_equal(
        ag_grpc_client_call(g_cli, g_base, "/t.T/Nope", "t", NULL, "", 0, ag_deadline_in(2000), &a), 0);
    assert_int_equal(a.status, AG_GRPC_UNIMPLEMENTED);
    ag_grpc_answer_clear(&a);
    /* A handler that answers nothing is INTERNAL, never a hang. */
    assert_int_equal(
        ag_grpc_client_call(g_cli, g_base, "/t.T/Silent", "t", NULL, "", 0, ag_deadline_in(2000), &a),
        0);
    assert_int_equal(a.status, AG_GRPC_INTERNAL);
    ag_grpc_answer_clear(&a);
    /* Over AGORA_GRPC_MAX_MESSAGE. */
    size_t big = 70000;
    char *buf = ag_calloc(big, 1);
    assert_int_equal(ag_grpc_client_call(g_cli, g_base, "/t.T/Echo", "t", NULL, buf, big,
                                         ag_deadline_in(2000), &a),
                     0);
    assert_int_equal(a.status, AG_GRPC_RESOURCE_EXHAUSTED);
    ag_grpc_answer_clear(&a);
    ag_free(buf);
}

static void test_deadlines(void **state)
{
    /* The client gives up at its deadline... */
    ag_grpc_answer a;
    uint64_t t0 = ag_now_ms();
    assert_int_equal(
        ag_grpc_client_call(g_cli, g_base, "/t.T/Slow", "t", NULL, "", 0, ag_deadline_in(100), &a),
        AG_EDEADLINE);
    assert_true(ag_now_ms() - t0 < 290);
    /* ...and the next call works (the broken connection was not kept). */
    assert_int_equal(
        ag_grpc_client_call(g_cli, g_base, "/t.T/Echo", "t", NULL, "ok", 2, ag_deadline_in(2000), &a),
        0);
    assert_int_equal(a.status, AG_GRPC_OK);
    ag_grpc_answer_clear(&a);
    /* A deadline already past is not sent at all. */
    assert_int_equal(ag_grpc_client_call(g_cli, g_base, "/t.T/Echo", "t", NULL, "", 0,
                                         ag_deadline_in(0), &a),
                     AG_EDEADLINE);
}

static void test_health(void **state)
{
    /* HealthCheckRequest{} is empty; the answer is {status: 1 SERVING}. */
    ag_grpc_answer a;
    g_ready = 0;
    assert_int_equal(ag_grpc_client_call(g_cli, g_base, "/grpc.health.v1.Health/Check", "t", NULL, "",
                                         0, ag_deadline_in(2000), &a),
                     0);
    assert_int_equal(a.status, AG_GRPC_OK);
    assert_int_equal(a.msg_len, 2);
    assert_memory_equal(a.msg, "\x08\x01", 2);
    ag_grpc_answer_clear(&a);
    g_ready = AG_EUNAVAIL; /* {status: 2 NOT_SERVING} */
    assert_int_equal(ag_grpc_client_call(g_cli, g_base, "/grpc.health.v1.Health/Check", "t", NULL, "",
                                         0, ag_deadline_in(2000), &a),
                     0);
    assert_memory_equal(a.msg, "\x08\x02", 2);
    ag_grpc_answer_clear(&a);
    g_ready = 0;
    /* service "t.T" is known, "other" is NOT_FOUND */
    assert_int_equal(ag_grpc_client_call(g_cli, g_base, "/grpc.health.v1.Health/Check", "t", NULL,
                                         "\x0a\x03t.T", 5, ag_deadline_in(2000), &a),
                     0);
    assert_int_equal(a.status, AG_GRPC_OK);
    ag_grpc_answer_clear(&a);
    assert_int_equal(ag_grpc_client_call(g_cli, g_base, "/grpc.health.v1.Health/Check", "t", NULL,
                                         "\x0a\x05other", 7, ag_deadline_in(2000), &a),
                     0);
    assert_int_equal(a.status, AG_GRPC_NOT_FOUND);
    ag_grpc_answer_clear(&a);
}

static void test_no_server_is_unavailable(void **state)
{
    ag_grpc_answer a;
    /* a port nobody listens on (the server's, + 1 is unlikely to be bound
     * by this process; a refused connection is what matters) */
    assert_int_equal(ag_grpc_client_call(g_cli, "http://127.0.0.1:1", "/t.T/Echo", "t", NULL, "", 0,
                                         ag_deadline_in(1000), &a),
                     AG_EUNAVAIL);
    assert_int_equal(ag_grpc_client_call(g_cli, "https://127.0.0.1:1", "/t.T/Echo", "t", NULL, "", 0,
                                         ag_deadline_in(1000), &a),
                     AG_EUNAVAIL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_mapping),
        cmocka_unit_test(test_echo_many_calls_on_kept_connections),
        cmocka_unit_test(test_concurrent_callers),
        cmocka_unit_test(test_failures_reach_the_caller),
        cmocka_unit_test(test_deadlines),
        cmocka_unit_test(test_health),
        cmocka_unit_test(test_no_server_is_unavailable),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
