/* json.c — JSON request bodies and field validation (see agora/json.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agora/json.h"
#include "agora/log.h"

/* A spooled body, read with pread(2) as jansson asks for more. */
typedef struct spool_src {
    int fd;
    uint64_t off, size;
} spool_src;

static size_t read_spool(void *buf, size_t len, void *ud)
{
    spool_src *s = ud;
    if (s->off >= s->size) return 0;
    if (len > s->size - s->off) len = (size_t)(s->size - s->off);
    ssize_t n;
    do {
        n = pread(s->fd, buf, len, (off_t)s->off);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return (size_t)-1;
    s->off += (uint64_t)n;
    return (size_t)n;
}

int ag_req_json_parse(const ag_http_req *req, json_t **out, json_error_t *err)
{
    int fd;
    uint64_t size = 0;
    json_t *root;
    if (ag_req_body_file(req, &fd, &size) == 0) {
        if (size == 0) return AG_ENOTFOUND;
        spool_src src = {.fd = fd, .off = 0, .size = size};
        root = json_load_callback(read_spool, &src, JSON_REJECT_DUPLICATES, err);
    } else {
        size_t len;
        const char *body = ag_req_body(req, &len);
        if (len == 0) return AG_ENOTFOUND;
        root = json_loadb(body, len, JSON_REJECT_DUPLICATES, err);
    }
    if (!root) return AG_EINVAL;
    *out = root;
    return 0;
}

int ag_req_json(ag_http_req *req, ag_http_res *res, json_t **out)
{
    if (!ag_req_is_content_type(req, "application/json")) {
        ag_res_error(res, 415, "UNSUPPORTED_MEDIA_TYPE",
                     "the request body must be application/json", NULL);
        return AG_EINVAL;
    }
    json_error_t jerr;
    int rc = ag_req_json_parse(req, out, &jerr);
    if (rc == AG_ENOTFOUND) {
        ag_res_error(res, 400, "MALFORMED_JSON", "the request body is empty", NULL);
        return AG_EINVAL;
    }
    if (rc < 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "malformed JSON at line %d, column %d: %s", jerr.line,
                 jerr.column, jerr.text);
        ag_res_error(res, 400, "MALFORMED_JSON", msg, NULL);
        return AG_EINVAL;
    }
    return 0;
}

void ag_v_init(ag_validator *v)
{
    v->details = json_array();
    v->first[0] = '\0';
}

void ag_v_release(ag_validator *v)
{
    json_decref(v->details);
    v->details = NULL;
}

bool ag_v_ok(const ag_validator *v)
{
    return json_array_size(v->details) == 0;
}

void ag_v_fail(ag_validator *v, const char *field, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!v->first[0]) snprintf(v->first, sizeof v->first, "%s", msg);
    json_array_append_new(v->details, json_pack("{s:s, s:s}", "field", field, "message", msg));
}

/* The field's value, or NULL after recording "is required" when needed. */
static json_t *field_of(ag_validator *v, json_t *obj, const char *field, unsigned flags)
{
    json_t *x = json_is_object(obj) ? json_object_get(obj, field) : NULL;
    if (!x || (json_is_null(x) && (flags & AG_V_NULLABLE))) {
        if (flags & AG_V_REQUIRED && !(x && (flags & AG_V_NULLABLE)))
            ag_v_fail(v, field, "%s is required", field);
        return NULL;
    }
    return x;
}

static size_t utf8_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80) n++;
    return n;
}

/* A count (characters, items) within [min, max] (max 0: no bound), or a
 * problem "<field> must <verb> [at least|at most] N [to M] <what>". */
static bool count_ok(ag_validator *v, const char *field, size_t n, size_t min, size_t max,
                     const char *verb, const char *what)
{
    if (n >= min && (!max || n <= max)) return true;
    if (min > 0 && max)
        ag_v_fail(v, field, "%s must %s %zu to %zu %s", field, verb, min, max, what);
    else if (max)
        ag_v_fail(v, field, "%s must %s at most %zu %s", field, verb, max, what);
    else
        ag_v_fail(v, field, "%s must %s at least %zu %s", field, verb, min, what);
    return false;
}

const char *ag_v_str(ag_validator *v, json_t *obj, const char *field, unsigned flags,
                     size_t min_len, size_t max_len)
{
    json_t *x = field_of(v, obj, field, flags);
    if (!x) return NULL;
    if (!json_is_string(x)) {
        ag_v_fail(v, field, "%s must be a string", field);
        return NULL;
    }
    const char *s = json_string_value(x);
    if (strlen(s) != json_string_length(x)) {
        ag_v_fail(v, field, "%s must not contain NUL characters", field);
        return NULL;
    }
    return count_ok(v, field, utf8_len(s), min_len, max_len, "be", "characters long") ? s : NULL;
}

bool ag_v_int(ag_validator *v, json_t *obj, const char *field, unsigned flags, long long min,
              long long max, long long *out)
{
    json_t *x = field_of(v, obj, field, flags);
    if (!x) return false;
    if (!json_is_integer(x)) {
        ag_v_fail(v, field, "%s must be an integer", field);
        return false;
    }
    long long n = json_integer_value(x);
    if (n < min || n > max) {
        ag_v_fail(v, field, "%s must be between %lld and %lld", field, min, max);
        return false;
    }
    *out = n;
    return true;
}

bool ag_v_bool(ag_validator *v, json_t *obj, const char *field, unsigned flags, bool *out)
{
    json_t *x = field_of(v, obj, field, flags);
    if (!x) return false;
    if (!json_is_boolean(x)) {
        ag_v_fail(v, field, "%s must be true or false", field);
        return false;
    }
    *out = json_is_true(x);
    return true;
}

json_t *ag_v_object(ag_validator *v, json_t *obj, const char *field, unsigned flags)
{
    json_t *x = field_of(v, obj, field, flags);
    if (!x) return NULL;
    if (!json_is_object(x)) {
        ag_v_fail(v, field, "%s must be an object", field);
        return NULL;
    }
    return x;
}

json_t *ag_v_array(ag_validator *v, json_t *obj, const char *field, unsigned flags,
                   size_t min_items, size_t max_items)
{
    json_t *x = field_of(v, obj, field, flags);
    if (!x) return NULL;
    if (!json_is_array(x)) {
        ag_v_fail(v, field, "%s must be an array", field);
        return NULL;
    }
    return count_ok(v, field, json_array_size(x), min_items, max_items, "have", "items") ? x : NULL;
}

const char *ag_v_email(ag_validator *v, json_t *obj, const char *field, unsigned flags)
{
    size_t before = json_array_size(v->details);
    const char *s = ag_v_str(v, obj, field, flags, 3, 254);
    if (!s) return NULL;
    const char *at = strchr(s, '@');
    bool ok = at && at != s && !strchr(at + 1, '@') && strchr(at + 1, '.') && at[1] != '.' &&
              s[strlen(s) - 1] != '.' && !strpbrk(s, " \t\r\n\"<>(),;:\\[]");
    if (!ok) {
        if (json_array_size(v->details) == before)
            ag_v_fail(v, field, "%s must be a valid e-mail address", field);
        return NULL;
    }
    return s;
}

json_t *ag_req_json_object(ag_http_req *req, ag_http_res *res, ag_validator *v,
                           const char *const *allowed)
{
    json_t *body;
    if (ag_req_json(req, res, &body) < 0) return NULL;
    ag_v_init(v);
    ag_v_fields(v, body, allowed);
    return body;
}

bool ag_json_int_of(const json_t *v, int64_t min, int64_t *out)
{
    if (json_is_integer(v)) {
        if (json_integer_value(v) < min) return false;
        *out = json_integer_value(v);
        return true;
    }
    const char *s = json_string_value(v);
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (*end || errno || x < min) return false;
    *out = x;
    return true;
}

bool ag_v_fields(ag_validator *v, json_t *obj, const char *const *allowed)
{
    if (!json_is_object(obj)) {
        ag_v_fail(v, "", "the body must be a JSON object");
        return false;
    }
    if (allowed) ag_v_only_fields(v, obj, NULL, allowed);
    return true;
}

bool ag_req_page(ag_http_req *req, ag_http_res *res, int64_t def_limit, int64_t max_limit,
                 int64_t *page, int64_t *limit)
{
    ag_validator v;
    ag_v_init(&v);
    *page = ag_v_query_int(&v, req, "page", 1, 1, 1000000);
    *limit = ag_v_query_int(&v, req, "limit", def_limit, 1, max_limit);
    return ag_v_passed(&v, res, NULL);
}

void ag_res_internal(ag_http_req *req, ag_http_res *res, const char *what, int rc)
{
    ag_error(what, AG_FERR(rc), AG_FS("requestId", ag_req_id(req)));
    ag_res_error(res, 500, "INTERNAL", "internal error", NULL);
}

void ag_res_validation(ag_http_res *res, ag_validator *v)
{
    json_t *details = v->details;
    v->details = NULL;
    ag_res_error(res, 422, "VALIDATION_FAILED", v->first[0] ? v->first : "validation failed",
                 details);
}

bool ag_v_passed(ag_validator *v, ag_http_res *res, json_t *body)
{
    if (ag_v_ok(v)) {
        ag_v_release(v);
        return true;
    }
    ag_res_validation(res, v);
    ag_v_release(v);
    json_decref(body);
    return false;
}

void ag_res_page_rc(ag_http_req *req, ag_http_res *res, int rc, json_t *data, int64_t page,
                    int64_t limit, int64_t total, const char *what)
{
    if (rc < 0) {
        json_decref(data);
        ag_res_internal(req, res, what, rc);
        return;
    }
    ag_res_page(res, data, page, limit, total);
}

bool ag_res_rc(ag_http_req *req, ag_http_res *res, int rc, const char *not_found, const char *what)
{
    if (rc >= 0) return false;
    if (rc == AG_ENOTFOUND && not_found)
        ag_res_error(res, 404, "NOT_FOUND", not_found, NULL);
    else
        ag_res_internal(req, res, what, rc);
    return true;
}

void ag_v_only_fields(ag_validator *v, json_t *obj, const char *prefix, const char *const *allowed)
{
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(key, *a) == 0;
        if (!ok) ag_v_fail(v, key, "%s%.64s is not a known field", prefix ? prefix : "", key);
    }
}

int64_t ag_v_query_int(ag_validator *v, ag_http_req *req, const char *name, int64_t def,
                       int64_t min, int64_t max)
{
    const char *s = ag_req_query(req, name);
    if (!s) return def;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno || x < min || x > max) {
        ag_v_fail(v, name, "%s must be an integer between %lld and %lld", name, (long long)min,
                  (long long)max);
        return def;
    }
    return x;
}

json_t *ag_page_envelope(json_t *data, int64_t page, int64_t limit, int64_t total)
{
    return json_pack("{s:b, s:o, s:{s:I, s:I, s:I, s:I}}", "success", 1, "data", data, "pagination",
                     "page", (json_int_t)page, "limit", (json_int_t)limit, "total",
                     (json_int_t)total, "pages", (json_int_t)((total + limit - 1) / limit));
}

void ag_res_page(ag_http_res *res, json_t *data, int64_t page, int64_t limit, int64_t total)
{
    ag_res_json(res, 200, ag_page_envelope(data, page, limit, total));
}
