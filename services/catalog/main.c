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

int main(void)
{
    ag_service *svc;
    if (ag_service_new("catalog", 7002, &svc) < 0) return 2;
    const char *schema;
    ag_auth *auth;
    if (ag_config_str("AGORA_SCHEMA_DIR", AGORA_CATALOG_SCHEMA_DIR, &schema) < 0 ||
        ag_service_use_store(svc, schema, &g_catalog.store) < 0 ||
        ag_service_use_bus(svc, &g_catalog.bus) < 0 || catalog_subscribe(g_catalog.bus) < 0 ||
        ag_service_use_auth(svc, 0, &auth) < 0) {
        ag_service_free(svc);
        return 2;
    }
    catalog_routes(ag_service_router(svc));
    ag_service_set_openapi(svc, catalog_openapi_json);
    int rc = ag_service_run(svc);
    ag_service_free(svc);
    return rc == 0 ? 0 : 1;
}
