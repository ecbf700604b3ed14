/*
 * endpoints.c — the built-in /health, /ready and /metrics of every service.
 *
 * /health answers on the I/O loop (it proves the process serves requests);
 * /ready runs the service's checks on a worker since they may block on a
 * store or a broker; /metrics renders on the loop (it only reads atomics).
 */
#include "agora/config.h"
#include "agora/log.h"
#include "agora/service.h"

int ag__service_ready(ag_service *s, json_t *checks);

static void health(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_service *s = ud;
    /* The version is the one the service registers with (AGORA_VERSION). */
    const char *v = ag_config_raw("AGORA_VERSION");
    json_t *body = json_pack("{s:s, s:s, s:s}", "status", "ok", "service", ag_service_name(s),
                             "version", v && *v ? v : "dev");
    ag_res_json(res, 200, body);
}

static void ready(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_service *s = ud;
    json_t *checks = json_object();
    int rc = ag__service_ready(s, checks);
    json_t *body = json_pack("{s:s, s:s, s:o}", "status", rc == 0 ? "ready" : "unavailable",
                             "service", ag_service_name(s), "checks", checks);
    if (rc != 0) ag_res_header(res, "Retry-After", "1");
    ag_res_json(res, rc == 0 ? 200 : 503, body);
}

static void metrics(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_service *s = ud;
    ag_buf out;
    ag_buf_init(&out, 0);
    ag_metrics_render(ag_service_metrics(s), &out);
    size_t len;
    char *text = ag_buf_detach(&out, &len);
    ag_res_body_take(res, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

static void openapi(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_service *s = ud;
    char title[96];
    snprintf(title, sizeof title, "agora-%s", ag_service_name(s));
    ag_res_json(res, 200, ag_router_openapi(ag_service_router(s), title, "1.0.0"));
}

void ag__obs_register_openapi(ag_router *router, ag_service *svc);
void ag__obs_register_openapi(ag_router *router, ag_service *svc)
{
    /* Only when the service did not register a richer document itself. */
    ag_route_match m;
    if (ag_router_match(router, "GET", "/openapi.json", &m) == 0) return;
    ag_router_add(router, "GET", "/openapi.json", openapi, svc, 0);
}

void ag_obs_register_endpoints(ag_router *router, ag_service *svc)
{
    ag_router_add(router, "GET", "/health", health, svc, AG_ROUTE_INLINE);
    ag_router_add(router, "GET", "/ready", ready, svc, 0);
    ag_router_add(router, "GET", "/metrics", metrics, svc, AG_ROUTE_INLINE);
}
