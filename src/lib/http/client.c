/*
 * client.c — outbound HTTP on libcurl (see agora/http_client.h).
 *
 * Blocking calls: easy handles are kept on a free list and reused; all of them
 * share one connection cache through a curl share object (with a mutex per
 * shared data kind), so a keep-alive connection opened by one worker serves
 * the next call from any worker.
 *
 * Asynchronous calls: each loop gets a curl multi handle driven by libuv
 * (curl's socket callback maps to uv_poll, its timer callback to uv_timer).
 * Async handles keep to their loop's own connection cache: a connection is
 * never touched by two threads.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>

#include "agora/http_client.h"
#include "agora/log.h"
#include "agora/trace.h"
#include "internal.h"

typedef struct lmulti lmulti;

struct ag_http_client {
    ag_http_client_opts o;
    CURLSH *share;
    pthread_mutex_t locks[CURL_LOCK_DATA_LAST];
    pthread_mutex_t mu; /* free list and per-loop table */
    CURL **free_easy;
    int nfree, cap_free;
    lmulti **lm;
    int nlm;
};

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *ud)
{
    ag_http_client *c = ud;
    pthread_mutex_lock(&c->locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *ud)
{
    ag_http_client *c = ud;
    pthread_mutex_unlock(&c->locks[data]);
}

int ag_http_client_new(const ag_http_client_opts *o, ag_http_client **out)
{
    pthread_once(&g_curl_once, curl_init_once);
    ag_http_client *c = ag_calloc(1, sizeof *c);
    if (o) c->o = *o;
    if (!c->o.connect_timeout_ms) c->o.connect_timeout_ms = 2000;
    if (!c->o.timeout_ms) c->o.timeout_ms = 10000;
    if (!c->o.max_response_bytes) c->o.max_response_bytes = 16u << 20;
    if (!c->o.user_agent) c->o.user_agent = "agora/0.1";
    c->o.user_agent = ag_strdup(c->o.user_agent);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&c->locks[i], NULL);
    pthread_mutex_init(&c->mu, NULL);
    c->share = curl_share_init();
    if (!c->share) {
        ag_http_client_free(c);
        return AG_ENOMEM;
    }
    curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(c->share, CURLSHOPT_USERDATA, c);
    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    *out = c;
    return 0;
}

void ag_http_client_free(ag_http_client *c)
{
    if (!c) return;
    for (int i = 0; i < c->nfree; i++)
        curl_easy_cleanup(c->free_easy[i]);
    ag_free(c->free_easy);
    if (c->share) curl_share_cleanup(c->share);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&c->locks[i]);
    pthread_mutex_destroy(&c->mu);
    ag_free(c->lm);
    ag_free((char *)c->o.user_agent);
    ag_free(c);
}

/* ---- Shared request setup ------------------------------------------------ */

typedef struct setup {
    struct curl_slist *headers;
    uint64_t timeout_ms;
    bool deadline_bound; /* the deadline, not the timeout, limits the call */
} setup;

/* Applies `call` to `e`. Returns AG_EDEADLINE when no time is left. */
static bool has_crlf(const char *s)
{
    return s && strpbrk(s, "\r\n") != NULL;
}

static int apply_call(ag_http_client *c, CURL *e, const ag_http_call *call, setup *su)
{
    /* A CR or LF in a header would let a value start a header of its own. */
    if (has_crlf(call->request_id) || has_crlf(call->content_type) || has_crlf(call->method))
        return AG_EINVAL;
    for (const char *const *p = call->headers; p && *p; p++)
        if (has_crlf(*p)) return AG_EINVAL;
    uint64_t timeout = call->timeout_ms ? call->timeout_ms : c->o.timeout_ms;
    su->deadline_bound = false;
    if (call->deadline && call->deadline != AG_DEADLINE_NONE) {
        uint64_t left = ag_deadline_remaining(call->deadline);
        if (left == 0) return AG_EDEADLINE;
        if (left <= timeout) {
            timeout = left;
            su->deadline_bound = true;
        }
    }
    su->timeout_ms = timeout;
    const char *method = call->method ? call->method : "GET";
    curl_easy_setopt(e, CURLOPT_URL, call->url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, c->o.user_agent);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(c->o.connect_timeout_ms < timeout ? c->o.connect_timeout_ms : timeout));
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    if (call->body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
        strcmp(method, "PATCH") == 0) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, call->body ? (const char *)call->body : "");
        if (strcmp(method, "POST") != 0) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    struct curl_slist *h = NULL;
    bool has_tp = false;
    for (const char *const *p = call->headers; p && *p; p++) {
        h = curl_slist_append(h, *p);
        has_tp |= strncasecmp(*p, "traceparent:", 12) == 0;
    }
    ag_trace_ctx tc = ag_trace_current(); /* the client span's, in ag_http_client_do */
    if (tc.valid && !has_tp) {
        char tp[AG_TRACEPARENT_LEN + 16];
        memcpy(tp, "traceparent: ", 13);
        ag_traceparent_format(&tc, tp + 13);
        h = curl_slist_append(h, tp);
        if (tc.state[0]) {
            char ts[sizeof tc.state + 16];
            snprintf(ts, sizeof ts, "tracestate: %s", tc.state);
            h = curl_slist_append(h, ts);
        }
    }
    if (call->body) {
        char ct[160];
        snprintf(ct, sizeof ct, "Content-Type: %s",
                 call->content_type ? call->content_type : "application/json");
        h = curl_slist_append(h, ct);
    }
    if (call->request_id) {
        char rid[200];
        snprintf(rid, sizeof rid, "X-Request-Id: %s", call->request_id);
        h = curl_slist_append(h, rid);
    }
    if (call->deadline && call->deadline != AG_DEADLINE_NONE) {
        char dl[64];
        snprintf(dl, sizeof dl, "%s: %llu", AG_DEADLINE_HEADER,
                 (unsigned long long)ag_deadline_remaining(call->deadline));
        h = curl_slist_append(h, dl);
    }
    h = curl_slist_append(h, "Expect:"); /* no 100-continue round trip */
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    su->headers = h;
    return 0;
}

static int map_curl_error(CURLcode rc, const setup *su)
{
    switch (rc) {
    case CURLE_OK:
        return 0;
    case CURLE_OPERATION_TIMEDOUT:
        return su->deadline_bound ? AG_EDEADLINE : AG_ETIMEDOUT;
    case CURLE_COULDNT_CONNECT:
        return AG_ECONNREFUSED;
    case CURLE_COULDNT_RESOLVE_HOST:
        return AG_ENOTFOUND;
    case CURLE_OUT_OF_MEMORY:
        return AG_ENOMEM;
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
        return AG_ECLOSED;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return AG_EINVAL;
    default:
        return AG_EIO;
    }
}

/* Keeps only the final response's header block (after 100 Continue or a
 * redirect, curl reports several). */
static void collect_header(ag_buf *b, const char *data, size_t n)
{
    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) b->len = 0;
    if (n == 2 && data[0] == '\r') return;
    ag_buf_append(b, data, n);
}

/* ---- Blocking --------------------------------------------------------------- */

typedef struct sync_ctx {
    ag_http_reply *rep;
    bool too_big;
} sync_ctx;

static size_t sync_write(char *data, size_t size, size_t n, void *ud)
{
    sync_ctx *sc = ud;
    if (ag_buf_append(&sc->rep->body, data, size * n) < 0) {
        sc->too_big = true;
        return 0;
    }
    return size * n;
}

static size_t sync_header(char *data, size_t size, size_t n, void *ud)
{
    sync_ctx *sc = ud;
    collect_header(&sc->rep->headers, data, size * n);
    return size * n;
}

static CURL *take_easy(ag_http_client *c)
{
    CURL *e = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->nfree > 0) e = c->free_easy[--c->nfree];
    pthread_mutex_unlock(&c->mu);
    if (e) {
        curl_easy_reset(e);
    } else {
        e = curl_easy_init();
    }
    return e;
}

static void give_easy(ag_http_client *c, CURL *e)
{
    pthread_mutex_lock(&c->mu);
    if (c->nfree == c->cap_free) {
        c->cap_free = c->cap_free ? c->cap_free * 2 : 8;
        c->free_easy = ag_realloc(c->free_easy, (size_t)c->cap_free * sizeof *c->free_easy);
    }
    c->free_easy[c->nfree++] = e;
    pthread_mutex_unlock(&c->mu);
}

int ag_http_client_do(ag_http_client *c, const ag_http_call *call, ag_http_reply *rep)
{
    memset(rep, 0, sizeof *rep);
    ag_buf_init(&rep->headers, 64 * 1024);
    ag_buf_init(&rep->body, c->o.max_response_bytes);
    if (ag_loop_current()) {
        ag_error("blocking HTTP call on an I/O loop refused", AG_FS("url", call->url));
        return AG_ESTATE;
    }
    CURL *e = take_easy(c);
    if (!e) return AG_ENOMEM;
    /* A client span when a request or event is being traced (agora/trace.h);
     * its context is the traceparent the peer gets. */
    ag_span span;
    const char *method = call->method ? call->method : "GET";
    char sname[96];
    snprintf(sname, sizeof sname, "%s%s%s", method, call->peer ? " " : "",
             call->peer ? call->peer : "");
    ag_span_begin(&span, sname, AG_SPAN_CLIENT, NULL);
    ag_span_attr_str(&span, "http.request.method", method);
    if (call->peer) ag_span_attr_str(&span, "peer.service", call->peer);
    ag_span_attr_str(&span, "url.full", call->url);
    ag_span_enter(&span);
    setup su = {0};
    int rc = apply_call(c, e, call, &su);
    ag_span_leave(&span);
    if (rc < 0) {
        give_easy(c, e);
        ag_span_error(&span, ag_strerror(rc));
        ag_span_end(&span);
        return rc;
    }
    sync_ctx sc = {rep, false};
    curl_easy_setopt(e, CURLOPT_SHARE, c->share);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sync_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &sc);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, sync_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &sc);
    CURLcode cr = curl_easy_perform(e);
    curl_slist_free_all(su.headers);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
    if (cr == CURLE_OK) {
        long status = 0;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        rep->status = (int)status;
        rc = 0;
    } else {
        rc = sc.too_big ? AG_ETOOBIG : map_curl_error(cr, &su);
    }
    give_easy(c, e);
    if (rc < 0) {
        ag_span_error(&span, ag_strerror(rc));
    } else {
        ag_span_attr_int(&span, "http.response.status_code", rep->status);
        if (rep->status >= 500) ag_span_error(&span, "the server answered 5xx");
    }
    ag_span_end(&span);
    if (rc < 0) ag_http_reply_release(rep);
    return rc;
}

int ag_http_reply_header(const ag_http_reply *rep, const char *name, char *out, size_t n)
{
    size_t nlen = strlen(name);
    const char *p = rep->headers.data;
    if (!p) return AG_ENOTFOUND;
    while (*p) {
        const char *eol = strstr(p, "\r\n");
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
            const char *v = p + nlen + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t vlen = (size_t)(p + len - v);
            while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
                vlen--;
            if (n) {
                size_t k = vlen < n - 1 ? vlen : n - 1;
                memcpy(out, v, k);
                out[k] = '\0';
            }
            return (int)vlen;
        }
        if (!eol) break;
        p = eol + 2;
    }
    return AG_ENOTFOUND;
}

void ag_http_reply_release(ag_http_reply *rep)
{
    ag_buf_release(&rep->headers);
    ag_buf_release(&rep->body);
}

/* ---- Asynchronous ------------------------------------------------------------ */

struct lmulti {
    ag_http_client *c;
    ag_loop *loop;
    CURLM *multi;
    uv_timer_t timer;
    int nops;
};

typedef struct sockctx {
    uv_poll_t poll;
    curl_socket_t fd;
    lmulti *lm;
} sockctx;

struct ag_http_op {
    CURL *easy;
    lmulti *lm;
    ag_http_async_cbs cbs;
    void *ud;
    setup su;
    char *url, *method, *body;
    ag_buf headers;
    bool head_done, aborted;
};

static void check_done(lmulti *lm);

static void op_free(ag_http_op *op)
{
    curl_slist_free_all(op->su.headers);
    curl_easy_cleanup(op->easy);
    ag_buf_release(&op->headers);
    ag_free(op->url);
    ag_free(op->method);
    ag_free(op->body);
    ag_free(op);
}

static void op_head(ag_http_op *op)
{
    if (op->head_done) return;
    op->head_done = true;
    long status = 0;
    curl_easy_getinfo(op->easy, CURLINFO_RESPONSE_CODE, &status);
    if (op->cbs.on_head &&
        op->cbs.on_head(op->ud, (int)status, op->headers.data ? op->headers.data : "",
                        op->headers.len) != AG_NEXT)
        op->aborted = true;
}

static size_t async_write(char *data, size_t size, size_t n, void *ud)
{
    ag_http_op *op = ud;
    op_head(op);
    if (op->aborted) return 0;
    if (!op->cbs.on_body) return size * n;
    int rc = op->cbs.on_body(op->ud, data, size * n);
    if (rc == AG_EBUSY) return CURL_WRITEFUNC_PAUSE;
    if (rc < 0) {
        op->aborted = true;
        return 0;
    }
    return size * n;
}

static size_t async_header(char *data, size_t size, size_t n, void *ud)
{
    ag_http_op *op = ud;
    collect_header(&op->headers, data, size * n);
    return size * n;
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    sockctx *sc = p->data;
    int flags = 0;
    if (status < 0) flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    int running;
    lmulti *lm = sc->lm;
    curl_multi_socket_action(lm->multi, sc->fd, flags, &running);
    check_done(lm);
}

static void on_sock_closed(uv_handle_t *h)
{
    ag_free(h->data);
}

static int sock_cb(CURL *e, curl_socket_t fd, int what, void *ud, void *sockp)
{
    lmulti *lm = ud;
    sockctx *sc = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (sc) {
            uv_poll_stop(&sc->poll);
            uv_close((uv_handle_t *)&sc->poll, on_sock_closed);
            curl_multi_assign(lm->multi, fd, NULL);
        }
        return 0;
    }
    if (!sc) {
        sc = ag_calloc(1, sizeof *sc);
        sc->fd = fd;
        sc->lm = lm;
        uv_poll_init_socket(ag_loop_uv(lm->loop), &sc->poll, fd);
        sc->poll.data = sc;
        curl_multi_assign(lm->multi, fd, sc);
    }
    int events = 0;
    if (what & CURL_POLL_IN) events |= UV_READABLE;
    if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
    uv_poll_start(&sc->poll, events, on_poll);
    return 0;
}

static void on_timeout(uv_timer_t *t)
{
    lmulti *lm = t->data;
    int running;
    curl_multi_socket_action(lm->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(lm);
}

static int timer_cb(CURLM *m, long timeout_ms, void *ud)
{
    lmulti *lm = ud;
    if (timeout_ms < 0)
        uv_timer_stop(&lm->timer);
    else
        uv_timer_start(&lm->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

static void finish_op(ag_http_op *op, int err)
{
    lmulti *lm = op->lm;
    curl_multi_remove_handle(lm->multi, op->easy);
    lm->nops--;
    if (err == 0) op_head(op);
    op->cbs.on_done(op->ud, err);
    op_free(op);
}

static void check_done(lmulti *lm)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(lm->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        ag_http_op *op;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&op);
        CURLcode rc = msg->data.result;
        int err = rc == CURLE_OK ? 0 : op->aborted ? AG_ECANCELED : map_curl_error(rc, &op->su);
        finish_op(op, err);
    }
}

static lmulti *loop_multi(ag_http_client *c, ag_loop *loop)
{
    int i = ag_loop_index(loop);
    pthread_mutex_lock(&c->mu);
    if (i >= c->nlm) {
        c->lm = ag_realloc(c->lm, (size_t)(i + 1) * sizeof *c->lm);
        for (int j = c->nlm; j <= i; j++)
            c->lm[j] = NULL;
        c->nlm = i + 1;
    }
    lmulti *lm = c->lm[i];
    pthread_mutex_unlock(&c->mu);
    if (lm) return lm;
    lm = ag_calloc(1, sizeof *lm);
    lm->c = c;
    lm->loop = loop;
    lm->multi = curl_multi_init();
    uv_timer_init(ag_loop_uv(loop), &lm->timer);
    lm->timer.data = lm;
    curl_multi_setopt(lm->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(lm->multi, CURLMOPT_SOCKETDATA, lm);
    curl_multi_setopt(lm->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(lm->multi, CURLMOPT_TIMERDATA, lm);
    pthread_mutex_lock(&c->mu);
    c->lm[i] = lm;
    pthread_mutex_unlock(&c->mu);
    return lm;
}

int ag_http_client_start(ag_http_client *c, ag_loop *loop, const ag_http_call *call,
                         const ag_http_async_cbs *cbs, void *ud, ag_http_op **out)
{
    if (ag_loop_current() != loop || !cbs || !cbs->on_done) return AG_ESTATE;
    lmulti *lm = loop_multi(c, loop);
    ag_http_op *op = ag_calloc(1, sizeof *op);
    op->easy = curl_easy_init();
    op->lm = lm;
    op->cbs = *cbs;
    op->ud = ud;
    ag_buf_init(&op->headers, 64 * 1024);
    /* Copy what curl does not copy itself (the body). */
    ag_http_call copy = *call;
    if (call->body) {
        op->body = ag_malloc(call->body_len + 1);
        memcpy(op->body, call->body, call->body_len);
        copy.body = op->body;
    }
    int rc = apply_call(c, op->easy, &copy, &op->su);
    if (rc < 0) {
        op_free(op);
        return rc;
    }
    curl_easy_setopt(op->easy, CURLOPT_PRIVATE, op);
    curl_easy_setopt(op->easy, CURLOPT_WRITEFUNCTION, async_write);
    curl_easy_setopt(op->easy, CURLOPT_WRITEDATA, op);
    curl_easy_setopt(op->easy, CURLOPT_HEADERFUNCTION, async_header);
    curl_easy_setopt(op->easy, CURLOPT_HEADERDATA, op);
    if (curl_multi_add_handle(lm->multi, op->easy) != CURLM_OK) {
        op_free(op);
        return AG_EIO;
    }
    lm->nops++;
    if (out) *out = op;
    return 0;
}

void ag_http_op_resume(ag_http_op *op)
{
    curl_easy_pause(op->easy, CURLPAUSE_CONT);
}

void ag_http_op_cancel(ag_http_op *op)
{
    finish_op(op, AG_ECANCELED);
}

static void on_lm_timer_closed(uv_handle_t *h)
{
    ag_free(h->data);
}

void ag_http_client_loop_release(ag_http_client *c, ag_loop *loop)
{
    int i = ag_loop_index(loop);
    pthread_mutex_lock(&c->mu);
    lmulti *lm = i < c->nlm ? c->lm[i] : NULL;
    if (lm) c->lm[i] = NULL;
    pthread_mutex_unlock(&c->mu);
    if (!lm) return;
    curl_multi_cleanup(lm->multi); /* closes cached connections: sock_cb REMOVE */
    uv_timer_stop(&lm->timer);
    uv_close((uv_handle_t *)&lm->timer, on_lm_timer_closed);
}
