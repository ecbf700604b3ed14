/* Unit tests of src/lib/core/log.c: each line is valid JSON with typed, escaped fields; level filtering; long lines; threads. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "agora/clock.h"
#include "agora/log.h"

static int g_pipe[2] = {-1, -1};

static int open_pipe(void **state)
{
    (void)state;
    if (pipe(g_pipe) != 0) return -1;
    fcntl(g_pipe[0], F_SETFL, O_NONBLOCK);
    ag_log_set_fd(g_pipe[1]);
    ag_log_setup("logtest", AG_LOG_DEBUG);
    return 0;
}

static int close_pipe(void **state)
{
    (void)state;
    ag_log_set_fd(2);
    close(g_pipe[0]);
    close(g_pipe[1]);
    return 0;
}

/* Reads one line (without its '\n') into `out`; false after `timeout_ms`
 * with no complete line. Reads byte by byte so no line is over-read. */
static bool read_line(char *out, size_t n, int timeout_ms)
{
    size_t len = 0;
    for (;;) {
        char c;
        ssize_t r = read(g_pipe[0], &c, 1);
        if (r == 1) {
            if (c == '\n') {
                out[len] = '\0';
                return true;
            }
            if (len + 1 < n) out[len++] = c;
            continue;
        }
        if (r < 0 && errno != EAGAIN && errno != EINTR) return false;
        struct pollfd p = {.fd = g_pipe[0], .events = POLLIN};
        if (poll(&p, 1, timeout_ms) <= 0) return false;
    }
}

static bool pipe_empty(void)
{
    char c;
    return read(g_pipe[0], &c, 1) < 0 && errno == EAGAIN;
}

/* Parses a line; fails the test (showing the line) when it is not JSON. */
static json_t *parse_line(const char *line)
{
    json_error_t err;
    json_t *j = json_loads(line, 0, &err);
    if (!j) {
        size_t n = strlen(line);
        fail_msg("not JSON (%s at column %d) in a %zu-byte line ending \"%s\"", err.text,
                 err.column, n, n > 60 ? line + n - 60 : line);
    }
    assert_true(json_is_object(j));
    return j;
}

static char g_line[20000];

static json_t *next_json(void)
{
    if (!read_line(g_line, sizeof g_line, 2000)) fail_msg("no log line arrived");
    return parse_line(g_line);
}

static void test_line_shape(void **state)
{
    (void)state;
    uint64_t before = ag_wall_ms();
    ag_info("listening", AG_FI("port", 7001), AG_FS("addr", "127.0.0.1"));
    json_t *j = next_json();
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(j, "service")), "logtest");
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "listening");
    json_t *port = json_object_get(j, "port");
    assert_true(json_is_integer(port)); /* numbers stay numbers */
    assert_int_equal(json_integer_value(port), 7001);
    assert_string_equal(json_string_value(json_object_get(j, "addr")), "127.0.0.1");
    /* time: RFC 3339 in UTC, close to now. */
    const char *t = json_string_value(json_object_get(j, "time"));
    assert_non_null(t);
    assert_int_equal(strlen(t), 24);
    assert_int_equal(t[23], 'Z');
    char lo[32], hi[32];
    ag_time_rfc3339(lo, sizeof lo, before);
    ag_time_rfc3339(hi, sizeof hi, ag_wall_ms());
    assert_true(strcmp(lo, t) <= 0 && strcmp(t, hi) <= 0); /* same format: sorts by time */
    assert_int_equal(json_object_size(j), 6);
    json_decref(j);
    /* Key order as written: time, level, service, msg, then fields. */
    assert_memory_equal(g_line, "{\"time\":\"", 9);
    assert_non_null(strstr(g_line, "\"level\":\"info\",\"service\":\"logtest\",\"msg\":\"listening\""));
}

static void test_typed_fields(void **state)
{
    (void)state;
    ag_warn("typed", AG_FI("neg", -42), AG_FI("big", 9007199254740993LL), AG_FD("ratio", 0.25),
            AG_FB("yes", true), AG_FB("no", false), AG_FS("nil", NULL), AG_FERR(AG_ETIMEDOUT));
    json_t *j = next_json();
    assert_string_equal(json_string_value(json_object_get(j, "level")), "warn");
    assert_true(json_is_integer(json_object_get(j, "neg")));
    assert_int_equal(json_integer_value(json_object_get(j, "neg")), -42);
    assert_true(json_integer_value(json_object_get(j, "big")) == 9007199254740993LL);
    assert_true(json_is_real(json_object_get(j, "ratio")));
    assert_true(json_real_value(json_object_get(j, "ratio")) == 0.25);
    assert_true(json_is_true(json_object_get(j, "yes")));
    assert_true(json_is_false(json_object_get(j, "no")));
    assert_true(json_is_null(json_object_get(j, "nil")));
    assert_string_equal(json_string_value(json_object_get(j, "error")), "timed out");
    json_decref(j);
}

static void test_string_escaping(void **state)
{
    (void)state;
    static const char nasty[] = "quote \" backslash \\ newline \n cr \r tab \t bell \x07 "
                                "esc \x1b unit \x1f del \x7f utf8 \xc3\xa9 end";
    ag_error("line1\nline2 \"quoted\"", AG_FS("value", nasty), AG_FS("key \"x\"\n", "v"));
    const char *raw = NULL;
    json_t *j = next_json();
    raw = g_line;
    assert_null(strchr(raw, '\n'));  /* one physical line */
    for (const char *p = raw; *p; p++) /* no raw control characters */
        assert_true((unsigned char)*p >= 0x20);
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "line1\nline2 \"quoted\"");
    assert_string_equal(json_string_value(json_object_get(j, "value")), nasty);
    assert_string_equal(json_string_value(json_object_get(j, "key \"x\"\n")), "v");
    json_decref(j);
}

static void test_service_name_escaped(void **state)
{
    (void)state;
    ag_log_setup("svc\"odd", AG_LOG_DEBUG);
    ag_info("hi");
    json_t *j = next_json();
    assert_string_equal(json_string_value(json_object_get(j, "service")), "svc\"odd");
    json_decref(j);
    ag_log_setup("logtest", AG_LOG_DEBUG);
}

static void test_level_filtering(void **state)
{
    (void)state;
    ag_log_setup(NULL, AG_LOG_WARN); /* NULL keeps the service name */
    assert_false(ag_log_enabled(AG_LOG_DEBUG));
    assert_false(ag_log_enabled(AG_LOG_INFO));
    assert_true(ag_log_enabled(AG_LOG_WARN));
    assert_true(ag_log_enabled(AG_LOG_ERROR));
    ag_debug("hidden debug");
    ag_info("hidden info");
    assert_true(pipe_empty());
    ag_warn("shown warn");
    ag_error("shown error");
    json_t *j = next_json();
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "shown warn");
    assert_string_equal(json_string_value(json_object_get(j, "service")), "logtest");
    json_decref(j);
    j = next_json();
    assert_string_equal(json_string_value(json_object_get(j, "level")), "error");
    json_decref(j);
    assert_true(pipe_empty());

    ag_log_setup(NULL, AG_LOG_OFF);
    assert_false(ag_log_enabled(AG_LOG_ERROR));
    ag_error("nothing");
    assert_true(pipe_empty());

    ag_log_setup(NULL, AG_LOG_DEBUG);
    ag_debug("debug now");
    j = next_json();
    assert_string_equal(json_string_value(json_object_get(j, "level")), "debug");
    json_decref(j);
}

static void test_level_parse(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        ag_log_level l;
    } ok[] = {{"debug", AG_LOG_DEBUG}, {"info", AG_LOG_INFO},   {"warn", AG_LOG_WARN},
              {"warning", AG_LOG_WARN}, {"error", AG_LOG_ERROR}, {"off", AG_LOG_OFF}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        ag_log_level l = (ag_log_level)99;
        assert_int_equal(ag_log_level_parse(ok[i].s, &l), 0);
        assert_int_equal(l, ok[i].l);
    }
    static const char *const bad[] = {"", "verbose", "fatal", "info "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ag_log_level l = AG_LOG_ERROR;
        assert_int_equal(ag_log_level_parse(bad[i], &l), AG_EINVAL);
        assert_int_equal(l, AG_LOG_ERROR);
    }
}

/* A line longer than the 8 KiB buffer is cut and marked "truncated": it
 * must still be one valid JSON object, whatever byte the cut lands on. */
static void check_long_line(const char *what, size_t pad)
{
    json_t *j = next_json();
    bool marked = json_is_true(json_object_get(j, "truncated"));
    bool msg_ok = json_is_string(json_object_get(j, "msg")) &&
                  strcmp(json_string_value(json_object_get(j, "msg")), "long") == 0;
    json_decref(j);
    if (!marked) fail_msg("%s (pad %zu): no \"truncated\": true", what, pad);
    assert_true(msg_ok);
    assert_true(strlen(g_line) <= 8192);
}

static void test_long_plain_line_truncated(void **state)
{
    (void)state;
    static char big[10000];
    memset(big, 'a', sizeof big - 1);
    ag_info("long", AG_FS("big", big));
    check_long_line("plain", 0);
}

static void test_long_line_cut_inside_escape(void **state)
{
    (void)state;
    /* Two-byte escapes (\n) and six-byte escapes (\u0001): shifting the start
     * by 0..5 bytes lands the cut on every byte of an escape. */
    static char nl[6000], ctl[3000];
    memset(nl, '\n', sizeof nl - 1);
    memset(ctl, '\x01', sizeof ctl - 1);
    char pad[8];
    for (size_t p = 0; p < 6; p++) {
        memset(pad, 'p', p);
        pad[p] = '\0';
        ag_info("long", AG_FS("pad", pad), AG_FS("big", nl));
        check_long_line("newlines", p);
        ag_info("long", AG_FS("pad", pad), AG_FS("big", ctl));
        check_long_line("control chars", p);
    }
}

static void test_long_line_cut_inside_utf8(void **state)
{
    (void)state;
    static char utf8[10001]; /* "é" repeated */
    for (size_t i = 0; i + 1 < sizeof utf8; i += 2) utf8[i] = '\xc3', utf8[i + 1] = '\xa9';
    char pad[4];
    for (size_t p = 0; p < 2; p++) {
        memset(pad, 'p', p);
        pad[p] = '\0';
        ag_info("long", AG_FS("pad", pad), AG_FS("big", utf8));
        check_long_line("utf-8", p);
    }
}

static void test_long_line_cut_between_fields(void **state)
{
    (void)state;
    /* A string field whose end falls around the cut point, then more fields:
     * the cut lands on a closing quote, a comma, a key, a number. */
    static char s[8300];
    for (size_t len = 8050; len < 8250; len++) {
        memset(s, 'b', len);
        s[len] = '\0';
        ag_info("long", AG_FS("s", s), AG_FI("n", 1234567), AG_FB("flag", true));
        read_line(g_line, sizeof g_line, 2000);
        json_error_t err;
        json_t *j = json_loads(g_line, 0, &err);
        if (!j) {
            size_t n = strlen(g_line);
            fail_msg("value of %zu bytes: line is not JSON (%s), it ends \"%s\"", len, err.text,
                     g_line + n - 40);
        }
        json_decref(j);
    }
}

enum { THREADS = 4, PER_THREAD = 300 };

static void *log_main(void *arg)
{
    long id = (long)(intptr_t)arg;
    for (int i = 0; i < PER_THREAD; i++)
        ag_info("from thread", AG_FI("thread", id), AG_FI("i", i), AG_FS("filler", "0123456789"));
    return NULL;
}

static void test_threads_do_not_interleave(void **state)
{
    (void)state;
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, log_main, (void *)(intptr_t)i), 0);
    int next[THREADS] = {0};
    for (int n = 0; n < THREADS * PER_THREAD; n++) {
        json_t *j = next_json();
        long id = (long)json_integer_value(json_object_get(j, "thread"));
        assert_true(id >= 0 && id < THREADS);
        /* Each thread's lines arrive whole and in its order. */
        assert_int_equal(json_integer_value(json_object_get(j, "i")), next[id]);
        next[id]++;
        json_decref(j);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    assert_true(pipe_empty());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_line_shape, open_pipe, close_pipe),
        cmocka_unit_test_setup_teardown(test_typed_fields, open_pipe, close_pipe),
        cmocka_unit_test_setup_teardown(test_string_escaping, open_pipe, close_pipe),
        cmocka_unit_test_setup_teardown(test_service_name_escaped, open_pipe, close_pipe),
        cmocka_unit_test_setup_teardown(test_level_filtering, open_pipe, close_pipe),
        cmocka_unit_test(test_level_parse),
        cmocka_unit_test_setup_teardown(test_long_plain_line_truncated, open_pipe, close_pipe),
        cmocka_unit_test_setup_teardown(test_long_line_cut_inside_escape, open_pipe, close_pipe),
        cmocka_unit_test_setup_teardown(test_long_line_cut_inside_utf8, open_pipe, close_pipe),
        cmocka_unit_test_setup_teardown(test_long_line_cut_between_fields, open_pipe, close_pipe),
        cmocka_unit_test_setup_teardown(test_threads_do_not_interleave, open_pipe, close_pipe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
