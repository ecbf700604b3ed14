/*
 * util.c — libsodium's one-time start and base64url (RFC 4648 §5, no
 * padding) for the auth module. Decoding is strict on purpose: a JWT segment
 * or a JWK member that is not canonical base64url is refused rather than
 * repaired, so one token has exactly one encoding.
 */
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/error.h"
#include "auth/internal.h"

static pthread_once_t g_sodium_once = PTHREAD_ONCE_INIT;

static void sodium_start(void)
{
    if (sodium_init() < 0) {
        fputs("agora: libsodium failed to initialise\n", stderr);
        abort();
    }
}

void ag__sodium_ready(void)
{
    pthread_once(&g_sodium_once, sodium_start);
}

size_t ag__b64url_len(size_t n)
{
    return n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1);
}

int ag__b64url_encode(const void *bin, size_t n, char *out, size_t cap)
{
    size_t need = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    if (cap < need) return AG_ETOOBIG;
    sodium_bin2base64(out, cap, bin, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return (int)strlen(out);
}

static bool b64url_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

int ag__b64url_decode(const char *s, size_t slen, void *out, size_t cap, size_t *n)
{
    for (size_t i = 0; i < slen; i++)
        if (!b64url_char(s[i])) return AG_EINVAL;
    /* A length of 1 mod 4 cannot come from any byte string. */
    if (slen % 4 == 1) return AG_EINVAL;
    size_t len = 0;
    /* With b64_end NULL, libsodium fails unless every character is consumed,
     * and it refuses non-zero bits left over in the last character. */
    if (sodium_base642bin(out, cap, s, slen, NULL, &len, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return AG_EINVAL;
    *n = len;
    return 0;
}
