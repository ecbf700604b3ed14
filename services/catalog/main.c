/*
 * agora-catalog — products, categories, search, reviews and ratings
 * (DESIGN.md §1; port 7002). The API is in routes.c and README.md.
 *
 * Wiring, top to bottom: configuration, the store and its migrations, the
 * bus and the order.confirmed subscription (events.c), the token verifier
 * with its middleware (ag_service_use_auth: tokens are checked against
 * agora-users' JWKS, fetched over HTTP and cached; nothing trusts a header
 * for identity) and the routes.
 *
 * Environment: AGORA_DB, AGORA_BUS, PORT (7002) as for every service;
 * AGORA_JWKS_URL, AGORA_JWT_* as in agora/peer.h; AGORA_SCHEMA_DIR (the
 * migrations; default the source tree's schema/).
 */
#include "agora/peer.h"
#include "catalog.h"

#ifndef AGORA_CATALOG_SCHEMA_DIR
#define AGORA_CATALOG_SCHEMA_DIR "services/catalog/schema"
#endif

catalog_ctx g_catalog;

static const char *const k_publishes[] = {
    "product.created",       "product.updated", "product.deleted",
    "product.price_updated", "review.created",  NULL,
};

static ag_auth *s_auth;

static const ag_service_def k_catalog = {
    .name = "catalog",
    .port = 7002,
    .schema_dir = AGORA_CATALOG_SCHEMA_DIR,
    .store = &g_catalog.store,
    .bus = &g_catalog.bus,
    .subscribe = catalog_subscribe,
    .publishes = k_publishes,
    .auth = &s_auth,
    .routes = catalog_routes,
    .openapi = catalog_openapi_json,
};

int main(void)
{
    return ag_service_main(&k_catalog);
}
