/* Unit tests of src/lib/obs/metrics.c: counters, gauges and histograms in a private registry and their Prometheus text rendering. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agora/metrics.h"

#define PROMTOOL "/usr/bin/promtool"

/* Renders `m` into a fresh NUL-terminated string (free with ag_free). */
static char *render(ag_metrics *m)
{
    ag_buf b;
    ag_buf_init(&b, 0);
    assert_int_equal(ag_metrics_render(m, &b), 0);
    return ag_buf_detach(&b, NULL);
}

/* True when `text` has the exact line `line`. */
static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0')) return true;
    return false;
}

static void expect_line(const char *text, const char *line)
{
    if (!has_line(text, line)) fail_msg("missing line \"%s\" in:\n%s", line, text);
}

static const char *const L_METHOD_CODE[] = {"method", "code"};

static void test_counter_render(void **state)
{
    (void)state;
    ag_metrics *m = ag_metrics_new();
    ag_metric *f = ag_metrics_family(m, AG_COUNTER, "agt_requests_total", "Requests served.", 2,
                                     L_METHOD_CODE, NULL, 0);
    ag_series *ok = ag_metric_series(f, (const char *const[]){"GET", "200"});
    ag_series *err = ag_metric_series(f, (const char *const[]){"POST", "500"});
    ag_series_inc(ok, 3);
    ag_series_inc(ok, 1);
    ag_series_inc(err, 1);
    assert_true(ag_series_value(ok) == 4.0);
    char *t = render(m);
    expect_line(t, "# HELP agt_requests_total Requests served.");
    expect_line(t, "# TYPE agt_requests_total counter");
    expect_line(t, "agt_requests_total{method=\"GET\",code=\"200\"} 4");
    expect_line(t, "agt_requests_total{method=\"POST\",code=\"500\"} 1");
    /* HELP comes before TYPE, which comes before the samples. */
    assert_true(strstr(t, "# HELP") < strstr(t, "# TYPE"));
    assert_true(strstr(t, "# TYPE") < strstr(t, "agt_requests_total{"));
    ag_free(t);
    ag_metrics_free(m);
}

static void test_unlabelled_and_empty(void **state)
{
    (void)state;
    ag_metrics *m = ag_metrics_new();
    ag_metric *f = ag_metrics_family(m, AG_COUNTER, "agt_plain_total", "Plain.", 0, NULL, NULL, 0);
    ag_series *s = ag_metric_series(f, NULL);
    ag_series_inc(s, 2);
    /* A family with no series renders nothing at all. */
    (void)ag_metrics_family(m, AG_GAUGE, "agt_unused", "Unused.", 1,
                            (const char *const[]){"x"}, NULL, 0);
    char *t = render(m);
    expect_line(t, "agt_plain_total 2");
    assert_null(strstr(t, "agt_unused"));
    ag_free(t);
    ag_metrics_free(m);
}

static void test_gauge_render(void **state)
{
    (void)state;
    ag_metrics *m = ag_metrics_new();
    ag_metric *f = ag_metrics_family(m, AG_GAUGE, "agt_temperature", "A gauge.", 1,
                                     (const char *const[]){"room"}, NULL, 0);
    ag_series *a = ag_metric_series(f, (const char *const[]){"a"});
    ag_series *b = ag_metric_series(f, (const char *const[]){"b"});
    ag_series *c = ag_metric_series(f, (const char *const[]){"c"});
    ag_series_set(a, 21.5);
    ag_series_set(b, 3);
    ag_series_add(b, 2);
    ag_series_add(b, -7);
    ag_series_set(c, -0.125);
    assert_true(ag_series_value(a) == 21.5);
    assert_true(ag_series_value(b) == -2.0);
    char *t = render(m);
    expect_line(t, "# TYPE agt_temperature gauge");
    expect_line(t, "agt_temperature{room=\"a\"} 21.5");
    expect_line(t, "agt_temperature{room=\"b\"} -2");
    expect_line(t, "agt_temperature{room=\"c\"} -0.125");
    /* Series sorted by label value. */
    assert_true(strstr(t, "room=\"a\"") < strstr(t, "room=\"b\""));
    assert_true(strstr(t, "room=\"b\"") < strstr(t, "room=\"c\""));
    ag_free(t);
    ag_metrics_free(m);
}

static void test_special_gauge_values(void **state)
{
    (void)state;
    ag_metrics *m = ag_metrics_new();
    ag_metric *f = ag_metrics_family(m, AG_GAUGE, "agt_special", "Special.", 1,
                                     (const char *const[]){"k"}, NULL, 0);
    ag_series_set(ag_metric_series(f, (const char *const[]){"inf"}), INFINITY);
    ag_series_set(ag_metric_series(f, (const char *const[]){"ninf"}), -INFINITY);
    ag_series_set(ag_metric_series(f, (const char *const[]){"nan"}), NAN);
    ag_series_set(ag_metric_series(f, (const char *const[]){"big"}), 1e20);
    ag_series_set(ag_metric_series(f, (const char *const[]){"tiny"}), 1e-9);
    char *t = render(m);
    expect_line(t, "agt_special{k=\"inf\"} +Inf");
    expect_line(t, "agt_special{k=\"ninf\"} -Inf");
    expect_line(t, "agt_special{k=\"nan\"} NaN");
    /* Exact values survive the text form. */
    const char *p = strstr(t, "agt_special{k=\"big\"} ");
    assert_non_null(p);
    assert_true(strtod(p + strlen("agt_special{k=\"big\"} "), NULL) == 1e20);
    p = strstr(t, "agt_special{k=\"tiny\"} ");
    assert_non_null(p);
    assert_true(strtod(p + strlen("agt_special{k=\"tiny\"} "), NULL) == 1e-9);
    ag_free(t);
    ag_metrics_free(m);
}

static void test_label_and_help_escaping(void **state)
{
    (void)state;
    ag_metrics *m = ag_metrics_new();
    ag_metric *f = ag_metrics_family(m, AG_COUNTER, "agt_escape_total",
                                     "Help with \\ backslash\nand newline \"quotes\".", 1,
                                     (const char *const[]){"path"}, NULL, 0);
    ag_series_inc(ag_metric_series(f, (const char *const[]){"C:\\dir \"q\"\nnext"}), 1);
    char *t = render(m);
    expect_line(t, "# HELP agt_escape_total Help with \\\\ backslash\\nand newline \"quotes\".");
    expect_line(t, "agt_escape_total{path=\"C:\\\\dir \\\"q\\\"\\nnext\"} 1");
    ag_free(t);
    ag_metrics_free(m);
}

static void test_histogram_render(void **state)
{
    (void)state;
    ag_metrics *m = ag_metrics_new();
    static const double bounds[] = {0.1, 0.5, 1};
    ag_metric *f = ag_metrics_family(m, AG_HISTOGRAM, "agt_latency_seconds", "Latency.", 1,
                                     (const char *const[]){"route"}, bounds, 3);
    ag_series *s = ag_metric_series(f, (const char *const[]){"/x"});
    ag_series_observe(s, 0.05);
    ag_series_observe(s, 0.1); /* bounds are inclusive */
    ag_series_observe(s, 0.3);
    ag_series_observe(s, 2);   /* above every bound: +Inf only */
    ag_series_observe(s, 0.75);
    assert_int_equal(ag_series_count(s), 5);
    assert_true(fabs(ag_series_value(s) - 3.2) < 1e-12); /* the sum */
    char *t = render(m);
    expect_line(t, "# TYPE agt_latency_seconds histogram");
    expect_line(t, "agt_latency_seconds_bucket{route=\"/x\",le=\"0.1\"} 2");
    expect_line(t, "agt_latency_seconds_bucket{route=\"/x\",le=\"0.5\"} 3");
    expect_line(t, "agt_latency_seconds_bucket{route=\"/x\",le=\"1\"} 4");
    expect_line(t, "agt_latency_seconds_bucket{route=\"/x\",le=\"+Inf\"} 5");
    expect_line(t, "agt_latency_seconds_count{route=\"/x\"} 5");
    const char *sum = strstr(t, "agt_latency_seconds_sum{route=\"/x\"} ");
    assert_non_null(sum);
    assert_true(fabs(strtod(sum + strlen("agt_latency_seconds_sum{route=\"/x\"} "), NULL) - 3.2) <
                1e-12);
    /* Buckets in ascending order of le, then sum, then count. */
    assert_true(strstr(t, "le=\"0.1\"") < strstr(t, "le=\"0.5\""));
    assert_true(strstr(t, "le=\"1\"") < strstr(t, "le=\"+Inf\""));
    assert_true(strstr(t, "le=\"+Inf\"") < sum);
    assert_true(sum < strstr(t, "_count"));
    ag_free(t);
    ag_metrics_free(m);
}

static void test_histogram_default_bounds_unlabelled(void **state)
{
    (void)state;
    ag_metrics *m = ag_metrics_new();
    ag_metric *f =
        ag_metrics_family(m, AG_HISTOGRAM, "agt_default_seconds", "Default.", 0, NULL, NULL, 0);
    ag_series *s = ag_metric_series(f, NULL);
    ag_series_observe(s, 0.003);
    ag_series_observe(s, 100);
    char *t = render(m);
    expect_line(t, "agt_default_seconds_bucket{le=\"0.0025\"} 0");
    expect_line(t, "agt_default_seconds_bucket{le=\"0.005\"} 1");
    expect_line(t, "agt_default_seconds_bucket{le=\"10\"} 1");
    expect_line(t, "agt_default_seconds_bucket{le=\"+Inf\"} 2");
    expect_line(t, "agt_default_seconds_count 2");
    const char *sum = strstr(t, "\nagt_default_seconds_sum ");
    assert_non_null(sum);
    assert_true(fabs(strtod(sum + strlen("\nagt_default_seconds_sum "), NULL) - 100.003) < 1e-9);
    ag_free(t);
    ag_metrics_free(m);
}

/* Every le label must name its bound exactly: a reader parses it back. */
static void test_histogram_le_labels_exact(void **state)
{
    (void)state;
    ag_metrics *m = ag_metrics_new();
    static const double bounds[] = {0.1234567, 0.1234568, 1000000, 1234567, 50000000};
    ag_metric *f =
        ag_metrics_family(m, AG_HISTOGRAM, "agt_sizes_bytes", "Sizes.", 0, NULL, bounds, 5);
    ag_series_observe(ag_metric_series(f, NULL), 1);
    char *t = render(m);
    ag_metrics_free(m);
    char bad[128] = "";
    const char *p = t;
    for (int i = 0; i < 5 && !bad[0]; i++) {
        p = strstr(p, "le=\"");
        assert_non_null(p);
        p += 4;
        double le = strtod(p, NULL);
        const char *q = strchr(p, '"');
        if (le != bounds[i])
            snprintf(bad, sizeof bad, "bound %.17g rendered as le=\"%.*s\"", bounds[i],
                     (int)(q - p), p);
    }
    ag_free(t);
    if (bad[0]) fail_msg("%s", bad);
}

static void test_families_sorted_and_reused(void **state)
{
    (void)state;
    ag_metrics *m = ag_metrics_new();
    static const char *const names[] = {"agt_zeta_total", "agt_alpha_total", "agt_mid_total",
                                        "agt_beta_total"};
    ag_metric *fams[4];
    for (int i = 0; i < 4; i++) {
        fams[i] = ag_metrics_family(m, AG_COUNTER, names[i], "x", 0, NULL, NULL, 0);
        ag_series_inc(ag_metric_series(fams[i], NULL), (uint64_t)i + 1);
    }
    /* Registering again returns the same family and series. */
    assert_ptr_equal(ag_metrics_family(m, AG_COUNTER, "agt_mid_total", "x", 0, NULL, NULL, 0),
                     fams[2]);
    assert_ptr_equal(ag_metric_series(fams[2], NULL), ag_metric_series(fams[2], NULL));
    char *t = render(m);
    const char *a = strstr(t, "# HELP agt_alpha_total");
    const char *b = strstr(t, "# HELP agt_beta_total");
    const char *c = strstr(t, "# HELP agt_mid_total");
    const char *z = strstr(t, "# HELP agt_zeta_total");
    assert_true(a && b && c && z);
    assert_true(a < b && b < c && c < z);
    expect_line(t, "agt_zeta_total 1");
    expect_line(t, "agt_alpha_total 2");
    ag_free(t);
    ag_metrics_free(m);
}

static void test_same_labels_same_series(void **state)
{
    (void)state;
    ag_metrics *m = ag_metrics_new();
    ag_metric *f = ag_metrics_family(m, AG_COUNTER, "agt_hits_total", "Hits.", 2, L_METHOD_CODE,
                                     NULL, 0);
    char method[8], code[8];
    memcpy(method, "GET", 4);
    memcpy(code, "200", 4);
    ag_series *s1 = ag_metric_series(f, (const char *const[]){method, code});
    /* Values are compared by content, not by pointer. */
    ag_series *s2 = ag_metric_series(f, (const char *const[]){"GET", "200"});
    assert_ptr_equal(s1, s2);
    /* Label values that join to the same string stay distinct series. */
    ag_series *x = ag_metric_series(f, (const char *const[]){"GE", "T200"});
    assert_ptr_not_equal(x, s1);
    /* Many series (past table growth): earlier pointers stay valid and found. */
    ag_series *list[200];
    for (int i = 0; i < 200; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        list[i] = ag_metric_series(f, (const char *const[]){"PUT", v});
        ag_series_inc(list[i], (uint64_t)i);
    }
    for (int i = 0; i < 200; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        assert_ptr_equal(ag_metric_series(f, (const char *const[]){"PUT", v}), list[i]);
        assert_true(ag_series_value(list[i]) == (double)i);
    }
    assert_ptr_equal(ag_metric_series(f, (const char *const[]){"GET", "200"}), s1);
    ag_metrics_free(m);
}

/* Label values are free text: values that contain the key's internal
 * separator (0x1f) must not make two label sets share a series. */
static void test_label_values_with_separator_distinct(void **state)
{
    (void)state;
    ag_metrics *m = ag_metrics_new();
    ag_metric *f = ag_metrics_family(m, AG_COUNTER, "agt_sep_total", "Sep.", 2,
                                     (const char *const[]){"a", "b"}, NULL, 0);
    ag_series *s1 = ag_metric_series(f, (const char *const[]){"x\x1f", "y"});
    ag_series *s2 = ag_metric_series(f, (const char *const[]){"x", "\x1fy"});
    ag_metrics_free(m);
    if (s1 == s2) fail_msg("{a=\"x\\x1f\",b=\"y\"} and {a=\"x\",b=\"\\x1fy\"} share one series");
}

typedef struct worker {
    ag_metric *counter, *gauge, *hist;
} worker;

enum { THREADS = 4, ITERS = 100000 };

static void *hammer(void *arg)
{
    worker *w = arg;
    /* Each thread looks the series up itself (concurrent creation). */
    ag_series *c = ag_metric_series(w->counter, (const char *const[]){"shared"});
    ag_series *g = ag_metric_series(w->gauge, (const char *const[]){"shared"});
    ag_series *h = ag_metric_series(w->hist, (const char *const[]){"shared"});
    for (int i = 0; i < ITERS; i++) {
        ag_series_inc(c, 1);
        ag_series_add(g, 1.0);
        ag_series_observe(h, (i & 1) ? 0.25 : 2.0); /* exact in binary */
    }
    return NULL;
}

static void test_concurrent_updates_exact(void **state)
{
    (void)state;
    ag_metrics *m = ag_metrics_new();
    static const double bounds[] = {0.5};
    const char *const lbl[] = {"k"};
    worker w = {
        ag_metrics_family(m, AG_COUNTER, "agt_conc_total", "c", 1, lbl, NULL, 0),
        ag_metrics_family(m, AG_GAUGE, "agt_conc_gauge", "g", 1, lbl, NULL, 0),
        ag_metrics_family(m, AG_HISTOGRAM, "agt_conc_seconds", "h", 1, lbl, bounds, 1),
    };
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) assert_int_equal(pthread_create(&t[i], NULL, hammer, &w), 0);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    ag_series *c = ag_metric_series(w.counter, (const char *const[]){"shared"});
    ag_series *g = ag_metric_series(w.gauge, (const char *const[]){"shared"});
    ag_series *h = ag_metric_series(w.hist, (const char *const[]){"shared"});
    assert_true(ag_series_value(c) == (double)THREADS * ITERS);
    assert_true(ag_series_value(g) == (double)THREADS * ITERS);
    assert_int_equal(ag_series_count(h), THREADS * ITERS);
    char *t2 = render(m);
    expect_line(t2, "agt_conc_total{k=\"shared\"} 400000");
    expect_line(t2, "agt_conc_gauge{k=\"shared\"} 400000");
    expect_line(t2, "agt_conc_seconds_bucket{k=\"shared\",le=\"0.5\"} 200000");
    expect_line(t2, "agt_conc_seconds_bucket{k=\"shared\",le=\"+Inf\"} 400000");
    expect_line(t2, "agt_conc_seconds_sum{k=\"shared\"} 450000");
    /* One series per family despite four threads creating it at once. */
    const char *p = strstr(t2, "agt_conc_total{");
    assert_null(strstr(p + 1, "agt_conc_total{"));
    ag_free(t2);
    ag_metrics_free(m);
}

static double answer(void *ud)
{
    return *(double *)ud;
}

static void test_gauge_fn(void **state)
{
    (void)state;
    ag_metrics *m = ag_metrics_new();
    double v = 42;
    ag_metrics_gauge_fn(m, "agt_callback", "From a function.", answer, &v);
    char *t = render(m);
    expect_line(t, "# TYPE agt_callback gauge");
    expect_line(t, "agt_callback 42");
    ag_free(t);
    v = 0.5; /* read at render time */
    t = render(m);
    expect_line(t, "agt_callback 0.5");
    ag_free(t);
    ag_metrics_free(m);
}

/* Runs promtool's linter over `text`; returns its exit status. */
static int promtool_check(const char *text, char *out, size_t n)
{
    if (access(PROMTOOL, X_OK) != 0) fail_msg(PROMTOOL " is missing (a declared dependency)");
    char path[] = "/tmp/agt-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof cmd, PROMTOOL " check metrics < %s 2>&1", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t got = fread(out, 1, n - 1, p);
    out[got] = '\0';
    int st = pclose(p);
    unlink(path);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_promtool_accepts_rendering(void **state)
{
    (void)state;
    ag_metrics *m = ag_metrics_new();
    ag_metric *c = ag_metrics_family(m, AG_COUNTER, "agt_http_requests_total",
                                     "HTTP requests.\nSecond line \\ here.", 2, L_METHOD_CODE,
                                     NULL, 0);
    ag_series_inc(ag_metric_series(c, (const char *const[]){"GET", "200"}), 10);
    ag_series_inc(ag_metric_series(c, (const char *const[]){"P\"O\\ST\n", "500"}), 1);
    ag_metric *g = ag_metrics_family(m, AG_GAUGE, "agt_inflight_requests", "In flight.", 0, NULL,
                                     NULL, 0);
    ag_series_set(ag_metric_series(g, NULL), -3.25);
    ag_metric *h = ag_metrics_family(m, AG_HISTOGRAM, "agt_http_request_duration_seconds",
                                     "Latency.", 1, (const char *const[]){"route"}, NULL, 0);
    for (int i = 0; i < 50; i++)
        ag_series_observe(ag_metric_series(h, (const char *const[]){"/v1/users/:id"}), i * 0.01);
    ag_metrics_process(m);
    char *t = render(m);
    char out[4096];
    int rc = promtool_check(t, out, sizeof out);
    if (rc != 0) fail_msg("promtool exit %d: %s\n--- input ---\n%s", rc, out, t);
    expect_line(t, "# TYPE process_open_fds gauge");
    expect_line(t, "# TYPE process_cpu_seconds_total counter");
    assert_non_null(strstr(t, "\nprocess_resident_memory_bytes "));
    assert_non_null(strstr(t, "\nprocess_start_time_seconds "));
    ag_free(t);
    ag_metrics_free(m);
}

static void test_promtool_catches_bad_input(void **state)
{
    (void)state;
    /* The check itself can fail: a counter without _total is linted. */
    char out[1024];
    int rc = promtool_check("# HELP bad x\n# TYPE bad counter\nbad 1\n", out, sizeof out);
    assert_int_not_equal(rc, 0);
}

static void test_default_registry_is_shared(void **state)
{
    (void)state;
    ag_metrics *d = ag_metrics_default();
    assert_non_null(d);
    assert_ptr_equal(ag_metrics_default(), d);
    ag_metrics *p = ag_metrics_new();
    assert_ptr_not_equal(p, d);
    ag_metrics_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_render),
        cmocka_unit_test(test_unlabelled_and_empty),
        cmocka_unit_test(test_gauge_render),
        cmocka_unit_test(test_special_gauge_values),
        cmocka_unit_test(test_label_and_help_escaping),
        cmocka_unit_test(test_histogram_render),
        cmocka_unit_test(test_histogram_default_bounds_unlabelled),
        cmocka_unit_test(test_histogram_le_labels_exact),
        cmocka_unit_test(test_families_sorted_and_reused),
        cmocka_unit_test(test_same_labels_same_series),
        cmocka_unit_test(test_label_values_with_separator_distinct),
        cmocka_unit_test(test_concurrent_updates_exact),
        cmocka_unit_test(test_gauge_fn),
        cmocka_unit_test(test_promtool_accepts_rendering),
        cmocka_unit_test(test_promtool_catches_bad_input),
        cmocka_unit_test(test_default_registry_is_shared),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
