/*
 * bus.c — the event bus against a real broker and a real store.
 *
 * Run through tests/harness/with-servers, which starts the broker (and
 * PostgreSQL) and sets AGORA_TEST_NATS_URL / AGORA_TEST_AMQP_URL /
 * AGORA_TEST_POSTGRES_URL. AGORA_TEST_BUS (nats | amqp) picks the broker and
 * AGORA_TEST_STORE (sqlite | postgres) the store. Every test uses services of
 * its own (own durable consumer or queue, own database).
 *
 * `agora-bus-test --child-publish STORE_URL BUS_URL SERVICE N TYPE` is the
 * child of the SIGKILL test: it commits N events and kills itself before
 * the relay runs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agora/bus.h"
#include "agora/clock.h"
#include "agora/id.h"
#include "agora/log.h"
#include "agora/mem.h"
#include "agora/store.h"
#include "bus/internal.h"

static char g_tmp[256];
static int g_seq;

static const char *bus_url(void)
{
    const char *b = getenv("AGORA_TEST_BUS");
    const char *u = (b && strcmp(b, "amqp") == 0) ? getenv("AGORA_TEST_AMQP_URL")
                                                  : getenv("AGORA_TEST_NATS_URL");
    if (!u) fail_msg("no broker URL: run through tests/harness/with-servers");
    return u;
}

static bool store_is_pg(void)
{
    const char *s = getenv("AGORA_TEST_STORE");
    return s && strcmp(s, "postgres") == 0;
}

static void store_url(const char *name, char *out, size_t n)
{
    if (store_is_pg()) {
        const char *base = getenv("AGORA_TEST_POSTGRES_URL");
        if (!base) fail_msg("AGORA_TEST_POSTGRES_URL is not set");
        const char *slash = strrchr(base, '/');
        snprintf(out, n, "%.*s/bus_%d_%s", (int)(slash - base), base, (int)getpid(), name);
    } else {
        snprintf(out, n, "sqlite:%s/%s.db", g_tmp, name);
    }
}

/* A unique service name per use, so durables and queues never collide. */
static void service_name(const char *what, char *out, size_t n)
{
    snprintf(out, n, "t%d_%d_%s", (int)getpid(), ++g_seq, what);
}

static ag_store *open_store(const char *name)
{
    char url[512];
    store_url(name, url, sizeof url);
    ag_store *s;
    assert_int_equal(ag_store_open(url, &s), 0);
    return s;
}

static ag_bus *open_bus(ag_store *s, const char *service)
{
    ag_bus_opts o = {.url = bus_url(), .service = service, .store = s};
    ag_bus *b;
    assert_int_equal(ag_bus_open(&o, &b), 0);
    return b;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- A recording handler ------------------------------------------------- */

typedef struct recorder {
    pthread_mutex_t mu;
    int calls;          /* handler invocations */
    int committed_hint; /* successful invocations */
    int fail_first;     /* fail this many invocations first */
    int fail_until_delivery; /* fail while ev->delivery < this */
    bool always_fail;
    int order_violations;
    int64_t last_n[8];
    int last_delivery;
} recorder;

static void recorder_init(recorder *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    for (int i = 0; i < 8; i++) r->last_n[i] = -1;
}

static int record_handler(ag_db *db, const ag_event *ev, void *ud, char *why, size_t n)
{
    recorder *r = ud;
    pthread_mutex_lock(&r->mu);
    r->calls++;
    int call = r->calls;
    r->last_delivery = ev->delivery;
    pthread_mutex_unlock(&r->mu);
    if (r->always_fail) {
        snprintf(why, n, "always fails (test)");
        return AG_EIO;
    }
    if (call <= r->fail_first) {
        snprintf(why, n, "fails on call %d (test)", call);
        return AG_EIO;
    }
    if (ev->delivery < r->fail_until_delivery) {
        snprintf(why, n, "fails on delivery %d (test)", ev->delivery);
        return AG_EIO;
    }
    json_t *jn = json_object_get(ev->data, "n");
    int64_t v = json_is_integer(jn) ? json_integer_value(jn) : -1;
    ag_val p[] = {AG_VTEXT(ev->id), AG_VINT(v)};
    int rc = ag_db_exec(db, "INSERT INTO effects (event_id, n) VALUES ($1, $2)", p, 2, NULL);
    if (rc < 0) {
        snprintf(why, n, "effects: %s", ag_db_error(db));
        return rc;
    }
    /* Per-aggregate order: subjects "agg-K" carry increasing n. */
    pthread_mutex_lock(&r->mu);
    if (ev->subject && strncmp(ev->subject, "agg-", 4) == 0) {
        int k = (int)strtol(ev->subject + 4, NULL, 10) & 7;
        if (v < r->last_n[k]) r->order_violations++;
        r->last_n[k] = v;
    }
    r->committed_hint++;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

static void create_effects(ag_store *s)
{
    ag_db *db;
    assert_int_equal(ag_store_db(s, &db), 0);
    assert_int_equal(ag_db_exec(db, "CREATE TABLE IF NOT EXISTS effects (event_id TEXT NOT NULL, n BIGINT)",
                                NULL, 0, NULL),
                     0);
}

static int64_t count_sql(ag_store *s, const char *sql)
{
    ag_db *db;
    assert_int_equal(ag_store_db(s, &db), 0);
    int64_t n = -1;
    assert_int_equal(ag_db_query_int(db, sql, NULL, 0, &n), 0);
    return n;
}

/* Waits until `sql` counts `want` rows (or the time runs out). */
static int64_t wait_count(ag_store *s, const char *sql, int64_t want, unsigned timeout_ms)
{
    uint64_t until = ag_now_ms() + timeout_ms;
    int64_t n;
    while ((n = count_sql(s, sql)) < want && ag_now_ms() < until) sleep_ms(50);
    return n;
}

typedef struct pub_ctx {
    ag_bus *bus;
    const char *type;
    int from, count;
    int subjects; /* spread over agg-0..agg-(subjects-1) */
} pub_ctx;

static int publish_some(ag_db *db, void *ud)
{
    pub_ctx *p = ud;
    for (int i = p->from; i < p->from + p->count; i++) {
        char subject[16];
        snprintf(subject, sizeof subject, "agg-%d", p->subjects ? i % p->subjects : 0);
        int rc = ag_bus_publish(p->bus, db, p->type, subject, json_pack("{s:i}", "n", i), NULL);
        if (rc < 0) return rc;
    }
    return 0;
}

static void publish(ag_store *s, ag_bus *b, const char *type, int from, int count, int subjects)
{
    pub_ctx p = {b, type, from, count, subjects};
    assert_int_equal(ag_store_tx(s, publish_some, &p), 0);
}

/* ---- Tests ---------------------------------------------------------------------- */

static void test_publish_consume_once_in_order(void **state)
{
    (void)state;
    char pub_svc[64], con_svc[64];
    service_name("pub", pub_svc, sizeof pub_svc);
    service_name("con", con_svc, sizeof con_svc);
    ag_store *ps = open_store(pub_svc), *cs = open_store(con_svc);
    create_effects(cs);
    ag_bus *pb = open_bus(ps, pub_svc), *cb = open_bus(cs, con_svc);
    recorder r;
    recorder_init(&r);
    char type[80];
    snprintf(type, sizeof type, "%s.created", pub_svc);
    char pattern[80];
    snprintf(pattern, sizeof pattern, "%s.*", pub_svc);
    assert_int_equal(ag_bus_subscribe(cb, pattern, record_handler, &r), 0);
    assert_int_equal(ag_bus_start(cb), 0);
    assert_int_equal(ag_bus_start(pb), 0);
    for (int batch = 0; batch < 10; batch++) publish(ps, pb, type, batch * 20, 20, 4);
    int64_t n = wait_count(cs, "SELECT COUNT(*) FROM effects", 200, 20000);
    sleep_ms(300); /* a late duplicate would show now */
    assert_int_equal(count_sql(cs, "SELECT COUNT(*) FROM effects"), 200);
    assert_int_equal(n, 200);
    assert_int_equal(count_sql(cs, "SELECT COUNT(DISTINCT event_id) FROM effects"), 200);
    assert_int_equal(count_sql(cs, "SELECT COUNT(DISTINCT n) FROM effects"), 200);
    assert_int_equal(r.order_violations, 0);
    int64_t rows, age;
    assert_int_equal(ag_bus_outbox_depth(pb, &rows, &age), 0);
    assert_int_equal(rows, 0);
    ag_bus_stop(cb, 0);
    ag_bus_stop(pb, 2000);
    ag_bus_free(cb);
    ag_bus_free(pb);
    ag_store_close(cs);
    ag_store_close(ps);
}

static void test_duplicate_delivery_skipped_by_inbox(void **state)
{
    (void)state;
    char svc[64];
    service_name("dup", svc, sizeof svc);
    ag_store *s = open_store(svc);
    create_effects(s);
    ag_bus *b = open_bus(s, svc);
    recorder r;
    recorder_init(&r);
    char type[80], pattern[80];
    snprintf(type, sizeof type, "%s.x", svc);
    snprintf(pattern, sizeof pattern, "%s.x", svc);
    assert_int_equal(ag_bus_subscribe(b, pattern, record_handler, &r), 0);
    assert_int_equal(ag_bus_start(b), 0);
    /* The same envelope (same event id) reaches the broker twice, under two
     * broker message ids, as a relay that crashed after the confirm would. */
    const ag__bus_adapter *ad = strncmp(bus_url(), "nats", 4) == 0 ? &ag__bus_nats : &ag__bus_rabbitmq;
    void *pub;
    assert_int_equal(ad->open(bus_url(), svc, AG_BUS_PUBLISHER, NULL, 0, 5, &pub), 0);
    char id[AG_ID_LEN + 1];
    ag_id_new_str(id);
    char body[512];
    snprintf(body, sizeof body,
             "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"agora/test\",\"type\":\"%s\","
             "\"time\":\"2026-01-01T00:00:00.000Z\",\"data\":{\"n\":7}}",
             id, type);
    char err[256], mid[64];
    snprintf(mid, sizeof mid, "%s-a", id);
    assert_int_equal(ad->publish(pub, type, mid, body, strlen(body), err, sizeof err), 0);
    snprintf(mid, sizeof mid, "%s-b", id);
    assert_int_equal(ad->publish(pub, type, mid, body, strlen(body), err, sizeof err), 0);
    wait_count(s, "SELECT COUNT(*) FROM effects", 1, 10000);
    sleep_ms(1000); /* let the second copy arrive and be skipped */
    assert_int_equal(count_sql(s, "SELECT COUNT(*) FROM effects"), 1);
    assert_int_equal(r.committed_hint, 1);
    ad->close(pub);
    ag_bus_stop(b, 0);
    ag_bus_free(b);
    ag_store_close(s);
}

static void setenv_int(const char *k, const char *v)
{
    setenv(k, v, 1);
}

static void test_handler_fails_twice_then_succeeds(void **state)
{
    (void)state;
    /* Immediate retries: the third attempt of the first delivery succeeds. */
    setenv_int("AGORA_BUS_IMMEDIATE_RETRIES", "2");
    char svc[64];
    service_name("flaky", svc, sizeof svc);
    ag_store *s = open_store(svc);
    create_effects(s);
    ag_bus *b = open_bus(s, svc);
    recorder r;
    recorder_init(&r);
    r.fail_first = 2;
    char type[80];
    snprintf(type, sizeof type, "%s.x", svc);
    assert_int_equal(ag_bus_subscribe(b, type, record_handler, &r), 0);
    assert_int_equal(ag_bus_start(b), 0);
    publish(s, b, type, 1, 1, 0);
    assert_int_equal(wait_count(s, "SELECT COUNT(*) FROM effects", 1, 10000), 1);
    sleep_ms(300);
    assert_int_equal(count_sql(s, "SELECT COUNT(*) FROM effects"), 1);
    assert_int_equal(r.calls, 3);
    assert_int_equal(r.last_delivery, 1);
    ag_bus_stop(b, 0);
    ag_bus_free(b);
    ag_store_close(s);
    unsetenv("AGORA_BUS_IMMEDIATE_RETRIES");
}

static void test_delayed_redelivery_with_backoff(void **state)
{
    (void)state;
    /* No immediate retries: deliveries 1 and 2 fail, the broker redelivers
     * after the backoff, delivery 3 succeeds. */
    setenv_int("AGORA_BUS_IMMEDIATE_RETRIES", "0");
    setenv_int("AGORA_BUS_BACKOFF", "200ms");
    char svc[64];
    service_name("later", svc, sizeof svc);
    ag_store *s = open_store(svc);
    create_effects(s);
    ag_bus *b = open_bus(s, svc);
    recorder r;
    recorder_init(&r);
    r.fail_until_delivery = 3;
    char type[80];
    snprintf(type, sizeof type, "%s.x", svc);
    assert_int_equal(ag_bus_subscribe(b, type, record_handler, &r), 0);
    assert_int_equal(ag_bus_start(b), 0);
    uint64_t t0 = ag_now_ms();
    publish(s, b, type, 1, 1, 0);
    assert_int_equal(wait_count(s, "SELECT COUNT(*) FROM effects", 1, 15000), 1);
    uint64_t took = ag_now_ms() - t0;
    assert_int_equal(r.calls, 3);
    assert_int_equal(r.last_delivery, 3);
    /* Backoff 200 ms then 400 ms: the success cannot come sooner. */
    assert_true(took >= 550);
    ag_bus_stop(b, 0);
    ag_bus_free(b);
    ag_store_close(s);
    unsetenv("AGORA_BUS_IMMEDIATE_RETRIES");
    unsetenv("AGORA_BUS_BACKOFF");
}

static int dlq_wait(const ag__bus_adapter *ad, void *st, unsigned timeout_ms, char **body,
                    char **reason)
{
    uint64_t until = ag_now_ms() + timeout_ms;
    size_t len;
    for (;;) {
        int rc = ad->dlq_fetch(st, 500, body, &len, reason);
        if (rc != 0 || ag_now_ms() >= until) return rc;
    }
}

static void test_always_failing_handler_dead_letters_with_reason(void **state)
{
    (void)state;
    setenv_int("AGORA_BUS_IMMEDIATE_RETRIES", "1");
    setenv_int("AGORA_BUS_BACKOFF", "100ms");
    setenv_int("AGORA_BUS_MAX_DELIVERIES", "3");
    char svc[64];
    service_name("dead", svc, sizeof svc);
    ag_store *s = open_store(svc);
    create_effects(s);
    ag_bus *b = open_bus(s, svc);
    recorder r;
    recorder_init(&r);
    r.always_fail = true;
    char type[80];
    snprintf(type, sizeof type, "%s.x", svc);
    assert_int_equal(ag_bus_subscribe(b, type, record_handler, &r), 0);
    assert_int_equal(ag_bus_start(b), 0);
    publish(s, b, type, 42, 1, 0);
    const ag__bus_adapter *ad = strncmp(bus_url(), "nats", 4) == 0 ? &ag__bus_nats : &ag__bus_rabbitmq;
    void *reader;
    assert_int_equal(ad->open(bus_url(), svc, AG_BUS_PUBLISHER, NULL, 0, 3, &reader), 0);
    char *body = NULL, *reason = NULL;
    assert_int_equal(dlq_wait(ad, reader, 15000, &body, &reason), 1);
    assert_non_null(strstr(reason, "always fails (test)"));
    assert_non_null(strstr(reason, "3 deliveries"));
    assert_non_null(strstr(body, "\"n\":42"));
    /* 3 deliveries x (1 + 1 immediate retry). */
    assert_int_equal(r.calls, 6);
    assert_int_equal(count_sql(s, "SELECT COUNT(*) FROM effects"), 0);
    ag_free(body);
    ag_free(reason);
    ad->close(reader);
    ag_bus_stop(b, 0);
    ag_bus_free(b);
    ag_store_close(s);
    unsetenv("AGORA_BUS_IMMEDIATE_RETRIES");
    unsetenv("AGORA_BUS_BACKOFF");
    unsetenv("AGORA_BUS_MAX_DELIVERIES");
}

static void test_unparseable_event_dead_letters_at_once(void **state)
{
    (void)state;
    char svc[64];
    service_name("garbage", svc, sizeof svc);
    ag_store *s = open_store(svc);
    ag_bus *b = open_bus(s, svc);
    recorder r;
    recorder_init(&r);
    char type[80];
    snprintf(type, sizeof type, "%s.x", svc);
    char pattern[80];
    snprintf(pattern, sizeof pattern, "%s.*", svc);
    assert_int_equal(ag_bus_subscribe(b, pattern, record_handler, &r), 0);
    assert_int_equal(ag_bus_start(b), 0);
    const ag__bus_adapter *ad = strncmp(bus_url(), "nats", 4) == 0 ? &ag__bus_nats : &ag__bus_rabbitmq;
    void *pub;
    assert_int_equal(ad->open(bus_url(), svc, AG_BUS_PUBLISHER, NULL, 0, 5, &pub), 0);
    char err[256], mid[64];
    snprintf(mid, sizeof mid, "garbage-%d", (int)getpid());
    static const char junk[] = "this is {not json";
    assert_int_equal(ad->publish(pub, type, mid, junk, sizeof junk - 1, err, sizeof err), 0);
    char *body = NULL, *reason = NULL;
    assert_int_equal(dlq_wait(ad, pub, 15000, &body, &reason), 1);
    assert_string_equal(body, junk);
    assert_non_null(strstr(reason, "unparseable"));
    assert_int_equal(r.calls, 0);
    ag_free(body);
    ag_free(reason);
    ad->close(pub);
    ag_bus_stop(b, 0);
    ag_bus_free(b);
    ag_store_close(s);
}

/* The child of the SIGKILL test: commit, then die before the relay runs. */
static int child_publish(int argc, char **argv)
{
    if (argc < 7) return 2;
    ag_store *s;
    if (ag_store_open(argv[2], &s) < 0) return 3;
    ag_bus_opts o = {.url = argv[3], .service = argv[4], .store = s};
    ag_bus *b;
    if (ag_bus_open(&o, &b) < 0) return 4;
    pub_ctx p = {b, argv[6], 0, (int)strtol(argv[5], NULL, 10), 2};
    if (ag_store_tx(s, publish_some, &p) < 0) return 5;
    /* Committed; the relay was never started. Die hard. */
    raise(SIGKILL);
    return 6;
}

static void test_publisher_killed_between_commit_and_publish_loses_nothing(void **state)
{
    (void)state;
    char pub_svc[64], con_svc[64];
    service_name("killed", pub_svc, sizeof pub_svc);
    service_name("survivor", con_svc, sizeof con_svc);
    char purl[512];
    store_url(pub_svc, purl, sizeof purl);
    ag_store *cs = open_store(con_svc);
    create_effects(cs);
    ag_bus *cb = open_bus(cs, con_svc);
    recorder r;
    recorder_init(&r);
    char type[80], pattern[80];
    snprintf(type, sizeof type, "%s.made", pub_svc);
    snprintf(pattern, sizeof pattern, "%s.*", pub_svc);
    assert_int_equal(ag_bus_subscribe(cb, pattern, record_handler, &r), 0);
    assert_int_equal(ag_bus_start(cb), 0);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char *args[] = {"agora-bus-test", "--child-publish", purl, (char *)bus_url(), pub_svc,
                        "30", type, NULL};
        execv("/proc/self/exe", args);
        _exit(127);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    /* The events are committed and unsent... */
    ag_store *ps;
    assert_int_equal(ag_store_open(purl, &ps), 0);
    assert_int_equal(count_sql(ps, "SELECT COUNT(*) FROM agora_outbox WHERE sent_ms IS NULL"), 30);
    assert_int_equal(count_sql(cs, "SELECT COUNT(*) FROM effects"), 0);
    /* ...and the restarted publisher's relay sends every one. */
    ag_bus *pb = open_bus(ps, pub_svc);
    assert_int_equal(ag_bus_start(pb), 0);
    assert_int_equal(wait_count(cs, "SELECT COUNT(*) FROM effects", 30, 20000), 30);
    sleep_ms(300);
    assert_int_equal(count_sql(cs, "SELECT COUNT(DISTINCT n) FROM effects"), 30);
    assert_int_equal(count_sql(cs, "SELECT COUNT(*) FROM effects"), 30);
    ag_bus_stop(pb, 2000);
    ag_bus_stop(cb, 0);
    ag_bus_free(pb);
    ag_bus_free(cb);
    ag_store_close(ps);
    ag_store_close(cs);
}

static void test_instances_of_a_service_compete(void **state)
{
    (void)state;
    /* Two instances of one service: one durable consumer or queue, one
     * database; each event is handled by one of them, once. */
    char pub_svc[64], con_svc[64];
    service_name("cpub", pub_svc, sizeof pub_svc);
    service_name("ccon", con_svc, sizeof con_svc);
    ag_store *ps = open_store(pub_svc);
    ag_store *cs1 = open_store(con_svc), *cs2 = open_store(con_svc);
    create_effects(cs1);
    ag_bus *pb = open_bus(ps, pub_svc);
    ag_bus *c1 = open_bus(cs1, con_svc), *c2 = open_bus(cs2, con_svc);
    char type[80], pattern[80];
    snprintf(type, sizeof type, "%s.x", pub_svc);
    snprintf(pattern, sizeof pattern, "%s.*", pub_svc);
    recorder r1, r2;
    recorder_init(&r1);
    recorder_init(&r2);
    assert_int_equal(ag_bus_subscribe(c1, pattern, record_handler, &r1), 0);
    assert_int_equal(ag_bus_subscribe(c2, pattern, record_handler, &r2), 0);
    assert_int_equal(ag_bus_start(c1), 0);
    assert_int_equal(ag_bus_start(c2), 0);
    assert_int_equal(ag_bus_start(pb), 0);
    for (int i = 0; i < 10; i++) publish(ps, pb, type, i * 30, 30, 0);
    assert_int_equal(wait_count(cs1, "SELECT COUNT(*) FROM effects", 300, 30000), 300);
    sleep_ms(500);
    assert_int_equal(count_sql(cs1, "SELECT COUNT(*) FROM effects"), 300);
    assert_int_equal(count_sql(cs1, "SELECT COUNT(DISTINCT n) FROM effects"), 300);
    assert_int_equal(r1.committed_hint + r2.committed_hint, 300);
    assert_true(r1.committed_hint > 0);
    assert_true(r2.committed_hint > 0);
    ag_bus_stop(c1, 0);
    ag_bus_stop(c2, 0);
    ag_bus_stop(pb, 2000);
    ag_bus_free(c1);
    ag_bus_free(c2);
    ag_bus_free(pb);
    ag_store_close(cs1);
    ag_store_close(cs2);
    ag_store_close(ps);
}

static void test_consumer_offline_gets_events_after_restart(void **state)
{
    (void)state;
    char pub_svc[64], con_svc[64];
    service_name("opub", pub_svc, sizeof pub_svc);
    service_name("ocon", con_svc, sizeof con_svc);
    ag_store *ps = open_store(pub_svc), *cs = open_store(con_svc);
    create_effects(cs);
    ag_bus *pb = open_bus(ps, pub_svc);
    char type[80], pattern[80];
    snprintf(type, sizeof type, "%s.x", pub_svc);
    snprintf(pattern, sizeof pattern, "%s.*", pub_svc);
    recorder r;
    recorder_init(&r);
    /* The consumer runs once (its durable or queue now exists), then stops. */
    ag_bus *cb = open_bus(cs, con_svc);
    assert_int_equal(ag_bus_subscribe(cb, pattern, record_handler, &r), 0);
    assert_int_equal(ag_bus_start(cb), 0);
    assert_int_equal(ag_bus_start(pb), 0);
    publish(ps, pb, type, 0, 5, 1);
    assert_int_equal(wait_count(cs, "SELECT COUNT(*) FROM effects", 5, 10000), 5);
    ag_bus_stop(cb, 0);
    ag_bus_free(cb);
    /* Events published while it is down wait for it. */
    publish(ps, pb, type, 5, 20, 1);
    int64_t rows = -1, age;
    for (int i = 0; i < 100 && rows != 0; i++) {
        sleep_ms(50);
        assert_int_equal(ag_bus_outbox_depth(pb, &rows, &age), 0);
    }
    assert_int_equal(rows, 0); /* all confirmed by the broker */
    assert_int_equal(count_sql(cs, "SELECT COUNT(*) FROM effects"), 5);
    cb = open_bus(cs, con_svc);
    assert_int_equal(ag_bus_subscribe(cb, pattern, record_handler, &r), 0);
    assert_int_equal(ag_bus_start(cb), 0);
    assert_int_equal(wait_count(cs, "SELECT COUNT(*) FROM effects", 25, 15000), 25);
    sleep_ms(300);
    assert_int_equal(count_sql(cs, "SELECT COUNT(DISTINCT n) FROM effects"), 25);
    assert_int_equal(count_sql(cs, "SELECT COUNT(*) FROM effects"), 25);
    assert_int_equal(r.order_violations, 0);
    ag_bus_stop(cb, 0);
    ag_bus_stop(pb, 2000);
    ag_bus_free(cb);
    ag_bus_free(pb);
    ag_store_close(cs);
    ag_store_close(ps);
}

static void test_broker_restart_mid_stream_loses_nothing(void **state)
{
    (void)state;
    const char *ctl = getenv("AGORA_TEST_HARNESS_CTL");
    if (!ctl) fail_msg("AGORA_TEST_HARNESS_CTL is not set: run through with-servers");
    const char *which = strncmp(bus_url(), "nats", 4) == 0 ? "nats" : "rabbitmq";
    char pub_svc[64], con_svc[64];
    service_name("rpub", pub_svc, sizeof pub_svc);
    service_name("rcon", con_svc, sizeof con_svc);
    ag_store *ps = open_store(pub_svc), *cs = open_store(con_svc);
    create_effects(cs);
    ag_bus *pb = open_bus(ps, pub_svc), *cb = open_bus(cs, con_svc);
    recorder r;
    recorder_init(&r);
    char type[80], pattern[80];
    snprintf(type, sizeof type, "%s.tick", pub_svc);
    snprintf(pattern, sizeof pattern, "%s.*", pub_svc);
    assert_int_equal(ag_bus_subscribe(cb, pattern, record_handler, &r), 0);
    assert_int_equal(ag_bus_start(cb), 0);
    assert_int_equal(ag_bus_start(pb), 0);
    for (int i = 0; i < 40; i++) {
        publish(ps, pb, type, i * 5, 5, 3);
        if (i == 15) {
            char cmd[600];
            snprintf(cmd, sizeof cmd, "AGORA_TEST_QUIET=1 %s restart %s", ctl, which);
            assert_int_equal(system(cmd), 0);
        }
        sleep_ms(20);
    }
    int64_t n = wait_count(cs, "SELECT COUNT(*) FROM effects", 200, 60000);
    sleep_ms(500);
    assert_int_equal(n, 200);
    assert_int_equal(count_sql(cs, "SELECT COUNT(*) FROM effects"), 200);
    assert_int_equal(count_sql(cs, "SELECT COUNT(DISTINCT n) FROM effects"), 200);
    assert_int_equal(r.order_violations, 0);
    ag_bus_stop(cb, 0);
    ag_bus_stop(pb, 5000);
    ag_bus_free(cb);
    ag_bus_free(pb);
    ag_store_close(cs);
    ag_store_close(ps);
}

static void test_patterns(void **state)
{
    (void)state;
    assert_true(ag_bus_pattern_match("order.*", "order.created"));
    assert_false(ag_bus_pattern_match("order.*", "order.created.v2"));
    assert_false(ag_bus_pattern_match("order.*", "orders.created"));
    assert_true(ag_bus_pattern_match("order.#", "order.created.v2"));
    assert_true(ag_bus_pattern_match("#", "anything.at.all"));
    assert_true(ag_bus_pattern_match(">", "x"));
    assert_true(ag_bus_pattern_match("user.deleted", "user.deleted"));
    assert_false(ag_bus_pattern_match("user.deleted", "user.deleted2"));
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--child-publish") == 0) return child_publish(argc, argv);
    ag_log_setup("bus-test", getenv("AGORA_LOG") ? AG_LOG_INFO : AG_LOG_WARN);
    snprintf(g_tmp, sizeof g_tmp, "/tmp/agora-bus-test-%d", (int)getpid());
    mkdir(g_tmp, 0700);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_patterns),
        cmocka_unit_test(test_publish_consume_once_in_order),
        cmocka_unit_test(test_duplicate_delivery_skipped_by_inbox),
        cmocka_unit_test(test_handler_fails_twice_then_succeeds),
        cmocka_unit_test(test_delayed_redelivery_with_backoff),
        cmocka_unit_test(test_always_failing_handler_dead_letters_with_reason),
        cmocka_unit_test(test_unparseable_event_dead_letters_at_once),
        cmocka_unit_test(test_publisher_killed_between_commit_and_publish_loses_nothing),
        cmocka_unit_test(test_instances_of_a_service_compete),
        cmocka_unit_test(test_consumer_offline_gets_events_after_restart),
        cmocka_unit_test(test_broker_restart_mid_stream_loses_nothing),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmp);
    if (system(cmd) != 0) rc = rc ? rc : 1;
    return rc;
}
