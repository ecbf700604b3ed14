/*
 * trace.h — distributed tracing: W3C Trace Context on every hop, spans
 * recorded by libagora itself (server, client, producer, consumer, saga
 * steps, store transactions) and exported as OTLP/HTTP JSON.
 *
 * A service does not call most of this: ag_service_new sets the tracer up,
 * the HTTP server opens a server span per request, the pool carries the
 * context into the worker that runs the handler, the HTTP client opens a
 * client span per call and sends its traceparent, ag_bus_publish writes the
 * traceparent into the event (the CloudEvents distributed-tracing
 * extension) and the consumer continues it, the saga engine keeps the
 * trace of the request that created a saga and continues it on every step,
 * and every log line written while a span is current carries its traceId
 * and spanId. What is left for a service: an attribute on the current span
 * now and then, and ag_span_begin for work of its own worth a span.
 *
 *   ag_span s;
 *   ag_span_begin(&s, "rebuild projection", AG_SPAN_INTERNAL, NULL);
 *   ag_span_enter(&s);              // children and logs belong to it
 *   ...
 *   ag_span_attr_int(&s, "rows", n);
 *   ag_span_leave(&s);
 *   ag_span_end(&s);
 *
 * The current context is per thread. ag_span_begin with parent NULL uses
 * the thread's current one; with no current context it starts a new trace
 * (for server and consumer spans) or records nothing (every other kind:
 * background work that no request caused is not traced).
 *
 * Sampling is decided once, at the root, and travels in the traceparent's
 * flags: OTEL_TRACES_SAMPLER = always_on, always_off, traceidratio,
 * parentbased_always_on (the default: always on in development),
 * parentbased_always_off, parentbased_traceidratio, with the ratio in
 * OTEL_TRACES_SAMPLER_ARG (default 1.0). OTEL_SDK_DISABLED=true turns
 * everything off except passing on the traceparent a caller sent. A span
 * that is not sampled costs no allocation; its context is still passed on.
 *
 * Export: when OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as is) or
 * OTEL_EXPORTER_OTLP_ENDPOINT (+ "/v1/traces") is set and
 * OTEL_TRACES_EXPORTER is not "none", ended spans go to a bounded queue
 * (OTEL_BSP_MAX_QUEUE_SIZE, default 2048 spans) that one thread drains in
 * batches (OTEL_BSP_MAX_EXPORT_BATCH_SIZE, 512) every
 * OTEL_BSP_SCHEDULE_DELAY ms (500) or when a batch is full, POSTed with
 * libcurl within OTEL_EXPORTER_OTLP_TIMEOUT ms (5000). Nothing on the
 * request path waits for it: a full queue or a collector that is down drops
 * spans, counted in agora_trace_spans_dropped_total{reason}. Without an
 * endpoint spans are not recorded at all (only propagated).
 *
 * Threads: everything here is thread-safe; an ag_span belongs to the code
 * that began it until ag_span_end.
 */
#ifndef AGORA_TRACE_H
#define AGORA_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/metrics.h"

typedef struct ag_trace_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags; /* bit 0: sampled */
    bool valid;
    char state[256]; /* the tracestate header, passed on unchanged; "" for none */
} ag_trace_ctx;

#define AG_TRACEPARENT_LEN 55 /* "00-<32 hex>-<16 hex>-<2 hex>" */

typedef enum ag_span_kind {
    AG_SPAN_INTERNAL = 1, /* the values are OTLP's SpanKind */
    AG_SPAN_SERVER = 2,
    AG_SPAN_CLIENT = 3,
    AG_SPAN_PRODUCER = 4,
    AG_SPAN_CONSUMER = 5,
} ag_span_kind;

typedef struct ag__span_rec ag__span_rec;

/* A span, by value in the code that runs it. */
typedef struct ag_span {
    ag_trace_ctx ctx;   /* this span's context: what children and peers get */
    ag_trace_ctx saved; /* the thread's context before ag_span_enter */
    ag__span_rec *rec;  /* what is recorded; NULL when not sampled */
    bool entered;
} ag_span;

/* Reads the environment (above) for `service` ("orders": exported as
 * service.name "agora-orders") and starts the exporter thread when there is
 * an endpoint. Metrics go to `m` (NULL: the default registry). Called by
 * ag_service_new; a second call does nothing. AG_ECONFIG on a bad variable
 * (logged). */
int ag_trace_setup(const char *service, ag_metrics *m);
/* Exports what is queued (within the export timeout) and stops the thread;
 * ag_trace_setup may then run again. Called by ag_service_run's end and
 * ag_service_free; idempotent. */
void ag_trace_shutdown(void);
/* Whether spans are recorded at all (an endpoint is set, not disabled). */
bool ag_trace_recording(void);

/* "00-<trace-id>-<parent-id>-<flags>" (W3C Trace Context level 1; another
 * version's longer header is read by its first 55 characters). AG_EINVAL
 * when malformed, or with an all-zero id. */
int ag_traceparent_parse(const char *s, ag_trace_ctx *out);
/* Keeps `tracestate` (may be NULL) in c->state: at most 32 list members and
 * 255 characters, cut at a member's end when longer (W3C Trace Context
 * §3.3.1.5 lets a vendor drop members it cannot carry). */
void ag_tracestate_set(ag_trace_ctx *c, const char *tracestate);
/* Writes AG_TRACEPARENT_LEN characters and a NUL; "" when !c->valid. */
void ag_traceparent_format(const ag_trace_ctx *c, char out[AG_TRACEPARENT_LEN + 1]);
/* The ids as lower-case hex: 32 and 16 characters and a NUL. */
void ag_trace_id_hex(const ag_trace_ctx *c, char out[33]);
void ag_span_id_hex(const ag_trace_ctx *c, char out[17]);

/* The calling thread's current context (valid == false when none), and
 * setting it (NULL clears). The pool carries it into the task it runs. */
ag_trace_ctx ag_trace_current(void);
void ag_trace_set_current(const ag_trace_ctx *c);

/* Begins a span named `name` (copied) under `parent` (NULL: the thread's
 * current context; a context with valid == false: a new trace for server
 * and consumer spans, nothing for the others). The start time is now. */
void ag_span_begin(ag_span *s, const char *name, ag_span_kind kind, const ag_trace_ctx *parent);
/* Renames it (an HTTP server span learns its route after routing). */
void ag_span_rename(ag_span *s, const char *name);
/* Attributes (copied; the same key twice is kept twice, as OTLP allows). */
void ag_span_attr_str(ag_span *s, const char *key, const char *value);
void ag_span_attr_int(ag_span *s, const char *key, long long value);
void ag_span_attr_bool(ag_span *s, const char *key, bool value);
/* Marks it failed with `message` (copied; may be NULL). */
void ag_span_error(ag_span *s, const char *message);
/* Whether ag_span_end would record it. */
bool ag_span_recording(const ag_span *s);
/* Makes it the thread's current context; ag_span_leave puts back what was
 * current before. Pairs, on one thread. */
void ag_span_enter(ag_span *s);
void ag_span_leave(ag_span *s);
/* Forgets what it recorded (nothing is exported); its context stays. For
 * a span that turned out not worth a trace (a static file). */
void ag_span_drop(ag_span *s);
/* Ends it (leaving it first if entered) and queues it for export. Safe on
 * a span that records nothing, and twice (the second call does nothing). */
void ag_span_end(ag_span *s);

#endif
