/*
 * service.h — what every Agora executable does at start and stop.
 *
 *   ag_service *svc;
 *   if (ag_service_new("users", 7001, &svc) < 0) return 1;
 *   ag_router_add(ag_service_router(svc), "GET", "/v1/users/:id", get_user, NULL, 0);
 *   return ag_service_run(svc);  // until SIGTERM or SIGINT, then drains; 0
 *
 * ag_service_new reads the configuration (PORT, AGORA_HOST, AGORA_LOOPS,
 * AGORA_TLS_CERT and AGORA_TLS_KEY (PEM files: the server speaks TLS),
 * AGORA_WORKERS, AGORA_QUEUE, AGORA_LOG, AGORA_ACCESS_LOG, AGORA_DRAIN_TIMEOUT
 * and the AGORA_HTTP_* limits), sets up logging, the loops, the worker pool
 * and a router with the built-in endpoints /health, /ready and /metrics.
 * ag_service_run starts the server, waits for a signal and shuts down in
 * order: readiness turns 503, the server drains, the pool finishes, the loops
 * stop. A second SIGINT or SIGTERM during the drain exits at once.
 *
 * Discovery: when AGORA_REGISTRY is a URL, the service registers itself
 * once its server listens (its name, the bound port, AGORA_ADVERTISE_HOST
 * or 127.0.0.1, Meta.version from AGORA_VERSION or "dev", an HTTP check on
 * /health every 2 s) and keeps the registration alive (registering again
 * when a restarted registry lost it); at stop it deregisters before it
 * drains, so callers stop choosing it first. Unset or "static": no
 * registration (docs/internals/discovery.md).
 */
#ifndef AGORA_SERVICE_H
#define AGORA_SERVICE_H

#include "agora/bus.h"
#include "agora/discovery.h"
#include "agora/http.h"
#include "agora/store.h"

typedef struct ag_service ag_service;

/* A readiness check: 0 when ready; otherwise a negative AG_E* code and a
 * short reason in `why`. Runs on a worker thread and may block briefly. */
typedef int (*ag_ready_check)(void *ud, char *why, size_t why_len);

/* Reads configuration and prepares a service named `name` (lower-case, used
 * in logs, metrics and AGORA_<NAME>_* overrides) on `default_port`.
 * Configuration errors are logged with the variable's name and return
 * AG_ECONFIG. */
int ag_service_new(const char *name, int default_port, ag_service **out);
ag_router *ag_service_router(ag_service *svc);
ag_metrics *ag_service_metrics(ag_service *svc);
ag_loopset *ag_service_loops(ag_service *svc);
ag_pool *ag_service_pool(ag_service *svc);
const char *ag_service_name(const ag_service *svc);
/* Adds a check to /ready (the name appears in its answer). */
void ag_service_add_ready_check(ag_service *svc, const char *name, ag_ready_check fn, void *ud);
/* A function called on the main thread after the server has drained and
 * before the pool stops (flush, close stores). */
void ag_service_on_stop(ag_service *svc, void (*fn)(void *ud), void *ud);
/* Opens the service's store from AGORA_DB (default "sqlite:var/<name>.db";
 * "{service}" in the URL becomes the service's name), applies the
 * migrations in `schema_dir` (NULL: none), adds it to /ready and closes it
 * at stop. The service owns the store; *out is borrowed. */
int ag_service_use_store(ag_service *svc, const char *schema_dir, ag_store **out);
/* Opens the event bus from AGORA_BUS (default "nats://127.0.0.1:4222") over
 * the service's store (ag_service_use_store first). Subscribe before
 * ag_service_run, which starts it with the server; at stop it stops
 * consuming and flushes the outbox (within AGORA_DRAIN_TIMEOUT) after the
 * server drained. Added to /ready. Adds GET /admin/dead-letters (admins:
 * what the service dead-lettered, ag_bus_dead_letters). The service owns
 * the bus. */
int ag_service_use_bus(ag_service *svc, ag_bus **out);
/* The service's own OpenAPI document (JSON text, borrowed for the
 * service's life), served at /openapi.json instead of the one generated
 * from the routes. What every service shares is filled in where the
 * document leaves it out: the error envelope schema (components.schemas.
 * Error) and the bearer security scheme. A document that does not parse
 * stops ag_service_run with AG_ECONFIG. */
void ag_service_set_openapi(ag_service *svc, const char *json);
/* `fn(ud)` runs on the main thread when SIGHUP arrives (reload what
 * applies). One per service. */
void ag_service_on_reload(ag_service *svc, void (*fn)(void *ud), void *ud);
/* `fn(ud)` runs on the main thread once the loops, the pool and the server
 * are running, before the service waits for signals. One per service. */
void ag_service_on_start(ag_service *svc, void (*fn)(void *ud), void *ud);
/* Runs until SIGTERM/SIGINT and drains. Returns 0 after a clean stop, or a
 * negative AG_E* code when it could not start (the port in use, say). */
int ag_service_run(ag_service *svc);
/* The service's discovery client (agora/discovery.h), created on first use
 * from AGORA_REGISTRY, to watch and pick the services it calls. The service
 * owns it; NULL only when AGORA_REGISTRY is malformed (logged). */
ag_discovery *ag_service_discovery(ag_service *svc);
/* Keeps this service out of the registry even when AGORA_REGISTRY is set
 * (the registry itself). Call before ag_service_run. */
void ag_service_set_registration(ag_service *svc, bool enabled);
/* A function called on the main thread when the service begins to stop,
 * before the server drains (answer long-held requests, say). */
void ag_service_on_drain(ag_service *svc, void (*fn)(void *ud), void *ud);
/* Asks a running service to stop, as SIGTERM would. Thread-safe. */
void ag_service_stop(ag_service *svc);
/* The port the server is bound to, once running (0 before). */
int ag_service_port(const ag_service *svc);
void ag_service_free(ag_service *svc);

/* Registers /health, /ready and /metrics on `router`. Used by ag_service_new;
 * exposed for programs that assemble their own server. */
void ag_obs_register_endpoints(ag_router *router, ag_service *svc);

#endif
