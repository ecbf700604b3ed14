/*
 * limiter.c — the per-user send rate limit: a token bucket per user
 * (AGORA_MESSAGES_RATE tokens a second, at most AGORA_MESSAGES_BURST held),
 * in this process's memory, behind one mutex (a send takes it once, for a
 * few instructions).
 *
 * Memory stays bounded: a bucket that has refilled to the brim is the same
 * as no bucket, so when the table holds more than LIM_SWEEP_AT users, full
 * buckets are dropped (at most once a second). Each instance of the service
 * limits on its own; behind N instances a user may send N times the rate
 * (the gateway's per-user limit is the shared one).
 */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "messages.h"

#define LIM_SLOTS 4096
#define LIM_SWEEP_AT 50000

typedef struct bucket {
    struct bucket *next;
    double tokens;
    uint64_t at_ms; /* when `tokens` was computed (monotonic) */
    char user[];
} bucket;

static struct {
    pthread_mutex_t mu;
    bucket *slots[LIM_SLOTS];
    size_t count;
    double rate, burst;
    uint64_t swept_ms;
    bool ready;
} g_lim = {.mu = PTHREAD_MUTEX_INITIALIZER};

static size_t slot_of(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (size_t)(h % LIM_SLOTS);
}

static void refill(bucket *b, uint64_t now)
{
    b->tokens = fmin(g_lim.burst, b->tokens + (double)(now - b->at_ms) / 1000.0 * g_lim.rate);
    b->at_ms = now;
}

static void sweep(uint64_t now)
{
    for (size_t i = 0; i < LIM_SLOTS; i++) {
        bucket **pp = &g_lim.slots[i];
        while (*pp) {
            bucket *b = *pp;
            refill(b, now);
            if (b->tokens >= g_lim.burst) {
                *pp = b->next;
                ag_free(b);
                g_lim.count--;
            } else {
                pp = &b->next;
            }
        }
    }
    g_lim.swept_ms = now;
}

int msg_limiter_init(double rate, double burst)
{
    if (!(rate > 0) || !(burst >= 1)) return AG_EINVAL;
    g_lim.rate = rate;
    g_lim.burst = burst;
    g_lim.ready = true;
    return 0;
}

void msg_limiter_free(void)
{
    pthread_mutex_lock(&g_lim.mu);
    for (size_t i = 0; i < LIM_SLOTS; i++) {
        while (g_lim.slots[i]) {
            bucket *b = g_lim.slots[i];
            g_lim.slots[i] = b->next;
            ag_free(b);
        }
    }
    g_lim.count = 0;
    pthread_mutex_unlock(&g_lim.mu);
}

bool msg_limiter_take(const char *user, int *retry_after_s)
{
    if (!g_lim.ready) return true;
    uint64_t now = ag_now_ms();
    size_t slot = slot_of(user);
    pthread_mutex_lock(&g_lim.mu);
    bucket *b = g_lim.slots[slot];
    while (b && strcmp(b->user, user) != 0)
        b = b->next;
    if (!b) {
        if (g_lim.count >= LIM_SWEEP_AT && now - g_lim.swept_ms >= 1000) sweep(now);
        size_t len = strlen(user);
        b = ag_malloc(sizeof *b + len + 1);
        memcpy(b->user, user, len + 1);
        b->tokens = g_lim.burst;
        b->at_ms = now;
        b->next = g_lim.slots[slot];
        g_lim.slots[slot] = b;
        g_lim.count++;
    }
    refill(b, now);
    bool ok = b->tokens >= 1.0;
    if (ok)
        b->tokens -= 1.0;
    else
        *retry_after_s = (int)ceil((1.0 - b->tokens) / g_lim.rate);
    pthread_mutex_unlock(&g_lim.mu);
    if (!ok && *retry_after_s < 1) *retry_after_s = 1;
    return ok;
}
