/* Unit tests of src/lib/auth/keyset.c: the JWKS document's shape, loading a
 * JWKS into another keyset (other key types and bad sizes skipped), and the
 * private export and import round trip. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sodium.h>
#include <string.h>

#include "agora/agora.h"
#include "agora/auth.h"

static ag_claims claims(void)
{
    ag_claims c;
    memset(&c, 0, sizeof c);
    snprintf(c.sub, sizeof c.sub, "u-42");
    snprintf(c.role, sizeof c.role, "customer");
    c.exp = (int64_t)(ag_wall_ms() / 1000) + 600;
    return c;
}

static size_t b64_bytes(const char *s)
{
    unsigned char buf[128];
    size_t n = 0;
    if (sodium_base642bin(buf, sizeof buf, s, strlen(s), NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return 0;
    return n;
}

/* Signs with `from` and verifies with `to`. */
static int cross_verify(ag_keyset *from, ag_keyset *to)
{
    ag_claims c = claims();
    char *tok;
    assert_int_equal(ag_jwt_sign(from, &c, &tok), 0);
    ag_claims out;
    char why[32];
    int rc = ag_jwt_verify(to, tok, NULL, &out, why, sizeof why);
    if (rc == 0) assert_string_equal(out.sub, "u-42");
    ag_free(tok);
    return rc;
}

static void test_jwks_shape(void **state)
{
    (void)state;
    ag_keyset *ks;
    char k1[AG_KID_MAX], k2[AG_KID_MAX];
    assert_int_equal(ag_keyset_new(&ks), 0);
    json_t *empty = ag_keyset_jwks(ks);
    assert_int_equal(json_array_size(json_object_get(empty, "keys")), 0);
    json_decref(empty);
    assert_int_equal(ag_keyset_generate(ks, k1), 0);
    assert_int_equal(ag_keyset_generate(ks, k2), 0);
    assert_int_equal(strlen(k1), AG_ID_LEN);
    ag_id id;
    assert_int_equal(ag_id_parse(k2, &id), 0);

    json_t *jwks = ag_keyset_jwks(ks);
    assert_int_equal(json_object_size(jwks), 1);
    json_t *keys = json_object_get(jwks, "keys");
    assert_int_equal(json_array_size(keys), 2);
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        assert_int_equal(json_object_size(k), 6); /* and no "d" */
        assert_string_equal(json_string_value(json_object_get(k, "kty")), "OKP");
        assert_string_equal(json_string_value(json_object_get(k, "crv")), "Ed25519");
        assert_string_equal(json_string_value(json_object_get(k, "alg")), "EdDSA");
        assert_string_equal(json_string_value(json_object_get(k, "use")), "sig");
        assert_string_equal(json_string_value(json_object_get(k, "kid")), i == 0 ? k1 : k2);
        const char *x = json_string_value(json_object_get(k, "x"));
        assert_non_null(x);
        assert_int_equal(strlen(x), 43);
        assert_int_equal(b64_bytes(x), 32);
        assert_null(json_object_get(k, "d"));
    }
    json_decref(jwks);
    ag_keyset_free(ks);
    ag_keyset_free(NULL);
}

static void test_add_jwks(void **state)
{
    (void)state;
    ag_keyset *issuer, *verifier;
    assert_int_equal(ag_keyset_new(&issuer), 0);
    assert_int_equal(ag_keyset_new(&verifier), 0);
    assert_int_equal(ag_keyset_generate(issuer, NULL), 0);
    assert_int_equal(cross_verify(issuer, verifier), AG_ENOTFOUND);

    /* Through text, as a client would receive it. */
    json_t *jwks = ag_keyset_jwks(issuer);
    char *text = json_dumps(jwks, JSON_COMPACT);
    json_decref(jwks);
    json_t *doc = json_loads(text, 0, NULL);
    free(text);
    assert_int_equal(ag_keyset_add_jwks(verifier, doc), 1);
    assert_int_equal(ag_keyset_add_jwks(verifier, doc), 0); /* already held */
    json_decref(doc);
    assert_int_equal(ag_keyset_count(verifier), 1);
    assert_false(ag_keyset_can_sign(verifier));
    assert_int_equal(cross_verify(issuer, verifier), 0);
    /* Its own JWKS is the same document. */
    json_t *a = ag_keyset_jwks(issuer), *b = ag_keyset_jwks(verifier);
    assert_true(json_equal(a, b));
    json_decref(a);
    json_decref(b);
    /* Nothing private came along. */
    json_t *priv = ag_keyset_export_private(verifier);
    assert_int_equal(json_array_size(json_object_get(priv, "keys")), 0);
    json_decref(priv);
    ag_keyset_free(issuer);
    ag_keyset_free(verifier);
}

static void test_add_jwks_skips(void **state)
{
    (void)state;
    ag_keyset *ks;
    assert_int_equal(ag_keyset_new(&ks), 0);
    const char *x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"; /* RFC 8037 A.2 */
    char doc_text[4096];
    snprintf(doc_text, sizeof doc_text,
             "{\"keys\":["
             "{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\",\"kid\":\"rsa\"},"
             "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\",\"kid\":\"ec\"},"
             "{\"kty\":\"OKP\",\"crv\":\"X25519\",\"x\":\"%s\",\"kid\":\"x25519\"},"
             "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AAAA\",\"kid\":\"short\"},"
             "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%sAAAA\",\"kid\":\"long\"},"
             "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s=\",\"kid\":\"padded\"},"
             "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":7,\"kid\":\"numx\"},"
             "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\"},"
             "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":5},"
             "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"bad kid\"},"
             "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"%0100d\"},"
             "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"enc\",\"use\":\"enc\"},"
             "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"es\",\"alg\":\"ES256\"},"
             "\"not an object\", 42, null,"
             "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"good\"}"
             "]}",
             x, x, x, x, x, x, x, x, x, 0, x, x, x);
    json_error_t err;
    json_t *doc = json_loads(doc_text, 0, &err);
    assert_non_null(doc);
    assert_int_equal(ag_keyset_add_jwks(ks, doc), 1);
    json_decref(doc);
    assert_int_equal(ag_keyset_count(ks), 1);
    json_t *jwks = ag_keyset_jwks(ks);
    json_t *k = json_array_get(json_object_get(jwks, "keys"), 0);
    assert_string_equal(json_string_value(json_object_get(k, "kid")), "good");
    assert_string_equal(json_string_value(json_object_get(k, "x")), x);
    json_decref(jwks);

    /* Documents that are not a JWKS at all. */
    const char *bad[] = {"[]", "{}", "{\"keys\":{}}", "{\"keys\":\"x\"}", "42"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *d = json_loads(bad[i], JSON_DECODE_ANY, NULL);
        assert_int_equal(ag_keyset_add_jwks(ks, d), AG_EINVAL);
        json_decref(d);
    }
    assert_int_equal(ag_keyset_add_jwks(ks, NULL), AG_EINVAL);
    assert_int_equal(ag_keyset_count(ks), 1);
    ag_keyset_free(ks);
}

static void test_private_round_trip(void **state)
{
    (void)state;
    ag_keyset *orig, *copy;
    char k1[AG_KID_MAX], k2[AG_KID_MAX];
    assert_int_equal(ag_keyset_new(&orig), 0);
    assert_int_equal(ag_keyset_generate(orig, k1), 0);
    assert_int_equal(ag_keyset_generate(orig, k2), 0);

    json_t *priv = ag_keyset_export_private(orig);
    json_t *keys = json_object_get(priv, "keys");
    assert_int_equal(json_array_size(keys), 2);
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        const char *d = json_string_value(json_object_get(k, "d"));
        assert_non_null(d);
        assert_int_equal(b64_bytes(d), 32); /* the seed (RFC 8037) */
    }
    char *text = json_dumps(priv, JSON_COMPACT);
    json_decref(priv);
    json_t *doc = json_loads(text, 0, NULL);
    sodium_memzero(text, strlen(text));
    free(text);

    assert_int_equal(ag_keyset_new(&copy), 0);
    assert_int_equal(ag_keyset_import_private(copy, doc), 2);
    json_decref(doc);
    assert_int_equal(ag_keyset_count(copy), 2);
    assert_true(ag_keyset_can_sign(copy));
    /* Each verifies the other's tokens: the same keys. */
    assert_int_equal(cross_verify(copy, orig), 0);
    assert_int_equal(cross_verify(orig, copy), 0);
    /* The newest key signs in the copy too. */
    assert_int_equal(ag_keyset_remove(orig, k1), 0);
    assert_int_equal(cross_verify(copy, orig), 0);
    assert_int_equal(ag_keyset_remove(orig, k2), 0);
    assert_int_equal(cross_verify(copy, orig), AG_ENOTFOUND);
    json_t *pa = ag_keyset_jwks(copy);
    assert_int_equal(json_array_size(json_object_get(pa, "keys")), 2);
    json_decref(pa);
    ag_keyset_free(orig);
    ag_keyset_free(copy);
}

static void test_import_refusals(void **state)
{
    (void)state;
    ag_keyset *src, *dst;
    assert_int_equal(ag_keyset_new(&src), 0);
    assert_int_equal(ag_keyset_generate(src, NULL), 0);
    json_t *good = ag_keyset_export_private(src);
    json_t *gk = json_array_get(json_object_get(good, "keys"), 0);

    struct {
        const char *member;
        json_t *value; /* NULL: delete the member */
    } edits[] = {
        {"d", json_string("AAAA")},                                        /* short seed */
        {"d", NULL},                                                       /* no d */
        {"d", json_string("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")}, /* x not d's */
        {"kty", json_string("RSA")},
        {"kid", NULL},
    };
    assert_int_equal(ag_keyset_new(&dst), 0);
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        json_t *doc = json_deep_copy(good);
        json_t *k = json_array_get(json_object_get(doc, "keys"), 0);
        if (edits[i].value)
            json_object_set_new(k, edits[i].member, edits[i].value);
        else
            json_object_del(k, edits[i].member);
        /* A good key before the bad one: all or nothing. */
        json_t *other = json_deep_copy(gk);
        json_object_set_new(other, "kid", json_string("other"));
        json_array_insert_new(json_object_get(doc, "keys"), 0, other);
        assert_int_equal(ag_keyset_import_private(dst, doc), AG_EINVAL);
        assert_int_equal(ag_keyset_count(dst), 0);
        json_decref(doc);
    }
    assert_int_equal(ag_keyset_import_private(dst, NULL), AG_EINVAL);

    /* A public-only key gains its private half on import. */
    json_t *pub = ag_keyset_jwks(src);
    assert_int_equal(ag_keyset_add_jwks(dst, pub), 1);
    json_decref(pub);
    assert_false(ag_keyset_can_sign(dst));
    assert_int_equal(ag_keyset_import_private(dst, good), 1);
    assert_true(ag_keyset_can_sign(dst));
    assert_int_equal(ag_keyset_count(dst), 1);
    assert_int_equal(ag_keyset_import_private(dst, good), 0);
    assert_int_equal(cross_verify(dst, src), 0);

    /* The same kid with another key is refused. */
    ag_keyset *third;
    assert_int_equal(ag_keyset_new(&third), 0);
    assert_int_equal(ag_keyset_generate(third, NULL), 0);
    json_t *tp = ag_keyset_export_private(third);
    json_object_set(json_array_get(json_object_get(tp, "keys"), 0), "kid",
                    json_object_get(gk, "kid"));
    assert_int_equal(ag_keyset_import_private(dst, tp), AG_EEXISTS);
    json_decref(tp);
    ag_keyset_free(third);
    json_decref(good);
    ag_keyset_free(src);
    ag_keyset_free(dst);
}

int main(void)
{
    ag_log_setup("authtest", AG_LOG_OFF);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jwks_shape),      cmocka_unit_test(test_add_jwks),
        cmocka_unit_test(test_add_jwks_skips),  cmocka_unit_test(test_private_round_trip),
        cmocka_unit_test(test_import_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
