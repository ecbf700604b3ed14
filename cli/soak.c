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
 * samples go to <var>/soak/<start time>.tsv too. The first tenth of the run
 * (at least 60 s) is warm-up: caches fill, pools open. The baseline of a
 * component is its mean RSS over the three samples after the warm-up; its
 * end, the mean over the last three. The run passes when:
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
#define SOAK_WINDOW 3
#define SOAK_SETTLE_S 120

typedef struct series {
    pid_t pid0;
    bool restarted;
    long *rss, *pss; /* KiB per sample; -1 when not readable */
} series;

static double mean(const long *v, int from, int to)
{
    double sum = 0;
    int n = 0;
    for (int i = from; i < to; i++)
        if (v[i] >= 0) {
            sum += (double)v[i];
            n++;
        }
    return n ? sum / n : -1;
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

    int warm = (int)(samples / 10);
    if (warm * sample_s < 60) warm = (int)(60 / sample_s + 0.999);
    if (warm + 2 * SOAK_WINDOW > taken)
        warm = taken > 2 * SOAK_WINDOW ? taken - 2 * SOAK_WINDOW : 0;
    int failed = 0;
    printf("agora soak: memory per component (RSS, KiB): baseline = mean of samples %d-%d, end = "
           "mean of the last %d\n",
           warm + 1, warm + SOAK_WINDOW, SOAK_WINDOW);
    printf("  %-14s %10s %10s %10s %8s  %s\n", "COMPONENT", "BASELINE", "END", "PEAK", "GROWTH",
           "");
    double base_total = 0, end_total = 0;
    for (int i = 0; i < cfg->n; i++) {
        double base = mean(s[i].rss, warm, warm + SOAK_WINDOW);
        double end = mean(s[i].rss, taken - SOAK_WINDOW, taken);
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
