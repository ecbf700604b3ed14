/*
 * agora-orders — orders and the checkout saga (DESIGN.md §1, §7; port
 * 7003). The API is in routes.c and README.md, the sagas in checkout.c.
 *
 * Wiring, top to bottom: configuration, the store and its migrations, the
 * bus (order.* through the outbox; user.deleted consumed), the HTTP client,
 * discovery or static peer URLs and one circuit breaker per peer, the saga
 * engine on the same store (started once the server runs, so resumed sagas
 * find every peer client ready; stopped before the store closes), the token
 * verifier, the auth middleware and the routes.
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

static const int k_default_port[PEER_COUNT] = {7002, 7007, 7004, 7005, 7001};

static int peers_config(ag_service *svc)
{
    ag_breaker_opts o;
    long long window, min_calls, probes;
    int rc = 0;
    memset(&o, 0, sizeof o);
    rc |= ag_config_duration_ms("AGORA_BREAKER_OPEN", 5000, &o.open_ms);
    rc |= ag_config_duration_ms("AGORA_BREAKER_MAX_OPEN", 60000, &o.max_open_ms);
    rc |= ag_config_int("AGORA_BREAKER_WINDOW", 20, 1, 1000, &window);
    rc |= ag_config_int("AGORA_BREAKER_MIN_CALLS", 10, 1, 1000, &min_calls);
    rc |= ag_config_int("AGORA_BREAKER_PROBES", 3, 1, 100, &probes);
    if (rc < 0) return AG_ECONFIG;
    if (o.open_ms == 0) o.open_ms = 1;
    if (o.max_open_ms < o.open_ms) o.max_open_ms = o.open_ms;
    o.window = (int)window;
    o.min_calls = (int)(min_calls < window ? min_calls : window);
    o.probes = (int)probes;
    o.metrics = ag_service_metrics(svc);
    for (int p = 0; p < PEER_COUNT; p++) {
        char var[64], def[64];
        const char *url;
        snprintf(var, sizeof var, "AGORA_%s_URL", peer_name((ord_peer)p));
        for (char *c = var; *c; c++)
            if (*c >= 'a' && *c <= 'z') *c = (char)(*c - 'a' + 'A');
        snprintf(def, sizeof def, "http://127.0.0.1:%d", k_default_port[p]);
        if (ag_config_str(var, def, &url) < 0) return AG_ECONFIG;
        g_ord.peer_url[p] = ag_strdup(url);
        size_t n = strlen(g_ord.peer_url[p]);
        while (n > 0 && g_ord.peer_url[p][n - 1] == '/')
            g_ord.peer_url[p][--n] = '\0';
        g_ord.breaker[p] = ag_breaker_new(peer_name((ord_peer)p), &o);
    }
    const char *reg = ag_config_raw("AGORA_REGISTRY");
    if (reg && strcmp(reg, "static") != 0) {
        g_ord.disc = ag_service_discovery(svc);
        for (int p = 0; g_ord.disc && p < PEER_COUNT; p++)
            ag_discovery_watch(g_ord.disc, peer_name((ord_peer)p));
    }
    return 0;
}

static void peers_free(void)
{
    for (int p = 0; p < PEER_COUNT; p++) {
        ag_breaker_free(g_ord.breaker[p]);
        ag_free(g_ord.peer_url[p]);
    }
}

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
    const char *schema, *jwks_url, *issuer, *audience;
    uint64_t leeway_ms, backoff_ms, backoff_max_ms;
    long long workers;
    int rc = 0;
    rc |= ag_config_str("AGORA_SCHEMA_DIR", AGORA_ORDERS_SCHEMA_DIR, &schema);
    rc |= ag_config_str("AGORA_JWKS_URL", "http://127.0.0.1:7001/.well-known/jwks.json", &jwks_url);
    rc |= ag_config_str("AGORA_JWT_ISSUER", "agora-users", &issuer);
    rc |= ag_config_str("AGORA_JWT_AUDIENCE", "agora", &audience);
    rc |= ag_config_duration_ms("AGORA_JWT_LEEWAY", 30000, &leeway_ms);
    rc |= ag_config_str("AGORA_CLIENT_ID", "orders", &g_ord.client_id);
    rc |= ag_config_str("AGORA_CLIENT_SECRET", "", &g_ord.client_secret);
    rc |= ag_config_duration_ms("AGORA_LOOKUP_TIMEOUT", 3000, &g_ord.lookup_timeout_ms);
    rc |= ag_config_duration_ms("AGORA_STEP_DEADLINE", 5000, &g_ord.step_deadline_ms);
    rc |= ag_config_int("AGORA_SAGA_WORKERS", 8, 1, 256, &workers);
    rc |= ag_config_duration_ms("AGORA_SAGA_BACKOFF", 200, &backoff_ms);
    rc |= ag_config_duration_ms("AGORA_SAGA_BACKOFF_MAX", 30000, &backoff_max_ms);
    if (rc == 0) rc = peers_config(svc);
    if (g_ord.lookup_timeout_ms == 0) g_ord.lookup_timeout_ms = 1;
    if (g_ord.step_deadline_ms == 0) g_ord.step_deadline_ms = 1;
    if (rc == 0 && !*g_ord.client_secret)
        ag_warn("AGORA_CLIENT_SECRET is not set: the checkout saga cannot call inventory or "
                "payments until it is");
    if (rc < 0 || ag_service_use_store(svc, schema, &g_ord.store) < 0 ||
        ag_service_use_bus(svc, &g_ord.bus) < 0 || orders_subscribe(g_ord.bus) < 0 ||
        ag_http_client_new(NULL, &g_ord.http) < 0 ||
        ag_jwks_client_new(jwks_url, g_ord.http, 0, &g_ord.jwks) < 0 ||
        ag_saga_engine_new(&(ag_saga_opts){.store = g_ord.store,
                                           .workers = (int)workers,
                                           .backoff_ms = backoff_ms ? backoff_ms : 1,
                                           .backoff_max_ms = backoff_max_ms},
                           &g_ord.sagas) < 0 ||
        checkout_register() < 0) {
        ag_saga_engine_free(g_ord.sagas);
        ag_jwks_client_free(g_ord.jwks);
        ag_http_client_free(g_ord.http);
        ag_service_free(svc);
        peers_free();
        return 2;
    }
    g_ord.auth.jwks = g_ord.jwks;
    g_ord.auth.policy.iss = issuer;
    g_ord.auth.policy.aud = audience;
    g_ord.auth.policy.leeway_s = (int64_t)(leeway_ms / 1000);
    ag_router *r = ag_service_router(svc);
    ag_router_use(r, ag_auth_middleware, &g_ord.auth);
    orders_routes(r);
    ag_service_set_openapi(svc, orders_openapi_json);
    ag_service_on_start(svc, start_sagas, NULL);
    ag_service_on_drain(svc, stop_sagas, NULL);
    rc = ag_service_run(svc);
    ag_saga_engine_stop(g_ord.sagas);
    ag_service_free(svc);
    ag_saga_engine_free(g_ord.sagas);
    ag_jwks_client_free(g_ord.jwks);
    ag_http_client_free(g_ord.http);
    peers_free();
    return rc == 0 ? 0 : 1;
}
