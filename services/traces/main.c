/*
 * agora-traces — the embedded trace store (issue 14; port 4318, the
 * standard OTLP/HTTP port, so an exporter's default endpoint finds it).
 * Every service exports its spans here (OTEL_EXPORTER_OTLP_ENDPOINT, set by
 * config/agora.json); the ops console reads them back through the gateway
 * (/api/v1/traces, admins) and draws a trace's waterfall.
 *
 * Wiring, top to bottom: tracing of this process turned off (below), the
 * service, its bounds, the token verifier for the queries (agora/peer.h,
 * without its middleware: routes.c says why), the store, the routes and
 * their OpenAPI document. No database and no bus: traces live in memory
 * (store.c) and are gone when the process stops.
 *
 * Environment: PORT (4318), AGORA_HOST (127.0.0.1) as for every service;
 * AGORA_JWKS_URL, AGORA_JWT_* as in agora/peer.h; AGORA_TRACES_MAX_SPANS
 * (200000), AGORA_TRACES_MAX_BYTES (64MiB), AGORA_TRACES_MAX_BODY (8MiB).
 */
#include <stdlib.h>

#include "traces.h"

static size_t s_max_body;
static ag_auth *s_auth;

static int config(ag_service *svc)
{
    long long max_spans;
    size_t max_bytes;
    int rc = 0;
    rc |= ag_config_int("AGORA_TRACES_MAX_SPANS", TR_DEFAULT_MAX_SPANS, 1, 100000000, &max_spans);
    rc |= ag_config_size("AGORA_TRACES_MAX_BYTES", TR_DEFAULT_MAX_BYTES, &max_bytes);
    rc |= ag_config_size("AGORA_TRACES_MAX_BODY", TR_DEFAULT_MAX_BODY, &s_max_body);
    if (rc < 0) return AG_ECONFIG;
    if (max_bytes < ((size_t)64 << 10) || s_max_body < 1024 || s_max_body > ((size_t)1 << 30)) {
        ag_error("AGORA_TRACES_MAX_BYTES must be at least 64KiB, AGORA_TRACES_MAX_BODY "
                 "between 1KiB and 1GiB");
        return AG_ECONFIG;
    }
    tr_limits lim = {.max_spans = (size_t)max_spans, .max_bytes = max_bytes};
    tr_store_init(&lim, ag_service_metrics(svc));
    ag_info("trace store bounds", AG_FI("maxSpans", max_spans), AG_FI("maxBytes", max_bytes),
            AG_FI("maxBody", s_max_body));
    return 0;
}

/* The routes want the verifier, the body bound and the metrics. */
static int init(ag_service *svc)
{
    tr_routes(ag_service_router(svc), s_auth, s_max_body, ag_service_metrics(svc));
    return 0;
}

static const ag_service_def k_traces = {
    .name = "traces",
    .port = 4318,
    .config = config,
    .auth = &s_auth,
    .auth_flags = AG_AUTH_NO_MIDDLEWARE,
    .init = init,
    .openapi = traces_openapi_json,
    .cleanup = tr_store_release,
};

int main(void)
{
    /* The trace store must not trace itself: each export it received would
     * be a server span exported back to it, and so on. libagora's tracer
     * reads these variables in ag_service_new, and `agora up` gives every
     * component the same OTEL_EXPORTER_OTLP_ENDPOINT (this service's URL),
     * so they are put right before it runs. */
    setenv("OTEL_TRACES_SAMPLER", "always_off", 1);
    unsetenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    unsetenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    return ag_service_main(&k_traces);
}
