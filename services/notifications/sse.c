/*
 * sse.c — GET /v1/stream: notifications as Server-Sent Events, on the I/O
 * loop (AG_ROUTE_ASYNC, a chunked text/event-stream answer).
 *
 *   request ─► VERIFYING (token on the pool) ──bad──► 401 / 429 / 503
 *                 │ good
 *                 ▼
 *               OPEN: 200 text/event-stream, "ready", then the hub delivers
 *                 │   (catch-up from Last-Event-ID or ?since=, then live)
 *                 │   a comment every heartbeat_ms keeps proxies from
 *                 │   timing the stream out and finds clients that left
 *                 ▼
 *               DONE: the client left (abort), was too slow (more than
 *                     max_queue bytes waiting: cut), or the service stops
 *                     (the stream ends cleanly)
 *
 * Each event: "id: <notification id>\nevent: notification\ndata: <json>\n\n",
 * so a browser's EventSource resumes by itself with Last-Event-ID.
 * References as in ws.c: the owner's, the timer's, one per pool task.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hub.h"
#include "verify.h"

typedef enum sse_state { E_VERIFYING, E_OPEN, E_DONE } sse_state;
typedef enum sse_end { END_SEND, END_CLEAN, END_CUT } sse_end;

typedef struct sse_conn {
    hub_sub sub; /* first: the hub's callbacks cast back */
    ag_http_req *req;
    ag_http_res *res;
    sse_state state;
    bool finished, client_gone, timer_open;
    uv_timer_t timer;
    bool resume;
    int64_t since;
} sse_conn;

static sse_conn *of(hub_sub *s)
{
    return (sse_conn *)s;
}

static void timer_closed(uv_handle_t *h)
{
    sse_conn *c = h->data;
    hub_sub_unref(&c->sub);
}

/* DONE: the finishing call for how it ends, and the owner's reference. */
static void sse_finish(sse_conn *c, sse_end how)
{
    if (c->state == E_DONE) return;
    c->state = E_DONE;
    hub_detach(&c->sub);
    if (c->timer_open) {
        c->timer_open = false;
        uv_close((uv_handle_t *)&c->timer, timer_closed);
    }
    if (!c->finished) {
        c->finished = true;
        if (how == END_SEND)
            ag_res_send(c->res);
        else if (how == END_CLEAN && !c->client_gone)
            ag_res_loop_end(c->res);
        else
            ag_res_loop_abort(c->res);
    }
    hub_sub_unref(&c->sub);
}

static void chunk_written(void *ud)
{
    ag_free(ud);
}

/* Writes `text` (copied): the bytes queued to the client, or < 0 when the
 * stream is going away. Unless `paced`, a queue over max_queue drops the
 * client. */
static long long sse_write_q(sse_conn *c, const char *text, size_t len, bool paced)
{
    if (c->state != E_OPEN || c->client_gone) return AG_ECLOSED;
    char *copy = ag_malloc(len);
    memcpy(copy, text, len);
    hub_sub_ref(&c->sub);
    long long queued = ag_res_loop_write(c->res, copy, len, chunk_written, copy);
    if (queued < 0) {
        sse_finish(c, END_CUT);
        queued = AG_ECLOSED;
    } else if (!paced && (size_t)queued > g_nt.cfg.max_queue) {
        ag_warn("event-stream client too slow: dropped", AG_FS("userId", c->sub.user),
                AG_FI("queuedBytes", queued));
        sse_finish(c, END_CUT);
        queued = AG_ECLOSED;
    }
    hub_sub_unref(&c->sub);
    return queued;
}

static int sse_write(sse_conn *c, const char *text, size_t len)
{
    long long q = sse_write_q(c, text, len, false);
    return q < 0 ? (int)q : 0;
}

/* Writes `head` (the event's fields up to "data: ") and `j` (stolen) as
 * its data, compact, then the blank line that ends the event. */
static void sse_write_json(sse_conn *c, const char *head, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    ag_buf b;
    ag_buf_init(&b, 0);
    ag_buf_printf(&b, "%s%s\n\n", head, text ? text : "{}");
    free(text);
    sse_write(c, b.data, b.len);
    ag_buf_release(&b);
}

static void on_heartbeat(uv_timer_t *t)
{
    sse_conn *c = t->data;
    static const char beat[] = ": keep-alive\n\n";
    sse_write(c, beat, sizeof beat - 1);
}

/* ---- Hub callbacks ------------------------------------------------------------------------ */

static int hub_deliver(hub_sub *s, const nt_item *it, bool catchup)
{
    sse_conn *c = of(s);
    ag_buf b;
    ag_buf_init(&b, 0);
    if (it->id > 0) ag_buf_printf(&b, "id: %lld\n", (long long)it->id);
    ag_buf_printf(&b, "event: %s\ndata: ", it->kind);
    ag_buf_append(&b, it->json, it->len);
    ag_buf_appends(&b, "\n\n");
    long long q = sse_write_q(c, b.data, b.len, catchup);
    ag_buf_release(&b);
    return hub_paced(q, catchup);
}

static void hub_wait_drain(hub_sub *s)
{
    sse_conn *c = of(s);
    if (c->state == E_OPEN && !c->finished) hub_drain_on(s, c->res);
}

static void hub_fail(hub_sub *s, const char *why)
{
    sse_conn *c = of(s);
    sse_write_json(c, "event: error\ndata: ", json_pack("{s:s}", "message", why));
    sse_finish(c, END_CLEAN);
}

static void hub_shutdown(hub_sub *s)
{
    sse_conn *c = of(s);
    if (c->state == E_OPEN) sse_finish(c, END_CLEAN);
}

static void hub_release(hub_sub *s)
{
    ag_free(of(s));
}

static const hub_sub_ops k_ops = {hub_deliver, hub_wait_drain, hub_fail, hub_shutdown, hub_release};

/* ---- Opening ------------------------------------------------------------------------------- */

static void verified(void *ud, int rc, const ag_caller *who, const char *why)
{
    sse_conn *c = ud;
    if (c->client_gone) {
        sse_finish(c, END_SEND); /* only releases */
    } else if (atomic_load(&g_nt.draining)) {
        ag_res_error(c->res, 503, "UNAVAILABLE", "the service is stopping", NULL);
        sse_finish(c, END_SEND);
    } else if (rc == AG_EUNAVAIL) {
        ag_res_error(c->res, 503, "UNAVAILABLE", "cannot verify tokens right now", NULL);
        sse_finish(c, END_SEND);
    } else if (rc < 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "invalid token (%s)", why && *why ? why : "refused");
        ag_res_header(c->res, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
        ag_res_error(c->res, 401, "UNAUTHENTICATED", msg, NULL);
        sse_finish(c, END_SEND);
    } else if (hub_attach(&c->sub, who->id, c->resume, c->since) == AG_EBUSY) {
        char msg[96];
        snprintf(msg, sizeof msg, "too many connections for this user (at most %d)",
                 g_nt.cfg.max_conns_per_user);
        ag_res_error(c->res, 429, "TOO_MANY_CONNECTIONS", msg, NULL);
        sse_finish(c, END_SEND);
    } else {
        ag_res_header(c->res, "Content-Type", "text/event-stream; charset=utf-8");
        ag_res_header(c->res, "Cache-Control", "no-cache");
        ag_res_header(c->res, "X-Accel-Buffering", "no");
        if (ag_res_loop_begin(c->res, 200, -1) < 0) {
            sse_finish(c, END_CUT);
        } else {
            c->state = E_OPEN;
            sse_write_json(
                c, "retry: 2000\nevent: ready\ndata: ", json_pack("{s:s}", "userId", who->id));
            if (c->state == E_OPEN && c->timer_open)
                uv_timer_start(&c->timer, on_heartbeat, g_nt.cfg.heartbeat_ms,
                               g_nt.cfg.heartbeat_ms);
        }
    }
    hub_sub_unref(&c->sub);
}

static void on_abort(void *ud)
{
    sse_conn *c = ud;
    c->client_gone = true;
    if (c->state == E_OPEN) sse_finish(c, END_CUT);
}

static bool parse_since(const char *s, int64_t *out)
{
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (*end || errno || x < 0) return false;
    *out = x;
    return true;
}

static void get_stream(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (atomic_load(&g_nt.draining)) {
        ag_res_error(res, 503, "UNAVAILABLE", "the service is stopping", NULL);
        ag_res_send(res);
        return;
    }
    /* Last-Event-ID is what an EventSource sends when it reconnects. */
    const char *since_s = ag_req_header(req, "Last-Event-ID");
    if (!since_s) since_s = ag_req_query(req, "since");
    int64_t since = 0;
    if (since_s && !parse_since(since_s, &since)) {
        ag_res_error(res, 400, "BAD_REQUEST", "since (or Last-Event-ID) must be a notification id",
                     NULL);
        ag_res_send(res);
        return;
    }
    const char *auth = ag_req_header(req, "Authorization");
    const char *token = auth ? nt_bearer(auth) : ag_req_query(req, "access_token");
    if (!token || !nt_token_ok(token)) {
        ag_res_header(res, "WWW-Authenticate",
                      auth ? "Bearer error=\"invalid_request\"" : "Bearer");
        ag_res_error(res, 401, "UNAUTHENTICATED",
                     auth ? "the Authorization header must be \"Bearer <token>\""
                          : "authentication required",
                     NULL);
        ag_res_send(res);
        return;
    }
    sse_conn *c = ag_calloc(1, sizeof *c);
    hub_sub_init(&c->sub, &k_ops);
    c->req = req;
    c->res = res;
    c->state = E_VERIFYING;
    c->resume = since_s != NULL;
    c->since = since;
    uv_timer_init(ag_loop_uv(ag_req_loop(req)), &c->timer);
    c->timer.data = c;
    c->timer_open = true;
    hub_sub_ref(&c->sub); /* the timer's */
    ag_res_on_abort(res, on_abort, c);
    hub_sub_ref(&c->sub); /* the verification's */
    if (nt_verify_submit(ag_req_loop(req), token, verified, c) < 0) {
        hub_sub_unref(&c->sub);
        ag_res_error(res, 503, "OVERLOADED", "the service is busy; retry shortly", NULL);
        sse_finish(c, END_SEND);
    }
}

void nt_sse_routes(ag_router *r)
{
    ag_router_add(r, "GET", "/v1/stream", get_stream, NULL, AG_ROUTE_ASYNC);
}
