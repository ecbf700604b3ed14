/*
 * store.c — the trace store: every span kept in memory, grouped by trace,
 * within two bounds (AGORA_TRACES_MAX_SPANS, AGORA_TRACES_MAX_BYTES).
 *
 * Structures, all behind one mutex (handlers run on the worker pool, so
 * exports and queries arrive on several threads at once):
 *
 *   traces   a chained hash by trace id → tr_trace
 *   spans    a chained hash by (trace id, span id) → tr_span: finds the
 *            duplicates an exporter's retry sends again
 *   services a chained hash by name → tr_service (interned; span and trace
 *            counts for GET /v1/traces/services)
 *   LRU      every trace on one list, least recently written first
 *
 * A trace keeps its summary up to date as spans arrive, in any order and
 * from any number of requests: earliest start, latest end, error count, its
 * services, and its root (the earliest span without a parent; until one
 * arrives, the earliest span).
 *
 * The bound: after each export, while there are more than max_spans spans
 * or more than max_bytes bytes, the trace at the head of the LRU list (the
 * one written to longest ago) goes, whole: a trace is never cut in half.
 * The bytes are an estimate of what the allocator holds for what is kept:
 * each allocation at glibc's chunk size (its size plus 8, rounded up to
 * 16, at least 32) — the span with its strings in one block, the trace,
 * its span and service arrays, the interned names and the hash tables'
 * bucket arrays. Not counted: a request being decoded (transient, bounded
 * by AGORA_TRACES_MAX_BODY) and the answers being built.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "traces.h"

struct tr_service {
    size_t spans, traces;
    size_t cost;
    struct tr_service *next;
    char name[];
};

struct tr_trace {
    uint8_t id[16];
    tr_span **spans;
    size_t nspans, cap;
    tr_service **services;
    size_t nservices, scap;
    uint64_t start_ns, end_ns;
    tr_span *root;
    size_t errors;
    size_t bytes; /* this trace and its spans, as counted */
    tr_trace *hnext, *prev, *next;
};

#define SVC_BUCKETS 256

static struct {
    pthread_mutex_t mu;
    tr_limits lim;
    tr_trace **tb; /* trace index */
    size_t ntb, ntraces;
    tr_span **sb; /* span index */
    size_t nsb, nspans;
    tr_service *svc[SVC_BUCKETS];
    size_t bytes;          /* traces, spans and services; the index arrays are added */
    tr_trace *head, *tail; /* LRU: head written to longest ago */
    ag_series *m_spans, *m_traces, *m_bytes, *m_evicted;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* What the allocator holds for a block of `n` bytes (glibc, 64-bit). */
static size_t mcost(size_t n)
{
    size_t c = (n + 8 + 15) & ~(size_t)15;
    return c < 32 ? 32 : c;
}

static size_t total_bytes(void)
{
    return g.bytes + mcost(g.ntb * sizeof *g.tb) + mcost(g.nsb * sizeof *g.sb);
}

static uint64_t fnv(const uint8_t *p, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

#define FNV_SEED 0xcbf29ce484222325ull

static size_t trace_slot(const uint8_t id[16], size_t n)
{
    return (size_t)(fnv(id, 16, FNV_SEED) & (n - 1));
}

static size_t span_slot(const uint8_t tid[16], const uint8_t sid[8], size_t n)
{
    return (size_t)(fnv(sid, 8, fnv(tid, 16, FNV_SEED)) & (n - 1));
}

static uint64_t str_hash(const char *s)
{
    return fnv((const uint8_t *)s, strlen(s), FNV_SEED);
}

static void publish_gauges(void)
{
    if (!g.m_spans) return;
    ag_series_set(g.m_spans, (double)g.nspans);
    ag_series_set(g.m_traces, (double)g.ntraces);
    ag_series_set(g.m_bytes, (double)total_bytes());
}

void tr_store_init(const tr_limits *lim, ag_metrics *m)
{
    g.lim = *lim;
    g.ntb = 1024;
    g.tb = ag_calloc(g.ntb, sizeof *g.tb);
    g.nsb = 4096;
    g.sb = ag_calloc(g.nsb, sizeof *g.sb);
    g.m_spans =
        ag_metric_series(ag_metrics_family(m, AG_GAUGE, "agora_traces_spans",
                                           "Spans held in the trace store", 0, NULL, NULL, 0),
                         NULL);
    g.m_traces =
        ag_metric_series(ag_metrics_family(m, AG_GAUGE, "agora_traces_traces",
                                           "Traces held in the trace store", 0, NULL, NULL, 0),
                         NULL);
    g.m_bytes =
        ag_metric_series(ag_metrics_family(m, AG_GAUGE, "agora_traces_bytes",
                                           "Estimated bytes the trace store holds (its bound: "
                                           "AGORA_TRACES_MAX_BYTES)",
                                           0, NULL, NULL, 0),
                         NULL);
    g.m_evicted = ag_metric_series(
        ag_metrics_family(m, AG_COUNTER, "agora_traces_evicted_total",
                          "Traces evicted whole, least recently written first, to stay "
                          "within the bounds",
                          0, NULL, NULL, 0),
        NULL);
    publish_gauges();
}

/* ---- indexes ---- */

static tr_trace *trace_find(const uint8_t id[16])
{
    for (tr_trace *t = g.tb[trace_slot(id, g.ntb)]; t; t = t->hnext)
        if (memcmp(t->id, id, 16) == 0) return t;
    return NULL;
}

static void trace_index_grow(void)
{
    size_t n = g.ntb * 2;
    tr_trace **nb = ag_calloc(n, sizeof *nb);
    for (size_t i = 0; i < g.ntb; i++) {
        tr_trace *t = g.tb[i];
        while (t) {
            tr_trace *next = t->hnext;
            size_t j = trace_slot(t->id, n);
            t->hnext = nb[j];
            nb[j] = t;
            t = next;
        }
    }
    ag_free(g.tb);
    g.tb = nb;
    g.ntb = n;
}

static tr_span *span_find(const tr_trace *t, const uint8_t sid[8])
{
    for (tr_span *s = g.sb[span_slot(t->id, sid, g.nsb)]; s; s = s->hnext)
        if (s->trace == t && memcmp(s->span_id, sid, 8) == 0) return s;
    return NULL;
}

static void span_index_grow(void)
{
    size_t n = g.nsb * 2;
    tr_span **nb = ag_calloc(n, sizeof *nb);
    for (size_t i = 0; i < g.nsb; i++) {
        tr_span *s = g.sb[i];
        while (s) {
            tr_span *next = s->hnext;
            size_t j = span_slot(s->trace->id, s->span_id, n);
            s->hnext = nb[j];
            nb[j] = s;
            s = next;
        }
    }
    ag_free(g.sb);
    g.sb = nb;
    g.nsb = n;
}

static void span_unindex(tr_span *s)
{
    tr_span **pp = &g.sb[span_slot(s->trace->id, s->span_id, g.nsb)];
    while (*pp && *pp != s)
        pp = &(*pp)->hnext;
    if (*pp) *pp = s->hnext;
}

static tr_service *service_intern(const char *name)
{
    size_t b = (size_t)(str_hash(name) % SVC_BUCKETS);
    for (tr_service *v = g.svc[b]; v; v = v->next)
        if (strcmp(v->name, name) == 0) return v;
    size_t len = strlen(name);
    tr_service *v = ag_calloc(1, sizeof *v + len + 1);
    memcpy(v->name, name, len + 1);
    v->cost = mcost(sizeof *v + len + 1);
    v->next = g.svc[b];
    g.svc[b] = v;
    g.bytes += v->cost;
    return v;
}

static tr_service *service_find(const char *name)
{
    for (tr_service *v = g.svc[str_hash(name) % SVC_BUCKETS]; v; v = v->next)
        if (strcmp(v->name, name) == 0) return v;
    return NULL;
}

static void service_drop_if_unused(tr_service *v)
{
    if (v->spans || v->traces) return;
    tr_service **pp = &g.svc[str_hash(v->name) % SVC_BUCKETS];
    while (*pp && *pp != v)
        pp = &(*pp)->next;
    if (*pp) *pp = v->next;
    g.bytes -= v->cost;
    ag_free(v);
}

/* ---- LRU ---- */

static void lru_unlink(tr_trace *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        g.head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        g.tail = t->prev;
    t->prev = t->next = NULL;
}

static void lru_append(tr_trace *t)
{
    t->prev = g.tail;
    t->next = NULL;
    if (g.tail)
        g.tail->next = t;
    else
        g.head = t;
    g.tail = t;
}

/* ---- traces ---- */

/* The fixed part of a trace's cost: itself, its arrays, its index slot. */
static size_t trace_fixed_cost(const tr_trace *t)
{
    return mcost(sizeof *t) + (t->cap ? mcost(t->cap * sizeof *t->spans) : 0) +
           (t->scap ? mcost(t->scap * sizeof *t->services) : 0);
}

static tr_trace *trace_new(const uint8_t id[16])
{
    if (g.ntraces + 1 > g.ntb) trace_index_grow();
    tr_trace *t = ag_calloc(1, sizeof *t);
    memcpy(t->id, id, 16);
    size_t slot = trace_slot(id, g.ntb);
    t->hnext = g.tb[slot];
    g.tb[slot] = t;
    g.ntraces++;
    lru_append(t);
    t->bytes = trace_fixed_cost(t);
    g.bytes += t->bytes;
    return t;
}

/* Room for one more span or service, keeping the trace's cost up to date. */
static void trace_reserve(tr_trace *t, bool services)
{
    size_t *cap = services ? &t->scap : &t->cap;
    if ((services ? t->nservices : t->nspans) < *cap) return;
    size_t before = trace_fixed_cost(t);
    *cap = *cap ? *cap * 2 : 4;
    if (services)
        t->services = ag_realloc(t->services, *cap * sizeof *t->services);
    else
        t->spans = ag_realloc(t->spans, *cap * sizeof *t->spans);
    size_t after = trace_fixed_cost(t);
    t->bytes += after - before;
    g.bytes += after - before;
}

static bool trace_has_service(const tr_trace *t, const tr_service *v)
{
    for (size_t i = 0; i < t->nservices; i++)
        if (t->services[i] == v) return true;
    return false;
}

/* Whether span `a` is a better root than the current one `b`. */
static bool better_root(const tr_span *a, const tr_span *b)
{
    if (!b) return true;
    if (a->has_parent != b->has_parent) return !a->has_parent;
    return a->start_ns < b->start_ns;
}

static void trace_free(tr_trace *t)
{
    /* unindexed and unlinked by the caller */
    for (size_t i = 0; i < t->nspans; i++)
        ag_free(t->spans[i]);
    ag_free(t->spans);
    ag_free(t->services);
    ag_free(t);
}

static void evict(tr_trace *t)
{
    for (size_t i = 0; i < t->nspans; i++) {
        tr_span *s = t->spans[i];
        span_unindex(s);
        s->service->spans--;
    }
    for (size_t i = 0; i < t->nservices; i++)
        t->services[i]->traces--;
    for (size_t i = 0; i < t->nservices; i++)
        service_drop_if_unused(t->services[i]);
    tr_trace **pp = &g.tb[trace_slot(t->id, g.ntb)];
    while (*pp && *pp != t)
        pp = &(*pp)->hnext;
    if (*pp) *pp = t->hnext;
    lru_unlink(t);
    g.ntraces--;
    g.nspans -= t->nspans;
    g.bytes -= t->bytes;
    trace_free(t);
}

static size_t span_alloc_size(const tr_span *s)
{
    return sizeof *s + s->links + strlen(s->text + s->links) + 1;
}

/* Adds one span; false when it is a duplicate (the caller frees it). */
static bool add_one(const tr_item *it)
{
    tr_trace *t = trace_find(it->trace_id);
    if (!t) t = trace_new(it->trace_id);
    tr_span *s = it->span;
    if (t->nspans && span_find(t, s->span_id)) return false; /* a new trace has none */
    tr_service *v = service_intern(it->service);
    if (!trace_has_service(t, v)) {
        trace_reserve(t, true);
        t->services[t->nservices++] = v;
        v->traces++;
    }
    v->spans++;
    s->service = v;
    s->trace = t;
    trace_reserve(t, false);
    t->spans[t->nspans++] = s;
    if (g.nspans + 1 > g.nsb) span_index_grow();
    size_t slot = span_slot(t->id, s->span_id, g.nsb);
    s->hnext = g.sb[slot];
    g.sb[slot] = s;
    g.nspans++;
    s->cost = mcost(span_alloc_size(s));
    t->bytes += s->cost;
    g.bytes += s->cost;
    if (t->nspans == 1 || s->start_ns < t->start_ns) t->start_ns = s->start_ns;
    if (s->end_ns > t->end_ns) t->end_ns = s->end_ns;
    if (s->status == 2) t->errors++;
    if (better_root(s, t->root)) t->root = s;
    lru_unlink(t); /* written to now: the last to go */
    lru_append(t);
    return true;
}

void tr_store_add(tr_batch *b, size_t *duplicates)
{
    *duplicates = 0;
    pthread_mutex_lock(&g.mu);
    for (size_t i = 0; i < b->n; i++) {
        if (add_one(&b->items[i])) {
            b->items[i].span = NULL; /* the store's now */
        } else {
            (*duplicates)++;
        }
    }
    uint64_t evicted = 0;
    while (g.head && (g.nspans > g.lim.max_spans || total_bytes() > g.lim.max_bytes)) {
        evict(g.head);
        evicted++;
    }
    if (evicted && g.m_evicted) ag_series_inc(g.m_evicted, evicted);
    publish_gauges();
    pthread_mutex_unlock(&g.mu);
}

void tr_store_release(void)
{
    pthread_mutex_lock(&g.mu);
    while (g.head) {
        tr_trace *t = g.head;
        lru_unlink(t);
        trace_free(t);
    }
    for (size_t i = 0; i < SVC_BUCKETS; i++) {
        while (g.svc[i]) {
            tr_service *v = g.svc[i];
            g.svc[i] = v->next;
            ag_free(v);
        }
    }
    ag_free(g.tb);
    ag_free(g.sb);
    g.tb = NULL;
    g.sb = NULL;
    g.ntb = g.nsb = g.ntraces = g.nspans = g.bytes = 0;
    pthread_mutex_unlock(&g.mu);
}

/* ---- answers ---- */

static double ms_of(uint64_t ns)
{
    return (double)(ns / 1000) / 1000.0; /* microsecond resolution */
}

static json_t *rfc3339(uint64_t ns)
{
    char ts[32];
    ag_time_rfc3339(ts, sizeof ts, ns / 1000000);
    return json_string(ts);
}

static json_t *u64_string(uint64_t v)
{
    char s[24];
    snprintf(s, sizeof s, "%llu", (unsigned long long)v);
    return json_string(s);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static json_t *services_json(const tr_trace *t)
{
    const char **names = ag_malloc((t->nservices + 1) * sizeof *names);
    for (size_t i = 0; i < t->nservices; i++)
        names[i] = t->services[i]->name;
    qsort(names, t->nservices, sizeof *names, cmp_names);
    json_t *a = json_array();
    for (size_t i = 0; i < t->nservices; i++)
        json_array_append_new(a, json_string(names[i]));
    ag_free(names);
    return a;
}

static void summary_fields(json_t *o, const tr_trace *t)
{
    char id[33];
    tr_hex(t->id, 16, id);
    json_object_set_new(o, "traceId", json_string(id));
    json_object_set_new(o, "rootService", json_string(t->root->service->name));
    json_object_set_new(o, "rootName", json_string(t->root->text));
    json_object_set_new(o, "startTime", rfc3339(t->start_ns));
    json_object_set_new(o, "durationMs", json_real(ms_of(t->end_ns - t->start_ns)));
    json_object_set_new(o, "spanCount", json_integer((json_int_t)t->nspans));
    json_object_set_new(o, "services", services_json(t));
    json_object_set_new(o, "errorCount", json_integer((json_int_t)t->errors));
}

static bool matches(const tr_trace *t, const tr_query *q, const tr_service *svc)
{
    if (q->error == 1 && t->errors == 0) return false;
    if (q->error == 0 && t->errors > 0) return false;
    if (t->end_ns - t->start_ns < q->min_duration_ns) return false;
    if (q->service && !svc) return false;
    if (!q->name) return !svc || trace_has_service(t, svc);
    for (size_t i = 0; i < t->nspans; i++) {
        const tr_span *s = t->spans[i];
        if (strcmp(s->text, q->name) == 0 && (!svc || s->service == svc)) return true;
    }
    return false;
}

static int cmp_recent(const void *a, const void *b)
{
    const tr_trace *x = *(tr_trace *const *)a, *y = *(tr_trace *const *)b;
    if (x->start_ns != y->start_ns) return x->start_ns > y->start_ns ? -1 : 1;
    return memcmp(x->id, y->id, 16);
}

static int cmp_slowest(const void *a, const void *b)
{
    const tr_trace *x = *(tr_trace *const *)a, *y = *(tr_trace *const *)b;
    uint64_t dx = x->end_ns - x->start_ns, dy = y->end_ns - y->start_ns;
    if (dx != dy) return dx > dy ? -1 : 1;
    return cmp_recent(a, b);
}

json_t *tr_store_list(const tr_query *q, int64_t *total)
{
    json_t *out = json_array();
    pthread_mutex_lock(&g.mu);
    const tr_service *svc = q->service ? service_find(q->service) : NULL;
    tr_trace **hits = ag_malloc((g.ntraces + 1) * sizeof *hits);
    size_t n = 0;
    for (tr_trace *t = g.head; t; t = t->next)
        if (matches(t, q, svc)) hits[n++] = t;
    qsort(hits, n, sizeof *hits, q->sort == TR_SORT_SLOWEST ? cmp_slowest : cmp_recent);
    size_t from = (size_t)((q->page - 1) * q->limit);
    for (size_t i = from; i < n && i < from + (size_t)q->limit; i++) {
        json_t *o = json_object();
        summary_fields(o, hits[i]);
        json_array_append_new(out, o);
    }
    *total = (int64_t)n;
    ag_free(hits);
    pthread_mutex_unlock(&g.mu);
    return out;
}

static int cmp_spans(const void *a, const void *b)
{
    const tr_span *x = *(tr_span *const *)a, *y = *(tr_span *const *)b;
    if (x->start_ns != y->start_ns) return x->start_ns < y->start_ns ? -1 : 1;
    if (x->end_ns != y->end_ns) return x->end_ns > y->end_ns ? -1 : 1; /* enclosing first */
    if (x->has_parent != y->has_parent) return x->has_parent ? 1 : -1;
    return memcmp(x->span_id, y->span_id, 8);
}

static const char *kind_name(uint8_t k)
{
    static const char *const names[] = {"internal", "internal", "server",
                                        "client",   "producer", "consumer"};
    return k < 6 ? names[k] : "internal";
}

static const char *status_name(uint8_t c)
{
    return c == 1 ? "ok" : c == 2 ? "error" : "unset";
}

/* Stored JSON text back as JSON; `fallback` (a new one) when empty. */
static json_t *stored(const char *text, json_t *fallback)
{
    if (!*text) return fallback;
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    if (!v) return fallback;
    json_decref(fallback);
    return v;
}

static json_t *span_json(const tr_span *s, uint64_t t0)
{
    char sid[17], pid[17];
    tr_hex(s->span_id, 8, sid);
    json_t *o = json_object();
    json_object_set_new(o, "spanId", json_string(sid));
    if (s->has_parent) {
        tr_hex(s->parent_id, 8, pid);
        json_object_set_new(o, "parentSpanId", json_string(pid));
    } else {
        json_object_set_new(o, "parentSpanId", json_null());
    }
    json_object_set_new(o, "name", json_string(s->text));
    json_object_set_new(o, "kind", json_string(kind_name(s->kind)));
    json_object_set_new(o, "service", json_string(s->service->name));
    json_object_set_new(o, "startTimeUnixNano", u64_string(s->start_ns));
    json_object_set_new(o, "endTimeUnixNano", u64_string(s->end_ns));
    json_object_set_new(o, "startOffsetMs", json_real(ms_of(s->start_ns - t0)));
    json_object_set_new(o, "durationMs", json_real(ms_of(s->end_ns - s->start_ns)));
    json_object_set_new(o, "attributes", stored(s->text + s->attrs, json_object()));
    json_object_set_new(o, "status",
                        json_pack("{s:s, s:s}", "code", status_name(s->status), "message",
                                  s->text + s->status_msg));
    json_t *events = stored(s->text + s->events, json_array());
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
    {
        const char *ts = json_string_value(json_object_get(e, "timeUnixNano"));
        uint64_t at = ts ? strtoull(ts, NULL, 10) : 0;
        json_object_set_new(e, "offsetMs", at >= t0 ? json_real(ms_of(at - t0)) : json_null());
    }
    json_object_set_new(o, "events", events);
    json_object_set_new(o, "links", stored(s->text + s->links, json_array()));
    return o;
}

json_t *tr_store_get(const uint8_t id[16])
{
    pthread_mutex_lock(&g.mu);
    tr_trace *t = trace_find(id);
    if (!t) {
        pthread_mutex_unlock(&g.mu);
        return NULL;
    }
    json_t *o = json_object();
    summary_fields(o, t);
    tr_span **order = ag_malloc(t->nspans * sizeof *order);
    memcpy(order, t->spans, t->nspans * sizeof *order);
    qsort(order, t->nspans, sizeof *order, cmp_spans);
    json_t *spans = json_array();
    for (size_t i = 0; i < t->nspans; i++)
        json_array_append_new(spans, span_json(order[i], t->start_ns));
    ag_free(order);
    json_object_set_new(o, "spans", spans);
    pthread_mutex_unlock(&g.mu);
    return o;
}

static int cmp_service_names(const void *a, const void *b)
{
    const tr_service *x = *(tr_service *const *)a, *y = *(tr_service *const *)b;
    return strcmp(x->name, y->name);
}

json_t *tr_store_services(void)
{
    json_t *out = json_array();
    pthread_mutex_lock(&g.mu);
    size_t n = 0, cap = 16;
    tr_service **all = ag_malloc(cap * sizeof *all);
    for (size_t b = 0; b < SVC_BUCKETS; b++)
        for (tr_service *v = g.svc[b]; v; v = v->next) {
            if (n == cap) all = ag_realloc(all, (cap *= 2) * sizeof *all);
            all[n++] = v;
        }
    qsort(all, n, sizeof *all, cmp_service_names);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(out, json_pack("{s:s, s:I, s:I}", "service", all[i]->name,
                                             "spanCount", (json_int_t)all[i]->spans, "traceCount",
                                             (json_int_t)all[i]->traces));
    ag_free(all);
    pthread_mutex_unlock(&g.mu);
    return out;
}
