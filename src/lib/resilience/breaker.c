/*
 * breaker.c — the circuit breaker of agora/resilience.h (the state diagram
 * is there). One mutex per breaker; the window is a ring of the last
 * `window` outcomes (failure and slow bits), so a decision costs O(1).
 */
#include <pthread.h>
#include <string.h>

#include "agora/clock.h"
#include "agora/log.h"
#include "agora/mem.h"
#include "agora/resilience.h"

struct ag_breaker {
    char *name;
    ag_breaker_opts o;
    pthread_mutex_t mu;
    ag_breaker_state state;
    unsigned char *ring; /* bit 0: failure, bit 1: slow */
    int head, count, failures, slow;
    int in_flight;
    int probes_out, probes_ok;
    uint64_t open_until;   /* monotonic ms */
    uint64_t open_wait;    /* the current open time */
    uint64_t opened_count; /* times it opened */
    ag_series *m_state, *m_ok, *m_failed, *m_rejected;
};

const char *ag_breaker_state_name(ag_breaker_state s)
{
    switch (s) {
    case AG_BREAKER_CLOSED:
        return "closed";
    case AG_BREAKER_OPEN:
        return "open";
    case AG_BREAKER_HALF_OPEN:
        return "half_open";
    }
    return "unknown";
}

ag_breaker *ag_breaker_new(const char *name, const ag_breaker_opts *o)
{
    ag_breaker *b = ag_calloc(1, sizeof *b);
    b->name = ag_strdup(name);
    if (o) b->o = *o;
    if (b->o.window <= 0) b->o.window = 20;
    if (b->o.min_calls <= 0) b->o.min_calls = 5;
    if (b->o.min_calls > b->o.window) b->o.min_calls = b->o.window;
    if (b->o.failure_rate <= 0) b->o.failure_rate = 0.5;
    if (b->o.slow_rate <= 0) b->o.slow_rate = 0.8;
    if (!b->o.slow_ms) b->o.slow_ms = 2000;
    if (!b->o.open_ms) b->o.open_ms = 5000;
    if (!b->o.max_open_ms) b->o.max_open_ms = 60000;
    if (b->o.max_open_ms < b->o.open_ms) b->o.max_open_ms = b->o.open_ms;
    if (b->o.probes <= 0) b->o.probes = 3;
    b->ring = ag_calloc((size_t)b->o.window, 1);
    b->open_wait = b->o.open_ms;
    pthread_mutex_init(&b->mu, NULL);
    ag_metrics *m = b->o.metrics ? b->o.metrics : ag_metrics_default();
    const char *l1[] = {"breaker"};
    const char *v1[] = {name};
    const char *l2[] = {"breaker", "outcome"};
    b->m_state = ag_metric_series(
        ag_metrics_family(m, AG_GAUGE, "agora_breaker_state",
                          "Circuit breaker state: 0 closed, 1 open, 2 half-open.", 1, l1, NULL, 0),
        v1);
    ag_metric *calls = ag_metrics_family(m, AG_COUNTER, "agora_breaker_calls_total",
                                         "Calls through a circuit breaker by outcome.", 2, l2, NULL,
                                         0);
    b->m_ok = ag_metric_series(calls, (const char *[]){name, "success"});
    b->m_failed = ag_metric_series(calls, (const char *[]){name, "failure"});
    b->m_rejected = ag_metric_series(calls, (const char *[]){name, "rejected"});
    return b;
}

void ag_breaker_free(ag_breaker *b)
{
    if (!b) return;
    pthread_mutex_destroy(&b->mu);
    ag_free(b->ring);
    ag_free(b->name);
    ag_free(b);
}

static void forget(ag_breaker *b)
{
    memset(b->ring, 0, (size_t)b->o.window);
    b->head = b->count = b->failures = b->slow = 0;
}

/* Called with mu held. */
static void set_state(ag_breaker *b, ag_breaker_state s)
{
    if (b->state == s) return;
    b->state = s;
    ag_series_set(b->m_state, (double)s);
    ag_info("circuit breaker", AG_FS("breaker", b->name), AG_FS("state", ag_breaker_state_name(s)),
            AG_FI("openMs", s == AG_BREAKER_OPEN ? (long long)b->open_wait : 0));
}

static void open_now(ag_breaker *b, bool reopen)
{
    if (reopen) {
        b->open_wait *= 2;
        if (b->open_wait > b->o.max_open_ms) b->open_wait = b->o.max_open_ms;
    } else {
        b->open_wait = b->o.open_ms;
    }
    b->open_until = ag_now_ms() + b->open_wait;
    b->opened_count++;
    b->probes_out = b->probes_ok = 0;
    set_state(b, AG_BREAKER_OPEN);
}

int ag_breaker_acquire(ag_breaker *b, ag_breaker_ticket *t)
{
    pthread_mutex_lock(&b->mu);
    int rc = 0;
    if (b->state == AG_BREAKER_OPEN && ag_now_ms() >= b->open_until) {
        b->probes_out = b->probes_ok = 0;
        set_state(b, AG_BREAKER_HALF_OPEN);
    }
    t->probe = false;
    if (b->state == AG_BREAKER_OPEN) {
        rc = AG_EUNAVAIL;
    } else if (b->state == AG_BREAKER_HALF_OPEN) {
        if (b->probes_out + b->probes_ok >= b->o.probes)
            rc = AG_EUNAVAIL; /* enough probes are out; wait for their verdict */
        else
            t->probe = true;
    }
    if (rc == 0 && b->o.max_concurrent > 0 && b->in_flight >= b->o.max_concurrent) rc = AG_EBUSY;
    if (rc == 0) {
        b->in_flight++;
        if (t->probe) b->probes_out++;
        t->start_ms = ag_now_ms();
    }
    pthread_mutex_unlock(&b->mu);
    if (rc < 0) ag_series_inc(b->m_rejected, 1);
    return rc;
}

void ag_breaker_release(ag_breaker *b, ag_breaker_ticket *t, bool success)
{
    uint64_t took = ag_now_ms() - t->start_ms;
    bool slow = took >= b->o.slow_ms;
    ag_series_inc(success ? b->m_ok : b->m_failed, 1);
    pthread_mutex_lock(&b->mu);
    b->in_flight--;
    if (t->probe) {
        b->probes_out--;
        if (b->state == AG_BREAKER_HALF_OPEN) {
            if (!success || slow) {
                open_now(b, true);
            } else if (++b->probes_ok >= b->o.probes) {
                forget(b);
                b->open_wait = b->o.open_ms;
                set_state(b, AG_BREAKER_CLOSED);
            }
        }
        pthread_mutex_unlock(&b->mu);
        return;
    }
    if (b->state != AG_BREAKER_CLOSED) {
        /* A call that started before the breaker opened: its outcome is
         * old news. */
        pthread_mutex_unlock(&b->mu);
        return;
    }
    unsigned char bits = (unsigned char)((success ? 0 : 1) | (slow ? 2 : 0));
    if (b->count == b->o.window) {
        unsigned char old = b->ring[b->head];
        b->failures -= old & 1;
        b->slow -= (old >> 1) & 1;
    } else {
        b->count++;
    }
    b->ring[b->head] = bits;
    b->head = (b->head + 1) % b->o.window;
    b->failures += bits & 1;
    b->slow += (bits >> 1) & 1;
    if (b->count >= b->o.min_calls &&
        ((double)b->failures >= b->o.failure_rate * b->count ||
         (double)b->slow >= b->o.slow_rate * b->count)) {
        forget(b);
        open_now(b, false);
    }
    pthread_mutex_unlock(&b->mu);
}

ag_breaker_state ag_breaker_get_state(ag_breaker *b)
{
    pthread_mutex_lock(&b->mu);
    if (b->state == AG_BREAKER_OPEN && ag_now_ms() >= b->open_until) {
        b->probes_out = b->probes_ok = 0;
        set_state(b, AG_BREAKER_HALF_OPEN);
    }
    ag_breaker_state s = b->state;
    pthread_mutex_unlock(&b->mu);
    return s;
}

uint64_t ag_breaker_retry_after_ms(ag_breaker *b)
{
    pthread_mutex_lock(&b->mu);
    uint64_t now = ag_now_ms();
    uint64_t left = b->state == AG_BREAKER_OPEN && b->open_until > now ? b->open_until - now : 0;
    pthread_mutex_unlock(&b->mu);
    return left;
}

json_t *ag_breaker_json(ag_breaker *b)
{
    ag_breaker_state s = ag_breaker_get_state(b);
    uint64_t retry = ag_breaker_retry_after_ms(b);
    pthread_mutex_lock(&b->mu);
    json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:I, s:I}", "name", b->name, "state",
                          ag_breaker_state_name(s), "calls", b->count, "failures", b->failures,
                          "slow", b->slow, "inFlight", b->in_flight, "openedCount",
                          (json_int_t)b->opened_count, "retryAfterMs", (json_int_t)retry);
    pthread_mutex_unlock(&b->mu);
    return o;
}
