/*
 * config.c — the gateway's routes and policies, from a JSON file.
 *
 * JSON rather than YAML or TOML: jansson is already a dependency and Debian
 * packages it, and the file is small. The format is in
 * docs/internals/gateway.md; config/gateway.json is the default.
 *
 * A configuration is immutable once loaded and reference-counted: each loop
 * holds one reference to the configuration it routes with, each request in
 * flight one more. A reload builds a new one beside it and hands it to every
 * loop (gw_reload in main.c); the old one goes when its last request does.
 * Breakers belong to upstream names, not to a configuration: a reload takes
 * the previous breaker of the same name so that an open breaker stays open.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agora/config.h"
#include "agora/log.h"
#include "gateway.h"

static const struct {
    const char *name;
    unsigned bit;
} k_methods[] = {
    {"GET", GW_M_GET},     {"HEAD", GW_M_HEAD},     {"POST", GW_M_POST},       {"PUT", GW_M_PUT},
    {"PATCH", GW_M_PATCH}, {"DELETE", GW_M_DELETE}, {"OPTIONS", GW_M_OPTIONS},
};

unsigned gw_method_bit(const char *method)
{
    for (size_t i = 0; i < sizeof k_methods / sizeof k_methods[0]; i++)
        if (strcmp(method, k_methods[i].name) == 0) return k_methods[i].bit;
    return 0;
}

static void free_config(gw_config *c)
{
    for (int i = 0; i < c->nroutes; i++) {
        ag_free(c->routes[i].prefix);
        ag_free(c->routes[i].rewrite);
        ag_free(c->routes[i].service);
        ag_free(c->routes[i].role);
    }
    ag_free(c->routes);
    for (int i = 0; i < c->nups; i++) {
        ag_free(c->ups[i].name);
        /* breakers live on in the registry of breakers below */
    }
    ag_free(c->ups);
    for (int i = 0; i < c->nlimits; i++) {
        ag_free(c->limit_names[i]);
        ag_free((char *)c->limits[i].ip.name);
        ag_free((char *)c->limits[i].user.name);
    }
    ag_free(c->limit_names);
    ag_free(c->limits);
    for (int i = 0; i < c->ncors; i++)
        ag_free(c->cors_origins[i]);
    ag_free(c->cors_origins);
    ag_free(c->trusted);
    ag_free(c->latest_version);
    ag_free(c->source);
    json_decref(c->doc);
    ag_free(c);
}

void gw_config_ref(gw_config *c)
{
    atomic_fetch_add(&c->refs, 1);
}

void gw_config_unref(gw_config *c)
{
    if (c && atomic_fetch_sub(&c->refs, 1) == 1) free_config(c);
}

/* ---- Breakers by name, for the life of the process ---------------------- */

static pthread_mutex_t g_breakers_mu = PTHREAD_MUTEX_INITIALIZER;
static struct breaker_ent {
    char *name;
    ag_breaker *b;
    struct breaker_ent *next;
} * g_breakers;

/* The breaker of upstream `name`, made with `o` the first time. A reload
 * with other breaker settings takes effect for new upstream names only;
 * changing a live breaker's thresholds needs a restart (said in the docs). */
static ag_breaker *breaker_for(const char *name, const ag_breaker_opts *o)
{
    pthread_mutex_lock(&g_breakers_mu);
    struct breaker_ent *e = g_breakers;
    while (e && strcmp(e->name, name) != 0)
        e = e->next;
    if (!e) {
        e = ag_calloc(1, sizeof *e);
        e->name = ag_strdup(name);
        e->b = ag_breaker_new(name, o);
        e->next = g_breakers;
        g_breakers = e;
    }
    pthread_mutex_unlock(&g_breakers_mu);
    return e->b;
}

void gw_config_free_breakers(void);
void gw_config_free_breakers(void)
{
    pthread_mutex_lock(&g_breakers_mu);
    while (g_breakers) {
        struct breaker_ent *e = g_breakers;
        g_breakers = e->next;
        ag_breaker_free(e->b);
        ag_free(e->name);
        ag_free(e);
    }
    pthread_mutex_unlock(&g_breakers_mu);
}

json_t *gw_breakers_json(void);
json_t *gw_breakers_json(void)
{
    json_t *a = json_array();
    pthread_mutex_lock(&g_breakers_mu);
    for (struct breaker_ent *e = g_breakers; e; e = e->next)
        json_array_append_new(a, ag_breaker_json(e->b));
    pthread_mutex_unlock(&g_breakers_mu);
    return a;
}

/* ---- Parsing ------------------------------------------------------------ */

typedef struct perr {
    char *why;
    size_t n;
    bool failed;
} perr;

__attribute__((format(printf, 2, 3))) static void fail(perr *e, const char *fmt, ...)
{
    if (e->failed) return;
    e->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->why, e->n, fmt, ap);
    va_end(ap);
}

static uint64_t get_ms(perr *e, json_t *o, const char *where, const char *key, uint64_t def)
{
    json_t *v = json_object_get(o, key);
    if (!v) return def;
    if (json_is_integer(v) && json_integer_value(v) >= 0) return (uint64_t)json_integer_value(v);
    uint64_t ms;
    if (json_is_string(v) && ag_parse_duration_ms(json_string_value(v), &ms) == 0) return ms;
    fail(e, "%s.%s: expected milliseconds or a duration such as \"2s\"", where, key);
    return def;
}

static long long get_int(perr *e, json_t *o, const char *where, const char *key, long long def,
                         long long min, long long max)
{
    json_t *v = json_object_get(o, key);
    if (!v) return def;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        fail(e, "%s.%s: expected an integer between %lld and %lld", where, key, min, max);
        return def;
    }
    return json_integer_value(v);
}

static const char *get_str(perr *e, json_t *o, const char *where, const char *key, bool required)
{
    json_t *v = json_object_get(o, key);
    if (!v) {
        if (required) fail(e, "%s.%s is required", where, key);
        return NULL;
    }
    if (!json_is_string(v) || json_string_length(v) == 0) {
        fail(e, "%s.%s: expected a non-empty string", where, key);
        return NULL;
    }
    return json_string_value(v);
}

static void parse_policy(perr *e, json_t *o, const char *where, const char *name, const char *kind,
                         bool *has, gw_rl_policy *p)
{
    json_t *v = json_object_get(o, kind);
    if (!v) return;
    char w[160];
    snprintf(w, sizeof w, "%s.%s", where, kind);
    if (!json_is_object(v)) {
        fail(e, "%s: expected an object {\"rate\", \"burst\"}", w);
        return;
    }
    json_t *rate = json_object_get(v, "rate");
    if (!json_is_number(rate) || json_number_value(rate) <= 0) {
        fail(e, "%s.rate: expected tokens per second above 0", w);
        return;
    }
    *has = true;
    p->rate = json_number_value(rate);
    p->burst = (int)get_int(e, v, w, "burst", (long long)(p->rate < 1 ? 1 : p->rate), 1, 1000000);
    char pname[128];
    snprintf(pname, sizeof pname, "%s:%s", name, kind);
    p->name = ag_strdup(pname);
}

static bool valid_path(const char *s)
{
    if (!s || s[0] != '/') return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == '?' || *p == '#' || *p == '\x7f') return false;
    return true;
}

static int cmp_routes(const void *a, const void *b)
{
    const gw_route *x = a, *y = b;
    size_t lx = strlen(x->prefix), ly = strlen(y->prefix);
    return lx < ly ? 1 : lx > ly ? -1 : 0;
}

int gw_config_load(const char *path, const gw_config *prev, ag_metrics *m, gw_config **out,
                   char *why, size_t why_len)
{
    (void)prev;
    (void)m;
    perr e = {.why = why, .n = why_len};
    json_error_t jerr;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        snprintf(why, why_len, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
        return AG_ECONFIG;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        snprintf(why, why_len, "%s: expected a JSON object", path);
        return AG_ECONFIG;
    }
    gw_config *c = ag_calloc(1, sizeof *c);
    atomic_init(&c->refs, 1);
    c->doc = doc;
    c->source = ag_strdup(path);
    const char *ver = get_str(&e, doc, "config", "latestVersion", false);
    c->latest_version = ag_strdup(ver ? ver : "v1");
    c->dashboard_timeout_ms = get_ms(&e, doc, "config", "dashboardTimeoutMs", 800);
    json_t *admin = json_object_get(doc, "admin");
    c->admin_loopback_only = true;
    if (json_is_object(admin) && json_is_false(json_object_get(admin, "allowLoopback")))
        c->admin_loopback_only = false;

    /* Proxies in front of the gateway whose X-Forwarded-For is believed */
    json_t *tp = json_object_get(doc, "trustedProxies");
    if (tp && !json_is_array(tp)) fail(&e, "trustedProxies: expected an array of addresses");
    if (json_is_array(tp)) {
        c->trusted = ag_calloc(json_array_size(tp) + 1, sizeof *c->trusted);
        size_t i;
        json_t *v;
        json_array_foreach(tp, i, v)
        {
            if (!json_is_string(v) || gw_cidr_parse(json_string_value(v), &c->trusted[i]) < 0) {
                fail(&e, "trustedProxies[%zu]: expected an address or a CIDR block (10.0.0.0/8)",
                     i);
                break;
            }
            c->ntrusted++;
        }
    }

    /* CORS */
    json_t *cors = json_object_get(doc, "cors");
    if (cors) {
        json_t *origins = json_object_get(cors, "origins");
        if (!json_is_array(origins)) {
            fail(&e, "cors.origins: expected an array of origins (or [\"*\"])");
        } else {
            c->cors_origins = ag_calloc(json_array_size(origins) + 1, sizeof(char *));
            size_t i;
            json_t *o;
            json_array_foreach(origins, i, o)
            {
                if (!json_is_string(o)) {
                    fail(&e, "cors.origins[%zu]: expected a string", i);
                    break;
                }
                c->cors_origins[c->ncors++] = ag_strdup(json_string_value(o));
            }
        }
        c->cors_max_age_s = get_ms(&e, cors, "cors", "maxAgeS", 600);
    }

    /* Rate-limit policies */
    json_t *rls = json_object_get(doc, "rateLimits");
    if (rls && !json_is_object(rls)) fail(&e, "rateLimits: expected an object of policies");
    size_t nrl = json_is_object(rls) ? json_object_size(rls) : 0;
    c->limit_names = ag_calloc(nrl + 1, sizeof(char *));
    c->limits = ag_calloc(nrl + 1, sizeof(gw_limit_pair));
    const char *key;
    json_t *val;
    if (json_is_object(rls)) {
        json_object_foreach(rls, key, val)
        {
            char w[128];
            snprintf(w, sizeof w, "rateLimits.%s", key);
            if (!json_is_object(val)) {
                fail(&e, "%s: expected an object with \"ip\" and/or \"user\"", w);
                break;
            }
            gw_limit_pair *lp = &c->limits[c->nlimits];
            c->limit_names[c->nlimits++] = ag_strdup(key);
            parse_policy(&e, val, w, key, "ip", &lp->has_ip, &lp->ip);
            parse_policy(&e, val, w, key, "user", &lp->has_user, &lp->user);
        }
    }
    for (int i = 0; i < c->nlimits; i++)
        if (strcmp(c->limit_names[i], "default") == 0) c->default_limits = &c->limits[i];

    /* Upstreams */
    json_t *ups = json_object_get(doc, "upstreams");
    if (!json_is_object(ups)) fail(&e, "upstreams: expected an object of services");
    size_t nup = json_is_object(ups) ? json_object_size(ups) : 0;
    c->ups = ag_calloc(nup + 1, sizeof(gw_upstream_cfg));
    if (json_is_object(ups)) {
        json_object_foreach(ups, key, val)
        {
            char w[128];
            snprintf(w, sizeof w, "upstreams.%s", key);
            if (!json_is_object(val)) {
                fail(&e, "%s: expected an object", w);
                break;
            }
            gw_upstream_cfg *u = &c->ups[c->nups++];
            u->name = ag_strdup(key);
            u->timeout_ms = get_ms(&e, val, w, "timeoutMs", 10000);
            u->retries = (int)get_int(&e, val, w, "retries", 1, 0, 5);
            u->retry_backoff_ms = get_ms(&e, val, w, "retryBackoffMs", 25);
            u->health_check = !json_is_false(json_object_get(val, "healthCheck"));
            u->health_fails = (int)get_int(&e, val, w, "healthFails", 2, 1, 100);
            u->health_passes = (int)get_int(&e, val, w, "healthPasses", 2, 1, 100);
            ag_breaker_opts bo = {0};
            json_t *b = json_object_get(val, "breaker");
            char bw[160];
            snprintf(bw, sizeof bw, "%s.breaker", w);
            if (b) {
                bo.window = (int)get_int(&e, b, bw, "window", 20, 1, 10000);
                bo.min_calls = (int)get_int(&e, b, bw, "minCalls", 5, 1, 10000);
                bo.failure_rate = (double)get_int(&e, b, bw, "failureRatePct", 50, 1, 100) / 100.0;
                bo.slow_rate = (double)get_int(&e, b, bw, "slowRatePct", 80, 1, 100) / 100.0;
                bo.slow_ms = get_ms(&e, b, bw, "slowMs", 2000);
                bo.open_ms = get_ms(&e, b, bw, "openMs", 5000);
                bo.max_open_ms = get_ms(&e, b, bw, "maxOpenMs", 60000);
                bo.probes = (int)get_int(&e, b, bw, "probes", 3, 1, 100);
                bo.max_concurrent = (int)get_int(&e, b, bw, "maxConcurrent", 0, 0, 1000000);
            }
            bo.metrics = m;
            if (!e.failed) u->breaker = breaker_for(key, &bo);
        }
    }

    /* Routes */
    json_t *routes = json_object_get(doc, "routes");
    if (!json_is_array(routes) || json_array_size(routes) == 0)
        fail(&e, "routes: expected a non-empty array");
    size_t nr = json_is_array(routes) ? json_array_size(routes) : 0;
    c->routes = ag_calloc(nr + 1, sizeof(gw_route));
    for (size_t i = 0; i < nr && !e.failed; i++) {
        json_t *r = json_array_get(routes, i);
        char w[64];
        snprintf(w, sizeof w, "routes[%zu]", i);
        if (!json_is_object(r)) {
            fail(&e, "%s: expected an object", w);
            break;
        }
        gw_route *rt = &c->routes[c->nroutes++];
        const char *prefix = get_str(&e, r, w, "prefix", true);
        const char *service = get_str(&e, r, w, "service", true);
        const char *rewrite = get_str(&e, r, w, "rewrite", false);
        if (e.failed) break;
        if (!valid_path(prefix) || (rewrite && !valid_path(rewrite))) {
            fail(&e, "%s: prefix and rewrite must be paths starting with '/'", w);
            break;
        }
        size_t pl = strlen(prefix);
        rt->prefix = ag_strndup(prefix, pl > 1 && prefix[pl - 1] == '/' ? pl - 1 : pl);
        rt->rewrite = ag_strdup(rewrite ? rewrite : rt->prefix);
        size_t rl = strlen(rt->rewrite);
        if (rl > 1 && rt->rewrite[rl - 1] == '/') rt->rewrite[rl - 1] = '\0';
        rt->service = ag_strdup(service);
        rt->up = gw_config_upstream(c, service);
        if (!rt->up) {
            fail(&e, "%s.service: unknown upstream \"%s\" (add it under \"upstreams\")", w,
                 service);
            break;
        }
        json_t *ms = json_object_get(r, "methods");
        if (ms) {
            size_t j;
            json_t *mv;
            if (!json_is_array(ms)) fail(&e, "%s.methods: expected an array", w);
            json_array_foreach(ms, j, mv)
            {
                unsigned bit = json_is_string(mv) ? gw_method_bit(json_string_value(mv)) : 0;
                if (!bit) {
                    fail(&e, "%s.methods[%zu]: unknown method", w, j);
                    break;
                }
                rt->methods |= bit;
                if (bit == GW_M_GET) rt->methods |= GW_M_HEAD;
            }
        }
        const char *auth = get_str(&e, r, w, "auth", false);
        if (!auth || strcmp(auth, "public") == 0)
            rt->auth = GW_AUTH_PUBLIC;
        else if (strcmp(auth, "optional") == 0)
            rt->auth = GW_AUTH_OPTIONAL;
        else if (strcmp(auth, "required") == 0)
            rt->auth = GW_AUTH_REQUIRED;
        else
            fail(&e, "%s.auth: expected \"public\", \"optional\" or \"required\"", w);
        const char *role = get_str(&e, r, w, "role", false);
        if (role) {
            rt->role = ag_strdup(role);
            rt->auth = GW_AUTH_REQUIRED;
        }
        rt->timeout_ms = get_ms(&e, r, w, "timeoutMs", 0);
        rt->retries = (int)get_int(&e, r, w, "retries", -1, -1, 5);
        rt->websocket = json_is_true(json_object_get(r, "websocket"));
        json_t *sb = json_object_get(r, "spoolBody");
        if (sb && !json_is_boolean(sb)) fail(&e, "%s.spoolBody: expected true or false", w);
        rt->spool_body = json_is_true(sb);
        json_t *stb = json_object_get(r, "streamBody");
        if (stb && !json_is_boolean(stb)) fail(&e, "%s.streamBody: expected true or false", w);
        rt->stream_body = json_is_true(stb);
        if (rt->spool_body && rt->stream_body)
            fail(&e, "%s: spoolBody and streamBody exclude each other", w);
        rt->max_body_bytes = (uint64_t)get_int(&e, r, w, "maxBodyBytes", 0, 1, (long long)1 << 40);
        const char *lim = get_str(&e, r, w, "rateLimit", false);
        rt->limits = c->default_limits;
        if (lim && strcmp(lim, "none") == 0) {
            rt->limits = NULL;
        } else if (lim) {
            rt->limits = NULL;
            for (int k = 0; k < c->nlimits; k++)
                if (strcmp(c->limit_names[k], lim) == 0) rt->limits = &c->limits[k];
            if (!rt->limits) fail(&e, "%s.rateLimit: unknown policy \"%s\"", w, lim);
        }
    }
    for (int i = 0; i < c->nroutes && !e.failed; i++)
        for (int j = i + 1; j < c->nroutes; j++)
            if (strcmp(c->routes[i].prefix, c->routes[j].prefix) == 0 &&
                (c->routes[i].methods & c->routes[j].methods || !c->routes[i].methods ||
                 !c->routes[j].methods)) {
                fail(&e, "routes[%d] and routes[%d]: the same prefix %s for the same methods", i, j,
                     c->routes[i].prefix);
                break;
            }
    if (e.failed) {
        free_config(c);
        return AG_ECONFIG;
    }
    qsort(c->routes, (size_t)c->nroutes, sizeof *c->routes, cmp_routes);
    static atomic_uint_fast64_t gen;
    c->generation = atomic_fetch_add(&gen, 1) + 1;
    *out = c;
    return 0;
}

gw_upstream_cfg *gw_config_upstream(const gw_config *c, const char *name)
{
    for (int i = 0; i < c->nups; i++)
        if (strcmp(c->ups[i].name, name) == 0) return &c->ups[i];
    return NULL;
}

static bool prefix_matches(const gw_route *r, const char *path)
{
    size_t pl = strlen(r->prefix);
    if (pl == 1 && r->prefix[0] == '/') return true;
    return strncmp(path, r->prefix, pl) == 0 && (path[pl] == '\0' || path[pl] == '/');
}

const gw_route *gw_config_match(const gw_config *c, const char *path, const char *method,
                                bool *method_ok, char *allow, size_t allow_len)
{
    unsigned bit = gw_method_bit(method);
    /* Routes are sorted longest prefix first: the first that matches the
     * path sets the length; among routes of that length, one that takes the
     * method wins. OPTIONS (CORS preflight) matches any of them. */
    const gw_route *found = NULL;
    unsigned seen = 0;
    size_t best = 0;
    bool any = false;
    for (int i = 0; i < c->nroutes; i++) {
        const gw_route *r = &c->routes[i];
        if (!prefix_matches(r, path)) continue;
        size_t pl = strlen(r->prefix);
        if (any && pl < best) break;
        any = true;
        best = pl;
        seen |= r->methods ? r->methods : 0x7fu;
        if (!found && (!r->methods || (r->methods & bit) || bit == GW_M_OPTIONS)) found = r;
    }
    *method_ok = found != NULL || !any;
    if (allow) {
        allow[0] = '\0';
        size_t n = 0;
        for (size_t i = 0; i < sizeof k_methods / sizeof k_methods[0]; i++)
            if ((seen & k_methods[i].bit) && n < allow_len)
                n += (size_t)snprintf(allow + n, allow_len - n, "%s%s", n ? ", " : "",
                                      k_methods[i].name);
    }
    return found;
}
