/*
 * grpc.h — a service's gRPC server (unary methods), and a gRPC client call.
 *
 * A service that declares gRPC methods (ag_service_def.grpc, or
 * ag_service_use_grpc) serves them on its HTTP port + 100 (DESIGN.md §1;
 * AGORA_GRPC_PORT overrides: a port, or "off"), on HTTP/2 with prior
 * knowledge, or over TLS with ALPN "h2" when AGORA_TLS_CERT and
 * AGORA_TLS_KEY are set (the same files as its HTTP server). Every server
 * also answers grpc.health.v1.Health/Check: SERVING while the service's
 * /ready passes, NOT_SERVING otherwise (a drain included), NOT_FOUND for a
 * service name other than "" and its own.
 *
 *   static void get_user(ag_grpc_call *c, void *ud)
 *   {
 *       size_t n;
 *       const uint8_t *in = ag_grpc_request(c, &n);
 *       ...                                   // protobuf-c: unpack, work, pack
 *       ag_grpc_reply(c, out, out_len);       // or ag_grpc_fail(c, AG_GRPC_NOT_FOUND, "...")
 *   }
 *   static const ag_grpc_method k_methods[] = {
 *       {"/agora.users.v1.UserService/GetUser", get_user, NULL}, {NULL}};
 *
 * Handlers run on the service's worker pool (they may block, as HTTP
 * handlers do); a full pool answers RESOURCE_EXHAUSTED. The call's deadline
 * comes from grpc-timeout, with the X-Agora-Deadline-Ms semantics of the
 * HTTP server: a call whose deadline has passed before its handler starts
 * is answered DEADLINE_EXCEEDED without running it, and the handler hands
 * the rest of it to what it calls (ag_grpc_deadline). Each call is a server
 * span (its traceparent metadata continued) and counted in
 * agora_grpc_server_requests_total{method,code} and
 * agora_grpc_server_duration_seconds{method}.
 *
 * Status codes: a handler's negative AG_E* code maps with
 * ag_grpc_status_of (AG_ENOTFOUND: NOT_FOUND, AG_EINVAL: INVALID_ARGUMENT,
 * AG_EEXISTS: ALREADY_EXISTS, AG_EAUTH: UNAUTHENTICATED, AG_EDEADLINE and
 * AG_ETIMEDOUT: DEADLINE_EXCEEDED, AG_EBUSY: RESOURCE_EXHAUSTED,
 * AG_EUNAVAIL and AG_ECONNREFUSED: UNAVAILABLE, AG_ESTATE and
 * AG_ECONSTRAINT: FAILED_PRECONDITION, AG_ETOOBIG: RESOURCE_EXHAUSTED,
 * anything else INTERNAL).
 *
 * Requests are limited to AGORA_GRPC_MAX_MESSAGE bytes (default 4 MiB, as
 * gRPC's own default); compressed messages are refused (UNIMPLEMENTED).
 */
#ifndef AGORA_GRPC_H
#define AGORA_GRPC_H

#include <stddef.h>
#include <stdint.h>

#include "agora/clock.h"

enum {
    AG_GRPC_OK = 0,
    AG_GRPC_CANCELLED = 1,
    AG_GRPC_UNKNOWN = 2,
    AG_GRPC_INVALID_ARGUMENT = 3,
    AG_GRPC_DEADLINE_EXCEEDED = 4,
    AG_GRPC_NOT_FOUND = 5,
    AG_GRPC_ALREADY_EXISTS = 6,
    AG_GRPC_PERMISSION_DENIED = 7,
    AG_GRPC_RESOURCE_EXHAUSTED = 8,
    AG_GRPC_FAILED_PRECONDITION = 9,
    AG_GRPC_ABORTED = 10,
    AG_GRPC_OUT_OF_RANGE = 11,
    AG_GRPC_UNIMPLEMENTED = 12,
    AG_GRPC_INTERNAL = 13,
    AG_GRPC_UNAVAILABLE = 14,
    AG_GRPC_DATA_LOSS = 15,
    AG_GRPC_UNAUTHENTICATED = 16,
};

typedef struct ag_grpc_call ag_grpc_call;

typedef void (*ag_grpc_fn)(ag_grpc_call *c, void *ud);

typedef struct ag_grpc_method {
    const char *path; /* "/<package>.<Service>/<Method>" */
    ag_grpc_fn fn;
    void *ud;
} ag_grpc_method;

/* The request message (protobuf bytes, borrowed for the handler's call). */
const uint8_t *ag_grpc_request(const ag_grpc_call *c, size_t *len);
/* A request metadata value by lower-case name ("authorization"), or NULL. */
const char *ag_grpc_metadata(const ag_grpc_call *c, const char *name);
/* The bearer token of the "authorization" metadata, or NULL. */
const char *ag_grpc_bearer(const ag_grpc_call *c);
/* The call's deadline (AG_DEADLINE_NONE without grpc-timeout). */
ag_deadline ag_grpc_deadline(const ag_grpc_call *c);
/* The method's path. */
const char *ag_grpc_path(const ag_grpc_call *c);

/* Answers OK with `msg` (copied). */
void ag_grpc_reply(ag_grpc_call *c, const void *msg, size_t len);
/* Answers `status` (AG_GRPC_*, not OK) with a message for the caller. */
void ag_grpc_fail(ag_grpc_call *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The gRPC status for a negative AG_E* code. */
int ag_grpc_status_of(int err);
/* "NOT_FOUND" for AG_GRPC_NOT_FOUND. */
const char *ag_grpc_status_name(int status);

/* ---- Client ------------------------------------------------------------------------ */

/* A unary call over libcurl (HTTP/2 with prior knowledge; https:// with
 * ALPN), on `curl` (a CURL * the caller keeps per thread and reuses, so
 * the connection is kept; NULL: a handle of this thread's own). `base` is
 * "http://127.0.0.1:7104"; `path` the method's. `bearer` (may be NULL) goes
 * as authorization metadata, the thread's trace context as traceparent,
 * and the time left to `deadline` as grpc-timeout. On a gRPC answer,
 * *status gets its grpc-status (OK or not) and 0 is returned; `out` (an
 * ag_buf the caller owns) gets the response message, `message` (may be
 * NULL) the grpc-message. A call that got no gRPC answer (refused,
 * reset, timed out, not HTTP/2) returns AG_EUNAVAIL or AG_EDEADLINE. */
struct ag_buf;
int ag_grpc_client_call(void *curl, const char *base, const char *path, const char *bearer,
                        const void *req, size_t req_len, ag_deadline deadline,
                        struct ag_buf *out, int *status, char *message, size_t message_len);

#endif
