/*
 * soak.c — `agora soak`: steady mixed traffic for a long time, every
 * process's memory sampled, then the invariants (workload.h).
 *
 *   agora soak [--duration S] [--sample S] [--seed N]
 *
 * On a system started by `agora up`, through the gateway: two customers
 * checking out, two members chatting (and the watcher on a WebSocket), two
 * people browsing, searching and filling carts, each pausing about 0.5 s
 * between actions (some 10–15 requests a second in all: a soak is about
 * time, not load, and leaves the machine's two cores mostly free).
 *
 * Every `sample` seconds (30) each component's RSS and PSS are read from
 * /proc/<pid>/smaps_rollup and printed as one line with the totals; the
 * samples go to <var>/soak/<start time>.tsv too. The first half of the run
 * is warm-up: pools open, page caches and the bounded stores fill (the
 * trace store takes some twenty minutes of this traffic to reach its 64 MiB
 * bound, and is flat from then on). A component's baseline is its median
 * RSS over the third quarter of the run, its end the median over the last
 * quarter: medians, since a garbage-collected broker breathes by a quarter
 * of its size from one sample to the next. A leak of any steady rate shows
 * as the distance between the two. The run passes when:
 *   - every component's end is within 10% of its baseline (or within 1 MiB:
 *     allocator granularity on a 5 MiB process is not a leak);
 *   - no component restarted (its pid is the same at the end);
 *   - the workload's invariants hold.
 * A table of baseline, end, peak and growth per component is printed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "agora/error.h"
#include "agora/mem.h"
#include "tour.h"
#include "workload.h"

#define SOAK_TOLERANCE 0.10
#define SOAK_FLOOR_KB 1024
#define SOAK_SETTLE_S 120

typedef struct series {
    pid_t pid0;
    bool restarted;
    long *rss, *pss; /* KiB per sample; -1 when not readable */
} series;

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return x < y ? -1 : x > y;
}

/* The median of v[from..to) leaving out unreadable samples (-1); -1 when
 * there are none. */
static double median(const long *v, int from, int to)
{
    long *w = ag_calloc((size_t)(to - from) + 1, sizeof *w);
    int n = 0;
    for (int i = from; i < to; i++)
        if (v[i] >= 0) w[n++] = v[i];
    qsort(w, (size_t)n, sizeof *w, cmp_long);
    double m = n == 0 ? -1 : n % 2 ? (double)w[n / 2] : (w[n / 2 - 1] + w[n / 2]) / 2.0;
    ag_free(w);
    return m;
}

int cli_soak(cli_config *cfg, double duration_s, double sample_s, uint64_t seed)
{
    if (seed == 0) seed = (uint64_t)time(NULL);
    for (int i = 0; i < cfg->n; i++)
        if (cli_component_pid(cfg, cfg->c[i].name) <= 0 || !cli_component_ready(&cfg->c[i], 2000)) {
            fprintf(stderr, "agora soak: %s is not up: start everything with agora up -d\n",
                    cfg->c[i].name);
            return 1;
        }
    int samples = (int)(duration_s / sample_s) + 1;
    series *s = ag_calloc((size_t)cfg->n, sizeof *s);
    for (int i = 0; i < cfg->n; i++) {
        s[i].pid0 = cli_component_pid(cfg, cfg->c[i].name);
        s[i].rss = ag_calloc((size_t)samples + 1, sizeof(long));
        s[i].pss = ag_calloc((size_t)samples + 1, sizeof(long));
    }
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/soak", cfg->var);
    (void)mkdir(dir, 0755);
    time_t start = time(NULL);
    struct tm tm;
    gmtime_r(&start, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    snprintf(path, sizeof path, "%s/%s.tsv", dir, stamp);
    FILE *tsv = fopen(path, "w");
    if (tsv) {
        fprintf(tsv, "t_s");
        for (int i = 0; i < cfg->n; i++)
            fprintf(tsv, "\t%s_rss_kb\t%s_pss_kb", cfg->c[i].name, cfg->c[i].name);
        fprintf(tsv, "\n");
    }
    wl_opts o = {.shoppers = 2,
                 .chatters = 2,
                 .browsers = 2,
                 .stock = 1000000,
                 .pause_s = 0.5,
                 .seed = seed};
    printf("agora soak: %.0f s of mixed traffic (seed %llu), memory sampled every %.0f s into %s\n",
           duration_s, (unsigned long long)seed, sample_s, cli_rel(cfg, path));
    fflush(stdout);
    workload *w;
    if (wl_setup(&w, cfg, &o) < 0 || wl_start(w) < 0) {
        wl_free(w);
        if (tsv) fclose(tsv);
        for (int i = 0; i < cfg->n; i++) {
            ag_free(s[i].rss);
            ag_free(s[i].pss);
        }
        ag_free(s);
        return 1;
    }
    double t0 = tour_now_s();
    int taken = 0;
    while (taken < samples) {
        double due = t0 + taken * sample_s;
        while (tour_now_s() < due)
            tour_pause_ms(200);
        long rss_total = 0, pss_total = 0;
        if (tsv) fprintf(tsv, "%.0f", tour_now_s() - t0);
        for (int i = 0; i < cfg->n; i++) {
            pid_t pid = cli_component_pid(cfg, cfg->c[i].name);
            long rss = -1, pss = -1;
            if (pid != s[i].pid0) s[i].restarted = true;
            if (pid > 0) (void)cli_proc_mem(pid, &rss, &pss);
            s[i].rss[taken] = rss;
            s[i].pss[taken] = pss;
            if (rss > 0) rss_total += rss;
            if (pss > 0) pss_total += pss;
            if (tsv) fprintf(tsv, "\t%ld\t%ld", rss, pss);
        }
        if (tsv) {
            fprintf(tsv, "\n");
            fflush(tsv);
        }
        wl_counts c;
        wl_counts_get(w, &c);
        printf("  %6.0f s  RSS %7.1f MiB  PSS %7.1f MiB  orders %ld  messages %ld  browses %ld\n",
               tour_now_s() - t0, rss_total / 1024.0, pss_total / 1024.0, c.orders_accepted,
               c.messages_acked, c.browses);
        fflush(stdout);
        taken++;
    }
    if (tsv) fclose(tsv);

    /* the third quarter and the last (at least one sample each) */
    int q3 = taken / 2, q4 = (taken * 3) / 4;
    if (q4 <= q3) q4 = q3 + 1 < taken ? q3 + 1 : taken;
    if (q3 >= q4) q3 = q4 > 0 ? q4 - 1 : 0;
    int failed = 0;
    printf("agora soak: memory per component (RSS, KiB): baseline = median of samples %d-%d "
           "(%.0f-%.0f s), end = median of samples %d-%d (%.0f-%.0f s)\n",
           q3 + 1, q4, q3 * sample_s, (q4 - 1) * sample_s, q4 + 1, taken, q4 * sample_s,
           (taken - 1) * sample_s);
    printf("  %-14s %10s %10s %10s %8s  %s\n", "COMPONENT", "BASELINE", "END", "PEAK", "GROWTH",
           "");
    double base_total = 0, end_total = 0;
    for (int i = 0; i < cfg->n; i++) {
        double base = median(s[i].rss, q3, q4);
        double end = median(s[i].rss, q4, taken);
        long peak = 0;
        for (int k = 0; k < taken; k++)
            if (s[i].rss[k] > peak) peak = s[i].rss[k];
        double growth = base > 0 ? (end - base) / base : 0;
        bool ok = !s[i].restarted && base > 0 && end > 0 &&
                  (growth <= SOAK_TOLERANCE || end - base <= SOAK_FLOOR_KB);
        base_total += base > 0 ? base : 0;
        end_total += end > 0 ? end : 0;
        printf("  %-14s %10.0f %10.0f %10ld %+7.1f%%  %s\n", cfg->c[i].name, base, end, peak,
               growth * 100,
               ok               ? "ok"
               : s[i].restarted ? "FAIL (restarted)"
                                : "FAIL (grew)");
        failed += !ok;
    }
    printf("  %-14s %10.0f %10.0f %10s %+7.1f%%\n", "all", base_total, end_total, "",
           base_total > 0 ? (end_total - base_total) / base_total * 100 : 0);
    printf("agora soak: the traffic stops; the invariants:\n");
    fflush(stdout);
    int rc = wl_check(w, stdout, SOAK_SETTLE_S);
    wl_free(w);
    for (int i = 0; i < cfg->n; i++) {
        ag_free(s[i].rss);
        ag_free(s[i].pss);
    }
    ag_free(s);
    rc |= failed ? 1 : 0;
    printf("agora soak: %s\n",
           rc == 0 ? "memory flat, nothing restarted, every invariant holds" : "FAILED");
    return rc;
}
