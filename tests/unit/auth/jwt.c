/* Unit tests of src/lib/auth/jwt.c: round trips, tampering, algorithm
 * confusion ("none", HS256 keyed with the public key, look-alikes), unknown
 * kids, exp/nbf with leeway, iss/aud, malformed and oversized input, claims
 * that do not fit, rotation, and signing and verifying from several threads
 * while keys change. Hostile tokens are built by hand, some signed with the
 * real private key (taken from the private export) so that only the claim
 * under test is wrong. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "agora/agora.h"
#include "agora/auth.h"

/* ---- Helpers ------------------------------------------------------------ */

static int64_t now_s(void)
{
    return (int64_t)(ag_wall_ms() / 1000);
}

static ag_claims claims(void)
{
    ag_claims c;
    memset(&c, 0, sizeof c);
    snprintf(c.sub, sizeof c.sub, "%s", "0190c5a2-7f3e-7c1a-9b2e-5d4f3a2b1c0d");
    snprintf(c.email, sizeof c.email, "%s", "ada@example.com");
    snprintf(c.role, sizeof c.role, "%s", "customer");
    snprintf(c.iss, sizeof c.iss, "%s", "agora-users");
    snprintf(c.aud, sizeof c.aud, "%s", "agora");
    snprintf(c.jti, sizeof c.jti, "%s", "jti-1");
    c.iat = now_s();
    c.exp = c.iat + 900;
    return c;
}

static const ag_jwt_policy POLICY = {.iss = "agora-users", .aud = "agora", .leeway_s = 0};

/* base64url of `n` bytes, in a new buffer. */
static char *b64(const void *data, size_t n)
{
    size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *out = ag_malloc(cap);
    sodium_bin2base64(out, cap, data, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return out;
}

/* Decodes a base64url segment of `len` chars into a new NUL-terminated string. */
static char *unb64(const char *s, size_t len)
{
    char *out = ag_malloc(len + 1);
    size_t n = 0;
    assert_int_equal(sodium_base642bin((unsigned char *)out, len, s, len, NULL, &n, NULL,
                                       sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                     0);
    out[n] = '\0';
    return out;
}

/* "b64(header).b64(payload)" */
static char *signing_input(const char *header, const char *payload)
{
    char *h = b64(header, strlen(header)), *p = b64(payload, strlen(payload));
    size_t n = strlen(h) + strlen(p) + 2;
    char *out = ag_malloc(n);
    snprintf(out, n, "%s.%s", h, p);
    ag_free(h);
    ag_free(p);
    return out;
}

static char *join(const char *input, const unsigned char *sig, size_t siglen)
{
    char *s = b64(sig, siglen);
    size_t n = strlen(input) + strlen(s) + 2;
    char *out = ag_malloc(n);
    snprintf(out, n, "%s.%s", input, s);
    ag_free(s);
    return out;
}

/* The private key of `kid`, from the keyset's private export. */
static void secret_key(ag_keyset *ks, const char *kid, unsigned char sk[64], unsigned char pk[32])
{
    json_t *doc = ag_keyset_export_private(ks);
    size_t i;
    json_t *k;
    bool found = false;
    json_array_foreach(json_object_get(doc, "keys"), i, k)
    {
        if (strcmp(json_string_value(json_object_get(k, "kid")), kid) != 0) continue;
        const char *d = json_string_value(json_object_get(k, "d"));
        unsigned char seed[32];
        size_t n = 0;
        assert_int_equal(sodium_base642bin(seed, sizeof seed, d, strlen(d), NULL, &n, NULL,
                                           sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                         0);
        assert_int_equal(n, 32);
        crypto_sign_seed_keypair(pk, sk, seed);
        found = true;
    }
    json_decref(doc);
    assert_true(found);
}

/* A token with this header and payload, truly signed with `kid`'s key. */
static char *sign_raw(ag_keyset *ks, const char *kid, const char *header, const char *payload)
{
    unsigned char sk[64], pk[32], sig[64];
    secret_key(ks, kid, sk, pk);
    char *input = signing_input(header, payload);
    crypto_sign_detached(sig, NULL, (const unsigned char *)input, strlen(input), sk);
    char *tok = join(input, sig, sizeof sig);
    ag_free(input);
    return tok;
}

static char *std_header(const char *kid)
{
    static char h[160];
    snprintf(h, sizeof h, "{\"alg\":\"EdDSA\",\"typ\":\"JWT\",\"kid\":\"%s\"}", kid);
    return h;
}

typedef struct fixture {
    ag_keyset *ks;
    char kid[AG_KID_MAX];
} fixture;

static int setup(void **state)
{
    fixture *f = ag_calloc(1, sizeof *f);
    if (ag_keyset_new(&f->ks) < 0 || ag_keyset_generate(f->ks, f->kid) < 0) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ag_keyset_free(f->ks);
    ag_free(f);
    return 0;
}

/* Verifies `tok` with the fixture and POLICY; returns the code, `why` filled. */
static int verify(fixture *f, const char *tok, const ag_jwt_policy *p, char *why)
{
    ag_claims out;
    return ag_jwt_verify(f->ks, tok, p ? p : &POLICY, &out, why, 32);
}

#define assert_refused(f, tok, p, code, reason)                                                    \
    do {                                                                                           \
        char why_[32];                                                                             \
        assert_int_equal(verify((f), (tok), (p), why_), (code));                                   \
        assert_string_equal(why_, (reason));                                                       \
    } while (0)

/* ---- Round trip ------------------------------------------------------------ */

static void test_sign_verify(void **state)
{
    fixture *f = *state;
    ag_claims c = claims();
    c.nbf = c.iat - 5;
    char *tok = NULL;
    assert_int_equal(ag_jwt_sign(f->ks, &c, &tok), 0);
    assert_non_null(tok);

    /* The header is exactly alg, typ, kid. */
    const char *dot = strchr(tok, '.');
    char *hdr = unb64(tok, (size_t)(dot - tok));
    char want[160];
    snprintf(want, sizeof want, "{\"alg\":\"EdDSA\",\"typ\":\"JWT\",\"kid\":\"%s\"}", f->kid);
    assert_string_equal(hdr, want);
    ag_free(hdr);

    ag_claims out;
    memset(&out, 0x5a, sizeof out);
    char why[32] = "junk";
    assert_int_equal(ag_jwt_verify(f->ks, tok, &POLICY, &out, why, sizeof why), 0);
    assert_string_equal(why, "");
    assert_string_equal(out.sub, c.sub);
    assert_string_equal(out.email, c.email);
    assert_string_equal(out.role, c.role);
    assert_string_equal(out.iss, c.iss);
    assert_string_equal(out.aud, c.aud);
    assert_string_equal(out.jti, c.jti);
    assert_int_equal(out.iat, c.iat);
    assert_int_equal(out.nbf, c.nbf);
    assert_int_equal(out.exp, c.exp);
    /* A policy without iss/aud accepts it too, and out may be NULL. */
    ag_jwt_policy any = {0};
    assert_int_equal(ag_jwt_verify(f->ks, tok, &any, NULL, NULL, 0), 0);
    assert_int_equal(ag_jwt_verify(f->ks, tok, NULL, NULL, why, sizeof why), 0);
    ag_free(tok);

    /* Optional claims left empty are absent; iat 0 means now. */
    ag_claims m;
    memset(&m, 0, sizeof m);
    snprintf(m.sub, sizeof m.sub, "svc");
    m.exp = now_s() + 60;
    assert_int_equal(ag_jwt_sign(f->ks, &m, &tok), 0);
    assert_int_equal(ag_jwt_verify(f->ks, tok, &any, &out, why, sizeof why), 0);
    assert_string_equal(out.sub, "svc");
    assert_string_equal(out.email, "");
    assert_string_equal(out.jti, "");
    assert_int_equal(out.nbf, 0);
    assert_true(out.iat >= now_s() - 2 && out.iat <= now_s());
    ag_free(tok);
}

static void test_sign_refusals(void **state)
{
    fixture *f = *state;
    ag_claims c = claims();
    char *tok = (char *)0x1;
    c.exp = 0;
    assert_int_equal(ag_jwt_sign(f->ks, &c, &tok), AG_EINVAL);
    c = claims();
    memset(c.role, 'r', sizeof c.role); /* unterminated */
    assert_int_equal(ag_jwt_sign(f->ks, &c, &tok), AG_EINVAL);
    assert_ptr_equal(tok, (char *)0x1);

    ag_keyset *empty;
    assert_int_equal(ag_keyset_new(&empty), 0);
    assert_false(ag_keyset_can_sign(empty));
    c = claims();
    assert_int_equal(ag_jwt_sign(empty, &c, &tok), AG_ESTATE);
    /* A keyset holding public keys only verifies but cannot sign. */
    json_t *jwks = ag_keyset_jwks(f->ks);
    assert_int_equal(ag_keyset_add_jwks(empty, jwks), 1);
    json_decref(jwks);
    assert_false(ag_keyset_can_sign(empty));
    assert_int_equal(ag_jwt_sign(empty, &c, &tok), AG_ESTATE);
    ag_keyset_free(empty);
}

/* ---- Tampering ------------------------------------------------------------- */

static void test_tampered(void **state)
{
    fixture *f = *state;
    ag_claims c = claims();
    char *tok;
    assert_int_equal(ag_jwt_sign(f->ks, &c, &tok), 0);
    char *d1 = strchr(tok, '.'), *d2 = strchr(d1 + 1, '.');

    /* Payload swapped for one naming an admin, signature kept. */
    char *payload = unb64(d1 + 1, (size_t)(d2 - d1 - 1));
    char *at = strstr(payload, "customer");
    assert_non_null(at);
    char forged[512];
    snprintf(forged, sizeof forged, "%.*sadmin\"%s", (int)(at - payload), payload,
             at + strlen("customer\""));
    char *hdr = ag_strndup(tok, (size_t)(d1 - tok));
    char *p64 = b64(forged, strlen(forged));
    size_t n = strlen(tok) + 64;
    char *t2 = ag_malloc(n);
    snprintf(t2, n, "%s.%s.%s", hdr, p64, d2 + 1);
    assert_refused(f, t2, NULL, AG_EAUTH, "bad signature");
    ag_free(payload), ag_free(hdr), ag_free(p64), ag_free(t2);

    /* One signature character changed (the first: the last carries spare bits). */
    char *t3 = ag_strdup(tok);
    char *s = strrchr(t3, '.') + 1;
    s[0] = s[0] == 'A' ? 'B' : 'A';
    assert_refused(f, t3, NULL, AG_EAUTH, "bad signature");
    /* A signature cut short, or an extra byte, is malformed. */
    size_t sl = strlen(s);
    s[sl - 4] = '\0';
    assert_refused(f, t3, NULL, AG_EAUTH, "malformed");
    ag_free(t3);

    /* A signature from another key with the same kid. */
    ag_keyset *other;
    assert_int_equal(ag_keyset_new(&other), 0);
    assert_int_equal(ag_keyset_generate(other, NULL), 0);
    char *t4;
    assert_int_equal(ag_jwt_sign(other, &c, &t4), 0);
    char *o1 = strchr(t4, '.'), *o2 = strchr(o1 + 1, '.');
    n = strlen(tok) + strlen(t4);
    char *t5 = ag_malloc(n);
    snprintf(t5, n, "%.*s%s", (int)(d2 - tok), tok, o2);
    assert_refused(f, t5, NULL, AG_EAUTH, "bad signature");
    ag_free(t4), ag_free(t5);
    ag_keyset_free(other);
    ag_free(tok);
}

/* ---- Algorithms -------------------------------------------------------------- */

static char *valid_payload(void)
{
    static char p[256];
    snprintf(p, sizeof p,
             "{\"sub\":\"u1\",\"role\":\"admin\",\"iss\":\"agora-users\",\"aud\":\"agora\","
             "\"exp\":%lld}",
             (long long)now_s() + 600);
    return p;
}

static void test_alg_none(void **state)
{
    fixture *f = *state;
    char header[160];
    snprintf(header, sizeof header, "{\"alg\":\"none\",\"typ\":\"JWT\",\"kid\":\"%s\"}", f->kid);
    char *input = signing_input(header, valid_payload());
    size_t n = strlen(input) + 2;
    char *tok = ag_malloc(n);
    snprintf(tok, n, "%s.", input); /* the unsecured form: empty signature */
    assert_refused(f, tok, NULL, AG_EAUTH, "algorithm not allowed");
    ag_free(tok);
    ag_free(input);

    /* "none" carrying a real EdDSA signature over its input is still refused. */
    tok = sign_raw(f->ks, f->kid, header, valid_payload());
    assert_refused(f, tok, NULL, AG_EAUTH, "algorithm not allowed");
    ag_free(tok);
    /* And without a kid. */
    input = signing_input("{\"alg\":\"none\"}", valid_payload());
    n = strlen(input) + 2;
    tok = ag_malloc(n);
    snprintf(tok, n, "%s.", input);
    assert_refused(f, tok, NULL, AG_EAUTH, "algorithm not allowed");
    ag_free(tok);
    ag_free(input);
}

/* The classic confusion: HS256 with the public key as the HMAC secret. */
static void test_alg_hs256(void **state)
{
    fixture *f = *state;
    unsigned char sk[64], pk[32];
    secret_key(f->ks, f->kid, sk, pk);
    json_t *jwks = ag_keyset_jwks(f->ks);
    const char *x =
        json_string_value(json_object_get(json_array_get(json_object_get(jwks, "keys"), 0), "x"));
    char header[160];
    snprintf(header, sizeof header, "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", f->kid);
    char *input = signing_input(header, valid_payload());
    const unsigned char *secrets[] = {pk, (const unsigned char *)x};
    size_t lens[] = {sizeof pk, strlen(x)};
    for (int i = 0; i < 2; i++) {
        unsigned char mac[crypto_auth_hmacsha256_BYTES];
        crypto_auth_hmacsha256_state st;
        crypto_auth_hmacsha256_init(&st, secrets[i], lens[i]);
        crypto_auth_hmacsha256_update(&st, (const unsigned char *)input, strlen(input));
        crypto_auth_hmacsha256_final(&st, mac);
        char *tok = join(input, mac, sizeof mac);
        assert_refused(f, tok, NULL, AG_EAUTH, "algorithm not allowed");
        ag_free(tok);
    }
    ag_free(input);
    json_decref(jwks);
}

static void test_alg_variants(void **state)
{
    fixture *f = *state;
    static const char *const refused[] = {"ES256", "RS256", "HS512",   "EdDSA ", " EdDSA",
                                          "eddsa", "EDDSA", "Ed25519", "",       "EdDS"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char header[200];
        snprintf(header, sizeof header, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}",
                 refused[i], f->kid);
        char *tok = sign_raw(f->ks, f->kid, header, valid_payload());
        assert_refused(f, tok, NULL, AG_EAUTH, "algorithm not allowed");
        ag_free(tok);
    }
    /* Missing or non-string alg, an embedded NUL, a missing or odd kid, crit. */
    char bad[6][200];
    snprintf(bad[0], sizeof bad[0], "{\"typ\":\"JWT\",\"kid\":\"%s\"}", f->kid);
    snprintf(bad[1], sizeof bad[1], "{\"alg\":[\"EdDSA\"],\"kid\":\"%s\"}", f->kid);
    snprintf(bad[2], sizeof bad[2], "{\"alg\":\"EdDSA\\u0000x\",\"kid\":\"%s\"}", f->kid);
    snprintf(bad[3], sizeof bad[3], "{\"alg\":\"EdDSA\",\"typ\":\"JWT\"}");
    snprintf(bad[4], sizeof bad[4], "{\"alg\":\"EdDSA\",\"kid\":42}");
    snprintf(bad[5], sizeof bad[5], "{\"alg\":\"EdDSA\",\"kid\":\"%s\",\"crit\":[\"exp\"]}",
             f->kid);
    for (size_t i = 0; i < 6; i++) {
        char *tok = sign_raw(f->ks, f->kid, bad[i], valid_payload());
        assert_refused(f, tok, NULL, AG_EAUTH, "malformed");
        ag_free(tok);
    }
    /* The genuine header built by hand verifies: the helper is not the cause. */
    char *tok = sign_raw(f->ks, f->kid, std_header(f->kid), valid_payload());
    char why[32];
    assert_int_equal(verify(f, tok, NULL, why), 0);
    ag_free(tok);
}

/* ---- Keys -------------------------------------------------------------------- */

static void test_unknown_kid(void **state)
{
    fixture *f = *state;
    ag_keyset *other;
    assert_int_equal(ag_keyset_new(&other), 0);
    assert_int_equal(ag_keyset_generate(other, NULL), 0);
    ag_claims c = claims();
    char *tok;
    assert_int_equal(ag_jwt_sign(other, &c, &tok), 0);
    assert_refused(f, tok, NULL, AG_ENOTFOUND, "unknown key");
    ag_free(tok);
    ag_keyset_free(other);
}

static void test_rotation(void **state)
{
    fixture *f = *state;
    ag_claims c = claims();
    char *old_tok, *new_tok, kid2[AG_KID_MAX], why[32];
    assert_int_equal(ag_jwt_sign(f->ks, &c, &old_tok), 0);
    assert_int_equal(ag_keyset_generate(f->ks, kid2), 0);
    assert_true(strcmp(f->kid, kid2) < 0); /* time-ordered */
    assert_int_equal(ag_keyset_count(f->ks), 2);
    assert_int_equal(ag_jwt_sign(f->ks, &c, &new_tok), 0);
    /* The new key signs. */
    const char *dot = strchr(new_tok, '.');
    char *hdr = unb64(new_tok, (size_t)(dot - new_tok));
    assert_non_null(strstr(hdr, kid2));
    ag_free(hdr);
    assert_int_equal(verify(f, old_tok, NULL, why), 0);
    assert_int_equal(verify(f, new_tok, NULL, why), 0);

    assert_int_equal(ag_keyset_remove(f->ks, f->kid), 0);
    assert_int_equal(ag_keyset_remove(f->ks, f->kid), AG_ENOTFOUND);
    assert_int_equal(ag_keyset_count(f->ks), 1);
    assert_refused(f, old_tok, NULL, AG_ENOTFOUND, "unknown key");
    assert_int_equal(verify(f, new_tok, NULL, why), 0);
    ag_free(old_tok);
    ag_free(new_tok);
    /* Without keys nothing signs. */
    assert_int_equal(ag_keyset_remove(f->ks, kid2), 0);
    char *t;
    assert_int_equal(ag_jwt_sign(f->ks, &c, &t), AG_ESTATE);
}

/* ---- Time, issuer, audience ---------------------------------------------------- */

static int sign_verify(fixture *f, const ag_claims *c, const ag_jwt_policy *p, char *why)
{
    char *tok;
    assert_int_equal(ag_jwt_sign(f->ks, c, &tok), 0);
    int rc = verify(f, tok, p, why);
    ag_free(tok);
    return rc;
}

static void test_time(void **state)
{
    fixture *f = *state;
    char why[32];
    ag_claims c = claims();
    c.exp = now_s() - 30;
    assert_int_equal(sign_verify(f, &c, NULL, why), AG_EAUTH);
    assert_string_equal(why, "expired");
    ag_jwt_policy lenient = POLICY;
    lenient.leeway_s = 120;
    assert_int_equal(sign_verify(f, &c, &lenient, why), 0);
    c.exp = now_s(); /* exp is the first instant it is no longer valid */
    assert_int_equal(sign_verify(f, &c, NULL, why), AG_EAUTH);
    assert_string_equal(why, "expired");

    c = claims();
    c.nbf = now_s() + 300;
    assert_int_equal(sign_verify(f, &c, NULL, why), AG_EAUTH);
    assert_string_equal(why, "not yet valid");
    lenient.leeway_s = 400;
    assert_int_equal(sign_verify(f, &c, &lenient, why), 0);
    /* A huge leeway does not overflow into accepting nothing or everything. */
    lenient.leeway_s = INT64_MAX;
    c = claims();
    assert_int_equal(sign_verify(f, &c, &lenient, why), 0);
    c.exp = 1;
    assert_int_equal(sign_verify(f, &c, &lenient, why), AG_EAUTH);

    /* exp missing, or not a number: malformed. Fractional times are fine. */
    const char *payloads[] = {
        "{\"sub\":\"u\"}", "{\"sub\":\"u\",\"exp\":\"9999999999\"}", "{\"sub\":\"u\",\"exp\":null}",
        "{\"sub\":\"u\",\"exp\":9999999999,\"nbf\":\"0\"}", "{\"sub\":\"u\",\"exp\":1e300}"};
    for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
        char *tok = sign_raw(f->ks, f->kid, std_header(f->kid), payloads[i]);
        assert_refused(f, tok, &(ag_jwt_policy){0}, AG_EAUTH, "malformed");
        ag_free(tok);
    }
    char *tok = sign_raw(f->ks, f->kid, std_header(f->kid), "{\"exp\":9999999999.5}");
    assert_int_equal(verify(f, tok, &(ag_jwt_policy){0}, why), 0);
    ag_free(tok);
}

static void test_issuer_audience(void **state)
{
    fixture *f = *state;
    char why[32];
    ag_claims c = claims();
    snprintf(c.iss, sizeof c.iss, "evil");
    assert_int_equal(sign_verify(f, &c, NULL, why), AG_EAUTH);
    assert_string_equal(why, "wrong issuer");
    c.iss[0] = '\0'; /* absent */
    assert_int_equal(sign_verify(f, &c, NULL, why), AG_EAUTH);
    assert_string_equal(why, "wrong issuer");

    c = claims();
    snprintf(c.aud, sizeof c.aud, "agora-admin");
    assert_int_equal(sign_verify(f, &c, NULL, why), AG_EAUTH);
    assert_string_equal(why, "wrong audience");
    c.aud[0] = '\0';
    assert_int_equal(sign_verify(f, &c, NULL, why), AG_EAUTH);
    assert_string_equal(why, "wrong audience");
    /* A prefix is not a match. */
    snprintf(c.aud, sizeof c.aud, "agor");
    assert_int_equal(sign_verify(f, &c, NULL, why), AG_EAUTH);

    /* aud as an array: containing the audience passes and reports it. */
    char payload[256];
    snprintf(payload, sizeof payload,
             "{\"iss\":\"agora-users\",\"aud\":[\"billing\",\"agora\"],\"exp\":%lld}",
             (long long)now_s() + 60);
    char *tok = sign_raw(f->ks, f->kid, std_header(f->kid), payload);
    ag_claims out;
    assert_int_equal(ag_jwt_verify(f->ks, tok, &POLICY, &out, why, sizeof why), 0);
    assert_string_equal(out.aud, "agora");
    assert_int_equal(ag_jwt_verify(f->ks, tok, &(ag_jwt_policy){0}, &out, why, sizeof why), 0);
    assert_string_equal(out.aud, "billing");
    ag_free(tok);
    snprintf(payload, sizeof payload,
             "{\"iss\":\"agora-users\",\"aud\":[\"billing\",\"shop\"],\"exp\":%lld}",
             (long long)now_s() + 60);
    tok = sign_raw(f->ks, f->kid, std_header(f->kid), payload);
    assert_refused(f, tok, NULL, AG_EAUTH, "wrong audience");
    ag_free(tok);
    snprintf(payload, sizeof payload,
             "{\"iss\":\"agora-users\",\"aud\":[\"agora\",7],\"exp\":%lld}",
             (long long)now_s() + 60);
    tok = sign_raw(f->ks, f->kid, std_header(f->kid), payload);
    assert_refused(f, tok, NULL, AG_EAUTH, "malformed");
    ag_free(tok);
    snprintf(payload, sizeof payload, "{\"iss\":\"agora-users\",\"aud\":{},\"exp\":%lld}",
             (long long)now_s() + 60);
    tok = sign_raw(f->ks, f->kid, std_header(f->kid), payload);
    assert_refused(f, tok, NULL, AG_EAUTH, "malformed");
    ag_free(tok);
}

/* ---- Malformed input --------------------------------------------------------------- */

static void test_malformed(void **state)
{
    fixture *f = *state;
    ag_claims c = claims();
    char *tok;
    assert_int_equal(ag_jwt_sign(f->ks, &c, &tok), 0);
    size_t n = strlen(tok);

    assert_refused(f, NULL, NULL, AG_EAUTH, "malformed");
    assert_refused(f, "", NULL, AG_EAUTH, "malformed");
    assert_refused(f, "abc", NULL, AG_EAUTH, "malformed");
    assert_refused(f, "a.b", NULL, AG_EAUTH, "malformed");
    assert_refused(f, "..", NULL, AG_EAUTH, "malformed");
    assert_refused(f, "a.b.c.d", NULL, AG_EAUTH, "malformed");

    char *t = ag_malloc(n + 8);
    /* Four segments. */
    snprintf(t, n + 8, "%s.AAAA", tok);
    assert_refused(f, t, NULL, AG_EAUTH, "malformed");
    /* Padding, and standard base64 characters. */
    snprintf(t, n + 8, "%s=", tok);
    assert_refused(f, t, NULL, AG_EAUTH, "malformed");
    memcpy(t, tok, n + 1);
    char *sig = strrchr(t, '.') + 1;
    sig[3] = '+';
    assert_refused(f, t, NULL, AG_EAUTH, "malformed");
    memcpy(t, tok, n + 1);
    t[2] = '/';
    assert_refused(f, t, NULL, AG_EAUTH, "malformed");
    /* Whitespace inside. */
    memcpy(t, tok, n + 1);
    t[5] = ' ';
    assert_refused(f, t, NULL, AG_EAUTH, "malformed");
    ag_free(t);

    /* Header or payload that is JSON but not an object, or not JSON. */
    const char *headers[] = {"[]", "\"EdDSA\"", "{\"alg\":\"EdDSA\"", "null", "{}"};
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        char *bt = sign_raw(f->ks, f->kid, headers[i], valid_payload());
        assert_refused(f, bt, NULL, AG_EAUTH, "malformed");
        ag_free(bt);
    }
    const char *payloads[] = {"[1]", "42", "{\"exp\":", "{\"exp\":1,\"exp\":2}", ""};
    for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
        char *bt = sign_raw(f->ks, f->kid, std_header(f->kid), payloads[i]);
        assert_refused(f, bt, &(ag_jwt_policy){0}, AG_EAUTH, "malformed");
        ag_free(bt);
    }

    /* Longer than 8 KiB: refused before anything else. */
    size_t big = 8193;
    char *huge = ag_malloc(big + 1);
    memset(huge, 'A', big);
    huge[100] = '.';
    huge[200] = '.';
    huge[big] = '\0';
    assert_refused(f, huge, NULL, AG_EAUTH, "malformed");
    ag_free(huge);
    ag_free(tok);
}

/* Claims longer than their ag_claims field are refused, not truncated. */
static void test_claims_too_long(void **state)
{
    fixture *f = *state;
    char longs[300];
    memset(longs, 'a', sizeof longs - 1);
    longs[sizeof longs - 1] = '\0';
    struct {
        const char *name;
        size_t fits; /* the longest value that fits */
    } fields[] = {{"sub", 127}, {"email", 255}, {"role", 31},
                  {"iss", 127}, {"aud", 127},   {"jti", 63}};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        for (int over = 0; over <= 1; over++) {
            char payload[512];
            snprintf(payload, sizeof payload, "{\"%s\":\"%.*s\",\"exp\":%lld}", fields[i].name,
                     (int)fields[i].fits + over, longs, (long long)now_s() + 60);
            char *tok = sign_raw(f->ks, f->kid, std_header(f->kid), payload);
            char why[32];
            ag_claims out;
            int rc = ag_jwt_verify(f->ks, tok, &(ag_jwt_policy){0}, &out, why, sizeof why);
            if (over) {
                assert_int_equal(rc, AG_EAUTH);
                assert_string_equal(why, "malformed");
            } else {
                assert_int_equal(rc, 0);
            }
            ag_free(tok);
        }
    }
    /* A non-string claim is malformed too. */
    char payload[128];
    snprintf(payload, sizeof payload, "{\"sub\":12,\"exp\":%lld}", (long long)now_s() + 60);
    char *tok = sign_raw(f->ks, f->kid, std_header(f->kid), payload);
    assert_refused(f, tok, &(ag_jwt_policy){0}, AG_EAUTH, "malformed");
    ag_free(tok);
    /* A short `why` buffer is cut, never overrun. */
    tok = sign_raw(f->ks, f->kid, std_header(f->kid), "{}");
    char why[4];
    assert_int_equal(ag_jwt_verify(f->ks, tok, NULL, NULL, why, sizeof why), AG_EAUTH);
    assert_string_equal(why, "mal");
    ag_free(tok);
}

/* ---- Threads ------------------------------------------------------------------------ */

typedef struct worker {
    ag_keyset *ks;
    int failures;
} worker;

static void *sign_verify_loop(void *arg)
{
    worker *w = arg;
    ag_claims c = claims();
    for (int i = 0; i < 300; i++) {
        char *tok, why[32];
        if (ag_jwt_sign(w->ks, &c, &tok) < 0) {
            w->failures++;
            continue;
        }
        int rc = ag_jwt_verify(w->ks, tok, &POLICY, NULL, why, sizeof why);
        /* The key may be dropped between sign and verify: unknown, never bad. */
        if (rc != 0 && rc != AG_ENOTFOUND) w->failures++;
        ag_free(tok);
    }
    return NULL;
}

static void test_threads(void **state)
{
    fixture *f = *state;
    pthread_t th[4];
    worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker){.ks = f->ks};
        assert_int_equal(pthread_create(&th[i], NULL, sign_verify_loop, &w[i]), 0);
    }
    char kids[20][AG_KID_MAX];
    for (int i = 0; i < 20; i++) {
        assert_int_equal(ag_keyset_generate(f->ks, kids[i]), 0);
        if (i >= 2) ag_keyset_remove(f->ks, kids[i - 2]);
        json_t *j = ag_keyset_jwks(f->ks);
        json_decref(j);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
}

int main(void)
{
    ag_log_setup("authtest", AG_LOG_OFF);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sign_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sign_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tampered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alg_none, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alg_hs256, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alg_variants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_kid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_issuer_audience, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claims_too_long, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
