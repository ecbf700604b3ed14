/*
 * ratelimit.h — the gateway's rate limiter: token buckets per client key.
 *
 * A bucket holds up to `burst` tokens and refills at `rate` tokens per
 * second; a request takes one token or is refused (429). Buckets are keyed by
 * a policy name and a client key the gateway builds ("ip:203.0.113.9",
 * "user:u-42"), so one client has one bucket per policy.
 *
 * Two stores (docs/internals/ratelimit.md):
 *   memory  buckets in this process (sharded mutexes, at most max_keys of
 *           them: a flood of distinct clients evicts the least recently used
 *           bucket, which has usually refilled already). The default.
 *   redis   buckets in Redis, updated atomically by a Lua script with the
 *           server's clock, so gateway replicas share one budget. Each loop
 *           thread opens its own asynchronous connection (hiredis on libuv)
 *           on first use. A reply slower than the timeout, an error or an
 *           unreachable server is answered from the memory store instead
 *           (degraded = true); the connection comes back with backoff.
 *
 * Threads: gw_ratelimit_take may be called from any thread; the Redis store
 * is used only on a loop thread (ag_loop_current() != NULL), and calls from
 * elsewhere are answered from memory. Nothing here blocks a loop.
 *
 * Ownership: the caller owns the gw_ratelimit and the policies; a take copies
 * what it needs from its arguments before returning.
 */
#ifndef AGORA_GATEWAY_RATELIMIT_H
#define AGORA_GATEWAY_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/metrics.h"

typedef struct gw_ratelimit gw_ratelimit;

/* A rate-limit policy from the gateway's route configuration. `rate` must be
 * finite and > 0 and `burst` >= 1; other values are clamped (rate to one
 * token per 10^6 s, burst to 1). `name` labels metrics and separates
 * buckets: the same key under two policies has two buckets. */
typedef struct gw_rl_policy {
    const char *name;
    double rate; /* tokens per second */
    int burst;   /* bucket size = the advertised limit */
} gw_rl_policy;

typedef struct gw_rl_result {
    bool allowed;
    long limit;         /* the policy's burst */
    long remaining;     /* whole tokens left after this request */
    long reset_s;       /* seconds until the bucket is full again */
    long retry_after_s; /* when refused: seconds until a token (>= 1); 0 when allowed */
    bool degraded;      /* Redis store configured but the answer came from memory */
} gw_rl_result;

/* Receives the decision. `r` is valid during the call only. */
typedef void (*gw_rl_cb)(void *ud, const gw_rl_result *r);

typedef struct gw_rl_opts {
    const char *url;     /* NULL or "memory"; "redis://host[:port][/db]" (port 6379, db 0) */
    uint64_t timeout_ms; /* Redis reply timeout; 0: AGORA_RATELIMIT_TIMEOUT, default 50 ms */
    size_t max_keys;     /* memory store bound; 0: AGORA_RATELIMIT_MAX_KEYS, default 100000 */
    ag_metrics *metrics; /* NULL: ag_metrics_default() */
} gw_rl_opts;

#define GW_RL_DEFAULT_TIMEOUT_MS 50
#define GW_RL_DEFAULT_MAX_KEYS 100000
#define GW_RL_MAX_KEY_LEN 256 /* longer client keys are cut to this many bytes */

/* Creates a limiter. Returns AG_ECONFIG (and logs why) on a URL that does not
 * parse or a bad AGORA_RATELIMIT_TIMEOUT / AGORA_RATELIMIT_MAX_KEYS. Opens no
 * connection: each loop connects on its first take. */
int gw_ratelimit_new_opts(const gw_rl_opts *o, gw_ratelimit **out);
/* Same with url and metrics only, the rest from the environment. */
int gw_ratelimit_new(const char *url, ag_metrics *m, gw_ratelimit **out);
/* Same with the URL from AGORA_RATELIMIT (default "memory"). */
int gw_ratelimit_from_env(ag_metrics *m, gw_ratelimit **out);
/* Frees the limiter. Every loop that used it must have called
 * gw_ratelimit_loop_release and run its close callbacks first (stopping the
 * loopset does that). NULL is a no-op. */
void gw_ratelimit_free(gw_ratelimit *rl);

/* True when the limiter uses Redis. */
bool gw_ratelimit_is_redis(const gw_ratelimit *rl);

/* Takes one token from the bucket of (p->name, key) and calls cb(ud, result)
 * exactly once, on the calling thread. The memory store, and the Redis store
 * when it answers from memory (Redis down, in backoff, or overloaded), call cb
 * before this returns. Otherwise cb runs later on this loop when the reply
 * arrives or the timeout passes, whichever is first: `ud` must stay valid
 * until then. Never blocks. */
void gw_ratelimit_take(gw_ratelimit *rl, const char *key, const gw_rl_policy *p, gw_rl_cb cb,
                       void *ud);

/* Closes the calling loop's Redis connection: takes still waiting for a reply
 * are answered from memory before this returns. Call on each loop thread that
 * used the limiter before the loop stops; not from inside a gw_rl_cb. A later
 * take on this loop opens a new connection. A no-op off a loop thread and in
 * memory mode. */
void gw_ratelimit_loop_release(gw_ratelimit *rl);

/* Response header values (IETF draft-ietf-httpapi-ratelimit-headers):
 *   RateLimit-Limit: <burst>       RateLimit-Remaining: <tokens left>
 *   RateLimit-Reset: <seconds until full>
 *   RateLimit-Policy: <burst>;w=<seconds to refill from empty>
 *   Retry-After: <seconds until a token>  (only when refused: "" otherwise)
 * The strings are NUL-terminated, in the caller's struct. */
typedef struct gw_rl_headers {
    char limit[24];
    char remaining[24];
    char reset[24];
    char policy[48];
    char retry_after[24];
} gw_rl_headers;

void gw_rl_headers_format(const gw_rl_result *r, const gw_rl_policy *p, gw_rl_headers *h);

/* Test hooks. */
/* Replaces the memory store's clock (default ag_now_ms). Call before any take. */
void gw_ratelimit_set_clock(gw_ratelimit *rl, uint64_t (*now_ms)(void *ud), void *ud);
/* Buckets held in the memory store now. */
size_t gw_ratelimit_mem_keys(gw_ratelimit *rl);

#endif
