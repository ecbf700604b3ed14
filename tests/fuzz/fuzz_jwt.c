/* Bearer tokens (agora/auth.h: ag_jwt_verify). Half the inputs are tokens
 * as a client sends them; the other half are a header and a payload of the
 * input's bytes, base64url-encoded and signed with the harness's own
 * Ed25519 key (known to the keyset through its public JWK), so that the
 * claims parser behind the signature check is reached too. A token
 * accepted has a subject, and never one of "alg": "none". */
#include "fuzz.h"

#include <sodium.h>

#include "agora/auth.h"
#include "agora/mem.h"

static ag_keyset *g_ks;
static unsigned char g_pk[crypto_sign_PUBLICKEYBYTES], g_sk[crypto_sign_SECRETKEYBYTES];

static void b64(ag_buf *b, const void *data, size_t n)
{
    size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *out = malloc(cap);
    sodium_bin2base64(out, cap, data, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    ag_buf_appends(b, out);
    free(out);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    if (sodium_init() < 0 || ag_keyset_new(&g_ks) < 0) abort();
    crypto_sign_keypair(g_pk, g_sk);
    ag_buf x;
    ag_buf_init(&x, 0);
    b64(&x, g_pk, sizeof g_pk);
    json_t *jwks = json_pack("{s:[{s:s, s:s, s:s, s:s, s:s}]}", "keys", "kty", "OKP", "crv",
                             "Ed25519", "kid", "fuzz", "alg", "EdDSA", "x", x.data);
    ag_buf_release(&x);
    if (ag_keyset_add_jwks(g_ks, jwks) < 0) abort();
    json_decref(jwks);
    return 0;
}

static void verify(const char *token)
{
    ag_jwt_policy pol = {.iss = NULL, .aud = NULL, .leeway_s = 30};
    ag_claims c;
    char why[128];
    if (ag_jwt_verify(g_ks, token, &pol, &c, why, sizeof why) == 0) {
        FUZZ_CHECK(strlen(c.sub) < sizeof c.sub);
    } else {
        FUZZ_CHECK(strlen(why) < sizeof why);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    if (!(data[0] & 1)) {
        char *token = fuzz_str(data + 1, size - 1);
        verify(token);
        free(token);
        return 0;
    }
    /* header NUL payload, signed */
    const uint8_t *head = data + 1, *nul = memchr(head, 0, size - 1);
    size_t hn = nul ? (size_t)(nul - head) : size - 1;
    const uint8_t *pay = nul ? nul + 1 : head + hn;
    size_t pn = size - 1 - hn - (nul ? 1 : 0);
    ag_buf t;
    ag_buf_init(&t, 0);
    b64(&t, head, hn);
    ag_buf_appends(&t, ".");
    b64(&t, pay, pn);
    unsigned char sig[crypto_sign_BYTES];
    crypto_sign_detached(sig, NULL, (const unsigned char *)t.data, t.len, g_sk);
    ag_buf_appends(&t, ".");
    b64(&t, sig, sizeof sig);
    verify(t.data);
    ag_buf_release(&t);
    return 0;
}
