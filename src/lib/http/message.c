/*
 * message.c — request accessors and response builders (see agora/http.h).
 * Everything here runs on whichever thread handles the request; the server
 * (server.c) owns parsing, dispatch and sending.
 */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "agora/log.h"
#include "internal.h"

/* ---- Requests ------------------------------------------------------------ */

const char *ag_req_method(const ag_http_req *r)
{
    return r->method;
}

const char *ag_req_path(const ag_http_req *r)
{
    return r->path;
}

const char *ag_req_target(const ag_http_req *r)
{
    return r->target;
}

const char *ag_req_route(const ag_http_req *r)
{
    return r->match.pattern;
}

static int hexv(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

char *ag__url_decode(ag_arena *a, const char *s, size_t n, bool plus)
{
    char *out = ag_arena_alloc(a, n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n) {
            int hi = hexv((unsigned char)s[i + 1]);
            int lo = hexv((unsigned char)s[i + 2]);
            if (hi >= 0 && lo >= 0) {
                *o++ = (char)(hi << 4 | lo);
                i += 2;
                continue;
            }
        }
        *o++ = plus && s[i] == '+' ? ' ' : s[i];
    }
    *o = '\0';
    return out;
}

const char *ag_req_param(const ag_http_req *cr, const char *name)
{
    ag_http_req *r = (ag_http_req *)cr; /* decoding caches into the arena */
    for (int i = 0; i < r->match.nparams; i++) {
        if (strcmp(r->match.params[i].name, name) != 0) continue;
        if (!r->param_values)
            r->param_values = ag_arena_calloc(&r->arena, sizeof(char *) * (size_t)r->match.nparams);
        if (!r->param_values[i])
            r->param_values[i] =
                ag__url_decode(&r->arena, r->match.params[i].value, r->match.params[i].len, false);
        return r->param_values[i];
    }
    return NULL;
}

const char *ag_req_query(ag_http_req *r, const char *name)
{
    if (!r->query) return NULL;
    size_t nlen = strlen(name);
    const char *p = r->query;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t plen = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', plen);
        size_t klen = eq ? (size_t)(eq - p) : plen;
        char *key = ag__url_decode(&r->arena, p, klen, true);
        if (strlen(key) == nlen && memcmp(key, name, nlen) == 0)
            return eq ? ag__url_decode(&r->arena, eq + 1, plen - klen - 1, true) : "";
        p += plen;
        if (*p == '&') p++;
    }
    return NULL;
}

const char *ag_req_header(const ag_http_req *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0) return r->headers[i].value;
    return NULL;
}

size_t ag_req_header_count(const ag_http_req *r)
{
    return r->nheaders;
}

void ag_req_header_at(const ag_http_req *r, size_t i, const char **name, const char **value)
{
    *name = i < r->nheaders ? r->headers[i].name : NULL;
    *value = i < r->nheaders ? r->headers[i].value : NULL;
}

const char *ag_req_body(const ag_http_req *r, size_t *len)
{
    if (len) *len = r->body_len;
    return r->body ? r->body : "";
}

int ag_req_body_file(const ag_http_req *r, int *fd, uint64_t *size)
{
    if (r->body_fd < 0) return AG_ENOTFOUND;
    if (fd) *fd = r->body_fd;
    if (size) *size = r->body_file_size;
    return 0;
}

const char *ag_req_id(const ag_http_req *r)
{
    return r->id;
}

ag_deadline ag_req_deadline(const ag_http_req *r)
{
    return r->deadline;
}

const char *ag_req_remote_addr(const ag_http_req *r)
{
    return r->remote ? r->remote : "";
}

ag_arena *ag_req_arena(ag_http_req *r)
{
    return &r->arena;
}

void ag_req_set_local(ag_http_req *r, const void *key, void *value)
{
    for (size_t i = 0; i < r->nlocals; i++) {
        if (r->locals[i].key == key) {
            r->locals[i].value = value;
            return;
        }
    }
    if (r->nlocals < sizeof r->locals / sizeof r->locals[0])
        r->locals[r->nlocals++] = (ag__local){key, value};
    else
        ag_error("too many request locals; value dropped");
}

void *ag_req_local(const ag_http_req *r, const void *key)
{
    for (size_t i = 0; i < r->nlocals; i++)
        if (r->locals[i].key == key) return r->locals[i].value;
    return NULL;
}

bool ag_req_is_content_type(const ag_http_req *r, const char *type)
{
    const char *ct = ag_req_header(r, "Content-Type");
    if (!ct) return false;
    while (*ct == ' ') ct++;
    size_t len = strcspn(ct, "; \t");
    size_t tlen = strlen(type);
    if (len == tlen && strncasecmp(ct, type, tlen) == 0) return true;
    /* "application/problem+json" matches "application/json". */
    const char *slash = strchr(type, '/');
    const char *plus = memchr(ct, '+', len);
    if (slash && plus && strncasecmp(ct, type, (size_t)(slash - type) + 1) == 0 &&
        (size_t)(ct + len - plus - 1) == strlen(slash + 1) &&
        strncasecmp(plus + 1, slash + 1, strlen(slash + 1)) == 0)
        return true;
    return false;
}

/* ---- Responses ------------------------------------------------------------ */

void ag__res_init(ag_http_res *res, ag_http_req *req)
{
    memset(res, 0, sizeof *res);
    res->req = req;
    res->status = 200;
}

void ag__res_release(ag_http_res *res)
{
    ag_free(res->body);
    res->body = NULL;
    if (res->stream) {
        ag__stream_unref(res->stream);
        res->stream = NULL;
    }
}

void ag__stream_unref(ag__stream *st)
{
    if (--st->loop_refs > 0) return;
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cond);
    ag_free(st);
}

void ag_res_status(ag_http_res *res, int status)
{
    res->status = status;
}

int ag_res_get_status(const ag_http_res *res)
{
    return res->status;
}

static bool reserved_header(const char *name)
{
    return strcasecmp(name, "Content-Length") == 0 || strcasecmp(name, "Transfer-Encoding") == 0 ||
           strcasecmp(name, "Connection") == 0 || strcasecmp(name, "Date") == 0;
}

static bool header_safe(const char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n') return false;
    return true;
}

/* Sets the content type unless it would break the header block. */
static void set_content_type(ag_http_res *res, const char *content_type)
{
    if (!content_type) return;
    if (!header_safe(content_type)) {
        ag_error("content type with CR/LF dropped", AG_FS("requestId", res->req->id));
        return;
    }
    res->content_type = ag_arena_strdup(&res->req->arena, content_type);
}

void ag_res_header(ag_http_res *res, const char *name, const char *value)
{
    if (reserved_header(name)) return;
    if (!header_safe(name) || !header_safe(value)) {
        /* Header injection: never let a value end the header block. */
        ag_error("response header with CR/LF dropped", AG_FS("header", name));
        return;
    }
    if (strcasecmp(name, "Content-Type") == 0) {
        set_content_type(res, value);
        return;
    }
    if (res->nheaders == res->cap_headers) {
        size_t cap = res->cap_headers ? res->cap_headers * 2 : 8;
        ag__hdr *h = ag_arena_alloc(&res->req->arena, cap * sizeof *h);
        if (res->nheaders) memcpy(h, res->headers, res->nheaders * sizeof *h);
        res->headers = h;
        res->cap_headers = cap;
    }
    res->headers[res->nheaders++] =
        (ag__hdr){ag_arena_strdup(&res->req->arena, name), ag_arena_strdup(&res->req->arena, value)};
}

const char *ag__res_header(const ag_http_res *res, const char *name)
{
    for (size_t i = 0; i < res->nheaders; i++)
        if (strcasecmp(res->headers[i].name, name) == 0) return res->headers[i].value;
    return NULL;
}

void ag_res_body_take(ag_http_res *res, int status, const char *content_type, char *data,
                      size_t len)
{
    ag_free(res->body);
    res->status = status;
    res->body = data;
    res->body_len = len;
    set_content_type(res, content_type);
}

void ag_res_body(ag_http_res *res, int status, const char *content_type, const void *data,
                 size_t len)
{
    char *copy = ag_malloc(len + 1);
    if (len) memcpy(copy, data, len);
    copy[len] = '\0';
    ag_res_body_take(res, status, content_type, copy, len);
}

void ag_res_json(ag_http_res *res, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(body);
    if (!text) {
        ag_error("cannot serialise JSON response", AG_FS("requestId", res->req->id));
        static const char fallback[] =
            "{\"success\":false,\"error\":{\"code\":\"INTERNAL\",\"message\":\"internal error\"}}";
        ag_res_body(res, 500, "application/json", fallback, sizeof fallback - 1);
        return;
    }
    /* jansson allocates with malloc (we never replace its allocator), so the
     * text can be handed over as an ag_malloc'ed buffer. */
    ag_res_body_take(res, status, "application/json", text, strlen(text));
}

void ag_res_ok(ag_http_res *res, int status, json_t *data)
{
    json_t *env = json_object();
    json_object_set_new(env, "success", json_true());
    json_object_set_new(env, "data", data ? data : json_null());
    ag_res_json(res, status, env);
}

void ag_res_error(ag_http_res *res, int status, const char *code, const char *message,
                  json_t *details)
{
    json_t *err = json_object();
    json_object_set_new(err, "code", json_string(code ? code : "ERROR"));
    json_object_set_new(err, "message", json_string(message ? message : ag_http_reason(status)));
    if (details) json_object_set_new(err, "details", details);
    json_t *env = json_object();
    json_object_set_new(env, "success", json_false());
    json_object_set_new(env, "error", err);
    json_object_set_new(env, "requestId", json_string(res->req->id));
    if ((status == 429 || status == 503) && !ag__res_header(res, "Retry-After"))
        ag_res_header(res, "Retry-After", "1");
    ag_res_json(res, status, env);
}

int ag_res_stream_begin(ag_http_res *res, int status, const char *content_type)
{
    if (res->streaming) return AG_ESTATE;
    res->status = status;
    set_content_type(res, content_type);
    return ag__stream_start(res);
}

int ag_res_stream_write(ag_http_res *res, const void *data, size_t len)
{
    if (!res->streaming || res->stream_ended) return AG_ESTATE;
    if (len == 0 || res->req->head_only) return 0;
    char *chunk;
    size_t n;
    if (res->chunked) {
        char sz[24];
        int hl = snprintf(sz, sizeof sz, "%zx\r\n", len);
        n = (size_t)hl + len + 2;
        chunk = ag_malloc(n);
        memcpy(chunk, sz, (size_t)hl);
        memcpy(chunk + hl, data, len);
        memcpy(chunk + hl + len, "\r\n", 2);
    } else {
        n = len;
        chunk = ag_malloc(n);
        memcpy(chunk, data, len);
    }
    return ag__stream_send(res, chunk, n, false);
}

int ag_res_stream_end(ag_http_res *res)
{
    if (!res->streaming || res->stream_ended) return AG_ESTATE;
    res->stream_ended = true;
    if (res->chunked && !res->req->head_only) return ag__stream_send(res, ag_strdup("0\r\n\r\n"), 5, true);
    return ag__stream_send(res, NULL, 0, true);
}

const char *ag_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* ---- Range (RFC 9110 §14) ---------------------------------------------------- */

static bool digits(const char *s, size_t n, uint64_t *out)
{
    if (n == 0 || n > 19) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

int ag_http_range(const char *h, uint64_t size, uint64_t *a, uint64_t *b)
{
    if (!h || strncmp(h, "bytes=", 6) != 0) return 0;
    const char *s = h + 6;
    while (*s == ' ')
        s++;
    size_t len = strlen(s);
    while (len && s[len - 1] == ' ')
        len--;
    if (memchr(s, ',', len)) return 0; /* several ranges: the whole file */
    const char *dash = memchr(s, '-', len);
    if (!dash) return 0;
    size_t l1 = (size_t)(dash - s), l2 = len - l1 - 1;
    uint64_t first, last;
    if (l1 == 0) { /* suffix: the last n bytes */
        if (!digits(dash + 1, l2, &last)) return 0;
        if (last == 0 || size == 0) return -1;
        *a = size - (last < size ? last : size);
        *b = size - 1;
        return 1;
    }
    if (!digits(s, l1, &first)) return 0;
    if (l2 == 0) {
        last = UINT64_MAX;
    } else if (!digits(dash + 1, l2, &last) || last < first) {
        return 0;
    }
    if (first >= size) return -1;
    *a = first;
    *b = last < size - 1 ? last : size - 1;
    return 1;
}
