/*
 * internal.h — what the files of src/lib/http share and nobody else sees.
 */
#ifndef AGORA_HTTP_INTERNAL_H
#define AGORA_HTTP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "agora/http.h"
#include "agora/trace.h"

/* Per (route, method) counters, created by the router with each endpoint and
 * filled in lazily by the server: one series pointer per status code so that
 * the hot path is an atomic load after the first request. */
typedef struct ag__route_stats {
    const char *route; /* pattern, owned by the router's endpoint */
    char method[16];
    _Atomic(ag_series *) count[600];
    _Atomic(ag_series *) latency[600];
    _Atomic(ag_series *) errors;
} ag__route_stats;

typedef struct ag__hdr {
    const char *name, *value;
} ag__hdr;

typedef struct ag__local {
    const void *key;
    void *value;
} ag__local;

/* A streaming response's shared state between the worker that writes and the
 * loop that sends: bytes queued but not yet written, and whether the client
 * is gone. Guarded by mu. */
typedef struct ag__stream {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    size_t pending;
    bool closed;
    bool failed_timeout;
    /* Loop thread only: queued writes that point here, plus one for the
     * response while it lives; freed at zero (ag__stream_unref). */
    int loop_refs;
} ag__stream;

void ag__stream_unref(ag__stream *st);

struct ag_http_res {
    ag_http_req *req;
    int status;
    ag__hdr *headers; /* arena */
    size_t nheaders, cap_headers;
    const char *content_type; /* arena or static */
    char *body;               /* ag_malloc'ed, owned until sent */
    size_t body_len;
    bool streaming, stream_ended, chunked;
    ag__stream *stream; /* allocated at stream begin, freed with the request */
};

struct ag_conn;

struct ag_http_req {
    struct ag_conn *conn;
    ag_arena arena;
    const char *method;
    char *target, *path, *query;
    ag__hdr *headers;
    size_t nheaders;
    const char *body;
    size_t body_len;
    int body_fd;             /* a spooled body's file (the connection's), or -1 */
    uint64_t body_file_size; /* its size */
    char id[130];
    const char *remote; /* the connection's peer address */
    ag_deadline deadline;
    uint64_t start_ns;
    ag_route_match match;
    const char **param_values; /* decoded lazily */
    ag__local locals[8];
    size_t nlocals;
    int http_major, http_minor;
    bool keep_alive, head_only;
    ag_span span; /* the server span (agora/trace.h); current while the handler runs */
    ag_http_res res;
};

/* Router internals the server uses. */
ag__route_stats *ag__router_unmatched_stats(const ag_router *r);
void ag__router_free_stats(ag__route_stats *s);
ag__route_stats *ag__route_stats_new(const char *route, const char *method);

/* Runs the router's middleware; AG_STOP when one of them answered. */
int ag__router_run_middleware(const ag_router *r, ag_http_req *req, ag_http_res *res);

/* Response helpers used by the server. */
void ag__res_init(ag_http_res *res, ag_http_req *req);
void ag__res_release(ag_http_res *res);
const char *ag__res_header(const ag_http_res *res, const char *name);

/* Percent-decoding into the arena ('+' as space when `plus`). */
char *ag__url_decode(ag_arena *a, const char *s, size_t n, bool plus);

/* The streaming calls ask the server to send bytes; implemented in server.c. */
int ag__stream_send(ag_http_res *res, char *data, size_t len, bool last);
int ag__stream_start(ag_http_res *res);

#endif
