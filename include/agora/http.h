/*
 * http.h — the HTTP/1.1 server, its router, requests and responses.
 *
 * A server listens on every loop of an ag_loopset (SO_REUSEPORT) and parses
 * with llhttp. For each request it matches a route, runs the middleware and
 * the handler, and writes the response. Handlers run on the worker pool and
 * may block; a route flagged AG_ROUTE_INLINE runs on the I/O loop instead and
 * must not block (health checks, metrics, the benchmark's hello).
 * Requests on a connection are handled one at a time, so pipelined requests
 * get their responses in order. docs/internals/http.md draws the connection
 * state machine and explains the threading model.
 *
 * Ownership: the request, its arena and its response belong to the server;
 * a handler borrows them until it returns (or, when streaming, until
 * ag_res_stream_end). Strings returned by ag_req_* live as long as the request.
 */
#ifndef AGORA_HTTP_H
#define AGORA_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/clock.h"
#include "agora/loop.h"
#include "agora/mem.h"
#include "agora/metrics.h"
#include "agora/pool.h"

#define AG_REQUEST_ID_HEADER "X-Request-Id"

typedef struct ag_http_req ag_http_req;
typedef struct ag_http_res ag_http_res;
typedef struct ag_router ag_router;
typedef struct ag_http_server ag_http_server;

/* ---- Requests ---------------------------------------------------------- */

const char *ag_req_method(const ag_http_req *r); /* "GET" */
/* The path without the query string, as sent (not percent-decoded). */
const char *ag_req_path(const ag_http_req *r);
/* The full request target ("/v1/x?y=1"). */
const char *ag_req_target(const ag_http_req *r);
/* The route pattern that matched ("/v1/users/:id"), or NULL. */
const char *ag_req_route(const ag_http_req *r);
/* A path parameter, percent-decoded, or NULL. */
const char *ag_req_param(const ag_http_req *r, const char *name);
/* The first query parameter named `name`, percent-decoded ('+' is a space),
 * or NULL. */
const char *ag_req_query(ag_http_req *r, const char *name);
/* The first header named `name` (case-insensitive), or NULL. */
const char *ag_req_header(const ag_http_req *r, const char *name);
/* Header count and the i-th name and value, for iteration. */
size_t ag_req_header_count(const ag_http_req *r);
void ag_req_header_at(const ag_http_req *r, size_t i, const char **name, const char **value);
/* The body (decoded from chunked if it was), NUL-terminated; len may be NULL.
 * A spooled request (below) has "" here: its body is in a file. */
const char *ag_req_body(const ag_http_req *r, size_t *len);
/* The body of a spooled request (AG_ROUTE_SPOOL, or a body policy that
 * chose to spool): an anonymous file holding exactly the body's bytes
 * (decoded from chunked), `*size` of them. The descriptor is borrowed: the
 * server closes it when the response is done, so read it with pread (its
 * offset is unspecified) and do not close it. It is made with O_TMPFILE
 * where the filesystem allows, so linkat(AT_FDCWD, "/proc/self/fd/<fd>",
 * AT_FDCWD, dest, AT_SYMLINK_FOLLOW) can give it a name on the same
 * filesystem without copying; elsewhere it was created and unlinked at
 * once (linkat then fails with ENOENT: copy it). AG_ENOTFOUND when the
 * request has no spooled body (not spooled, or no body at all). */
int ag_req_body_file(const ag_http_req *r, int *fd, uint64_t *size);
/* The request id: X-Request-Id from the client when it is sane, or a new id. */
const char *ag_req_id(const ag_http_req *r);
/* The request's server span context (agora/trace.h): valid once the request
 * is dispatched; what a handler that answers later from the loop passes on
 * (the gateway's upstream traceparent). Every answer carries it in a
 * traceresponse header (W3C Trace Context level 2). */
const struct ag_trace_ctx *ag_req_trace(const ag_http_req *r);
/* The server span itself, to rename it or add attributes (the gateway names
 * it after its route: "POST /api/v1/orders"). Until the answer is sent. */
struct ag_span *ag_req_span(ag_http_req *r);
/* When this request must be answered by: the server's own request timeout,
 * shortened by an X-Agora-Deadline-Ms header from the caller. */
ag_deadline ag_req_deadline(const ag_http_req *r);
/* The peer's address ("127.0.0.1"). */
const char *ag_req_remote_addr(const ag_http_req *r);
/* The request's arena: allocations freed when the response is done. */
ag_arena *ag_req_arena(ag_http_req *r);
/* Per-request values for middleware (the authenticated caller, say). The key
 * is compared by pointer; the value is borrowed. */
void ag_req_set_local(ag_http_req *r, const void *key, void *value);
void *ag_req_local(const ag_http_req *r, const void *key);
/* True when the content type's media type is `type` ("application/json"),
 * or a "+json"-style suffix of it. */
bool ag_req_is_content_type(const ag_http_req *r, const char *type);

/* ---- Responses --------------------------------------------------------- */

void ag_res_status(ag_http_res *res, int status);
int ag_res_get_status(const ag_http_res *res);
/* Adds a header (both strings copied). Content-Length, Transfer-Encoding,
 * Connection and Date are the server's. */
void ag_res_header(ag_http_res *res, const char *name, const char *value);
/* Sets the body (copied) and its content type. */
void ag_res_body(ag_http_res *res, int status, const char *content_type, const void *data,
                 size_t len);
/* Sets the body, taking `data` (allocated with ag_malloc). */
void ag_res_body_take(ag_http_res *res, int status, const char *content_type, char *data,
                      size_t len);
/* Sets a JSON body; steals the reference to `body`. */
void ag_res_json(ag_http_res *res, int status, json_t *body);
/* {"success":true,"data":data} with `status`; steals `data` (NULL: null). */
void ag_res_ok(ag_http_res *res, int status, json_t *data);
/* The error envelope of DESIGN.md §4:
 * {"success":false,"error":{"code","message"[,"details"]},"requestId"}.
 * Steals `details` (may be NULL). Adds Retry-After: 1 to 429 and 503. */
void ag_res_error(ag_http_res *res, int status, const char *code, const char *message,
                  json_t *details);

/* Streaming (chunked) responses, from worker-pool handlers only. Begin sends
 * the status and headers; each write sends one chunk and blocks while more
 * than a bounded amount is waiting to be written to a slow client; end sends
 * the last chunk. Writes return AG_ECLOSED once the client has gone and
 * AG_ETIMEDOUT when the client reads nothing for the write timeout. An
 * HTTP/1.0 client gets the body unchunked, delimited by closing. */
int ag_res_stream_begin(ag_http_res *res, int status, const char *content_type);
int ag_res_stream_write(ag_http_res *res, const void *data, size_t len);
int ag_res_stream_end(ag_http_res *res);

/* ---- Asynchronous responses, on the loop --------------------------------
 *
 * A route flagged AG_ROUTE_ASYNC runs its middleware and handler on the I/O
 * loop, like AG_ROUTE_INLINE, but returning does not send the response: the
 * handler, or what it started, finishes it later on that same loop thread in
 * one of four ways: ag_res_send (a whole response), ag_res_loop_begin/_write/
 * _end (streamed), ag_res_loop_abort (cut short: the connection closes), or
 * ag_res_tunnel then ag_res_tunnel_close (raw bytes both ways after an
 * upgrade). Until then the connection reads no further request. The request
 * and response stay valid until the finishing call, even when the client
 * has gone: the abort callback then runs (on the loop), the response goes
 * nowhere, and the owner must still make its finishing call, which only
 * releases it. This is how the gateway proxies without blocking a thread
 * and how the registry holds blocking queries.
 *
 *   WAITING ── ag_res_send ─────────────────────────────────► done
 *      │ ag_res_loop_begin ─► STREAMING ── _end / _abort ───► done
 *      │ ag_res_tunnel ─────► TUNNEL ──── ag_res_tunnel_close ► done
 *      └ client gone: abort callback; the finishing call still comes
 */
typedef void (*ag_res_event_fn)(void *ud);

/* The loop the request arrived on (its handler's thread). */
ag_loop *ag_req_loop(const ag_http_req *r);
/* `fn(ud)` runs once if the client goes away before the response is done.
 * It may make the finishing call itself. */
void ag_res_on_abort(ag_http_res *res, ag_res_event_fn fn, void *ud);
/* True once the client has gone. */
bool ag_res_gone(const ag_http_res *res);
/* Sends the response built with ag_res_status/_header/_body/_json/_error. */
void ag_res_send(ag_http_res *res);

/* Sends the status and the headers set so far. `content_length` >= 0 frames
 * the body by length (exactly that many bytes must follow); -1 streams it
 * chunked (closing-delimited to an HTTP/1.0 client). The body of a HEAD
 * request, or of a 204 or 304, is not sent. AG_ESTATE when not waiting,
 * AG_ECLOSED when the client has gone. */
int ag_res_loop_begin(ag_http_res *res, int status, int64_t content_length);
/* Sends `len` bytes of body (or, in a tunnel, raw bytes), borrowed until
 * `done(done_ud)` runs: once they are written or the connection failed; it
 * may run before this returns. Returns how many bytes are queued to the
 * client now (a source pauses above a mark of its own and resumes from the
 * drain callback), or AG_ECLOSED (done has run). */
long long ag_res_loop_write(ag_http_res *res, const void *data, size_t len, ag_res_event_fn done,
                            void *done_ud);
/* The head waits for the first body bytes (one write for a small answer);
 * this sends it now, for a source that has no body bytes at hand. */
void ag_res_loop_flush(ag_http_res *res);
/* `fn(ud)` runs once, as soon as fewer than `low` bytes are queued to the
 * client (at once if that is already so). */
void ag_res_on_drain(ag_http_res *res, size_t low, ag_res_event_fn fn, void *ud);
/* Ends a streamed response: the last chunk, then the next request. */
int ag_res_loop_end(ag_http_res *res);
/* Ends a response that cannot be completed (its source failed mid-body):
 * the connection closes, so the client sees a truncated body. */
void ag_res_loop_abort(ag_http_res *res);

typedef struct ag_tunnel_cbs {
    /* Bytes from the client, borrowed for the call. */
    void (*on_data)(void *ud, const char *data, size_t len);
    /* The client closed or failed; nothing more arrives. The owner still
     * calls ag_res_tunnel_close. */
    void (*on_close)(void *ud);
} ag_tunnel_cbs;
/* Answers `status` (101) with the headers set so far, then hands the
 * connection over: the client's bytes go to on_data, ag_res_loop_write sends
 * raw bytes back. No timeouts apply but the write timeout. */
int ag_res_tunnel(ag_http_res *res, int status, const ag_tunnel_cbs *cbs, void *ud);
/* Stops (true) or resumes reading the client (backpressure). */
void ag_res_tunnel_pause(ag_http_res *res, bool paused);
/* Closes the tunnel once what is queued has been written; finishes. */
void ag_res_tunnel_close(ag_http_res *res);

/* ---- Router ------------------------------------------------------------ */

typedef void (*ag_http_handler)(ag_http_req *req, ag_http_res *res, void *ud);

/* Middleware runs before the handler, in the order added, on the same thread
 * as the handler. Return AG_NEXT to go on, AG_STOP when it has answered. */
enum { AG_NEXT = 0, AG_STOP = 1 };
typedef int (*ag_http_middleware)(ag_http_req *req, ag_http_res *res, void *ud);

enum ag_route_flags {
    AG_ROUTE_INLINE = 1 << 0, /* run on the I/O loop: must not block */
    AG_ROUTE_JSON = 1 << 1,   /* a request body must be JSON, else 415 */
    AG_ROUTE_ASYNC = 1 << 2,  /* on the I/O loop, answered later (see below) */
    AG_ROUTE_SPOOL = 1 << 3,  /* the body goes to a file, not memory (below) */
};

ag_router *ag_router_new(void);
void ag_router_free(ag_router *r);
/* Adds a route. `pattern` segments are literal, ":name" (one segment, bound
 * to the parameter `name`) or a final "*" (the rest of the path, parameter
 * "*"). Literal segments win over parameters. A GET route also answers HEAD.
 * AG_EEXISTS for a duplicate, AG_EINVAL for a bad pattern or method.
 * Routes are added before the server starts; the router is then read-only. */
int ag_router_add(ag_router *r, const char *method, const char *pattern, ag_http_handler h,
                  void *ud, unsigned flags);
int ag_router_use(ag_router *r, ag_http_middleware mw, void *ud);

/* ---- Request bodies: in memory or spooled to a file ----------------------
 *
 * By default a body is read whole into memory, up to the server's
 * max_body_bytes (AGORA_HTTP_MAX_BODY_BYTES, 1 MiB), before the handler
 * runs. A route flagged AG_ROUTE_SPOOL has its body written to an anonymous
 * temporary file as it arrives instead (what nginx does with
 * client_body_in_file_only / proxy_request_buffering): memory stays at one
 * read buffer whatever the size, and the handler, dispatched once the body
 * is complete, finds it with ag_req_body_file. Content-Length or chunked,
 * the route's limit holds either way: a Content-Length above it is
 * answered 413 as soon as the head is parsed (no body byte read; the
 * connection then closes), and a chunked body is cut off with 413 as it
 * passes the limit. The file lives in the router's spool directory and is
 * closed (so gone, unless the handler linked it) when the response is done.
 */

/* The largest body the route (`method` and `pattern` exactly as added)
 * accepts; 0 restores the server's max_body_bytes. On a route that is not
 * spooled the body is held in memory up to this limit, so raise it only
 * with AG_ROUTE_SPOOL. AG_ENOTFOUND when no such route was added. */
int ag_router_set_body_limit(ag_router *r, const char *method, const char *pattern,
                             uint64_t max_bytes);

/* Where a request's body goes (a body policy's choice):
 *   AG_BODY_MEMORY  read whole into memory before the handler runs
 *   AG_BODY_SPOOL   written to an anonymous file before the handler runs
 *   AG_BODY_STREAM  the handler runs once the head is parsed, and reads the
 *                   body as it arrives (ag_req_body_read, below); only for
 *                   AG_ROUTE_ASYNC routes (elsewhere it falls back to
 *                   AG_BODY_SPOOL) */
typedef enum ag_body_mode { AG_BODY_MEMORY = 0, AG_BODY_SPOOL, AG_BODY_STREAM } ag_body_mode;

/* A per-request choice for a route whose body handling depends on more than
 * its pattern (the gateway's catch-all: its own route table decides). It
 * runs on the I/O loop once the head is parsed, before any body byte is
 * read, and must not block; `*mode` and `*max_bytes` come in as the
 * route's (flag and limit) and may be changed. The request's method, path,
 * query and headers are readable. AG_ENOTFOUND when no such route. */
typedef void (*ag_body_policy_fn)(ag_http_req *req, ag_body_mode *mode, uint64_t *max_bytes,
                                  void *ud);
int ag_router_set_body_policy(ag_router *r, const char *method, const char *pattern,
                              ag_body_policy_fn fn, void *ud);

/* ---- Streamed request bodies (AG_BODY_STREAM) -----------------------------
 *
 * What nginx calls proxy_request_buffering off: the handler (an
 * AG_ROUTE_ASYNC one, on the loop) is dispatched as soon as the head is
 * parsed, with ag_req_body "" and ag_req_body_streamed true. No body byte is
 * read until it calls ag_req_body_read; from then on the bytes go to
 * `on_data` as they arrive (decoded from chunked framing, valid only during
 * the call), and `on_end` comes once: 0 after the last byte, or a negative
 * code when the body cannot complete: AG_ETOOBIG past the limit (the route's,
 * or the policy's max_bytes), AG_ETIMEDOUT when it stalls longer than the
 * body timeout, AG_EPROTO for bad chunked framing. A client that goes away
 * aborts the request as for any asynchronous handler (ag_res_on_abort), with
 * no on_end. ag_req_body_pause stops reading the socket (at most one read
 * buffer more is held) until ag_req_body_resume: the handler's
 * backpressure, e.g. while the upstream it forwards to is behind. The
 * handler answers as usual, before, during or after the body; an answer
 * finished before the body's end closes the connection after it (the rest
 * is not read). Both calls are for the loop that owns the request. A
 * request without a body (none, or Content-Length: 0) is dispatched as
 * usual, once complete, with ag_req_body_streamed false. A client that
 * closes its side before the body's end aborts the request.
 */
typedef struct ag_body_sink {
    void (*on_data)(void *ud, const char *data, size_t len);
    void (*on_end)(void *ud, int status);
} ag_body_sink;
/* Whether this request's body is streamed (then ag_req_body is ""). */
bool ag_req_body_streamed(const ag_http_req *r);
/* Starts reading the body into `sink` (copied). AG_ESTATE when the body is
 * not streamed or already being read. A body that already failed gets its
 * on_end at once. */
int ag_req_body_read(ag_http_req *r, const ag_body_sink *sink, void *ud);
void ag_req_body_pause(ag_http_req *r);
void ag_req_body_resume(ag_http_req *r);

/* Where this router's spooled bodies go (copied): default
 * AGORA_HTTP_SPOOL_DIR, else TMPDIR, else /tmp. A service that keeps the
 * bodies (agora-files links them into its store) puts it on the same
 * filesystem as where they end up. The directory must exist. */
void ag_router_set_spool_dir(ag_router *r, const char *dir);
/* The directory in force (see above); borrowed. */
const char *ag_router_spool_dir(const ag_router *r);

typedef struct ag_route_match {
    const char *pattern;
    ag_http_handler handler;
    void *ud;
    unsigned flags;
    uint64_t body_limit;           /* 0: the server's max_body_bytes */
    ag_body_policy_fn body_policy; /* NULL: none */
    void *body_policy_ud;
    ag_http_middleware check; /* NULL: none (ag_router_set_check) */
    void *check_ud;
    void *stats; /* the server's per-route counters */
    int nparams;
    struct {
        const char *name;
        const char *value; /* points into the path; not decoded */
        size_t len;
    } params[16];
    char allow[96]; /* on AG_ENOTFOUND with a path that exists: "GET, HEAD" */
} ag_route_match;

/* A check of the route's own (`method` and `pattern` as added; parameter
 * names need not be the same): run after the router's middleware and
 * before the handler, on the same thread; AG_STOP when it answered the
 * request (the handler is then not run), AG_NEXT to go on. The service
 * layer validates JSON bodies against the route's OpenAPI schema with it.
 * AG_ENOTFOUND when no such route was added. */
int ag_router_set_check(ag_router *r, const char *method, const char *pattern,
                        ag_http_middleware fn, void *ud);

/* An OpenAPI 3.0 document listing every route (path parameters as
 * {name}, methods, the error envelope); a new reference. Services whose
 * routes need richer descriptions serve their own /openapi.json. */
json_t *ag_router_openapi(const ag_router *r, const char *title, const char *version);

/* Matches `method` and `path`. 0 on a match; AG_ENOTFOUND otherwise, with
 * m->allow non-empty when the path exists under other methods (405). */
int ag_router_match(const ag_router *r, const char *method, const char *path, ag_route_match *m);

/* ---- Server ------------------------------------------------------------ */

typedef struct ag_http_limits {
    size_t max_header_bytes;     /* request line + headers; 431 past it */
    int max_headers;             /* header count; 431 past it */
    size_t max_body_bytes;       /* 413 past it */
    uint64_t header_timeout_ms;  /* whole head must arrive within; 408 + close */
    uint64_t body_timeout_ms;    /* silence allowed while reading a body; 408 + close */
    uint64_t idle_timeout_ms;    /* keep-alive idle time before close */
    uint64_t write_timeout_ms;   /* a client that reads nothing this long is closed */
    uint64_t request_timeout_ms; /* a handler's default deadline */
    int max_connections;         /* per process; more are answered 503 and closed */
} ag_http_limits;

/* Fills the defaults: 16 KiB, 100 headers, 1 MiB, 10 s, 30 s, 60 s, 30 s,
 * 30 s, 10000. */
void ag_http_limits_default(ag_http_limits *l);
/* Overrides from AGORA_HTTP_MAX_HEADER_BYTES, _MAX_HEADERS, _MAX_BODY_BYTES,
 * _HEADER_TIMEOUT, _BODY_TIMEOUT, _IDLE_TIMEOUT, _WRITE_TIMEOUT,
 * _REQUEST_TIMEOUT, _MAX_CONNECTIONS. AG_ECONFIG with a logged reason. */
int ag_http_limits_from_env(ag_http_limits *l);

typedef struct ag_http_server_opts {
    const char *host;  /* "127.0.0.1" */
    int port;          /* 0: any free port (see ag_http_server_port) */
    ag_router *router; /* borrowed; must outlive the server */
    ag_loopset *loops; /* borrowed */
    ag_pool *pool;     /* borrowed; handlers without AG_ROUTE_INLINE run here */
    ag_http_limits limits;
    bool access_log;     /* one info line per response */
    ag_metrics *metrics; /* NULL: ag_metrics_default() */
    /* TLS: PEM files of the certificate chain and its key. Both NULL: plain
     * HTTP. With them every connection is TLS 1.2+ (OpenSSL), terminated
     * here; AG_ECONFIG from ag_http_server_new when they do not load. */
    const char *tls_cert, *tls_key;
} ag_http_server_opts;

int ag_http_server_new(const ag_http_server_opts *o, ag_http_server **out);
/* Binds and starts accepting on every loop. The loops must be running. */
int ag_http_server_start(ag_http_server *s);
/* The bound port (useful with port 0). */
int ag_http_server_port(const ag_http_server *s);
/* Open connections right now. */
size_t ag_http_server_connections(const ag_http_server *s);
/* Graceful stop: stop accepting, close idle connections, let in-flight
 * requests finish (their responses say Connection: close), then close the
 * rest. Blocks the calling (non-loop) thread until every connection has
 * closed or `timeout_ms` passed, when the rest are closed at once.
 * Returns the number of connections closed by force. */
int ag_http_server_drain(ag_http_server *s, uint64_t timeout_ms);
/* True once drain has begun (readiness turns 503). */
bool ag_http_server_draining(const ag_http_server *s);
/* Frees a drained server. */
void ag_http_server_free(ag_http_server *s);

/* A Range header (`h`, may be NULL) against a representation of `size`
 * bytes: 1 with the satisfiable byte range [*first, *last] (last < size);
 * 0 when there is no range to honour (absent, not bytes=, malformed or
 * several ranges: the whole representation); -1 when it cannot be
 * satisfied (416). One range only: "bytes=a-b", "bytes=a-", "bytes=-n". */
int ag_http_range(const char *h, uint64_t size, uint64_t *first, uint64_t *last);

/* The reason phrase of `status` ("Not Found"), or "Unknown". */
const char *ag_http_reason(int status);

#endif
