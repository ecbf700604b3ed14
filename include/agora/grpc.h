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

#include <stdbool.h>
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

/* The caller from the bearer token of the authorization metadata,
 * verified with `auth` (the service's verifier, agora/peer.h): 1 with *out,
 * 0 without a bearer, or -1 after answering UNAUTHENTICATED. */
struct ag_auth;
struct ag_claims;
int ag_grpc_auth(ag_grpc_call *c, const struct ag_auth *auth, struct ag_claims *out);
/* The caller when it has `role` (or is an admin): true with *out; false
 * after answering UNAUTHENTICATED (no or a bad bearer) or
 * PERMISSION_DENIED, as ag_auth_caller_role does over HTTP. */
bool ag_grpc_require_role(ag_grpc_call *c, const struct ag_auth *auth, const char *role,
                          struct ag_claims *out);

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

/* Unary calls over libcurl (Debian's is built with nghttp2): HTTP/2 with
 * prior knowledge for http://, ALPN h2 for https://. A client keeps a few
 * curl handles (one per thread calling at once), each with its open
 * connection, so calls reuse connections. Thread-safe. Most services call
 * through their peers instead (agora/peer.h: ag_peer_grpc). */
typedef struct ag_grpc_client ag_grpc_client;

int ag_grpc_client_new(ag_grpc_client **out);
void ag_grpc_client_free(ag_grpc_client *c);

typedef struct ag_grpc_answer {
    int status;        /* grpc-status */
    uint8_t *msg;      /* the response message (status OK); ag_free'd by clear */
    size_t msg_len;
    char message[256]; /* grpc-message, decoded; "" for none */
} ag_grpc_answer;

/* Calls `path` ("/agora.inventory.v1.InventoryService/Reserve") at `base`
 * ("http://127.0.0.1:7104") with `req` (a serialised message). `auth` (may
 * be NULL) is sent as the authorization metadata ("Bearer ..."), the
 * thread's trace context as traceparent (a client span), and the time left
 * to `deadline` as grpc-timeout. 0 with *rep filled when a gRPC answer came
 * (any status: clear it); AG_EDEADLINE when the deadline passed first;
 * AG_EUNAVAIL when no gRPC answer came (refused, reset, not HTTP/2, no
 * grpc-status). */
int ag_grpc_client_call(ag_grpc_client *c, const char *base, const char *path, const char *peer,
                        const char *auth, const void *req, size_t len, ag_deadline deadline,
                        ag_grpc_answer *rep);
void ag_grpc_answer_clear(ag_grpc_answer *rep);

#endif
