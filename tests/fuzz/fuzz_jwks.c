/* A JWKS document as fetched from agora-users (agora/auth.h:
 * ag_keyset_add_jwks): any JSON, then the keyset's own JWKS written back. A
 * keyset that took keys from a public JWKS can never sign. */
#include "fuzz.h"

#include "agora/auth.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *doc = json_loadb((const char *)data, size, 0, NULL);
    if (!doc) return 0;
    ag_keyset *ks;
    if (ag_keyset_new(&ks) < 0) abort();
    int before = ag_keyset_count(ks);
    int added = ag_keyset_add_jwks(ks, doc);
    if (added >= 0) FUZZ_CHECK(ag_keyset_count(ks) >= before);
    FUZZ_CHECK(!ag_keyset_can_sign(ks)); /* public keys only, even with a "d" */
    json_t *back = ag_keyset_jwks(ks);
    FUZZ_CHECK(back != NULL);
    json_decref(back);
    ag_keyset_free(ks);
    json_decref(doc);
    return 0;
}
