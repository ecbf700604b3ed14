/*
 * server.c — the gRPC server of agora/grpc.h: unary calls over HTTP/2.
 *
 * Built on nghttp2 (Debian's libnghttp2: the HTTP/2 framing, HPACK, flow
 * control and stream states) and protobuf-c (the messages, generated at
 * build time from the .proto files). gRPC's C core (libgrpc) was the other
 * choice the issue names; it was not taken because it brings its own
 * threads, completion queues and polling engine beside the service's libuv
 * loops and worker pool, and its own TLS, metrics and tracing, where this
 * server is one file on the loops, pool, metrics, tracer and TLS setup
 * every Agora server already has. What gRPC adds on top of HTTP/2 for
 * unary calls is small and is all here: the 5-byte message prefix, the
 * grpc-timeout header, and grpc-status/grpc-message in the trailers.
 *
 * One connection, on loop 0 of the service's loopset:
 *
 *   accept ──> [TLS handshake, ALPN h2] ──> preface + SETTINGS ──> streams
 *       read:  (SSL_read) → nghttp2_session_mem_recv → callbacks below
 *       write: nghttp2_session_mem_send → (SSL_write) → uv_write
 *   closes when nghttp2 wants neither to read nor to write (GOAWAY sent or
 *   received and streams done), on a read error or EOF, or at stop.
 *
 * One stream (a call):
 *
 *   HEADERS ──> gstream made (on_begin_headers) ──> DATA* (body appended)
 *     ──> END_STREAM ──> checked (POST, application/grpc, known method,
 *     one uncompressed message) ──> task on the pool ──> handler
 *     ──> ag_loop_post back ──> response HEADERS + DATA + trailers
 *   A check that fails is answered at once, trailers only. The stream's
 *   gstream is freed when nghttp2 closes the stream (a reset included); a
 *   task that comes back for a closed stream finds no user data under its
 *   id (ids are never reused in a session) and is dropped.
 *
 * Ownership: the server owns its connections; a connection owns its
 * session, TLS state and gstreams; a task owns its copies of the request
 * and the answer, and holds a reference on the connection (conn->tasks)
 * so that a connection closed meanwhile is freed by the last task back.
 */
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdarg.h>
#include <uv.h>

#include "agora/agora.h"
#include "agora/grpc.h"
#include "agora/metrics.h"
#include "agora/trace.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/internal.h"

#define MAX_META 8
#define META_NAME 32
#define META_VALUE 8192

/* ---- Types ------------------------------------------------------------------------- */

typedef struct gconn gconn;

typedef struct gstream {
    int32_t id;
    char path[256], method[8], ctype[64], timeout[24];
    int nmeta;
    char meta_name[MAX_META][META_NAME];
    char *meta_value[MAX_META];
    ag_buf body;
    bool too_big, dispatched;
    /* The answer, once the task is back. */
    uint8_t *out;
    size_t out_len, out_off;
    int status;
    char message[256];
    struct gstream *next, **prev; /* the connection's open streams */
} gstream;

struct ag_grpc_call {
    ag_grpc_server *srv;
    gconn *conn;
    int32_t stream_id;
    const ag_grpc_method *m;
    char path[256];
    uint8_t *req;
    size_t req_len;
    int nmeta;
    char meta_name[MAX_META][META_NAME];
    char *meta_value[MAX_META];
    ag_deadline deadline;
    uint64_t started_ns;
    bool answered;
    uint8_t *out;
    size_t out_len;
    int status;
    char message[256];
};

struct gconn {
    ag_grpc_server *srv;
    uv_tcp_t tcp;
    nghttp2_session *h2;
    SSL *ssl;
    bool closing, closed;
    bool eof; /* the client shut its side, or the server stops: answer what is
               * pending, then close */
    bool finishing;
    uv_shutdown_t shut;
    int tasks; /* calls on the pool that will come back */
    gstream *streams; /* nghttp2_session_del does not report their close */
    gconn *next, **prev;
};

struct ag_grpc_server {
    ag__grpc_opts o;
    uv_loop_t *uv;
    ag_loop *loop;
    uv_tcp_t listener;
    int fd, port;
    SSL_CTX *tls;
    gconn *conns;
    size_t max_message;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int open_handles; /* the listener and every connection's tcp */
    int tasks;        /* calls anywhere between the pool and their answer */
    bool stopping;
    ag_metric *requests, *duration;
};

/* ---- Status codes ------------------------------------------------------------------ */

int ag_grpc_status_of(int err)
{
    switch (err) {
    case 0: return AG_GRPC_OK;
    case AG_ENOTFOUND: return AG_GRPC_NOT_FOUND;
    case AG_EINVAL: return AG_GRPC_INVALID_ARGUMENT;
    case AG_EEXISTS: return AG_GRPC_ALREADY_EXISTS;
    case AG_EAUTH: return AG_GRPC_UNAUTHENTICATED;
    case AG_EDEADLINE:
    case AG_ETIMEDOUT: return AG_GRPC_DEADLINE_EXCEEDED;
    case AG_EBUSY:
    case AG_ETOOBIG: return AG_GRPC_RESOURCE_EXHAUSTED;
    case AG_EUNAVAIL:
    case AG_ECONNREFUSED: return AG_GRPC_UNAVAILABLE;
    case AG_ESTATE:
    case AG_ECONSTRAINT: return AG_GRPC_FAILED_PRECONDITION;
    case AG_ECANCELED: return AG_GRPC_CANCELLED;
    default: return AG_GRPC_INTERNAL;
    }
}

const char *ag_grpc_status_name(int status)
{
    static const char *const k[] = {
        "OK",        "CANCELLED",          "UNKNOWN",           "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED", "NOT_FOUND",  "ALREADY_EXISTS",    "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
        "UNIMPLEMENTED", "INTERNAL",       "UNAVAILABLE",       "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    return status >= 0 && status <= 16 ? k[status] : "UNKNOWN";
}

/* ---- The call, as a handler sees it ------------------------------------------------- */

const uint8_t *ag_grpc_request(const ag_grpc_call *c, size_t *len)
{
    *len = c->req_len;
    return c->req ? c->req : (const uint8_t *)"";
}

const char *ag_grpc_metadata(const ag_grpc_call *c, const char *name)
{
    for (int i = 0; i < c->nmeta; i++)
        if (strcmp(c->meta_name[i], name) == 0) return c->meta_value[i];
    return NULL;
}

const char *ag_grpc_bearer(const ag_grpc_call *c)
{
    const char *a = ag_grpc_metadata(c, "authorization");
    if (!a || strncasecmp(a, "Bearer ", 7) != 0 || !a[7]) return NULL;
    return a + 7;
}

ag_deadline ag_grpc_deadline(const ag_grpc_call *c)
{
    return c->deadline;
}

const char *ag_grpc_path(const ag_grpc_call *c)
{
    return c->path;
}

uint8_t *ag__grpc_frame(const void *msg, size_t len, size_t *out_len)
{
    uint8_t *b = ag_malloc(len + 5);
    b[0] = 0;
    b[1] = (uint8_t)(len >> 24);
    b[2] = (uint8_t)(len >> 16);
    b[3] = (uint8_t)(len >> 8);
    b[4] = (uint8_t)len;
    if (len) memcpy(b + 5, msg, len);
    *out_len = len + 5;
    return b;
}

int ag__grpc_unframe(const uint8_t *b, size_t n, const uint8_t **msg, size_t *len)
{
    if (n < 5) return -1;
    size_t l = (size_t)b[1] << 24 | (size_t)b[2] << 16 | (size_t)b[3] << 8 | b[4];
    if (b[0] != 0) return 1;
    if (l != n - 5) return -1;
    *msg = b + 5;
    *len = l;
    return 0;
}

void ag_grpc_reply(ag_grpc_call *c, const void *msg, size_t len)
{
    if (c->answered) return;
    c->answered = true;
    c->status = AG_GRPC_OK;
    c->out = ag__grpc_frame(msg, len, &c->out_len);
}

void ag_grpc_fail(ag_grpc_call *c, int status, const char *fmt, ...)
{
    if (c->answered) return;
    c->answered = true;
    c->status = status == AG_GRPC_OK ? AG_GRPC_UNKNOWN : status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->message, sizeof c->message, fmt, ap);
    va_end(ap);
}

/* ---- Writing ----------------------------------------------------------------------- */

typedef struct write_req {
    uv_write_t w;
    char *data;
} write_req;

static void on_written(uv_write_t *w, int status)
{
    write_req *wr = (write_req *)w;
    ag_free(wr->data);
    ag_free(wr);
}

static void write_raw(gconn *c, ag_buf *b)
{
    if (b->len == 0 || c->closing) {
        ag_buf_release(b);
        return;
    }
    write_req *wr = ag_calloc(1, sizeof *wr);
    size_t n;
    wr->data = ag_buf_detach(b, &n);
    uv_buf_t ub = uv_buf_init(wr->data, (unsigned)n);
    if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &ub, 1, on_written) < 0) {
        ag_free(wr->data);
        ag_free(wr);
    }
}

/* The TLS records for what SSL_write put in the write BIO. */
static void tls_drain(gconn *c, ag_buf *out)
{
    BIO *w = SSL_get_wbio(c->ssl);
    char tmp[16384];
    int n;
    while ((n = BIO_read(w, tmp, sizeof tmp)) > 0)
        ag_buf_append(out, tmp, (size_t)n);
}

static void conn_close(gconn *c);
static void conn_finish(gconn *c);

/* Everything nghttp2 wants to send, written in one uv_write. */
static void conn_flush(gconn *c)
{
    if (c->closing) return;
    ag_buf out;
    ag_buf_init(&out, 0);
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->h2, &data);
        if (n < 0) {
            ag_buf_release(&out);
            conn_close(c);
            return;
        }
        if (n == 0) break;
        if (c->ssl) {
            if (SSL_write(c->ssl, data, (int)n) <= 0) {
                ag_buf_release(&out);
                conn_close(c);
                return;
            }
            tls_drain(c, &out);
        } else {
            ag_buf_append(&out, data, (size_t)n);
        }
    }
    write_raw(c, &out);
    if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2)) conn_close(c);
}

/* ---- Answers ----------------------------------------------------------------------- */

/* grpc-message is percent-encoded (gRPC's PROTOCOL-HTTP2.md). */
static void percent_encode(const char *in, char *out, size_t n)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < n; p++) {
        if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
            out[o++] = (char)*p;
        } else {
            o += (size_t)snprintf(out + o, n - o, "%%%02X", *p);
        }
    }
    out[o] = '\0';
}

#define NV(n, v)                                                                          \
    {                                                                                     \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE \
    }

static void submit_trailers(gconn *c, gstream *st)
{
    char code[8], msg[3 * sizeof st->message + 1];
    snprintf(code, sizeof code, "%d", st->status);
    percent_encode(st->message, msg, sizeof msg);
    nghttp2_nv nv[] = {NV("grpc-status", code), NV("grpc-message", msg)};
    nghttp2_submit_trailer(c->h2, st->id, nv, st->message[0] ? 2 : 1);
}

static ssize_t read_out(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t len,
                        uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    gconn *c = ud;
    gstream *st = src->ptr;
    size_t left = st->out_len - st->out_off;
    size_t n = left < len ? left : len;
    if (n) memcpy(buf, st->out + st->out_off, n);
    st->out_off += n;
    if (st->out_off == st->out_len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        submit_trailers(c, st);
    }
    return (ssize_t)n;
}

/* The answer of `st`: headers, the message and trailers for OK; trailers
 * only (one HEADERS frame with the status) otherwise. */
static void answer(gconn *c, gstream *st)
{
    if (st->status == AG_GRPC_OK) {
        nghttp2_nv nv[] = {NV(":status", "200"), NV("content-type", "application/grpc")};
        nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_out};
        nghttp2_submit_response(c->h2, st->id, nv, 2, &prd);
    } else {
        char code[8], msg[3 * sizeof st->message + 1];
        snprintf(code, sizeof code, "%d", st->status);
        percent_encode(st->message, msg, sizeof msg);
        nghttp2_nv nv[] = {NV(":status", "200"), NV("content-type", "application/grpc"),
                           NV("grpc-status", code), NV("grpc-message", msg)};
        nghttp2_submit_response(c->h2, st->id, nv, st->message[0] ? 4 : 3, NULL);
    }
}

static void answer_now(gconn *c, gstream *st, int status, const char *message)
{
    st->status = status;
    snprintf(st->message, sizeof st->message, "%s", message);
    answer(c, st);
}

/* ---- Calls on the pool ------------------------------------------------------------- */

static void call_free(ag_grpc_call *call)
{
    for (int i = 0; i < call->nmeta; i++)
        ag_free(call->meta_value[i]);
    ag_free(call->req);
    ag_free(call->out);
    ag_free(call);
}

static void health_check(ag_grpc_call *c, void *ud);

static const ag_grpc_method k_health = {"/grpc.health.v1.Health/Check", health_check, NULL};

static void count(ag_grpc_server *s, const char *path, int status, double seconds)
{
    const char *labels[] = {path, ag_grpc_status_name(status)};
    ag_series_inc(ag_metric_series(s->requests, labels), 1);
    ag_series_observe(ag_metric_series(s->duration, labels), seconds);
}

static void call_done(void *arg);
static void task_finished(ag_grpc_server *s);

static void run_call(void *arg)
{
    ag_grpc_call *call = arg;
    ag_trace_ctx parent;
    const char *tp = ag_grpc_metadata(call, "traceparent");
    bool has_parent = tp && ag_traceparent_parse(tp, &parent) == 0;
    if (has_parent) {
        const char *ts = ag_grpc_metadata(call, "tracestate");
        if (ts) ag_tracestate_set(&parent, ts);
    }
    ag_span span;
    ag_span_begin(&span, call->path + 1, AG_SPAN_SERVER, has_parent ? &parent : NULL);
    ag_span_attr_str(&span, "rpc.system", "grpc");
    ag_span_attr_str(&span, "rpc.method", call->path);
    ag_span_enter(&span);
    if (ag_deadline_expired(call->deadline)) {
        ag_grpc_fail(call, AG_GRPC_DEADLINE_EXCEEDED, "the deadline passed before the call ran");
    } else {
        call->m->fn(call, call->m->ud);
        if (!call->answered) ag_grpc_fail(call, AG_GRPC_INTERNAL, "the method gave no answer");
        /* The caller gave up meanwhile: what it would be told, and what the
         * metric and the span say, is that its deadline passed (the work
         * done stays done, as for an HTTP request past its deadline). */
        if (call->status == AG_GRPC_OK && ag_deadline_expired(call->deadline)) {
            ag_free(call->out);
            call->out = NULL;
            call->out_len = 0;
            call->status = AG_GRPC_DEADLINE_EXCEEDED;
            snprintf(call->message, sizeof call->message, "answered after the deadline");
        }
    }
    ag_span_attr_int(&span, "rpc.grpc.status_code", call->status);
    if (call->status != AG_GRPC_OK) ag_span_error(&span, ag_grpc_status_name(call->status));
    ag_span_leave(&span);
    ag_span_end(&span);
    count(call->srv, call->m == &k_health ? k_health.path : call->m->path, call->status,
          (double)(ag_now_ns() - call->started_ns) / 1e9);
    if (ag_loop_post(call->srv->loop, call_done, call) < 0) {
        /* The loop is gone: nothing to answer, but the stop must not wait
         * for this call. */
        ag_grpc_server *s = call->srv;
        call_free(call);
        task_finished(s);
    }
}

static void conn_free(gconn *c);

static void task_finished(ag_grpc_server *s)
{
    pthread_mutex_lock(&s->mu);
    s->tasks--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* On the loop: the call is back; answer it if its stream is still open. */
static void call_done(void *arg)
{
    ag_grpc_call *call = arg;
    ag_grpc_server *s = call->srv;
    gconn *c = call->conn;
    c->tasks--;
    if (c->closed) {
        if (c->tasks == 0) conn_free(c);
    } else if (!c->closing) {
        gstream *st = nghttp2_session_get_stream_user_data(c->h2, call->stream_id);
        if (st) {
            st->status = call->status;
            snprintf(st->message, sizeof st->message, "%s", call->message);
            st->out = call->out;
            st->out_len = call->out_len;
            call->out = NULL;
            answer(c, st);
            conn_flush(c);
        }
        if (c->eof && c->tasks == 0) conn_finish(c);
    }
    call_free(call);
    task_finished(s);
}

/* grpc-timeout: 1 to 8 digits and a unit (H M S m u n). */
static ag_deadline parse_timeout(const char *t)
{
    size_t n = strlen(t);
    if (n < 2 || n > 9) return AG_DEADLINE_NONE;
    uint64_t v = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (t[i] < '0' || t[i] > '9') return AG_DEADLINE_NONE;
        v = v * 10 + (uint64_t)(t[i] - '0');
    }
    uint64_t ms;
    switch (t[n - 1]) {
    case 'H': ms = v * 3600000u; break;
    case 'M': ms = v * 60000u; break;
    case 'S': ms = v * 1000u; break;
    case 'm': ms = v; break;
    case 'u': ms = (v + 999) / 1000; break;
    case 'n': ms = (v + 999999) / 1000000; break;
    default: return AG_DEADLINE_NONE;
    }
    return ag_deadline_in(ms);
}

static const ag_grpc_method *find_method(ag_grpc_server *s, const char *path)
{
    if (strcmp(path, k_health.path) == 0) return &k_health;
    for (const ag_grpc_method *m = s->o.methods; m && m->path; m++)
        if (strcmp(m->path, path) == 0) return m;
    return NULL;
}

/* The request of `st` is whole: check it and hand it to the pool. */
static void dispatch(gconn *c, gstream *st)
{
    ag_grpc_server *s = c->srv;
    if (st->dispatched) return;
    st->dispatched = true;
    if (strcmp(st->method, "POST") != 0) {
        answer_now(c, st, AG_GRPC_UNIMPLEMENTED, "gRPC calls are POST");
        return;
    }
    if (strncmp(st->ctype, "application/grpc", 16) != 0 ||
        (st->ctype[16] && st->ctype[16] != '+' && st->ctype[16] != ';')) {
        /* Not gRPC at all: an HTTP answer (PROTOCOL-HTTP2.md). */
        nghttp2_nv nv[] = {NV(":status", "415"), NV("content-type", "text/plain")};
        nghttp2_submit_response(c->h2, st->id, nv, 2, NULL);
        return;
    }
    const ag_grpc_method *m = find_method(s, st->path);
    if (!m) {
        answer_now(c, st, AG_GRPC_UNIMPLEMENTED, "no such method");
        return;
    }
    if (st->too_big) {
        answer_now(c, st, AG_GRPC_RESOURCE_EXHAUSTED, "the request message is too large");
        return;
    }
    const uint8_t *msg;
    size_t len;
    int framing = ag__grpc_unframe((const uint8_t *)st->body.data, st->body.len, &msg, &len);
    if (framing == 1) {
        answer_now(c, st, AG_GRPC_UNIMPLEMENTED, "compressed messages are not accepted");
        return;
    }
    if (framing < 0) {
        answer_now(c, st, st->body.len < 5 ? AG_GRPC_INTERNAL : AG_GRPC_UNIMPLEMENTED,
                   st->body.len < 5 ? "no request message"
                                    : "one request message per call (unary)");
        return;
    }
    ag_grpc_call *call = ag_calloc(1, sizeof *call);
    call->srv = s;
    call->conn = c;
    call->stream_id = st->id;
    call->m = m;
    call->started_ns = ag_now_ns();
    snprintf(call->path, sizeof call->path, "%s", st->path);
    if (len) {
        call->req = ag_malloc(len);
        memcpy(call->req, msg, len);
    }
    call->req_len = len;
    call->deadline = st->timeout[0] ? parse_timeout(st->timeout) : AG_DEADLINE_NONE;
    call->nmeta = st->nmeta;
    for (int i = 0; i < st->nmeta; i++) {
        memcpy(call->meta_name[i], st->meta_name[i], META_NAME);
        call->meta_value[i] = st->meta_value[i];
        st->meta_value[i] = NULL;
    }
    st->nmeta = 0;
    pthread_mutex_lock(&s->mu);
    s->tasks++;
    pthread_mutex_unlock(&s->mu);
    c->tasks++;
    if (ag_pool_submit(s->o.pool, run_call, call) < 0) {
        c->tasks--;
        task_finished(s);
        call_free(call);
        count(s, m->path, AG_GRPC_RESOURCE_EXHAUSTED, 0);
        answer_now(c, st, AG_GRPC_RESOURCE_EXHAUSTED, "the service is busy; try again later");
    }
}

/* ---- nghttp2 callbacks ------------------------------------------------------------- */

static void stream_free(gstream *st)
{
    if (st->next) st->next->prev = st->prev;
    *st->prev = st->next;
    for (int i = 0; i < st->nmeta; i++)
        ag_free(st->meta_value[i]);
    ag_buf_release(&st->body);
    ag_free(st->out);
    ag_free(st);
}

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *f, void *ud)
{
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    gconn *c = ud;
    gstream *st = ag_calloc(1, sizeof *st);
    st->id = f->hd.stream_id;
    st->next = c->streams;
    st->prev = &c->streams;
    if (c->streams) c->streams->prev = &st->next;
    c->streams = st;
    ag_buf_init(&st->body, 0);
    nghttp2_session_set_stream_user_data(h2, st->id, st);
    return 0;
}

static void copy_header(char *dst, size_t cap, const uint8_t *v, size_t n)
{
    if (n >= cap) n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud)
{
    gstream *st = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
    if (!st || f->hd.type != NGHTTP2_HEADERS) return 0;
#define IS(lit) (namelen == sizeof(lit) - 1 && memcmp(name, lit, namelen) == 0)
    if (IS(":path")) {
        copy_header(st->path, sizeof st->path, value, valuelen);
    } else if (IS(":method")) {
        copy_header(st->method, sizeof st->method, value, valuelen);
    } else if (IS("content-type")) {
        copy_header(st->ctype, sizeof st->ctype, value, valuelen);
    } else if (IS("grpc-timeout")) {
        copy_header(st->timeout, sizeof st->timeout, value, valuelen);
    } else if ((IS("authorization") || IS("traceparent") || IS("tracestate")) &&
               st->nmeta < MAX_META && valuelen < META_VALUE) {
        copy_header(st->meta_name[st->nmeta], META_NAME, name, namelen);
        st->meta_value[st->nmeta] = ag_malloc(valuelen + 1);
        copy_header(st->meta_value[st->nmeta], valuelen + 1, value, valuelen);
        st->nmeta++;
    }
#undef IS
    return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    gconn *c = ud;
    gstream *st = nghttp2_session_get_stream_user_data(h2, id);
    if (!st || st->too_big) return 0;
    if (st->body.len + len > c->srv->max_message + 5) {
        st->too_big = true;
        ag_buf_release(&st->body);
        ag_buf_init(&st->body, 0);
        return 0;
    }
    ag_buf_append(&st->body, data, len);
    return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *f, void *ud)
{
    gconn *c = ud;
    if ((f->hd.type == NGHTTP2_DATA || f->hd.type == NGHTTP2_HEADERS) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        gstream *st = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
        if (st) dispatch(c, st);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t id, uint32_t error_code, void *ud)
{
    gstream *st = nghttp2_session_get_stream_user_data(h2, id);
    if (st) {
        nghttp2_session_set_stream_user_data(h2, id, NULL);
        stream_free(st);
    }
    return 0;
}

/* ---- Connections ------------------------------------------------------------------- */

static void handle_closed(ag_grpc_server *s)
{
    pthread_mutex_lock(&s->mu);
    s->open_handles--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void conn_free(gconn *c)
{
    ag_grpc_server *s = c->srv;
    if (c->h2) nghttp2_session_del(c->h2);
    while (c->streams)
        stream_free(c->streams);
    if (c->ssl) SSL_free(c->ssl);
    ag_free(c);
    handle_closed(s);
}

static void on_conn_closed(uv_handle_t *h)
{
    gconn *c = h->data;
    c->closed = true;
    if (c->tasks == 0) conn_free(c);
}

static void conn_close(gconn *c)
{
    if (c->closing) return;
    c->closing = true;
    if (c->next) c->next->prev = c->prev;
    *c->prev = c->next;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn_close(req->data);
}

/* Closes after what was written has gone out (uv_close alone would cancel
 * the writes still queued: the last answers, a GOAWAY). */
static void conn_finish(gconn *c)
{
    if (c->closing || c->finishing) return;
    c->finishing = true;
    c->shut.data = c;
    if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) < 0) conn_close(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static __thread char rbuf[65536];
    *buf = uv_buf_init(rbuf, sizeof rbuf);
}

static void feed(gconn *c, const uint8_t *data, size_t n)
{
    ssize_t r = nghttp2_session_mem_recv(c->h2, data, n);
    if (r < 0) {
        conn_close(c);
        return;
    }
}

static void on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf)
{
    gconn *c = stream->data;
    if (n == UV_EOF) {
        /* Half-closed: the calls already whole are still answered. */
        c->eof = true;
        uv_read_stop(stream);
        if (c->tasks == 0) conn_finish(c);
        return;
    }
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (n == 0) return;
    if (!c->ssl) {
        feed(c, (const uint8_t *)buf->base, (size_t)n);
    } else {
        BIO_write(SSL_get_rbio(c->ssl), buf->base, (int)n);
        if (!SSL_is_init_finished(c->ssl)) {
            int r = SSL_do_handshake(c->ssl);
            ag_buf out;
            ag_buf_init(&out, 0);
            tls_drain(c, &out);
            write_raw(c, &out);
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) conn_close(c);
                return;
            }
        }
        char plain[16384];
        for (;;) {
            int r = SSL_read(c->ssl, plain, sizeof plain);
            if (r > 0) {
                feed(c, (const uint8_t *)plain, (size_t)r);
                if (c->closing) return;
                continue;
            }
            int e = SSL_get_error(c->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) conn_close(c);
            break;
        }
    }
    if (!c->closing) conn_flush(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    ag_grpc_server *s = server->data;
    if (status < 0 || s->stopping) return;
    gconn *c = ag_calloc(1, sizeof *c);
    c->srv = s;
    uv_tcp_init(s->uv, &c->tcp);
    c->tcp.data = c;
    pthread_mutex_lock(&s->mu);
    s->open_handles++;
    pthread_mutex_unlock(&s->mu);
    c->next = s->conns;
    c->prev = &s->conns;
    if (s->conns) s->conns->prev = &c->next;
    s->conns = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    int r = nghttp2_session_server_new(&c->h2, cb, c);
    nghttp2_session_callbacks_del(cb);
    if (r != 0) {
        c->h2 = NULL;
        conn_close(c);
        return;
    }
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100}};
    nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 1);
    if (s->tls) {
        c->ssl = SSL_new(s->tls);
        SSL_set_bio(c->ssl, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
        SSL_set_accept_state(c->ssl);
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (!c->ssl) conn_flush(c);
}

/* ---- Health ------------------------------------------------------------------------ */

static void health_check(ag_grpc_call *c, void *ud)
{
    ag_grpc_server *s = c->srv;
    size_t n;
    const uint8_t *in = ag_grpc_request(c, &n);
    Grpc__Health__V1__HealthCheckRequest *req =
        grpc__health__v1__health_check_request__unpack(NULL, n, in);
    if (!req) {
        ag_grpc_fail(c, AG_GRPC_INVALID_ARGUMENT, "not a HealthCheckRequest");
        return;
    }
    bool known = !req->service[0] || (s->o.name && strcmp(req->service, s->o.name) == 0);
    char service[128];
    snprintf(service, sizeof service, "%s", req->service);
    grpc__health__v1__health_check_request__free_unpacked(req, NULL);
    if (!known) {
        ag_grpc_fail(c, AG_GRPC_NOT_FOUND, "unknown service %s", service);
        return;
    }
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = s->o.ready(s->o.ready_ud) == 0
                      ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                      : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    uint8_t out[16];
    size_t len = grpc__health__v1__health_check_response__pack(&resp, out);
    ag_grpc_reply(c, out, len);
}

/* ---- Start and stop ---------------------------------------------------------------- */

static int alpn_h2(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    for (unsigned i = 0; i + 1 <= inlen;) {
        unsigned len = in[i];
        if (i + 1 + len > inlen) break;
        if (len == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
            *out = in + i + 1;
            *outlen = 2;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + len;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static int tls_setup(ag_grpc_server *s)
{
    s->tls = SSL_CTX_new(TLS_server_method());
    if (!s->tls) return AG_ENOMEM;
    SSL_CTX_set_min_proto_version(s->tls, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(s->tls, s->o.tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(s->tls, s->o.tls_key, SSL_FILETYPE_PEM) != 1) {
        ag_error("gRPC: cannot load the TLS certificate or key", AG_FS("cert", s->o.tls_cert),
                 AG_FS("key", s->o.tls_key));
        return AG_ECONFIG;
    }
    SSL_CTX_set_alpn_select_cb(s->tls, alpn_h2, NULL);
    return 0;
}

static void on_listener_closed(uv_handle_t *h)
{
    handle_closed(h->data);
}

static void start_on_loop(void *arg)
{
    ag_grpc_server *s = arg;
    s->uv = ag_loop_uv(s->loop);
    uv_tcp_init(s->uv, &s->listener);
    s->listener.data = s;
    int rc = uv_tcp_open(&s->listener, s->fd);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
    if (rc < 0) ag_error("gRPC: cannot listen", AG_FS("error", uv_strerror(rc)));
}

static void stop_on_loop(void *arg)
{
    ag_grpc_server *s = arg;
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    /* GOAWAY with the last stream taken: those calls are still answered
     * (call_done finishes the connection after the last); no new ones. */
    for (gconn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->h2)
            nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(c->h2),
                                  NGHTTP2_NO_ERROR, NULL, 0);
        c->eof = true;
        if (!c->closing && c->h2) conn_flush(c);
        if (c->tasks == 0) conn_finish(c);
    }
}

int ag__grpc_server_start(const ag__grpc_opts *o, ag_grpc_server **out)
{
    ag_grpc_server *s = ag_calloc(1, sizeof *s);
    s->o = *o;
    s->loop = ag_loopset_get(o->loops, 0);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    int rc = ag_config_size("AGORA_GRPC_MAX_MESSAGE", 4u << 20, &s->max_message);
    if (rc < 0) goto fail;
    if (o->tls_cert && *o->tls_cert && o->tls_key && *o->tls_key) {
        rc = tls_setup(s);
        if (rc < 0) goto fail;
    }
    s->fd = ag_listen_socket(o->host, o->port, 511);
    if (s->fd < 0) {
        rc = s->fd;
        ag_error("gRPC: cannot bind", AG_FS("host", o->host), AG_FI("port", o->port),
                 AG_FERR(rc));
        goto fail;
    }
    s->port = ag_socket_port(s->fd);
    static const char *const labels[] = {"method", "code"};
    s->requests = ag_metrics_family(o->metrics, AG_COUNTER,
                                    "agora_grpc_server_requests_total",
                                    "gRPC calls answered, by method and status", 2, labels,
                                    NULL, 0);
    s->duration = ag_metrics_family(o->metrics, AG_HISTOGRAM,
                                    "agora_grpc_server_duration_seconds",
                                    "gRPC calls' time from request to answer", 2, labels, NULL,
                                    0);
    s->open_handles = 1;
    rc = ag_loop_post(s->loop, start_on_loop, s);
    if (rc < 0) goto fail;
    ag_info("gRPC listening", AG_FS("host", o->host), AG_FI("port", s->port),
            AG_FS("tls", s->tls ? "on" : "off"));
    *out = s;
    return 0;
fail:
    if (s->fd > 0) close(s->fd);
    if (s->tls) SSL_CTX_free(s->tls);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    ag_free(s);
    return rc;
}

int ag__grpc_server_port(const ag_grpc_server *s)
{
    return s->port;
}

void ag__grpc_server_stop(ag_grpc_server *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_mutex_unlock(&s->mu);
    if (ag_loop_post(s->loop, stop_on_loop, s) == 0) {
        pthread_mutex_lock(&s->mu);
        while (s->open_handles > 0 || s->tasks > 0)
            pthread_cond_wait(&s->cv, &s->mu);
        pthread_mutex_unlock(&s->mu);
    }
    if (s->tls) SSL_CTX_free(s->tls);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    ag_free(s);
}
