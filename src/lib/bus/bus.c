/*
 * bus.c — the broker-independent half of agora/bus.h: envelopes, the
 * outbox and its relay, the inbox, retries and dead letters. The broker is
 * behind an ag__bus_adapter (nats.c, rabbitmq.c).
 *
 * Threads: the relay thread owns a publisher connection and its own store
 * connection; the consumer thread owns a consumer connection and runs the
 * handlers (one event at a time, which keeps per-aggregate order on the
 * consuming side too).
 *
 * The relay, per wake-up:
 *
 *   select unsent rows in seq order (at most 256)
 *     for each: publish, wait for the broker's confirmation
 *        confirmed → mark sent ──► next row
 *        failed    → record the error, stop (no later row may overtake it),
 *                    wait a backoff, start again from the oldest unsent row
 *
 * A crash between the broker's confirmation and "mark sent" publishes the row
 * again after restart: the broker drops the duplicate id (JetStream's
 * duplicate window) and consumers' inboxes drop what gets through (RabbitMQ).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "agora/clock.h"
#include "agora/config.h"
#include "agora/id.h"
#include "agora/log.h"
#include "agora/loop.h"
#include "agora/trace.h"
#include "internal.h"

#define RELAY_BATCH 256
#define MARKS_MAX 512                    /* confirmed rows waiting to be marked sent */
#define MARKS_DELAY_MS 20                /* longest a confirmed row waits for its mark */
#define RETENTION_MS (60ull * 60 * 1000) /* sent rows kept an hour for inspection */

typedef struct sub {
    char *pattern;
    ag_event_handler fn;
    void *ud;
} sub;

struct ag_bus {
    char *url, *service, *source;
    ag_store *store;
    const ag__bus_adapter *ad;
    int immediate_retries;
    int max_deliveries;
    uint64_t backoff_ms;
    uint64_t sweep_ms;
    sub *subs;
    int nsubs;
    const char *const *declared; /* NULL: any type may be published */

    /* relay */
    pthread_t relay_thread, consumer_thread;
    bool relay_started, consumer_started;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool wake;               /* guarded by mu */
    bool stopping;           /* guarded by mu */
    uint64_t flush_deadline; /* guarded by mu; monotonic ms */
    atomic_bool consumer_stop;
    void *first_consumer; /* opened by ag_bus_start, handed to the consumer thread */
    void *pub;            /* relay thread's adapter state */
    /* Relay thread only: rows the broker confirmed that are not yet marked
     * sent in the outbox. Marks are committed in groups (one fsync for many
     * events); until then these rows are skipped, not published again. */
    int64_t marks[MARKS_MAX];
    int nmarks;
    uint64_t marks_since;
    atomic_int broker_ok; /* last known publisher health */

    ag_metric *f_published; /* by service and type: one producer per type shows */
    ag_series *m_lag;       /* outbox write to broker confirm */
    ag_series *m_confirmed, *m_publish_failed, *m_consumed, *m_duplicates, *m_retried, *m_dead,
        *m_depth, *m_age;
};

bool ag_bus_pattern_match(const char *pattern, const char *type)
{
    if (strcmp(pattern, "#") == 0 || strcmp(pattern, ">") == 0) return true;
    const char *p = pattern, *t = type;
    for (;;) {
        size_t pl = strcspn(p, "."), tl = strcspn(t, ".");
        if ((pl == 1 && (*p == '#' || *p == '>')) && p[1] == '\0') return true;
        bool word_ok = (pl == 1 && *p == '*') || (pl == tl && memcmp(p, t, pl) == 0);
        if (!word_ok) return false;
        p += pl;
        t += tl;
        if (*p == '\0' || *t == '\0') return *p == '\0' && *t == '\0';
        p++;
        t++;
    }
}

/* ---- Opening ------------------------------------------------------------------- */

/* The bus's tables; the engines differ only in how the outbox numbers rows. */
#define BUS_DDL(SEQ)                                                                               \
    "CREATE TABLE IF NOT EXISTS agora_outbox ("                                                    \
    " seq " SEQ ", id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,"                                   \
    " subject TEXT, payload TEXT NOT NULL, created_ms BIGINT NOT NULL, sent_ms BIGINT,"            \
    " attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT);"                                      \
    "CREATE INDEX IF NOT EXISTS agora_outbox_unsent ON agora_outbox (seq) WHERE sent_ms IS NULL;"  \
    "CREATE TABLE IF NOT EXISTS agora_inbox ("                                                     \
    " id TEXT PRIMARY KEY, type TEXT NOT NULL, received_ms BIGINT NOT NULL);"                      \
    "CREATE TABLE IF NOT EXISTS agora_dead_letters ("                                              \
    " id TEXT NOT NULL, type TEXT, reason TEXT NOT NULL, envelope TEXT NOT NULL,"                  \
    " delivery INTEGER NOT NULL, dead_ms BIGINT NOT NULL);"                                        \
    "CREATE INDEX IF NOT EXISTS agora_dead_letters_at ON agora_dead_letters (dead_ms);"

static const char sqlite_ddl[] = BUS_DDL("INTEGER PRIMARY KEY AUTOINCREMENT");
static const char postgres_ddl[] = BUS_DDL("BIGSERIAL PRIMARY KEY");

typedef struct ddl_ctx {
    const char *sql;
} ddl_ctx;

static int run_ddl(ag_db *db, void *ud)
{
    ddl_ctx *d = ud;
    ag_store *s = ag_db_store(db);
    if (ag_store_engine_of(s) == AG_STORE_POSTGRES) {
        /* Instances starting together must not race on CREATE. */
        int rc = ag_db_exec(db, "SELECT pg_advisory_xact_lock(7368208)", NULL, 0, NULL);
        if (rc < 0) return rc;
    }
    /* Statements one by one: exec takes one statement at a time. */
    char *copy = ag_strdup(d->sql);
    int rc = 0;
    char *save = NULL;
    for (char *stmt = strtok_r(copy, ";", &save); stmt; stmt = strtok_r(NULL, ";", &save)) {
        while (*stmt == ' ')
            stmt++;
        if (!*stmt) continue;
        rc = ag_db_exec(db, stmt, NULL, 0, NULL);
        if (rc < 0) break;
    }
    ag_free(copy);
    return rc;
}

int ag_bus_open(const ag_bus_opts *o, ag_bus **out)
{
    if (!o->url || !o->service || !o->store) return AG_EINVAL;
    const ag__bus_adapter *ad;
    if (strncmp(o->url, "nats://", 7) == 0)
        ad = &ag__bus_nats;
    else if (strncmp(o->url, "amqp://", 7) == 0 || strncmp(o->url, "amqps://", 8) == 0)
        ad = &ag__bus_rabbitmq;
    else {
        ag_error("invalid bus URL", AG_FS("url", o->url),
                 AG_FS("reason", "expected nats://... or amqp://..."));
        return AG_EINVAL;
    }
    long long n;
    uint64_t backoff, sweep;
    int rc = 0;
    ag_bus *b = ag_calloc(1, sizeof *b);
    rc |= ag_config_int("AGORA_BUS_IMMEDIATE_RETRIES", 2, 0, 100, &n);
    b->immediate_retries = (int)n;
    rc |= ag_config_int("AGORA_BUS_MAX_DELIVERIES", 5, 1, 1000, &n);
    b->max_deliveries = (int)n;
    rc |= ag_config_duration_ms("AGORA_BUS_BACKOFF", 1000, &backoff);
    rc |= ag_config_duration_ms("AGORA_BUS_SWEEP", 1000, &sweep);
    b->backoff_ms = backoff ? backoff : 1;
    b->sweep_ms = sweep ? sweep : 1;
    if (rc < 0) {
        ag_free(b);
        return AG_ECONFIG;
    }
    b->url = ag_strdup(o->url);
    b->service = ag_strdup(o->service);
    size_t sl = strlen(o->service) + 8;
    b->source = ag_malloc(sl);
    snprintf(b->source, sl, "agora/%s", o->service);
    b->store = o->store;
    b->ad = ad;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cond, NULL);
    atomic_init(&b->consumer_stop, false);
    atomic_init(&b->broker_ok, 0);

    ag_metrics *m = o->metrics ? o->metrics : ag_metrics_default();
    const char *lk[] = {"service"};
    const char *lv[] = {o->service};
#define COUNTER(field, name, help)                                                                 \
    b->field = ag_metric_series(ag_metrics_family(m, AG_COUNTER, name, help, 1, lk, NULL, 0), lv)
#define GAUGE(field, name, help)                                                                   \
    b->field = ag_metric_series(ag_metrics_family(m, AG_GAUGE, name, help, 1, lk, NULL, 0), lv)
    const char *lk2[] = {"service", "type"};
    b->f_published = ag_metrics_family(m, AG_COUNTER, "agora_bus_published_total",
                                       "Events written to the outbox.", 2, lk2, NULL, 0);
    COUNTER(m_confirmed, "agora_bus_confirmed_total", "Outbox events confirmed by the broker.");
    static const double lag_bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                        1,     2.5,   5,    10,    30,   60,  300};
    b->m_lag = ag_metric_series(
        ag_metrics_family(m, AG_HISTOGRAM, "agora_bus_relay_lag_seconds",
                          "From an event's outbox write to the broker's confirmation.", 1, lk,
                          lag_bounds, (int)(sizeof lag_bounds / sizeof lag_bounds[0])),
        lv);
    COUNTER(m_publish_failed, "agora_bus_publish_failures_total",
            "Attempts to publish an outbox event that the broker did not confirm.");
    COUNTER(m_consumed, "agora_bus_consumed_total", "Events handled and committed.");
    COUNTER(m_duplicates, "agora_bus_duplicates_total", "Deliveries skipped by the inbox.");
    COUNTER(m_retried, "agora_bus_retried_total", "Handler failures retried.");
    COUNTER(m_dead, "agora_bus_dead_lettered_total", "Events sent to dead letters.");
    GAUGE(m_depth, "agora_bus_outbox_depth", "Outbox events not yet confirmed.");
    GAUGE(m_age, "agora_bus_outbox_age_seconds", "Age of the oldest unconfirmed outbox event.");
#undef COUNTER
#undef GAUGE

    ddl_ctx d = {ag_store_engine_of(o->store) == AG_STORE_SQLITE ? sqlite_ddl : postgres_ddl};
    rc = ag_store_tx(o->store, run_ddl, &d);
    if (rc < 0) {
        ag_error("cannot create the outbox and inbox tables", AG_FERR(rc));
        ag_bus_free(b);
        return rc;
    }
    /* Connect the publisher now. A broker that is down does not stop the
     * service: events wait in the outbox, the relay keeps trying, and
     * readiness says the bus is unavailable meanwhile. */
    rc = ad->open(b->url, b->service, AG_BUS_PUBLISHER, NULL, 0, (uint64_t)b->max_deliveries,
                  &b->pub);
    if (rc < 0) {
        b->pub = NULL;
        ag_warn("event bus not reachable yet; events wait in the outbox", AG_FS("url", b->url),
                AG_FERR(rc));
    } else {
        atomic_store(&b->broker_ok, 1);
    }
    *out = b;
    return 0;
}

int ag_bus_subscribe(ag_bus *b, const char *pattern, ag_event_handler h, void *ud)
{
    if (!pattern || !*pattern || !h || b->consumer_started) return AG_EINVAL;
    b->subs = ag_realloc(b->subs, (size_t)(b->nsubs + 1) * sizeof *b->subs);
    b->subs[b->nsubs++] = (sub){ag_strdup(pattern), h, ud};
    return 0;
}

int ag_bus_subscription_count(const ag_bus *b)
{
    return b->nsubs;
}

const char *ag_bus_subscription(const ag_bus *b, int i)
{
    return i >= 0 && i < b->nsubs ? b->subs[i].pattern : NULL;
}

void ag_bus_declare(ag_bus *b, const char *const *types)
{
    b->declared = types;
}

/* ---- Publishing ------------------------------------------------------------------ */

static void wake_relay(void *ud)
{
    ag_bus *b = ud;
    pthread_mutex_lock(&b->mu);
    b->wake = true;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->mu);
}

int ag_bus_publish(ag_bus *b, ag_db *db, const char *type, const char *subject, json_t *data,
                   char *id_out)
{
    if (!ag_db_in_tx(db)) {
        json_decref(data);
        ag_error("ag_bus_publish outside a transaction; refused", AG_FS("type", type));
        return AG_ESTATE;
    }
    if (!type || !*type || strpbrk(type, " *>#\r\n")) {
        json_decref(data);
        return AG_EINVAL;
    }
    if (b->declared) {
        const char *const *t = b->declared;
        while (*t && strcmp(*t, type) != 0)
            t++;
        if (!*t) {
            json_decref(data);
            ag_error("event type not in the service's declaration; refused", AG_FS("type", type));
            return AG_EINVAL;
        }
    }
    char id[AG_ID_LEN + 1], ts[32];
    ag_id_new_str(id);
    uint64_t now = ag_wall_ms();
    ag_time_rfc3339(ts, sizeof ts, now);
    json_t *env =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "specversion", "1.0", "id", id, "source",
                  b->source, "type", type, "time", ts, "datacontenttype", "application/json");
    if (subject) json_object_set_new(env, "subject", json_string(subject));
    /* A producer span when a request or event is traced: its context goes
     * into the event (CloudEvents distributed tracing: traceparent and
     * tracestate), where the consumers continue it. */
    char sname[160];
    snprintf(sname, sizeof sname, "%s publish", type);
    ag_span span;
    ag_span_begin(&span, sname, AG_SPAN_PRODUCER, NULL);
    if (span.ctx.valid) {
        char tp[AG_TRACEPARENT_LEN + 1];
        ag_traceparent_format(&span.ctx, tp);
        json_object_set_new(env, "traceparent", json_string(tp));
        if (span.ctx.state[0]) json_object_set_new(env, "tracestate", json_string(span.ctx.state));
        ag_span_attr_str(&span, "messaging.system", b->ad->name);
        ag_span_attr_str(&span, "messaging.operation.type", "send");
        ag_span_attr_str(&span, "messaging.destination.name", type);
        ag_span_attr_str(&span, "messaging.message.id", id);
        ag_span_end(&span); /* written to the outbox: the relay sends it after the commit */
    }
    json_object_set_new(env, "data", data ? data : json_null());
    char *payload = json_dumps(env, JSON_COMPACT);
    json_decref(env);
    ag_val p[] = {AG_VTEXT(id), AG_VTEXT(type), AG_VTEXT(subject), AG_VTEXT(payload),
                  AG_VINT((int64_t)now)};
    int rc = ag_db_exec(db,
                        "INSERT INTO agora_outbox (id, type, subject, payload, created_ms) "
                        "VALUES ($1, $2, $3, $4, $5)",
                        p, 5, NULL);
    ag_free(payload);
    if (rc < 0) return rc;
    const char *lv[] = {b->source + sizeof "agora/" - 1, type};
    ag_series_inc(ag_metric_series(b->f_published, lv), 1);
    ag_db_after_commit(db, wake_relay, b);
    if (id_out) memcpy(id_out, id, AG_ID_LEN + 1);
    return 0;
}

/* ---- The relay -------------------------------------------------------------------- */

typedef struct pending_row {
    int64_t seq, created_ms;
    char *id, *type, *payload;
} pending_row;

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void update_depth(ag_bus *b, ag_db *db)
{
    int64_t rows = 0, oldest = 0;
    ag_db_query_int(db, "SELECT COUNT(*) FROM agora_outbox WHERE sent_ms IS NULL", NULL, 0, &rows);
    if (rows > 0 &&
        ag_db_query_int(db, "SELECT MIN(created_ms) FROM agora_outbox WHERE sent_ms IS NULL", NULL,
                        0, &oldest) == 0) {
        int64_t age = (int64_t)ag_wall_ms() - oldest;
        ag_series_set(b->m_age, age > 0 ? (double)age / 1000.0 : 0.0);
    } else {
        ag_series_set(b->m_age, 0);
    }
    ag_series_set(b->m_depth, (double)rows);
}

typedef struct mark_ctx {
    const int64_t *seqs;
    int n;
} mark_ctx;

static int mark_sent(ag_db *db, void *ud)
{
    mark_ctx *mc = ud;
    int64_t now = (int64_t)ag_wall_ms();
    for (int i = 0; i < mc->n; i++) {
        ag_val p[] = {AG_VINT(now), AG_VINT(mc->seqs[i])};
        int rc = ag_db_exec(db, "UPDATE agora_outbox SET sent_ms = $1 WHERE seq = $2", p, 2, NULL);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Commits the marks of confirmed rows in one transaction. A crash before it
 * publishes those rows again after restart: duplicates that the broker's
 * window and the consumers' inboxes drop. */
static int flush_marks(ag_bus *b)
{
    if (b->nmarks == 0) return 0;
    mark_ctx mc = {b->marks, b->nmarks};
    int rc = ag_store_tx(b->store, mark_sent, &mc);
    if (rc < 0) {
        ag_warn("cannot mark events sent; will try again", AG_FI("events", b->nmarks), AG_FERR(rc));
        return rc;
    }
    b->nmarks = 0;
    return 0;
}

/* Publishes up to one batch. Returns the number confirmed, or a negative
 * code when a publish failed (the relay then backs off). */
static int relay_batch(ag_bus *b, ag_db *db, bool *more)
{
    *more = false;
    ag_rows *r;
    /* On SQLite (one writer at a time) seq grows in commit order, so rows
     * at or below the last confirmed one are never new: start after it. On
     * PostgreSQL a smaller seq may commit later, so confirmed rows are
     * skipped one by one instead. */
    int64_t after = 0;
    if (ag_store_engine_of(b->store) == AG_STORE_SQLITE && b->nmarks > 0)
        after = b->marks[b->nmarks - 1];
    ag_val q[] = {AG_VINT(after), AG_VINT(RELAY_BATCH + (after ? 0 : b->nmarks))};
    int rc = ag_db_query(
        db,
        "SELECT seq, id, type, payload, created_ms FROM agora_outbox WHERE sent_ms IS NULL "
        "AND seq > $1 ORDER BY seq LIMIT $2",
        q, 2, &r);
    if (rc < 0) return rc;
    pending_row rows[RELAY_BATCH];
    int n = 0;
    while (n < RELAY_BATCH && (rc = ag_rows_next(r)) == 1) {
        int64_t seq = ag_rows_int(r, 0);
        bool marked = false;
        for (int k = b->nmarks - 1; k >= 0 && !marked; k--)
            marked = b->marks[k] == seq;
        if (marked) continue; /* confirmed already; its mark is on the way */
        rows[n].seq = seq;
        rows[n].id = ag_strdup(ag_rows_text(r, 1));
        rows[n].type = ag_strdup(ag_rows_text(r, 2));
        rows[n].payload = ag_strdup(ag_rows_text(r, 3));
        rows[n].created_ms = ag_rows_int(r, 4);
        n++;
    }
    ag_rows_free(r);
    *more = n == RELAY_BATCH;
    int done = 0;
    for (int i = 0; i < n; i++) {
        if (rc < 0) break;
        if (b->nmarks == MARKS_MAX) {
            rc = flush_marks(b);
            if (rc < 0) break;
        }
        char err[256] = "";
        int prc = b->ad->publish(b->pub, rows[i].type, rows[i].id, rows[i].payload,
                                 strlen(rows[i].payload), err, sizeof err);
        if (prc < 0) {
            ag_series_inc(b->m_publish_failed, 1);
            atomic_store(&b->broker_ok, 0);
            ag_val p[] = {AG_VTEXT(err[0] ? err : ag_strerror(prc)), AG_VINT(rows[i].seq)};
            ag_db_exec(db,
                       "UPDATE agora_outbox SET attempts = attempts + 1, last_error = $1 "
                       "WHERE seq = $2",
                       p, 2, NULL);
            ag_warn("event not confirmed by the broker; will retry", AG_FS("id", rows[i].id),
                    AG_FS("type", rows[i].type), AG_FS("error", err[0] ? err : ag_strerror(prc)));
            rc = prc;
            *more = false;
            break;
        }
        atomic_store(&b->broker_ok, 1);
        if (b->nmarks == 0) b->marks_since = ag_now_ms();
        b->marks[b->nmarks++] = rows[i].seq;
        ag_series_inc(b->m_confirmed, 1);
        int64_t lag = (int64_t)ag_wall_ms() - rows[i].created_ms;
        ag_series_observe(b->m_lag, lag > 0 ? (double)lag / 1000.0 : 0.0);
        done++;
    }
    for (int i = 0; i < n; i++) {
        ag_free(rows[i].id);
        ag_free(rows[i].type);
        ag_free(rows[i].payload);
    }
    return rc < 0 ? rc : done;
}

static void *relay_main(void *arg)
{
    ag_bus *b = arg;
    ag_db *db;
    if (ag_store_db(b->store, &db) < 0) {
        ag_error("relay cannot open its store connection; events stay in the outbox");
        return NULL;
    }
    bool is_pg = ag_store_engine_of(b->store) == AG_STORE_POSTGRES;
    bool leader = !is_pg;
    uint64_t fail_backoff = 100, last_cleanup = 0;
    for (;;) {
        if (!leader) {
            /* Several instances share one PostgreSQL database: one relays at
             * a time (a session lock, released if its connection dies). */
            int64_t got = 0;
            ag_db_query_int(db, "SELECT CASE WHEN pg_try_advisory_lock(7368209) THEN 1 ELSE 0 END",
                            NULL, 0, &got);
            leader = got == 1;
        }
        bool more = false;
        int rc = 0;
        if (leader) {
            if (!b->pub) {
                rc = b->ad->open(b->url, b->service, AG_BUS_PUBLISHER, NULL, 0,
                                 (uint64_t)b->max_deliveries, &b->pub);
                if (rc < 0) b->pub = NULL;
            }
            if (b->pub) rc = relay_batch(b, db, &more);
            if (b->nmarks >= MARKS_MAX / 2 ||
                (b->nmarks > 0 && ag_now_ms() - b->marks_since >= MARKS_DELAY_MS)) {
                int frc = flush_marks(b);
                if (rc >= 0 && frc < 0) rc = frc;
            }
            update_depth(b, db);
            if (rc >= 0) atomic_store(&b->broker_ok, b->pub && b->ad->healthy(b->pub) == 0);
            uint64_t now = ag_now_ms();
            if (now - last_cleanup > 60000) {
                ag_val cut = AG_VINT((int64_t)(ag_wall_ms() - RETENTION_MS));
                ag_db_exec(db,
                           "DELETE FROM agora_outbox WHERE sent_ms IS NOT NULL AND sent_ms < $1",
                           &cut, 1, NULL);
                last_cleanup = now;
            }
        }
        pthread_mutex_lock(&b->mu);
        bool stopping = b->stopping;
        uint64_t deadline = b->flush_deadline;
        pthread_mutex_unlock(&b->mu);
        if (stopping) {
            flush_marks(b);
            int64_t left = 0;
            ag_db_query_int(db, "SELECT COUNT(*) FROM agora_outbox WHERE sent_ms IS NULL", NULL, 0,
                            &left);
            if (left == 0 || !leader || ag_now_ms() >= deadline) {
                if (left > 0)
                    ag_warn("stopping with events in the outbox; they go out at next start",
                            AG_FI("events", left));
                break;
            }
        }
        if (rc < 0) {
            sleep_ms(fail_backoff);
            fail_backoff = fail_backoff * 2 > 5000 ? 5000 : fail_backoff * 2;
            continue;
        }
        fail_backoff = 100;
        if (more) continue;
        pthread_mutex_lock(&b->mu);
        if (!b->wake && !b->stopping) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            uint64_t ms = b->sweep_ms;
            if (b->nmarks > 0 && ms > MARKS_DELAY_MS) ms = MARKS_DELAY_MS;
            until.tv_sec += (time_t)(ms / 1000);
            until.tv_nsec += (long)(ms % 1000) * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&b->cond, &b->mu, &until);
        }
        b->wake = false;
        pthread_mutex_unlock(&b->mu);
    }
    if (is_pg && leader) ag_db_exec(db, "SELECT pg_advisory_unlock(7368209)", NULL, 0, NULL);
    return NULL;
}

/* ---- The consumer ------------------------------------------------------------------ */

typedef struct handle_ctx {
    ag_bus *bus;
    ag_event *ev;
    bool duplicate;
    char why[256];
} handle_ctx;

static int handle_tx(ag_db *db, void *ud)
{
    handle_ctx *h = ud;
    h->duplicate = false;
    h->why[0] = '\0';
    ag_val p[] = {AG_VTEXT(h->ev->id), AG_VTEXT(h->ev->type), AG_VINT((int64_t)ag_wall_ms())};
    int64_t added = 0;
    int rc = ag_db_exec(db,
                        "INSERT INTO agora_inbox (id, type, received_ms) VALUES ($1, $2, $3) "
                        "ON CONFLICT (id) DO NOTHING",
                        p, 3, &added);
    if (rc < 0) {
        snprintf(h->why, sizeof h->why, "inbox: %s", ag_db_error(db));
        return rc;
    }
    if (added == 0) {
        h->duplicate = true; /* handled before: commit nothing new */
        return 0;
    }
    for (int i = 0; i < h->bus->nsubs; i++) {
        sub *s = &h->bus->subs[i];
        if (!ag_bus_pattern_match(s->pattern, h->ev->type)) continue;
        rc = s->fn(db, h->ev, s->ud, h->why, sizeof h->why);
        if (rc < 0) {
            if (!h->why[0]) snprintf(h->why, sizeof h->why, "handler: %s", ag_strerror(rc));
            return rc;
        }
    }
    return 0;
}

static const char *jstr(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

int ag__bus_envelope_parse(const char *body, size_t len, json_t **env, ag_event *ev, char *why,
                           size_t why_len)
{
    memset(ev, 0, sizeof *ev);
    json_error_t jerr;
    *env = json_loadb(body, len, 0, &jerr);
    ev->id = *env ? jstr(*env, "id") : NULL;
    ev->type = *env ? jstr(*env, "type") : NULL;
    if (!*env || !json_is_object(*env) || !ev->id || !ev->type || !*ev->id || !*ev->type) {
        snprintf(why, why_len, "unparseable event: %s", *env ? "missing id or type" : jerr.text);
        return AG_EINVAL;
    }
    ev->source = jstr(*env, "source");
    ev->subject = jstr(*env, "subject");
    ev->time = jstr(*env, "time");
    ev->traceparent = jstr(*env, "traceparent");
    ev->data = json_object_get(*env, "data");
    return 0;
}

/* The service's own record of what it dead-lettered (ag_bus_dead_letters;
 * the broker's dead-letter destination holds the events themselves), the
 * newest DEAD_KEEP kept. Best effort: the event is with the broker either
 * way, so a failure here is logged and nothing more. */
#define DEAD_KEEP 1000

typedef struct dead_ctx {
    const char *id, *type, *reason;
    const char *body;
    size_t len;
    int delivery;
} dead_ctx;

static int dead_record_tx(ag_db *db, void *ud)
{
    dead_ctx *d = ud;
    ag_val p[] = {AG_VTEXT(d->id ? d->id : ""), AG_VTEXT(d->type),
                  AG_VTEXT(d->reason),          {.type = AG_VT_TEXT, .v.s = d->body, .len = d->len},
                  AG_VINT(d->delivery),         AG_VINT((int64_t)ag_wall_ms())};
    int rc = ag_db_exec(db,
                        "INSERT INTO agora_dead_letters (id, type, reason, envelope, delivery, "
                        "dead_ms) VALUES ($1, $2, $3, $4, $5, $6)",
                        p, 6, NULL);
    if (rc < 0) return rc;
    ag_val k[] = {AG_VINT(DEAD_KEEP)};
    return ag_db_exec(db,
                      "DELETE FROM agora_dead_letters WHERE dead_ms < (SELECT MIN(dead_ms) FROM "
                      "(SELECT dead_ms FROM agora_dead_letters ORDER BY dead_ms DESC LIMIT $1) t)",
                      k, 1, NULL);
}

int ag_bus_dead_letters(ag_bus *b, int limit, json_t *arr)
{
    ag_db *db;
    int rc = ag_store_db(b->store, &db);
    if (rc < 0) return rc;
    ag_val p[] = {AG_VINT(limit)};
    ag_rows *r;
    rc = ag_db_query(db,
                     "SELECT id, type, reason, envelope, delivery, dead_ms FROM agora_dead_letters "
                     "ORDER BY dead_ms DESC LIMIT $1",
                     p, 1, &r);
    if (rc < 0) return rc;
    while ((rc = ag_rows_next(r)) == 1) {
        char at[40];
        ag_time_rfc3339(at, sizeof at, (uint64_t)ag_rows_int(r, 5));
        json_t *env = json_loads(ag_rows_text(r, 3), 0, NULL);
        json_array_append_new(
            arr, json_pack("{s:s, s:s?, s:s, s:o, s:I, s:s}", "id", ag_rows_text(r, 0), "type",
                           ag_rows_is_null(r, 1) ? NULL : ag_rows_text(r, 1), "reason",
                           ag_rows_text(r, 2), "event", env ? env : json_string(ag_rows_text(r, 3)),
                           "delivery", (json_int_t)ag_rows_int(r, 4), "deadAt", at));
    }
    ag_rows_free(r);
    return rc < 0 ? rc : 0;
}

static void dead_letter(ag_bus *b, void *st, ag__bus_msg *m, const char *reason, const char *id)
{
    /* Recorded only once the broker has it (a failure leaves it for
     * redelivery, and it would be recorded twice); the body first, as the
     * adapter may be done with it after. */
    json_t *env = json_loadb(m->body, m->len, 0, NULL);
    dead_ctx d = {.id = id,
                  .type = jstr(env, "type"),
                  .reason = reason,
                  .body = m->body,
                  .len = m->len,
                  .delivery = m->delivery};
    char *copy = ag_strndup(m->body, m->len);
    d.body = copy;
    int rc = b->ad->dead_letter(st, m, reason);
    if (rc == 0) {
        int rrc = ag_store_tx(b->store, dead_record_tx, &d);
        if (rrc < 0)
            ag_warn("dead letter not recorded in the store", AG_FS("id", id ? id : ""),
                    AG_FERR(rrc));
    }
    ag_free(copy);
    json_decref(env);
    if (rc < 0) {
        /* Not moved: leave it with the broker, which will deliver it again. */
        ag_error("cannot dead-letter an event; left for redelivery", AG_FS("id", id ? id : ""),
                 AG_FS("reason", reason), AG_FERR(rc));
        b->ad->retry_later(st, m, b->backoff_ms);
        return;
    }
    ag_series_inc(b->m_dead, 1);
    ag_warn("event dead-lettered", AG_FS("id", id ? id : ""), AG_FS("reason", reason),
            AG_FI("delivery", m->delivery));
}

static bool wanted_type(ag_bus *b, const char *type)
{
    for (int i = 0; i < b->nsubs; i++)
        if (ag_bus_pattern_match(b->subs[i].pattern, type)) return true;
    return false;
}

static void handle_message(ag_bus *b, void *st, ag__bus_msg *m)
{
    /* Routed under a type nobody here wants: not ours to judge. */
    if (m->type[0] && !wanted_type(b, m->type)) {
        b->ad->ack(st, m);
        return;
    }
    json_t *env;
    ag_event ev;
    char why[300];
    if (ag__bus_envelope_parse(m->body, m->len, &env, &ev, why, sizeof why) < 0) {
        dead_letter(b, st, m, why, env ? jstr(env, "id") : NULL);
        json_decref(env);
        return;
    }
    const char *id = ev.id, *type = ev.type;
    if (!wanted_type(b, type)) {
        b->ad->ack(st, m);
        json_decref(env);
        return;
    }
    ev.delivery = m->delivery;
    handle_ctx h = {.bus = b, .ev = &ev};
    /* The consumer span continues the producer's trace (the CloudEvents
     * distributed-tracing extension); what the handler calls, writes and
     * publishes is in it. An event without one starts a trace. */
    ag_trace_ctx parent;
    if (!ev.traceparent || ag_traceparent_parse(ev.traceparent, &parent) < 0)
        memset(&parent, 0, sizeof parent);
    else
        ag_tracestate_set(&parent, jstr(env, "tracestate"));
    char sname[160];
    snprintf(sname, sizeof sname, "%s process", type);
    ag_span span;
    ag_span_begin(&span, sname, AG_SPAN_CONSUMER, &parent);
    ag_span_attr_str(&span, "messaging.system", b->ad->name);
    ag_span_attr_str(&span, "messaging.operation.type", "process");
    ag_span_attr_str(&span, "messaging.destination.name", type);
    ag_span_attr_str(&span, "messaging.message.id", id);
    ag_span_attr_str(&span, "messaging.consumer.group.name", b->service);
    ag_span_attr_int(&span, "messaging.message.delivery_count", m->delivery);
    ag_span_enter(&span);
    int rc = 0;
    for (int attempt = 0; attempt <= b->immediate_retries; attempt++) {
        rc = ag_store_tx(b->store, handle_tx, &h);
        if (rc == 0) break;
        if (attempt < b->immediate_retries) ag_series_inc(b->m_retried, 1);
    }
    if (rc < 0) ag_span_error(&span, h.why[0] ? h.why : ag_strerror(rc));
    if (h.duplicate) ag_span_attr_bool(&span, "agora.duplicate", true);
    if (rc == 0) {
        b->ad->ack(st, m); /* after the commit, never before */
        ag_series_inc(h.duplicate ? b->m_duplicates : b->m_consumed, 1);
    } else if (m->delivery >= b->max_deliveries) {
        char reason[320];
        snprintf(reason, sizeof reason, "failed %d deliveries: %s", m->delivery,
                 h.why[0] ? h.why : ag_strerror(rc));
        dead_letter(b, st, m, reason, id);
    } else {
        /* 1 s, 2 s, 4 s ... from the first redelivery. */
        int shift = m->delivery < 1 ? 0 : m->delivery - 1 < 20 ? m->delivery - 1 : 20;
        uint64_t delay = b->backoff_ms << shift;
        ag_series_inc(b->m_retried, 1);
        ag_info("event handler failed; redelivery later", AG_FS("id", id), AG_FS("type", type),
                AG_FI("delivery", m->delivery), AG_FI("delayMs", (long long)delay),
                AG_FS("reason", h.why[0] ? h.why : ag_strerror(rc)));
        b->ad->retry_later(st, m, delay);
    }
    ag_span_end(&span);
    json_decref(env);
}

static void *consumer_main(void *arg)
{
    ag_bus *b = arg;
    const char **patterns = ag_calloc((size_t)b->nsubs, sizeof *patterns);
    for (int i = 0; i < b->nsubs; i++)
        patterns[i] = b->subs[i].pattern;
    void *st = b->first_consumer;
    b->first_consumer = NULL;
    uint64_t pause = 100;
    while (!atomic_load(&b->consumer_stop)) {
        if (!st) {
            int rc = b->ad->open(b->url, b->service, AG_BUS_CONSUMER, patterns, b->nsubs,
                                 (uint64_t)b->max_deliveries, &st);
            if (rc < 0) {
                st = NULL;
                sleep_ms(pause);
                pause = pause * 2 > 5000 ? 5000 : pause * 2;
                continue;
            }
            pause = 100;
        }
        ag__bus_msg *m = NULL;
        int rc = b->ad->fetch(st, 250, &m);
        if (rc < 0) {
            sleep_ms(pause);
            pause = pause * 2 > 5000 ? 5000 : pause * 2;
            continue;
        }
        pause = 100;
        if (rc == 0) continue;
        handle_message(b, st, m);
        b->ad->msg_free(m);
    }
    if (st) b->ad->close(st);
    ag_free(patterns);
    return NULL;
}

/* ---- Lifecycle --------------------------------------------------------------------- */

int ag_bus_start(ag_bus *b)
{
    if (b->relay_started) return AG_ESTATE;
    if (b->nsubs > 0) {
        /* Declare the service's consumer (durable, queue and bindings)
         * before anything is published — by the relay below, too — so that
         * events meant for this service already have somewhere to go. If
         * the broker is down the consumer thread keeps trying. */
        const char **patterns = ag_calloc((size_t)b->nsubs, sizeof *patterns);
        for (int i = 0; i < b->nsubs; i++)
            patterns[i] = b->subs[i].pattern;
        if (b->ad->open(b->url, b->service, AG_BUS_CONSUMER, patterns, b->nsubs,
                        (uint64_t)b->max_deliveries, &b->first_consumer) < 0)
            b->first_consumer = NULL;
        ag_free(patterns);
        if (pthread_create(&b->consumer_thread, NULL, consumer_main, b) != 0) {
            if (b->first_consumer) b->ad->close(b->first_consumer);
            b->first_consumer = NULL;
            return AG_ESYS;
        }
        b->consumer_started = true;
    }
    if (pthread_create(&b->relay_thread, NULL, relay_main, b) != 0) return AG_ESYS;
    b->relay_started = true;
    return 0;
}

void ag_bus_stop(ag_bus *b, uint64_t flush_ms)
{
    if (b->consumer_started) {
        atomic_store(&b->consumer_stop, true);
        pthread_join(b->consumer_thread, NULL);
        b->consumer_started = false;
    }
    if (b->relay_started) {
        pthread_mutex_lock(&b->mu);
        b->stopping = true;
        b->flush_deadline = ag_now_ms() + flush_ms;
        b->wake = true;
        pthread_cond_signal(&b->cond);
        pthread_mutex_unlock(&b->mu);
        pthread_join(b->relay_thread, NULL);
        b->relay_started = false;
    }
}

void ag_bus_free(ag_bus *b)
{
    if (!b) return;
    ag_bus_stop(b, 0);
    if (b->pub) b->ad->close(b->pub);
    for (int i = 0; i < b->nsubs; i++)
        ag_free(b->subs[i].pattern);
    ag_free(b->subs);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cond);
    ag_free(b->url);
    ag_free(b->service);
    ag_free(b->source);
    ag_free(b);
}

int ag_bus_ping(void *bus, char *why, size_t why_len)
{
    ag_bus *b = bus;
    if (!atomic_load(&b->broker_ok)) {
        snprintf(why, why_len, "bus: the broker did not confirm the last publish");
        return AG_EUNAVAIL;
    }
    return 0;
}

int ag_bus_outbox_depth(ag_bus *b, int64_t *rows, int64_t *oldest_ms)
{
    ag_db *db;
    int rc = ag_store_db(b->store, &db);
    if (rc < 0) return rc;
    *rows = 0;
    *oldest_ms = 0;
    rc = ag_db_query_int(db, "SELECT COUNT(*) FROM agora_outbox WHERE sent_ms IS NULL", NULL, 0,
                         rows);
    if (rc < 0) return rc;
    if (*rows > 0) {
        int64_t created = 0;
        rc = ag_db_query_int(db, "SELECT MIN(created_ms) FROM agora_outbox WHERE sent_ms IS NULL",
                             NULL, 0, &created);
        if (rc == 0) *oldest_ms = (int64_t)ag_wall_ms() - created;
    }
    return rc < 0 ? rc : 0;
}
