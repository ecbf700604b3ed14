/*
 * agora-payments — charges, refunds and the payment providers behind them
 * (DESIGN.md §1; port 7005). The API is in routes.c and README.md, the
 * providers in provider.h and providers.c.
 *
 * Wiring, top to bottom: configuration, the store and its migrations, the
 * bus (it publishes payment.* through the outbox and consumes nothing), the
 * token verifier with its middleware (ag_service_use_auth: agora-users'
 * JWKS, fetched over HTTP and cached) and the routes.
 *
 * Environment: AGORA_DB, AGORA_BUS, PORT (7005) as for every service;
 * AGORA_JWKS_URL, AGORA_JWT_* as in agora/peer.h; AGORA_PROVIDER_TIMEOUT
 * (the most one provider call may take, default 10s; the request's own
 * deadline, from X-Agora-Deadline-Ms, may shorten it). Each may be given
 * for this service alone as AGORA_PAYMENTS_*
 * (AGORA_PAYMENTS_PROVIDER_TIMEOUT=300ms). AGORA_SCHEMA_DIR: the
 * migrations (default the source tree's schema/).
 */
#include "agora/peer.h"
#include "payments.h"

#ifndef AGORA_PAYMENTS_SCHEMA_DIR
#define AGORA_PAYMENTS_SCHEMA_DIR "services/payments/schema"
#endif

payments_ctx g_pay;

int main(void)
{
    ag_service *svc;
    if (ag_service_new("payments", 7005, &svc) < 0) return 2;
    const char *schema;
    ag_auth *auth;
    int rc = 0;
    rc |= ag_config_str("AGORA_SCHEMA_DIR", AGORA_PAYMENTS_SCHEMA_DIR, &schema);
    rc |= ag_config_duration_ms("AGORA_PROVIDER_TIMEOUT", 10000, &g_pay.provider_timeout_ms);
    if (g_pay.provider_timeout_ms == 0) g_pay.provider_timeout_ms = 1;
    if (rc < 0 || ag_service_use_store(svc, schema, &g_pay.store) < 0 ||
        ag_service_use_bus(svc, &g_pay.bus) < 0 || ag_service_use_auth(svc, 0, &auth) < 0) {
        ag_service_free(svc);
        return 2;
    }
    payments_routes(ag_service_router(svc));
    ag_service_set_openapi(svc, payments_openapi_json);
    rc = ag_service_run(svc);
    ag_service_free(svc);
    return rc == 0 ? 0 : 1;
}
