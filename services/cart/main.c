/*
 * agora-cart — carts (DESIGN.md §1; port 7007). The API is in routes.c and
 * README.md.
 *
 * Wiring, top to bottom: configuration, the store and its migrations, the
 * bus with its two subscriptions and the one event it publishes (events.c), the token verifier with its
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

static char *s_catalog_url;

static int config(ag_service *svc)
{
    const char *catalog_url;
    int rc = 0;
    rc |= ag_config_str("AGORA_CATALOG_URL", "http://127.0.0.1:7002", &catalog_url);
    rc |= ag_config_duration_ms("AGORA_CATALOG_TIMEOUT", 2000, &g_cart.catalog_timeout_ms);
    if (rc < 0) return AG_ECONFIG;
    s_catalog_url = ag_strdup(catalog_url);
    size_t n = strlen(s_catalog_url);
    while (n > 0 && s_catalog_url[n - 1] == '/')
        s_catalog_url[--n] = '\0';
    g_cart.catalog_url = s_catalog_url;
    if (g_cart.catalog_timeout_ms == 0) g_cart.catalog_timeout_ms = 1;
    return 0;
}

/* agora-catalog is called through cart's own client (catalog_client.c:
 * batched lookups with their own timeout), behind a breaker of its own. */
static int init(ag_service *svc)
{
    ag_breaker_opts bo;
    int rc = ag_breaker_opts_from_env(&bo, ag_service_metrics(svc));
    if (rc < 0) return rc;
    g_cart.http = ag_service_http(svc);
    g_cart.catalog_breaker = ag_breaker_new("catalog", &bo);
    const char *reg = ag_config_raw("AGORA_REGISTRY");
    if (reg && strcmp(reg, "static") != 0) { /* find catalog through the registry */
        g_cart.disc = ag_service_discovery(svc);
        if (g_cart.disc) ag_discovery_watch(g_cart.disc, "catalog");
    }
    return 0;
}

static void cleanup(void)
{
    ag_breaker_free(g_cart.catalog_breaker);
    ag_free(s_catalog_url);
}

static ag_auth *s_auth;

static const char *const k_publishes[] = {"cart.item_added", NULL};

static const ag_service_def k_cart = {
    .name = "cart",
    .port = 7007,
    .config = config,
    .schema_dir = AGORA_CART_SCHEMA_DIR,
    .store = &g_cart.store,
    .bus = &g_cart.bus,
    .subscribe = cart_subscribe,
    .publishes = k_publishes,
    .auth = &s_auth,
    .init = init,
    .routes = cart_routes,
    .openapi = cart_openapi_json,
    .cleanup = cleanup,
};

int main(void)
{
    return ag_service_main(&k_cart);
}
