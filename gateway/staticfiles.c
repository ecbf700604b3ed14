/*
 * staticfiles.c — web/ at / (the storefront, chat and ops console).
 *
 * The file is read on the worker pool (disk I/O never runs on a loop) into
 * a job; the loop then builds and sends the response. The job, not the
 * worker, owns what it read, so a client that leaves meanwhile costs nothing
 * but the read. Paths are confined to the web directory: no "..", no
 * encoded characters, no symbolic link out of it (realpath checked).
 * Conditional GET with ETag (size and modification time).
 */
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agora/log.h"
#include "gateway.h"

#define MAX_STATIC_BYTES (16u << 20)

typedef struct sjob {
    ag_http_req *req;
    ag_http_res *res;
    ag_loop *loop;
    const gw_config *cfg; /* a reference, for the CORS headers */
    bool gone;
    int status; /* 200, 304, 404, 403, 500 */
    char *body;
    size_t len;
    const char *ctype;
    char etag[64];
    char path[PATH_MAX];
    char inm[80]; /* If-None-Match, copied on the loop */
} sjob;

static const char *content_type(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"}, {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"}, {".mjs", "text/javascript; charset=utf-8"},
        {".json", "application/json"}, {".svg", "image/svg+xml"}, {".png", "image/png"},
        {".jpg", "image/jpeg"}, {".jpeg", "image/jpeg"}, {".gif", "image/gif"},
        {".webp", "image/webp"}, {".ico", "image/x-icon"}, {".txt", "text/plain; charset=utf-8"},
        {".woff2", "font/woff2"}, {".map", "application/json"},
    };
    const char *dot = strrchr(path, '.');
    if (dot)
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcasecmp(dot, types[i].ext) == 0) return types[i].type;
    return "application/octet-stream";
}

static void sjob_free(sjob *j)
{
    gw_config_unref((gw_config *)j->cfg);
    ag_free(j->body);
    ag_free(j);
}

static void sjob_answer(void *arg)
{
    sjob *j = arg;
    if (j->gone) {
        sjob_free(j);
        return;
    }
    ag_http_res *res = j->res;
    gw_common_headers(j->req, res, j->cfg);
    if (j->status == 200 || j->status == 304) {
        ag_res_header(res, "ETag", j->etag);
        bool html = strncmp(j->ctype, "text/html", 9) == 0;
        ag_res_header(res, "Cache-Control", html ? "no-cache" : "public, max-age=3600");
        if (html)
            ag_res_header(res, "Content-Security-Policy",
                          "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                          "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'");
    }
    if (j->status == 200) {
        ag_res_body_take(res, 200, j->ctype, j->body, j->len);
        j->body = NULL;
    } else if (j->status == 304) {
        ag_res_status(res, 304);
    } else if (j->status == 404) {
        ag_res_error(res, 404, "NOT_FOUND", "no such page", NULL);
    } else if (j->status == 403) {
        ag_res_error(res, 403, "FORBIDDEN", "this path is not served", NULL);
    } else {
        ag_res_error(res, 500, "INTERNAL", "the file could not be read", NULL);
    }
    ag_res_send(res);
    sjob_free(j);
}

static void sjob_abort(void *ud)
{
    sjob *j = ud;
    j->gone = true;
    ag_res_send(j->res); /* releases it; nothing is sent */
}

static void sjob_read(sjob *j)
{
    char real[PATH_MAX], root[PATH_MAX];
    struct stat st;
    if (stat(j->path, &st) == 0 && S_ISDIR(st.st_mode)) {
        size_t n = strlen(j->path);
        snprintf(j->path + n, sizeof j->path - n, "%sindex.html",
                 n && j->path[n - 1] == '/' ? "" : "/");
    }
    if (!realpath(j->path, real) || !realpath(g_gw.web_dir, root)) {
        j->status = 404;
        return;
    }
    size_t rl = strlen(root);
    if (strncmp(real, root, rl) != 0 || (real[rl] != '/' && real[rl] != '\0')) {
        j->status = 403;
        return;
    }
    int fd = open(real, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0) close(fd);
        j->status = 404;
        return;
    }
    snprintf(j->etag, sizeof j->etag, "\"%llx-%llx\"", (unsigned long long)st.st_size,
             (unsigned long long)st.st_mtime);
    j->ctype = content_type(real);
    if (j->inm[0] && strcmp(j->inm, j->etag) == 0) {
        close(fd);
        j->status = 304;
        return;
    }
    if ((size_t)st.st_size > MAX_STATIC_BYTES) {
        close(fd);
        j->status = 500;
        return;
    }
    j->body = ag_malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, j->body + got, (size_t)st.st_size - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got != (size_t)st.st_size) {
        j->status = 500;
        return;
    }
    j->len = got;
    j->status = 200;
}

static void sjob_run(void *arg)
{
    sjob *j = arg;
    sjob_read(j);
    if (ag_loop_post(j->loop, sjob_answer, j) < 0) {
        /* the loop stopped: nobody will answer */
    }
}

static bool safe_path(const char *p)
{
    if (p[0] != '/') return false;
    for (const char *s = p; *s; s++) {
        if (*s == '%' || *s == '\\' || (unsigned char)*s < 0x20) return false;
        if (s[0] == '/' && s[1] == '.' && (s[2] == '.' || s[2] == '/' || s[2] == '\0'))
            return false; /* "/..", "/./", hidden files "/.x" pass */
    }
    return true;
}

bool gw_static_serve(ag_http_req *req, ag_http_res *res, const gw_config *c)
{
    const char *path = ag_req_path(req);
    if (!safe_path(path)) {
        gw_common_headers(req, res, c);
        ag_res_error(res, 404, "NOT_FOUND", "no such page", NULL);
        ag_res_send(res);
        return true;
    }
    sjob *j = ag_calloc(1, sizeof *j);
    j->req = req;
    j->res = res;
    j->loop = ag_req_loop(req);
    gw_config_ref((gw_config *)c);
    j->cfg = c;
    snprintf(j->path, sizeof j->path, "%s%s", g_gw.web_dir, path);
    const char *inm = ag_req_header(req, "If-None-Match");
    if (inm) snprintf(j->inm, sizeof j->inm, "%s", inm);
    ag_res_on_abort(res, sjob_abort, j);
    if (ag_pool_submit(ag_service_pool(g_gw.svc), sjob_run, j) < 0) {
        ag_res_on_abort(res, NULL, NULL);
        gw_config_unref((gw_config *)c);
        ag_free(j);
        ag_res_error(res, 503, "OVERLOADED", "the gateway is busy; retry shortly", NULL);
        ag_res_send(res);
    }
    return true;
}
