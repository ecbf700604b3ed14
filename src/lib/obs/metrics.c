/*
 * metrics.c — a Prometheus registry (see agora/metrics.h).
 *
 * Families live in a list sorted at render time; series of a family in an
 * open-addressing hash table keyed by the joined label values, guarded by the
 * family's mutex. Updates are lock-free: counters and histogram buckets are
 * atomic integers, gauges and sums atomic doubles (compare-and-swap on the
 * bit pattern). Written here rather than taken from a library: Debian ships
 * no C Prometheus client (libprom is not packaged).
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <dirent.h>
#include <stdio.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "agora/metrics.h"
#include "agora/log.h"

struct ag_series {
    const struct ag_metric *family;
    char **values;
    char *key;
    _Atomic uint64_t count;  /* counter value, or histogram count */
    _Atomic uint64_t dbits;  /* gauge value, or histogram sum, as double bits */
    _Atomic uint64_t *buckets; /* histogram: one per bound (non-cumulative) */
};

struct ag_metric {
    ag_metric_type type;
    char *name, *help;
    int nlabels;
    char **labels;
    double *bounds;
    int nbounds;
    pthread_mutex_t mu;
    ag_series **slots; /* hash table */
    size_t nslots, nseries;
    double (*fn)(void *);
    void *ud;
    ag_metric *next;
};

struct ag_metrics {
    pthread_mutex_t mu;
    ag_metric *families;
};

static const double default_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,    0.25,  0.5,    1,     2.5,  5,     10};

ag_metrics *ag_metrics_new(void)
{
    ag_metrics *m = ag_calloc(1, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

static void series_free(ag_series *s, int nlabels)
{
    for (int i = 0; i < nlabels; i++) ag_free(s->values[i]);
    ag_free(s->values);
    ag_free(s->key);
    ag_free((void *)s->buckets);
    ag_free(s);
}

void ag_metrics_free(ag_metrics *m)
{
    if (!m) return;
    ag_metric *f = m->families;
    while (f) {
        ag_metric *next = f->next;
        for (size_t i = 0; i < f->nslots; i++)
            if (f->slots[i]) series_free(f->slots[i], f->nlabels);
        ag_free(f->slots);
        for (int i = 0; i < f->nlabels; i++) ag_free(f->labels[i]);
        ag_free(f->labels);
        ag_free(f->bounds);
        ag_free(f->name);
        ag_free(f->help);
        pthread_mutex_destroy(&f->mu);
        ag_free(f);
        f = next;
    }
    pthread_mutex_destroy(&m->mu);
    ag_free(m);
}

static ag_metrics *g_default;
static pthread_once_t g_default_once = PTHREAD_ONCE_INIT;

static void free_default(void)
{
    ag_metrics_free(g_default);
    g_default = NULL;
}

static void make_default(void)
{
    g_default = ag_metrics_new();
    atexit(free_default);
}

ag_metrics *ag_metrics_default(void)
{
    pthread_once(&g_default_once, make_default);
    return g_default;
}

static ag_metric *find_family(ag_metrics *m, const char *name)
{
    for (ag_metric *f = m->families; f; f = f->next)
        if (strcmp(f->name, name) == 0) return f;
    return NULL;
}

ag_metric *ag_metrics_family(ag_metrics *m, ag_metric_type type, const char *name,
                             const char *help, int nlabels, const char *const *labels,
                             const double *bounds, int nbounds)
{
    pthread_mutex_lock(&m->mu);
    ag_metric *f = find_family(m, name);
    if (f) {
        pthread_mutex_unlock(&m->mu);
        if (f->type != type || f->nlabels != nlabels) {
            ag_error("metric registered twice with different shapes", AG_FS("metric", name));
            abort();
        }
        return f;
    }
    f = ag_calloc(1, sizeof *f);
    f->type = type;
    f->name = ag_strdup(name);
    f->help = ag_strdup(help ? help : "");
    f->nlabels = nlabels;
    f->labels = ag_calloc((size_t)(nlabels ? nlabels : 1), sizeof *f->labels);
    for (int i = 0; i < nlabels; i++) f->labels[i] = ag_strdup(labels[i]);
    if (type == AG_HISTOGRAM) {
        if (!bounds) {
            bounds = default_bounds;
            nbounds = (int)(sizeof default_bounds / sizeof default_bounds[0]);
        }
        f->bounds = ag_malloc(sizeof(double) * (size_t)nbounds);
        memcpy(f->bounds, bounds, sizeof(double) * (size_t)nbounds);
        f->nbounds = nbounds;
    }
    pthread_mutex_init(&f->mu, NULL);
    f->nslots = 16;
    f->slots = ag_calloc(f->nslots, sizeof *f->slots);
    f->next = m->families;
    m->families = f;
    pthread_mutex_unlock(&m->mu);
    return f;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void insert_slot(ag_series **slots, size_t nslots, ag_series *s)
{
    size_t i = hash_str(s->key) & (nslots - 1);
    while (slots[i]) i = (i + 1) & (nslots - 1);
    slots[i] = s;
}

ag_series *ag_metric_series(ag_metric *f, const char *const *values)
{
    ag_buf key;
    ag_buf_init(&key, 0);
    /* Length-prefixed values: no choice of label values can collide. */
    for (int i = 0; i < f->nlabels; i++) {
        const char *v = values[i] ? values[i] : "";
        ag_buf_printf(&key, "%zu:", strlen(v));
        ag_buf_appends(&key, v);
    }
    if (!key.data) ag_buf_appends(&key, "");
    pthread_mutex_lock(&f->mu);
    size_t i = hash_str(key.data) & (f->nslots - 1);
    while (f->slots[i]) {
        if (strcmp(f->slots[i]->key, key.data) == 0) {
            ag_series *found = f->slots[i];
            pthread_mutex_unlock(&f->mu);
            ag_buf_release(&key);
            return found;
        }
        i = (i + 1) & (f->nslots - 1);
    }
    ag_series *s = ag_calloc(1, sizeof *s);
    s->family = f;
    s->key = ag_buf_detach(&key, NULL);
    s->values = ag_calloc((size_t)(f->nlabels ? f->nlabels : 1), sizeof *s->values);
    for (int j = 0; j < f->nlabels; j++) s->values[j] = ag_strdup(values[j] ? values[j] : "");
    if (f->type == AG_HISTOGRAM)
        s->buckets = ag_calloc((size_t)f->nbounds, sizeof(_Atomic uint64_t));
    if ((f->nseries + 1) * 2 > f->nslots) {
        size_t n = f->nslots * 2;
        ag_series **slots = ag_calloc(n, sizeof *slots);
        for (size_t j = 0; j < f->nslots; j++)
            if (f->slots[j]) insert_slot(slots, n, f->slots[j]);
        ag_free(f->slots);
        f->slots = slots;
        f->nslots = n;
    }
    insert_slot(f->slots, f->nslots, s);
    f->nseries++;
    pthread_mutex_unlock(&f->mu);
    return s;
}

static double bits_to_d(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static uint64_t d_to_bits(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    return b;
}

static void atomic_add_double(_Atomic uint64_t *p, double v)
{
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(p, &old, d_to_bits(bits_to_d(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

void ag_series_inc(ag_series *s, uint64_t n)
{
    atomic_fetch_add_explicit(&s->count, n, memory_order_relaxed);
}

void ag_series_set(ag_series *s, double v)
{
    atomic_store_explicit(&s->dbits, d_to_bits(v), memory_order_relaxed);
}

void ag_series_add(ag_series *s, double v)
{
    atomic_add_double(&s->dbits, v);
}

double ag_series_value(ag_series *s)
{
    if (s->buckets) return bits_to_d(atomic_load(&s->dbits));
    uint64_t c = atomic_load(&s->count);
    return c ? (double)c : bits_to_d(atomic_load(&s->dbits));
}

uint64_t ag_series_count(ag_series *s)
{
    return atomic_load(&s->count);
}

void ag_series_observe(ag_series *s, double v)
{
    const ag_metric *f = s->family;
    /* Buckets are stored non-cumulative; render accumulates. Values above
     * the last bound only count towards +Inf (the total count). */
    for (int i = 0; i < f->nbounds; i++) {
        if (v <= f->bounds[i]) {
            atomic_fetch_add_explicit(&s->buckets[i], 1, memory_order_relaxed);
            break;
        }
    }
    atomic_add_double(&s->dbits, v);
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
}

static void family_fn(ag_metrics *m, ag_metric_type type, const char *name, const char *help,
                      double (*fn)(void *ud), void *ud)
{
    ag_metric *f = ag_metrics_family(m, type, name, help, 0, NULL, NULL, 0);
    pthread_mutex_lock(&f->mu);
    f->fn = fn;
    f->ud = ud;
    pthread_mutex_unlock(&f->mu);
}

void ag_metrics_gauge_fn(ag_metrics *m, const char *name, const char *help,
                         double (*fn)(void *ud), void *ud)
{
    family_fn(m, AG_GAUGE, name, help, fn, ud);
}

/* Label values escape backslash, double quote and newline; help text escapes
 * backslash and newline (exposition format 0.0.4). */
static void put_escaped(ag_buf *out, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            ag_buf_appends(out, "\\\\");
        else if (*s == '\n')
            ag_buf_appends(out, "\\n");
        else if (quote && *s == '"')
            ag_buf_appends(out, "\\\"");
        else
            ag_buf_append(out, s, 1);
    }
}

/* The shortest decimal that reads back as exactly `v`. */
static void format_shortest(char *out, size_t n, double v)
{
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(out, n, "%.0f", v); /* 10, not 1e+01 */
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, n, "%.*g", prec, v);
        if (strtod(out, NULL) == v) return;
    }
}

static void put_number(ag_buf *out, double v)
{
    if (isnan(v))
        ag_buf_appends(out, "NaN");
    else if (isinf(v))
        ag_buf_appends(out, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        ag_buf_printf(out, "%.0f", v);
    else {
        char num[40];
        format_shortest(num, sizeof num, v);
        ag_buf_appends(out, num);
    }
}

static void put_labels(ag_buf *out, const ag_metric *f, const ag_series *s, const char *le)
{
    if (f->nlabels == 0 && !le) return;
    ag_buf_append(out, "{", 1);
    int n = 0;
    for (int i = 0; i < f->nlabels; i++, n++) {
        if (n) ag_buf_append(out, ",", 1);
        ag_buf_appends(out, f->labels[i]);
        ag_buf_appends(out, "=\"");
        put_escaped(out, s->values[i], true);
        ag_buf_append(out, "\"", 1);
    }
    if (le) ag_buf_printf(out, "%sle=\"%s\"", n ? "," : "", le);
    ag_buf_append(out, "}", 1);
}

static int cmp_series(const void *a, const void *b)
{
    const ag_series *x = *(const ag_series *const *)a, *y = *(const ag_series *const *)b;
    return strcmp(x->key, y->key);
}

static int cmp_family(const void *a, const void *b)
{
    const ag_metric *x = *(const ag_metric *const *)a, *y = *(const ag_metric *const *)b;
    return strcmp(x->name, y->name);
}

static void render_family(ag_metric *f, ag_buf *out)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    pthread_mutex_lock(&f->mu);
    ag_series **list = ag_calloc(f->nseries ? f->nseries : 1, sizeof *list);
    size_t n = 0;
    for (size_t i = 0; i < f->nslots; i++)
        if (f->slots[i]) list[n++] = f->slots[i];
    double (*fn)(void *) = f->fn;
    void *ud = f->ud;
    pthread_mutex_unlock(&f->mu);
    if (n == 0 && !fn) {
        ag_free(list);
        return;
    }
    qsort(list, n, sizeof *list, cmp_series);
    ag_buf_printf(out, "# HELP %s ", f->name);
    put_escaped(out, f->help, false);
    ag_buf_printf(out, "\n# TYPE %s %s\n", f->name, types[f->type]);
    if (fn) {
        ag_buf_appends(out, f->name);
        ag_buf_append(out, " ", 1);
        put_number(out, fn(ud));
        ag_buf_append(out, "\n", 1);
    }
    for (size_t i = 0; i < n; i++) {
        ag_series *s = list[i];
        if (f->type == AG_HISTOGRAM) {
            uint64_t cum = 0;
            for (int b = 0; b < f->nbounds; b++) {
                cum += atomic_load(&s->buckets[b]);
                char le[40];
                format_shortest(le, sizeof le, f->bounds[b]);
                ag_buf_printf(out, "%s_bucket", f->name);
                put_labels(out, f, s, le);
                ag_buf_printf(out, " %llu\n", (unsigned long long)cum);
            }
            uint64_t count = atomic_load(&s->count);
            ag_buf_printf(out, "%s_bucket", f->name);
            put_labels(out, f, s, "+Inf");
            ag_buf_printf(out, " %llu\n", (unsigned long long)count);
            ag_buf_printf(out, "%s_sum", f->name);
            put_labels(out, f, s, NULL);
            ag_buf_append(out, " ", 1);
            put_number(out, bits_to_d(atomic_load(&s->dbits)));
            ag_buf_printf(out, "\n%s_count", f->name);
            put_labels(out, f, s, NULL);
            ag_buf_printf(out, " %llu\n", (unsigned long long)count);
        } else {
            ag_buf_appends(out, f->name);
            put_labels(out, f, s, NULL);
            ag_buf_append(out, " ", 1);
            if (f->type == AG_COUNTER)
                ag_buf_printf(out, "%llu", (unsigned long long)atomic_load(&s->count));
            else
                put_number(out, bits_to_d(atomic_load(&s->dbits)));
            ag_buf_append(out, "\n", 1);
        }
    }
    ag_free(list);
}

int ag_metrics_render(ag_metrics *m, ag_buf *out)
{
    pthread_mutex_lock(&m->mu);
    size_t n = 0;
    for (ag_metric *f = m->families; f; f = f->next) n++;
    ag_metric **fams = ag_calloc(n ? n : 1, sizeof *fams);
    n = 0;
    for (ag_metric *f = m->families; f; f = f->next) fams[n++] = f;
    pthread_mutex_unlock(&m->mu);
    qsort(fams, n, sizeof *fams, cmp_family);
    for (size_t i = 0; i < n; i++) render_family(fams[i], out);
    ag_free(fams);
    return 0;
}

/* ---- Process metrics ---------------------------------------------------- */

static double start_time_s;

static double proc_rss(void *ud)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
    fclose(f);
    return (double)rss * (double)sysconf(_SC_PAGESIZE);
}

static double proc_fds(void *ud)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) return 0;
    double n = 0;
    while (readdir(d)) n++;
    closedir(d);
    return n - 3; /* ".", ".." and the directory's own fd */
}

static double proc_cpu(void *ud)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double proc_start(void *ud)
{
    return start_time_s;
}

void ag_metrics_process(ag_metrics *m)
{
    if (start_time_s == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        start_time_s = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    }
    ag_metrics_gauge_fn(m, "process_resident_memory_bytes", "Resident memory size in bytes.",
                        proc_rss, NULL);
    ag_metrics_gauge_fn(m, "process_open_fds", "Number of open file descriptors.", proc_fds, NULL);
    ag_metrics_gauge_fn(m, "process_start_time_seconds",
                        "Start time of the process since the Unix epoch in seconds.", proc_start,
                        NULL);
    family_fn(m, AG_COUNTER, "process_cpu_seconds_total",
              "Total user and system CPU time spent in seconds.", proc_cpu, NULL);
}
