/*
 * gateway.h — what the modules of agora-gateway share (DESIGN.md §8).
 *
 *   config.c     routes and policies from config/gateway.json; reloads
 *   auth.c       bearer tokens: a cache of verified tokens on the loop, the
 *                JWKS verification itself on the worker pool
 *   proxy.c      the request path: route, CORS, auth, rate limits, breaker,
 *                balancing, upstream connections, streaming, retries,
 *                WebSocket tunnels
 *   dashboard.c  GET /api/v1/dashboard: four upstream calls composed
 *   admin.c      /admin/routes, /admin/upstreams, /admin/breakers,
 *                POST /admin/reload; active health checks
 *   staticfiles.c  web/ at /
 *   ratelimit.c  token buckets in memory or in Redis
 *   main.c       wiring
 *
 * Threading: everything on the request path runs on the I/O loop that
 * accepted the connection and never blocks it. Per-loop state lives in a
 * gw_loop; what loops share (breakers, discovery, the token cache, the
 * current configuration) is thread-safe.
 */
#ifndef AGORA_GATEWAY_H
#define AGORA_GATEWAY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "agora/auth.h"
#include "agora/discovery.h"
#include "agora/http.h"
#include "agora/http_client.h"
#include "agora/metrics.h"
#include "agora/resilience.h"
#include "agora/service.h"
#include "ratelimit.h"

/* ---- Configuration (config.c) -------------------------------------------- */

typedef enum gw_auth_mode { GW_AUTH_PUBLIC = 0, GW_AUTH_OPTIONAL, GW_AUTH_REQUIRED } gw_auth_mode;

typedef struct gw_limit_pair {
    bool has_ip, has_user;
    gw_rl_policy ip, user; /* names "<policy>:ip" and "<policy>:user" */
} gw_limit_pair;

/* An address or CIDR block (trust.c). */
typedef struct gw_cidr {
    int family; /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int bits;
} gw_cidr;

typedef struct gw_upstream_cfg {
    char *name;                /* the service: "catalog" */
    uint64_t timeout_ms;       /* per try; a route may shorten it */
    int retries;               /* extra tries for idempotent requests */
    uint64_t retry_backoff_ms; /* base of the jittered backoff */
    ag_breaker *breaker;       /* shared across reloads (see config.c) */
    bool health_check;         /* actively checked by the gateway (default) */
    int health_fails;          /* failed checks in a row before it is marked down */
    int health_passes;         /* passed checks in a row before it is marked up again */
    /* metric series looked up once (proxy.c): the hot path only adds */
    _Atomic(ag_series *) s_latency;
    _Atomic(ag_series *) s_status[600];
} gw_upstream_cfg;

typedef struct gw_route {
    char *prefix;     /* "/api/v1/products"; matched at a segment boundary */
    char *rewrite;    /* replaces the prefix upstream: "/v1/products" */
    char *service;    /* upstream name */
    unsigned methods; /* bit set of GW_M_*; 0: all */
    gw_auth_mode auth;
    char *role;                  /* required role, or NULL */
    uint64_t timeout_ms;         /* 0: the upstream's */
    int retries;                 /* -1: the upstream's */
    const gw_limit_pair *limits; /* NULL: none */
    bool websocket;              /* upgrades allowed */
    bool spool_body;             /* request bodies go to a file, then upstream from it */
    bool stream_body;            /* request bodies go upstream as they arrive */
    uint64_t max_body_bytes;     /* 0: the server's AGORA_HTTP_MAX_BODY_BYTES */
    gw_upstream_cfg *up;
    /* This route's series of agora_gateway_route_requests_total (by status
     * class 1xx..5xx) and agora_gateway_route_seconds, looked up once and
     * kept here (the families keep the series across reloads). */
    _Atomic(ag_series *) m_count[6];
    _Atomic(ag_series *) m_seconds;
} gw_route;

enum {
    GW_M_GET = 1 << 0,
    GW_M_HEAD = 1 << 1,
    GW_M_POST = 1 << 2,
    GW_M_PUT = 1 << 3,
    GW_M_PATCH = 1 << 4,
    GW_M_DELETE = 1 << 5,
    GW_M_OPTIONS = 1 << 6,
};

typedef struct gw_config {
    atomic_int refs;
    uint64_t generation;
    char *source;         /* the file it came from */
    char *latest_version; /* "v1": what unversioned /api/... means */
    gw_route *routes;     /* sorted by prefix length, longest first */
    int nroutes;
    gw_upstream_cfg *ups;
    int nups;
    char **limit_names;
    gw_limit_pair *limits;
    int nlimits;
    const gw_limit_pair *default_limits;
    char **cors_origins; /* "*" allowed */
    int ncors;
    uint64_t cors_max_age_s;
    uint64_t dashboard_timeout_ms;
    bool admin_loopback_only; /* the admin API from loopback without a token */
    gw_cidr *trusted;         /* "trustedProxies": whose X-Forwarded-For is believed */
    int ntrusted;
    json_t *doc; /* the parsed file, for /admin/routes */
} gw_config;

/* Reads and validates `path`. On failure returns AG_ECONFIG and writes why
 * into `why` ("routes[3].service: unknown upstream \"ordrs\""). Breakers are
 * taken from `prev` by name so that a reload keeps their state. */
int gw_config_load(const char *path, const gw_config *prev, ag_metrics *m, gw_config **out,
                   char *why, size_t why_len);
void gw_config_ref(gw_config *c);
void gw_config_unref(gw_config *c);
/* The route for `path` (versioned already); NULL when none. *method_ok is
 * false when the path matches but not the method (then *allow lists them). */
const gw_route *gw_config_match(const gw_config *c, const char *path, const char *method,
                                bool *method_ok, char *allow, size_t allow_len);
unsigned gw_method_bit(const char *method);
gw_upstream_cfg *gw_config_upstream(const gw_config *c, const char *name);

/* ---- Shared state --------------------------------------------------------- */

typedef struct gw_loop gw_loop;

typedef struct gw_retry_budget {
    atomic_uint_fast64_t requests, retries; /* in the current window */
    atomic_uint_fast64_t window_start_ms;
} gw_retry_budget;

typedef struct gw_gateway {
    ag_service *svc;
    ag_metrics *metrics;
    ag_discovery *disc;
    ag_http_client *http; /* dashboard, health checks, JWKS */
    ag_jwks_client *jwks;
    ag_jwt_policy jwt_policy;
    gw_ratelimit *rl;
    const char *config_path;
    const char *web_dir;
    pthread_mutex_t reload_mu;
    _Atomic(gw_config *) config; /* the newest; loops hold their own ref */
    gw_loop *loops;
    int nloops;
    gw_retry_budget budget;
    double retry_budget_ratio; /* retries allowed per request; 0.2 */
    uint64_t health_interval_ms;
    struct gw_tokens *tokens; /* auth.c */
    /* metrics */
    ag_metric *m_upstream, *m_upstream_latency, *m_retries, *m_rejects, *m_reloads;
    ag_metric *m_ws;
    ag_metric *m_route_count, *m_route_seconds; /* per route prefix */
} gw_gateway;

extern gw_gateway g_gw;

/* Per loop: its current configuration and its idle upstream connections. */
struct gw_loop {
    ag_loop *loop;
    gw_config *config;     /* this loop's reference */
    struct gw_idle *idle;  /* proxy.c: idle connections by address */
    atomic_int idle_total; /* how many, for the admin view (any thread) */
    uv_timer_t sweep;      /* closes idle connections past their time */
    bool sweep_on;
    uint64_t rng;
};

gw_loop *gw_loop_of(ag_http_req *req);
/* The loop's state, made on first use (on that loop's own thread only). */
gw_loop *gw_loop_init(ag_loop *loop);
/* xorshift random for the loop's thread. */
uint64_t gw_rand(gw_loop *gl);

/* Makes the file's configuration current on every loop; reasons in `why`. */
int gw_reload(char *why, size_t why_len);

/* ---- Auth (auth.c) ------------------------------------------------------- */

typedef void (*gw_auth_cb)(void *ud, int rc, const ag_caller *caller, const char *why);
int gw_auth_init(void);
void gw_auth_free(void);
/* Verifies `token`: from the cache at once (cb runs before return), else on
 * the worker pool and back on `loop`. rc 0, AG_EAUTH (why says),
 * AG_EUNAVAIL (keys could not be fetched), AG_EBUSY (pool full). */
void gw_auth_verify(ag_loop *loop, const char *token, gw_auth_cb cb, void *ud);

/* ---- Proxy (proxy.c) ----------------------------------------------------- */

/* The catch-all route handler (AG_ROUTE_ASYNC). */
void gw_proxy_handler(ag_http_req *req, ag_http_res *res, void *ud);
/* The catch-all's body policy (agora/http.h): a route with "spoolBody"
 * spools, "maxBodyBytes" sets the limit; on the loop, at headers complete. */
void gw_proxy_body_policy(ag_http_req *req, ag_body_mode *mode, uint64_t *max_bytes, void *ud);
/* Per-loop setup and teardown of upstream connection pools (on the loop). */
void gw_proxy_loop_init(gw_loop *gl);
void gw_proxy_loop_close(gw_loop *gl);
json_t *gw_proxy_pool_json(void);
/* CORS and security headers on any response of the gateway's own. */
void gw_common_headers(ag_http_req *req, ag_http_res *res, const gw_config *c);
/* The caller's address for per-IP limits. */
/* trust.c: the client's address: the peer's, or, when the peer is one of
 * the configuration's trusted proxies, the first untrusted address of
 * X-Forwarded-For (else Forwarded's for=) from the right. In the request's
 * arena or the request's own. */
const char *gw_client_ip(const gw_config *c, ag_http_req *req);
/* The same from the parts: the peer's address and the requests's
 * X-Forwarded-For and Forwarded lists (NULL when absent); a result that is
 * not `peer` is in `arena`. */
const char *gw_client_ip_of(const gw_config *c, const char *peer, const char *xff,
                            const char *forwarded, ag_arena *arena);
/* Whether `ip` (or the request's peer) is a trusted proxy. */
bool gw_trusted(const gw_config *c, const char *ip);
bool gw_trusted_peer(const gw_config *c, ag_http_req *req);
/* "10.0.0.0/8", "2001:db8::/32" or one address; AG_EINVAL when not one. */
int gw_cidr_parse(const char *s, gw_cidr *out);

/* ---- Dashboard, admin, static files ------------------------------------- */

void gw_dashboard_handler(ag_http_req *req, ag_http_res *res, void *ud);
void gw_admin_register(ag_router *r);
int gw_health_start(void);
void gw_health_stop(void);
/* Serves `path` from web/ (GET/HEAD); false when no such file. Runs the
 * file read on the worker pool and answers on the request's loop. */
bool gw_static_serve(ag_http_req *req, ag_http_res *res, const gw_config *c);

#endif
