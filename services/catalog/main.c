/*
 * agora-catalog — products, categories, search, reviews and ratings
 * (DESIGN.md §1; port 7002). The API is in routes.c and README.md.
 *
 * Wiring, top to bottom: configuration, the store and its migrations, the
 * bus and the order.confirmed subscription (events.c), the token verifier
 * (tokens are checked against agora-users' JWKS, fetched over HTTP and
 * cached; nothing trusts a header for identity), the auth middleware and the
 * routes.
 *
 * Environment: AGORA_DB, AGORA_BUS, PORT (7002) as for every service;
 * AGORA_JWKS_URL (default http://127.0.0.1:7001/.well-known/jwks.json),
 * AGORA_JWT_ISSUER (agora-users), AGORA_JWT_AUDIENCE (agora),
 * AGORA_SCHEMA_DIR (the migrations; default the source tree's schema/).
 */
#include "catalog.h"

#ifndef AGORA_CATALOG_SCHEMA_DIR
#define AGORA_CATALOG_SCHEMA_DIR "services/catalog/schema"
#endif

catalog_ctx g_catalog;

int main(void)
{
    ag_service *svc;
    if (ag_service_new("catalog", 7002, &svc) < 0) return 2;
    const char *schema, *jwks_url, *issuer, *audience;
    int rc = 0;
    rc |= ag_config_str("AGORA_SCHEMA_DIR", AGORA_CATALOG_SCHEMA_DIR, &schema);
    rc |= ag_config_str("AGORA_JWKS_URL", "http://127.0.0.1:7001/.well-known/jwks.json", &jwks_url);
    rc |= ag_config_str("AGORA_JWT_ISSUER", "agora-users", &issuer);
    rc |= ag_config_str("AGORA_JWT_AUDIENCE", "agora", &audience);
    if (rc < 0 || ag_service_use_store(svc, schema, &g_catalog.store) < 0 ||
        ag_service_use_bus(svc, &g_catalog.bus) < 0 || catalog_subscribe(g_catalog.bus) < 0 ||
        ag_http_client_new(NULL, &g_catalog.http) < 0 ||
        ag_jwks_client_new(jwks_url, g_catalog.http, 0, &g_catalog.jwks) < 0) {
        ag_jwks_client_free(g_catalog.jwks);
        ag_http_client_free(g_catalog.http);
        ag_service_free(svc);
        return 2;
    }
    g_catalog.auth.jwks = g_catalog.jwks;
    g_catalog.auth.policy.iss = issuer;
    g_catalog.auth.policy.aud = audience;
    g_catalog.auth.policy.leeway_s = 30;
    ag_router *r = ag_service_router(svc);
    ag_router_use(r, ag_auth_middleware, &g_catalog.auth);
    catalog_routes(r);
    ag_service_set_openapi(svc, catalog_openapi_json);
    rc = ag_service_run(svc);
    ag_service_free(svc);
    ag_jwks_client_free(g_catalog.jwks);
    ag_http_client_free(g_catalog.http);
    return rc == 0 ? 0 : 1;
}
