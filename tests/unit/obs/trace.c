/* Unit tests of src/lib/obs/trace.c: traceparent and tracestate, the
 * current context, span parentage and sampling, and the OTLP/HTTP JSON
 * export to a listener on 127.0.0.1 (in forked children, as the tracer is
 * set up once per process). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agora/trace.h"

static const char *const TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

static void test_traceparent_round_trip(void **state)
{
    (void)state;
    ag_trace_ctx c;
    assert_int_equal(ag_traceparent_parse(TP, &c), 0);
    assert_true(c.valid);
    assert_int_equal(c.flags, 1);
    char out[AG_TRACEPARENT_LEN + 1], tid[33], sid[17];
    ag_traceparent_format(&c, out);
    assert_string_equal(out, TP);
    ag_trace_id_hex(&c, tid);
    ag_span_id_hex(&c, sid);
    assert_string_equal(tid, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(sid, "00f067aa0ba902b7");
    /* A later version may append fields; its first 55 characters count. */
    assert_int_equal(
        ag_traceparent_parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-ext", &c), 0);
    assert_int_equal(c.flags, 0);
}

static void test_traceparent_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",      /* short */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   /* upper case */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   /* zero span id */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* version ff */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", /* 00 with more */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",   /* not hex */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ag_trace_ctx c;
        assert_int_equal(ag_traceparent_parse(bad[i], &c), AG_EINVAL);
        assert_false(c.valid);
    }
    ag_trace_ctx c;
    assert_int_equal(ag_traceparent_parse(NULL, &c), AG_EINVAL);
    c.valid = false;
    char out[AG_TRACEPARENT_LEN + 1] = "x";
    ag_traceparent_format(&c, out);
    assert_string_equal(out, "");
}

static void test_tracestate(void **state)
{
    (void)state;
    ag_trace_ctx c = {0};
    ag_tracestate_set(&c, " congo=t61rcWkgMzE,rojo=00f067aa0ba902b7 ");
    assert_string_equal(c.state, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
    ag_tracestate_set(&c, "a=1\nb=2"); /* not a header value */
    assert_string_equal(c.state, "");
    /* Too long: cut at the end of the last member that fits. */
    char big[600];
    size_t n = 0;
    for (int i = 0; n + 12 < sizeof big; i++)
        n += (size_t)snprintf(big + n, sizeof big - n, "%sk%02d=vvvvvv", i ? "," : "", i % 100);
    ag_tracestate_set(&c, big);
    size_t len = strlen(c.state);
    assert_true(len > 0 && len < sizeof c.state);
    assert_memory_equal(c.state, big, len);
    assert_true(big[len] == ',');
    ag_tracestate_set(&c, NULL);
    assert_string_equal(c.state, "");
}

static void test_spans_and_current(void **state)
{
    (void)state;
    assert_int_equal(ag_trace_setup("unit", NULL), 0); /* no endpoint: propagate only */
    assert_false(ag_trace_recording());
    ag_trace_set_current(NULL);
    /* Background work nothing caused: no span, no context. */
    ag_span s;
    ag_span_begin(&s, "tx", AG_SPAN_INTERNAL, NULL);
    assert_false(s.ctx.valid);
    ag_span_end(&s);
    /* A server span with no caller's context starts a sampled trace. */
    ag_span root;
    ag_trace_ctx none = {0};
    ag_span_begin(&root, "GET /x", AG_SPAN_SERVER, &none);
    assert_true(root.ctx.valid);
    assert_int_equal(root.ctx.flags, 1);
    assert_false(ag_span_recording(&root)); /* nowhere to export */
    ag_span_enter(&root);
    ag_trace_ctx cur = ag_trace_current();
    assert_memory_equal(cur.span_id, root.ctx.span_id, 8);
    /* A child: the same trace, another span id, the state passed on. */
    ag_span child;
    ag_span_begin(&child, "GET peer", AG_SPAN_CLIENT, NULL);
    assert_memory_equal(child.ctx.trace_id, root.ctx.trace_id, 16);
    assert_memory_not_equal(child.ctx.span_id, root.ctx.span_id, 8);
    ag_span_enter(&child);
    ag_span_end(&child); /* leaves: the root is current again */
    cur = ag_trace_current();
    assert_memory_equal(cur.span_id, root.ctx.span_id, 8);
    ag_span_end(&root);
    assert_false(ag_trace_current().valid);
    /* An unsampled caller: its children are unsampled, the trace id kept. */
    ag_trace_ctx p;
    assert_int_equal(
        ag_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &p), 0);
    ag_tracestate_set(&p, "v=1");
    ag_span_begin(&s, "GET /y", AG_SPAN_SERVER, &p);
    assert_int_equal(s.ctx.flags, 0);
    assert_memory_equal(s.ctx.trace_id, p.trace_id, 16);
    assert_string_equal(s.ctx.state, "v=1");
    ag_span_end(&s);
    ag_trace_shutdown();
}

/* ---- In children: sampling ratio and export ------------------------------------------- */

static int run_child(void (*fn)(void))
{
    pid_t pid = fork();
    if (pid == 0) {
        fn();
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 100;
}

static void ratio_zero(void)
{
    setenv("OTEL_TRACES_SAMPLER", "traceidratio", 1);
    setenv("OTEL_TRACES_SAMPLER_ARG", "0", 1);
    if (ag_trace_setup("unit", NULL) < 0) _exit(1);
    for (int i = 0; i < 100; i++) {
        ag_span s;
        ag_trace_ctx none = {0};
        ag_span_begin(&s, "r", AG_SPAN_SERVER, &none);
        if (!s.ctx.valid || s.ctx.flags != 0) _exit(2);
        ag_span_end(&s);
    }
    _exit(0);
}

static void bad_sampler(void)
{
    setenv("OTEL_TRACES_SAMPLER", "sometimes", 1);
    _exit(ag_trace_setup("unit", NULL) == AG_ECONFIG ? 0 : 1);
}

static void test_sampler_settings(void **state)
{
    (void)state;
    assert_int_equal(run_child(ratio_zero), 0);
    assert_int_equal(run_child(bad_sampler), 0);
}

/* A one-shot HTTP listener: reads one request, answers 200, keeps the body. */
typedef struct listener {
    int fd, port;
    char body[65536];
    size_t len;
} listener;

static void *serve_one(void *arg)
{
    listener *l = arg;
    int c = accept(l->fd, NULL, NULL);
    if (c < 0) return NULL;
    char buf[70000];
    size_t got = 0;
    long clen = -1;
    char *hend = NULL;
    for (;;) {
        ssize_t r = read(c, buf + got, sizeof buf - 1 - got);
        if (r <= 0) break;
        got += (size_t)r;
        buf[got] = '\0';
        if (!hend && (hend = strstr(buf, "\r\n\r\n"))) {
            char *cl = strcasestr(buf, "Content-Length:");
            clen = cl ? strtol(cl + 15, NULL, 10) : 0;
        }
        if (hend && (long)(got - (size_t)(hend + 4 - buf)) >= clen) break;
    }
    if (hend) {
        l->len = got - (size_t)(hend + 4 - buf);
        memcpy(l->body, hend + 4, l->len);
    }
    const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    (void)!write(c, ok, sizeof ok - 1);
    close(c);
    return NULL;
}

static listener g_l;

static void export_one(void)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", g_l.port);
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url, 1);
    setenv("OTEL_BSP_SCHEDULE_DELAY", "50", 1);
    pthread_t t;
    pthread_create(&t, NULL, serve_one, &g_l);
    if (ag_trace_setup("unit", NULL) < 0 || !ag_trace_recording()) _exit(1);
    ag_span s;
    ag_trace_ctx p;
    ag_traceparent_parse(TP, &p);
    ag_span_begin(&s, "GET /v1/things/:id", AG_SPAN_SERVER, &p);
    ag_span_attr_str(&s, "http.route", "/v1/things/:id");
    ag_span_attr_int(&s, "http.response.status_code", 503);
    ag_span_error(&s, "503 \"busy\"");
    char sid[17];
    ag_span_id_hex(&s.ctx, sid);
    ag_span_end(&s);
    ag_trace_shutdown(); /* exports what is queued */
    pthread_join(t, NULL);
    json_error_t e;
    json_t *doc = json_loadb(g_l.body, g_l.len, 0, &e);
    if (!doc) _exit(2);
    json_t *rs = json_array_get(json_object_get(doc, "resourceSpans"), 0);
    json_t *attr =
        json_array_get(json_object_get(json_object_get(rs, "resource"), "attributes"), 0);
    if (strcmp(json_string_value(json_object_get(json_object_get(attr, "value"), "stringValue")),
               "agora-unit") != 0)
        _exit(3);
    json_t *sp = json_array_get(
        json_object_get(json_array_get(json_object_get(rs, "scopeSpans"), 0), "spans"), 0);
    if (strcmp(json_string_value(json_object_get(sp, "traceId")),
               "4bf92f3577b34da6a3ce929d0e0e4736") != 0 ||
        strcmp(json_string_value(json_object_get(sp, "parentSpanId")), "00f067aa0ba902b7") != 0 ||
        strcmp(json_string_value(json_object_get(sp, "spanId")), sid) != 0 ||
        json_integer_value(json_object_get(sp, "kind")) != 2 ||
        !json_is_string(json_object_get(sp, "startTimeUnixNano")))
        _exit(4);
    json_t *a1 = json_array_get(json_object_get(sp, "attributes"), 1);
    if (strcmp(json_string_value(json_object_get(json_object_get(a1, "value"), "intValue")),
               "503") != 0)
        _exit(5);
    json_t *status = json_object_get(sp, "status");
    if (json_integer_value(json_object_get(status, "code")) != 2 ||
        strcmp(json_string_value(json_object_get(status, "message")), "503 \"busy\"") != 0)
        _exit(6);
    json_decref(doc);
    _exit(0);
}

static void test_export_otlp_json(void **state)
{
    (void)state;
    g_l.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(g_l.fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(g_l.fd, 4), 0);
    socklen_t sl = sizeof a;
    getsockname(g_l.fd, (struct sockaddr *)&a, &sl);
    g_l.port = ntohs(a.sin_port);
    assert_int_equal(run_child(export_one), 0);
    close(g_l.fd);
}

/* A collector that is not there: spans are dropped and counted, and
 * shutdown does not hang. */
static void export_nowhere(void)
{
    setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:1/v1/traces", 1);
    setenv("OTEL_BSP_SCHEDULE_DELAY", "20", 1);
    setenv("OTEL_BSP_MAX_QUEUE_SIZE", "4", 1);
    if (ag_trace_setup("unit", NULL) < 0) _exit(1);
    for (int i = 0; i < 50; i++) {
        ag_span s;
        ag_trace_ctx none = {0};
        ag_span_begin(&s, "x", AG_SPAN_SERVER, &none);
        ag_span_end(&s);
    }
    ag_trace_shutdown();
    /* Every one of the 50 is counted: the queue's 4 at most as failed
     * exports, the rest as a full queue. */
    ag_buf b;
    ag_buf_init(&b, 0);
    ag_metrics_render(ag_metrics_default(), &b);
    ag_buf_append(&b, "", 1);
    double full = 0, failed = 0;
    const char *p =
        strstr(b.data, "agora_trace_spans_dropped_total{service=\"unit\",reason=\"queue_full\"} ");
    if (p) full = strtod(strchr(p, '}') + 2, NULL);
    p = strstr(b.data,
               "agora_trace_spans_dropped_total{service=\"unit\",reason=\"export_failed\"} ");
    if (p) failed = strtod(strchr(p, '}') + 2, NULL);
    ag_buf_release(&b);
    if (failed < 1 || full + failed != 50) _exit(2);
    _exit(0);
}

static void test_export_collector_down(void **state)
{
    (void)state;
    assert_int_equal(run_child(export_nowhere), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traceparent_round_trip),
        cmocka_unit_test(test_traceparent_rejects),
        cmocka_unit_test(test_tracestate),
        cmocka_unit_test(test_spans_and_current),
        cmocka_unit_test(test_sampler_settings),
        cmocka_unit_test(test_export_otlp_json),
        cmocka_unit_test(test_export_collector_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
