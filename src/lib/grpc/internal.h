/*
 * grpc/internal.h — what the service runner (service/service.c) uses of the
 * gRPC server (grpc/server.c): start it beside the HTTP server, stop it
 * after the HTTP server drained and before the pool stops.
 */
#ifndef AGORA_GRPC_INTERNAL_H
#define AGORA_GRPC_INTERNAL_H

#include "agora/grpc.h"
#include "agora/loop.h"
#include "agora/metrics.h"
#include "agora/pool.h"

typedef struct ag_grpc_server ag_grpc_server;

typedef struct ag__grpc_opts {
    const char *host;
    int port;                     /* 0: any free port */
    ag_loopset *loops;            /* connections live on loop 0 */
    ag_pool *pool;                /* where handlers run */
    ag_metrics *metrics;
    const ag_grpc_method *methods; /* terminated by {NULL}; borrowed */
    const char *name;             /* the gRPC service name Health/Check knows */
    const char *tls_cert, *tls_key; /* both set: TLS with ALPN h2 */
    int (*ready)(void *ud);       /* 0 when the service is ready */
    void *ready_ud;
} ag__grpc_opts;

/* gRPC's length-prefixed message (PROTOCOL-HTTP2.md): a flag byte (1:
 * compressed), 4 bytes of big-endian length, the message. ag__grpc_frame
 * makes one (the caller ag_frees it, *out_len bytes); ag__grpc_unframe
 * reads one that fills `b` exactly: 0 with *msg and *len, 1 when it is
 * compressed, -1 when it is not one whole message. */
uint8_t *ag__grpc_frame(const void *msg, size_t len, size_t *out_len);
int ag__grpc_unframe(const uint8_t *b, size_t n, const uint8_t **msg, size_t *len);

/* Binds and starts serving; the caller owns the server. */
int ag__grpc_server_start(const ag__grpc_opts *o, ag_grpc_server **out);
int ag__grpc_server_port(const ag_grpc_server *s);
/* Closes the listener and every connection (GOAWAY), waits for the calls
 * on the pool to come back, and frees the server. NULL is a no-op. */
void ag__grpc_server_stop(ag_grpc_server *s);

#endif
