/*
 * server.c — the HTTP/1.1 server: connections, parsing, dispatch, sending.
 *
 * Threading: every loop of the loopset runs a listener on the same port
 * (SO_REUSEPORT) and owns the connections it accepted; nothing about a
 * connection is touched by another thread except through ag_loop_post.
 * Handlers run on the worker pool (or inline on the loop for AG_ROUTE_INLINE);
 * a worker hands its finished response back with ag_loop_post.
 *
 * A connection handles one request at a time. While a request is in a worker
 * the parser is paused and the socket is not read, so a pipelining client
 * gets its responses in order and cannot make us buffer more than one read
 * (64 KiB) of input ahead. A client that does not read its responses makes
 * the write queue grow until WRITE_HIGH_WATER, where parsing pauses too.
 *
 * Connection state machine (phase; the timer's meaning in brackets):
 *
 *   accept ─► IDLE [header timeout on the first request, idle timeout after]
 *               │ first byte                         timer: close silently
 *               ▼
 *             HEAD [header timeout]  ── too big: 431 ── timer: 408 ──┐
 *               │ headers complete      bad bytes: 400               │
 *               ▼                                                    │
 *             BODY [body timeout]    ── too big: 413 ── timer: 408 ──┤
 *               │ message complete                                   │
 *               ▼                                                    ▼
 *           HANDLING (inline: returns at once; worker: parser     LINGER: response
 *               │      paused, socket not read) [write timeout      written, FIN sent,
 *               │      only while a stream waits on the client]     input discarded
 *               ▼                                                   for up to 2 s,
 *           response queued ─► keep-alive? ─ yes ─► IDLE            then closed
 *                                    └──── no (or draining) ─► LINGER
 *
 * Every error answer closes the connection through LINGER, so that the client
 * reads the answer before the kernel would reset a socket with unread input.
 *
 * Bodies: in memory (c->body, up to the route's limit) or, for a spooled
 * route, written to an anonymous file (c->spool_fd) as they arrive; the
 * limit is decided at headers complete from the route (its flag, its limit,
 * its body policy), so a Content-Length above it is answered 413 before a
 * byte of the body is read. The file is closed in finish_request. A
 * streamed body (AG_BODY_STREAM, asynchronous routes) dispatches at headers
 * complete instead; the parser stays paused until the handler asks for the
 * body (ag_req_body_read), then each on_body goes to its sink, and
 * ag_req_body_pause/resume hold and release the socket:
 *
 *   head ─► HANDLING (no body read) ─ask─► BODY (sink gets bytes) ─end─► HANDLING
 *                                        │  ▲ pause/resume        │ too big, stalled,
 *                                        ▼  │                     ▼ bad framing
 *                                        HELD (≤ one read kept)  FAILED: sink's on_end(<0),
 *                                                                keep-alive off
 *
 * An answer finished before the body's end turns keep-alive off
 * (must_close): the rest of the body is never parsed as a next request.
 *
 * TLS (when a certificate is configured): OpenSSL with memory BIOs, so that
 * libuv keeps the socket. Bytes read go into the SSL object and what it
 * decrypts takes the plain path (on_data); everything written is encrypted
 * first and the ciphertext is written as an owned buffer (tls_* below).
 * Libraries that own the socket (libtls, libevent's bufferevent_ssl) would
 * take it from libuv, hence this small layer.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <llhttp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <strings.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agora/config.h"
#include "agora/id.h"
#include "agora/log.h"
#include "internal.h"

#define READ_BUF_SIZE 65536
#define WRITE_HIGH_WATER (1u << 20) /* pause parsing past this many queued bytes */
#define STREAM_HIGH_WATER (256u << 10)
#define LINGER_MS 2000

typedef enum phase { P_IDLE, P_HEAD, P_BODY, P_HANDLING, P_LINGER, P_TUNNEL } phase;
typedef enum tmode { T_NONE, T_IDLE, T_HEAD, T_BODY, T_LINGER } tmode;

typedef struct loop_srv loop_srv;

typedef struct ag_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;  /* the read side: idle, head, body, linger */
    uv_timer_t wtimer; /* write progress: runs while output is queued */
    loop_srv *ls;
    struct ag_conn *prev, *next;
    llhttp_t parser;
    phase phase;
    tmode tmode;
    int refs;         /* tcp and two timer handles, a worker holding req */
    bool closing;     /* close begun; no more I/O */
    bool paused;      /* parser paused: a request in a worker, or closing */
    bool reading;     /* uv_read_start active */
    bool wait_drain;  /* paused until the write queue drains */
    bool close_after; /* linger-close once the write queue drains */
    bool in_worker;   /* req is owned by a worker right now */
    bool in_async;    /* req is owned by an AG_ROUTE_ASYNC handler */
    bool dispatching; /* inside dispatch: a finishing call must not resume */
    bool tunnel;      /* after ag_res_tunnel: raw bytes both ways */
    bool loop_close;  /* a loop stream decided to close at its head */
    ag_res_event_fn abort_fn, drain_fn;
    void *abort_ud, *drain_ud;
    size_t drain_low;
    ag_tunnel_cbs tcbs;
    void *tud;
    bool served_one;      /* at least one request answered (idle vs first) */
    bool in_trailers;     /* past the head: header callbacks are trailers */
    bool gone;            /* guarded by smu: closed, seen by stream starters */
    pthread_mutex_t smu;  /* hands req.res.stream between worker and loop */
    uint64_t body_raw;    /* bytes read in the BODY phase, framing included */
    size_t trailer_bytes; /* trailer bytes seen (not stored) */
    size_t wq_mark;       /* write queue size when the write timer was armed */
    bool discard_body;    /* body bytes are dropped (early answer decided) */
    int early_status;     /* answer decided at headers complete */
    int fail_status;      /* why the parser was stopped (431, 413) */
    const char *fail_why; /* with 400: what was wrong (static), else "malformed" */
    ag_buf head;          /* request line and headers, NUL-separated */
    size_t url_off, url_len;
    struct {
        size_t name_off, value_off;
    } * hoffs;
    int nh, hcap; /* hoffs grows to max_headers: most requests carry a dozen */
    int hstate;   /* 0: none, 1: in field, 2: in value */
    ag_buf body;
    uint64_t body_limit; /* this request's: the route's, or max_body_bytes */
    int spool_fd;        /* this request's spooled body, or -1 */
    uint64_t spool_size; /* bytes written to it */
    ag_buf pending;      /* input read but not parsed while paused */
    SSL *ssl;            /* TLS connections only */
    ag_buf held;         /* a loop stream's head, sent with its first body bytes */
    /* A streamed request body (AG_BODY_STREAM): the handler runs at headers
     * complete and reads the body through `sink` once it asks. */
    bool body_stream;  /* this request's body streams to its handler */
    bool body_reading; /* the handler asked (ag_req_body_read) */
    bool body_held;    /* the handler paused it (ag_req_body_pause) */
    bool body_done;    /* its end came (body_err says how) */
    bool feeding;      /* inside llhttp_execute: no nested feed */
    int body_err;      /* 0, or why it could not complete */
    uint64_t body_streamed;
    ag_body_sink sink;
    void *sink_ud;
    ag_http_req req;
    char remote[48];
} ag_conn;

struct loop_srv {
    ag_http_server *srv;
    ag_loop *loop;
    uv_tcp_t listener;
    int fd;
    bool listening;
    ag_conn *conns;
    char rbuf[READ_BUF_SIZE];
    ag_buf scratch; /* response heads are built here */
};

struct ag_http_server {
    ag_http_server_opts o;
    ag_metrics *metrics;
    ag_metric *m_requests, *m_errors, *m_latency, *m_rejected;
    ag_series *s_rejected_conns, *s_timeouts, *s_bad, *s_busy;
    loop_srv *ls;
    int nls;
    int port;
    atomic_size_t nconns;
    atomic_bool draining;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int open_listeners; /* guarded by mu */
    int started_listeners;
    int start_err;
    SSL_CTX *tls; /* NULL: plain HTTP */
};

static llhttp_settings_t g_settings;
static pthread_once_t g_settings_once = PTHREAD_ONCE_INIT;

static void conn_close(ag_conn *c);
static void conn_resume(ag_conn *c);
static void arm_timer(ag_conn *c, tmode mode);
static void send_response(ag_conn *c);
static void finish_request(ag_conn *c);

/* ---- Limits ----------------------------------------------------------------- */

void ag_http_limits_default(ag_http_limits *l)
{
    l->max_header_bytes = 16 * 1024;
    l->max_headers = 100;
    l->max_body_bytes = 1024 * 1024;
    l->header_timeout_ms = 10000;
    l->body_timeout_ms = 30000;
    l->idle_timeout_ms = 60000;
    l->write_timeout_ms = 30000;
    l->request_timeout_ms = 30000;
    l->max_connections = 10000;
}

int ag_http_limits_from_env(ag_http_limits *l)
{
    long long n;
    int rc = 0;
    rc |= ag_config_size("AGORA_HTTP_MAX_HEADER_BYTES", l->max_header_bytes, &l->max_header_bytes);
    if (ag_config_int("AGORA_HTTP_MAX_HEADERS", l->max_headers, 1, 10000, &n) == 0)
        l->max_headers = (int)n;
    else
        rc = -1;
    rc |= ag_config_size("AGORA_HTTP_MAX_BODY_BYTES", l->max_body_bytes, &l->max_body_bytes);
    rc |= ag_config_duration_ms("AGORA_HTTP_HEADER_TIMEOUT", l->header_timeout_ms,
                                &l->header_timeout_ms);
    rc |= ag_config_duration_ms("AGORA_HTTP_BODY_TIMEOUT", l->body_timeout_ms, &l->body_timeout_ms);
    rc |= ag_config_duration_ms("AGORA_HTTP_IDLE_TIMEOUT", l->idle_timeout_ms, &l->idle_timeout_ms);
    rc |= ag_config_duration_ms("AGORA_HTTP_WRITE_TIMEOUT", l->write_timeout_ms,
                                &l->write_timeout_ms);
    rc |= ag_config_duration_ms("AGORA_HTTP_REQUEST_TIMEOUT", l->request_timeout_ms,
                                &l->request_timeout_ms);
    if (ag_config_int("AGORA_HTTP_MAX_CONNECTIONS", l->max_connections, 1, 1000000, &n) == 0)
        l->max_connections = (int)n;
    else
        rc = -1;
    if (l->max_header_bytes < 256) {
        ag_error("invalid configuration", AG_FS("variable", "AGORA_HTTP_MAX_HEADER_BYTES"),
                 AG_FS("reason", "must be at least 256 bytes"));
        rc = -1;
    }
    return rc ? AG_ECONFIG : 0;
}

/* ---- Small helpers ------------------------------------------------------------ */

/* The CLOCK_REALTIME instant `ms` from now, for pthread_cond_timedwait. */
static struct timespec realtime_after(uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static const char *http_date(void)
{
    static _Thread_local time_t cached;
    static _Thread_local char buf[40];
    time_t now = time(NULL);
    if (now != cached) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cached = now;
    }
    return buf;
}

static bool sane_request_id(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char ch = s[n];
        if (n >= 128) return false;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.' || ch == ':'))
            return false;
    }
    return n > 0;
}

static ag_http_server *srv_of(ag_conn *c)
{
    return c->ls->srv;
}

/* ---- Metrics ------------------------------------------------------------------ */

static void record(ag_http_server *s, ag__route_stats *st, int status, double seconds)
{
    if (status < 100 || status > 599) status = 500;
    ag_series *cnt = atomic_load_explicit(&st->count[status], memory_order_acquire);
    ag_series *lat = atomic_load_explicit(&st->latency[status], memory_order_acquire);
    if (!cnt || !lat) {
        char code[8];
        snprintf(code, sizeof code, "%d", status);
        const char *labels[] = {st->route, st->method[0] ? st->method : "*", code};
        cnt = ag_metric_series(s->m_requests, labels);
        lat = ag_metric_series(s->m_latency, labels);
        atomic_store_explicit(&st->count[status], cnt, memory_order_release);
        atomic_store_explicit(&st->latency[status], lat, memory_order_release);
    }
    ag_series_inc(cnt, 1);
    ag_series_observe(lat, seconds);
    if (status >= 500) {
        ag_series *err = atomic_load_explicit(&st->errors, memory_order_acquire);
        if (!err) {
            const char *labels[] = {st->route, st->method[0] ? st->method : "*"};
            err = ag_metric_series(s->m_errors, labels);
            atomic_store_explicit(&st->errors, err, memory_order_release);
        }
        ag_series_inc(err, 1);
    }
}

static double open_conns_gauge(void *ud)
{
    ag_http_server *s = ud;
    return (double)atomic_load(&s->nconns);
}

/* ---- Writing -------------------------------------------------------------------- */

typedef struct wreq {
    uv_write_t w;
    ag_conn *c;
    char *body; /* owned */
    ag__stream *stream;
    size_t stream_bytes;
    size_t head_len;
    char head[]; /* copy of what try_write left of the head */
} wreq;

static void stream_done_bytes(ag__stream *st, size_t n)
{
    if (!st || n == 0) return;
    pthread_mutex_lock(&st->mu);
    st->pending -= n;
    pthread_cond_broadcast(&st->cond);
    pthread_mutex_unlock(&st->mu);
}

static void begin_linger(ag_conn *c);

/* The write timeout: close only if the client read nothing since the timer
 * was armed (libuv shrinks the queue size as a large write goes out). */
static void on_wtimer(uv_timer_t *t)
{
    ag_conn *c = t->data;
    size_t queued = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
    if (queued > 0 && queued < c->wq_mark) {
        c->wq_mark = queued;
        uv_timer_start(&c->wtimer, on_wtimer, srv_of(c)->o.limits.write_timeout_ms, 0);
        return;
    }
    conn_close(c);
}

/* After any write completes: continue what waited for the queue to drain. */
static void after_write_progress(ag_conn *c)
{
    if (c->closing) return;
    size_t queued = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
    if (queued == 0) {
        uv_timer_stop(&c->wtimer);
    } else { /* progress: the client reads; restart the write timeout */
        c->wq_mark = queued;
        uv_timer_start(&c->wtimer, on_wtimer, srv_of(c)->o.limits.write_timeout_ms, 0);
    }
    if (queued == 0 && c->close_after && !c->in_worker && !c->in_async) {
        begin_linger(c);
        return;
    }
    if (queued == 0 && c->phase == P_IDLE && !c->in_worker) {
        /* The answer is out: a draining server closes now, otherwise the
         * keep-alive idle time starts (not while the answer was queued). */
        if (atomic_load(&srv_of(c)->draining)) {
            conn_close(c);
            return;
        }
        if (c->tmode == T_NONE) arm_timer(c, T_IDLE);
    }
    if (c->wait_drain && queued < WRITE_HIGH_WATER / 2) {
        c->wait_drain = false;
        conn_resume(c);
    }
    if (c->drain_fn && queued < c->drain_low) {
        ag_res_event_fn fn = c->drain_fn;
        c->drain_fn = NULL;
        fn(c->drain_ud);
    }
}

static void on_write(uv_write_t *w, int status)
{
    wreq *wr = (wreq *)w;
    ag_conn *c = wr->c;
    stream_done_bytes(wr->stream, wr->stream_bytes);
    if (wr->stream) ag__stream_unref(wr->stream);
    ag_free(wr->body);
    ag_free(wr);
    if (status < 0) {
        conn_close(c);
        return;
    }
    after_write_progress(c);
}

/* Sends head + body; takes ownership of `body`. Tries a direct write first and
 * queues only what the kernel did not take. */
static void conn_write_plain(ag_conn *c, const char *head, size_t hlen, char *body, size_t blen,
                             ag__stream *st)
{
    if (c->closing) {
        stream_done_bytes(st, st ? hlen + blen : 0);
        ag_free(body);
        return;
    }
    uv_buf_t bufs[2] = {uv_buf_init((char *)head, (unsigned)hlen),
                        uv_buf_init(body ? body : (char *)"", (unsigned)blen)};
    size_t total = hlen + blen;
    size_t done = 0;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
        int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, blen ? 2 : 1);
        if (n > 0)
            done = (size_t)n;
        else if (n < 0 && n != UV_EAGAIN) {
            stream_done_bytes(st, st ? total : 0);
            ag_free(body);
            conn_close(c);
            return;
        }
    }
    if (done == total) {
        stream_done_bytes(st, st ? total : 0);
        ag_free(body);
        after_write_progress(c);
        return;
    }
    size_t head_left = done < hlen ? hlen - done : 0;
    wreq *wr = ag_malloc(sizeof *wr + head_left);
    wr->c = c;
    wr->body = body;
    wr->stream = st;
    if (st) st->loop_refs++;
    wr->stream_bytes = st ? total - done : 0;
    stream_done_bytes(st, st ? done : 0);
    wr->head_len = head_left;
    memcpy(wr->head, head + (hlen - head_left), head_left);
    uv_buf_t out[2];
    int nout = 0;
    if (head_left) out[nout++] = uv_buf_init(wr->head, (unsigned)head_left);
    size_t body_done = done > hlen ? done - hlen : 0;
    if (blen > body_done) out[nout++] = uv_buf_init(body + body_done, (unsigned)(blen - body_done));
    int rc = uv_write(&wr->w, (uv_stream_t *)&c->tcp, out, (unsigned)nout, on_write);
    if (rc < 0) {
        stream_done_bytes(st, wr->stream_bytes);
        if (st) ag__stream_unref(st);
        ag_free(body);
        ag_free(wr);
        conn_close(c);
        return;
    }
    if (!uv_is_active((uv_handle_t *)&c->wtimer)) {
        c->wq_mark = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
        uv_timer_start(&c->wtimer, on_wtimer, srv_of(c)->o.limits.write_timeout_ms, 0);
    }
}

/* ---- TLS ------------------------------------------------------------------------ */

/* Writes out what the SSL object produced (records, alerts). */
static void tls_flush(ag_conn *c)
{
    BIO *w = SSL_get_wbio(c->ssl);
    size_t n = BIO_ctrl_pending(w);
    if (n == 0 || c->closing) return;
    char *out = ag_malloc(n);
    int got = BIO_read(w, out, (int)n);
    if (got <= 0) {
        ag_free(out);
        return;
    }
    conn_write_plain(c, "", 0, out, (size_t)got, NULL);
}

static void tls_encrypt(ag_conn *c, const char *data, size_t len)
{
    while (len > 0 && !c->closing) {
        int chunk = len > (1u << 20) ? 1 << 20 : (int)len;
        int n = SSL_write(c->ssl, data, chunk);
        if (n <= 0) return; /* the handshake failed: the read side closes */
        data += n;
        len -= (size_t)n;
    }
}

/* Sends head + body (taken); over TLS encrypted first. A stream's bytes
 * count as written once encrypted: the ciphertext queue, not the stream,
 * is what backpressure watches on a TLS connection. */
static void conn_write(ag_conn *c, const char *head, size_t hlen, char *body, size_t blen,
                       ag__stream *st)
{
    if (!c->ssl) {
        conn_write_plain(c, head, hlen, body, blen, st);
        return;
    }
    if (!c->closing) {
        tls_encrypt(c, head, hlen);
        tls_encrypt(c, body, blen);
        tls_flush(c);
    }
    stream_done_bytes(st, st ? hlen + blen : 0);
    ag_free(body);
}

/* ---- Closing -------------------------------------------------------------------- */

static void conn_unref(ag_conn *c)
{
    if (--c->refs > 0) return;
    if (ag_span_recording(&c->req.span)) { /* closed before its answer was sent */
        ag_span_error(&c->req.span, "the connection closed before the answer was sent");
        ag_span_end(&c->req.span);
    }
    ag_arena_release(&c->req.arena);
    ag__res_release(&c->req.res);
    ag_buf_release(&c->head);
    ag_buf_release(&c->body);
    ag_buf_release(&c->pending);
    if (c->spool_fd >= 0) close(c->spool_fd);
    if (c->ssl) SSL_free(c->ssl);
    ag_buf_release(&c->held);
    ag_free(c->hoffs);
    pthread_mutex_destroy(&c->smu);
    ag_free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

static void notify_drain(ag_http_server *s)
{
    pthread_mutex_lock(&s->mu);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

static void conn_close(ag_conn *c)
{
    if (c->closing) return;
    c->closing = true;
    c->paused = true;
    pthread_mutex_lock(&c->smu);
    c->gone = true;
    ag__stream *st = c->req.res.stream;
    pthread_mutex_unlock(&c->smu);
    if (st) {
        pthread_mutex_lock(&st->mu);
        st->closed = true;
        pthread_cond_broadcast(&st->cond);
        pthread_mutex_unlock(&st->mu);
    }
    loop_srv *ls = c->ls;
    if (c->prev)
        c->prev->next = c->next;
    else
        ls->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->wtimer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    ag_http_server *s = srv_of(c);
    atomic_fetch_sub(&s->nconns, 1);
    if (atomic_load(&s->draining)) notify_drain(s);
    /* Tell an asynchronous owner; it still makes its finishing call. */
    c->drain_fn = NULL;
    if (c->in_async && c->tunnel && c->tcbs.on_close) {
        void (*fn)(void *) = c->tcbs.on_close;
        c->tcbs.on_close = NULL;
        fn(c->tud);
    } else if (c->in_async && c->abort_fn) {
        ag_res_event_fn fn = c->abort_fn;
        c->abort_fn = NULL;
        fn(c->abort_ud);
    }
}

static void on_linger_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    if (n < 0) conn_close(st->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    ag_conn *c = req->data;
    ag_free(req);
    if (status < 0 || c->closing) {
        conn_close(c);
        return;
    }
    arm_timer(c, T_LINGER);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);
static void feed(ag_conn *c, const char *data, size_t len);

/* Half-close and drop whatever the client still sends, for a short while. */
static void begin_linger(ag_conn *c)
{
    if (c->closing || c->phase == P_LINGER) return;
    c->phase = P_LINGER;
    c->paused = true;
    if (c->ssl && SSL_is_init_finished(c->ssl)) {
        SSL_shutdown(c->ssl); /* close_notify, before the FIN */
        tls_flush(c);
    }
    uv_shutdown_t *req = ag_malloc(sizeof *req);
    req->data = c;
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        ag_free(req);
        conn_close(c);
        return;
    }
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_linger_read);
    c->reading = true;
}

/* ---- Timers ---------------------------------------------------------------------- */

static void send_simple_error(ag_conn *c, int status, const char *code, const char *msg);
static void body_stream_fail(ag_conn *c, int err);

static void on_timer(uv_timer_t *t)
{
    ag_conn *c = t->data;
    ag_http_server *s = srv_of(c);
    switch (c->tmode) {
    case T_HEAD:
    case T_BODY:
        if (c->body_stream && !c->body_done) {
            ag_series_inc(s->s_timeouts, 1);
            body_stream_fail(c, AG_ETIMEDOUT);
        } else if (c->phase == P_HEAD || c->phase == P_BODY) {
            ag_series_inc(s->s_timeouts, 1);
            send_simple_error(c, 408, "REQUEST_TIMEOUT", "request not received in time");
        } else {
            conn_close(c);
        }
        break;
    case T_IDLE:
    case T_LINGER:
        conn_close(c);
        break;
    case T_NONE:
        break;
    }
}

static void arm_timer(ag_conn *c, tmode mode)
{
    if (c->closing) return;
    const ag_http_limits *l = &srv_of(c)->o.limits;
    uint64_t ms = 0;
    switch (mode) {
    case T_NONE:
        c->tmode = T_NONE;
        uv_timer_stop(&c->timer);
        return;
    case T_IDLE:
        ms = c->served_one ? l->idle_timeout_ms : l->header_timeout_ms;
        break;
    case T_HEAD:
        ms = l->header_timeout_ms;
        break;
    case T_BODY:
        ms = l->body_timeout_ms;
        break;
    case T_LINGER:
        ms = LINGER_MS;
        break;
    }
    c->tmode = mode;
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* ---- Responses -------------------------------------------------------------------- */

/* A streamed body paused in its last on_body has had every byte, but its
 * end (llhttp's message complete) is not parsed until the parser runs
 * again: it takes no byte, only a run. Run it now, so that an answer that
 * starts before the handler resumed the body (the gateway's upstream
 * answered while the client was held) need not close the connection as if
 * the body were unfinished. Nothing is delivered: a body still short of
 * its length stays paused where it was. */
static const char k_no_bytes[1] = "";

static void body_settle(ag_conn *c)
{
    if (!c->body_stream || !c->body_reading || c->body_done || c->feeding || c->closing ||
        c->pending.len > 0 ||
        llhttp_get_errno(&c->parser) != HPE_PAUSED)
        return;
    bool held = c->body_held;
    c->body_held = true; /* an on_body now would be a bug: keep it paused */
    llhttp_resume(&c->parser);
    feed(c, k_no_bytes, 0);
    c->body_held = held && !c->body_done;
    if (!c->body_done && llhttp_get_errno(&c->parser) != HPE_PAUSED) {
        /* still short: leave the parser as the handler left it */
        llhttp_pause(&c->parser);
        c->paused = true;
    }
}

static bool must_close(ag_conn *c)
{
    body_settle(c);
    /* A streamed body not read to its end: the rest is not parsed. */
    return !c->req.keep_alive || atomic_load(&srv_of(c)->draining) || c->close_after ||
           (c->body_stream && !c->body_done);
}

/* Builds the status line and headers into ls->scratch. */
static void build_head(ag_conn *c, bool close, bool chunked, bool length, size_t clen)
{
    ag_http_req *r = &c->req;
    ag_http_res *res = &r->res;
    ag_buf *b = &c->ls->scratch;
    b->len = 0;
    ag_buf_printf(b, "HTTP/1.1 %d %s\r\nDate: %s\r\n", res->status, ag_http_reason(res->status),
                  http_date());
    if (res->content_type) ag_buf_printf(b, "Content-Type: %s\r\n", res->content_type);
    if (chunked) ag_buf_appends(b, "Transfer-Encoding: chunked\r\n");
    if (length) ag_buf_printf(b, "Content-Length: %zu\r\n", clen);
    ag_buf_appends(b, "X-Request-Id: ");
    ag_buf_appends(b, r->id);
    ag_buf_append(b, "\r\n", 2);
    if (r->span.ctx.valid) { /* W3C Trace Context level 2: which trace this answer is in */
        char tr[AG_TRACEPARENT_LEN + 1];
        ag_traceparent_format(&r->span.ctx, tr);
        ag_buf_appends(b, "traceresponse: ");
        ag_buf_append(b, tr, AG_TRACEPARENT_LEN);
        ag_buf_append(b, "\r\n", 2);
    }
    for (size_t i = 0; i < res->nheaders; i++) { /* appends: no format to parse */
        ag_buf_appends(b, res->headers[i].name);
        ag_buf_append(b, ": ", 2);
        ag_buf_appends(b, res->headers[i].value);
        ag_buf_append(b, "\r\n", 2);
    }
    if (res->status == 101) /* RFC 9110 §7.8: a 101 names the upgrade in Connection */
        ag_buf_appends(b, "Connection: Upgrade\r\n");
    else if (close)
        ag_buf_appends(b, "Connection: close\r\n");
    else if (r->http_major == 1 && r->http_minor == 0)
        ag_buf_appends(b, "Connection: keep-alive\r\n");
    ag_buf_appends(b, "\r\n");
}

static void access_log(ag_conn *c, double secs, size_t bytes)
{
    ag_http_server *s = srv_of(c);
    if (!s->o.access_log || !ag_log_enabled(AG_LOG_INFO)) return;
    ag_http_req *r = &c->req;
    /* The line carries the request's trace and span ids (agora/log.h). */
    ag_trace_ctx saved = ag_trace_current();
    ag_trace_set_current(&r->span.ctx);
    ag_info("request", AG_FS("method", r->method), AG_FS("path", r->path),
            AG_FS("route", r->match.pattern ? r->match.pattern : ""),
            AG_FI("status", r->res.status), AG_FD("durationMs", secs * 1000.0),
            AG_FI("bytes", (long long)bytes), AG_FS("requestId", r->id),
            AG_FS("remote", c->remote));
    ag_trace_set_current(&saved);
}

const ag_trace_ctx *ag_req_trace(const ag_http_req *r)
{
    return &r->span.ctx;
}

ag_span *ag_req_span(ag_http_req *r)
{
    return &r->span;
}

/* Built-in endpoints polled by health checks and scrapers: a span for each
 * poll would bury the requests people look for. Traced when the caller
 * sent a traceparent. */
static bool untraced_path(const char *p)
{
    return strcmp(p, "/health") == 0 || strncmp(p, "/health/", 8) == 0 ||
           strcmp(p, "/metrics") == 0 || strcmp(p, "/ready") == 0;
}

/* The server span of a request that reached dispatch: parent from the
 * caller's traceparent (and tracestate), named after the route template
 * (OpenTelemetry's HTTP semantic conventions: "GET /v1/orders/:id"). */
static void begin_server_span(ag_http_req *r)
{
    const char *tp = ag_req_header(r, "traceparent");
    ag_trace_ctx parent;
    if (!tp || ag_traceparent_parse(tp, &parent) < 0) {
        memset(&parent, 0, sizeof parent);
        if (untraced_path(r->path)) return;
    } else {
        ag_tracestate_set(&parent, ag_req_header(r, "tracestate"));
    }
    char name[160];
    if (r->match.pattern)
        snprintf(name, sizeof name, "%s %s", r->method, r->match.pattern);
    else
        snprintf(name, sizeof name, "%s", r->method);
    ag_span_begin(&r->span, name, AG_SPAN_SERVER, &parent);
    if (!ag_span_recording(&r->span)) return;
    ag_span_attr_str(&r->span, "http.request.method", r->method);
    ag_span_attr_str(&r->span, "url.path", r->path);
    if (r->match.pattern) ag_span_attr_str(&r->span, "http.route", r->match.pattern);
    if (r->remote) ag_span_attr_str(&r->span, "client.address", r->remote);
    ag_span_attr_str(&r->span, "agora.request_id", r->id);
}

static void end_server_span(ag_http_req *r)
{
    if (ag_span_recording(&r->span)) {
        ag_span_attr_int(&r->span, "http.response.status_code", r->res.status);
        if (r->res.status >= 500) {
            char msg[16];
            snprintf(msg, sizeof msg, "%d", r->res.status);
            ag_span_error(&r->span, msg);
        }
    }
    ag_span_end(&r->span);
}

static void finish_request(ag_conn *c)
{
    ag_http_req *r = &c->req;
    ag_http_server *s = srv_of(c);
    double secs = (double)(ag_now_ns() - r->start_ns) / 1e9;
    ag__route_stats *st = r->match.stats ? r->match.stats : ag__router_unmatched_stats(s->o.router);
    record(s, st, r->res.status, secs);
    end_server_span(r);
    access_log(c, secs, r->res.body_len);
    memset(&r->span, 0, sizeof r->span);
    c->served_one = true;
    if (c->spool_fd >= 0) { /* the spooled body: gone unless the handler linked it */
        close(c->spool_fd);
        c->spool_fd = -1;
    }
    r->body_fd = -1;
    c->spool_size = 0;
    /* Reset for the next request, keeping the arena's first chunk. */
    ag__res_release(&r->res);
    ag_arena_reset(&r->arena);
    c->head.len = 0;
    if (c->body.cap > 65536) ag_buf_release(&c->body);
    c->body.len = 0;
    c->nh = 0;
    c->hstate = 0;
    c->early_status = 0;
    c->discard_body = false;
    c->in_trailers = false;
    c->body_stream = c->body_reading = c->body_held = c->body_done = false;
    c->body_err = 0;
    c->body_streamed = 0;
    memset(&c->sink, 0, sizeof c->sink);
    c->sink_ud = NULL;
    if (c->phase != P_LINGER) c->phase = P_IDLE;
}

/* What follows a finished response: close after it, or wait for the next
 * request (idle time starts once the answer is out). */
static void after_response(ag_conn *c, bool close)
{
    if (close) {
        c->close_after = true;
        c->paused = true;
        if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) begin_linger(c);
    } else if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > 0) {
        arm_timer(c, T_NONE); /* the write timer runs; idle starts once it is out */
    } else {
        arm_timer(c, T_IDLE);
    }
}

/* Sends the (non-streamed) response of c->req and finishes the request. */
static void send_response(ag_conn *c)
{
    ag_http_req *r = &c->req;
    ag_http_res *res = &r->res;
    bool close = must_close(c);
    if (res->streaming) {
        /* Already sent by the stream. A stream cut short (the client stopped
         * reading, or left) leaves the body incomplete: close at once. An
         * unchunked (HTTP/1.0) stream ends with the connection. */
        ag__stream *st = res->stream;
        if (st && (st->failed_timeout || st->closed)) {
            finish_request(c);
            conn_close(c);
            return;
        }
        if (!res->chunked && !r->head_only) close = true;
    } else {
        bool no_body = res->status == 204 || res->status == 304 || res->status < 200;
        build_head(c, close, false, !no_body, res->body_len);
        char *body = res->body;
        size_t blen = res->body_len;
        res->body = NULL;
        if (r->head_only || no_body) {
            ag_free(body);
            body = NULL;
            blen = 0;
        }
        conn_write(c, c->ls->scratch.data, c->ls->scratch.len, body, blen, NULL);
        res->body_len = blen;
    }
    finish_request(c);
    after_response(c, close);
}

/* An answer decided by the server before (or instead of) any handler, with
 * the connection closed after it: malformed input, limits, timeouts. */
static void send_simple_error(ag_conn *c, int status, const char *code, const char *msg)
{
    if (c->closing || c->phase == P_LINGER) return;
    ag_http_req *r = &c->req;
    if (!r->id[0]) ag_id_new_str(r->id);
    if (!r->method) r->method = "";
    if (!r->path) r->path = "";
    if (!r->start_ns) r->start_ns = ag_now_ns();
    ag__res_release(&r->res);
    ag__res_init(&r->res, r);
    ag_res_error(&r->res, status, code, msg, NULL);
    r->keep_alive = false;
    c->close_after = true;
    c->paused = true;
    arm_timer(c, T_NONE); /* no stale head/body timer cuts the answer */
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
    send_response(c);
}

/* ---- Dispatch ------------------------------------------------------------------- */

/* The router's middleware, then the route's own check: true when neither
 * answered and the handler is to run. */
static bool before_handler(ag_http_server *s, ag_http_req *r)
{
    if (ag__router_run_middleware(s->o.router, r, &r->res) == AG_STOP) return false;
    return !r->match.check || r->match.check(r, &r->res, r->match.check_ud) != AG_STOP;
}

static void run_handler(ag_http_req *r)
{
    ag_http_server *s = r->conn->ls->srv;
    if (ag_deadline_expired(r->deadline)) {
        ag_res_error(&r->res, 504, "DEADLINE_EXCEEDED", "the request's deadline passed", NULL);
        return;
    }
    ag_span_enter(&r->span);
    if (before_handler(s, r)) {
        r->match.handler(r, &r->res, r->match.ud);
        if (r->res.streaming && !r->res.stream_ended) ag_res_stream_end(&r->res);
    }
    ag_span_leave(&r->span);
}

static void finish_from_worker(void *arg)
{
    ag_conn *c = arg;
    c->in_worker = false;
    if (c->closing) {
        conn_unref(c);
        return;
    }
    conn_unref(c); /* the worker's reference; the handles still hold theirs */
    send_response(c);
    if (!c->close_after) conn_resume(c);
}

static void worker_task(void *arg)
{
    ag_conn *c = arg;
    run_handler(&c->req);
    if (ag_loop_post(c->ls->loop, finish_from_worker, c) < 0) {
        /* The loop is gone (forced stop): nothing can send; drop the ref. */
        ag_error("response dropped: loop stopped", AG_FS("requestId", c->req.id));
    }
}

/* Called from on_message_complete. Returns 0 to keep parsing or HPE_PAUSED. */
static int dispatch(ag_conn *c)
{
    ag_http_server *s = srv_of(c);
    ag_http_req *r = &c->req;
    r->keep_alive = llhttp_should_keep_alive(&c->parser);
    r->body = c->body.data ? c->body.data : "";
    r->body_len = c->body.len;
    r->body_fd = c->spool_fd;
    r->body_file_size = c->spool_size;
    c->phase = P_HANDLING;
    arm_timer(c, T_NONE);
    begin_server_span(r);

    if (c->early_status) {
        int st = c->early_status;
        if (st == 404)
            ag_res_error(&r->res, 404, "NOT_FOUND", "no route for this path", NULL);
        else if (st == 405) {
            if (strcmp(r->method, "OPTIONS") == 0) {
                ag_res_header(&r->res, "Allow", r->match.allow);
                ag_res_status(&r->res, 204);
            } else {
                ag_res_header(&r->res, "Allow", r->match.allow);
                ag_res_error(&r->res, 405, "METHOD_NOT_ALLOWED", "method not allowed here", NULL);
            }
        } else if (st == 415)
            ag_res_error(&r->res, 415, "UNSUPPORTED_MEDIA_TYPE",
                         "the request body must be application/json", NULL);
        else if (st == 504)
            ag_res_error(&r->res, 504, "DEADLINE_EXCEEDED", "the request's deadline passed", NULL);
        else
            ag_res_error(&r->res, st, "BAD_REQUEST", "bad request", NULL);
        send_response(c);
    } else if (r->match.flags & AG_ROUTE_INLINE) {
        run_handler(r);
        send_response(c);
    } else if (r->match.flags & AG_ROUTE_ASYNC) {
        if (ag_deadline_expired(r->deadline)) {
            ag_res_error(&r->res, 504, "DEADLINE_EXCEEDED", "the request's deadline passed", NULL);
            send_response(c);
        } else if (!before_handler(s, r)) {
            send_response(c);
        } else {
            c->in_async = true;
            c->refs++;
            c->dispatching = true;
            ag_span_enter(&r->span);
            r->match.handler(r, &r->res, r->match.ud);
            ag_span_leave(&r->span);
            c->dispatching = false;
            if (c->in_async) { /* answered later, from the loop */
                c->paused = true;
                return HPE_PAUSED;
            }
        }
    } else {
        c->in_worker = true;
        c->refs++;
        int rc = ag_pool_submit(s->o.pool, worker_task, c);
        if (rc < 0) {
            c->in_worker = false;
            c->refs--;
            ag_series_inc(s->s_busy, 1);
            ag_res_error(&r->res, 503, "OVERLOADED", "the service is busy; retry shortly", NULL);
            send_response(c);
        } else {
            c->paused = true;
            return HPE_PAUSED;
        }
    }
    if (c->close_after || c->closing) {
        c->paused = true;
        return HPE_PAUSED;
    }
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) >= WRITE_HIGH_WATER) {
        c->wait_drain = true;
        c->paused = true;
        return HPE_PAUSED;
    }
    return 0;
}

/* ---- Streamed bodies ----------------------------------------------------------------- */

/* At headers complete (AG_BODY_STREAM): the handler gets the request now and
 * the body later, when it asks. Returns what on_headers_complete returns:
 * 0 to go on parsing (the handler asked already), else HPE_PAUSED. */
static int dispatch_streamed(ag_conn *c)
{
    c->body_stream = true;
    c->body_streamed = 0;
    int rc = dispatch(c);
    if (!c->body_stream || c->closing || c->close_after) {
        c->paused = true; /* answered already (and closing: the body is not read) */
        return HPE_PAUSED;
    }
    (void)rc;
    c->phase = P_BODY;
    if (c->body_reading && !c->body_held && !c->body_done) {
        c->paused = false;
        arm_timer(c, T_BODY);
        return 0;
    }
    c->paused = true;
    return HPE_PAUSED;
}

/* The body cannot complete: no more is parsed; the handler hears why (now,
 * or when it asks). The connection closes after the answer. */
static void body_stream_fail(ag_conn *c, int err)
{
    if (c->body_done) return;
    c->body_done = true;
    c->body_err = err;
    c->req.keep_alive = false;
    c->paused = true;
    arm_timer(c, T_NONE);
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    if (c->body_reading && c->sink.on_end) {
        bool was = c->dispatching;
        c->dispatching = true;
        c->sink.on_end(c->sink_ud, err);
        c->dispatching = was;
    }
}

/* Reads the streamed body on: what was held, then the socket. */
static void body_pump(ag_conn *c)
{
    if (c->closing || c->close_after || c->body_done || c->body_held || !c->body_reading) return;
    c->phase = P_BODY;
    arm_timer(c, T_BODY);
    if (c->dispatching || c->feeding) return; /* the parser's caller goes on */
    c->paused = false;
    if (llhttp_get_errno(&c->parser) == HPE_PAUSED) {
        llhttp_resume(&c->parser);
        /* Paused in the last on_body: the end is parsed now, not when the
         * client's next request arrives (body_settle). */
        if (c->pending.len == 0) feed(c, k_no_bytes, 0);
    }
    while (!c->paused && c->pending.len > 0 && !c->closing) {
        ag_buf tmp = c->pending;
        ag_buf_init(&c->pending, 0);
        feed(c, tmp.data, tmp.len);
        ag_buf_release(&tmp);
    }
    if (!c->paused && !c->closing && !c->close_after && !c->reading) {
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
        c->reading = true;
    }
}

bool ag_req_body_streamed(const ag_http_req *r)
{
    return r->conn && r->conn->body_stream;
}

int ag_req_body_read(ag_http_req *r, const ag_body_sink *sink, void *ud)
{
    ag_conn *c = r->conn;
    if (!c || !c->body_stream || c->body_reading || !sink || !sink->on_data || !sink->on_end)
        return AG_ESTATE;
    c->sink = *sink;
    c->sink_ud = ud;
    c->body_reading = true;
    if (c->body_done) {
        sink->on_end(ud, c->body_err);
        return 0;
    }
    body_pump(c);
    return 0;
}

void ag_req_body_pause(ag_http_req *r)
{
    ag_conn *c = r->conn;
    if (!c || !c->body_stream || c->body_done || c->body_held) return;
    c->body_held = true;
    arm_timer(c, T_NONE);              /* the client waits on us, not we on it */
    if (!c->feeding) c->paused = true; /* what arrives is held (on_data) */
}

void ag_req_body_resume(ag_http_req *r)
{
    ag_conn *c = r->conn;
    if (!c || !c->body_stream || c->body_done || !c->body_held) return;
    c->body_held = false;
    body_pump(c);
}

/* ---- Spooled bodies ------------------------------------------------------------------ */

/* An anonymous file in `dir`: O_TMPFILE (nameless from the start, and
 * linkable into place later), or where the filesystem lacks it a file
 * created and unlinked at once. Either way nothing is left behind if the
 * process dies. */
static int spool_open(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)) return fd;
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/agora-body-XXXXXX", dir) >= (int)sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = mkostemp(path, O_CLOEXEC);
    if (fd >= 0) unlink(path);
    return fd;
}

/* Writes all of it. This is a plain write(2) on the loop thread: it copies
 * into the page cache and returns, as the socket read that produced the
 * bytes did; it blocks only when the kernel throttles a writer with too
 * many dirty pages, and then the client must be slowed anyway (libuv's fs
 * calls would move the wait to its thread pool and make us stop reading
 * the socket meanwhile, for the same effect). At most one read buffer
 * (64 KiB) is written per call, so no call holds the loop for long. */
static int spool_write(int fd, const char *at, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, at, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        at += n;
        len -= (size_t)n;
    }
    return 0;
}

/* ---- Parser callbacks --------------------------------------------------------------- */

static ag_conn *conn_of(llhttp_t *p)
{
    return p->data;
}

static int head_append(ag_conn *c, const char *at, size_t len)
{
    if (c->in_trailers) {
        /* Trailers are counted, not kept: the request's strings point into
         * c->head, which must not move once the head is complete. */
        c->trailer_bytes += len;
        if (c->trailer_bytes > srv_of(c)->o.limits.max_header_bytes) {
            c->fail_status = 431;
            return HPE_USER;
        }
        return 0;
    }
    if (ag_buf_append(&c->head, at, len) < 0) {
        c->fail_status = 431;
        return HPE_USER;
    }
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    ag_conn *c = conn_of(p);
    ag_http_req *r = &c->req;
    r->method = NULL;
    r->target = r->path = r->query = NULL;
    r->headers = NULL;
    r->nheaders = 0;
    r->body = NULL;
    r->body_len = 0;
    r->body_fd = -1;
    r->body_file_size = 0;
    r->id[0] = '\0';
    r->param_values = NULL;
    r->nlocals = 0;
    r->head_only = false;
    memset(&r->match, 0, sizeof r->match);
    r->start_ns = ag_now_ns();
    ag__res_init(&r->res, r);
    c->url_off = c->url_len = 0;
    c->in_trailers = false;
    c->trailer_bytes = 0;
    c->body_raw = 0;
    if (c->phase == P_IDLE) {
        c->phase = P_HEAD;
        /* The header timeout runs from the first byte of a keep-alive request
         * and from accept for the first one (already armed then). */
        if (c->served_one || c->tmode != T_IDLE)
            arm_timer(c, T_HEAD);
        else
            c->tmode = T_HEAD;
    }
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    ag_conn *c = conn_of(p);
    if (c->url_len == 0) c->url_off = c->head.len;
    c->url_len += len;
    return head_append(c, at, len);
}

static int on_url_complete(llhttp_t *p)
{
    ag_conn *c = conn_of(p);
    /* A percent-encoded NUL would cut a decoded path parameter or query
     * value short without anyone noticing ("q=%00" searching for ""): no
     * route takes one, so the request is refused. */
    const char *u = c->head.data + c->url_off;
    for (size_t i = 0; i + 2 < c->url_len; i++)
        if (u[i] == '%' && u[i + 1] == '0' && u[i + 2] == '0') {
            c->fail_status = 400;
            c->fail_why = "the path or query holds a percent-encoded NUL (%00)";
            return HPE_USER;
        }
    return head_append(c, "", 1);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    ag_conn *c = conn_of(p);
    if (c->in_trailers) return head_append(c, at, len);
    if (c->hstate != 1) {
        if (c->nh >= srv_of(c)->o.limits.max_headers) {
            c->fail_status = 431;
            return HPE_USER;
        }
        if (c->nh == c->hcap) {
            int max = srv_of(c)->o.limits.max_headers;
            c->hcap = c->hcap ? c->hcap * 2 : 16;
            if (c->hcap > max) c->hcap = max;
            c->hoffs = ag_realloc(c->hoffs, (size_t)c->hcap * sizeof *c->hoffs);
        }
        c->hoffs[c->nh].name_off = c->head.len;
        c->hoffs[c->nh].value_off = SIZE_MAX;
        c->nh++;
        c->hstate = 1;
    }
    return head_append(c, at, len);
}

/* RFC 9110 §5.6.2's tchar: what a field name is made of. */
static bool tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int on_header_field_complete(llhttp_t *p)
{
    ag_conn *c = conn_of(p);
    /* A name that is not a token ("Host : x", with the space llhttp lets
     * through) is refused (RFC 9112 §5.1: a server MUST answer 400): a
     * proxy behind us could read it as another header. */
    if (!c->in_trailers && c->nh > 0) {
        for (size_t i = c->hoffs[c->nh - 1].name_off; i < c->head.len; i++)
            if (!tchar((unsigned char)c->head.data[i])) {
                c->fail_status = 400;
                c->fail_why = "a header name that is not a token (a space before the colon?)";
                return HPE_USER;
            }
    }
    return head_append(c, "", 1);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    ag_conn *c = conn_of(p);
    if (c->in_trailers) return head_append(c, at, len);
    if (c->hstate != 2) {
        c->hoffs[c->nh - 1].value_off = c->head.len;
        c->hstate = 2;
    }
    return head_append(c, at, len);
}

static int on_header_value_complete(llhttp_t *p)
{
    ag_conn *c = conn_of(p);
    if (c->in_trailers) return 0;
    if (c->hstate != 2) { /* empty value: no on_header_value call */
        c->hoffs[c->nh - 1].value_off = c->head.len;
    }
    c->hstate = 0;
    return head_append(c, "", 1);
}

static int on_headers_complete(llhttp_t *p)
{
    ag_conn *c = conn_of(p);
    ag_http_server *s = srv_of(c);
    ag_http_req *r = &c->req;
    const ag_http_limits *l = &s->o.limits;

    r->http_major = p->http_major;
    r->http_minor = p->http_minor;
    if (p->method == HTTP_CONNECT) {
        c->fail_status = 405; /* no tunnels here */
        return -1;
    }
    /* Upgrades (WebSocket, h2c) are not offered yet: serve the request as a
     * plain one, so llhttp does not hand the rest of the stream over. */
    p->upgrade = 0;
    r->method = llhttp_method_name((llhttp_method_t)p->method);
    r->head_only = p->method == HTTP_HEAD;
    r->target = c->url_len ? c->head.data + c->url_off : (char *)"";
    r->nheaders = (size_t)c->nh;
    r->headers = ag_arena_alloc(&r->arena, (r->nheaders ? r->nheaders : 1) * sizeof(ag__hdr));
    for (int i = 0; i < c->nh; i++) {
        r->headers[i].name = c->head.data + c->hoffs[i].name_off;
        r->headers[i].value = c->head.data + c->hoffs[i].value_off;
    }

    const char *rid = ag_req_header(r, AG_REQUEST_ID_HEADER);
    if (rid && sane_request_id(rid))
        snprintf(r->id, sizeof r->id, "%s", rid);
    else
        ag_id_new_str(r->id);

    /* Path and query. An absolute-form target keeps only its path. */
    const char *t = r->target;
    if (strncasecmp(t, "http://", 7) == 0 || strncasecmp(t, "https://", 8) == 0) {
        t = strchr(t + 8, '/');
        if (!t) t = "/";
    }
    if (t[0] != '/') {
        c->fail_status = 400;
        return -1;
    }
    const char *q = strchr(t, '?');
    r->path = ag_arena_strndup(&r->arena, t, q ? (size_t)(q - t) : strlen(t));
    r->query = q ? ag_arena_strdup(&r->arena, q + 1) : NULL;

    r->deadline = ag_deadline_in(l->request_timeout_ms);
    const char *dl = ag_req_header(r, AG_DEADLINE_HEADER);
    ag_deadline d;
    if (dl && ag_deadline_parse_header(dl, &d) == 0) r->deadline = ag_deadline_min(r->deadline, d);

    bool has_body =
        (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
    /* The body's limit and home are the route's (and its policy's), decided
     * before any body byte is read. */
    int mrc = ag_router_match(s->o.router, r->method, r->path, &r->match);
    uint64_t limit = l->max_body_bytes;
    ag_body_mode mode = AG_BODY_MEMORY;
    if (mrc == 0) {
        if (r->match.body_limit) limit = r->match.body_limit;
        if (r->match.flags & AG_ROUTE_SPOOL) mode = AG_BODY_SPOOL;
        if (r->match.body_policy) {
            r->match.body_policy(r, &mode, &limit, r->match.body_policy_ud);
            if (!limit) limit = l->max_body_bytes;
        }
        /* only a handler on the loop can take a body as it arrives */
        if (mode == AG_BODY_STREAM && !(r->match.flags & AG_ROUTE_ASYNC)) mode = AG_BODY_SPOOL;
    }
    bool spool = mode == AG_BODY_SPOOL;
    c->body_limit = limit;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > limit) {
        c->fail_status = 413;
        return -1;
    }

    if (mrc < 0) {
        c->early_status = r->match.allow[0] ? 405 : 404;
    } else if (has_body && (r->match.flags & AG_ROUTE_JSON) &&
               !ag_req_is_content_type(r, "application/json")) {
        c->early_status = 415;
    } else if (ag_deadline_expired(r->deadline)) {
        c->early_status = 504;
    }
    c->discard_body = c->early_status != 0;

    const char *expect = ag_req_header(r, "Expect");
    if (expect && has_body) {
        if (strcasecmp(expect, "100-continue") != 0) {
            c->fail_status = 417;
            return -1;
        }
        if (c->early_status) {
            /* Answer now instead of inviting a body we would drop. */
            c->fail_status = c->early_status;
            return -1;
        }
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (r->http_major == 1 && r->http_minor >= 1) /* never to HTTP/1.0 */
            conn_write(c, cont, sizeof cont - 1, NULL, 0, NULL);
    }

    c->body.len = 0;
    c->body.limit = spool || limit > SIZE_MAX ? 0 : (size_t)limit;
    if (spool && has_body && !c->discard_body) {
        c->spool_fd = spool_open(ag_router_spool_dir(s->o.router));
        if (c->spool_fd < 0) {
            ag_error("cannot spool a request body", AG_FS("dir", ag_router_spool_dir(s->o.router)),
                     AG_FS("error", strerror(errno)), AG_FS("requestId", r->id));
            c->fail_status = 500;
            return -1;
        }
        c->spool_size = 0;
    }
    c->in_trailers = true;
    c->body_raw = 0;
    if (has_body && mode == AG_BODY_STREAM && !c->discard_body) return dispatch_streamed(c);
    if (has_body) {
        c->phase = P_BODY;
        arm_timer(c, T_BODY);
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    ag_conn *c = conn_of(p);
    if (c->discard_body) return 0;
    if (c->body_stream) {
        if (c->body_done || !c->body_reading) return HPE_PAUSED; /* not ours to parse now */
        c->body_streamed += len;
        if (c->body_streamed > c->body_limit) {
            body_stream_fail(c, AG_ETOOBIG);
            return HPE_USER;
        }
        c->dispatching = true; /* a finishing call inside must not resume */
        c->sink.on_data(c->sink_ud, at, len);
        c->dispatching = false;
        if (c->closing || c->close_after || !c->body_stream) return HPE_PAUSED;
        return c->body_held ? HPE_PAUSED : 0;
    }
    if (c->spool_fd >= 0) {
        if (c->spool_size + len > c->body_limit) {
            c->fail_status = 413;
            return HPE_USER;
        }
        if (spool_write(c->spool_fd, at, len) < 0) {
            ag_error("cannot spool a request body", AG_FS("error", strerror(errno)),
                     AG_FS("requestId", c->req.id));
            c->fail_status = 500;
            return HPE_USER;
        }
        c->spool_size += len;
        return 0;
    }
    if (ag_buf_append(&c->body, at, len) < 0) {
        c->fail_status = 413;
        return HPE_USER;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    ag_conn *c = conn_of(p);
    if (!c->body_stream) return dispatch(c);
    /* A streamed body's end: the handler has had the request since its head. */
    c->body_done = true;
    c->phase = P_HANDLING;
    arm_timer(c, T_NONE);
    c->dispatching = true;
    c->sink.on_end(c->sink_ud, 0);
    c->dispatching = false;
    if (!c->in_async && !c->close_after && !c->closing) return 0; /* answered: go on */
    c->paused = true;
    return HPE_PAUSED;
}

static void settings_init(void)
{
    llhttp_settings_init(&g_settings);
    g_settings.on_message_begin = on_message_begin;
    g_settings.on_url = on_url;
    g_settings.on_url_complete = on_url_complete;
    g_settings.on_header_field = on_header_field;
    g_settings.on_header_field_complete = on_header_field_complete;
    g_settings.on_header_value = on_header_value;
    g_settings.on_header_value_complete = on_header_value_complete;
    g_settings.on_headers_complete = on_headers_complete;
    g_settings.on_body = on_body;
    g_settings.on_message_complete = on_message_complete;
}

/* ---- Reading ------------------------------------------------------------------------ */

static void fail_parse(ag_conn *c, llhttp_errno_t err)
{
    ag_http_server *s = srv_of(c);
    if (c->body_stream) {
        /* The handler owns the request: it hears why and answers. */
        if (!c->body_done) body_stream_fail(c, c->fail_status == 413 ? AG_ETOOBIG : AG_EPROTO);
        return;
    }
    int st = c->fail_status ? c->fail_status : 400;
    if (st == 431)
        send_simple_error(c, 431, "HEADERS_TOO_LARGE", "request header fields too large");
    else if (st == 413)
        send_simple_error(c, 413, "BODY_TOO_LARGE", "request body too large");
    else if (st == 417)
        send_simple_error(c, 417, "EXPECTATION_FAILED", "unsupported Expect header");
    else if (st == 404)
        send_simple_error(c, 404, "NOT_FOUND", "no route for this path");
    else if (st == 405)
        send_simple_error(c, 405, "METHOD_NOT_ALLOWED", "method not allowed here");
    else if (st == 415)
        send_simple_error(c, 415, "UNSUPPORTED_MEDIA_TYPE",
                          "the request body must be application/json");
    else if (st == 504)
        send_simple_error(c, 504, "DEADLINE_EXCEEDED", "the request's deadline passed");
    else if (st == 500)
        send_simple_error(c, 500, "BODY_NOT_STORED", "the request body could not be stored");
    else {
        ag_series_inc(s->s_bad, 1);
        ag_debug("malformed request", AG_FS("reason", llhttp_errno_name(err)),
                 AG_FS("remote", c->remote));
        send_simple_error(c, 400, "MALFORMED_REQUEST",
                          c->fail_why ? c->fail_why : "malformed HTTP request");
    }
}

/* Feeds input to the parser. Input left when the parser pauses is kept in
 * c->pending and the socket stops being read. */
static void feed(ag_conn *c, const char *data, size_t len)
{
    if (len == 0 && data != k_no_bytes) return;
    c->feeding = true;
    llhttp_errno_t err = llhttp_execute(&c->parser, data, len);
    c->feeding = false;
    if (err == HPE_OK) return;
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
        c->paused = true;
        const char *pos = llhttp_get_error_pos(&c->parser);
        size_t used = pos ? (size_t)(pos - data) : len;
        if (used < len && !c->closing && !c->close_after)
            ag_buf_append(&c->pending, data + used, len - used);
        /* An asynchronous handler keeps the socket read, so that a client
         * that leaves is noticed (and its abort callback runs). */
        if (c->reading && !c->closing && c->phase != P_LINGER && !c->in_async) {
            uv_read_stop((uv_stream_t *)&c->tcp);
            c->reading = false;
        }
        return;
    }
    fail_parse(c, err);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    ag_conn *c = h->data;
    buf->base = c->ls->rbuf;
    buf->len = sizeof c->ls->rbuf;
}

static void on_data(ag_conn *c, ssize_t n, const char *base);

/* Ciphertext in: handshake, then decrypt into the plain path. */
static void tls_on_read(ag_conn *c, const char *data, size_t len)
{
    BIO_write(SSL_get_rbio(c->ssl), data, (int)len);
    if (!SSL_is_init_finished(c->ssl)) {
        int r = SSL_do_handshake(c->ssl);
        tls_flush(c);
        if (r <= 0) {
            int e = SSL_get_error(c->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                const char *why = ERR_reason_error_string(ERR_get_error());
                ag_debug("TLS handshake failed", AG_FS("remote", c->remote),
                         AG_FS("reason", why ? why : "unknown"));
                ERR_clear_error();
                conn_close(c);
            }
            return;
        }
    }
    char *plain = c->ls->rbuf; /* the ciphertext is in the BIO now */
    while (!c->closing) {
        int r = SSL_read(c->ssl, plain, (int)sizeof c->ls->rbuf);
        if (r > 0) {
            on_data(c, r, plain);
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_ZERO_RETURN) {
            on_data(c, UV_EOF, NULL); /* close_notify: the client is done */
        } else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            ERR_clear_error();
            conn_close(c);
        }
        break;
    }
    if (!c->closing) tls_flush(c);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    ag_conn *c = st->data;
    if (n == 0) return;
    if (c->ssl && n > 0)
        tls_on_read(c, buf->base, (size_t)n);
    else
        on_data(c, n, buf->base);
}

/* Plain bytes in (or n < 0: the end). */
static void on_data(ag_conn *c, ssize_t n, const char *base)
{
    uv_stream_t *st = (uv_stream_t *)&c->tcp;
    if (c->tunnel) {
        if (n < 0)
            conn_close(c);
        else if (c->tcbs.on_data)
            c->tcbs.on_data(c->tud, base, (size_t)n);
        return;
    }
    if (c->in_async && c->paused) {
        /* Waiting for an asynchronous answer: the client leaving (EOF or
         * error) aborts it, as nginx does; what it pipelines meanwhile is
         * kept, up to one read buffer, then reading stops. */
        if (n < 0) {
            conn_close(c);
            return;
        }
        ag_buf_append(&c->pending, base, (size_t)n);
        if (c->pending.len >= READ_BUF_SIZE) {
            uv_read_stop(st);
            c->reading = false;
        }
        return;
    }
    if (n < 0 && c->body_stream && !c->body_done) {
        conn_close(c); /* a streamed body that cannot complete: the request aborts */
        return;
    }
    if (n < 0) {
        /* The client half-closed after a request that is still being
         * handled or queued: answer it, then close. Otherwise (or on a
         * reset) close now; a request in a worker then finds it closed. */
        bool busy = c->in_worker || c->pending.len > 0 || c->wait_drain ||
                    uv_stream_get_write_queue_size(st) > 0;
        if (n == UV_EOF && busy && !c->closing) {
            c->close_after = true;
            uv_read_stop(st);
            c->reading = false;
            return;
        }
        conn_close(c);
        return;
    }
    if (c->close_after) return; /* answered and closing: nothing more is parsed */
    if (c->phase == P_BODY) {
        /* Count what arrives in the body phase, framing and discarded bodies
         * included: chunk extensions or padding cannot make a body endless. */
        c->body_raw += (size_t)n;
        const ag_http_limits *l = &srv_of(c)->o.limits;
        if (c->body_raw > c->body_limit + l->max_header_bytes + READ_BUF_SIZE) {
            if (c->body_stream)
                body_stream_fail(c, AG_ETOOBIG);
            else
                send_simple_error(c, 413, "BODY_TOO_LARGE", "request body too large");
            return;
        }
        arm_timer(c, T_BODY);
    }
    feed(c, base, (size_t)n);
}

static void conn_resume(ag_conn *c)
{
    if (c->closing || c->close_after || c->in_worker || c->in_async || c->wait_drain) return;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) >= WRITE_HIGH_WATER) {
        /* The client is behind on its answers: read no more until it catches
         * up (after_write_progress resumes). Holds for worker routes too. */
        c->wait_drain = true;
        c->paused = true;
        if (c->reading) {
            uv_read_stop((uv_stream_t *)&c->tcp);
            c->reading = false;
        }
        return;
    }
    c->paused = false;
    if (llhttp_get_errno(&c->parser) == HPE_PAUSED) llhttp_resume(&c->parser);
    while (!c->paused && c->pending.len > 0) {
        ag_buf tmp = c->pending;
        ag_buf_init(&c->pending, 0);
        feed(c, tmp.data, tmp.len);
        ag_buf_release(&tmp);
    }
    if (!c->paused && !c->closing && !c->reading) {
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
        c->reading = true;
    }
}

/* ---- Accepting ------------------------------------------------------------------------ */

typedef struct rejected {
    uv_tcp_t tcp;
} rejected;

static void on_rejected_closed(uv_handle_t *h)
{
    ag_free(h->data);
}

static void reject_connection(loop_srv *ls, uv_stream_t *server)
{
    /* The envelope without its closing brace; the request id completes it. */
    static const char body[] = "{\"success\":false,\"error\":{\"code\":\"TOO_MANY_CONNECTIONS\","
                               "\"message\":\"too many open connections\"}";
    char rid[AG_ID_LEN + 1];
    ag_id_new_str(rid);
    char envelope[256];
    int elen = snprintf(envelope, sizeof envelope, "%s,\"requestId\":\"%s\"}", body, rid);
    char busy[640];
    int blen = snprintf(busy, sizeof busy,
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                        "Retry-After: 1\r\nX-Request-Id: %s\r\nConnection: close\r\n"
                        "Content-Length: %d\r\n\r\n%s",
                        rid, elen, envelope);
    rejected *rj = ag_malloc(sizeof *rj);
    uv_tcp_init(ag_loop_uv(ls->loop), &rj->tcp);
    rj->tcp.data = rj;
    if (uv_accept(server, (uv_stream_t *)&rj->tcp) == 0 && !ls->srv->tls) {
        uv_buf_t b = uv_buf_init(busy, (unsigned)blen);
        uv_try_write((uv_stream_t *)&rj->tcp, &b, 1);
        /* Half-close so the answer is read rather than reset. */
        uv_os_fd_t fd;
        if (uv_fileno((uv_handle_t *)&rj->tcp, &fd) == 0) shutdown(fd, SHUT_WR);
    }
    ag_series_inc(ls->srv->s_rejected_conns, 1);
    uv_close((uv_handle_t *)&rj->tcp, on_rejected_closed);
}

static void on_connection(uv_stream_t *server, int status)
{
    loop_srv *ls = server->data;
    ag_http_server *s = ls->srv;
    if (status < 0) {
        ag_warn("accept failed", AG_FS("error", uv_strerror(status)));
        return;
    }
    if (atomic_load(&s->draining)) return;
    if (atomic_load(&s->nconns) >= (size_t)s->o.limits.max_connections) {
        reject_connection(ls, server);
        return;
    }
    ag_conn *c = ag_calloc(1, sizeof *c);
    c->ls = ls;
    uv_tcp_init(ag_loop_uv(ls->loop), &c->tcp);
    uv_timer_init(ag_loop_uv(ls->loop), &c->timer);
    uv_timer_init(ag_loop_uv(ls->loop), &c->wtimer);
    c->tcp.data = c;
    c->timer.data = c;
    c->wtimer.data = c;
    c->refs = 3;
    pthread_mutex_init(&c->smu, NULL);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        uv_close((uv_handle_t *)&c->timer, on_handle_closed);
        uv_close((uv_handle_t *)&c->wtimer, on_handle_closed);
        return;
    }
    atomic_fetch_add(&s->nconns, 1);
    c->next = ls->conns;
    if (ls->conns) ls->conns->prev = c;
    ls->conns = c;
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)&ss, c->remote, sizeof c->remote);
        else
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->remote, sizeof c->remote);
    }
    ag_buf_init(&c->head, s->o.limits.max_header_bytes);
    ag_buf_init(&c->body, s->o.limits.max_body_bytes);
    ag_buf_init(&c->pending, 0);
    ag_buf_init(&c->held, 0);
    ag_arena_init(&c->req.arena, 4096);
    c->spool_fd = -1;
    c->body_limit = s->o.limits.max_body_bytes;
    c->req.body_fd = -1;
    c->req.conn = c;
    c->req.remote = c->remote;
    ag__res_init(&c->req.res, &c->req);
    if (s->tls) {
        c->ssl = SSL_new(s->tls);
        SSL_set_bio(c->ssl, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
        SSL_set_accept_state(c->ssl);
    }
    llhttp_init(&c->parser, HTTP_REQUEST, &g_settings);
    c->parser.data = c;
    c->phase = P_IDLE;
    arm_timer(c, T_IDLE);
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
    c->reading = true;
}

/* ---- Server lifecycle ------------------------------------------------------------- */

/* TLS 1.2 and up, HTTP/1.1 only (ALPN is not offered: clients fall back). */
static int tls_context(ag_http_server *s, const char *cert, const char *key)
{
    if (!cert || !key) {
        ag_error("TLS needs both a certificate and a key");
        return AG_ECONFIG;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) return AG_ENOMEM;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        const char *why = ERR_reason_error_string(ERR_get_error());
        ag_error("TLS certificate or key not usable", AG_FS("cert", cert), AG_FS("key", key),
                 AG_FS("reason", why ? why : "unknown"));
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return AG_ECONFIG;
    }
    s->tls = ctx;
    return 0;
}

int ag_http_server_new(const ag_http_server_opts *o, ag_http_server **out)
{
    if (!o->router || !o->loops || !o->pool) return AG_EINVAL;
    pthread_once(&g_settings_once, settings_init);
    ag_http_server *s = ag_calloc(1, sizeof *s);
    s->o = *o;
    if (!s->o.host) s->o.host = "127.0.0.1";
    s->metrics = o->metrics ? o->metrics : ag_metrics_default();
    const char *l3[] = {"route", "method", "status"};
    const char *l2[] = {"route", "method"};
    const char *l1[] = {"reason"};
    s->m_requests =
        ag_metrics_family(s->metrics, AG_COUNTER, "agora_http_requests_total",
                          "HTTP requests answered, by route, method and status.", 3, l3, NULL, 0);
    s->m_errors = ag_metrics_family(s->metrics, AG_COUNTER, "agora_http_request_errors_total",
                                    "HTTP requests answered with a 5xx status.", 2, l2, NULL, 0);
    s->m_latency =
        ag_metrics_family(s->metrics, AG_HISTOGRAM, "agora_http_request_duration_seconds",
                          "Time from the first byte of a request to its answer.", 3, l3, NULL, 0);
    s->m_rejected =
        ag_metrics_family(s->metrics, AG_COUNTER, "agora_http_rejected_total",
                          "Connections or requests refused by a limit.", 1, l1, NULL, 0);
    s->s_rejected_conns = ag_metric_series(s->m_rejected, (const char *[]){"max_connections"});
    s->s_timeouts = ag_metric_series(s->m_rejected, (const char *[]){"timeout"});
    s->s_bad = ag_metric_series(s->m_rejected, (const char *[]){"malformed"});
    s->s_busy = ag_metric_series(s->m_rejected, (const char *[]){"pool_full"});
    ag_metrics_gauge_fn(s->metrics, "agora_http_open_connections", "Open HTTP connections.",
                        open_conns_gauge, s);
    s->nls = ag_loopset_size(o->loops);
    s->ls = ag_calloc((size_t)s->nls, sizeof *s->ls);
    for (int i = 0; i < s->nls; i++) {
        s->ls[i].srv = s;
        s->ls[i].loop = ag_loopset_get(o->loops, i);
        s->ls[i].fd = -1;
        ag_buf_init(&s->ls[i].scratch, 0);
    }
    if (o->tls_cert || o->tls_key) {
        int rc = tls_context(s, o->tls_cert, o->tls_key);
        if (rc < 0) {
            for (int i = 0; i < s->nls; i++)
                ag_buf_release(&s->ls[i].scratch);
            ag_free(s->ls);
            ag_free(s);
            return rc;
        }
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, NULL);
    atomic_init(&s->nconns, 0);
    atomic_init(&s->draining, false);
    *out = s;
    return 0;
}

static void start_on_loop(void *arg)
{
    loop_srv *ls = arg;
    ag_http_server *s = ls->srv;
    int rc = uv_tcp_init(ag_loop_uv(ls->loop), &ls->listener);
    if (rc == 0) {
        ls->listener.data = ls;
        rc = uv_tcp_open(&ls->listener, ls->fd);
        if (rc == 0) rc = uv_listen((uv_stream_t *)&ls->listener, 1024, on_connection);
        if (rc < 0) {
            uv_close((uv_handle_t *)&ls->listener, NULL);
        }
    }
    pthread_mutex_lock(&s->mu);
    if (rc < 0)
        s->start_err = ag_err_from_errno(rc);
    else {
        ls->listening = true;
        s->open_listeners++;
    }
    s->started_listeners++;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

int ag_http_server_start(ag_http_server *s)
{
    int port = s->o.port;
    for (int i = 0; i < s->nls; i++) {
        int fd = ag_listen_socket(s->o.host, port, 1024);
        if (fd < 0) {
            for (int j = 0; j < i; j++)
                close(s->ls[j].fd);
            ag_error("cannot listen", AG_FS("host", s->o.host), AG_FI("port", port), AG_FERR(fd));
            return fd;
        }
        if (port == 0) port = ag_socket_port(fd);
        s->ls[i].fd = fd;
    }
    s->port = port;
    for (int i = 0; i < s->nls; i++)
        ag_loop_post(s->ls[i].loop, start_on_loop, &s->ls[i]);
    pthread_mutex_lock(&s->mu);
    while (s->started_listeners < s->nls)
        pthread_cond_wait(&s->cond, &s->mu);
    int err = s->start_err;
    pthread_mutex_unlock(&s->mu);
    if (err < 0) ag_error("cannot start listener", AG_FERR(err));
    return err;
}

int ag_http_server_port(const ag_http_server *s)
{
    return s->port;
}

size_t ag_http_server_connections(const ag_http_server *s)
{
    return atomic_load(&((ag_http_server *)s)->nconns);
}

bool ag_http_server_draining(const ag_http_server *s)
{
    return atomic_load(&((ag_http_server *)s)->draining);
}

static void on_listener_closed(uv_handle_t *h)
{
    loop_srv *ls = h->data;
    ag_http_server *s = ls->srv;
    pthread_mutex_lock(&s->mu);
    s->open_listeners--;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

static void drain_on_loop(void *arg)
{
    loop_srv *ls = arg;
    if (ls->listening) {
        ls->listening = false;
        uv_close((uv_handle_t *)&ls->listener, on_listener_closed);
    }
    ag_conn *c = ls->conns;
    while (c) {
        ag_conn *next = c->next;
        bool idle = c->phase == P_IDLE && !c->in_worker &&
                    uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0;
        if (idle) conn_close(c);
        c = next;
    }
}

static void force_on_loop(void *arg)
{
    loop_srv *ls = arg;
    while (ls->conns)
        conn_close(ls->conns);
}

int ag_http_server_drain(ag_http_server *s, uint64_t timeout_ms)
{
    atomic_store(&s->draining, true);
    for (int i = 0; i < s->nls; i++)
        ag_loop_post(s->ls[i].loop, drain_on_loop, &s->ls[i]);
    struct timespec until = realtime_after(timeout_ms);
    int forced = 0;
    pthread_mutex_lock(&s->mu);
    while (atomic_load(&s->nconns) > 0 || s->open_listeners > 0) {
        if (pthread_cond_timedwait(&s->cond, &s->mu, &until) != 0) break;
    }
    if (atomic_load(&s->nconns) > 0) {
        forced = (int)atomic_load(&s->nconns);
        pthread_mutex_unlock(&s->mu);
        ag_warn("drain timed out; closing connections", AG_FI("connections", forced));
        for (int i = 0; i < s->nls; i++)
            ag_loop_post(s->ls[i].loop, force_on_loop, &s->ls[i]);
        pthread_mutex_lock(&s->mu);
        while (atomic_load(&s->nconns) > 0 || s->open_listeners > 0)
            pthread_cond_wait(&s->cond, &s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return forced;
}

void ag_http_server_free(ag_http_server *s)
{
    if (!s) return;
    for (int i = 0; i < s->nls; i++)
        ag_buf_release(&s->ls[i].scratch);
    ag_free(s->ls);
    if (s->tls) SSL_CTX_free(s->tls);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cond);
    ag_free(s);
}

/* ---- Streaming ------------------------------------------------------------------------ */

typedef struct stream_msg {
    ag_conn *c;
    char *data;
    size_t len;
} stream_msg;

static void stream_on_loop(void *arg)
{
    stream_msg *m = arg;
    ag_conn *c = m->c;
    ag__stream *st = c->req.res.stream;
    if (c->closing) {
        stream_done_bytes(st, m->len);
        ag_free(m->data);
    } else {
        conn_write(c, "", 0, m->data, m->len, st); /* takes m->data */
    }
    ag_free(m);
}

/* Posts bytes to the loop and waits while too much is queued. Takes `data`. */
int ag__stream_send(ag_http_res *res, char *data, size_t len, bool last)
{
    ag__stream *st = res->stream;
    ag_conn *c = res->req->conn;
    const ag_http_limits *l = &c->ls->srv->o.limits;
    pthread_mutex_lock(&st->mu);
    if (st->closed || st->failed_timeout) {
        int err = st->closed ? AG_ECLOSED : AG_ETIMEDOUT;
        pthread_mutex_unlock(&st->mu);
        ag_free(data);
        return err;
    }
    st->pending += len;
    pthread_mutex_unlock(&st->mu);
    if (len > 0 || last) {
        stream_msg *m = ag_malloc(sizeof *m);
        m->c = c;
        m->data = data;
        m->len = len;
        if (ag_loop_post(c->ls->loop, stream_on_loop, m) < 0) {
            ag_free(data);
            ag_free(m);
            return AG_ECLOSED;
        }
    } else {
        ag_free(data);
    }
    /* Backpressure: wait until the loop has written enough. */
    struct timespec until = realtime_after(l->write_timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&st->mu);
    size_t mark = st->pending;
    while (st->pending > (last ? 0 : STREAM_HIGH_WATER) && !st->closed) {
        if (pthread_cond_timedwait(&st->cond, &st->mu, &until) != 0) {
            if (st->pending < mark) {
                /* The client read something: the timeout counts silence. */
                mark = st->pending;
                until = realtime_after(l->write_timeout_ms);
                continue;
            }
            st->failed_timeout = true;
            rc = AG_ETIMEDOUT;
            break;
        }
    }
    if (st->closed && rc == 0 && !last) rc = AG_ECLOSED;
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int ag__stream_start(ag_http_res *res)
{
    ag_http_req *r = res->req;
    ag_conn *c = r->conn;
    if (ag_loop_current() != NULL || !c->in_worker) return AG_ESTATE;
    ag__stream *st = ag_calloc(1, sizeof *st);
    st->loop_refs = 1; /* the response's */
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cond, NULL);
    pthread_mutex_lock(&c->smu);
    res->stream = st;
    if (c->gone) st->closed = true; /* closed before the stream existed */
    pthread_mutex_unlock(&c->smu);
    res->streaming = true;
    res->chunked = !(r->http_major == 1 && r->http_minor == 0);
    /* Build the head here, on the worker, into a private buffer: the loop's
     * scratch buffer belongs to the loop thread. */
    ag_buf b;
    ag_buf_init(&b, 0);
    bool close =
        (!res->chunked && !r->head_only) || !r->keep_alive || atomic_load(&c->ls->srv->draining);
    ag_buf_printf(&b, "HTTP/1.1 %d %s\r\nDate: %s\r\n", res->status, ag_http_reason(res->status),
                  http_date());
    if (res->content_type) ag_buf_printf(&b, "Content-Type: %s\r\n", res->content_type);
    if (res->chunked) ag_buf_appends(&b, "Transfer-Encoding: chunked\r\n");
    ag_buf_printf(&b, "X-Request-Id: %s\r\n", r->id);
    for (size_t i = 0; i < res->nheaders; i++)
        ag_buf_printf(&b, "%s: %s\r\n", res->headers[i].name, res->headers[i].value);
    ag_buf_appends(&b, close ? "Connection: close\r\n\r\n" : "\r\n");
    if (close) r->keep_alive = false;
    size_t len;
    char *head = ag_buf_detach(&b, &len);
    /* HEAD: the head only; the handler's writes are accepted and dropped
     * (ag_res_stream_write checks head_only). */
    return ag__stream_send(res, head, len, false);
}

/* ---- Asynchronous responses (AG_ROUTE_ASYNC) ------------------------------------------ */

ag_loop *ag_req_loop(const ag_http_req *r)
{
    return r->conn->ls->loop;
}

void ag_res_on_abort(ag_http_res *res, ag_res_event_fn fn, void *ud)
{
    ag_conn *c = res->req->conn;
    c->abort_fn = fn;
    c->abort_ud = ud;
}

bool ag_res_gone(const ag_http_res *res)
{
    return res->req->conn->closing;
}

/* Ends the async ownership; true when the connection is still open. The
 * connection's handles still hold references, so it outlives this. */
static bool async_release(ag_conn *c)
{
    c->in_async = false;
    c->abort_fn = NULL;
    c->drain_fn = NULL;
    bool open = !c->closing;
    if (!open) c->held.len = 0;
    conn_unref(c);
    return open;
}

/* After a finishing call outside dispatch: parse what the client sent next. */
static void async_resume(ag_conn *c)
{
    if (!c->dispatching && !c->close_after) conn_resume(c);
}

void ag_res_send(ag_http_res *res)
{
    ag_conn *c = res->req->conn;
    if (!c->in_async || res->streaming) return;
    if (!async_release(c)) return;
    send_response(c);
    async_resume(c);
}

static void flush_held(ag_conn *c);

int ag_res_loop_begin(ag_http_res *res, int status, int64_t content_length)
{
    ag_conn *c = res->req->conn;
    ag_http_req *r = res->req;
    if (!c->in_async || res->streaming) return AG_ESTATE;
    if (c->closing) return AG_ECLOSED;
    res->status = status;
    res->streaming = true;
    res->body_len = 0;
    bool http10 = r->http_major == 1 && r->http_minor == 0;
    bool close = must_close(c);
    if (content_length >= 0) {
        res->chunked = false;
        build_head(c, close, false, true, (size_t)content_length);
    } else if (http10) {
        res->chunked = false;
        close = !r->head_only;
        build_head(c, close, false, false, 0);
    } else {
        res->chunked = true;
        build_head(c, close, true, false, 0);
    }
    c->loop_close = close;
    if (r->head_only || status == 204 || status == 304) res->stream_ended = true; /* no body */
    /* The head waits for the first body bytes so that a small answer goes
     * out in one write (ag_res_loop_flush sends it without them). */
    c->held.len = 0;
    ag_buf_append(&c->held, c->ls->scratch.data, c->ls->scratch.len);
    if (res->stream_ended || content_length == 0) flush_held(c);
    return c->closing ? AG_ECLOSED : 0;
}

typedef struct bwreq {
    uv_write_t w;
    ag_conn *c;
    ag_res_event_fn done;
    void *ud;
    char *head;     /* what try_write left of a held response head, or NULL */
    char frame[32]; /* what try_write left of the chunk header and trailer */
} bwreq;

static void on_bwrite(uv_write_t *w, int status)
{
    bwreq *b = (bwreq *)w;
    ag_conn *c = b->c;
    if (b->done) b->done(b->ud);
    ag_free(b->head);
    ag_free(b);
    if (status < 0) {
        conn_close(c);
        return;
    }
    after_write_progress(c);
}

/* Writes the held head (if any), then pre + data + post in one writev;
 * `data` is borrowed until done(ud). */
static int conn_write_borrowed(ag_conn *c, const char *pre, size_t prelen, const char *data,
                               size_t len, const char *post, size_t postlen, ag_res_event_fn done,
                               void *ud)
{
    const char *head = c->held.len ? c->held.data : "";
    size_t hlen = c->held.len;
    if (c->ssl) { /* encrypting copies: the data is free at once */
        tls_encrypt(c, head, hlen);
        c->held.len = 0;
        tls_encrypt(c, pre, prelen);
        tls_encrypt(c, data, len);
        tls_encrypt(c, post, postlen);
        if (done) done(ud);
        tls_flush(c);
        return c->closing ? AG_ECLOSED : 0;
    }
    uv_buf_t bufs[4] = {
        uv_buf_init((char *)head, (unsigned)hlen), uv_buf_init((char *)pre, (unsigned)prelen),
        uv_buf_init((char *)data, (unsigned)len), uv_buf_init((char *)post, (unsigned)postlen)};
    size_t total = hlen + prelen + len + postlen, sent = 0;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
        int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, 4);
        if (n > 0)
            sent = (size_t)n;
        else if (n < 0 && n != UV_EAGAIN) {
            c->held.len = 0;
            if (done) done(ud);
            conn_close(c);
            return AG_ECLOSED;
        }
    }
    if (sent == total) {
        c->held.len = 0;
        if (done) done(ud);
        after_write_progress(c);
        return 0;
    }
    bwreq *b = ag_malloc(sizeof *b);
    b->c = c;
    b->done = done;
    b->ud = ud;
    b->head = NULL;
    uv_buf_t out[4];
    int nout = 0;
    size_t skip = sent, fl = 0;
    for (int i = 0; i < 4; i++) {
        if (skip >= bufs[i].len) {
            skip -= bufs[i].len;
            continue;
        }
        char *base = bufs[i].base + skip;
        size_t left = bufs[i].len - skip;
        skip = 0;
        if (i == 0) { /* the held head: copied, the connection reuses it */
            b->head = ag_malloc(left);
            memcpy(b->head, base, left);
            base = b->head;
        } else if (i != 2) { /* the framing is ours: copy it into the request */
            memcpy(b->frame + fl, base, left);
            base = b->frame + fl;
            fl += left;
        }
        out[nout++] = uv_buf_init(base, (unsigned)left);
    }
    c->held.len = 0;
    if (uv_write(&b->w, (uv_stream_t *)&c->tcp, out, (unsigned)nout, on_bwrite) < 0) {
        if (done) done(ud);
        ag_free(b->head);
        ag_free(b);
        conn_close(c);
        return AG_ECLOSED;
    }
    if (!uv_is_active((uv_handle_t *)&c->wtimer)) {
        c->wq_mark = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
        uv_timer_start(&c->wtimer, on_wtimer, srv_of(c)->o.limits.write_timeout_ms, 0);
    }
    return 0;
}

/* Sends a held head now (a source with no body bytes at hand). */
static void flush_held(ag_conn *c)
{
    if (!c->held.len || c->closing) {
        c->held.len = 0;
        return;
    }
    conn_write(c, c->held.data, c->held.len, NULL, 0, NULL);
    c->held.len = 0;
}

void ag_res_loop_flush(ag_http_res *res)
{
    ag_conn *c = res->req->conn;
    if (c->in_async) flush_held(c);
}

long long ag_res_loop_write(ag_http_res *res, const void *data, size_t len, ag_res_event_fn done,
                            void *done_ud)
{
    ag_conn *c = res->req->conn;
    if (c->closing || !c->in_async || (!res->streaming && !c->tunnel)) {
        if (done) done(done_ud);
        return AG_ECLOSED;
    }
    if (len == 0 || (!c->tunnel && res->stream_ended)) { /* HEAD: the body is dropped */
        if (done) done(done_ud);
        return (long long)uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
    }
    res->body_len += len;
    char pre[24];
    size_t prelen = 0, postlen = 0;
    if (res->chunked && !c->tunnel) {
        prelen = (size_t)snprintf(pre, sizeof pre, "%zx\r\n", len);
        postlen = 2;
    }
    if (conn_write_borrowed(c, pre, prelen, data, len, "\r\n", postlen, done, done_ud) < 0)
        return AG_ECLOSED;
    return (long long)uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
}

void ag_res_on_drain(ag_http_res *res, size_t low, ag_res_event_fn fn, void *ud)
{
    ag_conn *c = res->req->conn;
    if (c->closing) return;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) < low) {
        fn(ud);
        return;
    }
    c->drain_fn = fn;
    c->drain_ud = ud;
    c->drain_low = low;
}

int ag_res_loop_end(ag_http_res *res)
{
    ag_conn *c = res->req->conn;
    if (!c->in_async || !res->streaming || c->tunnel) return AG_ESTATE;
    if (!async_release(c)) return AG_ECLOSED;
    if (res->chunked && !res->stream_ended) ag_buf_append(&c->held, "0\r\n\r\n", 5);
    flush_held(c);
    if (c->closing) return AG_ECLOSED;
    bool close = c->loop_close || must_close(c);
    finish_request(c);
    after_response(c, close);
    async_resume(c);
    return 0;
}

void ag_res_loop_abort(ag_http_res *res)
{
    ag_conn *c = res->req->conn;
    if (!c->in_async) return;
    c->held.len = 0;
    if (!async_release(c)) return;
    finish_request(c);
    conn_close(c);
}

int ag_res_tunnel(ag_http_res *res, int status, const ag_tunnel_cbs *cbs, void *ud)
{
    ag_conn *c = res->req->conn;
    ag_http_req *r = res->req;
    if (!c->in_async || res->streaming || c->tunnel) return AG_ESTATE;
    if (c->closing) return AG_ECLOSED;
    res->status = status;
    res->streaming = true;
    build_head(c, false, false, false, 0);
    conn_write(c, c->ls->scratch.data, c->ls->scratch.len, NULL, 0, NULL);
    if (c->closing) return AG_ECLOSED;
    /* The upgrade request counts as answered now; the tunnel lives on. */
    ag_http_server *s = srv_of(c);
    double secs = (double)(ag_now_ns() - r->start_ns) / 1e9;
    record(s, r->match.stats ? r->match.stats : ag__router_unmatched_stats(s->o.router), status,
           secs);
    access_log(c, secs, 0);
    c->tunnel = true;
    c->tcbs = *cbs;
    c->tud = ud;
    c->phase = P_TUNNEL;
    arm_timer(c, T_NONE);
    if (c->pending.len > 0) { /* bytes that came right behind the request */
        ag_buf tmp = c->pending;
        ag_buf_init(&c->pending, 0);
        if (cbs->on_data) cbs->on_data(ud, tmp.data, tmp.len);
        ag_buf_release(&tmp);
    }
    if (!c->closing && !c->reading) {
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
        c->reading = true;
    }
    return 0;
}

void ag_res_tunnel_pause(ag_http_res *res, bool paused)
{
    ag_conn *c = res->req->conn;
    if (c->closing || !c->tunnel) return;
    if (paused && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    } else if (!paused && !c->reading) {
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
        c->reading = true;
    }
}

void ag_res_tunnel_close(ag_http_res *res)
{
    ag_conn *c = res->req->conn;
    if (!c->in_async || !c->tunnel) return;
    c->tcbs.on_data = NULL;
    c->tcbs.on_close = NULL;
    if (!async_release(c)) return;
    /* Write out what is queued, then FIN and close. */
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    c->close_after = true;
    c->paused = true;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) begin_linger(c);
}
