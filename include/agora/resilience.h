/*
 * resilience.h — circuit breakers and concurrency limits for outbound calls
 * (DESIGN.md §8).
 *
 * A breaker watches the last `window` calls to one upstream. It opens when,
 * with at least `min_calls` recorded, the share of failures reaches
 * `failure_rate` or the share of slow calls (at least `slow_ms`) reaches
 * `slow_rate`. Open, it refuses calls at once for `open_ms`, doubled on each
 * reopening up to `max_open_ms`. Then it lets `probes` calls through
 * (half-open): if they all succeed it closes and forgets its history; one
 * failure reopens it.
 *
 *          failures or slow calls over the thresholds
 *   CLOSED ───────────────────────────────────────────► OPEN
 *     ▲                                                 │  │ open time over
 *     │ `probes` successes                              │  ▼
 *     └──────────────────────────── HALF_OPEN ◄─────────┘
 *                                    │ a failure ─► OPEN (longer wait)
 *
 * A concurrency limit (`max_concurrent`, 0: none) refuses calls beyond that
 * many in flight (a bulkhead per upstream).
 *
 *   ag_breaker_ticket t;
 *   if (ag_breaker_acquire(b, &t) < 0) → degrade (503 with Retry-After, stale data)
 *   ... the call ...
 *   ag_breaker_release(b, &t, ok);
 */
#ifndef AGORA_RESILIENCE_H
#define AGORA_RESILIENCE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "agora/error.h"
#include "agora/metrics.h"

typedef struct ag_breaker ag_breaker;

typedef enum ag_breaker_state {
    AG_BREAKER_CLOSED = 0,
    AG_BREAKER_OPEN,
    AG_BREAKER_HALF_OPEN
} ag_breaker_state;

typedef struct ag_breaker_opts {
    int window;          /* calls remembered; default 20 */
    int min_calls;       /* calls needed before judging; default 5 */
    double failure_rate; /* default 0.5 */
    double slow_rate;    /* default 0.8 */
    uint64_t slow_ms;    /* default 2000 */
    uint64_t open_ms;    /* first open wait; default 5000 */
    uint64_t max_open_ms; /* default 60000 */
    int probes;          /* half-open successes to close; default 3 */
    int max_concurrent;  /* 0: no limit */
    ag_metrics *metrics; /* NULL: ag_metrics_default() */
} ag_breaker_opts;

typedef struct ag_breaker_ticket {
    uint64_t start_ms;
    bool probe;
} ag_breaker_ticket;

/* A breaker named `name` (an upstream: "catalog"). `o` may be NULL for the
 * defaults; zero fields take their default. Thread-safe. */
ag_breaker *ag_breaker_new(const char *name, const ag_breaker_opts *o);
void ag_breaker_free(ag_breaker *b);

/* 0 when the call may go; AG_EUNAVAIL when the breaker is open (or the
 * half-open probes are all out), AG_EBUSY when max_concurrent calls are in
 * flight. On refusal nothing needs releasing. */
int ag_breaker_acquire(ag_breaker *b, ag_breaker_ticket *t);
/* Records the outcome of an acquired call (its duration is measured from
 * acquire). A call cut short by the caller's own deadline counts as a
 * failure: the upstream was too slow for it. */
void ag_breaker_release(ag_breaker *b, ag_breaker_ticket *t, bool success);

ag_breaker_state ag_breaker_get_state(ag_breaker *b);
/* Milliseconds until an open breaker lets a probe through (0 otherwise). */
uint64_t ag_breaker_retry_after_ms(ag_breaker *b);
const char *ag_breaker_state_name(ag_breaker_state s);
/* {"name","state","calls","failures","slow","inFlight","openedCount","retryAfterMs"}. */
json_t *ag_breaker_json(ag_breaker *b);

#endif
