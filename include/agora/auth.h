/*
 * auth.h — passwords, signing keys, JWTs, JWKS and the caller of a request
 * (DESIGN.md §5).
 *
 * Passwords are hashed with Argon2id (libsodium's crypto_pwhash_str), in the
 * encoded form that carries its own salt and parameters.
 *
 * Tokens are JWTs signed with Ed25519 ("alg":"EdDSA", RFC 8037) and carry
 * "kid" in their header and sub, email, role, iss, aud, iat, exp (and nbf,
 * jti when set) in their claims. Verification accepts only EdDSA: "none",
 * HS256 or any swapped algorithm is refused, as are a bad signature, an
 * unknown kid, and failing exp / nbf / iss / aud checks.
 *
 * A keyset holds signing keys (private and public) and verification keys
 * (public only). The newest private key signs; every key verifies, so old
 * kids keep verifying after a rotation until the service drops them. The
 * public half is published as a JWKS ({"keys":[{"kty":"OKP","crv":"Ed25519",
 * "x","kid","alg":"EdDSA","use":"sig"}]}).
 *
 * A JWKS client fetches another service's JWKS over HTTP, caches it for a
 * TTL, and refreshes at most once per AG_JWKS_MIN_REFRESH_MS when a token
 * names a kid it does not know.
 *
 * The middleware verifies a bearer token when the request carries one (401
 * on a bad one) and puts the caller on the request; a handler that needs a
 * caller asks ag_auth_caller_required, which answers 401 when there is none.
 * Identity is never taken from a header other than Authorization.
 */
#ifndef AGORA_AUTH_H
#define AGORA_AUTH_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/http.h"
#include "agora/http_client.h"

/* ---- Passwords ------------------------------------------------------------ */

#define AG_PASSWORD_HASH_MAX 128 /* crypto_pwhash_STRBYTES */

/* Hashes `password` into `out` (NUL-terminated). AG_EINVAL for an empty
 * password; AG_ENOMEM when the hash's memory cannot be had. Slow on purpose
 * (tens of milliseconds): call it from a worker. AGORA_PWHASH=interactive
 * (default) or moderate picks the cost. */
int ag_password_hash(const char *password, char out[AG_PASSWORD_HASH_MAX]);
/* True when `password` matches `hash` (constant time in the password). */
bool ag_password_verify(const char *hash, const char *password);

/* ---- Keys ------------------------------------------------------------------- */

typedef struct ag_keyset ag_keyset;

#define AG_KID_MAX 64

/* An empty keyset. Thread-safe: signing and verifying may run on any thread
 * while keys are added. */
int ag_keyset_new(ag_keyset **out);
void ag_keyset_free(ag_keyset *ks);
/* Generates a new Ed25519 key pair that becomes the signing key. Its kid
 * (time-ordered) is written to kid_out (may be NULL, AG_KID_MAX bytes). */
int ag_keyset_generate(ag_keyset *ks, char *kid_out);
/* Number of keys, and whether one can sign. */
int ag_keyset_count(ag_keyset *ks);
bool ag_keyset_can_sign(ag_keyset *ks);
/* Removes the key `kid` (after its tokens expired). AG_ENOTFOUND if absent. */
int ag_keyset_remove(ag_keyset *ks, const char *kid);
/* The public JWKS (a new reference, the caller's). */
json_t *ag_keyset_jwks(ag_keyset *ks);
/* Adds the public keys of a JWKS document (OKP/Ed25519 only; others are
 * skipped). Returns the number added or AG_EINVAL for a malformed document. */
int ag_keyset_add_jwks(ag_keyset *ks, json_t *jwks);
/* The private keys, for the owner to store ({"keys":[{... "d": ...}]}), and
 * their loading back. Keep the export secret. */
json_t *ag_keyset_export_private(ag_keyset *ks);
int ag_keyset_import_private(ag_keyset *ks, json_t *doc);

/* ---- Tokens ----------------------------------------------------------------- */

typedef struct ag_claims {
    char sub[128];
    char email[256];
    char role[32];     /* customer, admin, service */
    char iss[128];
    char aud[128];
    char jti[64];      /* may be empty */
    int64_t iat, nbf, exp; /* seconds since the epoch; nbf 0: none */
} ag_claims;

/* Signs `c` with the keyset's signing key: a NUL-terminated token the caller
 * frees with ag_free. AG_ESTATE when the keyset cannot sign. */
int ag_jwt_sign(ag_keyset *ks, const ag_claims *c, char **token_out);

typedef struct ag_jwt_policy {
    const char *iss;  /* required issuer (NULL: any) */
    const char *aud;  /* required audience (NULL: any) */
    int64_t leeway_s; /* clock skew allowed on exp and nbf */
} ag_jwt_policy;

/* Verifies `token` against the keyset and the policy; fills *out on success.
 * Failures return AG_EAUTH with a short reason in `why` (never the token):
 * "malformed", "algorithm not allowed", "unknown key", "bad signature",
 * "expired", "not yet valid", "wrong issuer", "wrong audience". An unknown
 * kid returns AG_ENOTFOUND instead, so that a JWKS client can refresh. */
int ag_jwt_verify(ag_keyset *ks, const char *token, const ag_jwt_policy *p, ag_claims *out,
                  char *why, size_t why_len);

/* ---- JWKS client ------------------------------------------------------------ */

#define AG_JWKS_MIN_REFRESH_MS 10000

typedef struct ag_jwks_client ag_jwks_client;

/* A client of the JWKS at `url`, fetched with `http` (borrowed), cached for
 * ttl_ms (0: 5 minutes). Nothing is fetched until the first verification. */
int ag_jwks_client_new(const char *url, ag_http_client *http, uint64_t ttl_ms,
                       ag_jwks_client **out);
void ag_jwks_client_free(ag_jwks_client *c);
/* Verifies with the cached keys; on an unknown kid refreshes once (at most
 * every AG_JWKS_MIN_REFRESH_MS) and tries again. Blocking: workers only.
 * AG_EUNAVAIL when the keys cannot be fetched and none are cached. */
int ag_jwks_verify(ag_jwks_client *c, const char *token, const ag_jwt_policy *p, ag_claims *out,
                   char *why, size_t why_len);

/* ---- The caller of a request ---------------------------------------------- */

typedef struct ag_caller {
    char id[128];
    char email[256];
    char role[32];
    int64_t exp;
} ag_caller;

typedef struct ag_auth {
    ag_keyset *keys;     /* verify with these (the issuing service)... */
    ag_jwks_client *jwks; /* ...or with a JWKS client (everyone else) */
    ag_jwt_policy policy;
} ag_auth;

/* Middleware (ag_router_use(router, ag_auth_middleware, &auth)): with an
 * "Authorization: Bearer <token>" header, verifies it and records the caller
 * on the request, or answers 401 UNAUTHENTICATED (with WWW-Authenticate:
 * Bearer). Without the header the request goes on anonymous. */
int ag_auth_middleware(ag_http_req *req, ag_http_res *res, void *auth);
/* The verified caller of the request, or NULL. */
const ag_caller *ag_auth_caller(const ag_http_req *req);
/* The caller, or NULL after answering 401 UNAUTHENTICATED. */
const ag_caller *ag_auth_caller_required(ag_http_req *req, ag_http_res *res);
/* The caller when it has `role` (or is admin), else NULL after answering
 * 401 (no caller) or 403 FORBIDDEN. */
const ag_caller *ag_auth_caller_role(ag_http_req *req, ag_http_res *res, const char *role);

#endif
