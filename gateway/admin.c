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
 * instance that hangs is left out even before requests time out on it. One
 * failed check is not enough: an instance goes down after the upstream's
 * `healthFails` failed checks in a row (default 2) and comes back after
 * `healthPasses` passed ones in a row (default 2), so that a single lost
 * check neither takes it out nor lets a flapping one straight back in:
 *
 *          fails in a row >= healthFails
 *     UP ---------------------------------> DOWN
 *        <---------------------------------
 *          passes in a row >= healthPasses
 *
 * A new instance starts UP with no verdicts. The counts are shown in GET
 * /admin/upstreams ("healthChecks"), read together with discovery's view.
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
        json_t *o = json_pack(
            "{s:s,s:s,s:s,s:s,s:I,s:i,s:b}", "prefix", r->prefix, "rewrite", r->rewrite, "service",
            r->service, "auth",
            r->auth == GW_AUTH_REQUIRED   ? "required"
            : r->auth == GW_AUTH_OPTIONAL ? "optional"
                                          : "public",
            "timeoutMs", (json_int_t)(r->timeout_ms ? r->timeout_ms : r->up->timeout_ms), "retries",
            r->retries >= 0 ? r->retries : r->up->retries, "websocket", r->websocket);
        if (r->role) json_object_set_new(o, "role", json_string(r->role));
        if (r->limits) {
            json_t *l = json_object();
            if (r->limits->has_ip)
                json_object_set_new(l, "ip",
                                    json_pack("{s:f,s:i}", "rate", r->limits->ip.rate, "burst",
                                              r->limits->ip.burst));
            if (r->limits->has_user)
                json_object_set_new(l, "user",
                                    json_pack("{s:f,s:i}", "rate", r->limits->user.rate, "burst",
                                              r->limits->user.burst));
            json_object_set_new(o, "rateLimit", l);
        }
        json_array_append_new(routes, o);
    }
    json_t *data = json_pack("{s:I,s:s,s:s,s:o}", "generation", (json_int_t)c->generation, "source",
                             c->source, "latestVersion", c->latest_version, "routes", routes);
    pthread_mutex_unlock(&g_gw.reload_mu);
    ag_res_ok(res, 200, data);
}

json_t *gw_health_json(void);

static void get_upstreams(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!admin_allowed(req, res)) return;
    json_t *d = gw_health_json(); /* discovery's view and the checks' counts, together */
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
    json_t *data =
        json_pack("{s:I,s:s}", "generation", (json_int_t)c->generation, "source", c->source);
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

/* One instance's checks (the health thread writes, under g_hc_mu). */
typedef struct hc_state {
    char service[64];
    char id[128];
    int fails, passes; /* in a row */
    bool down;         /* as marked in discovery */
    unsigned round;    /* the last round that checked it */
} hc_state;

static pthread_mutex_t g_hc_mu = PTHREAD_MUTEX_INITIALIZER;
static hc_state *g_hc;
static size_t g_nhc, g_cap_hc;
static unsigned g_round;

static hc_state *hc_of(const char *service, const char *id)
{
    for (size_t i = 0; i < g_nhc; i++)
        if (strcmp(g_hc[i].service, service) == 0 && strcmp(g_hc[i].id, id) == 0) return &g_hc[i];
    if (g_nhc == g_cap_hc) {
        g_cap_hc = g_cap_hc ? g_cap_hc * 2 : 16;
        g_hc = ag_realloc(g_hc, g_cap_hc * sizeof *g_hc);
    }
    hc_state *h = &g_hc[g_nhc++];
    memset(h, 0, sizeof *h);
    snprintf(h->service, sizeof h->service, "%s", service);
    snprintf(h->id, sizeof h->id, "%s", id);
    return h;
}

/* A check's verdict through the state machine above; the mark is given
 * every round, so that an instance discovery learns again keeps it. */
static void hc_verdict(const gw_upstream_cfg *u, const ag_instance *in, bool ok)
{
    pthread_mutex_lock(&g_hc_mu);
    hc_state *h = hc_of(u->name, in->id);
    h->round = g_round;
    if (ok) {
        h->passes++;
        h->fails = 0;
        if (h->down && h->passes >= u->health_passes) h->down = false;
    } else {
        h->fails++;
        h->passes = 0;
        if (!h->down && h->fails >= u->health_fails) h->down = true;
    }
    ag_discovery_mark(g_gw.disc, u->name, in->id, !h->down);
    pthread_mutex_unlock(&g_hc_mu);
}

/* Forgets the instances the last round did not check (gone, or their
 * upstream no longer checked). */
static void hc_prune(void)
{
    pthread_mutex_lock(&g_hc_mu);
    size_t k = 0;
    for (size_t i = 0; i < g_nhc; i++)
        if (g_hc[i].round == g_round) g_hc[k++] = g_hc[i];
    g_nhc = k;
    pthread_mutex_unlock(&g_hc_mu);
}

json_t *gw_health_json(void)
{
    pthread_mutex_lock(&g_hc_mu);
    json_t *d = ag_discovery_json(g_gw.disc);
    json_t *checks = json_object();
    for (size_t i = 0; i < g_nhc; i++) {
        json_t *svc = json_object_get(checks, g_hc[i].service);
        if (!svc) {
            svc = json_object();
            json_object_set_new(checks, g_hc[i].service, svc);
        }
        json_object_set_new(svc, g_hc[i].id,
                            json_pack("{s:i, s:i, s:b}", "failsInARow", g_hc[i].fails,
                                      "passesInARow", g_hc[i].passes, "down", g_hc[i].down));
    }
    pthread_mutex_unlock(&g_hc_mu);
    json_object_set_new(d, "healthChecks", checks);
    return d;
}

static void check_all(void)
{
    g_round++;
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
            hc_verdict(&c->ups[u], &in[i], ok);
        }
    }
    gw_config_unref(c);
    hc_prune();
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
    pthread_mutex_lock(&g_hc_mu);
    ag_free(g_hc);
    g_hc = NULL;
    g_nhc = g_cap_hc = 0;
    pthread_mutex_unlock(&g_hc_mu);
}
