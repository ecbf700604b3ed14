/*
 * registry.h — agora-registry's shared state (docs/internals/registry.md).
 *
 * The catalog lives in memory under one mutex (g_reg.mu) and is written to
 * the store by a persister thread (store.c): HTTP handlers of the blocking
 * queries run on I/O loops, where no store call may be made, and the health
 * checker runs on a loop of its own (checks.c). Every change that a client
 * could observe bumps the index (the Raft index of a Consul server; here one
 * counter), records it for the service name it touched, wakes the blocking
 * queries (routes.c) and marks the state dirty for the persister.
 */
#ifndef AGORA_REGISTRY_H
#define AGORA_REGISTRY_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "agora/agora.h"

typedef enum reg_status { REG_PASSING = 0, REG_WARNING, REG_CRITICAL } reg_status;

typedef struct reg_check {
    char *id, *name;
    char *http;           /* HTTP check URL, or NULL for a TTL check */
    uint64_t interval_ms; /* HTTP */
    uint64_t timeout_ms;  /* HTTP */
    uint64_t ttl_ms;      /* TTL */
    uint64_t dereg_ms;    /* critical this long: the service is removed; 0: never */
    reg_status status;
    char *output;
    uint64_t critical_since; /* wall ms when it turned critical; 0 otherwise */
    uint64_t next_run;       /* monotonic ms: the next HTTP run */
    uint64_t ttl_expires;    /* monotonic ms: TTL deadline */
    bool running;            /* an HTTP run is in flight */
    uint64_t gen;            /* distinguishes a re-registered check */
    uint64_t create_index, modify_index;
} reg_check;

typedef struct reg_svc {
    char *id, *name, *address;
    int port;
    json_t *tags; /* array of strings */
    json_t *meta; /* object of strings */
    reg_check *checks;
    int nchecks;
    uint64_t create_index, modify_index;
} reg_svc;

typedef struct reg_state {
    pthread_mutex_t mu;
    reg_svc **svcs;
    int nsvcs;
    uint64_t index; /* strictly > 0, never goes back (persisted) */
    json_t *names;  /* name -> index of its last change (kept after removal) */
    uint64_t gen;   /* check generations */
    char node[128]; /* the node name shown in answers (the host name) */
    ag_store *store;
    ag_metrics *metrics;
    ag_loopset *loops; /* the service's loops (blocking queries), once running */
} reg_state;

extern reg_state g_reg;

/* ---- state (routes.c) --------------------------------------------------------- */

const char *reg_status_name(reg_status s);
/* Under g_reg.mu: the service with `id`, or NULL. */
reg_svc *reg_find(const char *id);
/* Under g_reg.mu: bumps the index for `name` and returns it. */
uint64_t reg_touch(const char *name);
/* Under g_reg.mu: removes and frees the service at position i. */
void reg_remove_at(int i);
void reg_svc_free(reg_svc *s);
/* parse.c: a registration body (Consul's service definition) as a new
 * reg_svc (the caller's; its indexes and checks' run times unset), or NULL
 * with the reason in `why`. */
reg_svc *reg_svc_parse(const char *body, size_t len, char *why, size_t why_len);
/* Under g_reg.mu: the worst status of a service's checks. */
reg_status reg_svc_status(const reg_svc *s);
/* After a change (not under g_reg.mu): wakes blocking queries, updates the
 * instance gauges and asks the persister to write. */
void reg_changed(void);
void reg_routes(ag_router *r);
/* Answers every blocking query now (the service is stopping). */
void reg_release_waiters(void *ud);

/* ---- persistence (store.c) --------------------------------------------------- */

/* Loads the catalog and the index from the store (at start). */
int reg_store_load(void);
/* Starts the persister thread; stop writes what is left and joins it. */
void reg_store_start(void);
void reg_store_stop(void *ud);
/* Asks for a write and waits (bounded by 2 s) until it is done: the handlers
 * of register and deregister answer only after the change is durable. */
void reg_store_sync(void);
/* Asks for a write without waiting. */
void reg_store_kick(void);

/* ---- health checks (checks.c) ------------------------------------------------ */

int reg_checks_start(void);
void reg_checks_stop(void *ud);

/* Consul duration strings: "10s", "500ms", "1m30s", "1.5s" (units ns, us,
 * ms, s, m, h). AG_EINVAL otherwise. */
int reg_parse_duration(const char *s, uint64_t *ms);

#endif
