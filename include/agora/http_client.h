/*
 * http_client.h — outbound HTTP: pooled keep-alive connections, timeouts and
 * deadlines, blocking from a worker thread or asynchronous on a loop.
 *
 * Built on libcurl (Debian's libcurl4-openssl-dev) rather than on our own
 * parser: curl brings connection reuse, TLS, proxies and two decades of edge
 * cases. One ag_http_client holds a connection cache shared by every thread
 * (a curl share object), so keep-alive connections to an upstream are reused
 * by whichever worker calls it next; each loop gets its own curl multi
 * handle driven by libuv for asynchronous calls.
 *
 * Deadlines (DESIGN.md §3): a call carries a deadline; the time left is sent
 * upstream in X-Agora-Deadline-Ms and bounds the call's total time. A call
 * whose deadline has already passed fails with AG_EDEADLINE without any I/O.
 * A header, request id, method or content type containing CR or LF is refused
 * with AG_EINVAL (no header injection).
 *
 * Tracing (agora/trace.h): a blocking call made while a span is current is
 * a client span of its own ("GET catalog", with OpenTelemetry's HTTP client
 * attributes), and the peer gets its traceparent and the tracestate; an
 * asynchronous call passes on the current context, if any, without a span.
 * A call that sets its own traceparent header keeps it.
 */
#ifndef AGORA_HTTP_CLIENT_H
#define AGORA_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/clock.h"
#include "agora/loop.h"
#include "agora/mem.h"

typedef struct ag_http_client ag_http_client;

typedef struct ag_http_client_opts {
    uint64_t connect_timeout_ms; /* default 2000 */
    uint64_t timeout_ms;         /* a call's default total time; default 10000 */
    size_t max_response_bytes;   /* blocking calls; default 16 MiB */
    const char *user_agent;      /* default "agora/0.1" */
} ag_http_client_opts;

/* `o` may be NULL for the defaults. The client is thread-safe. */
int ag_http_client_new(const ag_http_client_opts *o, ag_http_client **out);
/* Frees the client. No call may be in flight. NULL is a no-op. */
void ag_http_client_free(ag_http_client *c);

typedef struct ag_http_call {
    const char *method;         /* NULL: GET */
    const char *url;            /* "http://127.0.0.1:7002/v1/products/1" */
    const char *const *headers; /* "Name: value" strings, NULL-terminated; may be NULL */
    const void *body;           /* may be NULL */
    size_t body_len;
    const char *content_type; /* for the body; NULL: application/json when body */
    ag_deadline deadline;     /* 0 or AG_DEADLINE_NONE: none beyond timeout */
    uint64_t timeout_ms;      /* 0: the client's default */
    const char *request_id;   /* forwarded as X-Request-Id when set */
    const char *peer;         /* the service called ("catalog"): names the client span */
} ag_http_call;

typedef struct ag_http_reply {
    int status;
    ag_buf headers; /* the response header block, "Name: value\r\n" lines */
    ag_buf body;
} ag_http_reply;

/* Performs `call` and waits for the whole response. Returns 0 when a response
 * arrived (whatever its status; `rep` is then the caller's to release), or
 * AG_ETIMEDOUT, AG_EDEADLINE, AG_ECONNREFUSED, AG_ETOOBIG or AG_EIO, leaving
 * `rep` released. Must not be called on a loop thread. */
int ag_http_client_do(ag_http_client *c, const ag_http_call *call, ag_http_reply *rep);
/* The first header of the reply named `name`, copied into `out` (size n);
 * returns its length or AG_ENOTFOUND. */
int ag_http_reply_header(const ag_http_reply *rep, const char *name, char *out, size_t n);
void ag_http_reply_release(ag_http_reply *rep);

/* Asynchronous calls on a loop. Callbacks run on that loop's thread. */
typedef struct ag_http_op ag_http_op;
typedef struct ag_http_async_cbs {
    /* The status and header block arrived. Return AG_NEXT to go on. */
    int (*on_head)(void *ud, int status, const char *headers, size_t len);
    /* A piece of the body. Return 0 to go on, or AG_EBUSY to pause the op
     * until ag_http_op_resume (backpressure towards the upstream). */
    int (*on_body)(void *ud, const char *data, size_t len);
    /* The op finished: 0 after the whole body, or an AG_E* code. Called once;
     * the op is freed after it returns. */
    void (*on_done)(void *ud, int err);
} ag_http_async_cbs;

/* Starts `call` on `loop` (must be the calling thread's loop). The call's
 * strings and body are copied. Returns 0 and the op, or an AG_E* code
 * (on_done will not be called). */
int ag_http_client_start(ag_http_client *c, ag_loop *loop, const ag_http_call *call,
                         const ag_http_async_cbs *cbs, void *ud, ag_http_op **out);
/* Resumes a paused op. On the op's loop only. */
void ag_http_op_resume(ag_http_op *op);
/* Cancels an op: on_done is called with AG_ECANCELED. On the op's loop only. */
void ag_http_op_cancel(ag_http_op *op);
/* Releases the per-loop state of `c` on `loop`; call on that loop after its
 * last op finished and before the loop stops. */
void ag_http_client_loop_release(ag_http_client *c, ag_loop *loop);

#endif
