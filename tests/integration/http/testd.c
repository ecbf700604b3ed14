/*
 * testd.c — agora-testd, the server the HTTP integration tests talk to.
 *
 * It is an ordinary Agora service built only on the public API: the tests in
 * this folder start it with PORT=0 and the limits they want in the
 * environment, learn the port from its "listening" log line, and drive it
 * with raw sockets. Each route exercises one part of the server: inline and
 * worker handlers, JSON bodies and validation, raw (chunked) bodies,
 * streaming, large bodies, slow handlers (for the bulkhead and the drain),
 * deadlines and request ids, spooled bodies. Builtins /health, /ready and
 * /metrics come from ag_service_new.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <time.h>
#include <unistd.h>

#include "agora/agora.h"

/* A query parameter as an integer in [min, max], or `def` when absent or not
 * a clean decimal number. */
static long long query_int(ag_http_req *req, const char *name, long long def, long long min,
                           long long max)
{
    const char *s = ag_req_query(req, name);
    if (s == NULL || *s == '\0')
        return def;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return def;
    if (v < min)
        return min;
    if (v > max)
        return max;
    return v;
}

/* GET /hello (inline): the cheapest possible response. */
static void hello(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_res_body(res, 200, "text/plain", "hello\n", 6);
}

/* GET /v1/items/:id → {"id": <param>, "q": <query q or null>} */
static void item_get(ag_http_req *req, ag_http_res *res, void *ud)
{
    const char *id = ag_req_param(req, "id");
    const char *q = ag_req_query(req, "q");
    json_t *data = json_object();
    json_object_set_new(data, "id", id ? json_string(id) : json_null());
    json_object_set_new(data, "q", q ? json_string(q) : json_null());
    ag_res_ok(res, 200, data);
}

/* PUT /v1/items/:id → {"id": <param>, "updated": true} */
static void item_put(ag_http_req *req, ag_http_res *res, void *ud)
{
    const char *id = ag_req_param(req, "id");
    json_t *data = json_object();
    json_object_set_new(data, "id", id ? json_string(id) : json_null());
    json_object_set_new(data, "updated", json_true());
    ag_res_ok(res, 200, data);
}

/* POST /v1/echo (JSON) → the parsed body as data. */
static void echo(ag_http_req *req, ag_http_res *res, void *ud)
{
    json_t *body;
    if (ag_req_json(req, res, &body) < 0)
        return; /* answered 400 or 415 */
    ag_res_ok(res, 200, body);
}

/* POST /v1/validate (JSON): email, name 3..50, optional quantity 1..100. */
static void validate(ag_http_req *req, ag_http_res *res, void *ud)
{
    json_t *body;
    if (ag_req_json(req, res, &body) < 0)
        return;
    ag_validator v;
    ag_v_init(&v);
    const char *email = ag_v_email(&v, body, "email", AG_V_REQUIRED);
    const char *name = ag_v_str(&v, body, "name", AG_V_REQUIRED, 3, 50);
    long long quantity = 0;
    bool has_quantity = ag_v_int(&v, body, "quantity", 0, 1, 100, &quantity);
    if (!ag_v_ok(&v)) {
        ag_res_validation(res, &v); /* releases v */
        json_decref(body);
        return;
    }
    json_t *data = json_object();
    json_object_set_new(data, "email", json_string(email));
    json_object_set_new(data, "name", json_string(name));
    if (has_quantity)
        json_object_set_new(data, "quantity", json_integer(quantity));
    ag_v_release(&v);
    json_decref(body); /* email and name were borrowed from it: copied above */
    ag_res_ok(res, 201, data);
}

/* POST /v1/raw → the body bytes, as received (decoded from chunked). */
static void raw(ag_http_req *req, ag_http_res *res, void *ud)
{
    size_t len = 0;
    const char *body = ag_req_body(req, &len);
    ag_res_body(res, 200, "application/octet-stream", body ? body : "", body ? len : 0);
}

/* POST /v1/spool (AG_ROUTE_SPOOL, limit TESTD_SPOOL_MAX bytes, default
 * 8 MiB) → {size, sha256, inMemory, linkable}: the spooled file's size and
 * digest read back from it, how much of the body was held in memory (0),
 * and whether the file can be linked into a directory (O_TMPFILE). */
static void spool(ag_http_req *req, ag_http_res *res, void *ud)
{
    int fd;
    uint64_t size;
    size_t inmem = 0;
    ag_req_body(req, &inmem);
    if (ag_req_body_file(req, &fd, &size) < 0) {
        ag_res_ok(res, 200,
                  json_pack("{s:i, s:n, s:I}", "size", 0, "sha256", "inMemory", (json_int_t)inmem));
        return;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    char *buf = ag_malloc(65536);
    uint64_t off = 0;
    ssize_t n;
    while ((n = pread(fd, buf, 65536, (off_t)off)) > 0) {
        EVP_DigestUpdate(md, buf, (size_t)n);
        off += (uint64_t)n;
    }
    ag_free(buf);
    unsigned char dig[32];
    unsigned int dlen = 0;
    EVP_DigestFinal_ex(md, dig, &dlen);
    EVP_MD_CTX_free(md);
    char hex[65];
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", dig[i]);
    /* O_TMPFILE: its /proc link resolves to "/dir/#inode (deleted)". */
    char proc[64], target[512];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    ssize_t tl = readlink(proc, target, sizeof target - 1);
    target[tl > 0 ? tl : 0] = '\0';
    ag_res_ok(res, 200,
              json_pack("{s:I, s:s, s:I, s:I, s:s}", "size", (json_int_t)size, "sha256", hex,
                        "read", (json_int_t)off, "inMemory", (json_int_t)inmem, "file", target));
}

/* GET /v1/stream?n=N&size=S → a chunked body of N writes of S bytes 'x'. */
static void stream(ag_http_req *req, ag_http_res *res, void *ud)
{
    long long n = query_int(req, "n", 10, 0, 10 * 1000 * 1000);
    long long size = query_int(req, "size", 1000, 1, 1024 * 1024);
    char *chunk = ag_malloc((size_t)size);
    memset(chunk, 'x', (size_t)size);
    if (ag_res_stream_begin(res, 200, "text/plain") == 0) {
        int rc = 0;
        for (long long i = 0; i < n && rc == 0; i++)
            rc = ag_res_stream_write(res, chunk, (size_t)size);
        /* After a failed write (the client left) end still releases the
         * response; its result says nothing new. */
        (void)ag_res_stream_end(res);
    }
    ag_free(chunk);
}

/* GET /v1/big?bytes=N → one body of N bytes 'y' (default 50 MiB). */
static void big(ag_http_req *req, ag_http_res *res, void *ud)
{
    long long n = query_int(req, "bytes", 50LL * 1024 * 1024, 0, 1024LL * 1024 * 1024);
    char *data = ag_malloc((size_t)n + 1);
    memset(data, 'y', (size_t)n);
    ag_res_body_take(res, 200, "application/octet-stream", data, (size_t)n);
}

/* GET /v1/slow?ms=N → blocks this worker for N ms, then {"sleptMs": N}. */
static void slow(ag_http_req *req, ag_http_res *res, void *ud)
{
    long long ms = query_int(req, "ms", 100, 0, 600 * 1000);
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    json_t *data = json_object();
    json_object_set_new(data, "sleptMs", json_integer(ms));
    ag_res_ok(res, 200, data);
}

/* GET /v1/deadline → {"remainingMs": ms left, or null without a deadline}. */
static void deadline(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_deadline d = ag_req_deadline(req);
    json_t *data = json_object();
    if (d == AG_DEADLINE_NONE)
        json_object_set_new(data, "remainingMs", json_null());
    else
        json_object_set_new(data, "remainingMs",
                            json_integer((json_int_t)ag_deadline_remaining(d)));
    ag_res_ok(res, 200, data);
}

/* The middleware's key for ag_req_set_local: compared by address. */
static const char mw_key = 'm';

/* Middleware: X-Test-Block answers 403 before any handler; every other
 * request gets a local value that /v1/whoami reports. */
static int test_middleware(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (ag_req_header(req, "X-Test-Block")) {
        ag_res_error(res, 403, "FORBIDDEN", "blocked by middleware", NULL);
        return AG_STOP;
    }
    ag_req_set_local(req, &mw_key, ag_arena_printf(ag_req_arena(req), "saw %s", ag_req_path(req)));
    return AG_NEXT;
}

/* GET /v1/whoami → {"requestId", "remote", "middleware"}. */
static void whoami(ag_http_req *req, ag_http_res *res, void *ud)
{
    const char *id = ag_req_id(req);
    const char *remote = ag_req_remote_addr(req);
    const char *mw = ag_req_local(req, &mw_key);
    json_t *data = json_object();
    json_object_set_new(data, "middleware", mw ? json_string(mw) : json_null());
    json_object_set_new(data, "requestId", id ? json_string(id) : json_null());
    json_object_set_new(data, "remote", remote ? json_string(remote) : json_null());
    ag_res_ok(res, 200, data);
}

/* Readiness checks: "always" passes; "store" fails while TESTD_READY_FAIL is
 * set, the way a real service's store check fails when its database is down. */
static int check_always(void *ud, char *why, size_t n)
{
    return 0;
}

static int check_store(void *ud, char *why, size_t n)
{
    if (!getenv("TESTD_READY_FAIL")) return 0;
    snprintf(why, n, "store unreachable (test)");
    return AG_EUNAVAIL;
}

static const struct {
    const char *method;
    const char *pattern;
    ag_http_handler handler;
    unsigned flags;
} routes[] = {
    {"GET", "/hello", hello, AG_ROUTE_INLINE},
    {"GET", "/v1/items/:id", item_get, 0},
    {"PUT", "/v1/items/:id", item_put, 0},
    {"POST", "/v1/echo", echo, AG_ROUTE_JSON},
    {"POST", "/v1/validate", validate, AG_ROUTE_JSON},
    {"POST", "/v1/raw", raw, 0},
    {"GET", "/v1/stream", stream, 0},
    {"GET", "/v1/big", big, 0},
    {"GET", "/v1/slow", slow, 0},
    {"GET", "/v1/deadline", deadline, 0},
    {"GET", "/v1/whoami", whoami, 0},
    {"POST", "/v1/spool", spool, AG_ROUTE_SPOOL},
};

int main(void)
{
    ag_service *svc;
    if (ag_service_new("testd", 0, &svc) < 0)
        return 1;
    ag_router *router = ag_service_router(svc);
    ag_router_use(router, test_middleware, NULL);
    ag_service_add_ready_check(svc, "always", check_always, NULL);
    ag_service_add_ready_check(svc, "store", check_store, NULL);
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        int rc = ag_router_add(router, routes[i].method, routes[i].pattern, routes[i].handler,
                               NULL, routes[i].flags);
        if (rc < 0) {
            ag_error("cannot add route", AG_FS("method", routes[i].method),
                     AG_FS("pattern", routes[i].pattern), AG_FERR(rc));
            ag_service_free(svc);
            return 1;
        }
    }
    long long spool_max = 8 * 1024 * 1024;
    const char *sm = getenv("TESTD_SPOOL_MAX");
    if (sm && *sm) spool_max = strtoll(sm, NULL, 10);
    ag_router_set_body_limit(router, "POST", "/v1/spool", (uint64_t)spool_max);
    int rc = ag_service_run(svc);
    ag_service_free(svc);
    return rc == 0 ? 0 : 1;
}
