/*
 * password.c — Argon2id password hashes (libsodium crypto_pwhash_str).
 *
 * The stored string is the PHC encoding ("$argon2id$v=19$m=...,t=...,p=1$
 * salt$hash"), so each hash carries its own random salt and cost and old
 * hashes keep verifying after the cost changes. AGORA_PWHASH picks the cost
 * of new hashes: "interactive" (default: 2 passes, 64 MiB) or "moderate"
 * (3 passes, 256 MiB, about a second).
 */
#include <sodium.h>
#include <string.h>

#include "agora/auth.h"
#include "agora/config.h"
#include "agora/error.h"
#include "agora/log.h"
#include "auth/internal.h"

_Static_assert(AG_PASSWORD_HASH_MAX == crypto_pwhash_STRBYTES, "hash buffer size");

/* The cost from AGORA_PWHASH. An unknown value is a configuration error
 * rather than a silent fall-back to a cost nobody chose. */
static int pwhash_cost(unsigned long long *ops, size_t *mem)
{
    const char *v = NULL;
    if (ag_config_str("AGORA_PWHASH", "interactive", &v) < 0) return AG_ECONFIG;
    if (strcmp(v, "interactive") == 0) {
        *ops = crypto_pwhash_OPSLIMIT_INTERACTIVE;
        *mem = crypto_pwhash_MEMLIMIT_INTERACTIVE;
    } else if (strcmp(v, "moderate") == 0) {
        *ops = crypto_pwhash_OPSLIMIT_MODERATE;
        *mem = crypto_pwhash_MEMLIMIT_MODERATE;
    } else {
        ag_error("AGORA_PWHASH: expected interactive or moderate", AG_FS("value", v));
        return AG_ECONFIG;
    }
    return 0;
}

int ag_password_hash(const char *password, char out[AG_PASSWORD_HASH_MAX])
{
    if (!password || !out || password[0] == '\0') return AG_EINVAL;
    ag__sodium_ready();
    unsigned long long ops;
    size_t mem;
    int rc = pwhash_cost(&ops, &mem);
    if (rc < 0) return rc;
    char tmp[AG_PASSWORD_HASH_MAX];
    /* crypto_pwhash_str_alg fails only when the memory cannot be had. */
    if (crypto_pwhash_str_alg(tmp, password, strlen(password), ops, mem,
                              crypto_pwhash_ALG_ARGON2ID13) != 0)
        return AG_ENOMEM;
    memcpy(out, tmp, sizeof tmp);
    return 0;
}

bool ag_password_verify(const char *hash, const char *password)
{
    if (!hash || !password || password[0] == '\0') return false;
    /* A stored value longer than any encoding is not one of ours. */
    if (strnlen(hash, AG_PASSWORD_HASH_MAX) >= AG_PASSWORD_HASH_MAX) return false;
    ag__sodium_ready();
    /* crypto_pwhash_str_verify wants a buffer of crypto_pwhash_STRBYTES. */
    char h[AG_PASSWORD_HASH_MAX] = {0};
    memcpy(h, hash, strlen(hash));
    return crypto_pwhash_str_verify(h, password, strlen(password)) == 0;
}
