/*
 * agora-inventory — stock, reservations and low-stock alerts (DESIGN.md §1;
 * port 7004). The API is in routes.c and README.md.
 *
 * Wiring, top to bottom: configuration, the store and its migrations, the
 * bus and its subscriptions (events.c: product.created, product.deleted),
 * the token verifier with its middleware (ag_service_use_auth: agora-users'
 * JWKS, fetched over HTTP and cached) and the routes.
 *
 * Environment: AGORA_DB, AGORA_BUS, PORT (7004) as for every service;
 * AGORA_JWKS_URL, AGORA_JWT_* as in agora/peer.h; AGORA_SCHEMA_DIR (the
 * migrations; default the source tree's schema/).
 */
#include "agora/peer.h"
#include "inventory.h"

#ifndef AGORA_INVENTORY_SCHEMA_DIR
#define AGORA_INVENTORY_SCHEMA_DIR "services/inventory/schema"
#endif

inv_ctx g_inv;

int main(void)
{
    ag_service *svc;
    if (ag_service_new("inventory", 7004, &svc) < 0) return 2;
    const char *schema;
    ag_auth *auth;
    if (ag_config_str("AGORA_SCHEMA_DIR", AGORA_INVENTORY_SCHEMA_DIR, &schema) < 0 ||
        ag_service_use_store(svc, schema, &g_inv.store) < 0 ||
        ag_service_use_bus(svc, &g_inv.bus) < 0 || inventory_subscribe(g_inv.bus) < 0 ||
        ag_service_use_auth(svc, 0, &auth) < 0) {
        ag_service_free(svc);
        return 2;
    }
    inventory_routes(ag_service_router(svc));
    ag_service_set_openapi(svc, inventory_openapi_json);
    int rc = ag_service_run(svc);
    ag_service_free(svc);
    return rc == 0 ? 0 : 1;
}
