/*
 * router.c — a segment trie of routes (see agora/http.h).
 *
 * Each node is one path segment. A node has literal children, at most one
 * parameter child (":name") and at most one wildcard child ("*"), plus the
 * endpoints (method, handler) that end there. Matching walks the path once,
 * trying literal, then parameter, then wildcard, backtracking when a branch
 * dead-ends, so "/v1/users/me" beats "/v1/users/:id". A trailing slash is
 * ignored. The router is built before the server starts and only read after.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

typedef struct endpoint {
    char method[16];
    ag_http_handler handler;
    void *ud;
    unsigned flags;
    uint64_t body_limit;
    ag_body_policy_fn body_policy;
    void *body_policy_ud;
    ag_http_middleware check;
    void *check_ud;
    char *pattern;
    ag__route_stats *stats;
} endpoint;

typedef struct rnode {
    char *seg;
    struct rnode **kids;
    int nkids;
    struct rnode *param;
    char *param_name;
    struct rnode *wild;
    endpoint *eps;
    int neps;
} rnode;

typedef struct mw {
    ag_http_middleware fn;
    void *ud;
} mw;

struct ag_router {
    rnode root;
    mw *mws;
    int nmws;
    ag__route_stats *unmatched;
    char *spool_dir; /* NULL: from the environment */
};

ag__route_stats *ag__route_stats_new(const char *route, const char *method)
{
    ag__route_stats *s = ag_calloc(1, sizeof *s);
    s->route = route;
    snprintf(s->method, sizeof s->method, "%s", method);
    return s;
}

void ag__router_free_stats(ag__route_stats *s)
{
    ag_free(s);
}

ag_router *ag_router_new(void)
{
    ag_router *r = ag_calloc(1, sizeof *r);
    r->unmatched = ag__route_stats_new("(unmatched)", "");
    return r;
}

static void node_free(rnode *n, bool self)
{
    for (int i = 0; i < n->nkids; i++) node_free(n->kids[i], true);
    ag_free(n->kids);
    if (n->param) node_free(n->param, true);
    if (n->wild) node_free(n->wild, true);
    for (int i = 0; i < n->neps; i++) {
        ag_free(n->eps[i].pattern);
        ag__router_free_stats(n->eps[i].stats);
    }
    ag_free(n->eps);
    ag_free(n->seg);
    ag_free(n->param_name);
    if (self) ag_free(n);
}

void ag_router_free(ag_router *r)
{
    if (!r) return;
    node_free(&r->root, false);
    ag_free(r->mws);
    ag__router_free_stats(r->unmatched);
    ag_free(r->spool_dir);
    ag_free(r);
}

ag__route_stats *ag__router_unmatched_stats(const ag_router *r)
{
    return r->unmatched;
}

int ag_router_use(ag_router *r, ag_http_middleware fn, void *ud)
{
    if (!fn) return AG_EINVAL;
    r->mws = ag_realloc(r->mws, (size_t)(r->nmws + 1) * sizeof *r->mws);
    r->mws[r->nmws++] = (mw){fn, ud};
    return 0;
}

int ag__router_run_middleware(const ag_router *r, ag_http_req *req, ag_http_res *res)
{
    for (int i = 0; i < r->nmws; i++)
        if (r->mws[i].fn(req, res, r->mws[i].ud) != AG_NEXT) return AG_STOP;
    return AG_NEXT;
}

static bool valid_method(const char *m)
{
    size_t n = strlen(m);
    if (n == 0 || n >= 16) return false;
    for (size_t i = 0; i < n; i++)
        if (m[i] < 'A' || m[i] > 'Z') return false;
    return true;
}

/* Next segment of `p` (after leading '/'): sets *seg, *len; returns the rest. */
static const char *next_seg(const char *p, const char **seg, size_t *len)
{
    while (*p == '/') p++;
    const char *s = p;
    while (*p && *p != '/') p++;
    *seg = s;
    *len = (size_t)(p - s);
    return p;
}

int ag_router_add(ag_router *r, const char *method, const char *pattern, ag_http_handler h,
                  void *ud, unsigned flags)
{
    if (!method || !pattern || pattern[0] != '/' || !h || !valid_method(method)) return AG_EINVAL;
    rnode *n = &r->root;
    const char *p = pattern;
    for (;;) {
        const char *seg;
        size_t len;
        p = next_seg(p, &seg, &len);
        if (len == 0) break;
        if (seg[0] == '*') {
            if (len != 1 || *next_seg(p, &seg, &len) != '\0' || len != 0) return AG_EINVAL;
            if (!n->wild) n->wild = ag_calloc(1, sizeof(rnode));
            n = n->wild;
            break;
        }
        if (seg[0] == ':') {
            if (len == 1) return AG_EINVAL;
            if (n->param && (strlen(n->param_name) != len - 1 ||
                             strncmp(n->param_name, seg + 1, len - 1) != 0))
                return AG_EINVAL; /* one parameter name per position */
            if (!n->param) {
                n->param = ag_calloc(1, sizeof(rnode));
                n->param_name = ag_strndup(seg + 1, len - 1);
            }
            n = n->param;
            continue;
        }
        rnode *kid = NULL;
        for (int i = 0; i < n->nkids; i++)
            if (strlen(n->kids[i]->seg) == len && memcmp(n->kids[i]->seg, seg, len) == 0)
                kid = n->kids[i];
        if (!kid) {
            kid = ag_calloc(1, sizeof *kid);
            kid->seg = ag_strndup(seg, len);
            n->kids = ag_realloc(n->kids, (size_t)(n->nkids + 1) * sizeof *n->kids);
            n->kids[n->nkids++] = kid;
        }
        n = kid;
    }
    for (int i = 0; i < n->neps; i++)
        if (strcmp(n->eps[i].method, method) == 0) return AG_EEXISTS;
    n->eps = ag_realloc(n->eps, (size_t)(n->neps + 1) * sizeof *n->eps);
    endpoint *e = &n->eps[n->neps++];
    memset(e, 0, sizeof *e);
    memcpy(e->method, method, strlen(method) + 1);
    e->handler = h;
    e->ud = ud;
    e->flags = flags;
    e->pattern = ag_strdup(pattern);
    e->stats = ag__route_stats_new(e->pattern, e->method);
    return 0;
}

/* The endpoint added as exactly `method` `pattern`, or NULL. Parameter
 * names must match too: ":id" and ":key" at one position cannot coexist. */
static endpoint *endpoint_exact(ag_router *r, const char *method, const char *pattern)
{
    if (!method || !pattern || pattern[0] != '/') return NULL;
    rnode *n = &r->root;
    const char *p = pattern;
    for (;;) {
        const char *seg;
        size_t len;
        p = next_seg(p, &seg, &len);
        if (len == 0) break;
        if (seg[0] == '*') {
            n = n->wild;
        } else if (seg[0] == ':') {
            n = n->param;
        } else {
            rnode *kid = NULL;
            for (int i = 0; i < n->nkids; i++)
                if (strlen(n->kids[i]->seg) == len && memcmp(n->kids[i]->seg, seg, len) == 0)
                    kid = n->kids[i];
            n = kid;
        }
        if (!n) return NULL;
    }
    for (int i = 0; i < n->neps; i++)
        if (strcmp(n->eps[i].method, method) == 0) return &n->eps[i];
    return NULL;
}

int ag_router_set_body_limit(ag_router *r, const char *method, const char *pattern,
                             uint64_t max_bytes)
{
    endpoint *e = endpoint_exact(r, method, pattern);
    if (!e) return AG_ENOTFOUND;
    e->body_limit = max_bytes;
    return 0;
}

int ag_router_set_check(ag_router *r, const char *method, const char *pattern,
                        ag_http_middleware fn, void *ud)
{
    endpoint *e = endpoint_exact(r, method, pattern);
    if (!e) return AG_ENOTFOUND;
    e->check = fn;
    e->check_ud = ud;
    return 0;
}

int ag_router_set_body_policy(ag_router *r, const char *method, const char *pattern,
                              ag_body_policy_fn fn, void *ud)
{
    endpoint *e = endpoint_exact(r, method, pattern);
    if (!e) return AG_ENOTFOUND;
    e->body_policy = fn;
    e->body_policy_ud = ud;
    return 0;
}

void ag_router_set_spool_dir(ag_router *r, const char *dir)
{
    ag_free(r->spool_dir);
    r->spool_dir = dir && *dir ? ag_strdup(dir) : NULL;
}

const char *ag_router_spool_dir(const ag_router *r)
{
    if (r->spool_dir) return r->spool_dir;
    const char *d = getenv("AGORA_HTTP_SPOOL_DIR");
    if (!d || !*d) d = getenv("TMPDIR");
    return d && *d ? d : "/tmp";
}

/* The endpoint of `n` that answers `method` (GET answers HEAD), or NULL. */
static const endpoint *endpoint_for(const rnode *n, const char *method)
{
    const endpoint *get = NULL;
    for (int i = 0; i < n->neps; i++) {
        if (strcmp(n->eps[i].method, method) == 0) return &n->eps[i];
        if (strcmp(n->eps[i].method, "GET") == 0) get = &n->eps[i];
    }
    return strcmp(method, "HEAD") == 0 ? get : NULL;
}

/* Walks the trie for `p`, trying literal, parameter, then wildcard children
 * and backtracking until a node answers `method`. Returns that node with the
 * parameters in `m`, or NULL; `*other` gets the first node met that ends the
 * path with endpoints for other methods (for 405 and Allow). */
static const rnode *walk(const rnode *n, const char *p, const char *method, ag_route_match *m,
                         const rnode **other)
{
    const char *seg;
    size_t len;
    const char *rest = next_seg(p, &seg, &len);
    if (len == 0) {
        if (endpoint_for(n, method)) return n;
        if (n->neps > 0 && !*other) *other = n;
        /* The path ends here, but a wildcard child may still take an
         * empty rest. */
        if (!n->wild) return NULL;
    }
    const int max = (int)(sizeof m->params / sizeof m->params[0]);
    if (len > 0) {
        for (int i = 0; i < n->nkids; i++) {
            const rnode *k = n->kids[i];
            if (strlen(k->seg) == len && memcmp(k->seg, seg, len) == 0) {
                const rnode *found = walk(k, rest, method, m, other);
                if (found) return found;
            }
        }
        if (n->param && m->nparams < max) {
            int saved = m->nparams;
            m->params[m->nparams].name = n->param_name;
            m->params[m->nparams].value = seg;
            m->params[m->nparams].len = len;
            m->nparams++;
            const rnode *found = walk(n->param, rest, method, m, other);
            if (found) return found;
            m->nparams = saved;
        }
    }
    if (n->wild && m->nparams < max) {
        size_t wl = strlen(seg);
        while (wl > 0 && seg[wl - 1] == '/') wl--; /* drop a trailing slash */
        if (endpoint_for(n->wild, method)) {
            m->params[m->nparams].name = "*";
            m->params[m->nparams].value = seg;
            m->params[m->nparams].len = wl;
            m->nparams++;
            return n->wild;
        }
        if (n->wild->neps > 0 && !*other) *other = n->wild;
    }
    return NULL;
}

static void allow_append(char *allow, size_t n, const char *m)
{
    size_t used = strlen(allow);
    snprintf(allow + used, n - used, "%s%s", used ? ", " : "", m);
}

int ag_router_match(const ag_router *r, const char *method, const char *path, ag_route_match *m)
{
    m->nparams = 0;
    m->allow[0] = '\0';
    m->pattern = NULL;
    m->handler = NULL;
    m->stats = NULL;
    m->flags = 0;
    m->body_limit = 0;
    m->body_policy = NULL;
    m->check = NULL;
    const rnode *other = NULL;
    const rnode *n = walk(&r->root, path, method, m, &other);
    if (n) {
        const endpoint *e = endpoint_for(n, method);
        m->pattern = e->pattern;
        m->handler = e->handler;
        m->ud = e->ud;
        m->flags = e->flags;
        m->body_limit = e->body_limit;
        m->body_policy = e->body_policy;
        m->body_policy_ud = e->body_policy_ud;
        m->check = e->check;
        m->check_ud = e->check_ud;
        m->stats = e->stats;
        return 0;
    }
    m->nparams = 0;
    if (!other) return AG_ENOTFOUND;
    bool has_get = false, has_head = false, has_options = false;
    for (int i = 0; i < other->neps; i++) {
        allow_append(m->allow, sizeof m->allow, other->eps[i].method);
        has_get |= strcmp(other->eps[i].method, "GET") == 0;
        has_head |= strcmp(other->eps[i].method, "HEAD") == 0;
        has_options |= strcmp(other->eps[i].method, "OPTIONS") == 0;
    }
    if (has_get && !has_head) allow_append(m->allow, sizeof m->allow, "HEAD");
    if (!has_options) allow_append(m->allow, sizeof m->allow, "OPTIONS");
    return AG_ENOTFOUND;
}

/* ---- OpenAPI ---------------------------------------------------------------- */

static void lower_copy(char *dst, size_t n, const char *src)
{
    size_t i = 0;
    for (; src[i] && i < n - 1; i++) dst[i] = (char)(src[i] >= 'A' && src[i] <= 'Z' ? src[i] + 32 : src[i]);
    dst[i] = '\0';
}

static void openapi_walk(const rnode *n, ag_buf *path, json_t *params, json_t *paths)
{
    if (n->neps > 0) {
        json_t *item = json_object();
        for (int i = 0; i < n->neps; i++) {
            char m[16];
            lower_copy(m, sizeof m, n->eps[i].method);
            json_t *responses = json_pack(
                "{s:{s:s}, s:{s:s}}", "200", "description", "success: {\"success\": true, \"data\": ...}",
                "default", "description", "error envelope: {\"success\": false, \"error\": {\"code\", \"message\"}, \"requestId\"}");
            json_t *op = json_pack("{s:o}", "responses", responses);
            if (json_array_size(params)) json_object_set(op, "parameters", params);
            json_object_set_new(item, m, op);
        }
        json_object_set_new(paths, path->len ? path->data : "/", item);
    }
    size_t mark = path->len;
    for (int i = 0; i < n->nkids; i++) {
        ag_buf_printf(path, "/%s", n->kids[i]->seg);
        openapi_walk(n->kids[i], path, params, paths);
        path->len = mark;
        path->data[mark] = '\0';
    }
    if (n->param) {
        ag_buf_printf(path, "/{%s}", n->param_name);
        json_t *p2 = json_copy(params);
        json_array_append_new(p2, json_pack("{s:s, s:s, s:b, s:{s:s}}", "name", n->param_name,
                                            "in", "path", "required", 1, "schema", "type",
                                            "string"));
        openapi_walk(n->param, path, p2, paths);
        json_decref(p2);
        path->len = mark;
        path->data[mark] = '\0';
    }
    if (n->wild) {
        ag_buf_appends(path, "/{path}");
        json_t *p2 = json_copy(params);
        json_array_append_new(p2, json_pack("{s:s, s:s, s:b, s:{s:s}}", "name", "path", "in",
                                            "path", "required", 1, "schema", "type", "string"));
        openapi_walk(n->wild, path, p2, paths);
        json_decref(p2);
        path->len = mark;
        path->data[mark] = '\0';
    }
}

json_t *ag_router_openapi(const ag_router *r, const char *title, const char *version)
{
    json_t *paths = json_object();
    json_t *params = json_array();
    ag_buf path;
    ag_buf_init(&path, 0);
    ag_buf_appends(&path, "");
    openapi_walk(&r->root, &path, params, paths);
    ag_buf_release(&path);
    json_decref(params);
    return json_pack("{s:s, s:{s:s, s:s}, s:o}", "openapi", "3.0.3", "info", "title", title,
                     "version", version, "paths", paths);
}
