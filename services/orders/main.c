/*
 * agora-orders — orders and the checkout saga (DESIGN.md §1, §7; port
 * 7003). The API is in routes.c and README.md, the sagas in checkout.c.
 *
 * Wiring, top to bottom: configuration, the peers (agora/peer.h: registry
 * or static URLs, one circuit breaker each), the store and its migrations,
 * the bus (order.* through the outbox; user.deleted consumed), the saga
 * engine on the same store (started once the server runs, so resumed sagas
 * find every peer client ready; stopped before the store closes), the token
 * verifier with its middleware (ag_service_use_auth) and the routes.
 *
 * Environment: AGORA_DB, AGORA_BUS, PORT (7003) as for every service;
 * AGORA_JWKS_URL, AGORA_JWT_ISSUER, AGORA_JWT_AUDIENCE, AGORA_JWT_LEEWAY
 * as in every service; AGORA_CLIENT_ID (default "orders") and
 * AGORA_CLIENT_SECRET: this service's credentials at agora-users (which
 * lists them in AGORA_SERVICE_CLIENTS); AGORA_<PEER>_URL for catalog
 * (7002), cart (7007), inventory (7004), payments (7005), users (7001)
 * when there is no registry; AGORA_LOOKUP_TIMEOUT (catalog and cart during
 * POST /v1/orders, default 3s); AGORA_STEP_DEADLINE (each saga call,
 * default 5s); AGORA_SAGA_WORKERS (sagas run at once, default 8);
 * AGORA_SAGA_BACKOFF (first retry delay, 200ms) and AGORA_SAGA_BACKOFF_MAX
 * (30s); the breakers' AGORA_BREAKER_* as in agora-cart. Each may be given
 * for this service alone as AGORA_ORDERS_*.
 */
#include <string.h>

#include "orders.h"

#ifndef AGORA_ORDERS_SCHEMA_DIR
#define AGORA_ORDERS_SCHEMA_DIR "services/orders/schema"
#endif

orders_ctx g_ord = {
    .wait_mu = PTHREAD_MUTEX_INITIALIZER,
    .wait_cv = PTHREAD_COND_INITIALIZER,
};

static void start_sagas(void *ud)
{
    if (ag_saga_engine_start(g_ord.sagas) < 0) ag_error("the saga engine did not start");
}

/* Before the store closes: steps in flight finish and record their result. */
static void stop_sagas(void *ud)
{
    ag_saga_engine_stop(g_ord.sagas);
}

static int config(ag_service *svc)
{
    int rc = 0;
    rc |= ag_config_str("AGORA_CLIENT_SECRET", "", &g_ord.client_secret);
    rc |= ag_config_duration_ms("AGORA_LOOKUP_TIMEOUT", 3000, &g_ord.lookup_timeout_ms);
    rc |= ag_config_duration_ms("AGORA_STEP_DEADLINE", 5000, &g_ord.step_deadline_ms);
    if (rc < 0) return AG_ECONFIG;
    if (g_ord.lookup_timeout_ms == 0) g_ord.lookup_timeout_ms = 1;
    if (g_ord.step_deadline_ms == 0) g_ord.step_deadline_ms = 1;
    if (!*g_ord.client_secret)
        ag_warn("AGORA_CLIENT_SECRET is not set: the checkout saga cannot call inventory or "
                "payments until it is");
    return 0;
}

/* The checkout saga's engine on the service's store; it runs while the
 * service does (started once serving, stopped when the drain begins). */
static int init(ag_service *svc)
{
    uint64_t backoff_ms, backoff_max_ms;
    long long workers;
    int rc = 0;
    rc |= ag_config_int("AGORA_SAGA_WORKERS", 8, 1, 256, &workers);
    rc |= ag_config_duration_ms("AGORA_SAGA_BACKOFF", 200, &backoff_ms);
    rc |= ag_config_duration_ms("AGORA_SAGA_BACKOFF_MAX", 30000, &backoff_max_ms);
    if (rc < 0) return AG_ECONFIG;
    rc = ag_saga_engine_new(&(ag_saga_opts){.store = g_ord.store,
                                            .workers = (int)workers,
                                            .backoff_ms = backoff_ms ? backoff_ms : 1,
                                            .backoff_max_ms = backoff_max_ms,
                                            .metrics = ag_service_metrics(svc),
                                            .service = "orders"},
                            &g_ord.sagas);
    if (rc == 0) rc = checkout_register();
    if (rc < 0) return rc;
    ag_service_on_start(svc, start_sagas, NULL);
    ag_service_on_drain(svc, stop_sagas, NULL);
    return 0;
}

static void cleanup(void)
{
    ag_saga_engine_free(g_ord.sagas); /* stopped already when it ran */
}

static const char *const k_publishes[] = {
    "order.created", "order.confirmed", "order.cancelled", "order.shipped", "order.delivered", NULL,
};

static ag_auth *s_auth;

static const ag_service_def k_orders = {
    .name = "orders",
    .port = 7003,
    .config = config,
    .schema_dir = AGORA_ORDERS_SCHEMA_DIR,
    .store = &g_ord.store,
    .bus = &g_ord.bus,
    .subscribe = orders_subscribe,
    .publishes = k_publishes,
    .auth = &s_auth,
    .peers = (const ag_peer_def[]){{.name = "catalog",
                                    .default_url = "http://127.0.0.1:7002",
                                    .out = &g_ord_peers[PEER_CATALOG],
                                    .breaker_min_calls = 10},
                                   {.name = "cart",
                                    .default_url = "http://127.0.0.1:7007",
                                    .out = &g_ord_peers[PEER_CART],
                                    .breaker_min_calls = 10},
                                   {.name = "inventory",
                                    .default_url = "http://127.0.0.1:7004",
                                    .out = &g_ord_peers[PEER_INVENTORY],
                                    .breaker_min_calls = 10},
                                   {.name = "payments",
                                    .default_url = "http://127.0.0.1:7005",
                                    .out = &g_ord_peers[PEER_PAYMENTS],
                                    .breaker_min_calls = 10},
                                   {.name = "users",
                                    .default_url = "http://127.0.0.1:7001",
                                    .out = &g_ord_peers[PEER_USERS],
                                    .breaker_min_calls = 10},
                                   {.name = NULL}},
    .init = init,
    .routes = orders_routes,
    .openapi = orders_openapi_json,
    .cleanup = cleanup,
};

int main(void)
{
    return ag_service_main(&k_orders);
}
