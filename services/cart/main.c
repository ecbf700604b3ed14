/*
 * agora-cart — carts (DESIGN.md §1; port 7007). The API is in routes.c and
 * README.md.
 *
 * Wiring, top to bottom: configuration, the store and its migrations, the
 * bus and its two subscriptions (events.c), the token verifier with its
 * middleware (ag_service_use_auth: agora-users' JWKS, fetched over HTTP and
 * cached; nothing trusts a header for identity), the "catalog" circuit
 * breaker used to ask agora-catalog about products on the service's HTTP
 * client (catalog_client.c) and the routes.
 *
 * Environment: AGORA_DB, AGORA_BUS, PORT (7007) as for every service;
 * AGORA_JWKS_URL, AGORA_JWT_* as in agora/peer.h; AGORA_CATALOG_URL
 * (default http://127.0.0.1:7002; with AGORA_REGISTRY set, catalog's
 * instances come from the registry), AGORA_CATALOG_TIMEOUT (the most one
 * request spends on catalog lookups, default 2s), and the breaker's
 * AGORA_BREAKER_* (ag_breaker_opts_from_env in agora/peer.h: first open
 * wait 5s, max open 60s, window 20 calls, min calls 5, probes 3). Each may
 * be given for this service alone as AGORA_CART_*
 * (AGORA_CART_BREAKER_OPEN=500ms). AGORA_SCHEMA_DIR: the migrations
 * (default the source tree's schema/).
 */
#include <string.h>

#include "agora/peer.h"
#include "cart.h"

#ifndef AGORA_CART_SCHEMA_DIR
#define AGORA_CART_SCHEMA_DIR "services/cart/schema"
#endif

cart_ctx g_cart;

int main(void)
{
    ag_service *svc;
    if (ag_service_new("cart", 7007, &svc) < 0) return 2;
    const char *schema, *catalog_url;
    ag_breaker_opts bo;
    ag_auth *auth;
    char *url = NULL;
    int rc = 0;
    rc |= ag_config_str("AGORA_SCHEMA_DIR", AGORA_CART_SCHEMA_DIR, &schema);
    rc |= ag_config_str("AGORA_CATALOG_URL", "http://127.0.0.1:7002", &catalog_url);
    rc |= ag_config_duration_ms("AGORA_CATALOG_TIMEOUT", 2000, &g_cart.catalog_timeout_ms);
    if (rc == 0) rc = ag_breaker_opts_from_env(&bo, ag_service_metrics(svc));
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
        ag_service_use_auth(svc, 0, &auth) < 0) {
        ag_service_free(svc);
        ag_free(url);
        return 2;
    }
    g_cart.http = ag_service_http(svc);
    g_cart.catalog_breaker = ag_breaker_new("catalog", &bo);
    const char *reg = ag_config_raw("AGORA_REGISTRY");
    if (reg && strcmp(reg, "static") != 0) { /* find catalog through the registry */
        g_cart.disc = ag_service_discovery(svc);
        if (g_cart.disc) ag_discovery_watch(g_cart.disc, "catalog");
    }
    cart_routes(ag_service_router(svc));
    ag_service_set_openapi(svc, cart_openapi_json);
    rc = ag_service_run(svc);
    ag_service_free(svc);
    ag_breaker_free(g_cart.catalog_breaker);
    ag_free(url);
    return rc == 0 ? 0 : 1;
}
