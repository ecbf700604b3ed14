/*
 * proxy.c — the gateway's request path, on the I/O loop, never blocking.
 *
 * One exchange per client request. It walks these states; each arrow is a
 * callback on the loop that accepted the request:
 *
 *   ROUTE ─► AUTH ─► LIMIT ─► PICK ─► CONNECT ─► WAIT_HEAD ─► STREAM ─► DONE
 *    │ 404/405 │401/403 │429    │503     │ fail      │ 502/503/504     │
 *    │ CORS    │        │       │        ▼           ▼ (idempotent)    │
 *    │ preflight        │       │      BACKOFF ◄── retry? ── budget     │
 *    ▼                  ▼       ▼        └──► PICK (another instance)   │
 *   answered       answered  answered                     101 ─► TUNNEL ┘
 *
 * Upstream connections are ours rather than libcurl's (which the dashboard
 * and health checks use): the proxy streams the upstream's read buffers
 * straight into the client's socket without a copy (ag_res_loop_write
 * borrows them, reference-counted), pauses either side under backpressure,
 * and turns a 101 into a raw tunnel, none of which curl's easy interface
 * exposes. Responses are parsed with llhttp, like requests.
 *
 * Each loop keeps idle keep-alive connections per upstream address
 * (gw_idle); an idle connection is watched, so one the upstream closes is
 * dropped at once, and a sweep closes those idle past AGORA_GATEWAY_UPSTREAM_IDLE.
 *
 * Retries: only before any byte of the answer went to the client; for
 * idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE) after a connection
 * failure, a timeout or a 502/503/504; for every method when the connection
 * could not be made (the request was never sent). Each retry waits a
 * jittered, doubling backoff, prefers another instance, and must fit in the
 * retry budget: retries may be at most retry_budget_ratio of the requests in
 * the last second (plus 10), so retries cannot multiply an outage.
 *
 * Request bodies: in memory (the server's 1 MiB limit) and written with the
 * head, or, for a route with "spoolBody", spooled to a file by the server
 * before the handler runs (gw_proxy_body_policy decides at headers
 * complete, so "maxBodyBytes" answers 413 before the body is read). A
 * spooled body is pumped upstream from the file PUMP_CHUNK bytes at a time
 * with one write in flight (the upstream's pace is the backpressure), so
 * an upload costs one buffer of memory whatever its size; a retry pumps it
 * again from the start.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <llhttp.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "agora/clock.h"
#include "agora/config.h"
#include "agora/id.h"
#include "agora/log.h"
#include "agora/trace.h"
#include "gateway.h"

#define RBUF_SIZE 65536
#define MAX_UP_HEADERS 100
#define CLIENT_HIGH_WATER (1u << 20)
#define CLIENT_LOW_WATER (256u << 10)
#define MAX_IDLE_PER_ADDR 256
#define CONNECT_TIMEOUT_MS 2000
#define PUMP_CHUNK 65536             /* a spooled body goes upstream this much at a time */
#define BODY_HIGH_WATER (256u << 10) /* a streamed body: pause the client past this queue */
#define BODY_LOW_WATER (64u << 10)   /* ... and read it again below this */

typedef struct exchange exchange;

/* A read buffer of an upstream connection, lent to client writes. */
typedef struct rbuf {
    int refs;
    char data[RBUF_SIZE];
} rbuf;

static void rbuf_unref(void *p)
{
    rbuf *b = p;
    if (--b->refs == 0) ag_free(b);
}

typedef struct upconn {
    uv_tcp_t tcp;
    union {
        uv_connect_t connect;
        uv_getaddrinfo_t gai;
    } u;
    gw_loop *gl;
    char key[96]; /* "address:port" */
    int port;
    struct upconn *next; /* in the idle list */
    exchange *ex;        /* NULL while idle */
    llhttp_t parser;
    rbuf *rb;
    uint64_t idle_since_ms;
    int writes; /* in flight */
    /* a spooled request body being pumped from its file (the request's) */
    int body_fd;
    uint64_t body_off, body_size;
    char *pump_buf; /* PUMP_CHUNK bytes, made on first use */
    uv_write_t pump_w;
    bool closing, connected, reused, paused;
} upconn;

typedef struct gw_idle {
    char key[96];
    upconn *head;
    int count;
    struct gw_idle *next;
} gw_idle;

typedef enum ex_state {
    EX_ROUTE,
    EX_AUTH,
    EX_LIMIT,
    EX_BACKOFF,
    EX_CONNECT,
    EX_WAIT_HEAD,
    EX_STREAM,
    EX_TUNNEL,
    EX_DONE
} ex_state;

struct exchange {
    uint64_t t0_ns; /* uv_hrtime() at the start */
    ag_http_req *req;
    ag_http_res *res;
    gw_loop *gl;
    gw_config *cfg; /* a reference */
    const gw_route *route;
    ex_state state;
    const char *upath; /* the upstream target, in the request's arena */
    ag_caller caller;
    bool has_caller;
    gw_rl_result rl;
    bool has_rl;
    int limit_step; /* 0: per IP, 1: per user, 2: done */
    bool idempotent, ws;
    int attempt, max_tries;
    uint64_t try_timeout_ms;
    ag_instance inst;
    bool picked;
    char last_id[128]; /* the instance of the previous try */
    ag_breaker_ticket ticket;
    bool ticketed;
    upconn *uc;
    uv_timer_t timer;
    int refs; /* the exchange itself, the timer handle */
    uint64_t try_start_ns;
    /* the upstream's response head */
    ag_buf hbuf;
    int nh;
    struct {
        uint32_t name, value;
    } hoff[MAX_UP_HEADERS];
    int hstate; /* 0 none, 1 field, 2 value */
    bool head_overflow;
    int status;
    bool head_only;
    /* A streamed request body (a "streamBody" route): it goes upstream as it
     * arrives from the client, so it can be sent only once. */
    bool body_stream;  /* this request's body is streamed */
    bool body_started; /* reading began: no retry past this point */
    bool body_ended;   /* its last byte was queued upstream, or it failed */
    bool body_chunked; /* the client sent no Content-Length: chunked upstream */
    bool body_held;    /* the client is paused while the upstream catches up */
};

static void ex_unref(exchange *ex);
static void ex_try(exchange *ex);
static void ex_finish_error(exchange *ex, int status, const char *code, const char *msg);
static void up_close(upconn *uc);
static void up_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);
static void up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

static llhttp_settings_t g_up_settings;

/* ---- Small helpers -------------------------------------------------------- */

uint64_t gw_rand(gw_loop *gl)
{
    uint64_t x = gl->rng ? gl->rng : 0x9E3779B97F4A7C15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    gl->rng = x;
    return x;
}

static bool origin_allowed(const gw_config *c, const char *origin)
{
    for (int i = 0; i < c->ncors; i++)
        if (strcmp(c->cors_origins[i], "*") == 0 || strcasecmp(c->cors_origins[i], origin) == 0)
            return true;
    return false;
}

void gw_common_headers(ag_http_req *req, ag_http_res *res, const gw_config *c)
{
    ag_res_header(res, "X-Content-Type-Options", "nosniff");
    ag_res_header(res, "X-Frame-Options", "DENY");
    ag_res_header(res, "Referrer-Policy", "no-referrer");
    const char *origin = ag_req_header(req, "Origin");
    if (origin && c && origin_allowed(c, origin)) {
        ag_res_header(res, "Access-Control-Allow-Origin", origin);
        ag_res_header(res, "Access-Control-Allow-Credentials", "true");
        ag_res_header(
            res, "Access-Control-Expose-Headers",
            "X-Request-Id, traceresponse, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, "
            "Retry-After");
        ag_res_header(res, "Vary", "Origin");
    }
}

static void rl_headers(exchange *ex)
{
    if (!ex->has_rl) return;
    char v[32];
    ag_arena *a = ag_req_arena(ex->req);
    snprintf(v, sizeof v, "%ld", ex->rl.limit);
    ag_res_header(ex->res, "RateLimit-Limit", ag_arena_strdup(a, v));
    snprintf(v, sizeof v, "%ld", ex->rl.remaining);
    ag_res_header(ex->res, "RateLimit-Remaining", ag_arena_strdup(a, v));
    snprintf(v, sizeof v, "%ld", ex->rl.reset_s);
    ag_res_header(ex->res, "RateLimit-Reset", ag_arena_strdup(a, v));
}

static ag_series *series2(ag_metric *f, const char *a, const char *b)
{
    const char *v[2] = {a, b};
    return ag_metric_series(f, v);
}

static void count_reject(const char *reason)
{
    const char *v[1] = {reason};
    ag_series_inc(ag_metric_series(g_gw.m_rejects, v), 1);
}

/* ---- Finishing ----------------------------------------------------------------- */

static void on_timer_closed(uv_handle_t *h)
{
    ex_unref(h->data);
}

static void ex_unref(exchange *ex)
{
    if (--ex->refs > 0) return;
    ag_buf_release(&ex->hbuf);
    gw_config_unref(ex->cfg);
    ag_free(ex);
}

/* Gives back the balancer's pick of the current try, with its outcome. */
static void ex_release_pick(exchange *ex, ag_call_outcome outcome)
{
    if (ex->picked) {
        ag_discovery_release(g_gw.disc, &ex->inst, outcome);
        snprintf(ex->last_id, sizeof ex->last_id, "%s", ex->inst.id);
        ex->picked = false;
    }
}

/* Gives back the breaker's ticket. The breaker judges the request, not each
 * try: one instance of two hanging makes every first try fail, but if the
 * retry succeeds the service is up, and it is the balancer's business
 * (ejection) to stop choosing the bad instance. */
static void ex_release_breaker(exchange *ex, bool ok)
{
    if (ex->ticketed) {
        ag_breaker_release(ex->route->up->breaker, &ex->ticket, ok);
        ex->ticketed = false;
    }
}

static void ex_release_try(exchange *ex, ag_call_outcome outcome, bool breaker_ok)
{
    ex_release_pick(ex, outcome);
    ex_release_breaker(ex, breaker_ok);
}

/* Detaches the upstream connection: back to the idle pool when it is clean,
 * closed otherwise. */
static void ex_drop_conn(exchange *ex, bool reusable)
{
    upconn *uc = ex->uc;
    if (!uc) return;
    ex->uc = NULL;
    uc->ex = NULL;
    bool body_unsent =
        (uc->body_fd >= 0 && uc->body_off < uc->body_size) || (ex->body_stream && !ex->body_ended);
    uc->body_fd = -1; /* the request's file: not ours past this exchange */
    if (!reusable || uc->closing || uc->writes > 0 || body_unsent) {
        up_close(uc);
        return;
    }
    gw_loop *gl = uc->gl;
    gw_idle *id = gl->idle;
    while (id && strcmp(id->key, uc->key) != 0)
        id = id->next;
    if (!id) {
        id = ag_calloc(1, sizeof *id);
        snprintf(id->key, sizeof id->key, "%s", uc->key);
        id->next = gl->idle;
        gl->idle = id;
    }
    if (id->count >= MAX_IDLE_PER_ADDR) {
        up_close(uc);
        return;
    }
    if (uc->paused) { /* keep watching it: an upstream close is seen at once */
        uv_read_start((uv_stream_t *)&uc->tcp, up_alloc, up_on_read);
        uc->paused = false;
    }
    uc->idle_since_ms = ag_now_ms();
    uc->next = id->head;
    id->head = uc;
    id->count++;
    atomic_fetch_add(&gl->idle_total, 1);
}

/* The end of the exchange, whatever happened: one finishing call on the
 * response (which only releases it when the client has gone). */
/* The exchange's end in its route's series (the framework's own request
 * metrics see one catch-all route for the whole gateway). */
static void route_record(exchange *ex, bool tunnel)
{
    gw_route *rt = (gw_route *)ex->route; /* only its metric cache is written */
    int status = ag_res_get_status(ex->res);
    int cls = status >= 100 && status <= 599 ? status / 100 : 5;
    ag_series *cnt = atomic_load_explicit(&rt->m_count[cls], memory_order_acquire);
    ag_series *sec = atomic_load_explicit(&rt->m_seconds, memory_order_acquire);
    if (!cnt || !sec) {
        char c[4] = {(char)('0' + cls), 'x', 'x', '\0'};
        const char *v[2] = {rt->prefix, c};
        cnt = ag_metric_series(g_gw.m_route_count, v);
        sec = ag_metric_series(g_gw.m_route_seconds, v);
        atomic_store_explicit(&rt->m_count[cls], cnt, memory_order_release);
        atomic_store_explicit(&rt->m_seconds, sec, memory_order_release);
    }
    ag_series_inc(cnt, 1);
    /* A WebSocket tunnel's life is not a latency. */
    if (!tunnel) ag_series_observe(sec, (double)(uv_hrtime() - ex->t0_ns) / 1e9);
}

static void ex_done(exchange *ex)
{
    if (ex->state == EX_DONE) return;
    if (ex->route) route_record(ex, ex->state == EX_TUNNEL);
    ex_state was = ex->state;
    ex->state = EX_DONE;
    uv_timer_stop(&ex->timer);
    ex_release_try(ex, AG_CALL_NEUTRAL, true);
    ex_drop_conn(ex, false);
    if (was == EX_STREAM)
        ag_res_loop_abort(ex->res);
    else if (was == EX_TUNNEL)
        ag_res_tunnel_close(ex->res);
    else
        ag_res_send(ex->res);
    uv_close((uv_handle_t *)&ex->timer, on_timer_closed);
    ex_unref(ex);
}

static void ex_finish_error(exchange *ex, int status, const char *code, const char *msg)
{
    if (ex->state == EX_DONE) return;
    if (ex->state == EX_STREAM || ex->state == EX_TUNNEL) { /* too late for an answer */
        ex_done(ex);
        return;
    }
    gw_common_headers(ex->req, ex->res, ex->cfg);
    rl_headers(ex);
    /* Nothing reached the service (it is down or not yet marked so): as
     * for a service known to be down, try again in a moment. */
    if (status == 503 && strcmp(code, "UPSTREAM_UNREACHABLE") == 0)
        ag_res_header(ex->res, "Retry-After", "1");
    ag_res_error(ex->res, status, code, msg, NULL);
    ex_done(ex);
}

static void ex_on_abort(void *ud)
{
    exchange *ex = ud;
    count_reject("client_gone");
    ex_done(ex);
}

/* ---- Upstream connections ------------------------------------------------------ */

static void up_on_closed(uv_handle_t *h)
{
    upconn *uc = h->data;
    if (uc->rb) rbuf_unref(uc->rb);
    ag_free(uc->pump_buf);
    ag_free(uc);
}

static void up_close(upconn *uc)
{
    if (uc->closing) return;
    uc->closing = true;
    if (uc->ex) {
        uc->ex->uc = NULL;
        uc->ex = NULL;
    }
    uv_close((uv_handle_t *)&uc->tcp, up_on_closed);
}

static void up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    upconn *uc = h->data;
    if (uc->rb && uc->rb->refs > 1) { /* still lent to a client write */
        rbuf_unref(uc->rb);
        uc->rb = NULL;
    }
    if (!uc->rb) {
        uc->rb = ag_malloc(sizeof *uc->rb);
        uc->rb->refs = 1;
    }
    buf->base = uc->rb->data;
    buf->len = RBUF_SIZE;
}

/* Takes an idle connection to `key`, or NULL. */
static upconn *idle_take(gw_loop *gl, const char *key)
{
    for (gw_idle *id = gl->idle; id; id = id->next) {
        if (strcmp(id->key, key) != 0) continue;
        upconn *uc = id->head;
        if (!uc) return NULL;
        id->head = uc->next;
        id->count--;
        atomic_fetch_sub(&gl->idle_total, 1);
        uc->next = NULL;
        return uc;
    }
    return NULL;
}

static void idle_sweep(uv_timer_t *t)
{
    gw_loop *gl = t->data;
    uint64_t now = ag_now_ms();
    static uint64_t idle_ms;
    if (!idle_ms) {
        if (ag_config_duration_ms("AGORA_GATEWAY_UPSTREAM_IDLE", 20000, &idle_ms) < 0)
            idle_ms = 20000;
    }
    for (gw_idle *id = gl->idle; id; id = id->next) {
        upconn **pp = &id->head;
        while (*pp) {
            upconn *uc = *pp;
            if (now - uc->idle_since_ms >= idle_ms) {
                *pp = uc->next;
                id->count--;
                atomic_fetch_sub(&gl->idle_total, 1);
                up_close(uc);
            } else {
                pp = &uc->next;
            }
        }
    }
}

void gw_proxy_loop_init(gw_loop *gl)
{
    uv_timer_init(ag_loop_uv(gl->loop), &gl->sweep);
    gl->sweep.data = gl;
    uv_timer_start(&gl->sweep, idle_sweep, 5000, 5000);
    gl->sweep_on = true;
    gl->rng = ag_now_ns() ^ ((uint64_t)(uintptr_t)gl << 17);
}

void gw_proxy_loop_close(gw_loop *gl)
{
    if (gl->sweep_on) {
        uv_close((uv_handle_t *)&gl->sweep, NULL);
        gl->sweep_on = false;
    }
    while (gl->idle) {
        gw_idle *id = gl->idle;
        gl->idle = id->next;
        while (id->head) {
            upconn *uc = id->head;
            id->head = uc->next;
            up_close(uc);
        }
        ag_free(id);
    }
}

/* ---- Upstream response parsing -------------------------------------------------- */

static exchange *ex_of(llhttp_t *p)
{
    upconn *uc = p->data;
    return uc->ex;
}

static int up_on_header_field(llhttp_t *p, const char *at, size_t len)
{
    exchange *ex = ex_of(p);
    if (!ex) return HPE_USER;
    if (ex->hstate != 1) {
        if (ex->hstate == 2) ag_buf_append(&ex->hbuf, "", 1);
        if (ex->nh == MAX_UP_HEADERS) {
            ex->head_overflow = true;
            return HPE_USER;
        }
        ex->hoff[ex->nh].name = (uint32_t)ex->hbuf.len;
        ex->hoff[ex->nh].value = 0;
        ex->nh++;
        ex->hstate = 1;
    }
    return ag_buf_append(&ex->hbuf, at, len) < 0 ? HPE_USER : 0;
}

static int up_on_header_value(llhttp_t *p, const char *at, size_t len)
{
    exchange *ex = ex_of(p);
    if (!ex || ex->nh == 0) return HPE_USER;
    if (ex->hstate != 2) {
        ag_buf_append(&ex->hbuf, "", 1);
        ex->hoff[ex->nh - 1].value = (uint32_t)ex->hbuf.len;
        ex->hstate = 2;
    }
    return ag_buf_append(&ex->hbuf, at, len) < 0 ? HPE_USER : 0;
}

/* Hop-by-hop and server-owned headers are not passed on (RFC 9110 §7.6.1). */
static bool hop_header(const char *name)
{
    static const char *const hop[] = {"Connection",
                                      "Keep-Alive",
                                      "Proxy-Connection",
                                      "Transfer-Encoding",
                                      "TE",
                                      "Trailer",
                                      "Upgrade",
                                      "Content-Length",
                                      "Date",
                                      "X-Request-Id",
                                      "traceresponse", /* the gateway sends its own */
                                      "Proxy-Authenticate",
                                      "Proxy-Authorization"};
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
        if (strcasecmp(name, hop[i]) == 0) return true;
    return false;
}

static const char *head_name(exchange *ex, int i)
{
    return ex->hbuf.data + ex->hoff[i].name;
}

static const char *head_value(exchange *ex, int i)
{
    return ex->hoff[i].value ? ex->hbuf.data + ex->hoff[i].value : "";
}

static bool retry_allowed(exchange *ex, bool sent)
{
    if (ex->attempt >= ex->max_tries) return false;
    if (sent && !ex->idempotent) return false;
    if (ex->body_started) return false; /* a streamed body cannot be sent again */
    if (ex->ws) return false;
    /* the budget: retries in the last second ≤ ratio × requests + 10 */
    gw_retry_budget *b = &g_gw.budget;
    uint64_t reqs = atomic_load(&b->requests), rets = atomic_load(&b->retries);
    if ((double)rets >= g_gw.retry_budget_ratio * (double)reqs + 10.0) {
        count_reject("retry_budget");
        return false;
    }
    return true;
}

static void on_backoff(uv_timer_t *t)
{
    exchange *ex = t->data;
    if (ex->state == EX_BACKOFF) ex_try(ex);
}

/* A try failed before anything reached the client: retry, or answer. */
static void ex_try_failed(exchange *ex, bool sent, int status, const char *code, const char *msg)
{
    ex_release_pick(ex, AG_CALL_FAILED);
    ex_drop_conn(ex, false);
    uv_timer_stop(&ex->timer);
    ag_series_inc(series2(g_gw.m_upstream, ex->route->service, code), 1);
    if (retry_allowed(ex, sent)) {
        uint64_t base = ex->route->up->retry_backoff_ms << (ex->attempt - 1);
        uint64_t wait = base / 2 + (base ? gw_rand(ex->gl) % (base + 1) : 0);
        if (ag_deadline_remaining(ag_req_deadline(ex->req)) > wait + 5) {
            atomic_fetch_add(&g_gw.budget.retries, 1);
            ag_series_inc(series2(g_gw.m_retries, ex->route->service, code), 1);
            ex->state = EX_BACKOFF;
            uv_timer_start(&ex->timer, on_backoff, wait, 0);
            return;
        }
    }
    ex_release_breaker(ex, false);
    ex_finish_error(ex, status, code, msg);
}

static int up_on_headers_complete(llhttp_t *p)
{
    upconn *uc = p->data;
    exchange *ex = uc->ex;
    if (!ex) return HPE_USER;
    if (ex->hstate == 2) ag_buf_append(&ex->hbuf, "", 1);
    ex->hstate = 0;
    ex->status = p->status_code;
    uv_timer_stop(&ex->timer);
    double secs = (double)(ag_now_ns() - ex->try_start_ns) / 1e9;
    gw_upstream_cfg *up = ex->route->up;
    ag_series *lat = atomic_load(&up->s_latency);
    if (!lat) {
        const char *v[1] = {ex->route->service};
        lat = ag_metric_series(g_gw.m_upstream_latency, v);
        atomic_store(&up->s_latency, lat);
    }
    ag_series_observe(lat, secs);

    if (ex->ws && ex->status == 101) return 0; /* the tunnel starts at message complete */
    if (ex->status >= 502 && ex->status <= 504 && retry_allowed(ex, true)) {
        char msg[96];
        snprintf(msg, sizeof msg, "%s answered %d", ex->route->service, ex->status);
        ex_try_failed(ex, true, 502, "BAD_GATEWAY", msg);
        return HPE_USER; /* stop parsing: the connection is closed */
    }
    bool failed = ex->status >= 502 && ex->status <= 504;
    ex_release_try(ex, failed ? AG_CALL_FAILED : AG_CALL_OK, ex->status < 500);
    int sc = ex->status >= 100 && ex->status < 600 ? ex->status : 0;
    ag_series *cnt = atomic_load(&up->s_status[sc]);
    if (!cnt) {
        char code[8];
        snprintf(code, sizeof code, "%d", ex->status);
        cnt = series2(g_gw.m_upstream, ex->route->service, code);
        atomic_store(&up->s_status[sc], cnt);
    }
    ag_series_inc(cnt, 1);

    for (int i = 0; i < ex->nh; i++) {
        const char *name = head_name(ex, i);
        if (!hop_header(name)) ag_res_header(ex->res, name, head_value(ex, i));
    }
    gw_common_headers(ex->req, ex->res, ex->cfg);
    rl_headers(ex);
    int64_t len = -1;
    if (ex->status == 204 || ex->status == 304 || ex->status < 200)
        len = 0;
    else if (p->flags & F_CONTENT_LENGTH)
        len = (int64_t)p->content_length;
    if (ag_res_loop_begin(ex->res, ex->status, len) < 0) {
        ex->state = EX_STREAM;
        ex_done(ex);
        return HPE_USER;
    }
    ex->state = EX_STREAM;
    return ex->head_only ? 1 : 0; /* 1: a HEAD answer has no body */
}

static void up_resume(void *ud)
{
    upconn *uc = ud;
    if (uc->closing || !uc->paused) return;
    uc->paused = false;
    uv_read_start((uv_stream_t *)&uc->tcp, up_alloc, up_on_read);
}

static int up_on_body(llhttp_t *p, const char *at, size_t len)
{
    upconn *uc = p->data;
    exchange *ex = uc->ex;
    if (!ex || ex->state != EX_STREAM) return HPE_USER;
    uc->rb->refs++;
    long long queued = ag_res_loop_write(ex->res, at, len, rbuf_unref, uc->rb);
    if (queued < 0) {
        if (uc->ex) ex_done(ex);
        return HPE_USER;
    }
    if ((size_t)queued > CLIENT_HIGH_WATER && !uc->paused) {
        uv_read_stop((uv_stream_t *)&uc->tcp);
        uc->paused = true;
        ag_res_on_drain(ex->res, CLIENT_LOW_WATER, up_resume, uc);
    }
    return 0;
}

static int up_on_message_complete(llhttp_t *p)
{
    upconn *uc = p->data;
    exchange *ex = uc->ex;
    if (!ex) return HPE_USER;
    if (ex->ws && ex->status == 101) return HPE_PAUSED; /* raw bytes follow */
    if (ex->state != EX_STREAM) return HPE_USER;
    bool keep = llhttp_should_keep_alive(p);
    if (ex->route) route_record(ex, false);
    ex->state = EX_DONE;
    uv_timer_stop(&ex->timer);
    ex_drop_conn(ex, keep);
    ag_res_loop_end(ex->res);
    uv_close((uv_handle_t *)&ex->timer, on_timer_closed);
    ex_unref(ex);
    return HPE_PAUSED; /* anything after the answer is not ours to parse */
}

static void up_settings_init(void)
{
    llhttp_settings_init(&g_up_settings);
    g_up_settings.on_header_field = up_on_header_field;
    g_up_settings.on_header_value = up_on_header_value;
    g_up_settings.on_headers_complete = up_on_headers_complete;
    g_up_settings.on_body = up_on_body;
    g_up_settings.on_message_complete = up_on_message_complete;
}

/* ---- WebSocket tunnels ------------------------------------------------------------ */

typedef struct tw {
    uv_write_t w;
    upconn *uc;
    size_t len;
    char data[];
} tw;

static void tunnel_write_done(uv_write_t *w, int status)
{
    tw *t = (tw *)w;
    upconn *uc = t->uc;
    uc->writes--;
    ag_free(t);
    exchange *ex = uc->ex;
    if (!ex || ex->state != EX_TUNNEL) return;
    if (status < 0) {
        ex_done(ex);
        return;
    }
    if (uv_stream_get_write_queue_size((uv_stream_t *)&uc->tcp) < CLIENT_LOW_WATER)
        ag_res_tunnel_pause(ex->res, false);
}

/* Client → upstream. */
static void tunnel_on_data(void *ud, const char *data, size_t len)
{
    exchange *ex = ud;
    upconn *uc = ex->uc;
    if (!uc || ex->state != EX_TUNNEL) return;
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    size_t done = 0;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&uc->tcp) == 0) {
        int n = uv_try_write((uv_stream_t *)&uc->tcp, &b, 1);
        if (n > 0)
            done = (size_t)n;
        else if (n < 0 && n != UV_EAGAIN) {
            ex_done(ex);
            return;
        }
    }
    if (done == len) return;
    tw *t = ag_malloc(sizeof *t + (len - done));
    t->uc = uc;
    t->len = len - done;
    memcpy(t->data, data + done, len - done);
    uv_buf_t rest = uv_buf_init(t->data, (unsigned)t->len);
    if (uv_write(&t->w, (uv_stream_t *)&uc->tcp, &rest, 1, tunnel_write_done) < 0) {
        ag_free(t);
        ex_done(ex);
        return;
    }
    uc->writes++;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&uc->tcp) > CLIENT_HIGH_WATER)
        ag_res_tunnel_pause(ex->res, true);
}

static void tunnel_on_close(void *ud)
{
    ex_done(ud);
}

static void tunnel_from_upstream(exchange *ex, upconn *uc, const char *data, size_t len)
{
    if (len == 0) return;
    uc->rb->refs++;
    long long q = ag_res_loop_write(ex->res, data, len, rbuf_unref, uc->rb);
    if (q < 0) {
        ex_done(ex);
        return;
    }
    if ((size_t)q > CLIENT_HIGH_WATER && !uc->paused) {
        uv_read_stop((uv_stream_t *)&uc->tcp);
        uc->paused = true;
        ag_res_on_drain(ex->res, CLIENT_LOW_WATER, up_resume, uc);
    }
}

static void tunnel_begin(exchange *ex, upconn *uc, const char *rest, size_t rest_len)
{
    ex_release_try(ex, AG_CALL_OK, true);
    for (int i = 0; i < ex->nh; i++) {
        const char *name = head_name(ex, i);
        if (strcasecmp(name, "Content-Length") == 0 || strcasecmp(name, "Date") == 0 ||
            strcasecmp(name, "X-Request-Id") == 0 || strcasecmp(name, "Transfer-Encoding") == 0)
            continue;
        ag_res_header(ex->res, name, head_value(ex, i));
    }
    ag_res_header(ex->res, "Connection", "Upgrade");
    ag_tunnel_cbs cbs = {.on_data = tunnel_on_data, .on_close = tunnel_on_close};
    if (ag_res_tunnel(ex->res, 101, &cbs, ex) < 0) {
        ex_done(ex);
        return;
    }
    ex->state = EX_TUNNEL;
    const char *v[1] = {ex->route->service};
    ag_series_inc(ag_metric_series(g_gw.m_ws, v), 1);
    tunnel_from_upstream(ex, uc, rest, rest_len);
}

/* ---- Reading from the upstream ----------------------------------------------------- */

static void up_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    upconn *uc = s->data;
    exchange *ex = uc->ex;
    if (n == 0) return;
    if (!ex) { /* idle: the upstream closed it, or sent what nobody asked for */
        for (gw_idle *id = uc->gl->idle; id; id = id->next) {
            upconn **pp = &id->head;
            while (*pp && *pp != uc)
                pp = &(*pp)->next;
            if (*pp) {
                *pp = uc->next;
                id->count--;
                atomic_fetch_sub(&uc->gl->idle_total, 1);
                break;
            }
        }
        up_close(uc);
        return;
    }
    if (ex->state == EX_TUNNEL) {
        if (n < 0) {
            ex_done(ex);
            return;
        }
        tunnel_from_upstream(ex, uc, buf->base, (size_t)n);
        return;
    }
    if (n < 0) {
        if (ex->state == EX_STREAM) {
            /* A close-delimited body ends with the connection. */
            if (llhttp_finish(&uc->parser) == HPE_OK && ex->state == EX_DONE) return;
            ex_done(ex); /* cut short: the client sees a truncated body */
            return;
        }
        /* Nothing came back: a reused connection the upstream had closed is
         * safe to retry for any method only if no byte was answered; we
         * cannot know it was not processed, so only idempotent ones. */
        char msg[128];
        snprintf(msg, sizeof msg, "%s closed the connection without answering", ex->route->service);
        ex_try_failed(ex, true, 502, "BAD_GATEWAY", msg);
        return;
    }
    llhttp_errno_t err = llhttp_execute(&uc->parser, buf->base, (size_t)n);
    if (err == HPE_OK) {
        /* The head went out with the body bytes of this read, if any;
         * without them it must not wait for the next read. */
        if (uc->ex == ex && ex->state == EX_STREAM) ag_res_loop_flush(ex->res);
        return;
    }
    if (err == HPE_PAUSED_UPGRADE || (err == HPE_PAUSED && ex->ws && ex->status == 101)) {
        const char *pos = llhttp_get_error_pos(&uc->parser);
        size_t used = pos ? (size_t)(pos - buf->base) : (size_t)n;
        tunnel_begin(ex, uc, buf->base + used, (size_t)n - used);
        return;
    }
    if (err == HPE_PAUSED) { /* the answer is complete (ex is gone) */
        const char *pos = llhttp_get_error_pos(&uc->parser);
        if (pos && pos < buf->base + n) up_close(uc); /* extra bytes: not reusable */
        return;
    }
    if (!uc->ex) return; /* the exchange ended inside a callback */
    if (ex->state == EX_STREAM) {
        ex_done(ex);
        return;
    }
    ex_try_failed(ex, true, 502, "BAD_GATEWAY", "the upstream's answer was malformed");
}

/* ---- Sending the request --------------------------------------------------------- */

typedef struct upw {
    uv_write_t w;
    upconn *uc;
    char *head;
} upw;

static void up_write_done(uv_write_t *w, int status)
{
    upw *u = (upw *)w;
    upconn *uc = u->uc;
    uc->writes--;
    ag_free(u->head);
    ag_free(u);
    if (status < 0 && uc->ex && uc->ex->state == EX_WAIT_HEAD) {
        /* The read side sees the reset too; let it decide. */
        up_close(uc);
    }
}

/* Request headers not passed on as they are: hop-by-hop ones, those the
 * gateway sets itself, and identity headers a client must not forge. A
 * switch on the first letter keeps this to one or two comparisons. */
static bool skip_request_header(const char *name, bool ws)
{
    static const char *const by_letter[26][8] = {
        ['c' - 'a'] = {"Connection", "Content-Length"},
        ['e' - 'a'] = {"Expect"},
        ['h' - 'a'] = {"Host"},
        ['k' - 'a'] = {"Keep-Alive"},
        ['p' - 'a'] = {"Proxy-Connection", "Proxy-Authorization"},
        ['t' - 'a'] = {"TE", "Trailer", "Transfer-Encoding"},
        ['x' - 'a'] = {"X-Request-Id", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host",
                       "X-User-Id", "X-User-Email", "X-User-Role", AG_DEADLINE_HEADER},
    };
    int ch = tolower((unsigned char)name[0]);
    if (ch == 'u') return !ws && strcasecmp(name, "Upgrade") == 0;
    if (ch < 'a' || ch > 'z') return false;
    for (int i = 0; i < 8 && by_letter[ch - 'a'][i]; i++)
        if (strcasecmp(name, by_letter[ch - 'a'][i]) == 0) return true;
    return false;
}

static void buf_header(ag_buf *b, const char *name, const char *value)
{
    ag_buf_appends(b, name);
    ag_buf_append(b, ": ", 2);
    ag_buf_appends(b, value);
    ag_buf_append(b, "\r\n", 2);
}

static void up_pump(upconn *uc);

static void up_pump_done(uv_write_t *w, int status)
{
    upconn *uc = w->data;
    uc->writes--;
    /* A failed write: the read side sees the reset or the upstream's early
     * answer (an upstream may refuse a body before reading it) and decides. */
    if (status < 0) return;
    up_pump(uc);
}

/* Sends the spooled body from uc->body_off on: direct writes while the
 * socket takes them, then one queued write whose completion continues. It
 * stops when the exchange has let the connection go (the response may be
 * done and the file closed then). */
static void up_pump(upconn *uc)
{
    while (!uc->closing && uc->ex && uc->body_fd >= 0 && uc->body_off < uc->body_size) {
        exchange *ex = uc->ex;
        if (ex->state != EX_WAIT_HEAD && ex->state != EX_STREAM) return;
        if (!uc->pump_buf) uc->pump_buf = ag_malloc(PUMP_CHUNK);
        uint64_t left = uc->body_size - uc->body_off;
        size_t want = left < PUMP_CHUNK ? (size_t)left : PUMP_CHUNK;
        ssize_t n = pread(uc->body_fd, uc->pump_buf, want, (off_t)uc->body_off);
        if (n <= 0) {
            ag_error("spooled body unreadable", AG_FS("requestId", ag_req_id(ex->req)),
                     AG_FS("error", n < 0 ? strerror(errno) : "short file"));
            uc->body_fd = -1;
            ex_try_failed(ex, true, 502, "BAD_GATEWAY", "the request body could not be read back");
            return;
        }
        uv_buf_t buf = uv_buf_init(uc->pump_buf, (unsigned)n);
        int w = uv_try_write((uv_stream_t *)&uc->tcp, &buf, 1);
        if (w == n) {
            uc->body_off += (uint64_t)n;
            continue;
        }
        if (w < 0 && w != UV_EAGAIN) return; /* the read side sees it too */
        size_t done = w > 0 ? (size_t)w : 0;
        uv_buf_t rest = uv_buf_init(uc->pump_buf + done, (unsigned)((size_t)n - done));
        uc->body_off += (uint64_t)n; /* counted once queued: the write carries the rest */
        uc->pump_w.data = uc;
        if (uv_write(&uc->pump_w, (uv_stream_t *)&uc->tcp, &rest, 1, up_pump_done) < 0) return;
        uc->writes++;
        return;
    }
}

/* ---- A streamed request body --------------------------------------------------------
 *
 * Each piece the client's connection delivers is written upstream at once
 * (re-framed as a chunk when the client sent no Content-Length). What the
 * socket does not take at once is copied into one write; past
 * BODY_HIGH_WATER queued bytes the client is paused (the server keeps at
 * most one read buffer more) until the queue drains below BODY_LOW_WATER:
 * the upstream's pace is the client's, and a slow upstream costs a bounded
 * queue, not the body. */

typedef struct bodyw {
    uv_write_t w;
    upconn *uc;
    char data[];
} bodyw;

static void body_check_resume(upconn *uc)
{
    exchange *ex = uc->ex;
    if (!ex || !ex->body_held || uc->closing) return;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&uc->tcp) > BODY_LOW_WATER) return;
    ex->body_held = false;
    ag_req_body_resume(ex->req);
}

static void body_write_done(uv_write_t *w, int status)
{
    bodyw *bw = (bodyw *)w;
    upconn *uc = bw->uc;
    uc->writes--;
    ag_free(bw);
    if (status < 0) {
        /* The read side sees the reset or the upstream's early answer. */
        if (uc->ex && uc->ex->state == EX_WAIT_HEAD) up_close(uc);
        return;
    }
    body_check_resume(uc);
}

/* Writes pre + data + post to the upstream: directly while the socket takes
 * it, the rest copied into one queued write. */
static void body_write(exchange *ex, upconn *uc, const char *pre, size_t plen, const char *data,
                       size_t len, const char *post, size_t tlen)
{
    uv_buf_t bufs[3] = {uv_buf_init((char *)pre, (unsigned)plen),
                        uv_buf_init((char *)data, (unsigned)len),
                        uv_buf_init((char *)post, (unsigned)tlen)};
    size_t total = plen + len + tlen, done = 0;
    int w = uv_try_write((uv_stream_t *)&uc->tcp, bufs, 3);
    if (w > 0)
        done = (size_t)w;
    else if (w < 0 && w != UV_EAGAIN)
        return; /* the read side sees the failure */
    if (done == total) return;
    bodyw *bw = ag_malloc(sizeof *bw + (total - done));
    bw->uc = uc;
    size_t off = 0, at = 0;
    for (int i = 0; i < 3; i++) {
        size_t n = bufs[i].len;
        if (at + n > done) {
            size_t skip = done > at ? done - at : 0;
            memcpy(bw->data + off, bufs[i].base + skip, n - skip);
            off += n - skip;
        }
        at += n;
    }
    uv_buf_t rest = uv_buf_init(bw->data, (unsigned)off);
    if (uv_write(&bw->w, (uv_stream_t *)&uc->tcp, &rest, 1, body_write_done) < 0) {
        ag_free(bw);
        return;
    }
    uc->writes++;
    if (!ex->body_held &&
        uv_stream_get_write_queue_size((uv_stream_t *)&uc->tcp) > BODY_HIGH_WATER) {
        ex->body_held = true;
        ag_req_body_pause(ex->req);
    }
}

static void body_on_data(void *ud, const char *data, size_t len)
{
    exchange *ex = ud;
    upconn *uc = ex->uc;
    if (ex->state == EX_DONE || !uc || uc->closing || len == 0) return; /* dropped */
    char pre[24];
    size_t plen = 0;
    if (ex->body_chunked) plen = (size_t)snprintf(pre, sizeof pre, "%zx\r\n", len);
    body_write(ex, uc, pre, plen, data, len, "\r\n", ex->body_chunked ? 2 : 0);
}

static void body_on_end(void *ud, int status)
{
    exchange *ex = ud;
    ex->body_ended = true;
    if (ex->state == EX_DONE) return;
    upconn *uc = ex->uc;
    if (status == 0) {
        if (ex->body_chunked && uc && !uc->closing)
            body_write(ex, uc, "0\r\n\r\n", 5, "", 0, "", 0);
        return;
    }
    /* The client's body broke off: the upstream has part of it, so its
     * connection goes; the client hears why (413, 408 or 400). */
    ex_release_try(ex, AG_CALL_NEUTRAL, true);
    ex_drop_conn(ex, false);
    count_reject("bad_body");
    if (status == AG_ETOOBIG)
        ex_finish_error(ex, 413, "BODY_TOO_LARGE", "request body too large");
    else if (status == AG_ETIMEDOUT)
        ex_finish_error(ex, 408, "REQUEST_TIMEOUT", "request body not received in time");
    else
        ex_finish_error(ex, 400, "MALFORMED_REQUEST", "malformed request body");
}

static void ex_send(exchange *ex)
{
    upconn *uc = ex->uc;
    ag_http_req *req = ex->req;
    ag_buf b;
    ag_buf_init(&b, 0);
    ag_buf_reserve(&b, 1024);
    ag_buf_printf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", ag_req_method(req), ex->upath, uc->key);
    /* A client's own X-Forwarded-For and Forwarded go on only from a
     * trusted proxy (trust.c); from anyone else they would be lies. */
    bool trusted = gw_trusted_peer(ex->cfg, req);
    const char *xff = NULL, *host = NULL;
    size_t n = ag_req_header_count(req);
    for (size_t i = 0; i < n; i++) {
        const char *name, *value;
        ag_req_header_at(req, i, &name, &value);
        if (trusted && strcasecmp(name, "X-Forwarded-For") == 0)
            xff = xff ? ag_arena_printf(ag_req_arena(req), "%s, %s", xff, value) : value;
        if (!trusted && strcasecmp(name, "Forwarded") == 0) continue;
        if (strcasecmp(name, "Host") == 0) host = value;
        if (strcasecmp(name, "traceparent") == 0 || strcasecmp(name, "tracestate") == 0) {
            /* the server span's context goes instead, when there is one */
            if (ag_req_trace(req)->valid) continue;
        }
        if (skip_request_header(name, ex->ws)) continue;
        buf_header(&b, name, value);
    }
    const char *peer = ag_req_remote_addr(req);
    if (xff)
        ag_buf_printf(&b, "X-Forwarded-For: %s, %s\r\n", xff, peer);
    else
        ag_buf_printf(&b, "X-Forwarded-For: %s\r\n", peer);
    ag_buf_appends(&b, "X-Forwarded-Proto: http\r\n");
    if (host) ag_buf_printf(&b, "X-Forwarded-Host: %s\r\n", host);
    buf_header(&b, "X-Request-Id", ag_req_id(req));
    /* The upstream's parent is the gateway's server span (agora/trace.h;
     * a new trace when the client sent none). */
    const ag_trace_ctx *tc = ag_req_trace(req);
    if (tc->valid) {
        char tr[AG_TRACEPARENT_LEN + 1];
        ag_traceparent_format(tc, tr);
        ag_buf_printf(&b, "traceparent: %s\r\n", tr);
        if (tc->state[0]) ag_buf_printf(&b, "tracestate: %s\r\n", tc->state);
    }
    uint64_t left = ag_deadline_remaining(ag_req_deadline(req));
    if (!ex->ws) {
        uint64_t budget = left < ex->try_timeout_ms ? left : ex->try_timeout_ms;
        ag_buf_printf(&b, "%s: %llu\r\n", AG_DEADLINE_HEADER, (unsigned long long)budget);
    }
    if (ex->has_caller) {
        ag_buf_printf(&b, "X-User-Id: %s\r\nX-User-Email: %s\r\nX-User-Role: %s\r\n", ex->caller.id,
                      ex->caller.email, ex->caller.role);
    }
    size_t blen = 0;
    const char *body = ag_req_body(req, &blen);
    const char *m = ag_req_method(req);
    int fd;
    uint64_t fsize = 0;
    bool spooled = !ex->ws && ag_req_body_file(req, &fd, &fsize) == 0;
    uc->body_fd = spooled ? fd : -1;
    uc->body_off = 0;
    uc->body_size = fsize;
    if (ex->ws)
        ag_buf_appends(&b, "Connection: Upgrade\r\n");
    else if (ex->body_stream && ex->body_chunked)
        ag_buf_appends(&b, "Transfer-Encoding: chunked\r\n");
    else if (ex->body_stream)
        ag_buf_printf(&b, "Content-Length: %s\r\n", ag_req_header(req, "Content-Length"));
    else if (spooled)
        ag_buf_printf(&b, "Content-Length: %llu\r\n", (unsigned long long)fsize);
    else if (blen > 0 || strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0 || strcmp(m, "PATCH") == 0)
        ag_buf_printf(&b, "Content-Length: %zu\r\n", blen);
    ag_buf_appends(&b, "\r\n");

    size_t hlen;
    char *head = ag_buf_detach(&b, &hlen);
    uv_buf_t bufs[2] = {uv_buf_init(head, (unsigned)hlen),
                        uv_buf_init((char *)body, (unsigned)blen)};
    int nb = blen ? 2 : 1;
    size_t total = hlen + blen, done = 0;
    int w = uv_try_write((uv_stream_t *)&uc->tcp, bufs, (unsigned)nb);
    if (w > 0)
        done = (size_t)w;
    else if (w < 0 && w != UV_EAGAIN) {
        ag_free(head);
        ex_try_failed(ex, !uc->reused ? false : true, 502, "BAD_GATEWAY",
                      "could not send the request upstream");
        return;
    }
    ex->state = EX_WAIT_HEAD;
    if (done < total) {
        upw *u = ag_malloc(sizeof *u);
        u->uc = uc;
        u->head = head;
        uv_buf_t rest[2];
        int nr = 0;
        if (done < hlen) {
            rest[nr++] = uv_buf_init(head + done, (unsigned)(hlen - done));
            if (blen) rest[nr++] = bufs[1];
        } else {
            size_t off = done - hlen;
            rest[nr++] = uv_buf_init((char *)body + off, (unsigned)(blen - off));
        }
        if (uv_write(&u->w, (uv_stream_t *)&uc->tcp, rest, (unsigned)nr, up_write_done) < 0) {
            ag_free(head);
            ag_free(u);
            ex_try_failed(ex, true, 502, "BAD_GATEWAY", "could not send the request upstream");
            return;
        }
        uc->writes++;
    } else {
        ag_free(head);
    }
    if (spooled) up_pump(uc); /* queued behind the head: libuv keeps the order */
    if (ex->body_stream && !ex->body_started) {
        /* Last: a body that already failed answers from inside this call. */
        static const ag_body_sink sink = {body_on_data, body_on_end};
        ex->body_started = true;
        if (ag_req_body_read(req, &sink, ex) < 0) {
            ex->body_ended = true;
            ex_try_failed(ex, true, 502, "BAD_GATEWAY", "the request body could not be read");
        }
    }
}

/* ---- Connecting ---------------------------------------------------------------- */

static void on_try_timeout(uv_timer_t *t)
{
    exchange *ex = t->data;
    char msg[128];
    if (ex->state == EX_CONNECT) {
        snprintf(msg, sizeof msg, "could not connect to %s in time", ex->route->service);
        ex_try_failed(ex, false, 504, "UPSTREAM_TIMEOUT", msg);
    } else if (ex->state == EX_WAIT_HEAD) {
        snprintf(msg, sizeof msg, "%s did not answer in time", ex->route->service);
        ex_try_failed(ex, true, 504, "UPSTREAM_TIMEOUT", msg);
    }
}

static void ex_attach(exchange *ex, upconn *uc)
{
    ex->uc = uc;
    uc->ex = ex;
    llhttp_init(&uc->parser, HTTP_RESPONSE, &g_up_settings);
    uc->parser.data = uc;
    ex->hbuf.len = 0;
    ex->nh = 0;
    ex->hstate = 0;
    ex->status = 0;
}

static void on_connect(uv_connect_t *r, int status)
{
    upconn *uc = r->handle->data;
    exchange *ex = uc->ex;
    if (uc->closing) return;
    if (!ex) {
        up_close(uc);
        return;
    }
    if (status < 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s (%s) is unreachable: %s", ex->route->service, uc->key,
                 uv_strerror(status));
        ex_try_failed(ex, false, 503, "UPSTREAM_UNREACHABLE", msg);
        return;
    }
    uc->connected = true;
    uv_tcp_nodelay(&uc->tcp, 1);
    uv_read_start((uv_stream_t *)&uc->tcp, up_alloc, up_on_read);
    uint64_t left = ag_deadline_remaining(ag_req_deadline(ex->req));
    uint64_t t = ex->try_timeout_ms < left ? ex->try_timeout_ms : left;
    if (!ex->ws)
        uv_timer_start(&ex->timer, on_try_timeout, t, 0);
    else
        uv_timer_stop(&ex->timer);
    ex_send(ex);
}

static void on_resolved(uv_getaddrinfo_t *r, int status, struct addrinfo *res)
{
    upconn *uc = r->data;
    exchange *ex = uc->ex;
    if (!ex || uc->closing) {
        uv_freeaddrinfo(res);
        if (!uc->closing) up_close(uc);
        return;
    }
    if (status < 0 || !res) {
        uv_freeaddrinfo(res);
        char msg[160];
        snprintf(msg, sizeof msg, "cannot resolve %s: %s", uc->key, uv_strerror(status));
        ex_try_failed(ex, false, 503, "UPSTREAM_UNREACHABLE", msg);
        return;
    }
    struct sockaddr_storage ss;
    memcpy(&ss, res->ai_addr, res->ai_addrlen);
    uv_freeaddrinfo(res);
    if (ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)uc->port);
    else
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)uc->port);
    uc->u.connect.data = uc;
    if (uv_tcp_connect(&uc->u.connect, &uc->tcp, (struct sockaddr *)&ss, on_connect) < 0)
        ex_try_failed(ex, false, 503, "UPSTREAM_UNREACHABLE", "could not connect upstream");
}

static void ex_connect(exchange *ex)
{
    char key[96];
    snprintf(key, sizeof key, "%s:%d", ex->inst.address, ex->inst.port);
    upconn *uc = idle_take(ex->gl, key);
    uv_loop_t *loop = ag_loop_uv(ex->gl->loop);
    uint64_t left = ag_deadline_remaining(ag_req_deadline(ex->req));
    if (uc) {
        uc->reused = true;
        ex_attach(ex, uc);
        uint64_t t = ex->try_timeout_ms < left ? ex->try_timeout_ms : left;
        if (!ex->ws) uv_timer_start(&ex->timer, on_try_timeout, t, 0);
        ex->state = EX_WAIT_HEAD;
        ex_send(ex);
        return;
    }
    uc = ag_calloc(1, sizeof *uc);
    uc->body_fd = -1;
    uc->gl = ex->gl;
    snprintf(uc->key, sizeof uc->key, "%s", key);
    uc->port = ex->inst.port;
    uv_tcp_init(loop, &uc->tcp);
    uc->tcp.data = uc;
    ex_attach(ex, uc);
    ex->state = EX_CONNECT;
    uint64_t ct = CONNECT_TIMEOUT_MS < left ? CONNECT_TIMEOUT_MS : left;
    uv_timer_start(&ex->timer, on_try_timeout, ct, 0);
    struct sockaddr_storage ss;
    if (uv_ip4_addr(ex->inst.address, ex->inst.port, (struct sockaddr_in *)&ss) == 0 ||
        uv_ip6_addr(ex->inst.address, ex->inst.port, (struct sockaddr_in6 *)&ss) == 0) {
        uc->u.connect.data = uc;
        int rc = uv_tcp_connect(&uc->u.connect, &uc->tcp, (struct sockaddr *)&ss, on_connect);
        if (rc < 0)
            ex_try_failed(ex, false, 503, "UPSTREAM_UNREACHABLE", "could not connect upstream");
        return;
    }
    uc->u.gai.data = uc;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    if (uv_getaddrinfo(loop, &uc->u.gai, on_resolved, ex->inst.address, NULL, &hints) < 0)
        ex_try_failed(ex, false, 503, "UPSTREAM_UNREACHABLE", "could not resolve the upstream");
}

/* 503 CIRCUIT_OPEN with Retry-After: the breaker's remaining wait. */
static void ex_circuit_open(exchange *ex)
{
    const gw_route *rt = ex->route;
    count_reject("circuit_open");
    uint64_t secs = (ag_breaker_retry_after_ms(rt->up->breaker) + 999) / 1000;
    char ra[24], msg[128];
    snprintf(ra, sizeof ra, "%llu", (unsigned long long)(secs ? secs : 1));
    ag_res_header(ex->res, "Retry-After", ag_arena_strdup(ag_req_arena(ex->req), ra));
    snprintf(msg, sizeof msg, "%s is unavailable (circuit open)", rt->service);
    ex_finish_error(ex, 503, "CIRCUIT_OPEN", msg);
}

/* One try: an instance, a breaker ticket, a connection. */
static void ex_try(exchange *ex)
{
    ex->attempt++;
    ex->try_start_ns = ag_now_ns();
    const gw_route *rt = ex->route;
    int rc = ag_discovery_pick(g_gw.disc, rt->service, &ex->inst);
    /* Prefer another instance than the one that just failed. */
    if (rc == 0 && ex->attempt > 1 && strcmp(ex->inst.id, ex->last_id) == 0) {
        ag_instance other;
        if (ag_discovery_pick(g_gw.disc, rt->service, &other) == 0) {
            if (strcmp(other.id, ex->last_id) != 0) {
                ag_discovery_release(g_gw.disc, &ex->inst, AG_CALL_NEUTRAL);
                ex->inst = other;
            } else {
                ag_discovery_release(g_gw.disc, &other, AG_CALL_NEUTRAL);
            }
        }
    }
    if (rc < 0) {
        /* When the breaker is open too, its answer tells the client when. */
        if (ag_breaker_get_state(rt->up->breaker) == AG_BREAKER_OPEN) {
            ex_circuit_open(ex);
            return;
        }
        /* A retry that finds no instance left: the request failed. */
        ex_release_breaker(ex, false);
        char msg[192];
        if (rc == AG_ENOTFOUND) {
            /* Not one instance known: the service is not running (or never
             * started), which is not the same outage as instances that
             * exist but are all down. */
            count_reject("not_running");
            if (ag_discovery_is_static(g_gw.disc))
                snprintf(msg, sizeof msg, "agora-%s is not running: no instance is configured",
                         rt->service);
            else
                snprintf(msg, sizeof msg, "agora-%s is not running: no instance is registered",
                         rt->service);
            ag_res_header(ex->res, "Retry-After", "5");
            ex_finish_error(ex, 503, "UPSTREAM_NOT_RUNNING", msg);
            return;
        }
        count_reject("no_instance");
        snprintf(msg, sizeof msg, "no healthy instance of %s", rt->service);
        ex_finish_error(ex, 503, "NO_HEALTHY_UPSTREAM", msg);
        return;
    }
    ex->picked = true;
    if (ex->ticketed) { /* a retry: the request already holds its ticket */
        ex_connect(ex);
        return;
    }
    rc = ag_breaker_acquire(rt->up->breaker, &ex->ticket);
    if (rc < 0) {
        ag_discovery_release(g_gw.disc, &ex->inst, AG_CALL_NEUTRAL);
        ex->picked = false;
        if (rc == AG_EBUSY) {
            count_reject("upstream_busy");
            char msg[128];
            snprintf(msg, sizeof msg, "%s is at its concurrency limit", rt->service);
            ag_res_header(ex->res, "Retry-After", "1");
            ex_finish_error(ex, 503, "UPSTREAM_BUSY", msg);
        } else {
            ex_circuit_open(ex);
        }
        return;
    }
    ex->ticketed = true;
    ex_connect(ex);
}

/* ---- Rate limits ---------------------------------------------------------------- */

static void ex_limit_next(exchange *ex);

static void on_limited_inner(exchange *ex, const gw_rl_result *r);

/* The exchange holds a reference across every asynchronous step, so a
 * client that leaves meanwhile cannot free it under the callback. */
static void on_limited(void *ud, const gw_rl_result *r)
{
    exchange *ex = ud;
    if (ex->state != EX_DONE) on_limited_inner(ex, r);
    ex_unref(ex);
}

static void on_limited_inner(exchange *ex, const gw_rl_result *r)
{
    /* Report the tighter of the two budgets. */
    if (!ex->has_rl || r->remaining < ex->rl.remaining || !r->allowed) {
        ex->rl = *r;
        ex->has_rl = true;
    }
    if (!r->allowed) {
        count_reject("rate_limited");
        char ra[24];
        snprintf(ra, sizeof ra, "%ld", r->retry_after_s > 0 ? r->retry_after_s : 1);
        ag_res_header(ex->res, "Retry-After", ag_arena_strdup(ag_req_arena(ex->req), ra));
        ex_finish_error(ex, 429, "RATE_LIMITED", "too many requests; slow down");
        return;
    }
    ex->limit_step++;
    ex_limit_next(ex);
}

/* Per IP, then per user; each take may answer at once (memory) or later
 * (Redis). */
static void ex_limit_next(exchange *ex)
{
    const gw_limit_pair *lp = ex->route->limits;
    char key[192];
    while (ex->limit_step < 2) {
        if (ex->limit_step == 0 && lp && lp->has_ip) {
            snprintf(key, sizeof key, "ip:%s", gw_client_ip(ex->cfg, ex->req));
            ex->state = EX_LIMIT;
            ex->refs++;
            gw_ratelimit_take(g_gw.rl, key, &lp->ip, on_limited, ex);
            return;
        }
        if (ex->limit_step == 1 && lp && lp->has_user && ex->has_caller) {
            snprintf(key, sizeof key, "user:%s", ex->caller.id);
            ex->state = EX_LIMIT;
            ex->refs++;
            gw_ratelimit_take(g_gw.rl, key, &lp->user, on_limited, ex);
            return;
        }
        ex->limit_step++;
    }
    ex_try(ex);
}

/* ---- Authentication ------------------------------------------------------------- */

static void on_auth_inner(exchange *ex, int rc, const ag_caller *caller, const char *why);

static void on_auth(void *ud, int rc, const ag_caller *caller, const char *why)
{
    exchange *ex = ud;
    if (ex->state != EX_DONE) on_auth_inner(ex, rc, caller, why);
    ex_unref(ex);
}

static void on_auth_inner(exchange *ex, int rc, const ag_caller *caller, const char *why)
{
    const gw_route *rt = ex->route;
    if (rc == 0) {
        ex->caller = *caller;
        ex->has_caller = true;
    } else if (rc == AG_ENOTFOUND) {
        /* no token: anonymous */
    } else if (rc == AG_EUNAVAIL || rc == AG_EBUSY) {
        if (rt->auth != GW_AUTH_PUBLIC) {
            ex_finish_error(ex, 503, "AUTH_UNAVAILABLE",
                            "tokens cannot be verified right now; retry shortly");
            return;
        }
    } else if (rt->auth != GW_AUTH_PUBLIC) {
        char msg[160];
        snprintf(msg, sizeof msg, "invalid token: %s", why ? why : "rejected");
        ag_res_header(ex->res, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
        ex_finish_error(ex, 401, "UNAUTHENTICATED", msg);
        return;
    }
    if (rt->auth == GW_AUTH_REQUIRED && !ex->has_caller) {
        ag_res_header(ex->res, "WWW-Authenticate", "Bearer");
        ex_finish_error(ex, 401, "UNAUTHENTICATED", "this route needs a bearer token");
        return;
    }
    if (rt->role && ex->has_caller && strcmp(ex->caller.role, rt->role) != 0 &&
        strcmp(ex->caller.role, "admin") != 0) {
        ex_finish_error(ex, 403, "FORBIDDEN", "your role may not use this route");
        return;
    }
    ex_limit_next(ex);
}

/* The bearer token of the request: the Authorization header, or for a
 * WebSocket upgrade (browsers cannot set headers on one) ?access_token=. */
static const char *bearer(exchange *ex)
{
    const char *h = ag_req_header(ex->req, "Authorization");
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        h += 7;
        while (*h == ' ')
            h++;
        return *h ? h : NULL;
    }
    if (ex->ws) return ag_req_query(ex->req, "access_token");
    return NULL;
}

/* ---- The handler ---------------------------------------------------------------- */

static bool is_version(const char *s, size_t n)
{
    if (n < 2 || s[0] != 'v') return false;
    for (size_t i = 1; i < n; i++)
        if (!isdigit((unsigned char)s[i])) return false;
    return true;
}

static bool header_has_token(const char *v, const char *token)
{
    size_t tl = strlen(token);
    while (v && *v) {
        while (*v == ' ' || *v == ',')
            v++;
        if (strncasecmp(v, token, tl) == 0 && (v[tl] == '\0' || v[tl] == ',' || v[tl] == ' '))
            return true;
        v = strchr(v, ',');
    }
    return false;
}

gw_loop *gw_loop_of(ag_http_req *req)
{
    return &g_gw.loops[ag_loop_index(ag_req_loop(req))];
}

/* The path with its API version made explicit (DESIGN.md §4):
 * /api/x → /api/<Accept-Version or latest>/x; NULL for a bad Accept-Version. */
static const char *versioned_path(ag_http_req *req, const gw_config *c)
{
    const char *path = ag_req_path(req);
    if (strncmp(path, "/api/", 5) != 0 && strcmp(path, "/api") != 0) return path;
    const char *seg = path[4] ? path + 5 : "";
    size_t sl = strcspn(seg, "/");
    if (is_version(seg, sl)) return path;
    const char *want = ag_req_header(req, "Accept-Version");
    if (want && !is_version(want, strlen(want))) return NULL;
    return ag_arena_printf(ag_req_arena(req), "/api/%s%s%s", want ? want : c->latest_version,
                           *seg ? "/" : "", seg);
}

void gw_proxy_body_policy(ag_http_req *req, ag_body_mode *mode, uint64_t *max_bytes, void *ud)
{
    (void)ud;
    gw_loop *gl = gw_loop_init(ag_req_loop(req));
    const gw_config *c = gl->config;
    const char *path = c ? versioned_path(req, c) : NULL;
    if (!path) return; /* answered later (400); the server's limit meanwhile */
    bool method_ok;
    char allow[96];
    const gw_route *rt =
        gw_config_match(c, path, ag_req_method(req), &method_ok, allow, sizeof allow);
    if (!rt) return;
    if (rt->spool_body) *mode = AG_BODY_SPOOL;
    if (rt->stream_body) *mode = AG_BODY_STREAM;
    if (rt->max_body_bytes) *max_bytes = rt->max_body_bytes;
}

void gw_proxy_handler(ag_http_req *req, ag_http_res *res, void *ud)
{
    (void)ud;
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, up_settings_init);
    gw_loop *gl = gw_loop_of(req);
    exchange *ex = ag_calloc(1, sizeof *ex);
    ex->t0_ns = uv_hrtime();
    ex->req = req;
    ex->res = res;
    ex->gl = gl;
    ex->cfg = gl->config;
    gw_config_ref(ex->cfg);
    ex->refs = 2; /* the exchange, the timer */
    ag_buf_init(&ex->hbuf, 64 * 1024);
    uv_timer_init(ag_loop_uv(gl->loop), &ex->timer);
    ex->timer.data = ex;
    ag_res_on_abort(res, ex_on_abort, ex);

    /* The retry budget's window: one second. */
    gw_retry_budget *b = &g_gw.budget;
    uint64_t now = ag_now_ms(), start = atomic_load(&b->window_start_ms);
    if (now - start >= 1000 && atomic_compare_exchange_strong(&b->window_start_ms, &start, now)) {
        atomic_store(&b->requests, 0);
        atomic_store(&b->retries, 0);
    }
    atomic_fetch_add(&b->requests, 1);

    const char *method = ag_req_method(req);
    const char *path = ag_req_path(req);
    const gw_config *c = ex->cfg;

    /* Versioning (DESIGN.md §4): /api/x → /api/<Accept-Version or latest>/x. */
    path = versioned_path(req, c);
    if (!path) {
        ex_finish_error(ex, 400, "BAD_VERSION", "Accept-Version must look like v1");
        return;
    }

    bool method_ok;
    char allow[96];
    const gw_route *rt = gw_config_match(c, path, method, &method_ok, allow, sizeof allow);
    if (!rt && strncmp(path, "/api/", 5) != 0 &&
        (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)) {
        /* web/ at /: the static module answers and finishes the response;
         * a page's assets are no trace worth keeping */
        ag_span_drop(ag_req_span(req));
        ex->state = EX_DONE;
        uv_close((uv_handle_t *)&ex->timer, on_timer_closed);
        ex_unref(ex);
        gw_static_serve(req, res, c);
        return;
    }
    if (!rt) {
        if (!method_ok) {
            ag_res_header(res, "Allow", ag_arena_strdup(ag_req_arena(req), allow));
            ex_finish_error(ex, 405, "METHOD_NOT_ALLOWED", "method not allowed here");
        } else {
            char msg[160];
            snprintf(msg, sizeof msg, "no route for %.120s", path);
            ex_finish_error(ex, 404, "NOT_FOUND", msg);
        }
        return;
    }
    ex->route = rt;

    /* CORS preflight: answered here, never forwarded. */
    const char *origin = ag_req_header(req, "Origin");
    if (strcmp(method, "OPTIONS") == 0 && origin &&
        ag_req_header(req, "Access-Control-Request-Method")) {
        if (!origin_allowed(c, origin)) {
            ex_finish_error(ex, 403, "CORS_FORBIDDEN", "this origin may not call the API");
            return;
        }
        ag_res_header(res, "Access-Control-Allow-Methods",
                      rt->methods ? ag_arena_strdup(ag_req_arena(req), allow)
                                  : "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
        const char *rh = ag_req_header(req, "Access-Control-Request-Headers");
        ag_res_header(res, "Access-Control-Allow-Headers",
                      rh ? rh : "Authorization, Content-Type, Accept-Version, Idempotency-Key");
        char age[24];
        snprintf(age, sizeof age, "%llu", (unsigned long long)c->cors_max_age_s);
        ag_res_header(res, "Access-Control-Max-Age", ag_arena_strdup(ag_req_arena(req), age));
        gw_common_headers(req, res, c);
        ag_res_status(res, 204);
        ex_done(ex);
        return;
    }

    /* The server span is named after the route, not the catch-all. */
    ag_span *span = ag_req_span(req);
    if (ag_span_recording(span)) {
        char sname[200];
        snprintf(sname, sizeof sname, "%s %s", method, rt->prefix);
        ag_span_rename(span, sname);
        ag_span_attr_str(span, "agora.route", rt->prefix);
        ag_span_attr_str(span, "agora.upstream", rt->service);
    }

    /* The upstream target: the route's prefix rewritten, the query kept. */
    const char *rest = path + (strcmp(rt->prefix, "/") == 0 ? 0 : strlen(rt->prefix));
    const char *target = ag_req_target(req);
    const char *q = strchr(target, '?');
    ex->upath = ag_arena_printf(ag_req_arena(req), "%s%s%s",
                                strcmp(rt->rewrite, "/") == 0 && *rest ? "" : rt->rewrite, rest,
                                q ? q : "");
    if (!*ex->upath) ex->upath = "/";

    const char *up = ag_req_header(req, "Upgrade");
    if (up) {
        if (!header_has_token(up, "websocket") || strcmp(method, "GET") != 0) {
            ex_finish_error(ex, 400, "BAD_UPGRADE", "only WebSocket upgrades are proxied");
            return;
        }
        if (!rt->websocket) {
            ex_finish_error(ex, 400, "BAD_UPGRADE", "this route does not accept WebSockets");
            return;
        }
        ex->ws = true;
    }
    /* a "streamBody" route's body (gw_proxy_body_policy chose it) */
    ex->body_stream = !ex->ws && ag_req_body_streamed(req);
    ex->body_chunked = ex->body_stream && !ag_req_header(req, "Content-Length");
    ex->idempotent = !strcmp(method, "GET") || !strcmp(method, "HEAD") ||
                     !strcmp(method, "OPTIONS") || !strcmp(method, "PUT") ||
                     !strcmp(method, "DELETE");
    ex->head_only = strcmp(method, "HEAD") == 0;
    int retries = rt->retries >= 0 ? rt->retries : rt->up->retries;
    ex->max_tries = 1 + retries;
    ex->try_timeout_ms = rt->timeout_ms ? rt->timeout_ms : rt->up->timeout_ms;

    const char *tok = bearer(ex);
    if (tok) {
        ex->state = EX_AUTH;
        ex->refs++;
        gw_auth_verify(gl->loop, tok, on_auth, ex);
        return;
    }
    on_auth_inner(ex, AG_ENOTFOUND, NULL, NULL);
}

json_t *gw_proxy_pool_json(void)
{
    /* The pools themselves belong to their loops; other threads read only
     * each loop's atomic total. */
    json_t *a = json_array();
    for (int i = 0; i < g_gw.nloops; i++)
        json_array_append_new(
            a, json_pack("{s:i,s:i}", "loop", i, "idle", atomic_load(&g_gw.loops[i].idle_total)));
    return a;
}
