/*
 * traces.h — what the files of agora-traces share: main.c wires the
 * service, otlp.c turns an OTLP/HTTP JSON export request into span records,
 * store.c keeps them in memory within a bound and answers the queries,
 * routes.c is the HTTP API, openapi.json its description.
 *
 * Data flow: POST /v1/traces → otlp_decode (no lock: parses, validates,
 * converts attributes to compact JSON text) → tr_store_add (one lock:
 * index, summaries, eviction) → the GET routes read under the same lock.
 */
#ifndef AGORA_TRACES_H
#define AGORA_TRACES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/agora.h"
#include "agora/peer.h"

#define TR_DEFAULT_MAX_SPANS 200000
#define TR_DEFAULT_MAX_BYTES ((size_t)64 << 20)
#define TR_DEFAULT_MAX_BODY ((size_t)8 << 20)
#define TR_FILTER_MAX 256 /* bytes of a service= or name= filter */

typedef struct tr_service tr_service; /* an interned service name (store.c) */
typedef struct tr_trace tr_trace;

/* One span as stored: one allocation, its strings in `text` after the
 * struct (name, status message, attributes as a JSON object, events and
 * links as JSON arrays, each NUL-terminated; offsets below). */
typedef struct tr_span {
    uint8_t span_id[8];
    uint8_t parent_id[8];
    bool has_parent;
    uint8_t kind;              /* OTLP SpanKind: 0 unspecified, 1 internal ... 5 consumer */
    uint8_t status;            /* OTLP StatusCode: 0 unset, 1 ok, 2 error */
    uint64_t start_ns, end_ns; /* Unix nanoseconds */
    tr_service *service;       /* set by the store */
    tr_trace *trace;           /* set by the store */
    struct tr_span *hnext;     /* the store's span index chain */
    size_t cost;               /* bytes this span is counted for */
    uint32_t status_msg, attrs, events, links; /* offsets into text */
    char text[];                               /* name first (offset 0) */
} tr_span;

/* A decoded span waiting for the store: the span (owned) and what the
 * store needs to place it. `service` is borrowed from the request's JSON. */
typedef struct tr_item {
    uint8_t trace_id[16];
    const char *service;
    tr_span *span;
} tr_item;

/* What one export request held. */
typedef struct tr_batch {
    tr_item *items;
    size_t n, cap;
    size_t rejected;
    ag_buf why; /* "…: traceId must be 32 hex digits; …" (the first few) */
} tr_batch;

void tr_batch_init(tr_batch *b);
/* Frees the spans still in the batch (those the store did not take). */
void tr_batch_release(tr_batch *b);

/* ---- otlp.c ---- */

/* Decodes an ExportTraceServiceRequest (OTLP's JSON mapping) into `b`:
 * valid spans as items, invalid ones counted in b->rejected with a reason.
 * AG_EINVAL (reason in `err`) when the request itself is malformed (not an
 * object; resourceSpans, scopeSpans or spans not arrays of objects). */
int otlp_decode(json_t *req, tr_batch *b, char *err, size_t errn);

/* Parses `len` hex digits (either case) into len/2 bytes; false on any
 * other character, a wrong length, or all zeros (W3C: an invalid id). */
bool tr_hex_id(const char *s, size_t len, uint8_t *out);
void tr_hex(const uint8_t *id, size_t n, char *out); /* 2n digits + NUL */

/* ---- store.c ---- */

typedef struct tr_limits {
    size_t max_spans;
    size_t max_bytes;
} tr_limits;

/* Sets the bounds and registers the metrics in `m`. Call once. */
void tr_store_init(const tr_limits *lim, ag_metrics *m);
/* Frees everything stored (at stop). */
void tr_store_release(void);

/* Adds the batch's spans (taking them: the items' span pointers become
 * NULL), then evicts the least recently written traces while over a
 * bound. Spans whose id is already stored in their trace are dropped as
 * duplicates (an exporter's retry) and counted in *duplicates. */
void tr_store_add(tr_batch *b, size_t *duplicates);

typedef enum tr_sort { TR_SORT_RECENT, TR_SORT_SLOWEST } tr_sort;

typedef struct tr_query {
    const char *service; /* NULL: any */
    const char *name;    /* NULL: any */
    int error;           /* -1 any, 0 without errors, 1 with */
    uint64_t min_duration_ns;
    tr_sort sort;
    int64_t page, limit;
} tr_query;

/* The summaries of one page of matching traces (a new array) and how many
 * match in all. */
json_t *tr_store_list(const tr_query *q, int64_t *total);
/* The whole trace (a new object), or NULL when it is not stored. */
json_t *tr_store_get(const uint8_t id[16]);
/* [{service, spanCount, traceCount}] by name (a new array). */
json_t *tr_store_services(void);

/* ---- routes.c, openapi.json ---- */

/* The routes (auth: the verifier the queries use; max_body: the export
 * route's body limit) and the export counters in `m`. */
void tr_routes(ag_router *r, ag_auth *auth, size_t max_body, ag_metrics *m);
extern const char traces_openapi_json[];

#endif
