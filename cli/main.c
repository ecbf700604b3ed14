/*
 * main.c — the agora command: options and dispatch.
 *
 *   agora up [-d]              start everything (foreground, or detached)
 *   agora down                 stop everything gracefully
 *   agora status               components, health, instances, breakers
 *   agora logs [name] [-f] [-n N]
 *   agora demo [--load-only]   load the demo data through the public API, then
 *                              the scripted shop tour (cli/tour.c)
 *   agora load [--duration S] [--concurrency N] [--url U]
 *   agora chaos [--duration S] [--seed N] [--concurrency N]   (chaos.c)
 *   agora soak [--duration S] [--sample S] [--seed N]         (soak.c)
 *
 * Global options, before or after the command: --config FILE (AGORA_CONFIG)
 * and --var DIR (AGORA_VAR). See docs/internals/cli.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *f)
{
    fputs("usage: agora [--config FILE] [--var DIR] <command> [options]\n"
          "\n"
          "  up [-d]                  start nats-server, the registry, the services and the\n"
          "                           gateway in order, wait until each is ready, load the\n"
          "                           demo data; -d returns once ready and keeps running\n"
          "  down                     stop everything gracefully (reverse order)\n"
          "  status                   pid, port, health, readiness, registry instances and\n"
          "                           gateway breakers of every component\n"
          "  logs [name] [-f] [-n N]  the last N (50) log lines, all components interleaved\n"
          "                           when no name is given; -f follows\n"
          "  demo [--load-only]       load the demo data (running it again adds nothing),\n"
          "                           then a scripted tour through the gateway: register,\n"
          "                           browse, fill a cart, check out (CONFIRMED), history,\n"
          "                           notifications, a declined card (CANCELLED)\n"
          "  load [--duration S] [--concurrency N] [--url U]\n"
          "                           browse load through the gateway: req/s, p50, p99\n"
          "  chaos [--duration S] [--seed N] [--concurrency N]\n"
          "                           checkouts and chat through the gateway while random\n"
          "                           components, the broker and the database are killed\n"
          "                           (SIGKILL) or paused (SIGSTOP); then the invariants:\n"
          "                           orders ended, no oversold unit, no charge without\n"
          "                           confirmation or refund, nothing lost or doubled\n"
          "  soak [--duration S] [--sample S] [--seed N]\n"
          "                           steady mixed traffic (3600 s), RSS and PSS of every\n"
          "                           process sampled (every 30 s); memory must stay flat\n"
          "                           within 10%%, then the same invariants\n"
          "\n"
          "  --config FILE            default config/agora.json (or AGORA_CONFIG)\n"
          "  --var DIR                where logs, pids and data go; default var (or AGORA_VAR)\n",
          f);
}

/* A positive number from an option's value, or exits with a message. */
static double number(const char *opt, const char *v, double min, double max)
{
    char *end;
    double d = v ? strtod(v, &end) : 0;
    if (!v || *end || d < min || d > max) {
        fprintf(stderr, "agora: %s: expected a number from %g to %g, got \"%s\"\n", opt, min, max,
                v ? v : "");
        exit(2);
    }
    return d;
}

int main(int argc, char **argv)
{
    cli_opts o = {0};
    const char *cmd = NULL, *name = NULL, *url = NULL;
    bool detach = false, follow = false, load_only = false;
    int lines = 50, concurrency = 0;
    double duration = 0, sample = 30;
    uint64_t seed = 0;
    const char *env_seed = getenv("AGORA_CHAOS_SEED");
    if (env_seed) seed = (uint64_t)number("AGORA_CHAOS_SEED", env_seed, 1, 1e18);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0 || strcmp(a, "help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--config") == 0 && next) {
            o.config = argv[++i];
        } else if (strcmp(a, "--var") == 0 && next) {
            o.var = argv[++i];
        } else if (strcmp(a, "-d") == 0 || strcmp(a, "--detach") == 0) {
            detach = true;
        } else if (strcmp(a, "-f") == 0 || strcmp(a, "--follow") == 0) {
            follow = true;
        } else if (strcmp(a, "--load-only") == 0) {
            load_only = true;
        } else if (strcmp(a, "-n") == 0) {
            lines = (int)number(a, next, 1, 100000);
            i++;
        } else if (strcmp(a, "--duration") == 0) {
            duration = number(a, next, 0.1, 86400);
            i++;
        } else if (strcmp(a, "--concurrency") == 0) {
            concurrency = (int)number(a, next, 1, 256);
            i++;
        } else if (strcmp(a, "--seed") == 0) {
            seed = (uint64_t)number(a, next, 1, 1e18);
            i++;
        } else if (strcmp(a, "--sample") == 0) {
            sample = number(a, next, 1, 3600);
            i++;
        } else if (strcmp(a, "--url") == 0 && next) {
            url = argv[++i];
        } else if (a[0] == '-') {
            fprintf(stderr, "agora: unknown option %s\n", a);
            usage(stderr);
            return 2;
        } else if (!cmd) {
            cmd = a;
        } else if (!name && strcmp(cmd, "logs") == 0) {
            name = a;
        } else {
            fprintf(stderr, "agora: unexpected argument %s\n", a);
            return 2;
        }
    }
    if (!cmd) {
        usage(stderr);
        return 2;
    }
    static const char *const known[] = {"up",   "down", "status", "logs",
                                        "demo", "load", "chaos",  "soak"};
    bool ok = false;
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        ok |= strcmp(cmd, known[i]) == 0;
    if (!ok) {
        fprintf(stderr, "agora: unknown command %s\n", cmd);
        usage(stderr);
        return 2;
    }
    cli_config cfg;
    if (cli_config_load(&o, &cfg) < 0) return 1;
    int rc;
    if (strcmp(cmd, "up") == 0) {
        rc = cli_up(&cfg, detach); /* sets up its HTTP client after the fork */
    } else if (strcmp(cmd, "logs") == 0) {
        rc = cli_logs(&cfg, name, follow, lines);
    } else {
        if (cli_http_init() < 0) {
            fprintf(stderr, "agora: cannot set up the HTTP client\n");
            cli_config_release(&cfg);
            return 1;
        }
        if (strcmp(cmd, "down") == 0)
            rc = cli_down(&cfg);
        else if (strcmp(cmd, "status") == 0)
            rc = cli_status(&cfg);
        else if (strcmp(cmd, "demo") == 0)
            rc = cli_demo(&cfg, load_only);
        else if (strcmp(cmd, "chaos") == 0)
            rc = cli_chaos(&cfg, duration > 0 ? duration : 60, seed,
                           concurrency > 0 ? (concurrency < 16 ? concurrency : 16) : 4);
        else if (strcmp(cmd, "soak") == 0)
            rc = cli_soak(&cfg, duration > 0 ? duration : 3600, sample, seed);
        else
            rc = cli_load(&cfg, url, duration > 0 ? duration : 10,
                          concurrency > 0 ? concurrency : 8);
        cli_http_shutdown();
    }
    cli_config_release(&cfg);
    return rc;
}
