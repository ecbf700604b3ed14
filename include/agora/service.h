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
#include "agora/grpc.h"
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
 * before the pool stops (flush, close stores); for a service that never
 * ran (it failed to start, or only described itself), in ag_service_free
 * before anything is freed. Each runs once. */
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
/* Serves `methods` (terminated by {NULL}, borrowed) over gRPC beside the
 * HTTP server (agora/grpc.h): on AGORA_GRPC_PORT, or the HTTP port + 100;
 * "off": not at all. `name` is the gRPC service name Health/Check knows
 * ("agora.users.v1.UserService"). Call before ag_service_run. */
void ag_service_use_grpc(ag_service *svc, const char *name, const ag_grpc_method *methods);
/* The gRPC port, once running (0 before, or without gRPC). */
int ag_service_grpc_port(const ag_service *svc);
/* Asks a running service to stop, as SIGTERM would. Thread-safe. */
void ag_service_stop(ag_service *svc);
/* The port the server is bound to, once running (0 before). */
int ag_service_port(const ag_service *svc);
void ag_service_free(ag_service *svc);

/* ---- The declaration: one struct a service, and its whole main() ----------
 *
 * A service is declared, not assembled: its name and port, its store and
 * migrations, its bus with the events it consumes and the only ones it
 * publishes, its token verifier, the peers it calls, its routes and OpenAPI
 * document. ag_service_main does the start-up every service shares from
 * that, in one order, and runs it:
 *
 *   static const char *const k_publishes[] = {"room.created", ..., NULL};
 *   static const ag_service_def k_rooms = {
 *       .name = "rooms", .port = 7011,
 *       .schema_dir = AGORA_ROOMS_SCHEMA_DIR, .store = &g_rooms.store,
 *       .bus = &g_rooms.bus, .subscribe = rooms_subscribe, .publishes = k_publishes,
 *       .auth = &g_rooms.auth,
 *       .peers = (const ag_peer_def[]){{"users", "http://127.0.0.1:7001", &g_rooms.users},
 *                                      {NULL}},
 *       .routes = rooms_routes, .openapi = rooms_openapi_json,
 *   };
 *   int main(void) { return ag_service_main(&k_rooms); }
 *
 * The order (docs/internals/service.md): ag_service_new (configuration,
 * logging, loops, pool, tracer), `config`, the store from AGORA_DB with the
 * migrations in AGORA_SCHEMA_DIR (default `schema_dir`), the bus from
 * AGORA_BUS with `subscribe` and `publishes`, the verifier (`auth`,
 * `auth_flags`), each peer, `init`, `routes`, the OpenAPI document; then
 * ag_service_run. What fails before the run is logged by the step and
 * main returns 2; a run that could not start returns 1; a clean stop 0.
 * `cleanup` runs last in every case.
 *
 * With AGORA_DESCRIBE=1 the service does every step up to the run and,
 * instead of running, prints its declaration as one JSON object on stdout
 * and returns 0: {name, port, store, bus, routes: [{method, path}] (what the
 * router holds, built-ins included, paths as {name}), openapi: [{method,
 * path}] (what its /openapi.json describes), publishes, consumes (the
 * subscribed patterns), peers}. tests/docs checks every service's against
 * its OpenAPI document, docs/api.md and docs/events.md. Point AGORA_DB at a
 * scratch database for it: the migrations and `init` run.
 *
 * This is nginx's ngx_module_t and Redis's command table in C's terms: a
 * static description the core walks, hooks where a service must do its
 * own thing, and nothing a service repeats. */
typedef struct ag_peer_def {
    const char *name;        /* lower case: "users" (AGORA_USERS_URL overrides the URL) */
    const char *default_url; /* "http://127.0.0.1:7001" */
    struct ag_peer **out;
    /* Calls in the breaker's window before it judges; 0: the default
     * (AGORA_BREAKER_MIN_CALLS overrides either). */
    int breaker_min_calls;
} ag_peer_def;

typedef struct ag_service_def {
    const char *name; /* lower case: "rooms" */
    int port;         /* the default; PORT overrides */
    /* Reads the service's own configuration (and anything else that must
     * come before the store). Negative: start-up stops. */
    int (*config)(ag_service *svc);
    /* The migrations' default folder; NULL with `store` NULL: no store. */
    const char *schema_dir;
    struct ag_store **store;
    /* NULL: no bus. `subscribe` (may be NULL) registers the handlers of what
     * the service consumes; `publishes` (NULL-terminated; NULL: publishes
     * nothing) is all it may publish (ag_bus_declare). */
    struct ag_bus **bus;
    int (*subscribe)(struct ag_bus *bus);
    const char *const *publishes;
    /* Non-NULL: ag_service_use_auth(svc, auth_flags, auth). */
    struct ag_auth **auth;
    unsigned auth_flags;
    const ag_peer_def *peers; /* terminated by {NULL}; may be NULL */
    /* After the store, bus, verifier and peers, before the routes: what
     * else the service sets up (middleware, engines, hooks, metrics). */
    int (*init)(ag_service *svc);
    void (*routes)(ag_router *r);
    const char *openapi; /* the document's JSON text; NULL: generated from the routes */
    /* gRPC methods (terminated by {NULL}) and the service name Health/Check
     * knows: ag_service_use_grpc. NULL: no gRPC server. */
    const ag_grpc_method *grpc;
    const char *grpc_name;
    /* After the service is freed, whatever happened: free what `config`
     * and `init` made. */
    void (*cleanup)(void);
} ag_service_def;

/* The whole of a declared service's main(): its exit status. */
int ag_service_main(const ag_service_def *def);

/* Registers /health, /ready and /metrics on `router`. Used by ag_service_new;
 * exposed for programs that assemble their own server. */
void ag_obs_register_endpoints(ag_router *router, ag_service *svc);

#endif
