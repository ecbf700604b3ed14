/* Bytes from a client through the real HTTP/1.1 server (agora/http.h): a
 * server with a few routes runs on its own loop in the harness's process;
 * each input is written on a new loopback connection, the write side shut,
 * and everything the server sends read until it closes. What it exercises:
 * the request line, headers and their limits, Content-Length and chunked
 * bodies, pipelined requests, Expect, path parameters and the query
 * (percent-decoded), JSON bodies, a Range header (ag_http_range), and a
 * streamed body (AG_BODY_STREAM) read by an asynchronous handler that
 * pauses after every piece and resumes from the loop's queue.
 * Whatever came in, the server answers with HTTP/1.1 responses only (or
 * nothing) and closes, and is still serving afterwards. */
#include "fuzz.h"

#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "agora/error.h"
#include "agora/http.h"
#include "agora/json.h"
#include "agora/log.h"
#include "agora/loop.h"
#include "agora/mem.h"
#include "agora/pool.h"
#include "agora/websocket.h"

static ag_loopset *g_loops;
static ag_pool *g_pool;
static ag_router *g_router;
static ag_http_server *g_server;
static int g_port;

static void r_query(ag_http_req *req, ag_http_res *res, void *ud)
{
    const char *id = ag_req_param(req, "id");
    const char *a = ag_req_query(req, "a");
    uint64_t first, last;
    int r = ag_http_range(ag_req_header(req, "Range"), 1000, &first, &last);
    if (r == 1) FUZZ_CHECK(first <= last && last < 1000);
    /* decoded values are any bytes: only UTF-8 goes into JSON */
    if (id && !ag_ws_utf8_valid(id, strlen(id))) id = NULL;
    if (a && !ag_ws_utf8_valid(a, strlen(a))) a = NULL;
    ag_res_ok(res, 200, json_pack("{s:s?, s:s?, s:i}", "id", id, "a", a, "range", r));
}

static void r_json(ag_http_req *req, ag_http_res *res, void *ud)
{
    json_t *body;
    if (ag_req_json(req, res, &body) < 0) return;
    ag_res_ok(res, 200, json_pack("{s:i}", "type", json_typeof(body)));
    json_decref(body);
}

static void r_body(ag_http_req *req, ag_http_res *res, void *ud)
{
    size_t len = 0;
    const char *b = ag_req_body(req, &len);
    FUZZ_CHECK(len == 0 || b[len] == '\0');
    ag_res_ok(res, 200, json_pack("{s:I}", "length", (json_int_t)len));
}

/* POST /stream: the body as it arrives. The state outlives the request
 * while a resume is queued (`queued`); an abort marks it gone. */
typedef struct streamed {
    ag_http_req *req;
    ag_http_res *res;
    uint64_t bytes;
    int queued;
    bool gone, answered;
} streamed;

static void streamed_release(streamed *st)
{
    if ((st->gone || st->answered) && st->queued == 0) ag_free(st);
}

static void streamed_resume(void *ud)
{
    streamed *st = ud;
    /* the body may end (and be answered) inside: still queued until after */
    if (!st->gone && !st->answered) ag_req_body_resume(st->req);
    st->queued--;
    streamed_release(st);
}

static void streamed_data(void *ud, const char *data, size_t len)
{
    streamed *st = ud;
    FUZZ_CHECK(len > 0 && data);
    st->bytes += len;
    ag_req_body_pause(st->req);
    st->queued++;
    if (ag_loop_post(ag_req_loop(st->req), streamed_resume, st) < 0) {
        st->queued--;
        ag_req_body_resume(st->req);
    }
}

static void streamed_end(void *ud, int status)
{
    streamed *st = ud;
    FUZZ_CHECK(status <= 0);
    st->answered = true;
    if (status == 0)
        ag_res_ok(st->res, 200, json_pack("{s:I}", "length", (json_int_t)st->bytes));
    else
        ag_res_error(st->res, status == AG_ETOOBIG ? 413 : 400, "BAD_BODY", "body broke off", NULL);
    ag_res_send(st->res);
    streamed_release(st);
}

static void streamed_abort(void *ud)
{
    streamed *st = ud;
    st->gone = true;
    ag_res_send(st->res); /* the finishing call an asynchronous owner still makes */
    streamed_release(st);
}

static void r_stream(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!ag_req_body_streamed(req)) { /* no body at all: dispatched as usual */
        FUZZ_CHECK(ag_req_body_read(req, &(ag_body_sink){streamed_data, streamed_end}, NULL) ==
                   AG_ESTATE);
        ag_res_ok(res, 200, json_pack("{s:i}", "length", 0));
        ag_res_send(res);
        return;
    }
    streamed *st = ag_calloc(1, sizeof *st);
    st->req = req;
    st->res = res;
    ag_res_on_abort(res, streamed_abort, st);
    static const ag_body_sink sink = {streamed_data, streamed_end};
    FUZZ_CHECK(ag_req_body_read(req, &sink, st) == 0);
}

static void stream_policy(ag_http_req *req, ag_body_mode *mode, uint64_t *max_bytes, void *ud)
{
    *mode = AG_BODY_STREAM;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ag_log_setup("fuzz", AG_LOG_OFF);
    signal(SIGPIPE, SIG_IGN); /* as every service does (ag_service_main) */
    if (ag_loopset_new(1, &g_loops) < 0 || ag_loopset_start(g_loops) < 0) abort();
    if (ag_pool_new(2, 64, &g_pool) < 0) abort();
    g_router = ag_router_new();
    if (ag_router_add(g_router, "GET", "/q/:id", r_query, NULL, 0) < 0 ||
        ag_router_add(g_router, "POST", "/json", r_json, NULL, AG_ROUTE_JSON) < 0 ||
        ag_router_add(g_router, "POST", "/body", r_body, NULL, 0) < 0 ||
        ag_router_add(g_router, "PUT", "/body", r_body, NULL, AG_ROUTE_INLINE) < 0 ||
        ag_router_add(g_router, "POST", "/stream", r_stream, NULL, AG_ROUTE_ASYNC) < 0 ||
        ag_router_set_body_policy(g_router, "POST", "/stream", stream_policy, NULL) < 0)
        abort();
    ag_http_server_opts o = {
        .host = "127.0.0.1", .router = g_router, .loops = g_loops, .pool = g_pool};
    ag_http_limits_default(&o.limits);
    o.limits.max_header_bytes = 4096;
    o.limits.max_headers = 32;
    o.limits.max_body_bytes = 65536;
    o.limits.header_timeout_ms = 2000;
    o.limits.body_timeout_ms = 2000;
    o.limits.idle_timeout_ms = 2000;
    if (ag_http_server_new(&o, &g_server) < 0 || ag_http_server_start(g_server) < 0) abort();
    g_port = ag_http_server_port(g_server);
    return 0;
}

/* One connection (fuzz_exchange), NUL-terminated. */
static size_t exchange(const uint8_t *data, size_t size, char *got, size_t cap)
{
    size_t len = fuzz_exchange(g_port, data, size, got, cap - 1);
    got[len] = '\0';
    return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char got[1 << 16];
    size_t len = exchange(data, size, got, sizeof got);
    if (len > 0) FUZZ_CHECK(strncmp(got, "HTTP/1.1 ", len < 9 ? len : 9) == 0);
    /* still serving (every 16th input: it halves the speed) */
    static unsigned count;
    if (count++ % 16) return 0;
    static const char probe[] = "GET /q/x?a=1 HTTP/1.1\r\nHost: f\r\nConnection: close\r\n\r\n";
    len = exchange((const uint8_t *)probe, sizeof probe - 1, got, sizeof got);
    if (len <= 12 || strncmp(got, "HTTP/1.1 200", 12) != 0)
        fprintf(stderr, "fuzz: the probe after an input got %zu bytes: %.300s\n", len, got);
    FUZZ_CHECK(len > 12 && strncmp(got, "HTTP/1.1 200", 12) == 0);
    return 0;
}
