/*
 * main.c — agora-gateway: the edge of Agora (DESIGN.md §8), on port 8080.
 *
 * Wiring: the configuration file (AGORA_GATEWAY_CONFIG, default
 * config/gateway.json), discovery of upstream instances (AGORA_REGISTRY, or
 * static AGORA_<SERVICE>_URL), the JWKS of agora-users for tokens
 * (AGORA_JWKS_URL), rate limits (AGORA_RATELIMIT: memory, or redis://…),
 * web/ for static files (AGORA_WEB_DIR). Routes: the built-in /health,
 * /ready, /metrics; the admin API; GET /api/v1/dashboard; everything else goes
 * through the proxy (AG_ROUTE_ASYNC, on the loops; its body policy spools
 * the bodies of routes marked "spoolBody" to AGORA_HTTP_SPOOL_DIR). SIGHUP and
 * POST /admin/reload re-read the configuration.
 */
#include <stdio.h>
#include <string.h>

#include "agora/config.h"
#include "agora/log.h"
#include "gateway.h"

#define MAX_LOOPS 256

gw_gateway g_gw;

void gw_config_free_breakers(void);

/* ---- Configuration in force, per loop -------------------------------------- */

static void watch_upstreams(const gw_config *c)
{
    for (int i = 0; i < c->nups; i++)
        ag_discovery_watch(g_gw.disc, c->ups[i].name);
}

typedef struct swap {
    gw_loop *gl;
    gw_config *c; /* a reference, given to the loop */
} swap;

static void swap_on_loop(void *arg)
{
    swap *s = arg;
    if (s->gl->config != s->c) {
        gw_config_unref(s->gl->config);
        s->gl->config = s->c;
    } else {
        gw_config_unref(s->c);
    }
    ag_free(s);
}

int gw_reload(char *why, size_t why_len)
{
    pthread_mutex_lock(&g_gw.reload_mu);
    gw_config *old = atomic_load(&g_gw.config), *nc;
    int rc = gw_config_load(g_gw.config_path, old, g_gw.metrics, &nc, why, why_len);
    const char *v[1] = {rc == 0 ? "ok" : "invalid"};
    ag_series_inc(ag_metric_series(g_gw.m_reloads, v), 1);
    if (rc < 0) {
        pthread_mutex_unlock(&g_gw.reload_mu);
        ag_warn("configuration not reloaded", AG_FS("reason", why));
        return rc;
    }
    atomic_store(&g_gw.config, nc);
    for (int i = 0; i < g_gw.nloops; i++) {
        gw_loop *gl = &g_gw.loops[i];
        if (!gl->loop) continue; /* it will take the newest when it starts */
        swap *s = ag_malloc(sizeof *s);
        s->gl = gl;
        s->c = nc;
        gw_config_ref(nc);
        if (ag_loop_post(gl->loop, swap_on_loop, s) < 0) {
            gw_config_unref(nc);
            ag_free(s);
        }
    }
    gw_config_unref(old);
    watch_upstreams(nc);
    ag_info("configuration reloaded", AG_FS("source", nc->source),
            AG_FI("generation", (long long)nc->generation), AG_FI("routes", nc->nroutes));
    pthread_mutex_unlock(&g_gw.reload_mu);
    return 0;
}

/* A loop's state, made on its first request (on that loop's thread). */
gw_loop *gw_loop_init(ag_loop *loop)
{
    int i = ag_loop_index(loop);
    gw_loop *gl = &g_gw.loops[i];
    if (gl->loop) return gl;
    pthread_mutex_lock(&g_gw.reload_mu);
    gl->config = atomic_load(&g_gw.config);
    gw_config_ref(gl->config);
    gl->loop = loop;
    gw_proxy_loop_init(gl);
    if (i + 1 > g_gw.nloops) g_gw.nloops = i + 1;
    pthread_mutex_unlock(&g_gw.reload_mu);
    return gl;
}

/* Runs for every route; only handlers on the loop (the proxy, the
 * dashboard) need the loop's state, and only the loop's own thread may make
 * it (its timer is a libuv handle). The admin handlers run on workers. */
static int loop_mw(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_loop *loop = ag_req_loop(req);
    if (ag_loop_current() == loop) gw_loop_init(loop);
    return AG_NEXT;
}

static void on_reload(void *ud)
{
    char why[512];
    gw_reload(why, sizeof why);
}

typedef struct closer {
    gw_loop *gl;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} closer;

static void close_on_loop(void *arg)
{
    closer *c = arg;
    gw_proxy_loop_close(c->gl);
    gw_ratelimit_loop_release(g_gw.rl);
    ag_http_client_loop_release(g_gw.http, c->gl->loop);
    gw_config_unref(c->gl->config);
    c->gl->config = NULL;
    pthread_mutex_lock(&c->mu);
    c->done = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void on_stop(void *ud)
{
    gw_health_stop();
    for (int i = 0; i < g_gw.nloops; i++) {
        gw_loop *gl = &g_gw.loops[i];
        if (!gl->loop) continue;
        closer c = {.gl = gl, .done = false};
        pthread_mutex_init(&c.mu, NULL);
        pthread_cond_init(&c.cv, NULL);
        if (ag_loop_post(gl->loop, close_on_loop, &c) == 0) {
            pthread_mutex_lock(&c.mu);
            while (!c.done)
                pthread_cond_wait(&c.cv, &c.mu);
            pthread_mutex_unlock(&c.mu);
        }
        pthread_mutex_destroy(&c.mu);
        pthread_cond_destroy(&c.cv);
    }
}

static int ready_config(void *ud, char *why, size_t n)
{
    return atomic_load(&g_gw.config) ? 0 : AG_ESTATE;
}

static void metrics_init(ag_metrics *m)
{
    static const char *const svc_code[] = {"service", "code"};
    static const char *const svc[] = {"service"};
    static const char *const reason[] = {"reason"};
    static const char *const result[] = {"result"};
    static const char *const svc_reason[] = {"service", "reason"};
    g_gw.m_upstream = ag_metrics_family(m, AG_COUNTER, "agora_gateway_upstream_responses_total",
                                        "Upstream tries by service and outcome (status or error)",
                                        2, svc_code, NULL, 0);
    g_gw.m_upstream_latency =
        ag_metrics_family(m, AG_HISTOGRAM, "agora_gateway_upstream_seconds",
                          "Time to the upstream's response head", 1, svc, NULL, 0);
    g_gw.m_retries =
        ag_metrics_family(m, AG_COUNTER, "agora_gateway_retries_total",
                          "Retries by service and the failure retried", 2, svc_reason, NULL, 0);
    g_gw.m_rejects =
        ag_metrics_family(m, AG_COUNTER, "agora_gateway_rejections_total",
                          "Requests answered by the gateway itself, by reason", 1, reason, NULL, 0);
    g_gw.m_reloads = ag_metrics_family(m, AG_COUNTER, "agora_gateway_config_reloads_total",
                                       "Configuration reloads by result", 1, result, NULL, 0);
    g_gw.m_ws = ag_metrics_family(m, AG_COUNTER, "agora_gateway_websocket_tunnels_total",
                                  "WebSocket tunnels opened, by service", 1, svc, NULL, 0);
    static const char *const route_class[] = {"route", "class"};
    static const char *const route[] = {"route"};
    g_gw.m_route_count = ag_metrics_family(
        m, AG_COUNTER, "agora_gateway_route_requests_total",
        "Requests by matched route prefix and status class (2xx, 5xx...)", 2, route_class, NULL, 0);
    g_gw.m_route_seconds = ag_metrics_family(
        m, AG_HISTOGRAM, "agora_gateway_route_seconds",
        "Time from the request to its end, by matched route prefix", 1, route, NULL, 0);
}

/* The gateway's own configuration, its routes file, and the clients it
 * works with (discovery, HTTP, JWKS, rate limits). */
static int config(ag_service *svc)
{
    g_gw.svc = svc;
    g_gw.metrics = ag_service_metrics(svc);
    pthread_mutex_init(&g_gw.reload_mu, NULL);
    g_gw.loops = ag_calloc(MAX_LOOPS, sizeof *g_gw.loops);
    metrics_init(g_gw.metrics);

    const char *jwks_url, *issuer, *audience, *rl_url;
    uint64_t health_ms;
    int rc = 0;
    rc |= ag_config_str("AGORA_GATEWAY_CONFIG", AGORA_GATEWAY_CONFIG, &g_gw.config_path);
    rc |= ag_config_str("AGORA_WEB_DIR", AGORA_WEB_DIR, &g_gw.web_dir);
    rc |= ag_config_str("AGORA_JWKS_URL", "http://127.0.0.1:7001/.well-known/jwks.json", &jwks_url);
    rc |= ag_config_str("AGORA_JWT_ISSUER", "agora-users", &issuer);
    rc |= ag_config_str("AGORA_JWT_AUDIENCE", "agora", &audience);
    rc |= ag_config_str("AGORA_RATELIMIT", "memory", &rl_url);
    rc |= ag_config_duration_ms("AGORA_GATEWAY_HEALTH_INTERVAL", 5000, &health_ms);
    long long ratio_pct, eject_after;
    uint64_t eject_ms;
    rc |= ag_config_int("AGORA_GATEWAY_EJECT_AFTER", 5, 0, 1000, &eject_after);
    rc |= ag_config_duration_ms("AGORA_GATEWAY_EJECT_TIME", 10000, &eject_ms);
    rc |= ag_config_int("AGORA_GATEWAY_RETRY_BUDGET_PCT", 20, 0, 100, &ratio_pct);
    if (rc < 0) return AG_ECONFIG;
    g_gw.health_interval_ms = health_ms;
    g_gw.retry_budget_ratio = (double)ratio_pct / 100.0;
    g_gw.jwt_policy = (ag_jwt_policy){.iss = issuer, .aud = audience, .leeway_s = 30};

    char why[512];
    gw_config *c;
    if (gw_config_load(g_gw.config_path, NULL, g_gw.metrics, &c, why, sizeof why) < 0) {
        ag_error("bad gateway configuration", AG_FS("reason", why));
        fprintf(stderr, "agora-gateway: %s\n", why);
        return AG_ECONFIG;
    }
    atomic_store(&g_gw.config, c);

    if (ag_discovery_new(NULL, &g_gw.disc) < 0 || ag_http_client_new(NULL, &g_gw.http) < 0 ||
        ag_jwks_client_new(jwks_url, g_gw.http, 0, &g_gw.jwks) < 0 ||
        gw_ratelimit_new(rl_url, g_gw.metrics, &g_gw.rl) < 0 || gw_auth_init() < 0) {
        ag_error("gateway setup failed");
        fprintf(stderr, "agora-gateway: setup failed (AGORA_REGISTRY, AGORA_RATELIMIT?)\n");
        return AG_ECONFIG;
    }
    ag_discovery_set_eject_after(g_gw.disc, (int)eject_after);
    ag_discovery_set_eject_time(g_gw.disc, eject_ms, eject_ms * 30);
    watch_upstreams(c);
    return 0;
}

static void stop_health(void *ud)
{
    (void)ud;
    gw_health_stop();
}

/* Readiness of the configuration, SIGHUP reloads, and the upstreams'
 * health checker, which stops first when the service does. */
static int init(ag_service *svc)
{
    ag_service_add_ready_check(svc, "config", ready_config, NULL);
    ag_service_on_reload(svc, on_reload, NULL);
    ag_service_on_stop(svc, stop_health, NULL);
    ag_service_on_stop(svc, on_stop, NULL);
    gw_health_start();
    return 0;
}

/* The admin API, the dashboard, and everything else to the proxy. */
static void routes(ag_router *r)
{
    ag_router_use(r, loop_mw, NULL);
    gw_admin_register(r);
    ag_router_add(r, "GET", "/api/v1/dashboard", gw_dashboard_handler, NULL, AG_ROUTE_ASYNC);
    static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        ag_router_add(r, methods[i], "/", gw_proxy_handler, NULL, AG_ROUTE_ASYNC);
        ag_router_add(r, methods[i], "/*", gw_proxy_handler, NULL, AG_ROUTE_ASYNC);
        ag_router_set_body_policy(r, methods[i], "/", gw_proxy_body_policy, NULL);
        ag_router_set_body_policy(r, methods[i], "/*", gw_proxy_body_policy, NULL);
    }
}

static void cleanup(void)
{
    gw_health_stop();
    gw_auth_free();
    gw_ratelimit_free(g_gw.rl);
    ag_jwks_client_free(g_gw.jwks);
    ag_discovery_free(g_gw.disc);
    ag_http_client_free(g_gw.http);
    gw_config_unref(atomic_load(&g_gw.config));
    gw_config_free_breakers();
    ag_free(g_gw.loops);
}

static const ag_service_def k_gateway = {
    .name = "gateway",
    .port = 8080,
    .config = config,
    .init = init,
    .routes = routes,
    .cleanup = cleanup,
};

int main(void)
{
    return ag_service_main(&k_gateway);
}
