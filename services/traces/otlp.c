/*
 * otlp.c — an OTLP/HTTP export request in the JSON encoding (the OTLP
 * spec's "JSON Protobuf Encoding") turned into span records for store.c.
 *
 *   {"resourceSpans": [{"resource": {"attributes": [KeyValue]},
 *     "scopeSpans": [{"scope": {...}, "spans": [Span]}]}]}
 *
 * What the mapping allows is accepted: ids as hex (OTLP's exception to
 * proto3's base64), 64-bit integers as strings or numbers, enums as
 * integers (or their names), every AnyValue, absent fields as proto3
 * defaults, unknown fields ignored. A span that cannot be placed (a bad id,
 * no start time, an end before its start) is rejected on its own and
 * counted; the request is malformed only when its structure is (400).
 *
 * Runs without the store's lock: attributes, events and links become
 * compact JSON text here, so the store holds one allocation per span.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "traces.h"

#define WHY_MAX 5 /* rejection reasons kept for errorMessage */

void tr_batch_init(tr_batch *b)
{
    memset(b, 0, sizeof *b);
    ag_buf_init(&b->why, 0);
}

void tr_batch_release(tr_batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        ag_free(b->items[i].span);
    ag_free(b->items);
    ag_buf_release(&b->why);
    memset(b, 0, sizeof *b);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool tr_hex_id(const char *s, size_t len, uint8_t *out)
{
    if (!s || strlen(s) != len || len % 2) return false;
    uint8_t any = 0;
    for (size_t i = 0; i < len; i += 2) {
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i / 2] = (uint8_t)(hi << 4 | lo);
        any |= out[i / 2];
    }
    return any != 0;
}

void tr_hex(const uint8_t *id, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[id[i] >> 4];
        out[2 * i + 1] = digits[id[i] & 15];
    }
    out[2 * n] = '\0';
}

/* ---- scalars as the JSON mapping writes them ---- */

/* A fixed64 (times): absent or null is 0 (proto3's default). */
static bool u64_of(json_t *v, uint64_t *out)
{
    *out = 0;
    if (!v || json_is_null(v)) return true;
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0) return false;
        *out = (uint64_t)json_integer_value(v);
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d >= 0 && d < 18446744073709551615.0)) return false;
        *out = (uint64_t)d;
        return true;
    }
    if (!json_is_string(v)) return false;
    const char *s = json_string_value(v);
    if (!*s) return true;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9') return false;
    errno = 0;
    unsigned long long x = strtoull(s, NULL, 10);
    if (errno == ERANGE) return false;
    *out = x;
    return true;
}

/* An int64 in a string ("-12"); false unless the whole string is one. */
static bool i64_str(const char *s, long long *out)
{
    if (!*s) return false;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno == ERANGE || *end || !(s[0] == '-' || (s[0] >= '0' && s[0] <= '9'))) return false;
    *out = x;
    return true;
}

/* An enum: its number, or its name's suffix ("SPAN_KIND_SERVER"). */
static int enum_of(json_t *v, const char *prefix, const char *const *names, int n)
{
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        return x >= 0 && x < n ? (int)x : 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t pl = strlen(prefix);
        if (strncmp(s, prefix, pl) == 0) s += pl;
        for (int i = 0; i < n; i++)
            if (strcmp(s, names[i]) == 0) return i;
    }
    return 0;
}

/* ---- AnyValue and KeyValue lists ---- */

static json_t *attrs_object(json_t *list);

static json_t *number_or_string(double d, json_t *orig)
{
    if (isfinite(d)) return json_real(d);
    return json_is_string(orig) ? json_incref(orig) : json_null();
}

/* An AnyValue as plain JSON: {"stringValue":"x"} → "x", {"intValue":"7"}
 * → 7, arrays and kvlists nested, bytes as their base64 text; an empty or
 * unknown value → null. */
static json_t *any_value(json_t *v)
{
    if (!json_is_object(v)) return json_null();
    json_t *x;
    if ((x = json_object_get(v, "stringValue")) && json_is_string(x)) return json_incref(x);
    if ((x = json_object_get(v, "boolValue")) && json_is_boolean(x)) return json_incref(x);
    if ((x = json_object_get(v, "intValue"))) {
        long long i;
        if (json_is_integer(x)) return json_incref(x);
        if (json_is_string(x) && i64_str(json_string_value(x), &i)) return json_integer(i);
        if (json_is_string(x)) return json_incref(x); /* out of range: kept as text */
        if (json_is_real(x)) return number_or_string(json_real_value(x), x);
    }
    if ((x = json_object_get(v, "doubleValue"))) {
        if (json_is_number(x)) return number_or_string(json_number_value(x), x);
        if (json_is_string(x)) { /* "NaN", "Infinity", or a number in a string */
            char *end;
            double d = strtod(json_string_value(x), &end);
            if (*json_string_value(x) && !*end) return number_or_string(d, x);
            return json_incref(x);
        }
    }
    if ((x = json_object_get(v, "arrayValue")) && json_is_object(x)) {
        json_t *out = json_array(), *e;
        size_t i;
        json_t *values = json_object_get(x, "values");
        if (!json_is_array(values)) return out;
        json_array_foreach(values, i, e)
        {
            json_array_append_new(out, any_value(e));
        }
        return out;
    }
    if ((x = json_object_get(v, "kvlistValue")) && json_is_object(x))
        return attrs_object(json_object_get(x, "values"));
    if ((x = json_object_get(v, "bytesValue")) && json_is_string(x)) return json_incref(x);
    return json_null();
}

/* [{"key","value"}] → {key: value}; entries without a string key are
 * skipped; a repeated key keeps the last value. */
static json_t *attrs_object(json_t *list)
{
    json_t *out = json_object();
    if (!json_is_array(list)) return out;
    size_t i;
    json_t *kv;
    json_array_foreach(list, i, kv)
    {
        const char *k = json_string_value(json_object_get(kv, "key"));
        if (k) json_object_set_new(out, k, any_value(json_object_get(kv, "value")));
    }
    return out;
}

static const char *resource_service(json_t *resource)
{
    json_t *attrs = json_object_get(resource, "attributes");
    size_t i;
    json_t *kv;
    if (!json_is_array(attrs)) attrs = NULL;
    json_array_foreach(attrs, i, kv)
    {
        const char *k = json_string_value(json_object_get(kv, "key"));
        const char *v =
            json_string_value(json_object_get(json_object_get(kv, "value"), "stringValue"));
        if (k && v && *v && strcmp(k, "service.name") == 0) return v;
    }
    return "unknown_service"; /* OpenTelemetry's name for a resource without one */
}

/* ---- spans ---- */

static const char *const k_kinds[] = {"UNSPECIFIED", "INTERNAL", "SERVER",
                                      "CLIENT",      "PRODUCER", "CONSUMER"};
static const char *const k_codes[] = {"UNSET", "OK", "ERROR"};

static void reject(tr_batch *b, size_t r, size_t s, size_t k, const char *why)
{
    if (b->rejected++ < WHY_MAX)
        ag_buf_printf(&b->why, "%sresourceSpans[%zu].scopeSpans[%zu].spans[%zu]: %s",
                      b->why.len ? "; " : "", r, s, k, why);
}

/* Appends a NUL-terminated piece to the span's text; its offset. */
static uint32_t put(ag_buf *t, const char *s)
{
    uint32_t at = (uint32_t)t->len;
    ag_buf_append(t, s, strlen(s) + 1);
    return at;
}

static uint32_t put_json(ag_buf *t, json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(v);
    uint32_t at = put(t, s ? s : "null");
    free(s); /* jansson's malloc */
    return at;
}

/* [{name, timeUnixNano, attributes}] or NULL when there are none. */
static json_t *events_json(json_t *list)
{
    if (!json_is_array(list) || json_array_size(list) == 0) return NULL;
    json_t *out = json_array(), *e;
    size_t i;
    json_array_foreach(list, i, e)
    {
        uint64_t t;
        char ts[24] = "0";
        if (u64_of(json_object_get(e, "timeUnixNano"), &t))
            snprintf(ts, sizeof ts, "%llu", (unsigned long long)t);
        const char *name = json_string_value(json_object_get(e, "name"));
        json_array_append_new(out, json_pack("{s:s, s:s, s:o}", "name", name ? name : "",
                                             "timeUnixNano", ts, "attributes",
                                             attrs_object(json_object_get(e, "attributes"))));
    }
    return out;
}

/* [{traceId, spanId, attributes}] (ids lower case) or NULL. */
static json_t *links_json(json_t *list)
{
    if (!json_is_array(list) || json_array_size(list) == 0) return NULL;
    json_t *out = json_array(), *l;
    size_t i;
    json_array_foreach(list, i, l)
    {
        uint8_t tid[16], sid[8];
        char th[33] = "", sh[17] = "";
        if (tr_hex_id(json_string_value(json_object_get(l, "traceId")), 32, tid))
            tr_hex(tid, 16, th);
        if (tr_hex_id(json_string_value(json_object_get(l, "spanId")), 16, sid)) tr_hex(sid, 8, sh);
        json_array_append_new(out, json_pack("{s:s, s:s, s:o}", "traceId", th, "spanId", sh,
                                             "attributes",
                                             attrs_object(json_object_get(l, "attributes"))));
    }
    return out;
}

static bool all_zero_hex(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (*s != '0') return false;
    return true;
}

/* One span into an item; NULL after recording why it was rejected. */
static tr_span *decode_span(json_t *sp, uint8_t trace_id[16], const char **why)
{
    tr_span head;
    memset(&head, 0, sizeof head);
    if (!tr_hex_id(json_string_value(json_object_get(sp, "traceId")), 32, trace_id)) {
        *why = "traceId must be 32 hex digits, not all zero";
        return NULL;
    }
    if (!tr_hex_id(json_string_value(json_object_get(sp, "spanId")), 16, head.span_id)) {
        *why = "spanId must be 16 hex digits, not all zero";
        return NULL;
    }
    json_t *parent = json_object_get(sp, "parentSpanId");
    if (parent && !json_is_null(parent)) {
        const char *p = json_string_value(parent);
        if (!p) {
            *why = "parentSpanId must be a string";
            return NULL;
        }
        if (*p && !all_zero_hex(p)) {
            if (!tr_hex_id(p, 16, head.parent_id)) {
                *why = "parentSpanId must be 16 hex digits, or empty for a root span";
                return NULL;
            }
            head.has_parent = true;
        }
    }
    json_t *name = json_object_get(sp, "name");
    if (name && !json_is_string(name) && !json_is_null(name)) {
        *why = "name must be a string";
        return NULL;
    }
    if (!u64_of(json_object_get(sp, "startTimeUnixNano"), &head.start_ns) ||
        !u64_of(json_object_get(sp, "endTimeUnixNano"), &head.end_ns)) {
        *why = "startTimeUnixNano and endTimeUnixNano must be unsigned 64-bit integers";
        return NULL;
    }
    if (head.start_ns == 0) {
        *why = "startTimeUnixNano is required";
        return NULL;
    }
    if (head.end_ns < head.start_ns) {
        *why = "endTimeUnixNano is missing or before startTimeUnixNano";
        return NULL;
    }
    head.kind = (uint8_t)enum_of(json_object_get(sp, "kind"), "SPAN_KIND_", k_kinds, 6);
    json_t *status = json_object_get(sp, "status");
    head.status = (uint8_t)enum_of(json_object_get(status, "code"), "STATUS_CODE_", k_codes, 3);
    const char *msg = json_string_value(json_object_get(status, "message"));

    ag_buf t;
    ag_buf_init(&t, 0);
    put(&t, json_is_string(name) ? json_string_value(name) : "");
    head.status_msg = put(&t, msg ? msg : "");
    head.attrs = put_json(&t, attrs_object(json_object_get(sp, "attributes")));
    json_t *ev = events_json(json_object_get(sp, "events"));
    head.events = ev ? put_json(&t, ev) : put(&t, "");
    json_t *ln = links_json(json_object_get(sp, "links"));
    head.links = ln ? put_json(&t, ln) : put(&t, "");

    tr_span *s = ag_malloc(sizeof *s + t.len);
    *s = head;
    memcpy(s->text, t.data, t.len);
    ag_buf_release(&t);
    return s;
}

static void push(tr_batch *b, const uint8_t trace_id[16], const char *service, tr_span *s)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->items = ag_realloc(b->items, b->cap * sizeof *b->items);
    }
    tr_item *it = &b->items[b->n++];
    memcpy(it->trace_id, trace_id, 16);
    it->service = service;
    it->span = s;
}

/* The array at obj[key]: absent or null is empty (NULL with *ok true); any
 * other non-array sets *ok false. */
static json_t *array_at(json_t *obj, const char *key, bool *ok)
{
    json_t *a = json_object_get(obj, key);
    *ok = !a || json_is_null(a) || json_is_array(a);
    return json_is_array(a) ? a : NULL;
}

int otlp_decode(json_t *req, tr_batch *b, char *err, size_t errn)
{
    bool ok;
    if (!json_is_object(req)) {
        snprintf(err, errn, "the body must be an ExportTraceServiceRequest (a JSON object)");
        return AG_EINVAL;
    }
    json_t *rss = array_at(req, "resourceSpans", &ok);
    if (!ok) {
        snprintf(err, errn, "resourceSpans must be an array");
        return AG_EINVAL;
    }
    size_t r, s, k;
    json_t *rs, *ss, *sp;
    json_array_foreach(rss, r, rs)
    {
        if (!json_is_object(rs)) {
            snprintf(err, errn, "resourceSpans[%zu] must be an object", r);
            return AG_EINVAL;
        }
        json_t *resource = json_object_get(rs, "resource");
        if (resource && !json_is_object(resource)) {
            snprintf(err, errn, "resourceSpans[%zu].resource must be an object", r);
            return AG_EINVAL;
        }
        const char *service = resource_service(resource);
        json_t *sss = array_at(rs, "scopeSpans", &ok);
        if (!ok) {
            snprintf(err, errn, "resourceSpans[%zu].scopeSpans must be an array", r);
            return AG_EINVAL;
        }
        json_array_foreach(sss, s, ss)
        {
            json_t *spans = json_is_object(ss) ? array_at(ss, "spans", &ok) : NULL;
            if (!json_is_object(ss) || !ok) {
                snprintf(err, errn,
                         "resourceSpans[%zu].scopeSpans[%zu] must be an object "
                         "with an array of spans",
                         r, s);
                return AG_EINVAL;
            }
            json_array_foreach(spans, k, sp)
            {
                const char *why = "a span must be an object";
                uint8_t tid[16];
                tr_span *span = json_is_object(sp) ? decode_span(sp, tid, &why) : NULL;
                if (span)
                    push(b, tid, service, span);
                else
                    reject(b, r, s, k, why);
            }
        }
    }
    if (b->rejected > WHY_MAX) ag_buf_printf(&b->why, "; and %zu more", b->rejected - WHY_MAX);
    return 0;
}
