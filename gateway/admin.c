/*
 * admin.c — the gateway's own endpoints and its active health checks.
 *
 *   GET  /admin/routes      the configuration in force (and its generation)
 *   GET  /admin/upstreams   instances per service: health, ejection, load
 *   GET  /admin/breakers    every upstream's breaker
 *   POST /admin/reload      re-reads the configuration file (as SIGHUP does)
 *
 * They answer callers on loopback (the agora command, an operator on the
 * machine) and, from elsewhere, admins with a token. They run on the worker
 * pool: verifying a token may fetch keys.
 *
 * Active health checks: one thread GETs /health of every known instance of
 * every configured upstream each AGORA_GATEWAY_HEALTH_INTERVAL (default 5 s,
 * 1 s timeout) and marks the instance up or down in discovery, so that an
 * instance that hangs is left out even before requests time out on it.
 */
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "agora/clock.h"
#include "agora/log.h"
#include "gateway.h"

json_t *gw_breakers_json(void);

static bool is_loopback(const char *ip)
{
    return strncmp(ip, "127.", 4) == 0 || strcmp(ip, "::1") == 0 ||
           strncmp(ip, "::ffff:127.", 11) == 0;
}

/* True when the caller may use /admin; answers 401/403 otherwise. */
static bool admin_allowed(ag_http_req *req, ag_http_res *res)
{
    pthread_mutex_lock(&g_gw.reload_mu);
    bool loopback_ok = atomic_load(&g_gw.config)->admin_loopback_only;
    pthread_mutex_unlock(&g_gw.reload_mu);
    if (loopback_ok && is_loopback(ag_req_remote_addr(req))) return true;
    const char *h = ag_req_header(req, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
        ag_res_header(res, "WWW-Authenticate", "Bearer");
        ag_res_error(res, 401, "UNAUTHENTICATED", "the admin API needs an admin token", NULL);
        return false;
    }
    ag_claims cl;
    char why[64];
    int rc = ag_jwks_verify(g_gw.jwks, h + 7, &g_gw.jwt_policy, &cl, why, sizeof why);
    if (rc < 0) {
        ag_res_error(res, 401, "UNAUTHENTICATED", why[0] ? why : "invalid token", NULL);
        return false;
    }
    if (strcmp(cl.role, "admin") != 0) {
        ag_res_error(res, 403, "FORBIDDEN", "admins only", NULL);
        return false;
    }
    return true;
}

static void get_routes(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!admin_allowed(req, res)) return;
    pthread_mutex_lock(&g_gw.reload_mu);
    gw_config *c = atomic_load(&g_gw.config);
    json_t *routes = json_array();
    for (int i = 0; i < c->nroutes; i++) {
        const gw_route *r = &c->routes[i];
        json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:I,s:i,s:b}", "prefix", r->prefix, "rewrite",
                              r->rewrite, "service", r->service, "auth",
                              r->auth == GW_AUTH_REQUIRED   ? "required"
                              : r->auth == GW_AUTH_OPTIONAL ? "optional"
                                                            : "public",
                              "timeoutMs",
                              (json_int_t)(r->timeout_ms ? r->timeout_ms : r->up->timeout_ms),
                              "retries", r->retries >= 0 ? r->retries : r->up->retries,
                              "websocket", r->websocket);
        if (r->role) json_object_set_new(o, "role", json_string(r->role));
        if (r->limits) {
            json_t *l = json_object();
            if (r->limits->has_ip)
                json_object_set_new(l, "ip", json_pack("{s:f,s:i}", "rate", r->limits->ip.rate,
                                                       "burst", r->limits->ip.burst));
            if (r->limits->has_user)
                json_object_set_new(l, "user",
                                    json_pack("{s:f,s:i}", "rate", r->limits->user.rate,
                                              "burst", r->limits->user.burst));
            json_object_set_new(o, "rateLimit", l);
        }
        json_array_append_new(routes, o);
    }
    json_t *data = json_pack("{s:I,s:s,s:s,s:o}", "generation", (json_int_t)c->generation,
                             "source", c->source, "latestVersion", c->latest_version, "routes",
                             routes);
    pthread_mutex_unlock(&g_gw.reload_mu);
    ag_res_ok(res, 200, data);
}

static void get_upstreams(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!admin_allowed(req, res)) return;
    json_t *d = ag_discovery_json(g_gw.disc);
    json_object_set_new(d, "idleConnections", gw_proxy_pool_json());
    ag_res_ok(res, 200, d);
}

static void get_breakers(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!admin_allowed(req, res)) return;
    ag_res_ok(res, 200, gw_breakers_json());
}

static void post_reload(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!admin_allowed(req, res)) return;
    char why[512] = "";
    int rc = gw_reload(why, sizeof why);
    if (rc < 0) {
        ag_res_error(res, 422, "CONFIG_INVALID", why, NULL);
        return;
    }
    pthread_mutex_lock(&g_gw.reload_mu);
    gw_config *c = atomic_load(&g_gw.config);
    json_t *data = json_pack("{s:I,s:s}", "generation", (json_int_t)c->generation, "source",
                             c->source);
    pthread_mutex_unlock(&g_gw.reload_mu);
    ag_res_ok(res, 200, data);
}

void gw_admin_register(ag_router *r)
{
    ag_router_add(r, "GET", "/admin/routes", get_routes, NULL, 0);
    ag_router_add(r, "GET", "/admin/upstreams", get_upstreams, NULL, 0);
    ag_router_add(r, "GET", "/admin/breakers", get_breakers, NULL, 0);
    ag_router_add(r, "POST", "/admin/reload", post_reload, NULL, 0);
}

/* ---- Active health checks ---------------------------------------------- */

static pthread_t g_health;
static pthread_mutex_t g_health_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_health_cv = PTHREAD_COND_INITIALIZER;
static bool g_health_stop, g_health_on;

static void check_all(void)
{
    pthread_mutex_lock(&g_gw.reload_mu);
    gw_config *c = atomic_load(&g_gw.config);
    gw_config_ref(c);
    pthread_mutex_unlock(&g_gw.reload_mu);
    for (int u = 0; u < c->nups; u++) {
        if (!c->ups[u].health_check) continue;
        ag_instance in[32];
        int n = ag_discovery_instances(g_gw.disc, c->ups[u].name, in, 32);
        if (n > 32) n = 32;
        for (int i = 0; i < n; i++) {
            char url[256];
            snprintf(url, sizeof url, "http://%s:%d/health", in[i].address, in[i].port);
            ag_http_call call = {.url = url, .timeout_ms = 1000};
            ag_http_reply rep;
            int rc = ag_http_client_do(g_gw.http, &call, &rep);
            bool ok = rc == 0 && rep.status >= 200 && rep.status < 300;
            if (rc == 0) ag_http_reply_release(&rep);
            ag_discovery_mark(g_gw.disc, c->ups[u].name, in[i].id, ok);
        }
    }
    gw_config_unref(c);
}

static void *health_main(void *arg)
{
    pthread_mutex_lock(&g_health_mu);
    while (!g_health_stop) {
        pthread_mutex_unlock(&g_health_mu);
        check_all();
        pthread_mutex_lock(&g_health_mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (g_gw.health_interval_ms % 1000) * 1000000ull;
        ts.tv_sec += (time_t)(g_gw.health_interval_ms / 1000 + ns / 1000000000ull);
        ts.tv_nsec = (long)(ns % 1000000000ull);
        while (!g_health_stop && pthread_cond_timedwait(&g_health_cv, &g_health_mu, &ts) == 0) {
        }
    }
    pthread_mutex_unlock(&g_health_mu);
    return NULL;
}

int gw_health_start(void)
{
    if (g_gw.health_interval_ms == 0) return 0;
    if (pthread_create(&g_health, NULL, health_main, NULL) != 0) return AG_ENOMEM;
    g_health_on = true;
    return 0;
}

void gw_health_stop(void)
{
    if (!g_health_on) return;
    pthread_mutex_lock(&g_health_mu);
    g_health_stop = true;
    pthread_cond_broadcast(&g_health_cv);
    pthread_mutex_unlock(&g_health_mu);
    pthread_join(g_health, NULL);
    g_health_on = false;
}
