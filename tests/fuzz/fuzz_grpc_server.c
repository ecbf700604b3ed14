/* Bytes from a client through the real gRPC server (agora/grpc.h,
 * src/lib/grpc/server.c): a server with an echo method and the built-in
 * health check runs on its own loop and pool in the harness's process;
 * each input is written on a new loopback connection, the write side
 * shut, and everything the server sends read until it closes. What it
 * exercises: nghttp2's framing and HPACK as the server drives them, the
 * header callbacks (paths, content types, grpc-timeout, metadata and their
 * limits), body assembly and the 5-byte message prefix, dispatch to the
 * pool and the answer coming back to a stream that may have been reset or
 * a connection that may have closed, and the health request's protobuf.
 * Whatever came in, the server's first frame is SETTINGS (or it sends
 * nothing), it closes, and it still answers a health check afterwards. */
#include "fuzz.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "agora/error.h"
#include "agora/grpc.h"
#include "agora/log.h"
#include "agora/loop.h"
#include "agora/metrics.h"
#include "agora/pool.h"
#include "grpc/internal.h"

static ag_loopset *g_loops;
static ag_pool *g_pool;
static ag_grpc_server *g_server;
static int g_port;

static void echo(ag_grpc_call *c, void *ud)
{
    size_t n;
    const uint8_t *in = ag_grpc_request(c, &n);
    if (n > 0 && in[0] == 'x') {
        ag_grpc_fail(c, AG_GRPC_INVALID_ARGUMENT, "x: %.*s", (int)(n > 40 ? 40 : n), in);
        return;
    }
    ag_grpc_reply(c, in, n);
}

static int ready(void *ud)
{
    return 0;
}

static const ag_grpc_method k_methods[] = {{"/fuzz.Echo/Echo", echo, NULL}, {NULL, NULL, NULL}};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ag_log_setup("fuzz", AG_LOG_OFF);
    signal(SIGPIPE, SIG_IGN); /* as every service does (ag_service_main) */
    setenv("AGORA_GRPC_MAX_MESSAGE", "65536", 1);
    if (ag_loopset_new(1, &g_loops) < 0 || ag_loopset_start(g_loops) < 0) abort();
    if (ag_pool_new(2, 64, &g_pool) < 0) abort();
    ag__grpc_opts o = {.host = "127.0.0.1", .port = 0, .loops = g_loops, .pool = g_pool,
                       .metrics = ag_metrics_default(), .methods = k_methods,
                       .name = "fuzz.Echo", .ready = ready};
    if (ag__grpc_server_start(&o, &g_server) < 0) abort();
    g_port = ag__grpc_server_port(g_server);
    return 0;
}

/* A frame's header: 3 bytes length, type, flags, stream id. */
static bool has_frame(const uint8_t *b, size_t len, uint8_t type, uint32_t stream)
{
    for (size_t off = 0; off + 9 <= len;) {
        size_t flen = (size_t)b[off] << 16 | (size_t)b[off + 1] << 8 | b[off + 2];
        uint32_t sid = ((uint32_t)b[off + 5] & 0x7f) << 24 | (uint32_t)b[off + 6] << 16 |
                       (uint32_t)b[off + 7] << 8 | b[off + 8];
        if (b[off + 3] == type && sid == stream) return true;
        off += 9 + flen;
    }
    return false;
}

/* A health check as a client sends it: the preface, empty SETTINGS, then
 * HEADERS (literal header fields, no Huffman) and DATA for stream 1. */
static size_t health_request(uint8_t *out)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    static const char *const hs[][2] = {
        {":method", "POST"}, {":scheme", "http"}, {":path", "/grpc.health.v1.Health/Check"},
        {":authority", "f"}, {"content-type", "application/grpc"}, {"te", "trailers"}};
    size_t n = sizeof preface - 1;
    memcpy(out, preface, n);
    static const uint8_t settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
    memcpy(out + n, settings, 9);
    n += 9;
    uint8_t block[256];
    size_t b = 0;
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
        size_t kl = strlen(hs[i][0]), vl = strlen(hs[i][1]);
        block[b++] = 0;
        block[b++] = (uint8_t)kl;
        memcpy(block + b, hs[i][0], kl);
        b += kl;
        block[b++] = (uint8_t)vl;
        memcpy(block + b, hs[i][1], vl);
        b += vl;
    }
    const uint8_t headers[9] = {0, 0, (uint8_t)b, 1, 4, 0, 0, 0, 1};
    memcpy(out + n, headers, 9);
    n += 9;
    memcpy(out + n, block, b);
    n += b;
    static const uint8_t data[14] = {0, 0, 5, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0};
    memcpy(out + n, data, sizeof data);
    return n + sizeof data;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t got[1 << 16];
    size_t len = fuzz_exchange(g_port, data, size, got, sizeof got);
    /* The server speaks first: its SETTINGS, whatever the client sent. */
    if (len >= 9) FUZZ_CHECK(got[3] == 4);
    static unsigned count;
    if (count++ % 16) return 0;
    uint8_t probe[512];
    size_t plen = health_request(probe);
    len = fuzz_exchange(g_port, probe, plen, got, sizeof got);
    if (!has_frame(got, len, 1, 1))
        fprintf(stderr, "fuzz: the health probe after an input got %zu bytes, no HEADERS\n", len);
    FUZZ_CHECK(has_frame(got, len, 1, 1));
    return 0;
}
