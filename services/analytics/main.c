/*
 * agora-analytics — the shop's and the chat's numbers for admins, a CQRS
 * read model built only from the event stream (seed 002's analytics
 * consumer, seed 001's admin dashboard; port 7008). The API is in routes.c
 * and README.md; what it consumes and how it folds is events.c.
 *
 * Wiring, top to bottom: the store and its migrations (the journal and the
 * projections), the bus and its subscriptions (events.c; it publishes
 * nothing), the token verifier with its middleware (agora/peer.h:
 * AGORA_JWKS_URL, AGORA_JWT_*) and the routes.
 *
 * Environment: AGORA_DB, AGORA_BUS, PORT (7008) as for every service;
 * AGORA_SCHEMA_DIR (the migrations; default the source tree's schema/).
 */
#include "analytics.h"

#ifndef AGORA_ANALYTICS_SCHEMA_DIR
#define AGORA_ANALYTICS_SCHEMA_DIR "services/analytics/schema"
#endif

an_ctx g_an;

static ag_auth *s_auth;

static const char *const k_publishes[] = {NULL};

static const ag_service_def k_analytics = {
    .name = "analytics",
    .port = 7008,
    .schema_dir = AGORA_ANALYTICS_SCHEMA_DIR,
    .store = &g_an.store,
    .bus = &g_an.bus,
    .subscribe = analytics_subscribe,
    .publishes = k_publishes,
    .auth = &s_auth,
    .routes = analytics_routes,
    .openapi = analytics_openapi_json,
};

int main(void)
{
    return ag_service_main(&k_analytics);
}
