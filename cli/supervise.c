/*
 * supervise.c — `agora up`: the supervisor.
 *
 * One libuv loop runs everything: the children (uv_spawn, each in its own
 * session so that a terminal's Ctrl-C reaches the supervisor only and the
 * stop order stays ours), their stdout and stderr (pipes, split into lines,
 * appended to var/log/<name>.log and, in the foreground, printed with a
 * coloured name prefix), readiness probes (on libuv's thread pool, since
 * they are blocking GETs), backoff timers and the signals.
 *
 * The supervisor's phases:
 *
 *   STARTING --all ready, demo loaded--> RUNNING --SIGINT/SIGTERM--> STOPPING
 *      |                                                                ^
 *      +--a component exits or is not ready in time (exit code 1)-------+
 *
 * A component's states:
 *
 *   IDLE -spawn-> STARTING -/ready 200-> READY
 *                    |                     |
 *                    +------exits----------+--> BACKOFF -timer-> STARTING
 *   (STOPPING phase) any live state -SIGTERM-> STOPPING -exit-> DONE
 *                                        (SIGKILL after the drain timeout)
 *
 * During the STARTING phase, components start one at a time in the file's
 * order, each once the previous one is ready; an exit then is fatal, since a
 * platform that cannot start should say why rather than loop. Once RUNNING,
 * an exit is a crash: restarted after 1 s, doubling to 30 s, the delay back
 * to 1 s when the process had run for 60 s. STOPPING goes in reverse order,
 * one component at a time, so that the gateway stops before the services it
 * calls and nats-server last (the services flush their outboxes to it).
 *
 * With -d the process forks before the loop exists: the parent waits on a
 * pipe for the child's messages ('o' and 'e' lines for its stdout and
 * stderr, then 'K' once everything is ready) and exits; the child calls
 * setsid, keeps its pid in var/run/agora.pid and logs to the files under var/log only.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "agora/mem.h"
#include "cli.h"

#define BACKOFF_FIRST_MS 1000
#define BACKOFF_MAX_MS 30000
#define BACKOFF_RESET_AFTER_MS 60000
#define PROBE_EVERY_MS 100
#define LINE_MAX_BYTES 65536

typedef enum { PH_STARTING, PH_RUNNING, PH_STOPPING } phase;
typedef enum { P_IDLE, P_STARTING, P_READY, P_BACKOFF, P_STOPPING, P_DONE } pstate;

struct sup;
struct proc;

/* One run of a component: the process and its two pipes. It outlives the
 * process until both pipes reach EOF, so a respawn gets a fresh one. */
typedef struct run {
    struct proc *p;
    uv_process_t proc;
    uv_pipe_t pipes[2];
    ag_buf line[2];
    int open; /* handles not yet closed; freed at 0 */
    bool exited;
} run;

typedef struct proc {
    struct sup *s;
    cli_component *c;
    int idx;
    pstate st;
    run *r;       /* the current run, NULL when no process */
    pid_t pid;    /* of the current run */
    int log_fd;   /* var/log/<name>.log, kept across restarts */
    unsigned gen; /* bumps at each spawn; stale probes are ignored */
    bool probing; /* a probe is in flight */
    uint64_t started_ms, ready_by_ms, backoff_ms;
    int restarts;
    uv_timer_t timer; /* probes, backoff and the kill after the drain */
    bool said_slow;
} proc;

typedef struct sup {
    cli_config *cfg;
    uv_loop_t loop;
    uv_signal_t sigint, sigterm;
    phase ph;
    int next_start; /* STARTING: the component to start next */
    int next_stop;  /* STOPPING: the component to stop next (downward) */
    int exit_code;
    bool detach;
    int notify_fd; /* -d: the pipe to the waiting parent; -1 after */
    int agora_log; /* var/log/agora.log */
    bool color;
    int name_width;
    int signals;
    proc p[CLI_MAX_COMPONENTS];
    uv_process_t demo;
    bool demo_running;
    int demo_fd;
} sup;

static uint64_t now_ms(sup *s)
{
    uv_update_time(&s->loop);
    return uv_now(&s->loop);
}

/* ---- messages ---- */

static void write_all(int fd, const char *b, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        b += w;
        n -= (size_t)w;
    }
}

/* To the user: stdout or stderr in the foreground, the parent's pipe while a
 * detached supervisor starts; and always to var/log/agora.log. */
static void say(sup *s, bool err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(sup *s, bool err, const char *fmt, ...)
{
    char msg[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (s->agora_log >= 0) {
        char stamp[64];
        time_t t = time(NULL);
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S ", &tm);
        ag_buf b;
        ag_buf_init(&b, 0);
        ag_buf_printf(&b, "%s%s\n", stamp, msg);
        write_all(s->agora_log, b.data, b.len);
        ag_buf_release(&b);
    }
    ag_buf b;
    ag_buf_init(&b, 0);
    if (s->detach) {
        if (s->notify_fd < 0) {
            ag_buf_release(&b);
            return;
        }
        /* One 'o'/'e' record per line. */
        const char *line = msg;
        while (*line) {
            size_t len = strcspn(line, "\n");
            ag_buf_printf(&b, "%c%.*s\n", err ? 'e' : 'o', (int)len, line);
            line += len + (line[len] == '\n');
        }
        write_all(s->notify_fd, b.data, b.len);
    } else {
        ag_buf_printf(&b, "%s\n", msg);
        write_all(err ? 2 : 1, b.data, b.len);
    }
    ag_buf_release(&b);
}

/* The last `n` lines of a file, as one string (caller frees). */
static char *tail_lines(const char *path, int n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ag_buf b;
    ag_buf_init(&b, 0);
    ag_buf_appends(&b, "");
    if (fd < 0) return ag_buf_detach(&b, NULL);
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > 16384 ? size - 16384 : 0;
    lseek(fd, from, SEEK_SET);
    char chunk[4096];
    ssize_t r;
    while ((r = read(fd, chunk, sizeof chunk)) > 0)
        ag_buf_append(&b, chunk, (size_t)r);
    close(fd);
    size_t end = b.len;
    while (end > 0 && b.data[end - 1] == '\n')
        end--;
    size_t start = end;
    for (int seen = 0; start > 0; start--) {
        if (b.data[start - 1] == '\n' && ++seen == n) break;
    }
    char *out = ag_strndup(b.data + start, end - start);
    ag_buf_release(&b);
    return out;
}

static void log_path(sup *s, proc *p, char *out, size_t n)
{
    cli_path(s->cfg, out, n, "log", p->c->name, ".log");
}

/* ---- output of the children ---- */

static const char *const palette[] = {"36", "32", "33", "35", "34", "31", "96", "92", "93", "95"};

static void emit_line(proc *p, const char *line, size_t len)
{
    sup *s = p->s;
    ag_buf b;
    ag_buf_init(&b, 0);
    ag_buf_append(&b, line, len);
    ag_buf_appends(&b, "\n");
    write_all(p->log_fd, b.data, b.len);
    if (!s->detach) {
        ag_buf o;
        ag_buf_init(&o, 0);
        if (s->color)
            ag_buf_printf(&o, "\x1b[%sm%-*s |\x1b[0m %.*s\n", palette[p->idx % 10], s->name_width,
                          p->c->name, (int)len, line);
        else
            ag_buf_printf(&o, "%-*s | %.*s\n", s->name_width, p->c->name, (int)len, line);
        write_all(1, o.data, o.len);
        ag_buf_release(&o);
    }
    ag_buf_release(&b);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char slab[65536]; /* the loop is single-threaded; reads copy out */
    buf->base = slab;
    buf->len = sizeof slab;
}

static void run_unref(run *r)
{
    if (--r->open > 0) return;
    ag_buf_release(&r->line[0]);
    ag_buf_release(&r->line[1]);
    ag_free(r);
}

static void run_handle_closed(uv_handle_t *h)
{
    run_unref(h->data);
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    run *r = st->data;
    int which = (uv_pipe_t *)st == &r->pipes[0] ? 0 : 1;
    ag_buf *lb = &r->line[which];
    if (nread > 0) {
        const char *d = buf->base;
        size_t n = (size_t)nread;
        while (n > 0) {
            const char *nl = memchr(d, '\n', n);
            size_t take = nl ? (size_t)(nl - d) : n;
            ag_buf_append(lb, d, take);
            if (nl || lb->len >= LINE_MAX_BYTES) {
                emit_line(r->p, lb->data ? lb->data : "", lb->len);
                lb->len = 0;
            }
            d += take + (nl ? 1 : 0);
            n -= take + (nl ? 1 : 0);
        }
        return;
    }
    if (nread < 0) {
        if (lb->len > 0) emit_line(r->p, lb->data, lb->len);
        lb->len = 0;
        uv_close((uv_handle_t *)st, run_handle_closed);
    }
}

/* ---- phases ---- */

static void start_next(sup *s);
static void stop_next(sup *s);
static void begin_stop(sup *s, int code);
static void probe_tick(uv_timer_t *t);

static void fail_start(sup *s, proc *p, const char *what)
{
    char path[4096];
    log_path(s, p, path, sizeof path);
    char *tail = tail_lines(path, 20);
    say(s, true, "agora: %s %s; last lines of %s:\n%s", p->c->name, what, cli_rel(s->cfg, path),
        *tail ? tail : "(empty)");
    ag_free(tail);
    begin_stop(s, 1);
}

static void exit_cb(uv_process_t *h, int64_t status, int sig)
{
    run *r = h->data;
    proc *p = r->p;
    sup *s = p->s;
    r->exited = true;
    uv_close((uv_handle_t *)h, run_handle_closed);
    if (p->r != r) return; /* an old run */
    p->r = NULL;
    char pidfile[4096], how[64];
    cli_path(s->cfg, pidfile, sizeof pidfile, "run", p->c->name, ".pid");
    unlink(pidfile);
    if (sig)
        snprintf(how, sizeof how, "signal %d", sig);
    else
        snprintf(how, sizeof how, "status %lld", (long long)status);
    uint64_t ran = now_ms(s) - p->started_ms;
    uv_timer_stop(&p->timer);

    if (p->st == P_STOPPING || s->ph == PH_STOPPING) {
        if (p->st == P_STOPPING) say(s, false, "agora: %s stopped (%s)", p->c->name, how);
        p->st = P_DONE;
        if (s->ph == PH_STOPPING) stop_next(s);
        return;
    }
    if (s->ph == PH_STARTING) {
        char what[320];
        const char *base = strrchr(p->c->exec, '/');
        snprintf(what, sizeof what, "(%s) exited during start (%s)", base ? base + 1 : p->c->exec,
                 how);
        p->st = P_DONE;
        fail_start(s, p, what);
        return;
    }
    /* A crash while running: restart with backoff. */
    if (ran >= BACKOFF_RESET_AFTER_MS) p->backoff_ms = BACKOFF_FIRST_MS;
    uint64_t delay = p->backoff_ms;
    p->backoff_ms = p->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : p->backoff_ms * 2;
    p->st = P_BACKOFF;
    p->restarts++;
    say(s, true, "agora: %s exited (%s) after %.1f s; restarting in %llu s (restart %d)",
        p->c->name, how, (double)ran / 1000.0, (unsigned long long)(delay / 1000), p->restarts);
    uv_timer_start(&p->timer, probe_tick, delay, 0);
}

static int spawn(proc *p)
{
    sup *s = p->s;
    run *r = ag_calloc(1, sizeof *r);
    r->p = p;
    ag_buf_init(&r->line[0], 0);
    ag_buf_init(&r->line[1], 0);
    for (int i = 0; i < 2; i++) {
        uv_pipe_init(&s->loop, &r->pipes[i], 0);
        r->pipes[i].data = r;
    }
    r->open = 2;
    uv_stdio_container_t io[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&r->pipes[0]},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&r->pipes[1]},
    };
    size_t nargs = 0;
    while (p->c->args[nargs])
        nargs++;
    char **argv = ag_calloc(nargs + 2, sizeof *argv);
    argv[0] = p->c->exec;
    for (size_t i = 0; i < nargs; i++)
        argv[i + 1] = p->c->args[i];
    /* DETACHED: a session of its own, so the terminal's Ctrl-C reaches the
     * supervisor only and the stop order stays ours. */
    uv_process_options_t o = {
        .exit_cb = exit_cb,
        .file = p->c->exec,
        .args = argv,
        .env = p->c->env,
        .cwd = s->cfg->root,
        .flags = UV_PROCESS_DETACHED,
        .stdio_count = 3,
        .stdio = io,
    };
    r->proc.data = r;
    int rc = uv_spawn(&s->loop, &r->proc, &o);
    ag_free(argv);
    if (rc < 0) {
        /* libuv wants the process handle closed even when spawn failed. */
        r->open++;
        r->exited = true;
        uv_close((uv_handle_t *)&r->proc, run_handle_closed);
        uv_close((uv_handle_t *)&r->pipes[0], run_handle_closed);
        uv_close((uv_handle_t *)&r->pipes[1], run_handle_closed);
        say(s, true, "agora: cannot start %s (%s): %s", p->c->name, p->c->exec, uv_strerror(rc));
        return rc;
    }
    r->open++;
    uv_read_start((uv_stream_t *)&r->pipes[0], alloc_cb, read_cb);
    uv_read_start((uv_stream_t *)&r->pipes[1], alloc_cb, read_cb);
    p->r = r;
    p->pid = r->proc.pid;
    p->gen++;
    p->st = P_STARTING;
    p->said_slow = false;
    p->started_ms = now_ms(s);
    p->ready_by_ms = p->started_ms + s->cfg->ready_timeout_ms;
    char pidfile[4096];
    cli_path(s->cfg, pidfile, sizeof pidfile, "run", p->c->name, ".pid");
    FILE *f = fopen(pidfile, "we");
    if (f) {
        fprintf(f, "%d\n", (int)p->pid);
        fclose(f);
    }
    uv_timer_start(&p->timer, probe_tick, PROBE_EVERY_MS, 0);
    return 0;
}

/* ---- readiness ---- */

typedef struct probe {
    uv_work_t w;
    proc *p;
    unsigned gen;
    bool ok;
} probe;

static void probe_work(uv_work_t *w)
{
    probe *pr = w->data;
    const cli_component *c = pr->p->c;
    pr->ok = cli_component_ready(c, c->ready == CLI_READY_TCP ? 500 : 1000);
}

static void probe_done(uv_work_t *w, int status)
{
    probe *pr = w->data;
    proc *p = pr->p;
    sup *s = p->s;
    bool ok = pr->ok && status == 0;
    bool current = pr->gen == p->gen && p->st == P_STARTING && s->ph != PH_STOPPING;
    ag_free(pr);
    p->probing = false;
    if (!current) return;
    if (ok) {
        p->st = P_READY;
        if (s->ph == PH_STARTING) {
            say(s, false, "agora: %s ready on %s (pid %d)", p->c->name, p->c->url, (int)p->pid);
            start_next(s);
        } else {
            say(s, false, "agora: %s ready again (pid %d)", p->c->name, (int)p->pid);
        }
        return;
    }
    if (now_ms(s) >= p->ready_by_ms) {
        char what[128];
        snprintf(what, sizeof what, "did not become ready in %llu s",
                 (unsigned long long)(s->cfg->ready_timeout_ms / 1000));
        if (s->ph == PH_STARTING) {
            fail_start(s, p, what);
            return;
        }
        if (!p->said_slow) say(s, true, "agora: %s %s; still waiting", p->c->name, what);
        p->said_slow = true;
    }
    uv_timer_start(&p->timer, probe_tick, PROBE_EVERY_MS, 0);
}

/* The component's timer: a probe while STARTING, a respawn after BACKOFF,
 * a SIGKILL while STOPPING. */
static void probe_tick(uv_timer_t *t)
{
    proc *p = t->data;
    sup *s = p->s;
    if (p->st == P_BACKOFF) {
        if (spawn(p) < 0) {
            p->st = P_BACKOFF;
            uv_timer_start(&p->timer, probe_tick, p->backoff_ms, 0);
        }
        return;
    }
    if (p->st == P_STOPPING) {
        if (p->r && !p->r->exited) {
            say(s, true, "agora: %s did not stop in %llu s; killing it", p->c->name,
                (unsigned long long)(s->cfg->drain_timeout_ms / 1000));
            uv_process_kill(&p->r->proc, SIGKILL);
        }
        return;
    }
    if (p->st != P_STARTING || p->probing) return;
    probe *pr = ag_calloc(1, sizeof *pr);
    pr->p = p;
    pr->gen = p->gen;
    pr->w.data = pr;
    p->probing = true;
    uv_queue_work(&s->loop, &pr->w, probe_work, probe_done);
}

/* ---- the demo data, the table ---- */

static void started(sup *s)
{
    s->ph = PH_RUNNING;
    pid_t pids[CLI_MAX_COMPONENTS];
    for (int i = 0; i < s->cfg->n; i++)
        pids[i] = s->p[i].pid;
    char *table = cli_table(s->cfg, pids);
    say(s, false, "%s", table);
    ag_free(table);
    char logs[4096];
    cli_path(s->cfg, logs, sizeof logs, "log", NULL, NULL);
    if (s->detach) {
        say(s, false, "agora: running in the background (pid %d); logs in %s", (int)getpid(),
            cli_rel(s->cfg, logs));
        say(s, false, "agora: follow them with 'agora logs -f', stop with 'agora down'");
        if (s->notify_fd >= 0) {
            write_all(s->notify_fd, "K\n", 2);
            close(s->notify_fd);
            s->notify_fd = -1;
        }
    } else {
        say(s, false, "agora: all ready; Ctrl-C stops everything");
    }
}

static void demo_exit(uv_process_t *h, int64_t status, int sig)
{
    sup *s = h->data;
    s->demo_running = false;
    uv_close((uv_handle_t *)h, NULL);
    if (s->demo_fd >= 0) close(s->demo_fd);
    s->demo_fd = -1;
    if (s->ph == PH_STOPPING) return;
    char path[4096];
    cli_path(s->cfg, path, sizeof path, "log", "demo", ".log");
    if (status == 0 && sig == 0) {
        char *tail = tail_lines(path, 1);
        say(s, false, "agora: demo data loaded (%s)", tail);
        ag_free(tail);
    } else {
        say(s, true, "agora: warning: loading the demo data failed; see %s", cli_rel(s->cfg, path));
    }
    started(s);
}

static void load_demo(sup *s)
{
    char store[4096], *argv[16];
    if (!s->cfg->demo || !cli_demo_argv(s->cfg, store, sizeof store, argv)) {
        started(s);
        return;
    }
    char path[4096];
    cli_path(s->cfg, path, sizeof path, "log", "demo", ".log");
    s->demo_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    uv_stdio_container_t io[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_INHERIT_FD, .data.fd = s->demo_fd},
        {.flags = UV_INHERIT_FD, .data.fd = s->demo_fd},
    };
    uv_process_options_t o = {
        .exit_cb = demo_exit,
        .file = argv[0],
        .args = argv,
        .env = s->cfg->demo_env,
        .cwd = s->cfg->root,
        .stdio_count = 3,
        .stdio = io,
    };
    s->demo.data = s;
    int rc = uv_spawn(&s->loop, &s->demo, &o);
    if (rc < 0) {
        uv_close((uv_handle_t *)&s->demo, NULL);
        close(s->demo_fd);
        s->demo_fd = -1;
        say(s, true, "agora: warning: cannot run %s: %s", argv[0], uv_strerror(rc));
        started(s);
        return;
    }
    s->demo_running = true;
}

static void start_next(sup *s)
{
    if (s->ph != PH_STARTING) return;
    if (s->next_start >= s->cfg->n) {
        load_demo(s);
        return;
    }
    proc *p = &s->p[s->next_start++];
    if (spawn(p) < 0) begin_stop(s, 1);
}

/* ---- stopping ---- */

static void close_all(sup *s)
{
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    for (int i = 0; i < s->cfg->n; i++)
        uv_close((uv_handle_t *)&s->p[i].timer, NULL);
}

static void stop_next(sup *s)
{
    while (s->next_stop >= 0) {
        proc *p = &s->p[s->next_stop];
        if (p->st == P_STOPPING) return; /* waiting for it */
        if (p->r && !p->r->exited) {
            p->st = P_STOPPING;
            uv_process_kill(&p->r->proc, SIGTERM);
            uv_timer_start(&p->timer, probe_tick, s->cfg->drain_timeout_ms, 0);
            return;
        }
        uv_timer_stop(&p->timer);
        p->st = P_DONE;
        s->next_stop--;
    }
    close_all(s);
}

static void begin_stop(sup *s, int code)
{
    if (s->ph == PH_STOPPING) return;
    s->ph = PH_STOPPING;
    if (code) s->exit_code = code;
    if (s->demo_running) uv_process_kill(&s->demo, SIGTERM);
    for (int i = 0; i < s->cfg->n; i++)
        if (s->p[i].st != P_STOPPING) uv_timer_stop(&s->p[i].timer);
    s->next_stop = s->cfg->n - 1;
    stop_next(s);
}

static void on_signal(uv_signal_t *h, int signum)
{
    sup *s = h->data;
    if (s->ph != PH_STOPPING) {
        say(s, false, "agora: %s; stopping everything",
            signum == SIGINT ? "interrupted" : "terminated");
        begin_stop(s, s->ph == PH_STARTING ? 1 : 0);
        return;
    }
    if (++s->signals >= 1) {
        say(s, true, "agora: killing what is left");
        for (int i = 0; i < s->cfg->n; i++)
            if (s->p[i].r && !s->p[i].r->exited) uv_process_kill(&s->p[i].r->proc, SIGKILL);
    }
}

static int run_supervisor(cli_config *cfg, bool detach, int notify_fd)
{
    sup *s = ag_calloc(1, sizeof *s);
    s->cfg = cfg;
    s->detach = detach;
    s->notify_fd = notify_fd;
    s->demo_fd = -1;
    const char *nc = getenv("NO_COLOR");
    s->color = !detach && isatty(1) && !(nc && *nc);
    char path[4096];
    cli_path(cfg, path, sizeof path, "log", "agora", ".log");
    s->agora_log = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    uv_loop_init(&s->loop);
    uv_signal_init(&s->loop, &s->sigint);
    uv_signal_init(&s->loop, &s->sigterm);
    s->sigint.data = s->sigterm.data = s;
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    for (int i = 0; i < cfg->n; i++) {
        proc *p = &s->p[i];
        p->s = s;
        p->c = &cfg->c[i];
        p->idx = i;
        p->backoff_ms = BACKOFF_FIRST_MS;
        uv_timer_init(&s->loop, &p->timer);
        p->timer.data = p;
        log_path(s, p, path, sizeof path);
        p->log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        int w = (int)strlen(p->c->name);
        if (w > s->name_width) s->name_width = w;
    }
    start_next(s);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->loop);
    for (int i = 0; i < cfg->n; i++)
        if (s->p[i].log_fd >= 0) close(s->p[i].log_fd);
    if (s->notify_fd >= 0) close(s->notify_fd);
    if (s->agora_log >= 0) close(s->agora_log);
    int code = s->exit_code;
    ag_free(s);
    return code;
}

/* ---- the command ---- */

/* Everything that can be checked before anything starts: no supervisor
 * already running, every executable there, every port free. */
static int preflight(cli_config *cfg)
{
    char path[4096];
    cli_path(cfg, path, sizeof path, "run", "agora", ".pid");
    pid_t running = cli_read_pid(path);
    if (running > 0) {
        fprintf(stderr,
                "agora: already running (pid %d); see 'agora status', stop with 'agora down'\n",
                (int)running);
        return 1;
    }
    if (cli_check_executables(cfg) < 0) return 1;
    int rc = 0;
    for (int i = 0; i < cfg->n; i++) {
        char comm[64];
        pid_t owner = cli_port_owner(cfg->c[i].port, comm, sizeof comm);
        if (owner > 0) {
            fprintf(stderr, "agora: port %d is in use by pid %d (%s); %s needs it\n",
                    cfg->c[i].port, (int)owner, comm, cfg->c[i].name);
            rc = 1;
        } else if (owner == 0) {
            fprintf(stderr,
                    "agora: port %d is in use (by a process not visible to us); %s needs it\n",
                    cfg->c[i].port, cfg->c[i].name);
            rc = 1;
        }
    }
    return rc;
}

static void mkdirs(cli_config *cfg)
{
    char path[4096];
    mkdir(cfg->var, 0755);
    cli_path(cfg, path, sizeof path, "log", NULL, NULL);
    mkdir(path, 0755);
    cli_path(cfg, path, sizeof path, "run", NULL, NULL);
    mkdir(path, 0755);
}

static void write_pidfile(cli_config *cfg)
{
    char path[4096];
    cli_path(cfg, path, sizeof path, "run", "agora", ".pid");
    FILE *f = fopen(path, "we");
    if (!f) return;
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
}

static void remove_pidfile(cli_config *cfg)
{
    char path[4096];
    cli_path(cfg, path, sizeof path, "run", "agora", ".pid");
    unlink(path);
}

/* The parent of `up -d`: relays the child's messages until 'K' or EOF. */
static int wait_for_child(int fd, pid_t child)
{
    FILE *f = fdopen(fd, "r");
    if (!f) return 1;
    char line[8192];
    bool ok = false;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == 'K') {
            ok = true;
            break;
        }
        fputs(line + 1, line[0] == 'e' ? stderr : stdout);
        fflush(line[0] == 'e' ? stderr : stdout);
    }
    fclose(f);
    if (!ok) {
        int st;
        waitpid(child, &st, 0); /* it stopped what it started before exiting */
    }
    return ok ? 0 : 1;
}

int cli_up(cli_config *cfg, bool detach)
{
    if (preflight(cfg) != 0) return 1;
    mkdirs(cfg);
    signal(SIGPIPE, SIG_IGN);
    int notify = -1;
    if (detach) {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) < 0) {
            perror("agora: pipe");
            return 1;
        }
        fflush(stdout);
        fflush(stderr);
        pid_t child = fork();
        if (child < 0) {
            perror("agora: fork");
            return 1;
        }
        if (child > 0) {
            close(fds[1]);
            return wait_for_child(fds[0], child);
        }
        close(fds[0]);
        notify = fds[1];
        setsid();
        int nul = open("/dev/null", O_RDWR);
        char path[4096];
        cli_path(cfg, path, sizeof path, "log", "agora", ".log");
        int logfd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(nul, 0);
        dup2(nul, 1);
        dup2(logfd >= 0 ? logfd : nul, 2); /* a crash report lands in agora.log */
        if (nul > 2) close(nul);
        if (logfd > 2) close(logfd);
    }
    write_pidfile(cfg);
    if (cli_http_init() < 0) {
        fprintf(stderr, "agora: cannot set up the HTTP client\n");
        remove_pidfile(cfg);
        return 1;
    }
    int code = run_supervisor(cfg, detach, notify);
    cli_http_shutdown();
    remove_pidfile(cfg);
    return code;
}
