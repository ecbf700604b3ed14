/*
 * jwt.c — JSON Web Tokens signed with Ed25519 (RFC 7519, RFC 8037).
 *
 * A token is base64url(header) "." base64url(claims) "." base64url(sig),
 * the header being exactly {"alg":"EdDSA","typ":"JWT","kid":...}.
 *
 * Verification trusts nothing in the token before the signature checks out,
 * and decides the algorithm itself: the header's "alg" must be the string
 * "EdDSA" byte for byte, else the token is refused whatever it claims
 * ("none", "HS256", "ES256", "EdDSA "...). So a public key can never be
 * used as an HMAC secret and an unsigned token never passes. The order is:
 * bounds and shape, header, key, signature, and only then the claims (exp
 * required, nbf, iss, aud). Claims that do not fit ag_claims are refused
 * as malformed rather than cut short, so two different subjects can never
 * compare equal after truncation.
 *
 * Nothing here logs: a token is a credential, and a reason ("expired") is
 * all a caller gets back.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/auth.h"
#include "agora/clock.h"
#include "agora/error.h"
#include "agora/mem.h"
#include "auth/internal.h"

#define AG__JWT_MAX 8192                   /* bytes; a longer token is refused unread */
#define AG__LEEWAY_MAX (365LL * 24 * 3600) /* keeps now ± leeway from overflowing */

/* ---- Signing ---------------------------------------------------------------- */

static bool terminated(const char *s, size_t cap)
{
    return memchr(s, '\0', cap) != NULL;
}

static void set_str(json_t *o, const char *name, const char *v)
{
    if (v[0]) json_object_set_new(o, name, json_string(v));
}

/* Appends base64url of `n` bytes to `b`. */
static void append_b64(ag_buf *b, const void *data, size_t n)
{
    size_t need = ag__b64url_len(n) + 1;
    ag_buf_reserve(b, need);
    int len = ag__b64url_encode(data, n, b->data + b->len, b->cap - b->len);
    b->len += (size_t)len;
}

static void append_json_b64(ag_buf *b, json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT);
    if (!text) abort(); /* only out of memory makes jansson fail here */
    append_b64(b, text, strlen(text));
    free(text); /* jansson allocates with malloc */
}

int ag_jwt_sign(ag_keyset *ks, const ag_claims *c, char **token_out)
{
    if (!ks || !c || !token_out) return AG_EINVAL;
    if (!terminated(c->sub, sizeof c->sub) || !terminated(c->email, sizeof c->email) ||
        !terminated(c->role, sizeof c->role) || !terminated(c->iss, sizeof c->iss) ||
        !terminated(c->aud, sizeof c->aud) || !terminated(c->jti, sizeof c->jti))
        return AG_EINVAL;
    if (c->exp <= 0) return AG_EINVAL; /* verification requires exp */
    char kid[AG_KID_MAX];
    uint8_t sk[AG__ED25519_SK];
    int rc = ag__keyset_signer(ks, kid, sk);
    if (rc < 0) return rc;

    json_t *hdr = json_object();
    json_object_set_new(hdr, "alg", json_string("EdDSA"));
    json_object_set_new(hdr, "typ", json_string("JWT"));
    json_object_set_new(hdr, "kid", json_string(kid));
    json_t *pl = json_object();
    set_str(pl, "sub", c->sub);
    set_str(pl, "email", c->email);
    set_str(pl, "role", c->role);
    set_str(pl, "iss", c->iss);
    set_str(pl, "aud", c->aud);
    json_object_set_new(pl, "iat",
                        json_integer(c->iat ? c->iat : (json_int_t)(ag_wall_ms() / 1000)));
    if (c->nbf) json_object_set_new(pl, "nbf", json_integer(c->nbf));
    json_object_set_new(pl, "exp", json_integer(c->exp));
    set_str(pl, "jti", c->jti);

    ag_buf b;
    ag_buf_init(&b, 0);
    append_json_b64(&b, hdr);
    ag_buf_append(&b, ".", 1);
    append_json_b64(&b, pl);
    json_decref(hdr);
    json_decref(pl);
    uint8_t sig[AG__ED25519_SIG];
    crypto_sign_detached(sig, NULL, (const uint8_t *)b.data, b.len, sk);
    sodium_memzero(sk, sizeof sk);
    ag_buf_append(&b, ".", 1);
    append_b64(&b, sig, sizeof sig);
    *token_out = ag_buf_detach(&b, NULL);
    return 0;
}

/* ---- Verification ----------------------------------------------------------- */

static int fail(char *why, size_t why_len, int rc, const char *reason)
{
    if (why && why_len) snprintf(why, why_len, "%s", reason);
    return rc;
}

/* Decodes one segment into a new buffer (the caller frees it). */
static uint8_t *decode_segment(const char *s, size_t n, size_t *out_len)
{
    if (n == 0) return NULL;
    uint8_t *buf = ag_malloc(n);
    if (ag__b64url_decode(s, n, buf, n, out_len) < 0) {
        ag_free(buf);
        return NULL;
    }
    return buf;
}

static json_t *parse_object(const uint8_t *data, size_t n)
{
    json_error_t err;
    json_t *v = json_loadb((const char *)data, n, JSON_REJECT_DUPLICATES, &err);
    if (v && !json_is_object(v)) {
        json_decref(v);
        v = NULL;
    }
    return v;
}

/* True when `v` is a string equal to `s`, byte for byte. */
static bool str_is(json_t *v, const char *s)
{
    return json_is_string(v) && json_string_length(v) == strlen(s) &&
           memcmp(json_string_value(v), s, strlen(s)) == 0;
}

/* Copies string claim `name` into dst[cap] when present. False when it is
 * present but not a string or too long to fit with its NUL. */
static bool copy_str(json_t *v, char *dst, size_t cap)
{
    if (!v) return true;
    if (!json_is_string(v)) return false;
    size_t n = json_string_length(v);
    if (n >= cap || strlen(json_string_value(v)) != n) return false;
    memcpy(dst, json_string_value(v), n + 1);
    return true;
}

static bool claim_str(json_t *pl, const char *name, char *dst, size_t cap)
{
    return copy_str(json_object_get(pl, name), dst, cap);
}

/* A NumericDate claim: an integer, or a real that fits in int64 (RFC 7519
 * allows fractions; they are dropped). False when present but not a number. */
static bool claim_time(json_t *pl, const char *name, int64_t *out, bool *present)
{
    json_t *v = json_object_get(pl, name);
    *present = v != NULL;
    if (!v) return true;
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d > -9.0e18 && d < 9.0e18)) return false;
        *out = (int64_t)d;
        return true;
    }
    return false;
}

/* Reads "aud" (a string or an array of strings) into c->aud: the string, or
 * the element matching `want`, else the first. *match tells whether `want`
 * was among them. False when malformed. */
static bool claim_aud(json_t *pl, const char *want, ag_claims *c, bool *match)
{
    json_t *v = json_object_get(pl, "aud");
    *match = false;
    if (!v) return true;
    if (json_is_string(v)) {
        *match = want && str_is(v, want);
        return copy_str(v, c->aud, sizeof c->aud);
    }
    if (!json_is_array(v)) return false;
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        if (!json_is_string(e)) return false;
        bool m = want && str_is(e, want);
        if (m || i == 0) {
            if (!copy_str(e, c->aud, sizeof c->aud)) return false;
        }
        if (m) *match = true;
    }
    return true;
}

/* The claims checks, on a payload whose signature verified. */
static int check_claims(json_t *pl, const ag_jwt_policy *p, ag_claims *c, char *why, size_t why_len)
{
    bool has_exp, has_nbf, has_iat, aud_match;
    const char *want_aud = p ? p->aud : NULL;
    if (!claim_str(pl, "sub", c->sub, sizeof c->sub) ||
        !claim_str(pl, "email", c->email, sizeof c->email) ||
        !claim_str(pl, "role", c->role, sizeof c->role) ||
        !claim_str(pl, "iss", c->iss, sizeof c->iss) ||
        !claim_str(pl, "jti", c->jti, sizeof c->jti) || !claim_aud(pl, want_aud, c, &aud_match) ||
        !claim_time(pl, "exp", &c->exp, &has_exp) || !claim_time(pl, "nbf", &c->nbf, &has_nbf) ||
        !claim_time(pl, "iat", &c->iat, &has_iat) || !has_exp)
        return fail(why, why_len, AG_EAUTH, "malformed");

    int64_t leeway = p ? p->leeway_s : 0;
    if (leeway < 0) leeway = 0;
    if (leeway > AG__LEEWAY_MAX) leeway = AG__LEEWAY_MAX;
    int64_t now = (int64_t)(ag_wall_ms() / 1000);
    /* Valid while now < exp (RFC 7519 §4.1.4), stretched by the leeway. */
    if (now - leeway >= c->exp) return fail(why, why_len, AG_EAUTH, "expired");
    if (has_nbf && c->nbf != 0 && now + leeway < c->nbf)
        return fail(why, why_len, AG_EAUTH, "not yet valid");
    if (p && p->iss && !str_is(json_object_get(pl, "iss"), p->iss))
        return fail(why, why_len, AG_EAUTH, "wrong issuer");
    if (want_aud && !aud_match) return fail(why, why_len, AG_EAUTH, "wrong audience");
    return 0;
}

int ag_jwt_verify(ag_keyset *ks, const char *token, const ag_jwt_policy *p, ag_claims *out,
                  char *why, size_t why_len)
{
    if (why && why_len) why[0] = '\0';
    if (!ks) return AG_EINVAL;
    if (!token) return fail(why, why_len, AG_EAUTH, "malformed");
    size_t len = strnlen(token, AG__JWT_MAX + 1);
    if (len == 0 || len > AG__JWT_MAX) return fail(why, why_len, AG_EAUTH, "malformed");
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if (!d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)))
        return fail(why, why_len, AG_EAUTH, "malformed");

    int rc;
    size_t hn = 0, pn = 0, sn = 0;
    uint8_t sig[AG__ED25519_SIG + 1];
    uint8_t *praw = NULL, *hraw = decode_segment(token, (size_t)(d1 - token), &hn);
    json_t *hdr = NULL, *pl = NULL;
    /* The header first, so that an "alg":"none" token (whose signature is
     * empty) is refused for its algorithm rather than its shape. */
    if (!hraw || !(hdr = parse_object(hraw, hn))) {
        rc = fail(why, why_len, AG_EAUTH, "malformed");
        goto done;
    }
    json_t *alg = json_object_get(hdr, "alg");
    json_t *kid = json_object_get(hdr, "kid");
    if (!json_is_string(alg)) {
        rc = fail(why, why_len, AG_EAUTH, "malformed");
        goto done;
    }
    if (!str_is(alg, "EdDSA")) {
        rc = fail(why, why_len, AG_EAUTH, "algorithm not allowed");
        goto done;
    }
    /* No header extension is understood, so any "crit" must be refused
     * (RFC 7515 §4.1.11). */
    if (!json_is_string(kid) || json_string_length(kid) == 0 ||
        json_string_length(kid) >= AG_KID_MAX ||
        strlen(json_string_value(kid)) != json_string_length(kid) || json_object_get(hdr, "crit")) {
        rc = fail(why, why_len, AG_EAUTH, "malformed");
        goto done;
    }

    const char *sig_s = d2 + 1;
    size_t sig_len = len - (size_t)(sig_s - token);
    praw = decode_segment(d1 + 1, (size_t)(d2 - d1 - 1), &pn);
    if (!praw || sig_len == 0 || ag__b64url_decode(sig_s, sig_len, sig, sizeof sig, &sn) < 0 ||
        sn != AG__ED25519_SIG) {
        rc = fail(why, why_len, AG_EAUTH, "malformed");
        goto done;
    }

    uint8_t pk[AG__ED25519_PK];
    if (ag__keyset_public(ks, json_string_value(kid), pk) < 0) {
        rc = fail(why, why_len, AG_ENOTFOUND, "unknown key");
        goto done;
    }
    if (crypto_sign_verify_detached(sig, (const uint8_t *)token, (size_t)(d2 - token), pk) != 0) {
        rc = fail(why, why_len, AG_EAUTH, "bad signature");
        goto done;
    }
    if (!(pl = parse_object(praw, pn))) {
        rc = fail(why, why_len, AG_EAUTH, "malformed");
        goto done;
    }
    ag_claims c;
    memset(&c, 0, sizeof c);
    rc = check_claims(pl, p, &c, why, why_len);
    if (rc == 0 && out) *out = c;

done:
    json_decref(hdr);
    json_decref(pl);
    ag_free(hraw);
    ag_free(praw);
    return rc;
}
