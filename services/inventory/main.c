/*
 * agora-inventory — stock, reservations and low-stock alerts (DESIGN.md §1;
 * port 7004). The API is in routes.c and README.md.
 *
 * Wiring, top to bottom: configuration, the store and its migrations, the
 * bus and its subscriptions (events.c: product.created, product.deleted),
 * the token verifier with its middleware (ag_service_use_auth: agora-users'
 * JWKS, fetched over HTTP and cached), the routes, and the gRPC methods
 * (grpc.c: agora.inventory.v1.InventoryService on port 7104).
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

static const char *const k_publishes[] = {
    "inventory.reserved",
    "inventory.reservation_failed",
    "inventory.released",
    "inventory.low_stock",
    NULL,
};

ag_auth *g_inv_auth;

static const ag_service_def k_inventory = {
    .name = "inventory",
    .port = 7004,
    .schema_dir = AGORA_INVENTORY_SCHEMA_DIR,
    .store = &g_inv.store,
    .bus = &g_inv.bus,
    .subscribe = inventory_subscribe,
    .publishes = k_publishes,
    .auth = &g_inv_auth,
    .routes = inventory_routes,
    .openapi = inventory_openapi_json,
    .grpc = inventory_grpc_methods,
    .grpc_name = "agora.inventory.v1.InventoryService",
};

int main(void)
{
    return ag_service_main(&k_inventory);
}
