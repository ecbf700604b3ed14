/*
 * client.c — unary gRPC calls (agora/grpc.h) on nghttp2's client session
 * over a blocking socket, for the worker threads that call peers.
 *
 * Why not libcurl, which the HTTP client uses: Debian 12's libcurl (7.88.1)
 * fails every second request on a reused HTTP/2 prior-knowledge
 * connection with "Error in the HTTP2 framing layer" (curl issue #10634,
 * fixed in 8.0 by pull request #10643), and without reuse every call would
 * pay a TCP handshake. nghttp2 is already linked for the server, and a
 * unary call on it is short: SETTINGS, one HEADERS + DATA, read until the
 * stream closes.
 *
 * Connections: a free list under a mutex, each for one base URL; a call
 * takes one for its base (or connects), uses it alone, and gives it back
 * unless it broke (an I/O error, a timeout, a GOAWAY), so calls reuse
 * connections as gRPC clients do. Only h2c (http://) is spoken here; an
 * https:// base gets AG_EUNAVAIL. The client owns its connections.
 *
 * One call:
 *   [connect, preface + SETTINGS] -> submit HEADERS + DATA (END_STREAM)
 *   -> loop { send what nghttp2 has; poll for input until the deadline;
 *             feed it } until the stream closes -> read grpc-status
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <pthread.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agora/agora.h"
#include "agora/grpc.h"
#include "agora/trace.h"
#include "grpc/internal.h"

#define MAX_IDLE 64
#define MAX_RESPONSE (4u << 20)

typedef struct cconn {
    char base[200];
    char authority[200];
    int fd;
    nghttp2_session *h2;
    bool broken;
} cconn;

struct ag_grpc_client {
    pthread_mutex_t mu;
    cconn *idle[MAX_IDLE];
    int nidle;
};

/* What one call gathers from its stream. */
typedef struct exchange {
    const uint8_t *req; /* the framed request */
    size_t req_len, req_off;
    ag_buf body;
    int http_status;
    int grpc_status; /* -1 until it arrives */
    char message[256];
    bool closed;
    uint32_t error_code;
} exchange;

static void cconn_free(cconn *c)
{
    if (!c) return;
    if (c->h2) nghttp2_session_del(c->h2);
    if (c->fd >= 0) close(c->fd);
    ag_free(c);
}

int ag_grpc_client_new(ag_grpc_client **out)
{
    ag_grpc_client *c = ag_calloc(1, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return 0;
}

void ag_grpc_client_free(ag_grpc_client *c)
{
    if (!c) return;
    for (int i = 0; i < c->nidle; i++)
        cconn_free(c->idle[i]);
    pthread_mutex_destroy(&c->mu);
    ag_free(c);
}

void ag_grpc_answer_clear(ag_grpc_answer *rep)
{
    ag_free(rep->msg);
    memset(rep, 0, sizeof *rep);
}

/* ---- nghttp2 callbacks ------------------------------------------------------------- */

static int hex(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* grpc-message is percent-encoded. */
static void percent_decode(const uint8_t *in, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        if (in[i] == '%' && i + 2 < n && hex(in[i + 1]) >= 0 && hex(in[i + 2]) >= 0) {
            out[o++] = (char)(hex(in[i + 1]) * 16 + hex(in[i + 2]));
            i += 2;
        } else {
            out[o++] = (char)in[i];
        }
    }
    out[o] = '\0';
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud)
{
    exchange *x = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
    if (!x) return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        int v = 0;
        for (size_t i = 0; i < valuelen && value[i] >= '0' && value[i] <= '9'; i++)
            v = v * 10 + (value[i] - '0');
        x->http_status = v;
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        int v = 0;
        bool ok = valuelen > 0 && valuelen < 4;
        for (size_t i = 0; ok && i < valuelen; i++) {
            if (value[i] < '0' || value[i] > '9') ok = false;
            v = v * 10 + (value[i] - '0');
        }
        if (ok) x->grpc_status = v;
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        percent_decode(value, valuelen, x->message, sizeof x->message);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    exchange *x = nghttp2_session_get_stream_user_data(h2, id);
    if (x && ag_buf_append(&x->body, data, len) < 0) return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t id, uint32_t error_code, void *ud)
{
    exchange *x = nghttp2_session_get_stream_user_data(h2, id);
    if (x) {
        x->closed = true;
        x->error_code = error_code;
    }
    return 0;
}

static ssize_t read_req(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t len,
                        uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    exchange *x = src->ptr;
    size_t left = x->req_len - x->req_off;
    size_t n = left < len ? left : len;
    memcpy(buf, x->req + x->req_off, n);
    x->req_off += n;
    if (x->req_off == x->req_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* ---- Sockets ----------------------------------------------------------------------- */

/* Waits for `events` on fd until `deadline`: 0, or AG_EDEADLINE, AG_EIO. */
static int wait_fd(int fd, short events, ag_deadline deadline)
{
    for (;;) {
        uint64_t left = ag_deadline_remaining(deadline);
        if (left == 0) return AG_EDEADLINE;
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
        if (r > 0) return 0;
        if (r < 0 && errno != EINTR) return AG_EIO;
    }
}

static int send_all(cconn *c, ag_deadline deadline)
{
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->h2, &data);
        if (n < 0) return AG_EPROTO;
        if (n == 0) return 0;
        size_t off = 0;
        while (off < (size_t)n) {
            ssize_t w = send(c->fd, data + off, (size_t)n - off, MSG_NOSIGNAL);
            if (w > 0) {
                off += (size_t)w;
            } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
                int rc = wait_fd(c->fd, POLLOUT, deadline);
                if (rc < 0) return rc;
            } else {
                return AG_EIO;
            }
        }
    }
}

/* "http://host:port" -> a connected, non-blocking socket and an authority. */
static int dial(const char *base, ag_deadline deadline, cconn **out)
{
    if (strncmp(base, "http://", 7) != 0) return AG_EUNAVAIL; /* h2c only (see above) */
    const char *hp = base + 7;
    const char *colon = strrchr(hp, ':');
    if (!colon) return AG_EINVAL;
    char host[160], port[8];
    snprintf(host, sizeof host, "%.*s", (int)(colon - hp), hp);
    snprintf(port, sizeof port, "%s", colon + 1);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai) return AG_EUNAVAIL;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int rc = fd < 0 ? AG_EIO : 0;
    if (rc == 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        if (errno != EINPROGRESS) {
            rc = AG_ECONNREFUSED;
        } else if ((rc = wait_fd(fd, POLLOUT, deadline)) == 0) {
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err) rc = AG_ECONNREFUSED;
        }
    }
    freeaddrinfo(ai);
    if (rc < 0) {
        if (fd >= 0) close(fd);
        return rc;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    cconn *c = ag_calloc(1, sizeof *c);
    c->fd = fd;
    snprintf(c->base, sizeof c->base, "%s", base);
    snprintf(c->authority, sizeof c->authority, "%s", hp);
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    int r = nghttp2_session_client_new(&c->h2, cb, c);
    nghttp2_session_callbacks_del(cb);
    if (r != 0) {
        c->h2 = NULL;
        cconn_free(c);
        return AG_ENOMEM;
    }
    nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, NULL, 0);
    *out = c;
    return 0;
}

static cconn *take(ag_grpc_client *cl, const char *base)
{
    cconn *c = NULL;
    pthread_mutex_lock(&cl->mu);
    for (int i = cl->nidle - 1; i >= 0; i--)
        if (strcmp(cl->idle[i]->base, base) == 0) {
            c = cl->idle[i];
            cl->idle[i] = cl->idle[--cl->nidle];
            break;
        }
    pthread_mutex_unlock(&cl->mu);
    return c;
}

static void give_back(ag_grpc_client *cl, cconn *c)
{
    if (c->broken || !nghttp2_session_want_read(c->h2)) {
        cconn_free(c);
        return;
    }
    pthread_mutex_lock(&cl->mu);
    if (cl->nidle < MAX_IDLE) {
        cl->idle[cl->nidle++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&cl->mu);
    cconn_free(c);
}

/* ---- A call ------------------------------------------------------------------------ */

#define NV(n, v)                                                                          \
    {                                                                                     \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE \
    }

/* The exchange on `c`: 0 when the stream closed, or an AG_E* code (the
 * connection is then broken). */
static int exchange_on(cconn *c, const char *path, const char *auth, const char *traceparent,
                       const char *tracestate, ag_deadline deadline, exchange *x)
{
    char timeout[32] = "";
    uint64_t left = ag_deadline_remaining(deadline);
    if (left != UINT64_MAX) snprintf(timeout, sizeof timeout, "%llum", (unsigned long long)left);
    nghttp2_nv nv[10] = {
        NV(":method", "POST"),        NV(":scheme", "http"),
        NV(":authority", c->authority), NV(":path", path),
        NV("content-type", "application/grpc"), NV("te", "trailers"),
    };
    size_t n = 6;
    if (timeout[0]) nv[n++] = (nghttp2_nv)NV("grpc-timeout", timeout);
    if (auth && *auth) nv[n++] = (nghttp2_nv)NV("authorization", auth);
    if (traceparent) nv[n++] = (nghttp2_nv)NV("traceparent", traceparent);
    if (tracestate && *tracestate) nv[n++] = (nghttp2_nv)NV("tracestate", tracestate);
    nghttp2_data_provider prd = {.source.ptr = x, .read_callback = read_req};
    int32_t id = nghttp2_submit_request(c->h2, NULL, nv, n, &prd, x);
    if (id < 0) return AG_EPROTO;
    uint8_t buf[16384];
    for (;;) {
        int rc = send_all(c, deadline);
        if (rc < 0) return rc;
        if (x->closed) return 0;
        rc = wait_fd(c->fd, POLLIN, deadline);
        if (rc < 0) return rc;
        ssize_t r = recv(c->fd, buf, sizeof buf, 0);
        if (r == 0) return AG_ECLOSED;
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            return AG_EIO;
        }
        if (nghttp2_session_mem_recv(c->h2, buf, (size_t)r) < 0) return AG_EPROTO;
        if (x->closed) return 0;
    }
}

int ag_grpc_client_call(ag_grpc_client *cl, const char *base, const char *path, const char *peer,
                        const char *auth, const void *req, size_t len, ag_deadline deadline,
                        ag_grpc_answer *rep)
{
    memset(rep, 0, sizeof *rep);
    if (ag_deadline_remaining(deadline) == 0) return AG_EDEADLINE;
    ag_span span;
    ag_trace_ctx cur = ag_trace_current();
    ag_span_begin(&span, path + 1, AG_SPAN_CLIENT, cur.valid ? &cur : NULL);
    ag_span_attr_str(&span, "rpc.system", "grpc");
    ag_span_attr_str(&span, "rpc.method", path);
    if (peer) ag_span_attr_str(&span, "peer.service", peer);
    char tp[AG_TRACEPARENT_LEN + 1];
    if (span.ctx.valid) ag_traceparent_format(&span.ctx, tp);

    size_t framed_len;
    uint8_t *framed = ag__grpc_frame(req, len, &framed_len);
    exchange x = {.req = framed, .req_len = framed_len, .grpc_status = -1};
    ag_buf_init(&x.body, MAX_RESPONSE + 5);

    /* A kept connection may have been closed by the server meanwhile: one
     * more try on a new one when a reused one fails before any answer. */
    int rc = AG_EUNAVAIL;
    for (int attempt = 0; attempt < 2; attempt++) {
        cconn *c = take(cl, base);
        bool reused = c != NULL;
        if (!c && (rc = dial(base, deadline, &c)) < 0) break;
        x.req_off = 0;
        rc = exchange_on(c, path, auth, span.ctx.valid ? tp : NULL, span.ctx.state, deadline,
                         &x);
        if (rc < 0) c->broken = true;
        give_back(cl, c);
        if (rc == 0 || !reused || rc == AG_EDEADLINE || x.http_status) break;
        ag_buf_release(&x.body);
        ag_buf_init(&x.body, MAX_RESPONSE + 5);
    }
    ag_free(framed);

    if (rc == AG_EDEADLINE) {
        /* as it is */
    } else if (rc < 0 || x.http_status != 200 || x.grpc_status < 0) {
        rc = AG_EUNAVAIL;
    } else {
        rep->status = x.grpc_status;
        snprintf(rep->message, sizeof rep->message, "%s", x.message);
        const uint8_t *msg;
        size_t mlen;
        if (x.grpc_status != AG_GRPC_OK) {
            /* no message with a failure */
        } else if (ag__grpc_unframe((const uint8_t *)x.body.data, x.body.len, &msg, &mlen) != 0) {
            rc = AG_EUNAVAIL; /* not one uncompressed message: not an answer we read */
            memset(rep, 0, sizeof *rep);
        } else {
            rep->msg = ag_malloc(mlen ? mlen : 1);
            if (mlen) memcpy(rep->msg, msg, mlen);
            rep->msg_len = mlen;
        }
    }
    ag_buf_release(&x.body);
    if (rc < 0) {
        ag_span_error(&span, rc == AG_EDEADLINE ? "deadline exceeded" : "no gRPC answer");
    } else {
        ag_span_attr_int(&span, "rpc.grpc.status_code", rep->status);
        if (rep->status != AG_GRPC_OK) ag_span_error(&span, ag_grpc_status_name(rep->status));
    }
    ag_span_end(&span);
    return rc;
}
