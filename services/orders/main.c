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
    (void)ud;
    if (ag_saga_engine_start(g_ord.sagas) < 0) ag_error("the saga engine did not start");
}

/* Before the store closes: steps in flight finish and record their result. */
static void stop_sagas(void *ud)
{
    (void)ud;
    ag_saga_engine_stop(g_ord.sagas);
}

int main(void)
{
    ag_service *svc;
    if (ag_service_new("orders", 7003, &svc) < 0) return 2;
    const char *schema;
    uint64_t backoff_ms, backoff_max_ms;
    long long workers;
    ag_auth *auth;
    int rc = 0;
    rc |= ag_config_str("AGORA_SCHEMA_DIR", AGORA_ORDERS_SCHEMA_DIR, &schema);
    rc |= ag_config_str("AGORA_CLIENT_SECRET", "", &g_ord.client_secret);
    rc |= ag_config_duration_ms("AGORA_LOOKUP_TIMEOUT", 3000, &g_ord.lookup_timeout_ms);
    rc |= ag_config_duration_ms("AGORA_STEP_DEADLINE", 5000, &g_ord.step_deadline_ms);
    rc |= ag_config_int("AGORA_SAGA_WORKERS", 8, 1, 256, &workers);
    rc |= ag_config_duration_ms("AGORA_SAGA_BACKOFF", 200, &backoff_ms);
    rc |= ag_config_duration_ms("AGORA_SAGA_BACKOFF_MAX", 30000, &backoff_max_ms);
    if (rc == 0) rc = peers_open(svc);
    if (g_ord.lookup_timeout_ms == 0) g_ord.lookup_timeout_ms = 1;
    if (g_ord.step_deadline_ms == 0) g_ord.step_deadline_ms = 1;
    if (rc == 0 && !*g_ord.client_secret)
        ag_warn("AGORA_CLIENT_SECRET is not set: the checkout saga cannot call inventory or "
                "payments until it is");
    if (rc < 0 || ag_service_use_store(svc, schema, &g_ord.store) < 0 ||
        ag_service_use_bus(svc, &g_ord.bus) < 0 || orders_subscribe(g_ord.bus) < 0 ||
        ag_service_use_auth(svc, 0, &auth) < 0 ||
        ag_saga_engine_new(&(ag_saga_opts){.store = g_ord.store,
                                           .workers = (int)workers,
                                           .backoff_ms = backoff_ms ? backoff_ms : 1,
                                           .backoff_max_ms = backoff_max_ms,
                                           .metrics = ag_service_metrics(svc),
                                           .service = "orders"},
                           &g_ord.sagas) < 0 ||
        checkout_register() < 0) {
        ag_saga_engine_free(g_ord.sagas);
        ag_service_free(svc);
        return 2;
    }
    orders_routes(ag_service_router(svc));
    ag_service_set_openapi(svc, orders_openapi_json);
    ag_service_on_start(svc, start_sagas, NULL);
    ag_service_on_drain(svc, stop_sagas, NULL);
    rc = ag_service_run(svc);
    ag_saga_engine_stop(g_ord.sagas);
    ag_service_free(svc);
    ag_saga_engine_free(g_ord.sagas);
    return rc == 0 ? 0 : 1;
}
