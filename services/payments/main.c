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

static int config(ag_service *svc)
{
    int rc = ag_config_duration_ms("AGORA_PROVIDER_TIMEOUT", 10000, &g_pay.provider_timeout_ms);
    if (g_pay.provider_timeout_ms == 0) g_pay.provider_timeout_ms = 1;
    return rc;
}

static const char *const k_publishes[] = {
    "payment.succeeded",
    "payment.failed",
    "payment.refunded",
    NULL,
};

static ag_auth *s_auth;

static const ag_service_def k_payments = {
    .name = "payments",
    .port = 7005,
    .config = config,
    .schema_dir = AGORA_PAYMENTS_SCHEMA_DIR,
    .store = &g_pay.store,
    .bus = &g_pay.bus,
    .publishes = k_publishes,
    .auth = &s_auth,
    .routes = payments_routes,
    .openapi = payments_openapi_json,
};

int main(void)
{
    return ag_service_main(&k_payments);
}
