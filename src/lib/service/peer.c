/*
 * peer.c — a service's callers and callees (agora/peer.h): the JWKS
 * verifier from the environment, the shared HTTP client, breaker settings,
 * and peers: calls to another service through the registry (or its
 * configured URL) behind a circuit breaker, with the deadline, the request
 * id and an identity.
 *
 * Until this file every service's main.c carried its own copy of the JWKS
 * settings and the breaker settings, and agora-orders its own peer calls and
 * service token; the chat services are the first to use this instead.
 *
 * Ownership: everything made here is handed to the service
 * (ag__service_own) and freed after its pool stopped, in reverse order, so
 * a peer goes before the HTTP client it calls with.
 */
#include <ctype.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "agora/config.h"
#include "agora/log.h"
#include "agora/peer.h"

void ag__service_own(ag_service *s, void (*free_fn)(void *), void *p);

/* ---- The service's HTTP client and verifier ----------------------------------------------- */

typedef struct svc_extra {
    ag_service *svc;
    ag_http_client *http;
    ag_jwks_client *jwks;
    ag_auth auth;
    bool auth_made;
    /* The service token ("Bearer ..."), shared by every peer of the service. */
    pthread_mutex_t tok_mu;
    char token[4200];
    uint64_t token_until_ms; /* wall clock; 0: none yet */
    ag_peer *users;          /* where tokens come from (made on first need) */
    ag_grpc_client *grpc;    /* made on first ag_peer_grpc */
} svc_extra;

/* One per process: a process runs one service. */
static pthread_mutex_t g_extra_mu = PTHREAD_MUTEX_INITIALIZER;
static svc_extra *g_extra;

static void extra_free(void *p)
{
    svc_extra *x = p;
    ag_jwks_client_free(x->jwks);
    ag_http_client_free(x->http);
    ag_grpc_client_free(x->grpc);
    pthread_mutex_destroy(&x->tok_mu);
    sodium_memzero(x->token, sizeof x->token);
    pthread_mutex_lock(&g_extra_mu);
    if (g_extra == x) g_extra = NULL;
    pthread_mutex_unlock(&g_extra_mu);
    ag_free(x);
}

static svc_extra *extra_of(ag_service *svc)
{
    pthread_mutex_lock(&g_extra_mu);
    if (!g_extra || g_extra->svc != svc) {
        svc_extra *x = ag_calloc(1, sizeof *x);
        x->svc = svc;
        pthread_mutex_init(&x->tok_mu, NULL);
        if (ag_http_client_new(NULL, &x->http) < 0) abort(); /* only out of memory */
        g_extra = x;
        /* Owned before any peer, so freed after every peer. */
        ag__service_own(svc, extra_free, x);
    }
    svc_extra *x = g_extra;
    pthread_mutex_unlock(&g_extra_mu);
    return x;
}

ag_http_client *ag_service_http(ag_service *svc)
{
    return extra_of(svc)->http;
}

int ag_service_use_auth(ag_service *svc, unsigned flags, ag_auth **out)
{
    svc_extra *x = extra_of(svc);
    if (!x->auth_made) {
        const char *url, *iss, *aud;
        uint64_t leeway_ms;
        int rc = 0;
        rc |= ag_config_str("AGORA_JWKS_URL", "http://127.0.0.1:7001/.well-known/jwks.json", &url);
        rc |= ag_config_str("AGORA_JWT_ISSUER", "agora-users", &iss);
        rc |= ag_config_str("AGORA_JWT_AUDIENCE", "agora", &aud);
        rc |= ag_config_duration_ms("AGORA_JWT_LEEWAY", 30000, &leeway_ms);
        if (rc < 0) return AG_ECONFIG;
        if (ag_jwks_client_new(url, x->http, 0, &x->jwks) < 0) return AG_ECONFIG;
        x->auth.jwks = x->jwks;
        x->auth.policy.iss = iss;
        x->auth.policy.aud = aud;
        x->auth.policy.leeway_s = (int64_t)(leeway_ms / 1000);
        x->auth_made = true;
        if (!(flags & AG_AUTH_NO_MIDDLEWARE))
            ag_router_use(ag_service_router(svc), ag_auth_middleware, &x->auth);
    }
    *out = &x->auth;
    return 0;
}

int ag_breaker_opts_from_env(ag_breaker_opts *o, ag_metrics *m)
{
    return ag_breaker_opts_from_env_min(o, m, 5);
}

int ag_breaker_opts_from_env_min(ag_breaker_opts *o, ag_metrics *m, int min_calls_default)
{
    long long window, min_calls, probes;
    int rc = 0;
    memset(o, 0, sizeof *o);
    rc |= ag_config_duration_ms("AGORA_BREAKER_OPEN", 5000, &o->open_ms);
    rc |= ag_config_duration_ms("AGORA_BREAKER_MAX_OPEN", 60000, &o->max_open_ms);
    rc |= ag_config_int("AGORA_BREAKER_WINDOW", 20, 1, 1000, &window);
    rc |= ag_config_int("AGORA_BREAKER_MIN_CALLS", min_calls_default, 1, 1000, &min_calls);
    rc |= ag_config_int("AGORA_BREAKER_PROBES", 3, 1, 100, &probes);
    if (rc < 0) return AG_ECONFIG;
    if (o->open_ms == 0) o->open_ms = 1; /* zero means "the default" to the breaker */
    if (o->max_open_ms < o->open_ms) o->max_open_ms = o->open_ms;
    o->window = (int)window;
    o->min_calls = (int)(min_calls < window ? min_calls : window);
    o->probes = (int)probes;
    o->metrics = m;
    return 0;
}

/* ---- Peers -------------------------------------------------------------------------------- */

struct ag_peer {
    char name[48];
    char *url; /* without a trailing slash */
    svc_extra *x;
    ag_discovery *disc; /* NULL: always `url` */
    ag_breaker *breaker;
    /* agora_peer_call_duration_seconds{service,peer,outcome} */
    ag_series *m_ok, *m_error, *m_timeout, *m_open;
    /* gRPC (ag_peer_grpc): AGORA_<NAME>_GRPC_URL, or NULL: the instance's
     * host and port + 100; grpc_off for "off". After a call that got no
     * gRPC answer, none is tried until grpc_down_until (wall ms). */
    char *grpc_url;
    bool grpc_off;
    _Atomic uint64_t grpc_down_until;
};

static void peer_free(void *p)
{
    ag_peer *peer = p;
    ag_breaker_free(peer->breaker);
    ag_free(peer->grpc_url);
    ag_free(peer->url);
    ag_free(peer);
}

int ag_service_peer(ag_service *svc, const char *name, const char *default_url, ag_peer **out)
{
    return ag_service_peer_with(svc, name, default_url, NULL, out);
}

int ag_service_peer_with(ag_service *svc, const char *name, const char *default_url,
                         const ag_breaker_opts *given, ag_peer **out)
{
    size_t nlen = strlen(name);
    if (nlen == 0 || nlen >= sizeof((ag_peer *)0)->name) return AG_EINVAL;
    char var[96];
    snprintf(var, sizeof var, "AGORA_%s_URL", name);
    for (char *c = var; *c; c++)
        *c = (char)toupper((unsigned char)*c);
    const char *url;
    ag_breaker_opts bo;
    if (ag_config_str(var, default_url, &url) < 0 || !url ||
        (!given && ag_breaker_opts_from_env(&bo, ag_service_metrics(svc)) < 0))
        return AG_ECONFIG;
    if (given) bo = *given;
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        ag_error("invalid configuration", AG_FS("variable", var),
                 AG_FS("reason", "expected an http:// or https:// URL"), AG_FS("value", url));
        return AG_ECONFIG;
    }
    ag_peer *p = ag_calloc(1, sizeof *p);
    memcpy(p->name, name, nlen + 1);
    p->url = ag_strdup(url);
    for (size_t n = strlen(p->url); n > 0 && p->url[n - 1] == '/';)
        p->url[--n] = '\0';
    p->x = extra_of(svc);
    p->breaker = ag_breaker_new(name, &bo);
    const char *lk[] = {"service", "peer", "outcome"};
    ag_metric *f = ag_metrics_family(
        ag_service_metrics(svc), AG_HISTOGRAM, "agora_peer_call_duration_seconds",
        "Calls to another service, from the breaker's ticket to the answer, by outcome "
        "(ok: an answer below 500; error: a 5xx or a failed call; timeout; open: the "
        "breaker refused).",
        3, lk, NULL, 0);
    const char *sn = ag_service_name(svc);
    p->m_ok = ag_metric_series(f, (const char *[]){sn, name, "ok"});
    p->m_error = ag_metric_series(f, (const char *[]){sn, name, "error"});
    p->m_timeout = ag_metric_series(f, (const char *[]){sn, name, "timeout"});
    p->m_open = ag_metric_series(f, (const char *[]){sn, name, "open"});
    snprintf(var, sizeof var, "AGORA_%s_GRPC_URL", name);
    for (char *c = var; *c; c++)
        *c = (char)toupper((unsigned char)*c);
    const char *gurl = ag_config_raw(var);
    if (gurl && strcmp(gurl, "off") == 0) {
        p->grpc_off = true;
    } else if (gurl && *gurl) {
        if (strncmp(gurl, "http://", 7) != 0 && strncmp(gurl, "https://", 8) != 0) {
            ag_error("invalid configuration", AG_FS("variable", var),
                     AG_FS("reason", "expected an http:// or https:// URL, or off"),
                     AG_FS("value", gurl));
            ag_breaker_free(p->breaker);
            ag_free(p->url);
            ag_free(p);
            return AG_ECONFIG;
        }
        p->grpc_url = ag_strdup(gurl);
    }
    const char *reg = ag_config_raw("AGORA_REGISTRY");
    if (reg && *reg && strcmp(reg, "static") != 0) {
        p->disc = ag_service_discovery(svc);
        if (p->disc) ag_discovery_watch(p->disc, name);
    }
    ag__service_own(svc, peer_free, p);
    *out = p;
    return 0;
}

const char *ag_peer_name(const ag_peer *p)
{
    return p->name;
}

ag_breaker *ag_peer_breaker(ag_peer *p)
{
    return p->breaker;
}

void ag_peer_reply_clear(ag_peer_reply *rep)
{
    json_decref(rep->doc);
    memset(rep, 0, sizeof *rep);
}

/* One HTTP exchange with an instance of the peer, no breaker, no retry. */
static int raw_call(ag_peer *p, const char *method, const char *path, const char *body,
                    size_t body_len, const char *auth, ag_deadline deadline, const char *request_id,
                    ag_peer_reply *rep)
{
    memset(rep, 0, sizeof *rep);
    ag_instance inst;
    bool picked = p->disc && ag_discovery_pick(p->disc, p->name, &inst) == 0;
    char base[192];
    if (picked)
        ag_instance_url(&inst, base, sizeof base);
    else
        snprintf(base, sizeof base, "%s", p->url);
    size_t ulen = strlen(base) + strlen(path) + 1;
    char *url = ag_malloc(ulen);
    snprintf(url, ulen, "%s%s", base, path);
    char *auth_h = NULL;
    const char *headers[2] = {NULL, NULL};
    if (auth && *auth) {
        size_t alen = strlen(auth) + 16;
        auth_h = ag_malloc(alen);
        snprintf(auth_h, alen, "Authorization: %s", auth);
        headers[0] = auth_h;
    }
    ag_http_call call = {
        .method = method,
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = body_len,
        .deadline = deadline,
        .request_id = request_id,
        .peer = p->name,
    };
    ag_http_reply hr;
    memset(&hr, 0, sizeof hr);
    int rc = ag_http_client_do(p->x->http, &call, &hr);
    if (picked)
        ag_discovery_release(p->disc, &inst,
                             rc < 0 || hr.status >= 502 ? AG_CALL_FAILED : AG_CALL_OK);
    if (auth_h) {
        sodium_memzero(auth_h, strlen(auth_h));
        ag_free(auth_h);
    }
    ag_free(url);
    if (rc < 0) return rc;
    rep->status = hr.status;
    if (hr.body.len) rep->doc = json_loadb(hr.body.data, hr.body.len, 0, NULL);
    const char *code =
        json_string_value(json_object_get(json_object_get(rep->doc, "error"), "code"));
    if (code) snprintf(rep->code, sizeof rep->code, "%s", code);
    ag_http_reply_release(&hr);
    return 0;
}

/* Fetches this service's token from agora-users (x->tok_mu held). */
static int fetch_token(svc_extra *x)
{
    const char *id, *secret;
    if (ag_config_str("AGORA_CLIENT_ID", ag_service_name(x->svc), &id) < 0 ||
        ag_config_str("AGORA_CLIENT_SECRET", NULL, &secret) < 0)
        return AG_ECONFIG;
    if (!secret || !*secret) {
        ag_error("no service credentials: set AGORA_CLIENT_SECRET (and agora-users' "
                 "AGORA_SERVICE_CLIENTS)");
        return AG_ECONFIG;
    }
    if (!x->users && ag_service_peer(x->svc, "users", "http://127.0.0.1:7001", &x->users) < 0)
        return AG_ECONFIG;
    json_t *req = json_pack("{s:s, s:s}", "clientId", id, "clientSecret", secret);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    ag_peer_reply rep;
    int rc = raw_call(x->users, "POST", "/v1/auth/token", body, strlen(body), "",
                      ag_deadline_in(5000), NULL, &rep);
    sodium_memzero(body, strlen(body));
    free(body);
    if (rc < 0) return rc;
    json_t *d = json_object_get(rep.doc, "data");
    const char *tok = json_string_value(json_object_get(d, "token"));
    json_int_t ttl = json_integer_value(json_object_get(d, "expiresIn"));
    if (rep.status != 200 || !tok || strlen(tok) >= sizeof x->token - 8) {
        ag_error("agora-users refused this service's credentials", AG_FI("status", rep.status),
                 AG_FS("code", rep.code));
        int status = rep.status;
        ag_peer_reply_clear(&rep);
        return status >= 500 ? AG_EUNAVAIL : AG_EAUTH;
    }
    snprintf(x->token, sizeof x->token, "Bearer %s", tok);
    uint64_t life = ttl > 120 ? (uint64_t)(ttl - 60) * 1000 : (uint64_t)(ttl > 0 ? ttl : 1) * 500;
    x->token_until_ms = ag_wall_ms() + life;
    ag_peer_reply_clear(&rep);
    return 0;
}

static int service_token(svc_extra *x, char *out, size_t n, bool renew)
{
    pthread_mutex_lock(&x->tok_mu);
    int rc = 0;
    if (renew || x->token_until_ms == 0 || ag_wall_ms() >= x->token_until_ms) rc = fetch_token(x);
    if (rc == 0) snprintf(out, n, "%s", x->token);
    pthread_mutex_unlock(&x->tok_mu);
    return rc;
}

int ag_peer_call(ag_peer *p, const char *method, const char *path, json_t *body, const char *auth,
                 ag_deadline deadline, const char *request_id, ag_peer_reply *rep)
{
    memset(rep, 0, sizeof *rep);
    uint64_t t0 = ag_now_ns();
    ag_breaker_ticket t;
    if (ag_breaker_acquire(p->breaker, &t) < 0) {
        ag_series_observe(p->m_open, 0);
        return AG_EUNAVAIL;
    }
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    size_t tlen = text ? strlen(text) : 0;
    char token[4200];
    bool own = !auth;
    int rc = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (own && (rc = service_token(p->x, token, sizeof token, attempt > 0)) < 0) break;
        rc = raw_call(p, method, path, text, tlen, own ? token : auth, deadline, request_id, rep);
        if (rc < 0 || rep->status != 401 || !own || attempt > 0) break;
        ag_peer_reply_clear(rep); /* our token expired or the keys rotated: renew once */
    }
    if (own) sodium_memzero(token, sizeof token);
    if (text) {
        sodium_memzero(text, tlen); /* it may hold a card number or a secret */
        free(text);
    }
    ag_breaker_release(p->breaker, &t, rc == 0 && rep->status < 500);
    double secs = (double)(ag_now_ns() - t0) / 1e9;
    ag_series_observe(rc == 0 && rep->status < 500               ? p->m_ok
                      : rc == AG_ETIMEDOUT || rc == AG_EDEADLINE ? p->m_timeout
                                                                 : p->m_error,
                      secs);
    if (rc < 0) ag_warn("call failed", AG_FS("peer", p->name), AG_FS("path", path), AG_FERR(rc));
    return rc;
}

/* ---- gRPC --------------------------------------------------------------------------------- */

/* The gRPC base of an HTTP base: the same scheme and host, the port + 100. */
static int grpc_base_of(const char *http, char *out, size_t n)
{
    const char *host = strstr(http, "://");
    if (!host) return AG_EINVAL;
    host += 3;
    const char *colon = strrchr(host, ':');
    const char *slash = strchr(host, '/');
    if (!colon || (slash && colon > slash)) return AG_EINVAL; /* no explicit port */
    long port = strtol(colon + 1, NULL, 10);
    if (port <= 0 || port + 100 > 65535) return AG_EINVAL;
    snprintf(out, n, "%.*s:%ld", (int)(colon - http), http, port + 100);
    return 0;
}

int ag_peer_grpc(ag_peer *p, const char *path, const void *req, size_t len, const char *auth,
                 ag_deadline deadline, ag_grpc_answer *rep)
{
    memset(rep, 0, sizeof *rep);
    if (p->grpc_off || ag_wall_ms() < p->grpc_down_until) return AG_EUNAVAIL;
    svc_extra *x = p->x;
    pthread_mutex_lock(&x->tok_mu);
    if (!x->grpc) ag_grpc_client_new(&x->grpc);
    ag_grpc_client *client = x->grpc;
    pthread_mutex_unlock(&x->tok_mu);
    uint64_t t0 = ag_now_ns();
    ag_breaker_ticket t;
    if (ag_breaker_acquire(p->breaker, &t) < 0) {
        ag_series_observe(p->m_open, 0);
        return AG_EUNAVAIL;
    }
    ag_instance inst;
    bool picked = !p->grpc_url && p->disc && ag_discovery_pick(p->disc, p->name, &inst) == 0;
    char http[192], base[200];
    if (picked)
        ag_instance_url(&inst, http, sizeof http);
    else
        snprintf(http, sizeof http, "%s", p->url);
    int rc = 0;
    if (p->grpc_url)
        snprintf(base, sizeof base, "%s", p->grpc_url);
    else
        rc = grpc_base_of(http, base, sizeof base);
    char token[4200];
    bool own = !auth;
    for (int attempt = 0; rc == 0 && attempt < 2; attempt++) {
        if (own && (rc = service_token(x, token, sizeof token, attempt > 0)) < 0) break;
        rc = ag_grpc_client_call(client, base, path, p->name, own ? token : auth, req, len,
                                 deadline, rep);
        if (rc < 0 || rep->status != AG_GRPC_UNAUTHENTICATED || !own || attempt > 0) break;
        ag_grpc_answer_clear(rep); /* our token expired or the keys rotated: renew once */
    }
    if (own) sodium_memzero(token, sizeof token);
    /* A peer that does not serve the method (an older version, another
     * service on that port) is as good as no gRPC: HTTP then. */
    if (rc == 0 && rep->status == AG_GRPC_UNIMPLEMENTED) {
        ag_grpc_answer_clear(rep);
        rc = AG_EUNAVAIL;
    }
    /* Failing answers count against the breaker; no gRPC answer at all does
     * not (the caller falls back to HTTP, whose call counts). */
    bool failing = rc == 0 && (rep->status == AG_GRPC_UNAVAILABLE ||
                               rep->status == AG_GRPC_INTERNAL ||
                               rep->status == AG_GRPC_UNKNOWN ||
                               rep->status == AG_GRPC_DEADLINE_EXCEEDED);
    ag_breaker_release(p->breaker, &t, !failing && rc != AG_EDEADLINE);
    if (picked) ag_discovery_release(p->disc, &inst, failing ? AG_CALL_FAILED : AG_CALL_OK);
    if (rc == AG_EUNAVAIL || rc == AG_EINVAL) {
        p->grpc_down_until = ag_wall_ms() + 5000;
        ag_warn("no gRPC answer; HTTP for the next 5 s", AG_FS("peer", p->name),
                AG_FS("url", base), AG_FS("path", path));
        return AG_EUNAVAIL;
    }
    double secs = (double)(ag_now_ns() - t0) / 1e9;
    ag_series_observe(rc == AG_EDEADLINE ? p->m_timeout : failing ? p->m_error : p->m_ok, secs);
    return rc;
}
