/*
 * agora-inventory — stock, reservations and low-stock alerts (DESIGN.md §1;
 * port 7004). The API is in routes.c and README.md.
 *
 * Wiring, top to bottom: configuration, the store and its migrations, the
 * bus and its subscriptions (events.c: product.created, product.deleted),
 * the token verifier (agora-users' JWKS, fetched over HTTP and cached), the
 * auth middleware and the routes.
 *
 * Environment: AGORA_DB, AGORA_BUS, PORT (7004) as for every service;
 * AGORA_JWKS_URL (default http://127.0.0.1:7001/.well-known/jwks.json),
 * AGORA_JWT_ISSUER (agora-users), AGORA_JWT_AUDIENCE (agora),
 * AGORA_JWT_LEEWAY (clock skew allowed on exp/nbf, default 30s),
 * AGORA_SCHEMA_DIR (the migrations; default the source tree's schema/).
 */
#include <string.h>

#include "inventory.h"

#ifndef AGORA_INVENTORY_SCHEMA_DIR
#define AGORA_INVENTORY_SCHEMA_DIR "services/inventory/schema"
#endif

inv_ctx g_inv;

int main(void)
{
    ag_service *svc;
    if (ag_service_new("inventory", 7004, &svc) < 0) return 2;
    const char *schema, *jwks_url, *issuer, *audience;
    uint64_t leeway_ms;
    int rc = 0;
    rc |= ag_config_str("AGORA_SCHEMA_DIR", AGORA_INVENTORY_SCHEMA_DIR, &schema);
    rc |= ag_config_str("AGORA_JWKS_URL", "http://127.0.0.1:7001/.well-known/jwks.json", &jwks_url);
    rc |= ag_config_str("AGORA_JWT_ISSUER", "agora-users", &issuer);
    rc |= ag_config_str("AGORA_JWT_AUDIENCE", "agora", &audience);
    rc |= ag_config_duration_ms("AGORA_JWT_LEEWAY", 30000, &leeway_ms);
    if (rc < 0 || ag_service_use_store(svc, schema, &g_inv.store) < 0 ||
        ag_service_use_bus(svc, &g_inv.bus) < 0 || inventory_subscribe(g_inv.bus) < 0 ||
        ag_http_client_new(NULL, &g_inv.http) < 0 ||
        ag_jwks_client_new(jwks_url, g_inv.http, 0, &g_inv.jwks) < 0) {
        ag_jwks_client_free(g_inv.jwks);
        ag_http_client_free(g_inv.http);
        ag_service_free(svc);
        return 2;
    }
    g_inv.auth.jwks = g_inv.jwks;
    g_inv.auth.policy.iss = issuer;
    g_inv.auth.policy.aud = audience;
    g_inv.auth.policy.leeway_s = (int64_t)(leeway_ms / 1000);
    ag_router *r = ag_service_router(svc);
    ag_router_use(r, ag_auth_middleware, &g_inv.auth);
    inventory_routes(r);
    ag_service_set_openapi(svc, inventory_openapi_json);
    rc = ag_service_run(svc);
    ag_service_free(svc);
    ag_jwks_client_free(g_inv.jwks);
    ag_http_client_free(g_inv.http);
    return rc == 0 ? 0 : 1;
}
