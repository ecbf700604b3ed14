/*
 * discovery.h — finding services: registration with agora-registry (or any
 * Consul agent: the same HTTP API), watching the instances of the services a
 * process calls, and balancing calls across them (DESIGN.md §1, §8).
 *
 *   ag_discovery *d;
 *   ag_discovery_new(NULL, &d);                 // AGORA_REGISTRY
 *   ag_discovery_register(d, &(ag_registration){.name = "cart", .port = 7007});
 *   ag_discovery_watch(d, "catalog");
 *   ag_instance in;
 *   if (ag_discovery_pick(d, "catalog", &in) == 0) {
 *       ... call http://in.address:in.port ...
 *       ag_discovery_release(d, &in, AG_CALL_OK);
 *   }
 *   ag_discovery_free(d);                        // deregisters
 *
 * Modes, from AGORA_REGISTRY:
 *  - a URL such as "http://127.0.0.1:8500" (what `agora up` sets): the
 *    registry's HTTP API.
 *    Registration keeps itself alive: a background thread checks that the
 *    registry still knows the instance and registers it again when it does
 *    not (a registry restarted with an empty store). Watches use blocking
 *    queries (`/v1/health/service/:name?passing=true&index=N&wait=…`) and
 *    keep the last list they had while the registry is unreachable.
 *  - "static": no registry. The instances of service `x` are read from
 *    AGORA_X_URL ("http://host:port", several separated by commas; a '-' in
 *    the name becomes '_'), as on Kubernetes where a Service name is the
 *    address. Registering does nothing. This is also the mode when
 *    AGORA_REGISTRY is unset, which keeps a lone process (and every test
 *    that does not ask for a registry) hermetic.
 *
 * Balancing: the power of two choices on outstanding calls (the default), or
 * round robin (AGORA_LB=round_robin, or ag_discovery_set_policy). Passive
 * ejection: after `eject_after` consecutive failed calls an instance is left
 * out for a time that doubles with each ejection (10 s, 20 s, … up to 5 min);
 * a success resets it. Active health marks (ag_discovery_mark) from a caller
 * that checks instances itself (the gateway) take an instance out or back.
 * An instance both ejected and marked down is never picked; when every
 * instance is out, pick fails with AG_EUNAVAIL rather than sending traffic to
 * a known-bad instance.
 *
 * Thread-safe: every function may be called from any thread, including loop
 * threads (pick and release never block on I/O).
 */
#ifndef AGORA_DISCOVERY_H
#define AGORA_DISCOVERY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "agora/error.h"

typedef struct ag_discovery ag_discovery;

/* One instance of a service, by value. `slot` identifies it to release(). */
typedef struct ag_instance {
    char service[64];
    char id[128];
    char address[64]; /* "127.0.0.1" or a host name */
    int port;
    char version[32]; /* from Meta.version; "" when unknown */
    void *slot;       /* internal; for ag_discovery_release */
} ag_instance;

typedef enum ag_lb_policy { AG_LB_P2C = 0, AG_LB_ROUND_ROBIN } ag_lb_policy;

/* How a call went, for balancing and passive ejection. */
typedef enum ag_call_outcome {
    AG_CALL_OK = 0,   /* an answer (any status below 500, or 500 from the app) */
    AG_CALL_FAILED,   /* connect error, reset, timeout, 502/503/504 */
    AG_CALL_NEUTRAL,  /* cancelled by our side: neither */
} ag_call_outcome;

typedef struct ag_registration {
    const char *name;      /* service name, "catalog" */
    const char *id;        /* NULL: "<name>-<address>-<port>" */
    const char *address;   /* NULL: AGORA_ADVERTISE_HOST or "127.0.0.1" */
    int port;
    const char *version;   /* Meta.version; NULL: AGORA_VERSION or "dev" */
    const char *const *tags; /* NULL-terminated; may be NULL */
    const char *check_path;  /* HTTP check path; NULL: "/health" */
    uint64_t check_interval_ms;  /* 0: 2000 */
    uint64_t check_timeout_ms;   /* 0: 1000 */
    uint64_t deregister_after_ms; /* critical this long: removed; 0: 60000 */
} ag_registration;

/* `registry`: a URL, "static", or NULL for AGORA_REGISTRY (unset: static).
 * AG_ECONFIG for a malformed value. Creating does no I/O. The policy starts
 * from AGORA_LB ("p2c", the default, or "round_robin"). */
int ag_discovery_new(const char *registry, ag_discovery **out);
/* Deregisters (if registered), stops every watch and frees. NULL: no-op. */
void ag_discovery_free(ag_discovery *d);
bool ag_discovery_is_static(const ag_discovery *d);
/* The registry's base URL ("" in static mode). */
const char *ag_discovery_registry_url(const ag_discovery *d);
void ag_discovery_set_policy(ag_discovery *d, ag_lb_policy p);
/* Consecutive failures before an instance is ejected (default 5; 0: never). */
void ag_discovery_set_eject_after(ag_discovery *d, int failures);
/* The first ejection's length and its cap (defaults 10 s and 5 min; 0 for
 * `base_ms` restores the default). Mostly for tests. */
void ag_discovery_set_eject_time(ag_discovery *d, uint64_t base_ms, uint64_t max_ms);

/* Registers this process with its HTTP check and keeps the registration
 * alive in the background (checked every AGORA_REGISTRY_RESYNC ms, default
 * 5000). Returns 0 even when the registry is unreachable right now (it will
 * be registered when it comes back); AG_EINVAL for a bad registration;
 * AG_ESTATE when already registered. */
int ag_discovery_register(ag_discovery *d, const ag_registration *r);
/* Removes this process's registration (best effort, bounded by 2 s). */
int ag_discovery_deregister(ag_discovery *d);

/* Starts watching `service` (idempotent). The first list is fetched before
 * this returns (bounded by 2 s; an unreachable registry leaves it empty and
 * the watch retries with backoff). */
int ag_discovery_watch(ag_discovery *d, const char *service);
/* Called (on a discovery thread) after the instance list of a watched
 * service changed. */
void ag_discovery_on_change(ag_discovery *d, void (*fn)(void *ud, const char *service), void *ud);

/* Chooses an instance of `service` for one call. 0 and *out; AG_ENOTFOUND
 * when the service has no instances (or is not watched: pick watches it for
 * the next time); AG_EUNAVAIL when all are ejected or marked down. Every
 * successful pick must be matched by one release. */
int ag_discovery_pick(ag_discovery *d, const char *service, ag_instance *out);
void ag_discovery_release(ag_discovery *d, const ag_instance *in, ag_call_outcome outcome);
/* An active health check's verdict on an instance. */
void ag_discovery_mark(ag_discovery *d, const char *service, const char *id, bool healthy);

/* Copies up to `n` known instances of `service` (ejected or not); returns
 * how many there are (may exceed n). */
int ag_discovery_instances(ag_discovery *d, const char *service, ag_instance *out, int n);
/* Base URL of a picked instance ("http://127.0.0.1:7002"); convenience for
 * services calling services with the blocking client. */
void ag_instance_url(const ag_instance *in, char *out, size_t n);

/* {"mode","registry","policy","services":{name:{"lastSync","stale",
 * "instances":[{"id","address","port","version","outstanding","healthy",
 * "ejected","ejectedForMs","consecutiveFailures","calls","failures"}]}}}. */
json_t *ag_discovery_json(ag_discovery *d);

#endif
