/*
 * saga.h — persistent sagas: a sequence of steps, each with an action and an
 * optional compensation, whose progress is a row of the service's own store
 * (DESIGN.md §7: the orders service runs checkout this way).
 *
 * A saga instance is one row of agora_sagas (created by
 * ag_saga_engine_new on SQLite and PostgreSQL). ag_saga_create inserts it
 * inside the caller's transaction, so the saga exists if and only if the
 * caller's own writes (the order, its outbox event) committed. The engine's
 * worker threads then run it step by step:
 *
 *                 ag_saga_create
 *                       │
 *                       ▼
 *     ┌──────────► RUNNING ── every step done ──► COMPLETED   (on_completed)
 *     │ step done,      │
 *     │ or transient    │ a step failed permanently (AG_SAGA_FAILED),
 *     └─ failure with   │ or transiently max_attempts times
 *        attempts left  ▼
 *                  COMPENSATING ── every step to undo undone ──► COMPENSATED
 *                   │      ▲                                  (on_compensated)
 *                   └──────┘ compensation failed: retried with backoff, forever
 *
 * Steps to undo, in reverse order: every step whose action succeeded, plus
 * the failed step itself when its last failure was transient (a timeout may
 * hide a charge that did happen). A step that failed with AG_SAGA_FAILED
 * declares that it had no effect and is not compensated.
 *
 * Persistence and recovery: the row is updated in one transaction after
 * each action or compensation returns (with the step's status, attempts,
 * last error and the saga's data). Nothing is written before a call, so
 * after a crash the step in progress runs again: actions and compensations
 * are at-least-once and must be idempotent by saga id (e.g. "reserve stock
 * for order <id>" twice reserves once). A step whose result was recorded is
 * never run again. ag_saga_engine_start resumes every RUNNING or
 * COMPENSATING row.
 *
 * Tracing and metrics (agora/trace.h): ag_saga_create keeps the trace
 * context current in the caller (the request that created the saga) in the
 * row, and every step runs in a span of that trace ("saga checkout.reserve",
 * "... compensate"), so the step's calls and the events its hooks publish
 * belong to it, after a restart too. agora_saga_steps_total{service,saga,
 * step,outcome} counts outcomes (ok, retried, failed, compensated,
 * compensation_retried) and agora_saga_step_duration_seconds{service,saga,
 * step} times the calls.
 *
 * Limits: one engine per database (workers claim sagas in memory, not with
 * a lease in the row); a step's deadline is handed to the callback
 * (ag_saga_ctx_deadline) to honour on its outbound calls, not enforced by
 * killing it.
 *
 * Errors: functions return 0 or a negative AG_E* code (error.h).
 */
#ifndef AGORA_SAGA_H
#define AGORA_SAGA_H

#include <jansson.h>
#include <stdint.h>

#include "agora/clock.h"
#include "agora/metrics.h"
#include "agora/store.h"

typedef struct ag_saga_engine ag_saga_engine;
typedef struct ag_saga_ctx ag_saga_ctx;

/* What a step's action or compensation returns: 0 when done; a negative
 * AG_E* code for a transient failure (retried with backoff); AG_SAGA_FAILED
 * for a permanent one (e.g. a declined card: compensate at once). A
 * compensation's failures are all retried. */
#define AG_SAGA_FAILED 1

/* A step callback. Runs on an engine worker outside any transaction, so it
 * may block on SQL and outbound HTTP. `ud` is the definition's `ud`. */
typedef int (*ag_saga_fn)(ag_saga_ctx *ctx, void *ud);
/* A hook run inside the transaction that records a step or the saga's end
 * (so its writes, e.g. ag_bus_publish, commit with the saga's state). A
 * negative return rolls back the transaction; the step is then run again
 * later (at-least-once). */
typedef int (*ag_saga_hook)(ag_saga_ctx *ctx, ag_db *db, void *ud);

typedef struct ag_saga_step {
    const char *name;
    ag_saga_fn action;     /* required */
    ag_saga_fn compensate; /* NULL: nothing to undo */
    uint64_t deadline_ms;  /* per call; 0: none */
    int max_attempts;      /* of the action; 0 means 1 */
} ag_saga_step;

typedef struct ag_saga_def {
    const char *name; /* "checkout"; stored in each row */
    const ag_saga_step *steps;
    int nsteps;
    ag_saga_hook on_step_done;   /* may be NULL: after each successful action */
    ag_saga_hook on_completed;   /* may be NULL: with the final state COMPLETED */
    ag_saga_hook on_compensated; /* may be NULL: with the final state COMPENSATED */
    void *ud;
} ag_saga_def;

typedef struct ag_saga_opts {
    ag_store *store;         /* holds agora_sagas; required */
    int workers;             /* threads = sagas in flight at once; 0: 4 */
    uint64_t backoff_ms;     /* first retry delay; 0: 200 ms */
    uint64_t backoff_max_ms; /* cap of the doubling; 0: 30 s */
    uint64_t poll_ms;        /* longest idle sleep between scans; 0: 1 s */
    ag_metrics *metrics;     /* where step metrics go; NULL: the default registry */
    const char *service;     /* their `service` label; NULL: "" */
} ag_saga_opts;

/* Creates the agora_sagas table when missing. The definitions are
 * registered afterwards. The caller owns the engine (ag_saga_engine_free). */
int ag_saga_engine_new(const ag_saga_opts *o, ag_saga_engine **out);
/* Registers a definition; `def` and its steps are borrowed and must outlive
 * the engine. AG_EEXISTS for a name already registered, AG_EINVAL for a bad
 * definition, AG_ESTATE once started. */
int ag_saga_register(ag_saga_engine *e, const ag_saga_def *def);
/* Starts the workers, which resume every unfinished saga of the table. */
int ag_saga_engine_start(ag_saga_engine *e);
/* Lets in-flight steps finish and record their result, then joins the
 * workers. Sagas not finished stay in the table for the next start. */
void ag_saga_engine_stop(ag_saga_engine *e);
/* Stops if needed and frees. NULL is a no-op. */
void ag_saga_engine_free(ag_saga_engine *e);

/* Inserts saga `id` (e.g. the order id) of definition `def` in `db`'s
 * current transaction (AG_ESTATE outside one); its first step becomes due
 * when the transaction commits. Steals `data` (NULL: {}), which must be an
 * object. AG_EEXISTS when `id` exists, AG_ENOTFOUND for an unknown
 * definition. */
int ag_saga_create(ag_saga_engine *e, ag_db *db, const char *def, const char *id, json_t *data);

/* The saga as JSON for GET /v1/sagas/:id: {id, definition, state, step,
 * reason, data, steps: [{name, status, attempts, compensations, error}],
 * next_attempt_at, created_at, updated_at}. The caller owns *out.
 * AG_ENOTFOUND when there is no such saga. */
int ag_saga_get_json(ag_saga_engine *e, const char *id, json_t **out);

/* Inside callbacks and hooks. */
const char *ag_saga_ctx_id(const ag_saga_ctx *ctx);
/* The saga's data, read and written by steps (persisted after each call,
 * whatever its result). Borrowed. */
json_t *ag_saga_ctx_data(ag_saga_ctx *ctx);
int ag_saga_ctx_step(const ag_saga_ctx *ctx); /* index */
const char *ag_saga_ctx_step_name(const ag_saga_ctx *ctx);
int ag_saga_ctx_attempt(const ag_saga_ctx *ctx); /* 1 on the first call */
bool ag_saga_ctx_compensating(const ag_saga_ctx *ctx);
ag_deadline ag_saga_ctx_deadline(const ag_saga_ctx *ctx);
/* The reason of a failure, kept in the step's "error" (and the saga's
 * "reason" when it starts compensating). */
void ag_saga_ctx_fail(ag_saga_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* In on_compensated: why the saga compensated. */
const char *ag_saga_ctx_reason(const ag_saga_ctx *ctx);

#endif
