/*
 * saga.c — agora/saga.h: the agora_sagas table, the workers that run due
 * sagas one step at a time, and the record of each step's result.
 *
 * A worker, per round:
 *
 *   scan due rows (RUNNING/COMPENSATING, next_attempt_at <= now, oldest first)
 *     claim one that no other worker holds (in memory, under e->mu)
 *     reload it; skip it if it changed meanwhile (terminal, not due)
 *     call the step's action or compensation (no transaction open)
 *     one transaction: UPDATE the row (+ the definition's hooks)
 *     release the claim
 *   nothing due → sleep until the earliest next_attempt_at, a create's
 *   commit, or poll_ms, whichever comes first
 *
 * Times in the row are wall-clock milliseconds (they must survive a
 * restart); the monotonic clock only bounds each step's deadline.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agora/clock.h"
#include "agora/id.h"
#include "agora/log.h"
#include "agora/mem.h"
#include "agora/saga.h"
#include "agora/trace.h"

#define SCAN_LIMIT 64
#define PARK_MS 60000 /* a saga this engine cannot run waits this long */

struct ag_saga_ctx {
    const char *id;
    json_t *data;
    int step;
    const char *step_name;
    int attempt;
    bool compensating;
    ag_deadline deadline;
    const char *reason;
    char why[256];
};

struct ag_saga_engine {
    ag_store *store;
    int nworkers;
    uint64_t backoff_ms, backoff_max_ms, poll_ms;
    const ag_saga_def **defs;
    int ndefs;
    pthread_t *threads;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stopping;  /* guarded by mu */
    bool wake;      /* guarded by mu */
    char **claimed; /* one slot per worker; guarded by mu */
    char *service;
    ag_metric *f_steps, *f_duration;
};

/* ---- Context accessors ----------------------------------------------------------- */

const char *ag_saga_ctx_id(const ag_saga_ctx *c)
{
    return c->id;
}
json_t *ag_saga_ctx_data(ag_saga_ctx *c)
{
    return c->data;
}
int ag_saga_ctx_step(const ag_saga_ctx *c)
{
    return c->step;
}
const char *ag_saga_ctx_step_name(const ag_saga_ctx *c)
{
    return c->step_name;
}
int ag_saga_ctx_attempt(const ag_saga_ctx *c)
{
    return c->attempt;
}
bool ag_saga_ctx_compensating(const ag_saga_ctx *c)
{
    return c->compensating;
}
ag_deadline ag_saga_ctx_deadline(const ag_saga_ctx *c)
{
    return c->deadline;
}
const char *ag_saga_ctx_reason(const ag_saga_ctx *c)
{
    return c->reason;
}

void ag_saga_ctx_fail(ag_saga_ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, sizeof c->why, fmt, ap);
    va_end(ap);
}

/* ---- Table ----------------------------------------------------------------------- */

/* The same text on both engines. */
static const char *const ddl[] = {
    "CREATE TABLE IF NOT EXISTS agora_sagas ("
    " id TEXT PRIMARY KEY, definition TEXT NOT NULL, state TEXT NOT NULL,"
    " step INTEGER NOT NULL, steps TEXT NOT NULL, data TEXT NOT NULL, reason TEXT,"
    " next_attempt_at BIGINT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS agora_sagas_due ON agora_sagas (next_attempt_at)"
    " WHERE state IN ('RUNNING', 'COMPENSATING')",
};

static int run_ddl(ag_db *db, void *ud)
{
    (void)ud;
    if (ag_store_engine_of(ag_db_store(db)) == AG_STORE_POSTGRES) {
        /* Instances starting together must not race on CREATE. */
        int rc = ag_db_exec(db, "SELECT pg_advisory_xact_lock(7368209)", NULL, 0, NULL);
        if (rc < 0) return rc;
    }
    for (size_t i = 0; i < sizeof ddl / sizeof ddl[0]; i++) {
        int rc = ag_db_exec(db, ddl[i], NULL, 0, NULL);
        if (rc < 0) return rc;
    }
    /* Added after the first release: the trace of the request that made it. */
    int64_t has = 0;
    int rc = ag_store_engine_of(ag_db_store(db)) == AG_STORE_POSTGRES
                 ? ag_db_query_int(db,
                                   "SELECT COUNT(*) FROM information_schema.columns WHERE "
                                   "table_schema = current_schema() AND table_name = 'agora_sagas' "
                                   "AND column_name = 'traceparent'",
                                   NULL, 0, &has)
                 : ag_db_query_int(db,
                                   "SELECT COUNT(*) FROM pragma_table_info('agora_sagas') "
                                   "WHERE name = 'traceparent'",
                                   NULL, 0, &has);
    if (rc < 0) return rc;
    if (has == 0)
        rc = ag_db_exec(db, "ALTER TABLE agora_sagas ADD COLUMN traceparent TEXT", NULL, 0, NULL);
    return rc;
}

/* ---- Engine ---------------------------------------------------------------------- */

int ag_saga_engine_new(const ag_saga_opts *o, ag_saga_engine **out)
{
    if (!o || !o->store || o->workers < 0) return AG_EINVAL;
    int rc = ag_store_tx(o->store, run_ddl, NULL);
    if (rc < 0) {
        ag_error("cannot create the agora_sagas table", AG_FERR(rc));
        return rc;
    }
    ag_saga_engine *e = ag_calloc(1, sizeof *e);
    e->store = o->store;
    e->nworkers = o->workers ? o->workers : 4;
    e->backoff_ms = o->backoff_ms ? o->backoff_ms : 200;
    e->backoff_max_ms = o->backoff_max_ms ? o->backoff_max_ms : 30000;
    if (e->backoff_max_ms < e->backoff_ms) e->backoff_max_ms = e->backoff_ms;
    e->poll_ms = o->poll_ms ? o->poll_ms : 1000;
    e->claimed = ag_calloc((size_t)e->nworkers, sizeof *e->claimed);
    e->service = ag_strdup(o->service ? o->service : "");
    ag_metrics *m = o->metrics ? o->metrics : ag_metrics_default();
    const char *lk4[] = {"service", "saga", "step", "outcome"};
    e->f_steps = ag_metrics_family(m, AG_COUNTER, "agora_saga_steps_total",
                                   "Saga step calls by outcome (ok, retried, failed, compensated, "
                                   "compensation_retried).",
                                   4, lk4, NULL, 0);
    e->f_duration =
        ag_metrics_family(m, AG_HISTOGRAM, "agora_saga_step_duration_seconds",
                          "Time of a saga step's action or compensation call.", 3, lk4, NULL, 0);
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cond, NULL);
    *out = e;
    return 0;
}

static const ag_saga_def *find_def(ag_saga_engine *e, const char *name)
{
    for (int i = 0; i < e->ndefs; i++)
        if (strcmp(e->defs[i]->name, name) == 0) return e->defs[i];
    return NULL;
}

int ag_saga_register(ag_saga_engine *e, const ag_saga_def *def)
{
    if (e->started) return AG_ESTATE;
    if (!def || !def->name || !*def->name || !def->steps || def->nsteps <= 0) return AG_EINVAL;
    for (int i = 0; i < def->nsteps; i++)
        if (!def->steps[i].name || !def->steps[i].action || def->steps[i].max_attempts < 0)
            return AG_EINVAL;
    if (find_def(e, def->name)) return AG_EEXISTS;
    e->defs = ag_realloc(e->defs, (size_t)(e->ndefs + 1) * sizeof *e->defs);
    e->defs[e->ndefs++] = def;
    return 0;
}

static void wake_workers(void *ud)
{
    ag_saga_engine *e = ud;
    pthread_mutex_lock(&e->mu);
    e->wake = true;
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->mu);
}

/* ---- Creating ---------------------------------------------------------------------- */

int ag_saga_create(ag_saga_engine *e, ag_db *db, const char *def_name, const char *id, json_t *data)
{
    int rc;
    if (!data) data = json_object();
    if (!def_name || !id || !*id || !json_is_object(data)) {
        rc = AG_EINVAL;
        goto out;
    }
    if (!ag_db_in_tx(db)) {
        rc = AG_ESTATE;
        goto out;
    }
    const ag_saga_def *def = find_def(e, def_name);
    if (!def) {
        rc = AG_ENOTFOUND;
        goto out;
    }
    json_t *steps = json_array();
    for (int i = 0; i < def->nsteps; i++)
        json_array_append_new(steps,
                              json_pack("{s:s, s:s, s:i, s:i}", "name", def->steps[i].name,
                                        "status", "pending", "attempts", 0, "compensations", 0));
    char *steps_s = json_dumps(steps, JSON_COMPACT);
    char *data_s = json_dumps(data, JSON_COMPACT);
    json_decref(steps);
    int64_t now = (int64_t)ag_wall_ms();
    ag_trace_ctx tc = ag_trace_current();
    char tp[AG_TRACEPARENT_LEN + 1];
    ag_traceparent_format(&tc, tp);
    ag_val p[] = {AG_VTEXT(id),     AG_VTEXT(def_name), AG_VTEXT(steps_s),
                  AG_VTEXT(data_s), AG_VINT(now),       AG_VTEXT(tc.valid ? tp : NULL)};
    rc = ag_db_exec(db,
                    "INSERT INTO agora_sagas (id, definition, state, step, steps, data, reason,"
                    " next_attempt_at, created_at, updated_at, traceparent)"
                    " VALUES ($1, $2, 'RUNNING', 0, $3, $4, NULL, $5, $5, $5, $6)",
                    p, 6, NULL);
    free(steps_s);
    free(data_s);
    if (rc == 0) ag_db_after_commit(db, wake_workers, e);
out:
    json_decref(data);
    return rc;
}

/* ---- Running one step ---------------------------------------------------------------- */

typedef struct saga_row {
    char *id;
    const ag_saga_def *def;
    char state[16];
    int step;
    json_t *steps, *data;
    char *reason;
    int64_t next_at;
    ag_trace_ctx trace; /* of the request that created it */
} saga_row;

static void row_release(saga_row *r)
{
    json_decref(r->steps);
    json_decref(r->data);
    ag_free(r->reason);
}

/* Loads saga `id`; 1 when it is due and runnable, 0 when not, or an error. */
static int load_row(ag_saga_engine *e, ag_db *db, const char *id, saga_row *r)
{
    ag_rows *rows;
    ag_val p[] = {AG_VTEXT(id)};
    int rc = ag_db_query(db,
                         "SELECT definition, state, step, steps, data, reason, next_attempt_at,"
                         " traceparent FROM agora_sagas WHERE id = $1",
                         p, 1, &rows);
    if (rc < 0) return rc;
    rc = ag_rows_next(rows);
    if (rc <= 0) {
        ag_rows_free(rows);
        return rc;
    }
    memset(r, 0, sizeof *r);
    r->def = find_def(e, ag_rows_text(rows, 0));
    snprintf(r->state, sizeof r->state, "%s", ag_rows_text(rows, 1));
    r->step = (int)ag_rows_int(rows, 2);
    r->steps = json_loads(ag_rows_text(rows, 3), 0, NULL);
    r->data = json_loads(ag_rows_text(rows, 4), 0, NULL);
    r->reason = ag_rows_is_null(rows, 5) ? NULL : ag_strdup(ag_rows_text(rows, 5));
    r->next_at = ag_rows_int(rows, 6);
    if (ag_rows_is_null(rows, 7) || ag_traceparent_parse(ag_rows_text(rows, 7), &r->trace) < 0)
        memset(&r->trace, 0, sizeof r->trace);
    if (!r->def)
        ag_warn("saga of an unregistered definition", AG_FS("id", id),
                AG_FS("definition", ag_rows_text(rows, 0)));
    ag_rows_free(rows);
    bool live = strcmp(r->state, "RUNNING") == 0 || strcmp(r->state, "COMPENSATING") == 0;
    bool corrupt = !json_is_array(r->steps) || !json_is_object(r->data);
    if (corrupt) ag_error("saga row is corrupt", AG_FS("id", id));
    if (live && (corrupt || !r->def)) {
        /* Not runnable by this engine: set it aside for a while rather
         * than claim it again at once (a worker would spin on it). */
        ag_val q[] = {AG_VTEXT(id), AG_VINT(ag_wall_ms() + PARK_MS)};
        ag_db_exec(db, "UPDATE agora_sagas SET next_attempt_at = $2 WHERE id = $1", q, 2, NULL);
    }
    if (corrupt || !r->def || !live || r->next_at > (int64_t)ag_wall_ms()) {
        row_release(r);
        return 0;
    }
    /* A definition that grew steps since the row was written. */
    while ((int)json_array_size(r->steps) < r->def->nsteps) {
        const char *nm = r->def->steps[json_array_size(r->steps)].name;
        json_array_append_new(r->steps, json_pack("{s:s, s:s, s:i, s:i}", "name", nm, "status",
                                                  "pending", "attempts", 0, "compensations", 0));
    }
    return 1;
}

static int jint(json_t *o, const char *k)
{
    return (int)json_integer_value(json_object_get(o, k));
}

static bool needs_undo(const saga_row *r, int i)
{
    if (!r->def->steps[i].compensate) return false;
    json_t *st = json_array_get(r->steps, (size_t)i);
    const char *s = json_string_value(json_object_get(st, "status"));
    return (s && strcmp(s, "done") == 0) || json_is_true(json_object_get(st, "undo"));
}

/* The highest step <= from that needs undoing, or -1. */
static int next_undo(const saga_row *r, int from)
{
    for (int i = from; i >= 0; i--)
        if (needs_undo(r, i)) return i;
    return -1;
}

static uint64_t backoff(ag_saga_engine *e, int attempts)
{
    uint64_t d = e->backoff_ms;
    for (int i = 1; i < attempts && d < e->backoff_max_ms; i++)
        d *= 2;
    if (d > e->backoff_max_ms) d = e->backoff_max_ms;
    /* Half fixed, half jitter: retries of many sagas do not line up. */
    uint32_t r;
    ag_random_bytes(&r, sizeof r);
    return d / 2 + r % (d / 2 + 1);
}

typedef struct record_ctx {
    saga_row *r;
    ag_saga_ctx *ctx;
    ag_saga_hook step_hook, final_hook;
} record_ctx;

static int record_tx(ag_db *db, void *ud)
{
    record_ctx *rc_ = ud;
    saga_row *r = rc_->r;
    char *steps_s = json_dumps(r->steps, JSON_COMPACT);
    char *data_s = json_dumps(r->data, JSON_COMPACT);
    ag_val p[] = {AG_VTEXT(r->id),     AG_VTEXT(r->state),   AG_VINT(r->step),
                  AG_VTEXT(steps_s),   AG_VTEXT(data_s),     AG_VTEXT(r->reason),
                  AG_VINT(r->next_at), AG_VINT(ag_wall_ms())};
    int rc = ag_db_exec(db,
                        "UPDATE agora_sagas SET state = $2, step = $3, steps = $4, data = $5,"
                        " reason = $6, next_attempt_at = $7, updated_at = $8 WHERE id = $1",
                        p, 8, NULL);
    free(steps_s);
    free(data_s);
    if (rc < 0) return rc;
    ag_saga_ctx *c = rc_->ctx;
    c->reason = r->reason;
    if (rc_->step_hook && (rc = rc_->step_hook(c, db, r->def->ud)) < 0) return rc;
    if (rc_->final_hook && (rc = rc_->final_hook(c, db, r->def->ud)) < 0) return rc;
    return 0;
}

static void set_error(json_t *st, const ag_saga_ctx *c, int rc)
{
    const char *msg = c->why[0] ? c->why : rc > 0 ? "failed" : ag_strerror(rc);
    json_object_set_new(st, "error", json_string(msg));
}

/* Enters COMPENSATING (or COMPENSATED when nothing needs undoing) from step
 * `from`. */
static void start_compensating(saga_row *r, int from, const char *why, record_ctx *rec)
{
    const char *failed = r->def->steps[r->step].name;
    size_t n = strlen(failed) + strlen(why) + 3;
    ag_free(r->reason);
    r->reason = ag_malloc(n);
    snprintf(r->reason, n, "%s: %s", failed, why);
    r->step = next_undo(r, from);
    if (r->step < 0) {
        snprintf(r->state, sizeof r->state, "COMPENSATED");
        r->step = 0;
        rec->final_hook = r->def->on_compensated;
    } else {
        snprintf(r->state, sizeof r->state, "COMPENSATING");
    }
    r->next_at = (int64_t)ag_wall_ms();
}

static void run_one(ag_saga_engine *e, ag_db *db, const char *id)
{
    saga_row r;
    int rc = load_row(e, db, id, &r);
    if (rc <= 0) return;
    r.id = (char *)id;
    const ag_saga_def *def = r.def;
    bool comp = strcmp(r.state, "COMPENSATING") == 0;
    if (r.step < 0 || r.step >= def->nsteps) r.step = comp ? next_undo(&r, def->nsteps - 1) : 0;
    record_ctx rec = {&r, NULL, NULL, NULL};
    ag_saga_ctx c = {.id = id, .data = r.data, .reason = r.reason};
    /* The step runs in the trace of the request that created the saga. */
    ag_span span;
    ag_span_begin(&span, "saga", AG_SPAN_INTERNAL, &r.trace);
    ag_span_attr_str(&span, "agora.saga.id", id);
    ag_span_attr_str(&span, "agora.saga.definition", def->name);
    ag_span_enter(&span);
    const char *outcome = NULL;
    uint64_t call_ns = 0;

    if (comp && r.step < 0) {
        snprintf(r.state, sizeof r.state, "COMPENSATED");
        r.step = 0;
        rec.final_hook = def->on_compensated;
    } else {
        const ag_saga_step *s = &def->steps[r.step];
        json_t *st = json_array_get(r.steps, (size_t)r.step);
        const char *key = comp ? "compensations" : "attempts";
        int n = jint(st, key) + 1;
        c.step = r.step;
        c.step_name = s->name;
        c.attempt = n;
        c.compensating = comp;
        c.deadline = s->deadline_ms ? ag_deadline_in(s->deadline_ms) : AG_DEADLINE_NONE;
        char sname[160];
        snprintf(sname, sizeof sname, "saga %s.%s%s", def->name, s->name,
                 comp ? " compensate" : "");
        ag_span_rename(&span, sname);
        ag_span_attr_str(&span, "agora.saga.step", s->name);
        ag_span_attr_int(&span, "agora.saga.attempt", n);
        uint64_t t0 = ag_now_ns();
        rc = comp ? s->compensate(&c, def->ud) : s->action(&c, def->ud);
        call_ns = ag_now_ns() - t0;
        json_object_set_new(st, key, json_integer(n));
        if (comp) {
            outcome = rc == 0 ? "compensated" : "compensation_retried";
            if (rc == 0) {
                json_object_set_new(st, "status", json_string("compensated"));
                json_object_del(st, "undo");
                r.step = next_undo(&r, r.step - 1);
                if (r.step < 0) {
                    snprintf(r.state, sizeof r.state, "COMPENSATED");
                    r.step = 0;
                    rec.final_hook = def->on_compensated;
                }
                r.next_at = (int64_t)ag_wall_ms();
            } else {
                set_error(st, &c, rc);
                r.next_at = (int64_t)(ag_wall_ms() + backoff(e, n));
                ag_warn("saga compensation failed; retrying", AG_FS("id", id),
                        AG_FS("step", s->name), AG_FI("attempt", n),
                        AG_FS("reason", json_string_value(json_object_get(st, "error"))));
            }
        } else if (rc == 0) {
            outcome = "ok";
            json_object_set_new(st, "status", json_string("done"));
            json_object_del(st, "error");
            rec.step_hook = def->on_step_done;
            r.next_at = (int64_t)ag_wall_ms();
            if (++r.step == def->nsteps) {
                snprintf(r.state, sizeof r.state, "COMPLETED");
                r.step = def->nsteps - 1;
                rec.final_hook = def->on_completed;
            }
        } else {
            int max = s->max_attempts > 0 ? s->max_attempts : 1;
            set_error(st, &c, rc);
            const char *why = json_string_value(json_object_get(st, "error"));
            outcome = rc > 0 || n >= max ? "failed" : "retried";
            if (rc > 0 || n >= max) {
                json_object_set_new(st, "status", json_string("failed"));
                /* A transient failure may hide an effect (a timed-out
                 * charge): undo this step too. A permanent one had none. */
                if (rc < 0) json_object_set_new(st, "undo", json_true());
                start_compensating(&r, rc < 0 ? r.step : r.step - 1, why, &rec);
                ag_info("saga compensating", AG_FS("id", id), AG_FS("reason", r.reason));
            } else {
                r.next_at = (int64_t)(ag_wall_ms() + backoff(e, n));
            }
        }
    }
    rec.ctx = &c;
    c.data = r.data;
    rc = ag_store_tx(e->store, record_tx, &rec);
    if (rc < 0) {
        /* The result is lost: the step runs again (at-least-once), after a
         * backoff so that a failing hook does not spin. */
        ag_error("cannot record a saga step; it will run again", AG_FS("id", id), AG_FERR(rc),
                 AG_FS("detail", ag_db_error(db)));
        ag_val p[] = {AG_VTEXT(id), AG_VINT(ag_wall_ms() + backoff(e, 1))};
        ag_db_exec(db, "UPDATE agora_sagas SET next_attempt_at = $2 WHERE id = $1", p, 2, NULL);
    }
    if (outcome) {
        const char *step = c.step_name;
        ag_series_inc(
            ag_metric_series(e->f_steps, (const char *[]){e->service, def->name, step, outcome}),
            1);
        ag_series_observe(
            ag_metric_series(e->f_duration, (const char *[]){e->service, def->name, step}),
            (double)call_ns / 1e9);
        ag_span_attr_str(&span, "agora.saga.outcome", outcome);
        if (strcmp(outcome, "ok") != 0 && strcmp(outcome, "compensated") != 0)
            ag_span_error(&span, c.reason ? c.reason : outcome);
    } else {
        ag_span_rename(&span, "saga compensated");
    }
    ag_span_end(&span);
    row_release(&r);
}

/* ---- Workers ----------------------------------------------------------------------- */

typedef struct worker_arg {
    ag_saga_engine *e;
    int slot;
} worker_arg;

static bool is_claimed(ag_saga_engine *e, const char *id)
{
    for (int i = 0; i < e->nworkers; i++)
        if (e->claimed[i] && strcmp(e->claimed[i], id) == 0) return true;
    return false;
}

/* Claims a due saga into `slot`; true when one was claimed. Otherwise
 * *next_due gets the earliest future next_attempt_at (or 0). */
static bool claim(ag_saga_engine *e, ag_db *db, int slot, int64_t *next_due)
{
    *next_due = 0;
    ag_rows *rows;
    ag_val p[] = {AG_VINT(SCAN_LIMIT)};
    if (ag_db_query(db,
                    "SELECT id, next_attempt_at FROM agora_sagas"
                    " WHERE state IN ('RUNNING', 'COMPENSATING')"
                    " ORDER BY next_attempt_at LIMIT $1",
                    p, 1, &rows) < 0)
        return false;
    int64_t now = (int64_t)ag_wall_ms();
    bool got = false;
    pthread_mutex_lock(&e->mu);
    while (!got && ag_rows_next(rows) == 1) {
        const char *id = ag_rows_text(rows, 0);
        int64_t at = ag_rows_int(rows, 1);
        if (at > now) {
            *next_due = at;
            break;
        }
        if (is_claimed(e, id)) continue;
        e->claimed[slot] = ag_strdup(id);
        got = true;
    }
    pthread_mutex_unlock(&e->mu);
    ag_rows_free(rows);
    return got;
}

static void *worker_main(void *arg)
{
    worker_arg *wa = arg;
    ag_saga_engine *e = wa->e;
    int slot = wa->slot;
    ag_free(wa);
    ag_db *db;
    if (ag_store_db(e->store, &db) < 0) {
        ag_error("saga worker has no store connection");
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&e->mu);
        bool stop = e->stopping;
        e->wake = false;
        pthread_mutex_unlock(&e->mu);
        if (stop) break;
        int64_t next_due;
        if (claim(e, db, slot, &next_due)) {
            run_one(e, db, e->claimed[slot]);
            pthread_mutex_lock(&e->mu);
            ag_free(e->claimed[slot]);
            e->claimed[slot] = NULL;
            pthread_mutex_unlock(&e->mu);
            continue;
        }
        uint64_t wait = e->poll_ms;
        if (next_due > 0) {
            int64_t d = next_due - (int64_t)ag_wall_ms();
            if (d < 1) d = 1;
            if ((uint64_t)d < wait) wait = (uint64_t)d;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t)(wait / 1000);
        ts.tv_nsec += (long)(wait % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&e->mu);
        if (!e->stopping && !e->wake) pthread_cond_timedwait(&e->cond, &e->mu, &ts);
        pthread_mutex_unlock(&e->mu);
    }
    return NULL;
}

int ag_saga_engine_start(ag_saga_engine *e)
{
    if (e->started) return AG_ESTATE;
    e->threads = ag_calloc((size_t)e->nworkers, sizeof *e->threads);
    e->stopping = false;
    for (int i = 0; i < e->nworkers; i++) {
        worker_arg *wa = ag_malloc(sizeof *wa);
        wa->e = e;
        wa->slot = i;
        if (pthread_create(&e->threads[i], NULL, worker_main, wa) != 0) {
            ag_free(wa);
            pthread_mutex_lock(&e->mu);
            e->stopping = true;
            pthread_cond_broadcast(&e->cond);
            pthread_mutex_unlock(&e->mu);
            for (int j = 0; j < i; j++)
                pthread_join(e->threads[j], NULL);
            ag_free(e->threads);
            e->threads = NULL;
            return AG_ESYS;
        }
    }
    e->started = true;
    return 0;
}

void ag_saga_engine_stop(ag_saga_engine *e)
{
    if (!e->started) return;
    pthread_mutex_lock(&e->mu);
    e->stopping = true;
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < e->nworkers; i++)
        pthread_join(e->threads[i], NULL);
    ag_free(e->threads);
    e->threads = NULL;
    e->started = false;
}

void ag_saga_engine_free(ag_saga_engine *e)
{
    if (!e) return;
    ag_saga_engine_stop(e);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cond);
    ag_free(e->claimed);
    ag_free(e->defs);
    ag_free(e->service);
    ag_free(e);
}

/* ---- Reading ----------------------------------------------------------------------- */

static json_t *time_json(int64_t ms)
{
    char buf[32];
    ag_time_rfc3339(buf, sizeof buf, (uint64_t)ms);
    return json_string(buf);
}

int ag_saga_get_json(ag_saga_engine *e, const char *id, json_t **out)
{
    ag_db *db;
    int rc = ag_store_db(e->store, &db);
    if (rc < 0) return rc;
    ag_rows *rows;
    ag_val p[] = {AG_VTEXT(id)};
    rc = ag_db_query(db,
                     "SELECT definition, state, step, steps, data, reason, next_attempt_at,"
                     " created_at, updated_at FROM agora_sagas WHERE id = $1",
                     p, 1, &rows);
    if (rc < 0) return rc;
    rc = ag_rows_next(rows);
    if (rc <= 0) {
        ag_rows_free(rows);
        return rc < 0 ? rc : AG_ENOTFOUND;
    }
    json_t *steps = json_loads(ag_rows_text(rows, 3), 0, NULL);
    json_t *data = json_loads(ag_rows_text(rows, 4), 0, NULL);
    const char *state = ag_rows_text(rows, 1);
    bool live = strcmp(state, "RUNNING") == 0 || strcmp(state, "COMPENSATING") == 0;
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:I, s:o, s:o, s:o, s:o, s:o}", "id", id, "definition",
        ag_rows_text(rows, 0), "state", state, "step", (json_int_t)ag_rows_int(rows, 2), "reason",
        ag_rows_is_null(rows, 5) ? json_null() : json_string(ag_rows_text(rows, 5)), "steps",
        steps ? steps : json_array(), "data", data ? data : json_object(), "created_at",
        time_json(ag_rows_int(rows, 7)), "updated_at", time_json(ag_rows_int(rows, 8)));
    json_object_set_new(o, "next_attempt_at", live ? time_json(ag_rows_int(rows, 6)) : json_null());
    /* "undo" is the engine's bookkeeping, not part of the API. */
    size_t i;
    json_t *st;
    json_array_foreach(json_object_get(o, "steps"), i, st) json_object_del(st, "undo");
    ag_rows_free(rows);
    *out = o;
    return 0;
}
