/*
 * bus_e2e.c — Agora's event bus end to end: events per second from "commit
 * with outbox" on a publisher service to "consumer commit with inbox" on a
 * consumer service, over the broker AGORA_BUS names (nats:// or amqp://).
 *
 *   bench-bus-e2e --dir DIR [--events N] [--per-tx K] [--size BYTES] [--timeout S]
 *                 [--fresh-stream]
 *
 * Two services in this one process, each with its own SQLite store under DIR
 * and its own ag_bus (unique service names per run, so a fresh durable
 * consumer or queue): the publisher commits N events, K per transaction
 * (ag_bus_publish inside ag_store_tx); the consumer's handler inserts one row
 * per event into its own table in the inbox transaction. The clock runs from
 * the first publisher commit until the consumer has committed N events
 * (counted by an after-commit hook, so a rolled-back attempt never counts).
 *
 * Before the clock starts, a warm-up event goes through the whole path: it
 * waits for the consumer to exist on the broker and to have skipped whatever
 * the stream already holds (a new JetStream durable delivers the stream from
 * the start), and it measures the envelope so that `data` can be padded to
 * --size bytes of envelope. The consumer binds in its own thread, so a
 * warm-up event routed before that can miss it (RabbitMQ); one that has not
 * arrived after 2 s is followed by another, and those that never arrive are
 * reported (warmup_events counts the ones sent).
 *
 * --fresh-stream (NATS only) purges the AGORA stream first, so that the new
 * durable has no history to wade through: on a broker that earlier runs
 * filled, a new service's consumer otherwise fetches and acknowledges every
 * event the stream holds before reaching this run's (warmup_s shows it).
 *
 * Afterwards it checks the counts: N consumer rows for measured events with N
 * distinct event numbers 0..N-1 (none lost, none applied twice), outbox
 * empty, inbox = N + the warm-up events that arrived.
 *
 * Prints one line on stdout:
 *   e2e adapter=nats per_tx=1 events=N seconds=S events_per_s=R commit_s=C
 *       relay_s=P envelope_bytes=B sqlite_sync=full warmup_s=W warmup_events=K
 * Exit status: 0 measured and counts right, 1 failure (stall, lost or
 * duplicated events, store error), 2 usage, 3 the adapter is not available
 * (the broker refused, or the adapter refuses this URL scheme).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

#include "agora/bus.h"
#include "agora/id.h"
#include "agora/store.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define EXIT_UNAVAILABLE 3

typedef struct consumer_ctx {
    atomic_llong committed; /* measured events (n >= 0) committed */
    atomic_llong warm;      /* warm-up events (n < 0) committed */
    atomic_llong calls;     /* handler invocations (retries included) */
} consumer_ctx;

typedef struct pub_ctx {
    ag_bus *bus;
    const char *type;
    const char *pad;
    long long first; /* event numbers first .. first + count - 1 */
    int count;
    char first_id[AG_ID_LEN + 1];
} pub_ctx;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t wall_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || !end || end == s || *end || v < min || v > max) return -1;
    *out = v;
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench-bus-e2e --dir DIR [--events N] [--per-tx K] [--size BYTES] "
                    "[--timeout SECONDS] [--fresh-stream]\n"
                    "       AGORA_BUS=nats://... or amqp://... picks the broker\n");
    exit(EXIT_USAGE);
}

/* ---- consumer side ---------------------------------------------------------- */

static void on_committed(void *ud)
{
    consumer_ctx *c = ud;
    atomic_fetch_add(&c->committed, 1);
}

static void on_warm_committed(void *ud)
{
    consumer_ctx *c = ud;
    atomic_fetch_add(&c->warm, 1);
}

static int handler(ag_db *db, const ag_event *ev, void *ud, char *why, size_t why_len)
{
    consumer_ctx *c = ud;
    atomic_fetch_add(&c->calls, 1);
    json_t *jn = json_object_get(ev->data, "n");
    if (!json_is_integer(jn)) {
        snprintf(why, why_len, "event without an integer n");
        return AG_EINVAL;
    }
    ag_val p[] = {AG_VTEXT(ev->id), AG_VINT(json_integer_value(jn)), AG_VINT(ev->delivery)};
    int rc = ag_db_exec(db, "INSERT INTO bench_rx (event_id, n, delivery) VALUES ($1, $2, $3)", p,
                        3, NULL);
    if (rc < 0) {
        snprintf(why, why_len, "insert: %s", ag_db_error(db));
        return rc;
    }
    ag_db_after_commit(db, json_integer_value(jn) >= 0 ? on_committed : on_warm_committed, c);
    return 0;
}

static int create_rx(ag_db *db, void *ud)
{
    (void)ud;
    return ag_db_exec(db,
                      "CREATE TABLE IF NOT EXISTS bench_rx (seq INTEGER PRIMARY KEY, "
                      "event_id TEXT NOT NULL, n INTEGER NOT NULL, delivery INTEGER NOT NULL)",
                      NULL, 0, NULL);
}

/* ---- publisher side --------------------------------------------------------- */

static int publish_tx(ag_db *db, void *ud)
{
    pub_ctx *p = ud;
    for (int i = 0; i < p->count; i++) {
        long long n = p->first + i;
        char subject[32];
        snprintf(subject, sizeof subject, "agg-%lld", n % 64);
        json_t *data = json_pack("{s:I, s:s}", "n", (json_int_t)n, "pad", p->pad);
        if (!data) return AG_ENOMEM;
        int rc = ag_bus_publish(p->bus, db, p->type, subject, data, i == 0 ? p->first_id : NULL);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Waits until `c` has committed `want` events. Fails after `timeout_s`
 * without progress. Returns 0, or -1 on a stall. */
static int wait_committed(consumer_ctx *c, atomic_llong *counter, long long want, double timeout_s,
                          const char *what)
{
    long long last = -1;
    double last_change = now_s();
    for (;;) {
        long long got = atomic_load(counter);
        if (got >= want) return 0;
        double t = now_s();
        if (got != last) {
            last = got;
            last_change = t;
        } else if (t - last_change > timeout_s) {
            fprintf(stderr,
                    "bench-bus-e2e: %s: stalled at %lld of %lld consumer commits for %.0f s "
                    "(handler calls %lld)\n",
                    what, got, want, timeout_s, (long long)atomic_load(&c->calls));
            return -1;
        }
        sleep_ms(1);
    }
}

/* Purges the AGORA stream (a benchmark's own broker only). */
static int purge_agora_stream(const char *url)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsErrCode jerr = 0;
    natsStatus s = natsConnection_ConnectTo(&nc, url);
    if (s == NATS_OK) s = natsConnection_JetStream(&js, nc, NULL);
    if (s == NATS_OK) s = js_PurgeStream(js, "AGORA", NULL, &jerr);
    if (s != NATS_OK && jerr == JSStreamNotFoundErr) s = NATS_OK; /* nothing to purge yet */
    if (s != NATS_OK)
        fprintf(stderr, "bench-bus-e2e: cannot purge the AGORA stream: %s (js error %d)\n",
                natsStatus_GetText(s), (int)jerr);
    if (js) jsCtx_Destroy(js);
    if (nc) natsConnection_Destroy(nc);
    return s == NATS_OK ? 0 : -1;
}

static int query_int(ag_store *s, const char *sql, int64_t *out)
{
    ag_db *db;
    int rc = ag_store_db(s, &db);
    if (rc < 0) return rc;
    *out = 0;
    rc = ag_db_query_int(db, sql, NULL, 0, out);
    return rc == AG_ENOTFOUND ? 0 : rc;
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    long events = 20000, per_tx = 1, size = 250, timeout = 30;
    bool fresh = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--fresh-stream") == 0) {
            fresh = true;
            continue;
        }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        if (strcmp(a, "--dir") == 0)
            dir = v;
        else if (strcmp(a, "--events") == 0) {
            if (parse_long(v, 1, 10000000, &events) < 0) usage();
        } else if (strcmp(a, "--per-tx") == 0) {
            if (parse_long(v, 1, 100000, &per_tx) < 0) usage();
        } else if (strcmp(a, "--size") == 0) {
            if (parse_long(v, 0, 1000000, &size) < 0) usage();
        } else if (strcmp(a, "--timeout") == 0) {
            if (parse_long(v, 1, 3600, &timeout) < 0) usage();
        } else
            usage();
        i++;
    }
    const char *url = getenv("AGORA_BUS");
    if (!dir || !url || !*url) usage();
    const char *adapter = strncmp(url, "nats://", 7) == 0 ? "nats"
                          : strncmp(url, "amqp", 4) == 0  ? "amqp"
                                                          : "unknown";
    const char *syncenv = getenv("AGORA_SQLITE_SYNC_FULL");
    bool sync_off =
        syncenv && (strcasecmp(syncenv, "off") == 0 || strcmp(syncenv, "0") == 0 ||
                    strcasecmp(syncenv, "false") == 0 || strcasecmp(syncenv, "no") == 0);

    /* Unique per run: service names (durable / queue) and the event type. */
    char run[64], pub_name[96], sub_name[96], type[96], url_pub[1024], url_sub[1024];
    snprintf(run, sizeof run, "%ld%03d", (long)getpid(), (int)(wall_ms() % 1000));
    snprintf(pub_name, sizeof pub_name, "benchpub_%s", run);
    snprintf(sub_name, sizeof sub_name, "benchsub_%s", run);
    snprintf(type, sizeof type, "bench.e%s", run);
    snprintf(url_pub, sizeof url_pub, "sqlite:%s/%s.db", dir, pub_name);
    snprintf(url_sub, sizeof url_sub, "sqlite:%s/%s.db", dir, sub_name);

    int status = EXIT_FAIL;
    ag_store *spub = NULL, *ssub = NULL;
    ag_bus *bpub = NULL, *bsub = NULL;
    consumer_ctx cc;
    atomic_init(&cc.committed, 0);
    atomic_init(&cc.warm, 0);
    atomic_init(&cc.calls, 0);
    char *pad = NULL;

    if (fresh && strcmp(adapter, "nats") == 0 && purge_agora_stream(url) < 0) goto out;
    int rc = ag_store_open(url_pub, &spub);
    if (rc == 0) rc = ag_store_open(url_sub, &ssub);
    if (rc == 0) rc = ag_store_tx(ssub, create_rx, NULL);
    if (rc < 0) {
        fprintf(stderr, "bench-bus-e2e: cannot set up the stores under %s: %s\n", dir,
                ag_strerror(rc));
        goto out;
    }

    ag_bus_opts osub = {.url = url, .service = sub_name, .store = ssub};
    ag_bus_opts opub = {.url = url, .service = pub_name, .store = spub};
    rc = ag_bus_open(&osub, &bsub);
    if (rc == 0) rc = ag_bus_open(&opub, &bpub);
    if (rc < 0) {
        fprintf(stderr, "bench-bus-e2e: ag_bus_open(%s): %s\n", adapter, ag_strerror(rc));
        status = rc == AG_EUNAVAIL ? EXIT_UNAVAILABLE : EXIT_FAIL;
        goto out;
    }
    /* ag_bus_open succeeds with the broker unreachable (events wait in the
     * outbox); a benchmark wants the broker now. */
    char why[256] = "";
    if (ag_bus_ping(bpub, why, sizeof why) < 0 || ag_bus_ping(bsub, why, sizeof why) < 0) {
        fprintf(stderr, "bench-bus-e2e: the %s adapter is not available: %s\n", adapter, why);
        status = EXIT_UNAVAILABLE;
        goto out;
    }
    rc = ag_bus_subscribe(bsub, type, handler, &cc);
    if (rc == 0) rc = ag_bus_start(bsub);
    if (rc == 0) rc = ag_bus_start(bpub);
    if (rc < 0) {
        fprintf(stderr, "bench-bus-e2e: cannot start the buses: %s\n", ag_strerror(rc));
        goto out;
    }

    /* Warm-up: one event through the whole path, unpadded, to measure the
     * envelope and to let the consumer bind and catch up with the stream.
     * The consumer binds in its own thread after ag_bus_start: an event the
     * broker routes before that may never reach it (a RabbitMQ exchange with
     * no queue bound yet), so a warm-up event that has not arrived after 2 s
     * is followed by another (n = -1, -2, ...). */
    double tw = now_s();
    pub_ctx pc = {.bus = bpub, .type = type, .pad = ""};
    long warm_sent = 0;
    while (atomic_load(&cc.warm) == 0) {
        if (now_s() - tw > (double)timeout) {
            fprintf(stderr,
                    "bench-bus-e2e: warm-up: none of %ld warm-up events reached the consumer "
                    "in %ld s (handler calls %lld)\n",
                    warm_sent, timeout, (long long)atomic_load(&cc.calls));
            goto out;
        }
        if (warm_sent == 0 || now_s() - tw > 2.0 * (double)warm_sent) {
            pc.first = -(warm_sent + 1);
            pc.count = 1;
            rc = ag_store_tx(spub, publish_tx, &pc);
            if (rc < 0) {
                fprintf(stderr, "bench-bus-e2e: warm-up commit failed: %s\n", ag_strerror(rc));
                goto out;
            }
            warm_sent++;
        }
        sleep_ms(1);
    }
    double warmup_s = now_s() - tw;
    int64_t base_len = 0;
    {
        ag_db *db;
        ag_val p = AG_VTEXT(pc.first_id);
        rc = ag_store_db(spub, &db);
        if (rc == 0)
            rc = ag_db_query_int(db, "SELECT LENGTH(payload) FROM agora_outbox WHERE id = $1", &p,
                                 1, &base_len);
        if (rc < 0) {
            fprintf(stderr, "bench-bus-e2e: cannot read the warm-up envelope: %s\n",
                    ag_strerror(rc));
            goto out;
        }
    }
    /* The warm-up's n is "-k"; measured events carry up to 7 digits. */
    long padlen = size - (long)base_len - 2;
    if (padlen < 0) padlen = 0;
    pad = malloc((size_t)padlen + 1);
    if (!pad) goto out;
    memset(pad, 'x', (size_t)padlen);
    pad[padlen] = '\0';

    /* The measurement. */
    uint64_t wall0 = wall_ms();
    double t0 = now_s();
    for (long done = 0; done < events;) {
        int k = (int)(events - done < per_tx ? events - done : per_tx);
        pub_ctx p = {.bus = bpub, .type = type, .pad = pad, .first = done, .count = k};
        rc = ag_store_tx(spub, publish_tx, &p);
        if (rc < 0) {
            fprintf(stderr, "bench-bus-e2e: publisher commit failed at event %ld: %s\n", done,
                    ag_strerror(rc));
            goto out;
        }
        done += k;
    }
    double t_commit = now_s() - t0;
    if (wait_committed(&cc, &cc.committed, events, (double)timeout, "measurement") < 0) goto out;
    double secs = now_s() - t0;

    /* Let late duplicates (if any) land before counting. */
    sleep_ms(300);
    int64_t rows = 0, distinct = 0, minn = 0, maxn = 0, redelivered = 0, inbox = 0, unsent = 0,
            env_avg = 0, last_sent = 0, warm_rows = 0;
    rc = query_int(ssub, "SELECT COUNT(*) FROM bench_rx WHERE n >= 0", &rows);
    if (rc == 0)
        rc = query_int(ssub, "SELECT COUNT(DISTINCT n) FROM bench_rx WHERE n >= 0", &distinct);
    if (rc == 0) rc = query_int(ssub, "SELECT MIN(n) FROM bench_rx WHERE n >= 0", &minn);
    if (rc == 0) rc = query_int(ssub, "SELECT MAX(n) FROM bench_rx", &maxn);
    if (rc == 0) rc = query_int(ssub, "SELECT COUNT(*) FROM bench_rx WHERE n < 0", &warm_rows);
    if (rc == 0)
        rc = query_int(ssub, "SELECT COUNT(*) FROM bench_rx WHERE delivery > 1", &redelivered);
    if (rc == 0) rc = query_int(ssub, "SELECT COUNT(*) FROM agora_inbox", &inbox);
    if (rc == 0)
        rc = query_int(spub, "SELECT COUNT(*) FROM agora_outbox WHERE sent_ms IS NULL", &unsent);
    if (rc == 0)
        rc = query_int(spub,
                       "SELECT CAST(AVG(LENGTH(payload)) AS INTEGER) FROM agora_outbox "
                       "WHERE payload NOT LIKE '%\"pad\":\"\"%'",
                       &env_avg);
    if (rc == 0) rc = query_int(spub, "SELECT MAX(sent_ms) FROM agora_outbox", &last_sent);
    if (rc < 0) {
        fprintf(stderr, "bench-bus-e2e: cannot count: %s\n", ag_strerror(rc));
        goto out;
    }
    long long calls = atomic_load(&cc.calls), committed = atomic_load(&cc.committed);
    bool ok = rows == events && distinct == events && minn == 0 && maxn == events - 1 &&
              inbox == events + warm_rows && unsent == 0 && committed == events;
    if (!ok)
        fprintf(stderr,
                "bench-bus-e2e: counts wrong: consumer rows %lld (distinct %lld, n %lld..%lld), "
                "inbox %lld (warm-up %lld), committed %lld, want %ld; outbox unsent %lld\n",
                (long long)rows, (long long)distinct, (long long)minn, (long long)maxn,
                (long long)inbox, (long long)warm_rows, committed, events, (long long)unsent);
    if (warm_rows < warm_sent)
        fprintf(stderr,
                "bench-bus-e2e: note: %lld of %ld warm-up events were confirmed but never reached "
                "the consumer%s\n",
                (long long)(warm_sent - warm_rows), warm_sent,
                strcmp(adapter, "amqp") == 0
                    ? " (published before the consumer's queue was bound; the adapter takes "
                      "NO_ROUTE as confirmed)"
                    : "");
    if (calls != committed + warm_rows || redelivered > 0)
        fprintf(stderr,
                "bench-bus-e2e: note: %lld handler calls for %lld commits, %lld events seen on "
                "a redelivery\n",
                calls, committed + (long long)warm_rows, (long long)redelivered);
    double relay_s = last_sent > 0 ? (double)((int64_t)last_sent - (int64_t)wall0) / 1000.0 : -1;
    printf("e2e adapter=%s per_tx=%ld events=%ld seconds=%.3f events_per_s=%.0f commit_s=%.3f "
           "relay_s=%.3f envelope_bytes=%lld sqlite_sync=%s warmup_s=%.3f warmup_events=%ld\n",
           adapter, per_tx, events, secs, (double)events / secs, t_commit, relay_s,
           (long long)env_avg, sync_off ? "normal" : "full", warmup_s, warm_sent);
    fflush(stdout);
    status = ok ? 0 : EXIT_FAIL;

out:
    if (bpub) ag_bus_stop(bpub, 2000);
    if (bsub) ag_bus_stop(bsub, 0);
    ag_bus_free(bpub);
    ag_bus_free(bsub);
    if (spub) ag_store_close(spub);
    if (ssub) ag_store_close(ssub);
    free(pad);
    return status;
}
