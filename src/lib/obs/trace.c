/*
 * trace.c — the tracer (agora/trace.h): W3C traceparent, sampling, spans
 * and the OTLP/HTTP JSON exporter.
 *
 * Why not the OpenTelemetry C++ SDK or a C library: Debian packages none
 * for C, and what a span needs here is small — ids, a name, times, a few
 * attributes — so a recorded span is encoded once, at its end, straight
 * into its OTLP JSON text (the JSON Protobuf encoding of the OTLP spec:
 * hex ids, 64-bit integers as decimal strings, enums as numbers). The
 * export itself is libcurl.
 *
 * The exporter: ended spans are strings in a bounded ring under one mutex.
 * One thread waits on a condition variable for a full batch or the
 * schedule delay, takes up to a batch, wraps it in one resourceSpans
 * document and POSTs it. Producers never wait: a full ring drops the span
 * (counted). A failed POST drops the batch (counted) and the next one is
 * tried after a pause, so a collector that is down costs requests nothing.
 *
 *            ring not empty, or delay passed
 *   WAITING ─────────────────────────────────► POSTING ──┐
 *      ▲                                                  │ done or failed
 *      └──────────────────────────────────────────────────┘
 *   shutdown: POST what is left once, then the thread ends.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agora/clock.h"
#include "agora/error.h"
#include "agora/id.h"
#include "agora/log.h"
#include "agora/mem.h"
#include "agora/trace.h"

/* ---- Setup ---------------------------------------------------------------------- */

typedef enum sampler {
    S_ALWAYS_ON,
    S_ALWAYS_OFF,
    S_RATIO,
    S_PARENT_ON,
    S_PARENT_OFF,
    S_PARENT_RATIO
} sampler;

static struct {
    bool set_up;
    bool disabled;  /* OTEL_SDK_DISABLED: propagate only */
    bool recording; /* an endpoint: spans are recorded and exported */
    sampler sampler;
    uint64_t ratio_bound; /* a trace id's low 8 bytes below it: sampled */
    char *endpoint;
    char *resource; /* the document up to the spans array */
    size_t queue_cap, batch;
    uint64_t delay_ms, timeout_ms;

    pthread_mutex_t mu;
    pthread_cond_t cond;
    char **ring; /* guarded by mu */
    size_t head, count;
    bool stop;
    bool thread_started;
    pthread_t thread;

    ag_series *m_exported, *m_dropped_full, *m_dropped_failed, *m_queued;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static _Thread_local ag_trace_ctx t_current;

static int env_sampler(void)
{
    const char *s = getenv("OTEL_TRACES_SAMPLER");
    const char *arg = getenv("OTEL_TRACES_SAMPLER_ARG");
    g.sampler = S_PARENT_ON;
    if (s && *s) {
        static const struct {
            const char *name;
            sampler v;
        } names[] = {{"always_on", S_ALWAYS_ON},
                     {"always_off", S_ALWAYS_OFF},
                     {"traceidratio", S_RATIO},
                     {"parentbased_always_on", S_PARENT_ON},
                     {"parentbased_always_off", S_PARENT_OFF},
                     {"parentbased_traceidratio", S_PARENT_RATIO}};
        size_t i;
        for (i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strcmp(s, names[i].name) == 0) break;
        if (i == sizeof names / sizeof names[0]) {
            ag_error("bad OTEL_TRACES_SAMPLER", AG_FS("value", s),
                     AG_FS("expected",
                           "always_on, always_off, traceidratio, parentbased_always_on, "
                           "parentbased_always_off or parentbased_traceidratio"));
            return AG_ECONFIG;
        }
        g.sampler = names[i].v;
    }
    double ratio = 1.0;
    if (arg && *arg && (g.sampler == S_RATIO || g.sampler == S_PARENT_RATIO)) {
        char *end;
        ratio = strtod(arg, &end);
        if (*end || !(ratio >= 0.0 && ratio <= 1.0)) {
            ag_error("bad OTEL_TRACES_SAMPLER_ARG", AG_FS("value", arg),
                     AG_FS("expected", "a ratio from 0 to 1"));
            return AG_ECONFIG;
        }
    }
    g.ratio_bound = ratio >= 1.0 ? UINT64_MAX : (uint64_t)(ratio * 18446744073709551616.0);
    return 0;
}

static int env_u64(const char *name, uint64_t def, uint64_t min, uint64_t *out)
{
    const char *s = getenv(name);
    *out = def;
    if (!s || !*s) return 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || v < min || s[0] == '-') {
        ag_error("bad tracing setting", AG_FS("name", name), AG_FS("value", s),
                 AG_FI("minimum", (long long)min));
        return AG_ECONFIG;
    }
    *out = v;
    return 0;
}

static void json_escape(ag_buf *b, const char *s)
{
    ag_buf_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            ag_buf_append(b, e, 2);
        } else if (*p < 0x20) {
            ag_buf_printf(b, "\\u%04x", *p);
        } else {
            ag_buf_append(b, p, 1);
        }
    }
    ag_buf_append(b, "\"", 1);
}

static void *exporter_main(void *arg);

int ag_trace_setup(const char *service, ag_metrics *m)
{
    if (g.set_up) return 0;
    const char *dis = getenv("OTEL_SDK_DISABLED");
    g.disabled = dis && strcmp(dis, "true") == 0;
    int rc = env_sampler();
    if (rc < 0) return rc;
    uint64_t qcap, batch;
    if ((rc = env_u64("OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1, &qcap)) < 0 ||
        (rc = env_u64("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1, &batch)) < 0 ||
        (rc = env_u64("OTEL_BSP_SCHEDULE_DELAY", 500, 1, &g.delay_ms)) < 0 ||
        (rc = env_u64("OTEL_EXPORTER_OTLP_TIMEOUT", 5000, 1, &g.timeout_ms)) < 0)
        return rc;
    g.queue_cap = (size_t)qcap;
    g.batch = (size_t)(batch < qcap ? batch : qcap);

    m = m ? m : ag_metrics_default();
    const char *lk[] = {"service"}, *lv[] = {service};
    const char *lk2[] = {"service", "reason"};
    ag_metric *dropped = ag_metrics_family(m, AG_COUNTER, "agora_trace_spans_dropped_total",
                                           "Ended spans not exported, by reason.", 2, lk2, NULL, 0);
    g.m_dropped_full = ag_metric_series(dropped, (const char *[]){service, "queue_full"});
    g.m_dropped_failed = ag_metric_series(dropped, (const char *[]){service, "export_failed"});
    g.m_exported =
        ag_metric_series(ag_metrics_family(m, AG_COUNTER, "agora_trace_spans_exported_total",
                                           "Spans the collector accepted.", 1, lk, NULL, 0),
                         lv);
    g.m_queued =
        ag_metric_series(ag_metrics_family(m, AG_GAUGE, "agora_trace_queue_spans",
                                           "Ended spans waiting for export.", 1, lk, NULL, 0),
                         lv);

    const char *exp = getenv("OTEL_TRACES_EXPORTER");
    const char *full = getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    const char *base = getenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    if (exp && *exp && strcmp(exp, "otlp") != 0 && strcmp(exp, "none") != 0) {
        ag_error("bad OTEL_TRACES_EXPORTER", AG_FS("value", exp),
                 AG_FS("expected", "otlp or none"));
        return AG_ECONFIG;
    }
    bool none = exp && strcmp(exp, "none") == 0;
    g.set_up = true;
    if (g.disabled || none || g.sampler == S_ALWAYS_OFF || !((full && *full) || (base && *base)))
        return 0;
    ag_buf u;
    ag_buf_init(&u, 0);
    if (full && *full)
        ag_buf_appends(&u, full);
    else {
        size_t n = strlen(base);
        while (n > 0 && base[n - 1] == '/')
            n--;
        ag_buf_append(&u, base, n);
        ag_buf_appends(&u, "/v1/traces");
    }
    g.endpoint = ag_buf_detach(&u, NULL);

    ag_buf r;
    ag_buf_init(&r, 0);
    char name[128];
    snprintf(name, sizeof name, "agora-%s", service);
    ag_buf_appends(&r, "{\"resourceSpans\":[{\"resource\":{\"attributes\":["
                       "{\"key\":\"service.name\",\"value\":{\"stringValue\":");
    json_escape(&r, name);
    ag_buf_appends(&r, "}},{\"key\":\"service.namespace\",\"value\":{\"stringValue\":\"agora\"}},"
                       "{\"key\":\"telemetry.sdk.name\",\"value\":{\"stringValue\":\"libagora\"}},"
                       "{\"key\":\"telemetry.sdk.language\",\"value\":{\"stringValue\":\"c\"}}]},"
                       "\"scopeSpans\":[{\"scope\":{\"name\":\"libagora\",\"version\":\"0.1\"},"
                       "\"spans\":[");
    g.resource = ag_buf_detach(&r, NULL);
    g.ring = ag_calloc(g.queue_cap, sizeof *g.ring);
    g.head = g.count = 0;
    g.stop = false;
    g.recording = true;
    if (pthread_create(&g.thread, NULL, exporter_main, NULL) != 0) {
        ag_error("cannot start the span exporter; spans are not recorded");
        g.recording = false;
        return 0;
    }
    g.thread_started = true;
    ag_info("tracing", AG_FS("endpoint", g.endpoint),
            AG_FS("sampler", getenv("OTEL_TRACES_SAMPLER") ? getenv("OTEL_TRACES_SAMPLER")
                                                           : "parentbased_always_on"));
    return 0;
}

bool ag_trace_recording(void)
{
    return g.recording;
}

/* ---- The exporter ------------------------------------------------------------------ */

static size_t discard(char *p, size_t sz, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return sz * n;
}

/* POSTs spans[0..n) and frees them. */
static void post_batch(CURL *h, char **spans, size_t n)
{
    ag_buf b;
    ag_buf_init(&b, 0);
    ag_buf_appends(&b, g.resource);
    for (size_t i = 0; i < n; i++) {
        if (i) ag_buf_append(&b, ",", 1);
        ag_buf_appends(&b, spans[i]);
        ag_free(spans[i]);
    }
    ag_buf_appends(&b, "]}]}]}");
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_URL, g.endpoint);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, b.data);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)b.len);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)g.timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(g.timeout_ms < 2000 ? g.timeout_ms : 2000));
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    if (cc == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdr);
    ag_buf_release(&b);
    if (cc == CURLE_OK && status >= 200 && status < 300) {
        ag_series_inc(g.m_exported, n);
    } else {
        ag_series_inc(g.m_dropped_failed, n);
        /* Not through ag_warn's trace fields: this thread has no span. */
        ag_warn(
            "spans not exported", AG_FS("endpoint", g.endpoint),
            AG_FS("error", cc == CURLE_OK ? "the collector refused them" : curl_easy_strerror(cc)),
            AG_FI("status", status), AG_FI("spans", (long long)n));
    }
}

static void *exporter_main(void *arg)
{
    (void)arg;
    CURL *h = curl_easy_init();
    char **batch = ag_calloc(g.batch, sizeof *batch);
    bool failed_last = false;
    pthread_mutex_lock(&g.mu);
    for (;;) {
        if (!g.stop && g.count < g.batch) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t wait = failed_last ? g.delay_ms * 4 : g.delay_ms;
            ts.tv_sec += (time_t)(wait / 1000);
            ts.tv_nsec += (long)(wait % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&g.cond, &g.mu, &ts);
        }
        size_t n = 0;
        while (n < g.batch && g.count > 0) {
            batch[n++] = g.ring[g.head];
            g.head = (g.head + 1) % g.queue_cap;
            g.count--;
        }
        ag_series_set(g.m_queued, (double)g.count);
        bool stop = g.stop;
        pthread_mutex_unlock(&g.mu);
        if (n > 0 && h) {
            double dropped = ag_series_value(g.m_dropped_failed);
            post_batch(h, batch, n);
            failed_last = ag_series_value(g.m_dropped_failed) > dropped;
        } else {
            for (size_t i = 0; i < n; i++)
                ag_free(batch[i]);
        }
        pthread_mutex_lock(&g.mu);
        if (stop && g.count == 0) break;
        if (stop && failed_last) { /* the collector is gone: drop the rest */
            while (g.count > 0) {
                ag_free(g.ring[g.head]);
                g.head = (g.head + 1) % g.queue_cap;
                g.count--;
                ag_series_inc(g.m_dropped_failed, 1);
            }
            break;
        }
    }
    pthread_mutex_unlock(&g.mu);
    ag_free(batch);
    if (h) curl_easy_cleanup(h);
    return NULL;
}

static void enqueue(char *span)
{
    pthread_mutex_lock(&g.mu);
    if (g.stop || g.count >= g.queue_cap) {
        pthread_mutex_unlock(&g.mu);
        ag_series_inc(g.m_dropped_full, 1);
        ag_free(span);
        return;
    }
    g.ring[(g.head + g.count) % g.queue_cap] = span;
    g.count++;
    if (g.count >= g.batch) pthread_cond_signal(&g.cond);
    pthread_mutex_unlock(&g.mu);
}

void ag_trace_shutdown(void)
{
    g.set_up = false; /* ag_trace_setup may run again */
    if (!g.thread_started) {
        g.recording = false;
        return;
    }
    pthread_mutex_lock(&g.mu);
    g.stop = true;
    pthread_cond_signal(&g.cond);
    pthread_mutex_unlock(&g.mu);
    pthread_join(g.thread, NULL);
    g.thread_started = false;
    g.recording = false;
    ag_free(g.ring);
    g.ring = NULL;
    ag_free(g.endpoint);
    g.endpoint = NULL;
    ag_free(g.resource);
    g.resource = NULL;
}

/* ---- Context -------------------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1; /* upper case is invalid in traceparent */
}

static bool unhex(const char *s, uint8_t *out, size_t n)
{
    bool nonzero = false;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = (uint8_t)(hi << 4 | lo);
        nonzero |= out[i] != 0;
    }
    return nonzero;
}

static void tohex(const uint8_t *in, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 15];
    }
    out[2 * n] = '\0';
}

int ag_traceparent_parse(const char *s, ag_trace_ctx *out)
{
    memset(out, 0, sizeof *out);
    if (!s) return AG_EINVAL;
    while (*s == ' ' || *s == '\t')
        s++;
    size_t len = strlen(s);
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len < AG_TRACEPARENT_LEN || s[2] != '-' || s[35] != '-' || s[52] != '-') return AG_EINVAL;
    if (hexval(s[0]) < 0 || hexval(s[1]) < 0) return AG_EINVAL;
    int ver = hexval(s[0]) << 4 | hexval(s[1]);
    if (ver == 0xff) return AG_EINVAL;
    if (ver == 0 && len != AG_TRACEPARENT_LEN) return AG_EINVAL;
    if (ver != 0 && len > AG_TRACEPARENT_LEN && s[AG_TRACEPARENT_LEN] != '-') return AG_EINVAL;
    uint8_t flags;
    if (!unhex(s + 3, out->trace_id, 16) || !unhex(s + 36, out->span_id, 8)) return AG_EINVAL;
    if (hexval(s[53]) < 0 || hexval(s[54]) < 0) return AG_EINVAL;
    flags = (uint8_t)(hexval(s[53]) << 4 | hexval(s[54]));
    out->flags = flags & 1;
    out->valid = true;
    return 0;
}

void ag_tracestate_set(ag_trace_ctx *c, const char *ts)
{
    c->state[0] = '\0';
    if (!ts) return;
    while (*ts == ' ' || *ts == '\t')
        ts++;
    size_t n = strlen(ts), keep = 0;
    int members = 0;
    for (size_t i = 0; i <= n && i < sizeof c->state; i++) {
        if (i == n || ts[i] == ',') {
            if (++members > 32) break;
            keep = i;
        } else if ((unsigned char)ts[i] < 0x20 || (unsigned char)ts[i] > 0x7e) {
            return; /* not a header value we pass on */
        }
    }
    while (keep > 0 && (ts[keep - 1] == ' ' || ts[keep - 1] == '\t'))
        keep--;
    memcpy(c->state, ts, keep);
    c->state[keep] = '\0';
}

void ag_traceparent_format(const ag_trace_ctx *c, char out[AG_TRACEPARENT_LEN + 1])
{
    if (!c->valid) {
        out[0] = '\0';
        return;
    }
    memcpy(out, "00-", 3);
    tohex(c->trace_id, 16, out + 3);
    out[35] = '-';
    tohex(c->span_id, 8, out + 36);
    out[52] = '-';
    out[53] = '0';
    out[54] = (c->flags & 1) ? '1' : '0';
    out[55] = '\0';
}

void ag_trace_id_hex(const ag_trace_ctx *c, char out[33])
{
    tohex(c->trace_id, 16, out);
}
void ag_span_id_hex(const ag_trace_ctx *c, char out[17])
{
    tohex(c->span_id, 8, out);
}

ag_trace_ctx ag_trace_current(void)
{
    return t_current;
}

void ag_trace_set_current(const ag_trace_ctx *c)
{
    if (c)
        t_current = *c;
    else
        memset(&t_current, 0, sizeof t_current);
}

/* ---- Spans ---------------------------------------------------------------------------- */

struct ag__span_rec {
    char *name;
    ag_span_kind kind;
    uint8_t parent[8];
    bool has_parent;
    uint64_t start_ns; /* Unix time */
    ag_buf attrs;      /* OTLP KeyValue objects, comma separated */
    int status;        /* 0 unset, 1 ok, 2 error */
    char *status_msg;
};

static void random_ids(uint8_t *out, size_t n)
{
    static _Thread_local uint8_t pool[256];
    static _Thread_local size_t left;
    do {
        if (left < n) {
            ag_random_bytes(pool, sizeof pool);
            left = sizeof pool;
        }
        memcpy(out, pool + sizeof pool - left, n);
        left -= n;
    } while (n == 8 ? !memcmp(out, "\0\0\0\0\0\0\0\0", 8) : false);
}

static uint64_t unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static bool sample_root(const uint8_t trace_id[16])
{
    switch (g.sampler) {
    case S_ALWAYS_ON:
    case S_PARENT_ON:
        return true;
    case S_ALWAYS_OFF:
    case S_PARENT_OFF:
        return false;
    default: {
        uint64_t low = 0;
        for (int i = 8; i < 16; i++)
            low = low << 8 | trace_id[i];
        return g.ratio_bound == UINT64_MAX || low < g.ratio_bound;
    }
    }
}

void ag_span_begin(ag_span *s, const char *name, ag_span_kind kind, const ag_trace_ctx *parent)
{
    memset(s, 0, sizeof *s);
    ag_trace_ctx p = parent ? *parent : t_current;
    bool sampled;
    if (p.valid) {
        s->ctx = p;
        switch (g.sampler) {
        case S_ALWAYS_ON:
            sampled = true;
            break;
        case S_ALWAYS_OFF:
            sampled = false;
            break;
        case S_RATIO:
            sampled = sample_root(p.trace_id);
            break;
        default:
            sampled = p.flags & 1;
        }
    } else {
        if (kind != AG_SPAN_SERVER && kind != AG_SPAN_CONSUMER) return; /* nothing caused it */
        random_ids(s->ctx.trace_id, 16);
        sampled = !g.disabled && sample_root(s->ctx.trace_id);
    }
    if (g.disabled) { /* pass on what came in, unchanged */
        if (p.valid) s->ctx = p;
        return;
    }
    random_ids(s->ctx.span_id, 8);
    s->ctx.flags = sampled ? 1 : 0;
    s->ctx.valid = true;
    if (!sampled || !g.recording) return;
    ag__span_rec *r = ag_calloc(1, sizeof *r);
    r->name = ag_strdup(name ? name : "");
    r->kind = kind;
    if (p.valid) {
        memcpy(r->parent, p.span_id, 8);
        r->has_parent = true;
    }
    r->start_ns = unix_ns();
    ag_buf_init(&r->attrs, 0);
    s->rec = r;
}

void ag_span_rename(ag_span *s, const char *name)
{
    if (!s->rec) return;
    ag_free(s->rec->name);
    s->rec->name = ag_strdup(name ? name : "");
}

static void attr_key(ag_span *s, const char *key)
{
    ag_buf *b = &s->rec->attrs;
    if (b->len) ag_buf_append(b, ",", 1);
    ag_buf_appends(b, "{\"key\":");
    json_escape(b, key);
    ag_buf_appends(b, ",\"value\":{");
}

void ag_span_attr_str(ag_span *s, const char *key, const char *value)
{
    if (!s->rec || !key || !value) return;
    attr_key(s, key);
    ag_buf_appends(&s->rec->attrs, "\"stringValue\":");
    json_escape(&s->rec->attrs, value);
    ag_buf_appends(&s->rec->attrs, "}}");
}

void ag_span_attr_int(ag_span *s, const char *key, long long value)
{
    if (!s->rec || !key) return;
    attr_key(s, key);
    ag_buf_printf(&s->rec->attrs, "\"intValue\":\"%lld\"}}", value);
}

void ag_span_attr_bool(ag_span *s, const char *key, bool value)
{
    if (!s->rec || !key) return;
    attr_key(s, key);
    ag_buf_printf(&s->rec->attrs, "\"boolValue\":%s}}", value ? "true" : "false");
}

void ag_span_error(ag_span *s, const char *message)
{
    if (!s->rec) return;
    s->rec->status = 2;
    ag_free(s->rec->status_msg);
    s->rec->status_msg = message ? ag_strdup(message) : NULL;
}

bool ag_span_recording(const ag_span *s)
{
    return s->rec != NULL;
}

void ag_span_enter(ag_span *s)
{
    if (s->entered) return;
    s->saved = t_current;
    if (s->ctx.valid) t_current = s->ctx;
    s->entered = true;
}

void ag_span_leave(ag_span *s)
{
    if (!s->entered) return;
    t_current = s->saved;
    s->entered = false;
}

static void rec_free(ag__span_rec *r)
{
    ag_free(r->name);
    ag_free(r->status_msg);
    ag_buf_release(&r->attrs);
    ag_free(r);
}

void ag_span_drop(ag_span *s)
{
    if (!s->rec) return;
    rec_free(s->rec);
    s->rec = NULL;
}

void ag_span_end(ag_span *s)
{
    ag_span_leave(s);
    ag__span_rec *r = s->rec;
    if (!r) return;
    s->rec = NULL;
    uint64_t end = unix_ns();
    if (end < r->start_ns) end = r->start_ns;
    char tid[33], sid[17], pid[17];
    tohex(s->ctx.trace_id, 16, tid);
    tohex(s->ctx.span_id, 8, sid);
    ag_buf b;
    ag_buf_init(&b, 0);
    ag_buf_printf(&b, "{\"traceId\":\"%s\",\"spanId\":\"%s\",", tid, sid);
    if (r->has_parent) {
        tohex(r->parent, 8, pid);
        ag_buf_printf(&b, "\"parentSpanId\":\"%s\",", pid);
    }
    ag_buf_appends(&b, "\"name\":");
    json_escape(&b, r->name);
    ag_buf_printf(&b,
                  ",\"kind\":%d,\"startTimeUnixNano\":\"%llu\",\"endTimeUnixNano\":\"%llu\","
                  "\"attributes\":[",
                  (int)r->kind, (unsigned long long)r->start_ns, (unsigned long long)end);
    if (r->attrs.len) ag_buf_append(&b, r->attrs.data, r->attrs.len);
    ag_buf_printf(&b, "],\"status\":{\"code\":%d", r->status);
    if (r->status_msg) {
        ag_buf_appends(&b, ",\"message\":");
        json_escape(&b, r->status_msg);
    }
    ag_buf_appends(&b, "}}");
    rec_free(r);
    enqueue(ag_buf_detach(&b, NULL));
}
