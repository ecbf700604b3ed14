/*
 * chaos.c — `agora chaos`: faults while people use the system, then the
 * invariants (workload.h).
 *
 *   agora chaos [--duration S] [--seed N] [--concurrency N]
 *
 * It works on a system started by `agora up` (its supervisor restarts what
 * is killed) and goes through the gateway like any client:
 *
 *   SETUP ──products, people, room──> FAULTS ──duration──> MEND ──all ready──> CHECK
 *     │ (the system is not there: exit 1)      │ SIGINT: to MEND at once       │
 *     └────────────────────────────────────────┴──────────── exit 0 (all hold) or 1
 *
 * FAULTS: the workload runs (customers checking out, members chatting, a
 * watcher on a WebSocket) and every 0.8–2.5 s one fault: first on the
 * broker and the database server (each once), then at random:
 *
 *   kill    SIGKILL of a component of the config, the broker (nats) among
 *           them: the supervisor restarts it after its backoff (1 s,
 *           doubling). With SQLite each service's database lives in its
 *           process, so this is also the database dying mid-transaction.
 *   pause   SIGSTOP for 0.3–2.5 s, then SIGCONT: a process that hangs (a
 *           stalled disk, a long pause) with its sockets open, so callers
 *           meet timeouts rather than refusals.
 *
 * A database or broker that is not a component (PostgreSQL or RabbitMQ
 * named by AGORA_DB / AGORA_BUS, on this machine) is faulted too: PostgreSQL
 * by pausing the postmaster and its backends, or by killing one backend
 * (the postmaster then ends every session and recovers: a database crash as
 * the services see it, with no one needed to start it again); RabbitMQ by
 * pausing it, since nothing here would restart it.
 *
 * MEND: every paused process is continued (also on SIGINT and on every
 * exit path), and the run waits up to 120 s until every component answers
 * its readiness probe. CHECK: workload.c's invariants, printed.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agora/error.h"
#include "tour.h"
#include "workload.h"

#define CHAOS_MEND_S 120   /* how long the components may take to be ready again */
#define CHAOS_SETTLE_S 180 /* how long the outcomes may take after that */
#define CHAOS_MAX_TARGETS (CLI_MAX_COMPONENTS + 2)
#define CHAOS_MAX_CHILDREN 256

typedef enum { T_COMPONENT, T_POSTGRES, T_RABBITMQ } target_kind;

typedef struct target {
    target_kind kind;
    bool store_or_bus; /* the broker or the database server: faulted first */
    char name[64];
    int port; /* for the external ones: who listens there */
    long kills, pauses;
} target;

static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

/* Paused processes, continued at MEND whatever happens. */
static pid_t g_paused[CHAOS_MAX_CHILDREN + 1];
static int g_npaused;

static void continue_all(void)
{
    for (int i = 0; i < g_npaused; i++)
        kill(g_paused[i], SIGCONT);
    g_npaused = 0;
}

static uint64_t g_rnd;

static double unit_rand(void)
{
    g_rnd ^= g_rnd << 13;
    g_rnd ^= g_rnd >> 7;
    g_rnd ^= g_rnd << 17;
    return (double)(g_rnd >> 11) / (double)(1ull << 53);
}

/* The port of a URL's authority ("postgres://u:p@127.0.0.1:5432/db"), or 0. */
static int url_port(const char *url)
{
    const char *p = strstr(url, "://");
    if (!p) return 0;
    p += 3;
    const char *at = strchr(p, '@'), *slash = strchr(p, '/');
    if (at && (!slash || at < slash)) p = at + 1;
    const char *colon = strchr(p, ':');
    if (!colon || (slash && colon > slash)) return 0;
    long port = strtol(colon + 1, NULL, 10);
    return port > 0 && port < 65536 ? (int)port : 0;
}

static int find_targets(const cli_config *cfg, target *t)
{
    int n = 0;
    for (int i = 0; i < cfg->n; i++) {
        t[n] = (target){.kind = T_COMPONENT,
                        .port = cfg->c[i].port,
                        .store_or_bus = strncmp(cfg->c[i].url, "nats://", 7) == 0};
        snprintf(t[n].name, sizeof t[n].name, "%s", cfg->c[i].name);
        n++;
    }
    const char *db = cli_config_env(cfg, "AGORA_DB"), *bus = cli_config_env(cfg, "AGORA_BUS");
    if (db && strncmp(db, "postgres", 8) == 0 && url_port(db) > 0) {
        t[n] = (target){.kind = T_POSTGRES, .port = url_port(db), .store_or_bus = true};
        snprintf(t[n].name, sizeof t[n].name, "postgresql:%d", t[n].port);
        n++;
    }
    if (bus && strncmp(bus, "amqp", 4) == 0) {
        int port = url_port(bus);
        t[n] = (target){.kind = T_RABBITMQ, .port = port > 0 ? port : 5672, .store_or_bus = true};
        snprintf(t[n].name, sizeof t[n].name, "rabbitmq:%d", t[n].port);
        n++;
    }
    return n;
}

/* One fault on `t`; prints what it did. */
static void fault(const cli_config *cfg, target *t, double at)
{
    pid_t pid =
        t->kind == T_COMPONENT ? cli_component_pid(cfg, t->name) : cli_port_owner(t->port, NULL, 0);
    if (pid <= 0) {
        printf("  %6.1f s  %-16s not running (restarting?): no fault\n", at, t->name);
        return;
    }
    bool pause = t->kind == T_RABBITMQ || unit_rand() < 0.4;
    if (!pause && t->kind == T_POSTGRES) {
        /* a backend, not the postmaster: it recovers by itself */
        pid_t kids[CHAOS_MAX_CHILDREN];
        int n = cli_children(pid, kids, CHAOS_MAX_CHILDREN);
        if (n <= 0) {
            pause = true;
        } else {
            pid_t victim = kids[(int)(unit_rand() * n)];
            kill(victim, SIGKILL);
            t->kills++;
            printf("  %6.1f s  %-16s kill   backend %d: the postmaster resets every session\n", at,
                   t->name, (int)victim);
            return;
        }
    }
    if (!pause) {
        kill(pid, SIGKILL);
        t->kills++;
        printf("  %6.1f s  %-16s kill   pid %d\n", at, t->name, (int)pid);
        return;
    }
    double hold = 0.3 + unit_rand() * 2.2;
    g_npaused = 0;
    g_paused[g_npaused++] = pid;
    if (t->kind == T_POSTGRES) {
        int n = cli_children(pid, g_paused + 1, CHAOS_MAX_CHILDREN);
        if (n > 0) g_npaused += n;
    }
    for (int i = 0; i < g_npaused; i++)
        kill(g_paused[i], SIGSTOP);
    t->pauses++;
    printf("  %6.1f s  %-16s pause  pid %d%s for %.1f s\n", at, t->name, (int)pid,
           g_npaused > 1 ? " and its children" : "", hold);
    fflush(stdout);
    for (double left = hold; left > 0 && !g_interrupted; left -= 0.1)
        tour_pause_ms(100);
    continue_all();
}

/* Waits until every component answers ready; the names of those that do
 * not after `budget_s` go to `late`. */
static bool all_ready(const cli_config *cfg, double budget_s, char *late, size_t n)
{
    double end = tour_now_s() + budget_s;
    for (;;) {
        late[0] = '\0';
        size_t off = 0;
        for (int i = 0; i < cfg->n; i++) {
            const cli_component *c = &cfg->c[i];
            if (cli_component_pid(cfg, c->name) > 0 && cli_component_ready(c, 1000)) continue;
            off += (size_t)snprintf(late + off, off < n ? n - off : 0, "%s%s", off ? ", " : "",
                                    c->name);
        }
        if (!late[0]) return true;
        if (tour_now_s() > end) return false;
        tour_pause_ms(250);
    }
}

int cli_chaos(cli_config *cfg, double duration_s, uint64_t seed, int concurrency)
{
    if (seed == 0) seed = (uint64_t)time(NULL);
    g_rnd = seed * 0x9E3779B97F4A7C15ull | 1;
    target targets[CHAOS_MAX_TARGETS];
    int nt = find_targets(cfg, targets);
    char late[1024];
    if (!all_ready(cfg, 5, late, sizeof late)) {
        fprintf(stderr, "agora chaos: not everything is up (%s): start it with agora up -d\n",
                late);
        return 1;
    }
    /* the chat's traffic when the chat runs (rooms, messages and the
     * realtime of notifications), the shop's when orders does */
    bool chat = cli_config_find(cfg, "rooms") && cli_config_find(cfg, "messages") &&
                cli_config_find(cfg, "notifications");
    bool shop = cli_config_find(cfg, "orders") != NULL;
    wl_opts o = {.shoppers = shop ? concurrency : 0,
                 .chatters = chat ? (concurrency > 1 ? concurrency / 2 : 1) : 0,
                 /* enough for about half the run: later orders are
                  * cancelled for want of stock, the oversell case */
                 .stock = 10 + (int)(duration_s * concurrency / 4),
                 .pause_s = 0.4,
                 .seed = seed};
    printf("agora chaos: seed %llu (AGORA_CHAOS_SEED or --seed replays the choices), %.0f s of "
           "faults on %d targets while %d customers check out and %d people chat\n",
           (unsigned long long)seed, duration_s, nt, o.shoppers, o.chatters);
    fflush(stdout);
    workload *w;
    if (wl_setup(&w, cfg, &o) < 0 || wl_start(w) < 0) {
        wl_free(w);
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal}, old_int, old_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    /* The broker and the database server first, so that every run has them
     * fail at least once; then anything at random. */
    int first[CHAOS_MAX_TARGETS], nfirst = 0, made = 0;
    for (int i = 0; i < nt; i++)
        if (targets[i].store_or_bus) first[nfirst++] = i;
    double t0 = tour_now_s();
    while (!g_interrupted && tour_now_s() - t0 < duration_s) {
        double wait = 0.8 + unit_rand() * 1.7;
        for (; wait > 0 && !g_interrupted && tour_now_s() - t0 < duration_s; wait -= 0.1)
            tour_pause_ms(100);
        if (g_interrupted || tour_now_s() - t0 >= duration_s) break;
        int pick = made < nfirst ? first[made] : (int)(unit_rand() * nt);
        made++;
        fault(cfg, &targets[pick], tour_now_s() - t0);
        fflush(stdout);
    }
    continue_all();
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);

    long kills = 0, pauses = 0;
    char hit[1024] = "";
    size_t off = 0;
    for (int i = 0; i < nt; i++) {
        kills += targets[i].kills;
        pauses += targets[i].pauses;
        if (targets[i].kills + targets[i].pauses && off < sizeof hit)
            off += (size_t)snprintf(hit + off, sizeof hit - off, "%s%s %ld/%ld", off ? ", " : "",
                                    targets[i].name, targets[i].kills, targets[i].pauses);
    }
    wl_counts c;
    wl_counts_get(w, &c);
    printf("agora chaos: %.0f s, %ld kills and %ld pauses (kills/pauses: %s); %ld orders "
           "accepted, %ld messages acknowledged, %ld sent without an answer\n",
           tour_now_s() - t0, kills, pauses, hit[0] ? hit : "none", c.orders_accepted,
           c.messages_acked, c.messages_unanswered);
    printf("agora chaos: the traffic stops; waiting for every component to be ready again\n");
    fflush(stdout);
    int rc = 1;
    if (!all_ready(cfg, CHAOS_MEND_S, late, sizeof late)) {
        printf("  FAIL  not ready %d s after the faults: %s (agora status, agora logs)\n",
               CHAOS_MEND_S, late);
        wl_stop(w);
    } else {
        printf("agora chaos: every component is ready; the invariants:\n");
        fflush(stdout);
        rc = wl_check(w, stdout, CHAOS_SETTLE_S);
    }
    printf("agora chaos: %s (seed %llu)\n", rc == 0 ? "every invariant holds" : "FAILED",
           (unsigned long long)seed);
    wl_free(w);
    return rc;
}
