/*
 * metrics.h — Prometheus metrics: counters, gauges and histograms with labels.
 *
 * A registry owns metric families; a family owns its series (one per set of
 * label values). Series pointers stay valid for the registry's life, so hot
 * paths look a series up once and then update it with atomics only.
 * ag_metrics_render writes the Prometheus text exposition format (0.0.4).
 */
#ifndef AGORA_METRICS_H
#define AGORA_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "agora/mem.h"

typedef struct ag_metrics ag_metrics;
typedef struct ag_metric ag_metric;
typedef struct ag_series ag_series;

typedef enum ag_metric_type { AG_COUNTER, AG_GAUGE, AG_HISTOGRAM } ag_metric_type;

ag_metrics *ag_metrics_new(void);
void ag_metrics_free(ag_metrics *m);
/* The process-wide registry that the built-in /metrics endpoint renders. */
ag_metrics *ag_metrics_default(void);

/* Registers a family, or returns the one already registered under `name`
 * (with the same type and labels; AG_EINVAL-worthy mismatches abort, as they
 * are programming errors). `labels` has `nlabels` names. `bounds` are the
 * histogram's upper bounds in ascending order (NULL: a default set fit for
 * request latencies in seconds). The registry owns the family. */
ag_metric *ag_metrics_family(ag_metrics *m, ag_metric_type type, const char *name,
                             const char *help, int nlabels, const char *const *labels,
                             const double *bounds, int nbounds);

/* The series for `values` (nlabels strings), created on first use. Thread-safe. */
ag_series *ag_metric_series(ag_metric *f, const char *const *values);

void ag_series_inc(ag_series *s, uint64_t n); /* counters */
void ag_series_set(ag_series *s, double v);   /* gauges */
void ag_series_add(ag_series *s, double v);   /* gauges: add (may be negative) */
void ag_series_observe(ag_series *s, double v); /* histograms */
double ag_series_value(ag_series *s);         /* counter or gauge value */
uint64_t ag_series_count(ag_series *s);       /* histogram observation count */

/* A gauge whose value is read by calling fn(ud) at render time. */
void ag_metrics_gauge_fn(ag_metrics *m, const char *name, const char *help,
                         double (*fn)(void *ud), void *ud);

/* Appends the text exposition of every family, sorted by name. */
int ag_metrics_render(ag_metrics *m, ag_buf *out);

/* Registers process_resident_memory_bytes, process_open_fds,
 * process_cpu_seconds_total and process_start_time_seconds. Idempotent. */
void ag_metrics_process(ag_metrics *m);

#endif
