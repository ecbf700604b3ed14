/*
 * parse.c — a service definition as agora-registry receives it (Consul's
 * PUT /v1/agent/service/register body) into a reg_svc: the fields, their
 * limits, and its checks (HTTP with an interval, or TTL). Apart from the
 * handler so that the fuzzers (tests/fuzz) can feed it any bytes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"

#define MAX_CHECKS 16 /* a service's checks */

int reg_parse_duration(const char *s, uint64_t *ms)
{
    if (!s || !*s) return AG_EINVAL;
    if (strcmp(s, "0") == 0) {
        *ms = 0;
        return 0;
    }
    double total_ns = 0;
    const char *p = s;
    while (*p) {
        char *end;
        if (!((*p >= '0' && *p <= '9') || *p == '.')) return AG_EINVAL;
        double v = strtod(p, &end);
        if (end == p) return AG_EINVAL;
        p = end;
        double unit;
        if (strncmp(p, "ns", 2) == 0)
            unit = 1, p += 2;
        else if (strncmp(p, "us", 2) == 0 || strncmp(p, "\xc2\xb5s", 3) == 0)
            unit = 1e3, p += (*p == 'u' ? 2 : 3);
        else if (strncmp(p, "ms", 2) == 0)
            unit = 1e6, p += 2;
        else if (*p == 's')
            unit = 1e9, p += 1;
        else if (*p == 'm')
            unit = 60e9, p += 1;
        else if (*p == 'h')
            unit = 3600e9, p += 1;
        else
            return AG_EINVAL;
        total_ns += v * unit;
    }
    if (total_ns > 1e18) return AG_EINVAL;
    *ms = (uint64_t)(total_ns / 1e6);
    return 0;
}

void reg_svc_free(reg_svc *s)
{
    if (!s) return;
    for (int i = 0; i < s->nchecks; i++) {
        ag_free(s->checks[i].id);
        ag_free(s->checks[i].name);
        ag_free(s->checks[i].http);
        ag_free(s->checks[i].output);
    }
    ag_free(s->checks);
    json_decref(s->tags);
    json_decref(s->meta);
    ag_free(s->id);
    ag_free(s->name);
    ag_free(s->address);
    ag_free(s);
}

/* Consul accepts a duration as a string ("10s") or a number of nanoseconds. */
static int json_duration(json_t *v, uint64_t *ms)
{
    if (!v || json_is_null(v)) {
        *ms = 0;
        return 0;
    }
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *ms = (uint64_t)json_integer_value(v) / 1000000u;
        return 0;
    }
    if (json_is_string(v)) return reg_parse_duration(json_string_value(v), ms);
    return AG_EINVAL;
}

static const char *opt_str(json_t *o, const char *k1, const char *k2)
{
    json_t *v = json_object_get(o, k1);
    if (!v && k2) v = json_object_get(o, k2);
    return json_string_value(v);
}

static bool printable(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++)
        if ((unsigned char)s[n] < 0x20 || s[n] == 0x7f) return false;
    return n >= 1 && n <= max;
}

/* Parses one check definition into c. NULL on success, else a message. */
static const char *parse_check(json_t *def, const reg_svc *s, int nth, int total, reg_check *c)
{
    if (!json_is_object(def)) return "a check must be an object";
    const char *http = opt_str(def, "HTTP", "http");
    json_t *ttl = json_object_get(def, "TTL");
    if (!ttl) ttl = json_object_get(def, "ttl");
    if (!http && !ttl) return "a check needs HTTP (with Interval) or TTL";
    if (http && ttl) return "a check has either HTTP or TTL, not both";
    memset(c, 0, sizeof *c);
    uint64_t ms;
    if (http) {
        if (strncmp(http, "http://", 7) != 0 && strncmp(http, "https://", 8) != 0)
            return "HTTP must be an http:// or https:// URL";
        if (!printable(http, 2048)) return "HTTP is not a valid URL";
        if (json_duration(json_object_get(def, "Interval"), &ms) < 0 || ms == 0)
            return "an HTTP check needs Interval, a duration such as \"10s\"";
        c->interval_ms = ms < 100 ? 100 : ms;
        if (json_duration(json_object_get(def, "Timeout"), &ms) < 0)
            return "Timeout must be a duration such as \"1s\"";
        c->timeout_ms = ms ? ms : 10000;
    } else {
        if (json_duration(ttl, &ms) < 0 || ms == 0) return "TTL must be a duration such as \"15s\"";
        c->ttl_ms = ms;
    }
    if (json_duration(json_object_get(def, "DeregisterCriticalServiceAfter"), &ms) < 0)
        return "DeregisterCriticalServiceAfter must be a duration such as \"1m\"";
    c->dereg_ms = ms;
    const char *id = opt_str(def, "CheckID", "ID");
    const char *name = opt_str(def, "Name", NULL);
    char defid[300], defname[300];
    if (total > 1)
        snprintf(defid, sizeof defid, "service:%s:%d", s->id, nth + 1);
    else
        snprintf(defid, sizeof defid, "service:%s", s->id);
    snprintf(defname, sizeof defname, "Service '%s' check", s->name);
    if (id && !printable(id, 256)) return "CheckID must be 1 to 256 printable characters";
    c->id = ag_strdup(id ? id : defid);
    c->name = ag_strdup(name && *name ? name : defname);
    c->http = http ? ag_strdup(http) : NULL;
    const char *st = opt_str(def, "Status", NULL);
    c->status = REG_CRITICAL; /* Consul's default until the first result */
    if (st && strcmp(st, "passing") == 0) c->status = REG_PASSING;
    if (st && strcmp(st, "warning") == 0) c->status = REG_WARNING;
    return NULL;
}

reg_svc *reg_svc_parse(const char *body, size_t len, char *why, size_t why_len)
{
    json_t *j = json_loadb(body, len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        snprintf(why, why_len, "the body must be a JSON object (a service definition)");
        return NULL;
    }
    reg_svc *s = NULL;
    const char *name = opt_str(j, "Name", "name");
    const char *id = opt_str(j, "ID", "id");
    const char *addr = opt_str(j, "Address", "address");
    json_t *port = json_object_get(j, "Port");
    json_t *tags = json_object_get(j, "Tags");
    json_t *meta = json_object_get(j, "Meta");
    if (!name || !printable(name, 128)) {
        snprintf(why, why_len, "%s", "Name is required: 1 to 128 printable characters");
        goto out;
    }
    if (id && !printable(id, 256)) {
        snprintf(why, why_len, "%s", "ID must be 1 to 256 printable characters");
        goto out;
    }
    if (port && (!json_is_integer(port) || json_integer_value(port) < 0 ||
                 json_integer_value(port) > 65535)) {
        snprintf(why, why_len, "%s", "Port must be an integer between 0 and 65535");
        goto out;
    }
    if (addr && strlen(addr) > 255) {
        snprintf(why, why_len, "%s", "Address is too long");
        goto out;
    }
    if (tags && !json_is_null(tags)) {
        size_t i;
        json_t *t;
        bool ok = json_is_array(tags) && json_array_size(tags) <= 64;
        if (ok) json_array_foreach(tags, i, t) if (!json_is_string(t)) ok = false;
        if (!ok) {
            snprintf(why, why_len, "%s", "Tags must be an array of at most 64 strings");
            goto out;
        }
    }
    if (meta && !json_is_null(meta)) {
        const char *k;
        json_t *v;
        bool ok = json_is_object(meta) && json_object_size(meta) <= 64;
        if (ok) json_object_foreach(meta, k, v) if (!json_is_string(v)) ok = false;
        if (!ok) {
            snprintf(why, why_len, "%s", "Meta must be an object of at most 64 string values");
            goto out;
        }
    }
    s = ag_calloc(1, sizeof *s);
    s->id = ag_strdup(id ? id : name);
    s->name = ag_strdup(name);
    s->address = ag_strdup(addr ? addr : "");
    s->port = port ? (int)json_integer_value(port) : 0;
    s->tags = json_is_array(tags) ? json_deep_copy(tags) : json_array();
    s->meta = json_is_object(meta) ? json_deep_copy(meta) : json_object();

    json_t *defs = json_array();
    json_t *one = json_object_get(j, "Check");
    json_t *many = json_object_get(j, "Checks");
    if (json_is_object(one)) json_array_append(defs, one);
    if (json_is_array(many)) json_array_extend(defs, many);
    if ((one && !json_is_object(one) && !json_is_null(one)) ||
        (many && !json_is_array(many) && !json_is_null(many)) ||
        json_array_size(defs) > MAX_CHECKS) {
        json_decref(defs);
        reg_svc_free(s);
        s = NULL;
        snprintf(why, why_len, "Check must be an object and Checks an array of at most 16");
        goto out;
    }
    int total = (int)json_array_size(defs);
    s->checks = total ? ag_calloc((size_t)total, sizeof *s->checks) : NULL;
    for (int i = 0; i < total; i++) {
        const char *bad = parse_check(json_array_get(defs, (size_t)i), s, i, total, &s->checks[i]);
        if (bad) {
            json_decref(defs);
            reg_svc_free(s); /* frees the checks parsed so far (the rest are zero) */
            s = NULL;
            snprintf(why, why_len, "invalid check: %s", bad);
            goto out;
        }
        s->nchecks++;
    }
    json_decref(defs);
out:
    json_decref(j);
    return s;
}
