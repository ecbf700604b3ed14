/*
 * keyset.c — Ed25519 signing and verification keys, and their JWK forms.
 *
 * The keys live in one array sorted by kid. Kids made here are UUIDv7
 * strings (ag_id_new_str), which sort by creation time, so the signing key is
 * simply the last key of the array that has a private half: after
 * ag_keyset_generate the new key signs, and older kids stay to verify the
 * tokens they signed until ag_keyset_remove drops them.
 *
 * JWK members (RFC 8037): "x" is the 32-byte public key; in the private
 * export "d" is the 32-byte seed (RFC 8037's private key), from which the
 * 64-byte libsodium secret key is rebuilt on import and checked against "x".
 *
 * A rwlock guards the array: signing and verifying take it shared and copy
 * what they need out; adding and removing take it exclusive. Secret keys are
 * wiped when removed and when the keyset is freed.
 */
#include <pthread.h>
#include <sodium.h>
#include <string.h>

#include "agora/auth.h"
#include "agora/error.h"
#include "agora/id.h"
#include "agora/mem.h"
#include "auth/internal.h"

_Static_assert(AG__ED25519_PK == crypto_sign_PUBLICKEYBYTES, "public key size");
_Static_assert(AG__ED25519_SK == crypto_sign_SECRETKEYBYTES, "secret key size");
_Static_assert(AG__ED25519_SEED == crypto_sign_SEEDBYTES, "seed size");
_Static_assert(AG_ID_LEN < AG_KID_MAX, "a generated kid fits");

typedef struct ag__key {
    char kid[AG_KID_MAX];
    uint8_t pk[AG__ED25519_PK];
    uint8_t sk[AG__ED25519_SK];
    bool has_sk;
} ag__key;

struct ag_keyset {
    pthread_rwlock_t lock;
    ag__key *keys; /* sorted by kid (strcmp) */
    size_t n, cap;
};

int ag_keyset_new(ag_keyset **out)
{
    if (!out) return AG_EINVAL;
    ag__sodium_ready();
    ag_keyset *ks = ag_calloc(1, sizeof *ks);
    if (pthread_rwlock_init(&ks->lock, NULL) != 0) {
        ag_free(ks);
        return AG_ESYS;
    }
    *out = ks;
    return 0;
}

void ag_keyset_free(ag_keyset *ks)
{
    if (!ks) return;
    if (ks->keys) sodium_memzero(ks->keys, ks->cap * sizeof *ks->keys);
    ag_free(ks->keys);
    pthread_rwlock_destroy(&ks->lock);
    ag_free(ks);
}

/* The index of `kid`, or where it would go (with *found false). Lock held. */
static size_t find(const ag_keyset *ks, const char *kid, bool *found)
{
    size_t lo = 0, hi = ks->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(ks->keys[mid].kid, kid);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

/* Inserts `k` at `at`. Write lock held. */
static void insert_at(ag_keyset *ks, size_t at, const ag__key *k)
{
    if (ks->n == ks->cap) {
        size_t cap = ks->cap ? ks->cap * 2 : 4;
        ag__key *keys = ag_calloc(cap, sizeof *keys);
        if (ks->keys) {
            memcpy(keys, ks->keys, ks->n * sizeof *keys);
            sodium_memzero(ks->keys, ks->cap * sizeof *ks->keys);
            ag_free(ks->keys);
        }
        ks->keys = keys;
        ks->cap = cap;
    }
    memmove(&ks->keys[at + 1], &ks->keys[at], (ks->n - at) * sizeof *ks->keys);
    ks->keys[at] = *k;
    ks->n++;
}

/* A kid we accept from outside: 1..AG_KID_MAX-1 printable ASCII bytes. Kids
 * go into JWT headers and logs, so nothing else is let in. */
static bool kid_ok(const char *kid, size_t len)
{
    if (len == 0 || len >= AG_KID_MAX) return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)kid[i] < 0x21 || (unsigned char)kid[i] > 0x7e) return false;
    return true;
}

int ag_keyset_generate(ag_keyset *ks, char *kid_out)
{
    if (!ks) return AG_EINVAL;
    ag__key k;
    memset(&k, 0, sizeof k);
    crypto_sign_keypair(k.pk, k.sk);
    k.has_sk = true;
    pthread_rwlock_wrlock(&ks->lock);
    bool found;
    size_t at;
    /* A UUIDv7 collision is not expected; a new id settles it if it happens. */
    do {
        ag_id_new_str(k.kid);
        at = find(ks, k.kid, &found);
    } while (found);
    insert_at(ks, at, &k);
    pthread_rwlock_unlock(&ks->lock);
    if (kid_out) memcpy(kid_out, k.kid, sizeof k.kid);
    sodium_memzero(&k, sizeof k);
    return 0;
}

int ag_keyset_count(ag_keyset *ks)
{
    if (!ks) return 0;
    pthread_rwlock_rdlock(&ks->lock);
    int n = (int)ks->n;
    pthread_rwlock_unlock(&ks->lock);
    return n;
}

bool ag_keyset_can_sign(ag_keyset *ks)
{
    if (!ks) return false;
    bool can = false;
    pthread_rwlock_rdlock(&ks->lock);
    for (size_t i = 0; i < ks->n && !can; i++)
        can = ks->keys[i].has_sk;
    pthread_rwlock_unlock(&ks->lock);
    return can;
}

int ag_keyset_remove(ag_keyset *ks, const char *kid)
{
    if (!ks || !kid) return AG_EINVAL;
    pthread_rwlock_wrlock(&ks->lock);
    bool found;
    size_t at = find(ks, kid, &found);
    if (found) {
        sodium_memzero(&ks->keys[at], sizeof ks->keys[at]);
        memmove(&ks->keys[at], &ks->keys[at + 1], (ks->n - at - 1) * sizeof *ks->keys);
        ks->n--;
        sodium_memzero(&ks->keys[ks->n], sizeof ks->keys[ks->n]);
    }
    pthread_rwlock_unlock(&ks->lock);
    return found ? 0 : AG_ENOTFOUND;
}

int ag__keyset_public(ag_keyset *ks, const char *kid, uint8_t pk[AG__ED25519_PK])
{
    pthread_rwlock_rdlock(&ks->lock);
    bool found;
    size_t at = find(ks, kid, &found);
    if (found) memcpy(pk, ks->keys[at].pk, AG__ED25519_PK);
    pthread_rwlock_unlock(&ks->lock);
    return found ? 0 : AG_ENOTFOUND;
}

int ag__keyset_signer(ag_keyset *ks, char kid[AG_KID_MAX], uint8_t sk[AG__ED25519_SK])
{
    int rc = AG_ESTATE;
    pthread_rwlock_rdlock(&ks->lock);
    for (size_t i = ks->n; i-- > 0;) {
        if (ks->keys[i].has_sk) {
            memcpy(kid, ks->keys[i].kid, AG_KID_MAX);
            memcpy(sk, ks->keys[i].sk, AG__ED25519_SK);
            rc = 0;
            break;
        }
    }
    pthread_rwlock_unlock(&ks->lock);
    return rc;
}

/* ---- JWK documents -------------------------------------------------------- */

static json_t *jwk_of(const ag__key *k, bool with_private)
{
    char x[64], d[64];
    ag__b64url_encode(k->pk, sizeof k->pk, x, sizeof x);
    json_t *o = json_object();
    json_object_set_new(o, "kty", json_string("OKP"));
    json_object_set_new(o, "crv", json_string("Ed25519"));
    json_object_set_new(o, "x", json_string(x));
    if (with_private) {
        /* The first 32 bytes of a libsodium Ed25519 secret key are its seed. */
        ag__b64url_encode(k->sk, AG__ED25519_SEED, d, sizeof d);
        json_object_set_new(o, "d", json_string(d));
        sodium_memzero(d, sizeof d);
    }
    json_object_set_new(o, "kid", json_string(k->kid));
    json_object_set_new(o, "alg", json_string("EdDSA"));
    json_object_set_new(o, "use", json_string("sig"));
    return o;
}

static json_t *export(ag_keyset *ks, bool with_private)
{
    json_t *keys = json_array();
    pthread_rwlock_rdlock(&ks->lock);
    for (size_t i = 0; i < ks->n; i++)
        if (!with_private || ks->keys[i].has_sk)
            json_array_append_new(keys, jwk_of(&ks->keys[i], with_private));
    pthread_rwlock_unlock(&ks->lock);
    json_t *doc = json_object();
    json_object_set_new(doc, "keys", keys);
    return doc;
}

json_t *ag_keyset_jwks(ag_keyset *ks)
{
    return ks ? export(ks, false) : NULL;
}

json_t *ag_keyset_export_private(ag_keyset *ks)
{
    return ks ? export(ks, true) : NULL;
}

/* A string member of `o` without embedded NULs, or NULL. */
static const char *member_str(json_t *o, const char *name, size_t *len)
{
    json_t *v = json_object_get(o, name);
    if (!json_is_string(v)) return NULL;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (strlen(s) != n) return NULL;
    if (len) *len = n;
    return s;
}

/* Reads an OKP/Ed25519 signing key from a JWK into `k` (kid and pk; the
 * private half too when `with_private`). False when it is anything else:
 * another key type or curve, a use other than "sig", an alg other than
 * EdDSA, a bad kid, or members of the wrong size. */
static bool jwk_parse(json_t *jwk, bool with_private, ag__key *k)
{
    if (!json_is_object(jwk)) return false;
    const char *kty = member_str(jwk, "kty", NULL);
    const char *crv = member_str(jwk, "crv", NULL);
    if (!kty || strcmp(kty, "OKP") != 0 || !crv || strcmp(crv, "Ed25519") != 0) return false;
    json_t *use = json_object_get(jwk, "use");
    if (use && !(json_is_string(use) && strcmp(json_string_value(use), "sig") == 0)) return false;
    json_t *alg = json_object_get(jwk, "alg");
    if (alg && !(json_is_string(alg) && json_string_length(alg) == 5 &&
                 strcmp(json_string_value(alg), "EdDSA") == 0))
        return false;
    size_t kid_len, x_len, n;
    const char *kid = member_str(jwk, "kid", &kid_len);
    const char *x = member_str(jwk, "x", &x_len);
    if (!kid || !kid_ok(kid, kid_len) || !x) return false;
    memset(k, 0, sizeof *k);
    memcpy(k->kid, kid, kid_len);
    if (ag__b64url_decode(x, x_len, k->pk, sizeof k->pk, &n) < 0 || n != AG__ED25519_PK)
        return false;
    if (!with_private) return true;
    size_t d_len;
    const char *d = member_str(jwk, "d", &d_len);
    uint8_t seed[AG__ED25519_SEED + 1], pk[AG__ED25519_PK];
    bool ok = d && ag__b64url_decode(d, d_len, seed, sizeof seed, &n) == 0 && n == AG__ED25519_SEED;
    if (ok) {
        crypto_sign_seed_keypair(pk, k->sk, seed);
        /* "x" must be the public half of "d", or the document is corrupt. */
        ok = sodium_memcmp(pk, k->pk, sizeof pk) == 0;
    }
    sodium_memzero(seed, sizeof seed);
    k->has_sk = ok;
    if (!ok) sodium_memzero(k->sk, sizeof k->sk);
    return ok;
}

int ag_keyset_add_jwks(ag_keyset *ks, json_t *jwks)
{
    if (!ks) return AG_EINVAL;
    json_t *keys = json_is_object(jwks) ? json_object_get(jwks, "keys") : NULL;
    if (!json_is_array(keys)) return AG_EINVAL;
    int added = 0;
    size_t i;
    json_t *jwk;
    pthread_rwlock_wrlock(&ks->lock);
    json_array_foreach(keys, i, jwk)
    {
        ag__key k;
        if (!jwk_parse(jwk, false, &k)) continue;
        bool found;
        size_t at = find(ks, k.kid, &found);
        /* A kid we hold keeps its key: a document cannot swap it. */
        if (found) continue;
        insert_at(ks, at, &k);
        added++;
    }
    pthread_rwlock_unlock(&ks->lock);
    return added;
}

int ag_keyset_import_private(ag_keyset *ks, json_t *doc)
{
    if (!ks) return AG_EINVAL;
    json_t *keys = json_is_object(doc) ? json_object_get(doc, "keys") : NULL;
    if (!json_is_array(keys)) return AG_EINVAL;
    size_t count = json_array_size(keys);
    ag__key *parsed = ag_calloc(count ? count : 1, sizeof *parsed);
    int rc = 0;
    /* All or nothing: every entry must be a whole Ed25519 private key. */
    for (size_t i = 0; i < count && rc == 0; i++)
        if (!jwk_parse(json_array_get(keys, i), true, &parsed[i])) rc = AG_EINVAL;
    pthread_rwlock_wrlock(&ks->lock);
    for (size_t i = 0; i < count && rc == 0; i++) {
        bool found;
        size_t at = find(ks, parsed[i].kid, &found);
        if (found && sodium_memcmp(ks->keys[at].pk, parsed[i].pk, AG__ED25519_PK) != 0)
            rc = AG_EEXISTS; /* the same kid with another key */
    }
    int added = 0;
    for (size_t i = 0; i < count && rc == 0; i++) {
        bool found;
        size_t at = find(ks, parsed[i].kid, &found);
        if (!found) {
            insert_at(ks, at, &parsed[i]);
            added++;
        } else if (!ks->keys[at].has_sk) {
            /* A verification key we held gains its private half. */
            memcpy(ks->keys[at].sk, parsed[i].sk, AG__ED25519_SK);
            ks->keys[at].has_sk = true;
            added++;
        }
    }
    pthread_rwlock_unlock(&ks->lock);
    sodium_memzero(parsed, (count ? count : 1) * sizeof *parsed);
    ag_free(parsed);
    return rc < 0 ? rc : added;
}
