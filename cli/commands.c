/*
 * commands.c — the commands that look at or act on a running platform:
 * status, logs, down, demo and load; and the table `up` prints.
 *
 * They find it through the files the supervisor keeps under var/
 * (run/<name>.pid, log/<name>.log) and through the components' own
 * endpoints (/health, /ready), the registry's Consul API
 * (/v1/health/service/<name>) and the gateway's /admin/breakers.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agora/mem.h"
#include "cli.h"
#include "tour.h"

extern char **environ;

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* ---- the table ---- */

char *cli_table(const cli_config *cfg, const pid_t *pids)
{
    ag_buf b;
    ag_buf_init(&b, 0);
    int w = 9;
    for (int i = 0; i < cfg->n; i++)
        if ((int)strlen(cfg->c[i].name) > w) w = (int)strlen(cfg->c[i].name);
    ag_buf_printf(&b, "  %-*s  %-8s  %-5s  %s\n", w, "COMPONENT", "PID", "PORT", "URL");
    for (int i = 0; i < cfg->n; i++) {
        const cli_component *c = &cfg->c[i];
        pid_t pid = pids ? pids[i] : cli_component_pid(cfg, c->name);
        char pidtxt[16] = "-";
        if (pid > 0) snprintf(pidtxt, sizeof pidtxt, "%d", (int)pid);
        ag_buf_printf(&b, "  %-*s  %-8s  %-5d  %s\n", w, c->name, pidtxt, c->port, c->url);
    }
    cli_component *gw = cli_config_find((cli_config *)cfg, "gateway");
    if (gw) ag_buf_printf(&b, "  API: %s/api/v1\n", gw->url);
    const char *email = cli_config_env(cfg, "AGORA_ADMIN_EMAIL");
    if (email) ag_buf_printf(&b, "  admin: %s (password in AGORA_ADMIN_PASSWORD)\n", email);
    if (b.len && b.data[b.len - 1] == '\n') b.data[--b.len] = '\0';
    return ag_buf_detach(&b, NULL);
}

/* ---- demo ---- */

bool cli_demo_argv(const cli_config *cfg, char *store, size_t n, char **argv)
{
    cli_config *c = (cli_config *)cfg;
    cli_component *gw = cli_config_find(c, "gateway");
    cli_component *cat = cli_config_find(c, "catalog");
    cli_component *users = cli_config_find(c, "users");
    if (!cfg->demo || (!gw && (!cat || !users))) return false;
    /* Through the public API: the gateway's /api (load-demo adds /v1/...),
     * or the two services directly when there is no gateway. */
    if (gw)
        snprintf(store, n, "%s/api%c%s/api", gw->url, '\0', gw->url);
    else
        snprintf(store, n, "%s%c%s", cat->url, '\0', users->url);
    argv[0] = cfg->demo;
    argv[1] = "--catalog";
    argv[2] = store;
    argv[3] = "--users";
    argv[4] = store + strlen(store) + 1;
    argv[5] = NULL;
    return true;
}

static int run_wait(char **argv, char **env)
{
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], NULL, NULL, argv, env);
    if (rc != 0) {
        fprintf(stderr, "agora: cannot run %s: %s\n", argv[0], strerror(rc));
        return 1;
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

int cli_demo(cli_config *cfg, bool load_only)
{
    char store[4096], *argv[8];
    if (!cli_demo_argv(cfg, store, sizeof store, argv)) {
        fprintf(stderr, "agora: no demo loader, or neither a gateway nor users and catalog in %s\n",
                cfg->path);
        return 1;
    }
    fflush(stdout); /* the loader writes to the same stdout */
    int rc = run_wait(argv, cfg->demo_env);
    if (rc != 0) {
        fprintf(stderr, "agora: loading the demo data failed (status %d)\n", rc);
        return 1;
    }
    if (load_only) return 0;
    printf("\n");
    rc = cli_tour(cfg);
    return rc != 0 ? rc : cli_chat_tour(cfg, 9);
}

/* ---- status ---- */

static const char *json_str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* "2 (2 passing)" from the registry's answer for `name`. */
static void instances(const cli_component *reg, const char *name, char *out, size_t n)
{
    snprintf(out, n, "-");
    if (!reg) return;
    char url[512], *body = NULL;
    snprintf(url, sizeof url, "%s/v1/health/service/%s", reg->url, name);
    int st = cli_http_get(url, 1000, &body);
    if (st == 200) {
        json_t *arr = json_loads(body, 0, NULL);
        if (json_is_array(arr)) {
            size_t i, passing = 0;
            json_t *e;
            json_array_foreach(arr, i, e)
            {
                json_t *checks = json_object_get(e, "Checks");
                size_t j;
                json_t *ck;
                bool ok = true;
                json_array_foreach(checks, j, ck)
                {
                    if (strcmp(json_str(ck, "Status"), "passing") != 0) ok = false;
                }
                passing += ok;
            }
            snprintf(out, n, "%zu (%zu passing)", json_array_size(arr), passing);
        }
        json_decref(arr);
    } else if (st > 0) {
        snprintf(out, n, "HTTP %d", st);
    } else {
        snprintf(out, n, "registry down");
    }
    ag_free(body);
}

int cli_status(cli_config *cfg)
{
    char path[4096];
    cli_path(cfg, path, sizeof path, "run", "agora", ".pid");
    pid_t sup = cli_read_pid(path);
    if (sup > 0)
        printf("agora: supervisor running (pid %d); var: %s\n", (int)sup, cli_rel(cfg, cfg->var));
    else
        printf("agora: no supervisor running; var: %s\n", cli_rel(cfg, cfg->var));
    cli_component *reg = cli_config_find(cfg, "registry");
    int w = 9;
    for (int i = 0; i < cfg->n; i++)
        if ((int)strlen(cfg->c[i].name) > w) w = (int)strlen(cfg->c[i].name);
    printf("  %-*s  %-8s  %-5s  %-7s  %-11s  %-8s  %-14s  %s\n", w, "COMPONENT", "PID", "PORT",
           "HEALTH", "READY", "VERSION", "INSTANCES", "URL");
    int bad = 0;
    for (int i = 0; i < cfg->n; i++) {
        cli_component *c = &cfg->c[i];
        pid_t pid = cli_component_pid(cfg, c->name);
        char pidtxt[16] = "-", health[16] = "down", ready[16] = "-", version[32] = "-";
        char inst[64] = "-";
        if (pid > 0) snprintf(pidtxt, sizeof pidtxt, "%d", (int)pid);
        if (c->ready == CLI_READY_TCP) {
            bool up = cli_tcp_ok(c->port, 500);
            snprintf(health, sizeof health, "%s", up ? "ok" : "down");
            snprintf(ready, sizeof ready, "%s", up ? "ready" : "not ready");
            if (!up) bad++;
        } else {
            char url[512], *body = NULL;
            snprintf(url, sizeof url, "http://127.0.0.1:%d/health", c->port);
            int st = cli_http_get(url, 1000, &body);
            if (st == 200) {
                snprintf(health, sizeof health, "ok");
                json_t *j = json_loads(body, 0, NULL);
                const char *v = json_str(j, "version");
                if (*v) snprintf(version, sizeof version, "%s", v);
                json_decref(j);
            } else if (st > 0) {
                snprintf(health, sizeof health, "HTTP %d", st);
            }
            ag_free(body);
            snprintf(url, sizeof url, "http://127.0.0.1:%d%s", c->port, c->ready_path);
            st = cli_http_get(url, 2000, NULL);
            if (st == 200)
                snprintf(ready, sizeof ready, "ready");
            else if (st > 0)
                snprintf(ready, sizeof ready, "not ready");
            if (st != 200) bad++;
            if (strcmp(c->name, "registry") != 0 && strcmp(c->name, "gateway") != 0)
                instances(reg, c->name, inst, sizeof inst);
        }
        printf("  %-*s  %-8s  %-5d  %-7s  %-11s  %-8s  %-14s  %s\n", w, c->name, pidtxt, c->port,
               health, ready, version, inst, c->url);
    }
    cli_component *gw = cli_config_find(cfg, "gateway");
    if (gw) {
        char url[512], *body = NULL;
        snprintf(url, sizeof url, "%s/admin/breakers", gw->url);
        int st = cli_http_get(url, 1000, &body);
        json_t *j = st == 200 ? json_loads(body, 0, NULL) : NULL;
        json_t *data = json_object_get(j, "data");
        if (json_is_array(data)) {
            printf("breakers (gateway):\n");
            size_t i;
            json_t *b;
            json_array_foreach(data, i, b)
            {
                printf("  %-*s  %s\n", w, json_str(b, "name"), json_str(b, "state"));
            }
            if (json_array_size(data) == 0) printf("  (none yet)\n");
        } else {
            printf("breakers (gateway): not available (%s)\n",
                   st > 0 ? "no /admin/breakers" : "gateway not answering");
        }
        json_decref(j);
        ag_free(body);
    }
    if (bad) printf("agora: %d of %d not ready\n", bad, cfg->n);
    return bad ? 1 : 0;
}

/* ---- down ---- */

static bool wait_gone(pid_t pid, uint64_t ms)
{
    for (uint64_t t = 0; t < ms; t += 50) {
        if (!cli_pid_alive(pid)) return true;
        sleep_ms(50);
    }
    return !cli_pid_alive(pid);
}

/* Whether `pid` runs `exec` (the pid file may be stale and the pid reused). */
static bool runs(pid_t pid, const char *exec)
{
    char link[64], target[4096];
    snprintf(link, sizeof link, "/proc/%d/exe", (int)pid);
    ssize_t n = readlink(link, target, sizeof target - 1);
    const char *want = strrchr(exec, '/') ? strrchr(exec, '/') + 1 : exec;
    if (n > 0) {
        target[n] = '\0';
        char *del = strstr(target, " (deleted)");
        if (del) *del = '\0';
        const char *base = strrchr(target, '/') ? strrchr(target, '/') + 1 : target;
        return strcmp(base, want) == 0;
    }
    char comm[64];
    cli_proc_name(pid, comm, sizeof comm);
    return strncmp(comm, want, strlen(comm)) == 0 && comm[0];
}

static int stop_pid(const cli_config *cfg, const char *name, pid_t pid)
{
    printf("agora: stopping %s (pid %d)\n", name, (int)pid);
    fflush(stdout);
    kill(pid, SIGTERM);
    if (wait_gone(pid, cfg->drain_timeout_ms)) return 0;
    fprintf(stderr, "agora: %s did not stop in %llu s; killing it\n", name,
            (unsigned long long)(cfg->drain_timeout_ms / 1000));
    kill(pid, SIGKILL);
    return wait_gone(pid, 2000) ? 0 : 1;
}

int cli_down(cli_config *cfg)
{
    char path[4096];
    int stopped = 0, rc = 0;
    cli_path(cfg, path, sizeof path, "run", "agora", ".pid");
    pid_t sup = cli_read_pid(path);
    if (sup > 0) {
        /* The supervisor stops its children in reverse order itself; give it
         * a drain timeout per component, then finish the job below. */
        printf("agora: stopping the supervisor (pid %d) and what it runs\n", (int)sup);
        fflush(stdout);
        kill(sup, SIGTERM);
        if (!wait_gone(sup, cfg->drain_timeout_ms * (uint64_t)cfg->n + 5000)) {
            fprintf(stderr, "agora: the supervisor did not stop; killing it\n");
            kill(sup, SIGKILL);
            wait_gone(sup, 2000);
        }
        stopped++;
    }
    unlink(path);
    /* Leftovers: a supervisor killed with SIGKILL, or scripts of old. */
    for (int i = cfg->n - 1; i >= 0; i--) {
        cli_component *c = &cfg->c[i];
        cli_path(cfg, path, sizeof path, "run", c->name, ".pid");
        pid_t pid = cli_read_pid(path);
        if (pid > 0 && runs(pid, c->exec)) {
            rc |= stop_pid(cfg, c->name, pid);
            stopped++;
        }
        unlink(path);
    }
    if (stopped == 0)
        printf("agora: nothing was running\n");
    else if (rc == 0)
        printf("agora: stopped\n");
    return rc;
}

/* ---- logs ---- */

typedef struct logline {
    char key[40]; /* the line's "time", or the previous line's */
    int src;
    size_t seq;
    char *text;
} logline;

static int cmp_lines(const void *a, const void *b)
{
    const logline *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    if (c) return c;
    if (x->src != y->src) return x->src - y->src;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void time_key(const char *line, char *key, size_t n)
{
    const char *t = strstr(line, "\"time\":\"");
    if (!t) return;
    t += 8;
    size_t len = strcspn(t, "\"");
    if (len >= n) len = n - 1;
    memcpy(key, t, len);
    key[len] = '\0';
}

static void print_line(const char *name, int w, int idx, bool color, bool prefix, const char *s,
                       size_t len)
{
    static const char *const palette[] = {"36", "32", "33", "35", "34",
                                          "31", "96", "92", "93", "95"};
    if (!prefix)
        printf("%.*s\n", (int)len, s);
    else if (color)
        printf("\x1b[%sm%-*s |\x1b[0m %.*s\n", palette[idx % 10], w, name, (int)len, s);
    else
        printf("%-*s | %.*s\n", w, name, (int)len, s);
}

int cli_logs(cli_config *cfg, const char *service, bool follow, int lines)
{
    const char *names[CLI_MAX_COMPONENTS + 2];
    int idx[CLI_MAX_COMPONENTS + 2], n = 0;
    if (service) {
        bool known = cli_config_find(cfg, service) || strcmp(service, "agora") == 0 ||
                     strcmp(service, "demo") == 0;
        if (!known) {
            fprintf(stderr, "agora: no component named %s; one of:", service);
            for (int i = 0; i < cfg->n; i++)
                fprintf(stderr, " %s", cfg->c[i].name);
            fprintf(stderr, " agora demo\n");
            return 1;
        }
        names[0] = service;
        idx[0] = 0;
        n = 1;
    } else {
        for (int i = 0; i < cfg->n; i++) {
            names[n] = cfg->c[i].name;
            idx[n++] = i;
        }
    }
    const char *nc = getenv("NO_COLOR");
    bool color = isatty(1) && !(nc && *nc);
    bool prefix = n > 1;
    int w = 0;
    for (int i = 0; i < n; i++)
        if ((int)strlen(names[i]) > w) w = (int)strlen(names[i]);
    off_t offs[CLI_MAX_COMPONENTS + 2];
    logline *all = NULL;
    size_t count = 0, cap = 0;
    int found = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        cli_path(cfg, path, sizeof path, "log", names[i], ".log");
        offs[i] = 0;
        FILE *f = fopen(path, "re");
        if (!f) continue;
        found++;
        /* Keep the last `lines` lines of the file. */
        char **ring = ag_calloc((size_t)lines, sizeof *ring);
        size_t seen = 0;
        char *line = NULL;
        size_t lcap = 0;
        ssize_t len;
        while ((len = getline(&line, &lcap, f)) >= 0) {
            if (len > 0 && line[len - 1] == '\n') line[len - 1] = '\0';
            size_t slot = seen++ % (size_t)lines;
            ag_free(ring[slot]);
            ring[slot] = ag_strdup(line);
        }
        free(line);
        offs[i] = ftello(f);
        fclose(f);
        size_t keep = seen < (size_t)lines ? seen : (size_t)lines;
        char key[40] = "";
        for (size_t k = 0; k < keep; k++) {
            size_t slot = (seen - keep + k) % (size_t)lines;
            if (count == cap) {
                cap = cap ? cap * 2 : 256;
                all = ag_realloc(all, cap * sizeof *all);
            }
            time_key(ring[slot], key, sizeof key);
            logline *l = &all[count++];
            snprintf(l->key, sizeof l->key, "%s", key);
            l->src = i;
            l->seq = k;
            l->text = ring[slot];
            ring[slot] = NULL;
        }
        for (int k = 0; k < lines; k++)
            ag_free(ring[k]);
        ag_free(ring);
    }
    if (found == 0 && !follow) {
        fprintf(stderr, "agora: no logs under %s/log yet\n", cli_rel(cfg, cfg->var));
        return 1;
    }
    /* Interleave by time; lines without one stay after their predecessor. */
    if (prefix) qsort(all, count, sizeof *all, cmp_lines);
    size_t from = prefix && count > (size_t)lines ? count - (size_t)lines : 0;
    for (size_t k = 0; k < count; k++) {
        if (k >= from)
            print_line(names[all[k].src], w, idx[all[k].src], color, prefix, all[k].text,
                       strlen(all[k].text));
        ag_free(all[k].text);
    }
    ag_free(all);
    fflush(stdout);
    if (!follow) return 0;
    /* Follow: poll the files and print what was appended (a file that
     * shrank was truncated or replaced; read it from the start). */
    ag_buf part[CLI_MAX_COMPONENTS + 2];
    for (int i = 0; i < n; i++)
        ag_buf_init(&part[i], 1 << 20);
    for (;;) {
        for (int i = 0; i < n; i++) {
            char path[4096];
            cli_path(cfg, path, sizeof path, "log", names[i], ".log");
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) continue;
            struct stat st;
            if (fstat(fd, &st) == 0 && st.st_size < offs[i]) offs[i] = 0;
            lseek(fd, offs[i], SEEK_SET);
            char buf[16384];
            ssize_t r;
            while ((r = read(fd, buf, sizeof buf)) > 0) {
                offs[i] += r;
                for (ssize_t k = 0; k < r; k++) {
                    if (buf[k] == '\n') {
                        print_line(names[i], w, idx[i], color, prefix,
                                   part[i].data ? part[i].data : "", part[i].len);
                        part[i].len = 0;
                    } else if (ag_buf_append(&part[i], &buf[k], 1) < 0) {
                        part[i].len = 0;
                    }
                }
            }
            close(fd);
        }
        fflush(stdout);
        sleep_ms(200);
    }
}

/* ---- load ---- */

typedef struct loader {
    const char *base;
    char **ids;
    size_t nids;
    double until;
    unsigned seed;
    double *lat; /* ms */
    size_t n, cap, errors;
    pthread_t th;
} loader;

static const char *const words[] = {"coffee", "lamp", "book", "shirt", "chair", "tea", "pen"};

static void *load_thread(void *arg)
{
    loader *l = arg;
    for (size_t k = 0; mono_s() < l->until; k++) {
        char url[1024];
        switch (k % 3) {
        case 0:
            snprintf(url, sizeof url, "%s/products?limit=20&page=%u", l->base,
                     1 + rand_r(&l->seed) % 3);
            break;
        case 1:
            snprintf(url, sizeof url, "%s/products/%s", l->base,
                     l->ids[(size_t)rand_r(&l->seed) % l->nids]);
            break;
        default:
            snprintf(url, sizeof url, "%s/products?q=%s", l->base,
                     words[(size_t)rand_r(&l->seed) % (sizeof words / sizeof *words)]);
        }
        double t0 = mono_s();
        int st = cli_http_get(url, 5000, NULL);
        double ms = (mono_s() - t0) * 1000.0;
        if (st < 200 || st >= 400) l->errors++;
        if (l->n == l->cap) {
            l->cap = l->cap ? l->cap * 2 : 1024;
            l->lat = ag_realloc(l->lat, l->cap * sizeof *l->lat);
        }
        l->lat[l->n++] = ms;
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int cli_load(cli_config *cfg, const char *url, double duration_s, int concurrency)
{
    char base[512];
    cli_component *gw = cli_config_find(cfg, "gateway");
    cli_component *cat = cli_config_find(cfg, "catalog");
    if (url)
        snprintf(base, sizeof base, "%s", url);
    else if (gw)
        snprintf(base, sizeof base, "%s/api/v1", gw->url);
    else if (cat)
        snprintf(base, sizeof base, "%s/v1", cat->url);
    else {
        fprintf(stderr, "agora: no gateway or catalog in %s; give --url\n", cfg->path);
        return 1;
    }
    size_t blen = strlen(base);
    while (blen > 0 && base[blen - 1] == '/')
        base[--blen] = '\0';
    char list[600], *body = NULL;
    snprintf(list, sizeof list, "%s/products?limit=100", base);
    int st = cli_http_get(list, 5000, &body);
    json_t *j = st == 200 ? json_loads(body, 0, NULL) : NULL;
    ag_free(body);
    json_t *data = json_object_get(j, "data");
    if (!json_is_array(data) || json_array_size(data) == 0) {
        fprintf(stderr, "agora: GET %s: %s; is agora up with its demo data (agora demo)?\n", list,
                st < 0                ? "no answer"
                : json_is_array(data) ? "no products"
                                      : "unexpected answer");
        json_decref(j);
        return 1;
    }
    size_t nids = json_array_size(data);
    char **ids = ag_calloc(nids, sizeof *ids);
    for (size_t i = 0; i < nids; i++) {
        json_t *id = json_object_get(json_array_get(data, i), "id");
        char tmp[64];
        if (json_is_integer(id))
            snprintf(tmp, sizeof tmp, "%lld", (long long)json_integer_value(id));
        else
            snprintf(tmp, sizeof tmp, "%s", json_is_string(id) ? json_string_value(id) : "0");
        ids[i] = ag_strdup(tmp);
    }
    json_decref(j);
    printf("agora: %d clients browsing %s for %.0f s...\n", concurrency, base, duration_s);
    fflush(stdout);
    loader *ls = ag_calloc((size_t)concurrency, sizeof *ls);
    double t0 = mono_s();
    for (int i = 0; i < concurrency; i++) {
        ls[i] = (loader){.base = base,
                         .ids = ids,
                         .nids = nids,
                         .until = t0 + duration_s,
                         .seed = (unsigned)(i * 7919 + 17)};
        pthread_create(&ls[i].th, NULL, load_thread, &ls[i]);
    }
    size_t total = 0, errors = 0;
    for (int i = 0; i < concurrency; i++) {
        pthread_join(ls[i].th, NULL);
        total += ls[i].n;
        errors += ls[i].errors;
    }
    double elapsed = mono_s() - t0;
    double *lat = ag_calloc(total ? total : 1, sizeof *lat);
    size_t k = 0;
    for (int i = 0; i < concurrency; i++) {
        memcpy(lat + k, ls[i].lat, ls[i].n * sizeof *lat);
        k += ls[i].n;
        ag_free(ls[i].lat);
    }
    qsort(lat, total, sizeof *lat, cmp_double);
    double p50 = total ? lat[total / 2] : 0, p99 = total ? lat[(total * 99) / 100] : 0;
    printf("requests: %zu in %.1f s, %.1f req/s, %zu errors\n", total, elapsed,
           (double)total / elapsed, errors);
    printf("latency:  p50 %.2f ms, p99 %.2f ms\n", p50, p99);
    ag_free(lat);
    ag_free(ls);
    for (size_t i = 0; i < nids; i++)
        ag_free(ids[i]);
    ag_free(ids);
    return total > 0 && errors < total ? 0 : 1;
}
