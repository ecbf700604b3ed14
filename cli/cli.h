/*
 * cli.h — the pieces of the agora command shared between its files.
 *
 *   config.c    reads config/agora.json, expands its placeholders and builds
 *               the environment each process gets
 *   ports.c     who holds a port (/proc/net/tcp{,6} and /proc/<pid>/fd)
 *   supervise.c `agora up`: start in order, wait for readiness, multiplex
 *               output, restart with backoff, stop in reverse order; -d
 *   commands.c  status, logs, down, demo, load
 *   tour.c      the scripted shop tour `agora demo` prints after loading
 *   main.c      options and dispatch
 *
 * See docs/internals/cli.md for the file format and the restart policy.
 */
#ifndef AGORA_CLI_H
#define AGORA_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "agora/http_client.h"

#define CLI_MAX_COMPONENTS 32

typedef enum cli_ready_kind { CLI_READY_HTTP = 0, CLI_READY_TCP } cli_ready_kind;

/* One process of the platform, as the config file describes it. Every string
 * is owned by the component (freed by cli_config_release). */
typedef struct cli_component {
    char *name;  /* "users": log prefix, var/log/<name>.log, {service} */
    char *exec;  /* an absolute path, or a bare name looked up on PATH */
    char **args; /* argv[1..], placeholders expanded; NULL-terminated */
    int port;
    cli_ready_kind ready;
    char *ready_path; /* "/ready" for HTTP readiness */
    char *url;        /* "http://127.0.0.1:7001" (nats://… for nats) */
    char **env;       /* the full environment, "K=V", NULL-terminated */
} cli_component;

typedef struct cli_config {
    char *path;  /* the config file read */
    char *root;  /* the source tree: cwd of every process */
    char *var;   /* var directory (absolute) */
    char *build; /* the build directory, {build} */
    uint64_t ready_timeout_ms;
    uint64_t drain_timeout_ms;
    char *demo; /* the demo loader (absolute) or NULL when disabled */
    char **demo_env;
    int n;
    cli_component c[CLI_MAX_COMPONENTS];
} cli_config;

typedef struct cli_opts {
    const char *config; /* --config or AGORA_CONFIG; NULL: <root>/config/agora.json */
    const char *var;    /* --var or AGORA_VAR; NULL: the config's, else <root>/var */
} cli_opts;

/* Reads and checks the config file. Prints a specific message on stderr and
 * returns a negative AG_E* code on failure (nothing to release then). */
int cli_config_load(const cli_opts *o, cli_config *cfg);
void cli_config_release(cli_config *cfg);
/* A variable of the environment the config gives its components (the
 * first component's, which holds the config's "env"), or NULL. */
const char *cli_config_env(const cli_config *cfg, const char *name);
/* The component named `name`, or NULL. */
cli_component *cli_config_find(cli_config *cfg, const char *name);
/* "var/log/users.log" under the config's var directory, into `out`. */
void cli_path(const cli_config *cfg, char *out, size_t n, const char *sub, const char *name,
              const char *ext);
/* A path shown to a user: relative to the root when under it. */
const char *cli_rel(const cli_config *cfg, const char *path);
/* Checks that every executable exists; prints which does not. */
int cli_check_executables(const cli_config *cfg);

/* The pid of the process listening on TCP `port` (any address), 0 when
 * something listens but its owner is not visible to us, or -1 when the port
 * is free. `comm` gets the owner's name ("nginx") when known. */
pid_t cli_port_owner(int port, char *comm, size_t n);
/* Whether `pid` runs: it exists and is not a zombie nobody reaped yet (a
 * detached supervisor's adoptive parent may never reap it). */
bool cli_pid_alive(pid_t pid);
/* Reads a pid file; 0 when absent, unreadable or the process is gone. */
pid_t cli_read_pid(const char *path);
/* The short name of a running process (/proc/<pid>/comm). */
void cli_proc_name(pid_t pid, char *out, size_t n);
/* The pid in var/run/<name>.pid when that process runs, else 0. */
pid_t cli_component_pid(const cli_config *cfg, const char *name);
/* Whether the component answers its readiness probe (GET <ready_path> 200,
 * or a TCP connect) within timeout_ms. */
bool cli_component_ready(const cli_component *c, uint64_t timeout_ms);
/* A process's resident and proportional set sizes in KiB (smaps_rollup). */
int cli_proc_mem(pid_t pid, long *rss_kb, long *pss_kb);
/* The pids whose parent is `parent`, into out[max]; their count, or a
 * negative AG_E* code. */
int cli_children(pid_t parent, pid_t *out, int max);

/* The HTTP client every command shares (thread-safe); init before any GET,
 * shutdown before exit. */
int cli_http_init(void);
void cli_http_shutdown(void);
/* One blocking HTTP GET (for status and readiness): the status code, or a
 * negative AG_E* code. `body` (may be NULL) gets a copy, caller frees. */
int cli_http_get(const char *url, uint64_t timeout_ms, char **body);
/* Any call with the shared client (ag_http_client_do: 0 and `rep` to release,
 * or a negative AG_E* code). */
int cli_http_do(const ag_http_call *call, ag_http_reply *rep);
/* Whether a TCP connection to 127.0.0.1:port succeeds. */
bool cli_tcp_ok(int port, uint64_t timeout_ms);

/* Commands. Each returns the process exit status. */
int cli_up(cli_config *cfg, bool detach);
int cli_down(cli_config *cfg);
int cli_status(cli_config *cfg);
int cli_logs(cli_config *cfg, const char *service, bool follow, int lines);
/* Loads the demo data; then, unless load_only, runs the tour (cli_tour). */
int cli_demo(cli_config *cfg, bool load_only);
/* The scripted tour through the gateway: a new customer registers, browses,
 * fills a cart, checks out with a test card (CONFIRMED), reads the order's
 * history and notifications, then a declined card (CANCELLED). Prints every
 * step; 0 when both orders ended as expected, 1 otherwise. */
int cli_tour(cli_config *cfg);
int cli_load(cli_config *cfg, const char *url, double duration_s, int concurrency);
/* `agora chaos` (chaos.c): traffic and faults for duration_s, then the
 * invariants; 0 when all hold. seed 0: from the clock. */
int cli_chaos(cli_config *cfg, double duration_s, uint64_t seed, int concurrency);
/* `agora soak` (soak.c): steady mixed traffic for duration_s with every
 * process's RSS and PSS sampled each sample_s; 0 when memory stayed flat
 * (within 10%), nothing restarted and the invariants hold. */
int cli_soak(cli_config *cfg, double duration_s, double sample_s, uint64_t seed);

/* The table of components, pids, ports and URLs, without a final newline
 * (caller frees). `pids` may be NULL: read from var/run. */
char *cli_table(const cli_config *cfg, const pid_t *pids);
/* The demo loader's argv for this config (into `argv`, strings in `store`);
 * returns false when there is nothing to load through. */
bool cli_demo_argv(const cli_config *cfg, char *store, size_t n, char **argv);

#endif
