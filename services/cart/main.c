/*
 * agora-cart — carts (DESIGN.md §1; port 7007). The API is in routes.c and
 * README.md.
 *
 * Wiring, top to bottom: configuration, the store and its migrations, the
 * bus and its two subscriptions (events.c), the HTTP client and the
 * "catalog" circuit breaker used to ask agora-catalog about products
 * (catalog_client.c), the token verifier (agora-users' JWKS, fetched over
 * HTTP and cached; nothing trusts a header for identity), the auth
 * middleware and the routes.
 *
 * Environment: AGORA_DB, AGORA_BUS, PORT (7007) as for every service;
 * AGORA_JWKS_URL (default http://127.0.0.1:7001/.well-known/jwks.json),
 * AGORA_JWT_ISSUER (agora-users), AGORA_JWT_AUDIENCE (agora),
 * AGORA_JWT_LEEWAY (clock skew allowed on exp/nbf, default 30s),
 * AGORA_CATALOG_URL (default http://127.0.0.1:7002; with AGORA_REGISTRY set,
 * catalog's instances come from the registry), AGORA_CATALOG_TIMEOUT
 * (the most one request spends on catalog lookups, default 2s), and the
 * breaker: AGORA_BREAKER_OPEN (first open wait, default 5s),
 * AGORA_BREAKER_MAX_OPEN (60s), AGORA_BREAKER_WINDOW (20 calls),
 * AGORA_BREAKER_MIN_CALLS (5), AGORA_BREAKER_PROBES (3). Each may be given
 * for this service alone as AGORA_CART_* (AGORA_CART_BREAKER_OPEN=500ms).
 * AGORA_SCHEMA_DIR: the migrations (default the source tree's schema/).
 */
#include <string.h>

#include "cart.h"

#ifndef AGORA_CART_SCHEMA_DIR
#define AGORA_CART_SCHEMA_DIR "services/cart/schema"
#endif

cart_ctx g_cart;

static int breaker_config(ag_service *svc, ag_breaker_opts *o)
{
    long long window, min_calls, probes;
    int rc = 0;
    memset(o, 0, sizeof *o);
    rc |= ag_config_duration_ms("AGORA_BREAKER_OPEN", 5000, &o->open_ms);
    rc |= ag_config_duration_ms("AGORA_BREAKER_MAX_OPEN", 60000, &o->max_open_ms);
    rc |= ag_config_int("AGORA_BREAKER_WINDOW", 20, 1, 1000, &window);
    rc |= ag_config_int("AGORA_BREAKER_MIN_CALLS", 5, 1, 1000, &min_calls);
    rc |= ag_config_int("AGORA_BREAKER_PROBES", 3, 1, 100, &probes);
    if (rc < 0) return AG_ECONFIG;
    if (o->open_ms == 0) o->open_ms = 1; /* zero means "the default" to the breaker */
    if (o->max_open_ms < o->open_ms) o->max_open_ms = o->open_ms;
    o->window = (int)window;
    o->min_calls = (int)(min_calls < window ? min_calls : window);
    o->probes = (int)probes;
    o->metrics = ag_service_metrics(svc);
    return 0;
}

int main(void)
{
    ag_service *svc;
    if (ag_service_new("cart", 7007, &svc) < 0) return 2;
    const char *schema, *jwks_url, *issuer, *audience, *catalog_url;
    uint64_t leeway_ms;
    ag_breaker_opts bo;
    char *url = NULL;
    int rc = 0;
    rc |= ag_config_str("AGORA_SCHEMA_DIR", AGORA_CART_SCHEMA_DIR, &schema);
    rc |= ag_config_str("AGORA_JWKS_URL", "http://127.0.0.1:7001/.well-known/jwks.json", &jwks_url);
    rc |= ag_config_str("AGORA_JWT_ISSUER", "agora-users", &issuer);
    rc |= ag_config_str("AGORA_JWT_AUDIENCE", "agora", &audience);
    rc |= ag_config_duration_ms("AGORA_JWT_LEEWAY", 30000, &leeway_ms);
    rc |= ag_config_str("AGORA_CATALOG_URL", "http://127.0.0.1:7002", &catalog_url);
    rc |= ag_config_duration_ms("AGORA_CATALOG_TIMEOUT", 2000, &g_cart.catalog_timeout_ms);
    if (rc == 0) rc = breaker_config(svc, &bo);
    if (rc == 0) {
        url = ag_strdup(catalog_url);
        size_t n = strlen(url);
        while (n > 0 && url[n - 1] == '/')
            url[--n] = '\0';
        g_cart.catalog_url = url;
        if (g_cart.catalog_timeout_ms == 0) g_cart.catalog_timeout_ms = 1;
    }
    if (rc < 0 || ag_service_use_store(svc, schema, &g_cart.store) < 0 ||
        ag_service_use_bus(svc, &g_cart.bus) < 0 || cart_subscribe(g_cart.bus) < 0 ||
        ag_http_client_new(NULL, &g_cart.http) < 0 ||
        ag_jwks_client_new(jwks_url, g_cart.http, 0, &g_cart.jwks) < 0) {
        ag_jwks_client_free(g_cart.jwks);
        ag_http_client_free(g_cart.http);
        ag_service_free(svc);
        ag_free(url);
        return 2;
    }
    g_cart.catalog_breaker = ag_breaker_new("catalog", &bo);
    const char *reg = ag_config_raw("AGORA_REGISTRY");
    if (reg && strcmp(reg, "static") != 0) { /* find catalog through the registry */
        g_cart.disc = ag_service_discovery(svc);
        if (g_cart.disc) ag_discovery_watch(g_cart.disc, "catalog");
    }
    g_cart.auth.jwks = g_cart.jwks;
    g_cart.auth.policy.iss = issuer;
    g_cart.auth.policy.aud = audience;
    g_cart.auth.policy.leeway_s = (int64_t)(leeway_ms / 1000);
    ag_router *r = ag_service_router(svc);
    ag_router_use(r, ag_auth_middleware, &g_cart.auth);
    cart_routes(r);
    ag_service_set_openapi(svc, cart_openapi_json);
    rc = ag_service_run(svc);
    ag_service_free(svc);
    ag_breaker_free(g_cart.catalog_breaker);
    ag_jwks_client_free(g_cart.jwks);
    ag_http_client_free(g_cart.http);
    ag_free(url);
    return rc == 0 ? 0 : 1;
}
