/*
 * content.c — GET /v1/files/:id/content: a file's bytes, streamed from disk.
 *
 * The answer carries Content-Length (and Content-Range for a range), which
 * the worker pool's streaming calls cannot frame (they send chunked), so
 * the route is AG_ROUTE_ASYNC and the exchange moves between threads:
 *
 *   loop: handler ──► worker: auth, membership, metadata, Range, open
 *                         │ ag_loop_post
 *   loop: answer prepared (401/404/416/503): ag_res_send ─────────► done
 *         or ag_res_loop_begin(200|206, length) ─► READ ◄──┐
 *   READ:  uv_fs_read (libuv's pool: a cold disk never blocks the loop)
 *            │ bytes                                       │
 *   WRITE: ag_res_loop_write, borrowed until written ──────┘ (next chunk)
 *            │ all sent: ag_res_loop_end ────────────────────────► done
 *   client gone at any step: the step in flight (worker, read or write)
 *   sees `gone` when it returns and makes the finishing call.
 *
 * One CHUNK buffer per download and one step in flight at a time, so a
 * download holds CHUNK bytes whatever its size, and the client's pace is
 * the backpressure (the next read starts when the last write is out).
 *
 * Ranges (RFC 9110 §14): one range, "bytes=a-b", "bytes=a-" or
 * "bytes=-n", answers 206 with Content-Range; one that starts past the end
 * (or any range of an empty file) answers 416 with Content-Range:
 * bytes *\/size. A Range this service does not take (several ranges,
 * another unit, a malformed one) is ignored, as RFC 9110 allows: 200 and
 * the whole file.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "files.h"

#define CHUNK (256u << 10)

typedef struct dl {
    ag_http_req *req;
    ag_http_res *res;
    ag_loop *loop;
    uv_fs_t fs;
    char *buf;
    int fd;
    int status;        /* 200 or 206 to stream; 0: an answer is prepared */
    uint64_t off, end; /* what is left to send: [off, end) */
    bool gone;         /* the client left (abort callback) */
    bool in_write, write_done;
} dl;

static void dl_free(dl *d)
{
    if (d->fd >= 0) close(d->fd);
    ag_free(d->buf);
    ag_free(d);
}

static void dl_on_abort(void *ud)
{
    ((dl *)ud)->gone = true;
}

/* ---- The worker's part ------------------------------------------------------------- */

/* attachment; filename="<ASCII fallback>"; filename*=UTF-8''<pct-encoded>
 * (RFC 6266, RFC 8187): old clients read the first, others the second. */
static const char *disposition(ag_arena *a, const char *name)
{
    ag_buf b;
    ag_buf_init(&b, 0);
    ag_buf_appends(&b, "attachment; filename=\"");
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (*p >= 0x80) {
            if ((*p & 0xC0) != 0x80) ag_buf_append(&b, "_", 1); /* one per code point */
        } else if (*p == '"' || *p == '\\' || *p < 0x20 || *p == 0x7f) {
            ag_buf_append(&b, "_", 1);
        } else {
            ag_buf_append(&b, (const char *)p, 1);
        }
    }
    ag_buf_appends(&b, "\"; filename*=UTF-8''");
    static const char attr[] = "!#$&+-.^_`|~";
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                     (*p >= '0' && *p <= '9') || (*p && strchr(attr, *p));
        if (plain)
            ag_buf_append(&b, (const char *)p, 1);
        else
            ag_buf_printf(&b, "%%%02X", *p);
    }
    const char *out = ag_arena_strdup(a, b.data);
    ag_buf_release(&b);
    return out;
}

static void dl_back(void *arg);

static void dl_prepare(dl *d)
{
    ag_http_req *req = d->req;
    ag_http_res *res = d->res;
    if (ag_auth_middleware(req, res, g_files.auth) != AG_NEXT) return;
    if (!ag_auth_caller_required(req, res)) return;
    const char *id = ag_req_param(req, "id");
    file_row f;
    ag_db *db;
    int rc = ag_store_db(g_files.store, &db);
    if (rc == 0) rc = id && strlen(id) <= FILES_ID_MAX ? files_get(db, id, &f) : AG_ENOTFOUND;
    if (rc == AG_ENOTFOUND) {
        ag_res_error(res, 404, "FILE_NOT_FOUND", "no such file", NULL);
        return;
    }
    if (rc < 0) {
        ag_error("file lookup failed", AG_FERR(rc), AG_FS("requestId", ag_req_id(req)));
        ag_res_error(res, 500, "INTERNAL", "internal error", NULL);
        return;
    }
    char role[CHAT_ROLE_MAX];
    if (files_require_member(req, res, f.room_id, "FILE_NOT_FOUND", role) < 0) return;
    char path[PATH_MAX];
    files_blob_path(f.id, path, sizeof path);
    d->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (d->fd < 0) {
        /* The row went between the lookup and the open (a delete): gone. */
        ag_res_error(res, 404, "FILE_NOT_FOUND", "no such file", NULL);
        return;
    }
    ag_arena *a = ag_req_arena(req);
    uint64_t size = (uint64_t)f.size, first = 0, last = 0;
    ag_res_header(res, "Accept-Ranges", "bytes");
    ag_res_header(res, "ETag", ag_arena_printf(a, "\"%s\"", f.sha256));
    ag_res_header(res, "Cache-Control", "private, no-cache");
    int r = ag_http_range(ag_req_header(req, "Range"), size, &first, &last);
    if (r < 0) {
        ag_res_header(res, "Content-Range",
                      ag_arena_printf(a, "bytes */%llu", (unsigned long long)size));
        ag_res_error(res, 416, "RANGE_NOT_SATISFIABLE", "the range is outside the file", NULL);
        return;
    }
    ag_res_header(res, "Content-Type", ag_arena_strdup(a, f.content_type));
    ag_res_header(res, "Content-Disposition", disposition(a, f.name));
    if (r == 1) {
        ag_res_header(res, "Content-Range",
                      ag_arena_printf(a, "bytes %llu-%llu/%llu", (unsigned long long)first,
                                      (unsigned long long)last, (unsigned long long)size));
        d->status = 206;
        d->off = first;
        d->end = last + 1;
    } else {
        d->status = 200;
        d->off = 0;
        d->end = size;
    }
}

static void dl_work(void *arg)
{
    dl *d = arg;
    dl_prepare(d);
    if (ag_loop_post(d->loop, dl_back, d) < 0)
        ag_error("download dropped: loop stopped", AG_FS("requestId", ag_req_id(d->req)));
}

/* ---- The loop's part ----------------------------------------------------------------- */

static void dl_read(dl *d);

static void dl_next(dl *d)
{
    if (d->gone) {
        ag_res_loop_abort(d->res);
        dl_free(d);
    } else if (d->off >= d->end) {
        ag_res_loop_end(d->res);
        dl_free(d);
    } else {
        dl_read(d);
    }
}

static void dl_written(void *ud)
{
    dl *d = ud;
    d->write_done = true;
    if (!d->in_write) dl_next(d);
}

static void dl_on_read(uv_fs_t *fs)
{
    dl *d = fs->data;
    ssize_t n = fs->result;
    uv_fs_req_cleanup(fs);
    if (d->gone || n <= 0) {
        if (!d->gone)
            ag_error("file read failed", AG_FS("requestId", ag_req_id(d->req)),
                     AG_FS("error", n < 0 ? uv_strerror((int)n) : "file shorter than recorded"));
        ag_res_loop_abort(d->res); /* the client sees a truncated body */
        dl_free(d);
        return;
    }
    if ((uint64_t)n > d->end - d->off) n = (ssize_t)(d->end - d->off);
    d->off += (uint64_t)n;
    d->in_write = true;
    d->write_done = false;
    long long q = ag_res_loop_write(d->res, d->buf, (size_t)n, dl_written, d);
    d->in_write = false;
    if (q < 0) {
        ag_res_loop_abort(d->res);
        dl_free(d);
        return;
    }
    if (d->write_done) dl_next(d);
}

static void dl_read(dl *d)
{
    if (!d->buf) d->buf = ag_malloc(CHUNK);
    uint64_t left = d->end - d->off;
    uv_buf_t b = uv_buf_init(d->buf, (unsigned)(left < CHUNK ? left : CHUNK));
    d->fs.data = d;
    int rc = uv_fs_read(ag_loop_uv(d->loop), &d->fs, d->fd, &b, 1, (int64_t)d->off, dl_on_read);
    if (rc < 0) {
        ag_res_loop_abort(d->res);
        dl_free(d);
    }
}

static void dl_back(void *arg)
{
    dl *d = arg;
    if (d->gone || d->status == 0) {
        ag_res_send(d->res); /* the prepared answer; only a release when gone */
        dl_free(d);
        return;
    }
    if (ag_res_loop_begin(d->res, d->status, (int64_t)(d->end - d->off)) < 0) {
        ag_res_loop_abort(d->res);
        dl_free(d);
        return;
    }
    if (strcmp(ag_req_method(d->req), "HEAD") == 0) d->off = d->end; /* the head only */
    dl_next(d);
}

static void get_content(ag_http_req *req, ag_http_res *res, void *ud)
{
    dl *d = ag_calloc(1, sizeof *d);
    d->req = req;
    d->res = res;
    d->loop = ag_req_loop(req);
    d->fd = -1;
    ag_res_on_abort(res, dl_on_abort, d);
    if (ag_pool_submit(ag_service_pool(g_files.svc), dl_work, d) < 0) {
        ag_res_on_abort(res, NULL, NULL);
        ag_res_error(res, 503, "OVERLOADED", "the service is busy; retry shortly", NULL);
        ag_res_send(res);
        dl_free(d);
    }
}

void files_content_route(ag_router *r)
{
    ag_router_add(r, "GET", "/v1/files/:id/content", get_content, NULL, AG_ROUTE_ASYNC);
}
