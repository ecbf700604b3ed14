/*
 * jwks_client.c — verifying another service's tokens with its published JWKS.
 *
 * The client keeps the last JWKS it fetched as a keyset of its own. A
 * refresh builds a whole new keyset and swaps it in, so keys the issuer
 * dropped are dropped here too. When to fetch:
 *
 *   no keys yet ........ at the first verification; after a failure, again
 *                        at most once per AG__JWKS_EMPTY_RETRY_MS
 *   keys older than TTL  refetch, at most once per min(TTL, MIN_REFRESH);
 *                        on failure keep verifying with the stale keys
 *   unknown kid ........ refetch at most once per AG_JWKS_MIN_REFRESH_MS
 *                        (counted from the last attempt of any kind), then
 *                        verify once more; a flood of tokens with made-up
 *                        kids costs the issuer one request per interval
 *
 * Locks: `fetch_mu` lets one thread fetch at a time (the others wait and
 * then use its result: `gen` tells them a refresh happened meanwhile);
 * `keys_lock` is held shared while verifying and exclusive for the swap;
 * `mu` guards the timestamps and `gen`. Lock order: fetch_mu, then
 * keys_lock or mu, never both of the latter.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "agora/auth.h"
#include "agora/clock.h"
#include "agora/error.h"
#include "agora/log.h"
#include "agora/mem.h"
#include "auth/internal.h"

#define AG__JWKS_DEFAULT_TTL_MS (5 * 60 * 1000)
#define AG__JWKS_EMPTY_RETRY_MS 1000
#define AG__JWKS_MAX_BYTES (256 * 1024)
#define AG__JWKS_TIMEOUT_MS 5000

struct ag_jwks_client {
    char *url;
    ag_http_client *http;
    uint64_t ttl_ms;
    pthread_mutex_t fetch_mu;
    pthread_rwlock_t keys_lock;
    ag_keyset *keys; /* NULL until the first successful fetch */
    pthread_mutex_t mu;
    uint64_t gen;        /* successful fetches so far */
    uint64_t fetched_ms; /* monotonic time of the last success */
    uint64_t attempt_ms; /* monotonic time of the last attempt */
    bool attempted;
};

int ag_jwks_client_new(const char *url, ag_http_client *http, uint64_t ttl_ms, ag_jwks_client **out)
{
    if (!url || !url[0] || !http || !out) return AG_EINVAL;
    ag_jwks_client *c = ag_calloc(1, sizeof *c);
    c->url = ag_strdup(url);
    c->http = http;
    c->ttl_ms = ttl_ms ? ttl_ms : AG__JWKS_DEFAULT_TTL_MS;
    pthread_mutex_init(&c->fetch_mu, NULL);
    pthread_rwlock_init(&c->keys_lock, NULL);
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return 0;
}

void ag_jwks_client_free(ag_jwks_client *c)
{
    if (!c) return;
    ag_keyset_free(c->keys);
    pthread_mutex_destroy(&c->mu);
    pthread_rwlock_destroy(&c->keys_lock);
    pthread_mutex_destroy(&c->fetch_mu);
    ag_free(c->url);
    ag_free(c);
}

/* GETs the JWKS and reads it into a new keyset. */
static int fetch(ag_jwks_client *c, ag_keyset **out)
{
    ag_http_call call = {.method = "GET", .url = c->url, .timeout_ms = AG__JWKS_TIMEOUT_MS};
    ag_http_reply rep;
    int rc = ag_http_client_do(c->http, &call, &rep);
    if (rc < 0) return rc;
    if (rep.status != 200) {
        ag_warn("jwks fetch failed", AG_FS("url", c->url), AG_FI("status", rep.status));
        ag_http_reply_release(&rep);
        return AG_EUNAVAIL;
    }
    if (rep.body.len > AG__JWKS_MAX_BYTES) {
        ag_http_reply_release(&rep);
        return AG_ETOOBIG;
    }
    json_error_t err;
    json_t *doc = json_loadb(rep.body.data ? rep.body.data : "", rep.body.len, 0, &err);
    ag_http_reply_release(&rep);
    ag_keyset *ks = NULL;
    ag_keyset_new(&ks);
    rc = doc ? ag_keyset_add_jwks(ks, doc) : AG_EPROTO;
    json_decref(doc);
    if (rc < 0) {
        ag_keyset_free(ks);
        return rc == AG_EINVAL ? AG_EPROTO : rc;
    }
    *out = ks;
    return 0;
}

/* Refreshes unless someone did since `seen_gen` (returns 1: look again) or
 * the last attempt is under `min_gap_ms` old (returns 0). Returns 1 after a
 * successful fetch, 0 after a failed one. */
static int refresh(ag_jwks_client *c, uint64_t seen_gen, uint64_t min_gap_ms)
{
    pthread_mutex_lock(&c->fetch_mu);
    pthread_mutex_lock(&c->mu);
    uint64_t now = ag_now_ms();
    if (c->gen != seen_gen) {
        pthread_mutex_unlock(&c->mu);
        pthread_mutex_unlock(&c->fetch_mu);
        return 1;
    }
    if (c->attempted && now - c->attempt_ms < min_gap_ms) {
        pthread_mutex_unlock(&c->mu);
        pthread_mutex_unlock(&c->fetch_mu);
        return 0;
    }
    c->attempted = true;
    c->attempt_ms = now;
    pthread_mutex_unlock(&c->mu);

    ag_keyset *fresh = NULL, *old = NULL;
    int rc = fetch(c, &fresh);
    if (rc == 0) {
        pthread_rwlock_wrlock(&c->keys_lock);
        old = c->keys;
        c->keys = fresh;
        pthread_rwlock_unlock(&c->keys_lock);
        pthread_mutex_lock(&c->mu);
        c->gen++;
        c->fetched_ms = ag_now_ms();
        pthread_mutex_unlock(&c->mu);
    } else {
        ag_warn("cannot fetch the JWKS", AG_FS("url", c->url), AG_FERR(rc));
    }
    pthread_mutex_unlock(&c->fetch_mu);
    ag_keyset_free(old);
    return rc == 0 ? 1 : 0;
}

/* Verifies with the cached keys; AG_EUNAVAIL when there are none. */
static int verify_cached(ag_jwks_client *c, const char *token, const ag_jwt_policy *p,
                         ag_claims *out, char *why, size_t why_len)
{
    pthread_rwlock_rdlock(&c->keys_lock);
    int rc = c->keys ? ag_jwt_verify(c->keys, token, p, out, why, why_len) : AG_EUNAVAIL;
    pthread_rwlock_unlock(&c->keys_lock);
    return rc;
}

int ag_jwks_verify(ag_jwks_client *c, const char *token, const ag_jwt_policy *p, ag_claims *out,
                   char *why, size_t why_len)
{
    if (why && why_len) why[0] = '\0';
    if (!c) return AG_EINVAL;
    pthread_mutex_lock(&c->mu);
    uint64_t gen = c->gen, now = ag_now_ms();
    bool empty = gen == 0;
    bool stale = !empty && now - c->fetched_ms >= c->ttl_ms;
    pthread_mutex_unlock(&c->mu);

    if (empty) {
        refresh(c, gen, AG__JWKS_EMPTY_RETRY_MS);
    } else if (stale) {
        uint64_t gap = c->ttl_ms < AG_JWKS_MIN_REFRESH_MS ? c->ttl_ms : AG_JWKS_MIN_REFRESH_MS;
        refresh(c, gen, gap);
    }
    pthread_mutex_lock(&c->mu);
    gen = c->gen;
    pthread_mutex_unlock(&c->mu);

    int rc = verify_cached(c, token, p, out, why, why_len);
    if (rc == AG_EUNAVAIL) {
        if (why && why_len) snprintf(why, why_len, "%s", "keys unavailable");
        return rc;
    }
    /* An unknown kid may be a key the issuer rotated in since our fetch. */
    if (rc == AG_ENOTFOUND && refresh(c, gen, AG_JWKS_MIN_REFRESH_MS) == 1)
        rc = verify_cached(c, token, p, out, why, why_len);
    return rc;
}
