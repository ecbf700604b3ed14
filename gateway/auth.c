/*
 * auth.c — bearer tokens at the gateway (DESIGN.md §5, §8).
 *
 * Verifying an Ed25519 signature costs tens of microseconds and fetching an
 * unknown key costs a round trip, neither of which belongs on the I/O loop
 * of every request. So: a direct-mapped cache of verified tokens (the
 * token's hash picks a slot, the token itself confirms it) answers on the
 * loop; a miss is verified on the worker pool with the JWKS client, which
 * fetches keys when a kid is unknown, and the answer goes back to the loop
 * with ag_loop_post. A good token is cached until it expires, a bad one for
 * a minute (so that a flood of one bad token costs one verification).
 */
#include <string.h>

#include "agora/clock.h"
#include "agora/log.h"
#include "gateway.h"

#define TOKEN_SLOTS 8192
#define NEGATIVE_TTL_S 60
#define MAX_TOKEN 4096

typedef struct slot {
    uint64_t hash;
    char *token;
    int rc;
    ag_caller caller;
    char why[64];
    int64_t until_s; /* wall seconds */
} slot;

typedef struct gw_tokens {
    pthread_mutex_t mu;
    slot slots[TOKEN_SLOTS];
} gw_tokens;

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

int gw_auth_init(void)
{
    g_gw.tokens = ag_calloc(1, sizeof *g_gw.tokens);
    pthread_mutex_init(&g_gw.tokens->mu, NULL);
    return 0;
}

void gw_auth_free(void)
{
    gw_tokens *t = g_gw.tokens;
    if (!t) return;
    for (int i = 0; i < TOKEN_SLOTS; i++) ag_free(t->slots[i].token);
    pthread_mutex_destroy(&t->mu);
    ag_free(t);
    g_gw.tokens = NULL;
}

static bool cache_get(const char *token, uint64_t h, int *rc, ag_caller *caller, char *why,
                      size_t why_len)
{
    gw_tokens *t = g_gw.tokens;
    int64_t now = (int64_t)(ag_wall_ms() / 1000);
    bool hit = false;
    pthread_mutex_lock(&t->mu);
    slot *s = &t->slots[h % TOKEN_SLOTS];
    if (s->token && s->hash == h && s->until_s > now && strcmp(s->token, token) == 0) {
        *rc = s->rc;
        *caller = s->caller;
        snprintf(why, why_len, "%s", s->why);
        hit = true;
    }
    pthread_mutex_unlock(&t->mu);
    return hit;
}

static void cache_put(const char *token, uint64_t h, int rc, const ag_caller *caller,
                      const char *why)
{
    gw_tokens *t = g_gw.tokens;
    int64_t until = rc == 0 ? caller->exp : (int64_t)(ag_wall_ms() / 1000) + NEGATIVE_TTL_S;
    pthread_mutex_lock(&t->mu);
    slot *s = &t->slots[h % TOKEN_SLOTS];
    ag_free(s->token);
    s->token = ag_strdup(token);
    s->hash = h;
    s->rc = rc;
    if (caller) s->caller = *caller;
    snprintf(s->why, sizeof s->why, "%s", why ? why : "");
    s->until_s = until;
    pthread_mutex_unlock(&t->mu);
}

typedef struct job {
    ag_loop *loop;
    gw_auth_cb cb;
    void *ud;
    uint64_t hash;
    int rc;
    ag_caller caller;
    char why[64];
    char token[];
} job;

static void job_done(void *arg)
{
    job *j = arg;
    j->cb(j->ud, j->rc, &j->caller, j->why);
    ag_free(j);
}

static void job_run(void *arg)
{
    job *j = arg;
    ag_claims cl;
    j->rc = ag_jwks_verify(g_gw.jwks, j->token, &g_gw.jwt_policy, &cl, j->why, sizeof j->why);
    if (j->rc == 0) {
        snprintf(j->caller.id, sizeof j->caller.id, "%s", cl.sub);
        snprintf(j->caller.email, sizeof j->caller.email, "%s", cl.email);
        snprintf(j->caller.role, sizeof j->caller.role, "%s", cl.role);
        j->caller.exp = cl.exp;
    }
    /* AG_EUNAVAIL (no keys) is not the token's fault: not cached. */
    if (j->rc == 0 || j->rc == AG_EAUTH || j->rc == AG_ENOTFOUND) {
        if (j->rc == AG_ENOTFOUND) {
            j->rc = AG_EAUTH;
            snprintf(j->why, sizeof j->why, "unknown key");
        }
        cache_put(j->token, j->hash, j->rc, &j->caller, j->why);
    }
    if (ag_loop_post(j->loop, job_done, j) < 0) ag_free(j); /* stopping */
}

void gw_auth_verify(ag_loop *loop, const char *token, gw_auth_cb cb, void *ud)
{
    size_t n = strlen(token);
    if (n > MAX_TOKEN) {
        cb(ud, AG_EAUTH, NULL, "malformed");
        return;
    }
    uint64_t h = fnv1a(token);
    int rc;
    ag_caller caller;
    char why[64];
    if (cache_get(token, h, &rc, &caller, why, sizeof why)) {
        cb(ud, rc, rc == 0 ? &caller : NULL, why);
        return;
    }
    job *j = ag_calloc(1, sizeof *j + n + 1);
    j->loop = loop;
    j->cb = cb;
    j->ud = ud;
    j->hash = h;
    memcpy(j->token, token, n + 1);
    if (ag_pool_submit(ag_service_pool(g_gw.svc), job_run, j) < 0) {
        ag_free(j);
        cb(ud, AG_EBUSY, NULL, "busy");
    }
}
