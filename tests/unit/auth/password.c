/* Unit tests of src/lib/auth/password.c: Argon2id hashes verify their own
 * password only, are salted, refuse an empty password, and follow AGORA_PWHASH. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "agora/agora.h"
#include "agora/auth.h"

static void test_hash_and_verify(void **state)
{
    (void)state;
    char h[AG_PASSWORD_HASH_MAX];
    assert_int_equal(ag_password_hash("correct horse battery staple", h), 0);
    assert_non_null(memchr(h, '\0', sizeof h));
    assert_true(strncmp(h, "$argon2id$", 10) == 0);
    assert_true(ag_password_verify(h, "correct horse battery staple"));
    assert_false(ag_password_verify(h, "correct horse battery stapl"));
    assert_false(ag_password_verify(h, "Correct horse battery staple"));
    assert_false(ag_password_verify(h, ""));
    assert_false(ag_password_verify(h, NULL));
    assert_false(ag_password_verify(NULL, "x"));
    assert_false(ag_password_verify("", "x"));
    assert_false(ag_password_verify("not a hash", "not a hash"));
}

static void test_salted(void **state)
{
    (void)state;
    char a[AG_PASSWORD_HASH_MAX], b[AG_PASSWORD_HASH_MAX];
    assert_int_equal(ag_password_hash("hunter2", a), 0);
    assert_int_equal(ag_password_hash("hunter2", b), 0);
    assert_string_not_equal(a, b);
    assert_true(ag_password_verify(a, "hunter2"));
    assert_true(ag_password_verify(b, "hunter2"));
}

static void test_empty_refused(void **state)
{
    (void)state;
    char h[AG_PASSWORD_HASH_MAX];
    memset(h, 'x', sizeof h);
    assert_int_equal(ag_password_hash("", h), AG_EINVAL);
    assert_int_equal(ag_password_hash(NULL, h), AG_EINVAL);
    assert_int_equal(h[0], 'x'); /* untouched */
}

/* A tampered hash (one character of the digest changed) verifies nothing. */
static void test_tampered_hash(void **state)
{
    (void)state;
    char h[AG_PASSWORD_HASH_MAX];
    assert_int_equal(ag_password_hash("pw", h), 0);
    size_t n = strlen(h);
    h[n - 2] = h[n - 2] == 'A' ? 'B' : 'A';
    assert_false(ag_password_verify(h, "pw"));
    /* A string as long as the buffer, unterminated within it, is refused. */
    char longer[AG_PASSWORD_HASH_MAX + 8];
    memset(longer, 'a', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    assert_false(ag_password_verify(longer, "pw"));
}

static void test_cost_from_env(void **state)
{
    (void)state;
    char h[AG_PASSWORD_HASH_MAX];
    setenv("AGORA_PWHASH", "moderate", 1);
    assert_int_equal(ag_password_hash("pw", h), 0);
    /* The moderate cost is 256 MiB and 3 passes, recorded in the hash. */
    assert_non_null(strstr(h, "m=262144,t=3"));
    assert_true(ag_password_verify(h, "pw"));
    setenv("AGORA_PWHASH", "cheap", 1);
    assert_int_equal(ag_password_hash("pw", h), AG_ECONFIG);
    unsetenv("AGORA_PWHASH");
    assert_int_equal(ag_password_hash("pw", h), 0);
    assert_non_null(strstr(h, "m=65536,t=2"));
}

int main(void)
{
    ag_log_setup("authtest", AG_LOG_OFF);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_and_verify), cmocka_unit_test(test_salted),
        cmocka_unit_test(test_empty_refused),   cmocka_unit_test(test_tampered_hash),
        cmocka_unit_test(test_cost_from_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
