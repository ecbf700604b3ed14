/*
 * ws.c — GET /v1/ws: notifications pushed over a WebSocket (RFC 6455, with
 * the frames of agora/websocket.h), on the I/O loop.
 *
 * A connection's life:
 *
 *   handshake ──bad──► 400 / 426
 *     │ Authorization header ──► CHECK_HEADER (pool) ──bad──► 401, no upgrade
 *     │                                  │ good
 *     │ no header: 101                   ▼ 101
 *     ▼                                OPEN ◄──────── good ─┐
 *   AWAIT_AUTH ── {"type":"auth","token"} ─► VERIFYING (pool)
 *     │ timeout, another message: close 1008      │ bad: close 1008
 *     ▼                                           ▼
 *   CLOSING: our close frame sent; the client's close frame, or 2 s, or the
 *   client going away ─► DONE (tunnel closed, hub detached)
 *
 * OPEN: "ready" is sent, then the hub delivers (catch-up from `since`, then
 * live): {"type": kind, "id", "data"} (kind "notification" or a chat event
 * type; typing and presence without an id). The client may send
 * {"type":"resume","since":N}, {"type":"typing","roomId"} and
 * {"type":"ping"}; a ping frame gets a pong. The server pings every
 * ping_ms; a client that answered nothing since the last ping is closed
 * (1001). A protocol error closes with the parser's code (1002, 1007, 1008
 * for fragments, 1009 for size); binary messages close with 1003; more
 * than max_queue bytes waiting for a slow client close with 1008 and the
 * connection goes once what was queued is written (or the write timeout
 * passes). A client over the per-user cap is closed with 1008 and a reason
 * naming the cap. The client closing first gets its close frame echoed.
 *
 * Every frame is its own allocation, borrowed by ag_res_loop_write until
 * its write is done. References (hub_sub.refs): the owner's (dropped at
 * DONE), the timer's (dropped in its close callback), one per pool task in
 * flight, and one held around any call that may close the connection.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agora/websocket.h"
#include "hub.h"
#include "verify.h"

#define CLOSE_WAIT_MS 2000

typedef enum ws_state {
    W_CHECK_HEADER,
    W_AWAIT_AUTH,
    W_VERIFYING,
    W_OPEN,
    W_CLOSING,
    W_DONE
} ws_state;

typedef struct ws_conn {
    hub_sub sub; /* first: the hub's callbacks cast back */
    ag_http_req *req;
    ag_http_res *res;
    ws_state state;
    bool upgraded; /* the tunnel is ours to close */
    bool finished; /* the finishing call was made */
    bool client_gone;
    bool alive; /* a frame arrived since the last ping */
    bool timer_open;
    uv_timer_t timer;
    ag_ws_parser parser;
    bool resume;
    int64_t since;
    uint64_t typing_ms; /* the last typing message passed on, and its room */
    char typing_room[NT_USER_MAX];
    char accept[AG_WS_ACCEPT_LEN + 1];
} ws_conn;

static const ag_tunnel_cbs k_cbs;

static ws_conn *of(hub_sub *s)
{
    return (ws_conn *)s;
}

static void ws_finish(ws_conn *c);
static void ws_close(ws_conn *c, int code, const char *reason);

/* ---- Writing -------------------------------------------------------------------------- */

static void frame_written(void *ud)
{
    ag_free(ud);
}

/* Sends one frame: the bytes now queued to the client, or < 0 when the
 * connection is going (or went) away. Unless `paced` (the caller watches
 * the queue itself), a queue over max_queue drops the client. */
static long long ws_send_q(ws_conn *c, int opcode, const void *data, size_t len, bool paced)
{
    if (!c->upgraded || c->finished || c->client_gone) return AG_ECLOSED;
    ag_buf b;
    ag_buf_init(&b, 0);
    int rc = ag_ws_frame_append(&b, opcode, true, NULL, data, len);
    if (rc < 0) {
        ag_buf_release(&b);
        return rc;
    }
    size_t n;
    char *frame = ag_buf_detach(&b, &n);
    hub_sub_ref(&c->sub);
    long long queued = ag_res_loop_write(c->res, frame, n, frame_written, frame);
    if (queued < 0) {
        queued = AG_ECLOSED;
    } else if (!paced && (size_t)queued > g_nt.cfg.max_queue && c->state != W_CLOSING) {
        ag_warn("websocket client too slow: dropped", AG_FS("userId", c->sub.user),
                AG_FI("queuedBytes", queued));
        ws_close(c, AG_WS_POLICY, "too slow: send queue over its limit");
        queued = AG_ECLOSED;
    }
    hub_sub_unref(&c->sub);
    return queued;
}

static int ws_send(ws_conn *c, int opcode, const void *data, size_t len)
{
    long long q = ws_send_q(c, opcode, data, len, false);
    return q < 0 ? (int)q : 0;
}

static int ws_send_json(ws_conn *c, json_t *msg)
{
    char *s = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (!s) return AG_ENOMEM;
    int rc = ws_send(c, AG_WS_TEXT, s, strlen(s));
    free(s);
    return rc;
}

static void ws_error_message(ws_conn *c, const char *message)
{
    ws_send_json(c, json_pack("{s:s, s:s}", "type", "error", "message", message));
}

/* ---- Timers --------------------------------------------------------------------------- */

static void timer_closed(uv_handle_t *h)
{
    ws_conn *c = h->data;
    hub_sub_unref(&c->sub);
}

static void stop_timer(ws_conn *c)
{
    if (!c->timer_open) return;
    c->timer_open = false;
    uv_close((uv_handle_t *)&c->timer, timer_closed);
}

static void on_timer(uv_timer_t *t)
{
    ws_conn *c = t->data;
    hub_sub_ref(&c->sub);
    switch (c->state) {
    case W_AWAIT_AUTH:
        ws_close(c, AG_WS_POLICY, "authentication timeout: send {\"type\":\"auth\",\"token\":...}");
        break;
    case W_OPEN:
        if (!c->alive) {
            ws_close(c, AG_WS_GOING_AWAY, "ping timeout");
        } else {
            c->alive = false;
            ws_send(c, AG_WS_PING, "agora", 5);
            uv_timer_start(&c->timer, on_timer, g_nt.cfg.ping_ms, 0);
        }
        break;
    case W_CLOSING:
        ws_finish(c); /* the client did not answer our close */
        break;
    default:
        break;
    }
    hub_sub_unref(&c->sub);
}

static void arm(ws_conn *c, uint64_t ms)
{
    if (c->timer_open) uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* ---- Closing -------------------------------------------------------------------------- */

/* Starts the close handshake: our close frame, then wait for the client's. */
static void ws_close(ws_conn *c, int code, const char *reason)
{
    if (c->state == W_CLOSING || c->state == W_DONE) return;
    if (c->state == W_OPEN || c->state == W_VERIFYING || c->state == W_AWAIT_AUTH)
        ag_debug("websocket closed by the server", AG_FI("code", code), AG_FS("reason", reason),
                 AG_FS("userId", c->sub.user));
    c->state = W_CLOSING;
    hub_detach(&c->sub);
    ag_buf b;
    ag_buf_init(&b, 0);
    ag_ws_close_append(&b, code, reason);
    size_t n;
    char *frame = ag_buf_detach(&b, &n);
    if (!c->upgraded || c->finished || c->client_gone) {
        ag_free(frame);
        ws_finish(c);
        return;
    }
    /* The write owns the frame from here, whatever it returns. */
    hub_sub_ref(&c->sub);
    if (ag_res_loop_write(c->res, frame, n, frame_written, frame) >= 0 && c->state == W_CLOSING)
        arm(c, CLOSE_WAIT_MS); /* the client's close frame, or we go */
    else
        ws_finish(c);
    hub_sub_unref(&c->sub);
}

/* DONE: the finishing call, and the owner's reference goes. */
static void ws_finish(ws_conn *c)
{
    if (c->state == W_DONE) return;
    c->state = W_DONE;
    hub_detach(&c->sub);
    stop_timer(c);
    if (!c->finished) {
        c->finished = true;
        if (c->upgraded)
            ag_res_tunnel_close(c->res);
        else
            ag_res_send(c->res); /* the client left before the answer: only releases */
    }
    hub_sub_unref(&c->sub);
}

/* ---- Hub callbacks --------------------------------------------------------------------- */

static int hub_deliver(hub_sub *s, const nt_item *it, bool catchup)
{
    ws_conn *c = of(s);
    if (c->state != W_OPEN) return AG_ECLOSED;
    ag_buf b;
    ag_buf_init(&b, 0);
    /* kind is ours (an event type or a word), never a client's: no escaping. */
    ag_buf_printf(&b, "{\"type\":\"%s\",", it->kind);
    if (it->id > 0) ag_buf_printf(&b, "\"id\":\"%lld\",", (long long)it->id);
    ag_buf_appends(&b, "\"data\":");
    ag_buf_append(&b, it->json, it->len);
    ag_buf_appends(&b, "}");
    long long q = ws_send_q(c, AG_WS_TEXT, b.data, b.len, catchup);
    ag_buf_release(&b);
    return hub_paced(q, catchup);
}

static void hub_wait_drain(hub_sub *s)
{
    ws_conn *c = of(s);
    if (c->upgraded && !c->finished) hub_drain_on(s, c->res);
}

static void hub_fail(hub_sub *s, const char *why)
{
    ws_close(of(s), AG_WS_TRY_LATER, why);
}

static void hub_shutdown(hub_sub *s)
{
    ws_conn *c = of(s);
    if (c->state == W_CHECK_HEADER || c->state == W_VERIFYING) return; /* see verified() */
    ws_close(c, AG_WS_GOING_AWAY, "server shutting down");
}

static void hub_release(hub_sub *s)
{
    ws_conn *c = of(s);
    ag_ws_parser_release(&c->parser);
    ag_free(c);
}

static const hub_sub_ops k_ops = {hub_deliver, hub_wait_drain, hub_fail, hub_shutdown, hub_release};

/* ---- Opening ----------------------------------------------------------------------------- */

static void ws_open(ws_conn *c, const ag_caller *who)
{
    if (atomic_load(&g_nt.draining)) {
        ws_close(c, AG_WS_GOING_AWAY, "server shutting down");
        return;
    }
    int rc = hub_attach(&c->sub, who->id, c->resume, c->since);
    if (rc == AG_EBUSY) {
        char reason[96];
        snprintf(reason, sizeof reason, "too many connections for this user (at most %d)",
                 g_nt.cfg.max_conns_per_user);
        ws_close(c, AG_WS_POLICY, reason);
        return;
    }
    c->state = W_OPEN;
    c->alive = true;
    ws_send_json(c, json_pack("{s:s, s:s}", "type", "ready", "userId", who->id));
    arm(c, g_nt.cfg.ping_ms);
}

static void verified(void *ud, int rc, const ag_caller *who, const char *why)
{
    ws_conn *c = ud;
    if (c->state == W_CHECK_HEADER) {
        if (c->client_gone || atomic_load(&g_nt.draining)) {
            if (!c->client_gone) {
                ag_res_error(c->res, 503, "UNAVAILABLE", "the service is stopping", NULL);
            }
            ws_finish(c);
        } else if (rc < 0) {
            char msg[96];
            snprintf(msg, sizeof msg, "invalid token (%s)", why && *why ? why : "refused");
            if (rc == AG_EUNAVAIL) {
                ag_res_error(c->res, 503, "UNAVAILABLE", "cannot verify tokens right now", NULL);
            } else {
                ag_res_header(c->res, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
                ag_res_error(c->res, 401, "UNAUTHENTICATED", msg, NULL);
            }
            ws_finish(c);
        } else {
            if (ag_ws_upgrade(c->req, c->res, c->accept, &k_cbs, c) < 0) {
                c->finished = true; /* the client went: only release */
                ag_res_loop_abort(c->res);
                ws_finish(c);
            } else {
                c->upgraded = true;
                ws_open(c, who);
            }
        }
    } else if (c->state == W_VERIFYING) {
        if (rc < 0)
            ws_close(c, rc == AG_EUNAVAIL ? AG_WS_TRY_LATER : AG_WS_POLICY,
                     rc == AG_EUNAVAIL ? "cannot verify tokens right now"
                                       : "authentication failed: invalid token");
        else
            ws_open(c, who);
    }
    hub_sub_unref(&c->sub);
}

static void verify(ws_conn *c, const char *token)
{
    hub_sub_ref(&c->sub);
    if (nt_verify_submit(ag_req_loop(c->req), token, verified, c) < 0) {
        hub_sub_unref(&c->sub);
        if (c->state == W_CHECK_HEADER) {
            ag_res_error(c->res, 503, "OVERLOADED", "the service is busy; retry shortly", NULL);
            ws_finish(c);
        } else {
            ws_close(c, AG_WS_TRY_LATER, "the service is busy; reconnect shortly");
        }
    }
}

/* ---- Reading --------------------------------------------------------------------------- */

static void on_text(ws_conn *c, const char *data, size_t len)
{
    json_t *msg = json_loadb(data, len, 0, NULL);
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (c->state == W_AWAIT_AUTH) {
        const char *token = json_string_value(json_object_get(msg, "token"));
        json_t *since = json_object_get(msg, "since");
        if (!type || strcmp(type, "auth") != 0 || !token) {
            ws_close(c, AG_WS_POLICY,
                     "authentication required: the first message must be "
                     "{\"type\":\"auth\",\"token\":...}");
        } else if (!nt_token_ok(token)) {
            ws_close(c, AG_WS_POLICY, "authentication failed: invalid token");
        } else if (since && !ag_json_int_of(since, 0, &c->since)) {
            ws_close(c, AG_WS_POLICY, "since must be a notification id");
        } else {
            if (since) c->resume = true;
            c->state = W_VERIFYING;
            verify(c, token);
        }
    } else if (c->state == W_VERIFYING) {
        ws_error_message(c, "wait for {\"type\":\"ready\"} before sending more");
    } else if (c->state == W_OPEN) {
        int64_t since;
        if (type && strcmp(type, "resume") == 0) {
            if (ag_json_int_of(json_object_get(msg, "since"), 0, &since))
                hub_resume(&c->sub, since);
            else
                ws_error_message(c, "resume needs since: the last notification id seen");
        } else if (type && strcmp(type, "ping") == 0) {
            ws_send_json(c, json_pack("{s:s}", "type", "pong"));
        } else if (type && strcmp(type, "typing") == 0) {
            const char *room = json_string_value(json_object_get(msg, "roomId"));
            uint64_t now = ag_now_ms();
            if (!room || !*room || strlen(room) >= NT_USER_MAX)
                ws_error_message(c, "typing needs roomId");
            else if (now - c->typing_ms >= 1000 || strcmp(room, c->typing_room) != 0) {
                /* At most one a second per room: a client sends one per key. */
                c->typing_ms = now;
                snprintf(c->typing_room, sizeof c->typing_room, "%s", room);
                nt_typing(c->sub.user, room);
            }
        } else if (type && strcmp(type, "auth") == 0) {
            ws_error_message(c, "already authenticated");
        } else {
            ws_error_message(c, "unknown message type (expected resume, typing or ping)");
        }
    }
    json_decref(msg);
}

static int on_message(void *ud, int opcode, const char *data, size_t len)
{
    ws_conn *c = ud;
    c->alive = true;
    switch (opcode) {
    case AG_WS_TEXT:
        on_text(c, data, len);
        break;
    case AG_WS_BINARY:
        ws_close(c, AG_WS_UNSUPPORTED, "binary messages are not accepted");
        break;
    case AG_WS_PING:
        ws_send(c, AG_WS_PONG, data, len);
        break;
    case AG_WS_PONG:
        break;
    case AG_WS_CLOSE:
        if (c->state != W_CLOSING) {
            /* The client closes first: echo its code (§5.5.1), then go. */
            int code;
            const char *reason;
            size_t rl;
            ag_ws_close_parse(data, len, &code, &reason, &rl);
            c->state = W_CLOSING;
            hub_detach(&c->sub);
            if (code == AG_WS_NO_STATUS)
                ws_send(c, AG_WS_CLOSE, NULL, 0);
            else
                ws_send(c, AG_WS_CLOSE, data, 2);
        }
        ws_finish(c);
        break;
    }
    return c->state == W_DONE ? 1 : 0;
}

static void on_data(void *ud, const char *data, size_t len)
{
    ws_conn *c = ud;
    if (c->state == W_DONE) return;
    hub_sub_ref(&c->sub);
    int rc = ag_ws_parser_feed(&c->parser, data, len, on_message, c);
    if (rc == AG_EPROTO) {
        ag_debug("websocket protocol error", AG_FS("reason", c->parser.why));
        ws_close(c, c->parser.close_code, c->parser.why);
    }
    hub_sub_unref(&c->sub);
}

static void on_close(void *ud)
{
    ws_conn *c = ud;
    c->client_gone = true;
    hub_sub_ref(&c->sub);
    ws_finish(c);
    hub_sub_unref(&c->sub);
}

static const ag_tunnel_cbs k_cbs = {.on_data = on_data, .on_close = on_close};

/* The client left before the upgrade (while its header token was checked). */
static void on_abort(void *ud)
{
    ws_conn *c = ud;
    c->client_gone = true;
}

/* ---- The route ------------------------------------------------------------------------------ */

static void get_ws(ag_http_req *req, ag_http_res *res, void *ud)
{
    char accept[AG_WS_ACCEPT_LEN + 1];
    int status;
    const char *why;
    if (atomic_load(&g_nt.draining)) {
        ag_res_error(res, 503, "UNAVAILABLE", "the service is stopping", NULL);
        ag_res_send(res);
        return;
    }
    if (ag_ws_handshake_check(req, accept, &status, &why) < 0) {
        if (status == 426) {
            ag_res_header(res, "Sec-WebSocket-Version", "13");
            ag_res_header(res, "Upgrade", "websocket");
        }
        ag_res_error(res, status, status == 426 ? "UPGRADE_REQUIRED" : "BAD_UPGRADE", why, NULL);
        ag_res_send(res);
        return;
    }
    int64_t since = 0;
    const char *sq = ag_req_query(req, "since");
    bool resume = false;
    if (sq) {
        json_t *j = json_string(sq);
        bool ok = j && ag_json_int_of(j, 0, &since);
        json_decref(j);
        if (!ok) {
            ag_res_error(res, 400, "BAD_REQUEST", "since must be a notification id", NULL);
            ag_res_send(res);
            return;
        }
        resume = true;
    }
    const char *auth = ag_req_header(req, "Authorization");
    const char *token = auth ? nt_bearer(auth) : ag_req_query(req, "access_token");
    if ((auth || token) && (!token || !nt_token_ok(token))) {
        ag_res_header(res, "WWW-Authenticate", "Bearer error=\"invalid_request\"");
        ag_res_error(res, 401, "UNAUTHENTICATED",
                     "the Authorization header must be \"Bearer <token>\"", NULL);
        ag_res_send(res);
        return;
    }
    ws_conn *c = ag_calloc(1, sizeof *c);
    hub_sub_init(&c->sub, &k_ops);
    c->req = req;
    c->res = res;
    c->resume = resume;
    c->since = since;
    memcpy(c->accept, accept, sizeof accept);
    ag_ws_limits lim = {.max_message = g_nt.cfg.max_message, .allow_fragments = false};
    ag_ws_parser_init(&c->parser, &lim);
    uv_timer_init(ag_loop_uv(ag_req_loop(req)), &c->timer);
    c->timer.data = c;
    c->timer_open = true;
    hub_sub_ref(&c->sub); /* the timer's, dropped when it is closed */
    ag_res_on_abort(res, on_abort, c);
    if (token) {
        c->state = W_CHECK_HEADER;
        verify(c, token);
        return;
    }
    c->state = W_AWAIT_AUTH;
    if (ag_ws_upgrade(req, res, accept, &k_cbs, c) < 0) {
        c->finished = true; /* the client went: only release */
        ag_res_loop_abort(res);
        ws_finish(c);
        return;
    }
    c->upgraded = true;
    arm(c, g_nt.cfg.auth_timeout_ms);
}

void nt_ws_routes(ag_router *r)
{
    ag_router_add(r, "GET", "/v1/ws", get_ws, NULL, AG_ROUTE_ASYNC);
}
