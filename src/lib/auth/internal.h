/*
 * internal.h — what the files of src/lib/auth share and nobody else sees:
 * the one-time libsodium start, base64url without padding (RFC 7515 §2), and
 * the keyset's copy-out lookups that jwt.c signs and verifies with.
 *
 * Key material leaves the keyset only as a copy into the caller's buffer,
 * taken under the keyset's lock; callers wipe secret copies with
 * sodium_memzero when done, so no reference into the keyset outlives a lock.
 */
#ifndef AGORA_AUTH_INTERNAL_H
#define AGORA_AUTH_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/auth.h"

#define AG__ED25519_PK 32 /* crypto_sign_PUBLICKEYBYTES */
#define AG__ED25519_SK 64 /* crypto_sign_SECRETKEYBYTES: seed then public key */
#define AG__ED25519_SEED 32
#define AG__ED25519_SIG 64

/* Initialises libsodium once per process (pthread_once); aborts if it cannot,
 * since nothing cryptographic is safe after that. */
void ag__sodium_ready(void);

/* Characters needed to encode `n` bytes in base64url without padding (no NUL). */
size_t ag__b64url_len(size_t n);
/* Encodes `n` bytes into `out` (capacity `cap`, NUL-terminated). Returns the
 * length, or AG_ETOOBIG when `cap` is short (out untouched beyond it). */
int ag__b64url_encode(const void *bin, size_t n, char *out, size_t cap);
/* Decodes exactly `slen` characters of canonical base64url without padding
 * into `out` (capacity `cap`); *n gets the byte count. AG_EINVAL for any
 * character outside [A-Za-z0-9_-], padding, non-zero trailing bits or a
 * result longer than `cap`. */
int ag__b64url_decode(const char *s, size_t slen, void *out, size_t cap, size_t *n);

/* Copies the public key of `kid` into pk. AG_ENOTFOUND when absent. */
int ag__keyset_public(ag_keyset *ks, const char *kid, uint8_t pk[AG__ED25519_PK]);
/* Copies the signing key (the newest private key) and its kid. AG_ESTATE
 * when the keyset holds no private key. Wipe `sk` after use. */
int ag__keyset_signer(ag_keyset *ks, char kid[AG_KID_MAX], uint8_t sk[AG__ED25519_SK]);

#endif
