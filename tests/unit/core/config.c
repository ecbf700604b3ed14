/* Unit tests of src/lib/core/config.c: typed getters over the environment, their error messages and service overrides. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "agora/config.h"
#include "agora/log.h"

static const char *const vars[] = {"AGT_PORT", "AGT_FLAG", "AGT_DUR", "AGT_SIZE", "AGT_STR",
                                   "AGORA_DB", "AGORA_ORDERS_DB", "AGORA_USERS_DB",
                                   "AGORA_PAY_GATE_DB"};

static int clean_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) unsetenv(vars[i]);
    ag_config_set_service("");
    return 0;
}

static void test_int(void **state)
{
    (void)state;
    long long v = -7;
    assert_int_equal(ag_config_int("AGT_PORT", 8080, 1, 65535, &v), 0);
    assert_int_equal(v, 8080); /* unset: default */
    setenv("AGT_PORT", "7001", 1);
    assert_int_equal(ag_config_int("AGT_PORT", 8080, 1, 65535, &v), 0);
    assert_int_equal(v, 7001);
    setenv("AGT_PORT", "65535", 1);
    assert_int_equal(ag_config_int("AGT_PORT", 8080, 1, 65535, &v), 0);
    assert_int_equal(v, 65535);
    setenv("AGT_PORT", "-3", 1);
    assert_int_equal(ag_config_int("AGT_PORT", 0, -10, 10, &v), 0);
    assert_int_equal(v, -3);
}

static void test_int_errors_leave_out_unchanged(void **state)
{
    (void)state;
    static const char *const bad[] = {"80a", "-1", "65536", "", "80 ", "0x50", "8 0",
                                      "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("AGT_PORT", bad[i], 1);
        long long v = 42;
        int rc = ag_config_int("AGT_PORT", 8080, 0, 65535, &v);
        if (bad[i][0] == '\0') {
            /* Empty counts as unset. */
            assert_int_equal(rc, 0);
            assert_int_equal(v, 8080);
            continue;
        }
        if (rc != AG_ECONFIG) fail_msg("value \"%s\" accepted (rc %d, v %lld)", bad[i], rc, v);
        assert_int_equal(v, 42);
    }
}

/* Leading blanks: the duration and size getters refuse " 5s", and the int
 * getter refuses "80 ", but strtoll skips leading white space, so " 80" is
 * accepted as 80 (see the report). */
static void test_int_rejects_leading_space(void **state)
{
    (void)state;
    setenv("AGT_PORT", " 80", 1);
    long long v = 42;
    assert_int_equal(ag_config_int("AGT_PORT", 8080, 1, 65535, &v), AG_ECONFIG);
    assert_int_equal(v, 42);
}

static void test_last_error_names_variable_and_value(void **state)
{
    (void)state;
    long long v = 0;
    setenv("AGT_PORT", "80a", 1);
    assert_int_equal(ag_config_int("AGT_PORT", 8080, 1, 65535, &v), AG_ECONFIG);
    assert_string_equal(ag_config_last_error(),
                        "AGT_PORT: expected an integer between 1 and 65535, got \"80a\"");
    setenv("AGT_PORT", "-1", 1);
    assert_int_equal(ag_config_int("AGT_PORT", 8080, 1, 65535, &v), AG_ECONFIG);
    const char *e = ag_config_last_error();
    assert_non_null(strstr(e, "AGT_PORT"));
    assert_non_null(strstr(e, "\"-1\""));

    setenv("AGT_DUR", "5x", 1);
    uint64_t d = 0;
    assert_int_equal(ag_config_duration_ms("AGT_DUR", 10, &d), AG_ECONFIG);
    e = ag_config_last_error();
    assert_non_null(strstr(e, "AGT_DUR"));
    assert_non_null(strstr(e, "\"5x\""));

    setenv("AGT_FLAG", "maybe", 1);
    bool b = false;
    assert_int_equal(ag_config_bool("AGT_FLAG", false, &b), AG_ECONFIG);
    e = ag_config_last_error();
    assert_non_null(strstr(e, "AGT_FLAG"));
    assert_non_null(strstr(e, "\"maybe\""));

    setenv("AGT_SIZE", "12q", 1);
    size_t sz = 0;
    assert_int_equal(ag_config_size("AGT_SIZE", 1, &sz), AG_ECONFIG);
    e = ag_config_last_error();
    assert_non_null(strstr(e, "AGT_SIZE"));
    assert_non_null(strstr(e, "\"12q\""));
}

static void test_bool(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        bool v;
    } ok[] = {{"1", true},  {"true", true},   {"TRUE", true}, {"yes", true}, {"On", true},
              {"0", false}, {"false", false}, {"No", false},  {"off", false}};
    bool b;
    assert_int_equal(ag_config_bool("AGT_FLAG", true, &b), 0);
    assert_true(b);
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        setenv("AGT_FLAG", ok[i].s, 1);
        b = !ok[i].v;
        assert_int_equal(ag_config_bool("AGT_FLAG", !ok[i].v, &b), 0);
        assert_int_equal(b, ok[i].v);
    }
    static const char *const bad[] = {"2", "tru", "yess", "enabled", "t"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("AGT_FLAG", bad[i], 1);
        b = true;
        assert_int_equal(ag_config_bool("AGT_FLAG", false, &b), AG_ECONFIG);
        assert_true(b); /* unchanged */
    }
}

static void test_parse_duration(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint64_t ms;
    } ok[] = {{"0", 0},        {"250", 250},       {"250ms", 250}, {"5s", 5000},
              {"2m", 120000},  {"1h", 3600000},    {"18446744073709551615", UINT64_MAX}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t v = 1;
        assert_int_equal(ag_parse_duration_ms(ok[i].s, &v), 0);
        assert_true(v == ok[i].ms);
    }
    static const char *const bad[] = {"", "5x", "-1", " 5s", "5 s", "s", "1.5s",
                                      "5sec", "18446744073709551616", "9999999999999999h"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 77;
        if (ag_parse_duration_ms(bad[i], &v) != AG_EINVAL)
            fail_msg("duration \"%s\" accepted as %llu", bad[i], (unsigned long long)v);
        assert_true(v == 77);
    }
    assert_int_equal(ag_parse_duration_ms(NULL, &(uint64_t){0}), AG_EINVAL);

    uint64_t d = 0;
    assert_int_equal(ag_config_duration_ms("AGT_DUR", 1500, &d), 0);
    assert_true(d == 1500);
    setenv("AGT_DUR", "30s", 1);
    assert_int_equal(ag_config_duration_ms("AGT_DUR", 1500, &d), 0);
    assert_true(d == 30000);
    setenv("AGT_DUR", "5x", 1);
    d = 9;
    assert_int_equal(ag_config_duration_ms("AGT_DUR", 1500, &d), AG_ECONFIG);
    assert_true(d == 9);
}

static void test_parse_size(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t n;
    } ok[] = {{"0", 0},
              {"512", 512},
              {"512b", 512},
              {"64k", 64 * 1024},
              {"64K", 64 * 1024},
              {"64KiB", 64 * 1024},
              {"64kb", 64 * 1024},
              {"1m", 1024 * 1024},
              {"1MiB", 1024 * 1024},
              {"2g", 2ull * 1024 * 1024 * 1024},
              {"1GiB", 1024ull * 1024 * 1024}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        size_t v = 1;
        if (ag_parse_size(ok[i].s, &v) != 0) fail_msg("size \"%s\" refused", ok[i].s);
        assert_int_equal(v, ok[i].n);
    }
    static const char *const bad[] = {"", "5x", "-1", "1.5k", "k", " 1k", "1kx", "1kibb",
                                      "1bk", "1t", "99999999999999999999g", "18014398509481984k"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t v = 77;
        if (ag_parse_size(bad[i], &v) != AG_EINVAL)
            fail_msg("size \"%s\" accepted as %zu", bad[i], v);
        assert_int_equal(v, 77);
    }
    size_t sz = 0;
    setenv("AGT_SIZE", "16k", 1);
    assert_int_equal(ag_config_size("AGT_SIZE", 1, &sz), 0);
    assert_int_equal(sz, 16384);
}

static void test_str_and_empty_is_unset(void **state)
{
    (void)state;
    const char *s = NULL;
    assert_int_equal(ag_config_str("AGT_STR", "fallback", &s), 0);
    assert_string_equal(s, "fallback");
    assert_null(ag_config_raw("AGT_STR"));
    setenv("AGT_STR", "value", 1);
    assert_int_equal(ag_config_str("AGT_STR", "fallback", &s), 0);
    assert_string_equal(s, "value");
    assert_string_equal(ag_config_raw("AGT_STR"), "value");
    setenv("AGT_STR", "", 1);
    assert_null(ag_config_raw("AGT_STR"));
    assert_int_equal(ag_config_str("AGT_STR", "fallback", &s), 0);
    assert_string_equal(s, "fallback");
    bool b = false;
    setenv("AGT_FLAG", "", 1);
    assert_int_equal(ag_config_bool("AGT_FLAG", true, &b), 0);
    assert_true(b);
}

static void test_service_override(void **state)
{
    (void)state;
    const char *s = NULL;
    setenv("AGORA_DB", "shared.db", 1);
    setenv("AGORA_ORDERS_DB", "orders.db", 1);
    setenv("AGORA_USERS_DB", "users.db", 1);
    /* Without a service: the shared value. */
    assert_string_equal(ag_config_raw("AGORA_DB"), "shared.db");
    ag_config_set_service("orders");
    assert_int_equal(ag_config_str("AGORA_DB", "def", &s), 0);
    assert_string_equal(s, "orders.db");
    /* The specific name is also readable directly, with no double prefix. */
    assert_string_equal(ag_config_raw("AGORA_ORDERS_DB"), "orders.db");
    /* An empty override falls back to the shared value. */
    setenv("AGORA_ORDERS_DB", "", 1);
    assert_string_equal(ag_config_raw("AGORA_DB"), "shared.db");
    unsetenv("AGORA_ORDERS_DB");
    assert_string_equal(ag_config_raw("AGORA_DB"), "shared.db");
    unsetenv("AGORA_DB");
    assert_null(ag_config_raw("AGORA_DB"));
    assert_int_equal(ag_config_str("AGORA_DB", "def", &s), 0);
    assert_string_equal(s, "def");
    /* Dashes in the service name become underscores. */
    ag_config_set_service("pay-gate");
    setenv("AGORA_PAY_GATE_DB", "pay.db", 1);
    assert_string_equal(ag_config_raw("AGORA_DB"), "pay.db");
    /* Variables outside AGORA_ are not overridden. */
    setenv("AGT_STR", "plain", 1);
    assert_string_equal(ag_config_raw("AGT_STR"), "plain");
}

static void test_override_applies_to_typed_getters(void **state)
{
    (void)state;
    ag_config_set_service("orders");
    setenv("AGORA_DB", "10", 1);
    setenv("AGORA_ORDERS_DB", "20", 1);
    long long v = 0;
    assert_int_equal(ag_config_int("AGORA_DB", 0, 0, 100, &v), 0);
    assert_int_equal(v, 20);
    /* A bad override is an error even when the shared value is fine. */
    setenv("AGORA_ORDERS_DB", "2x", 1);
    v = 5;
    assert_int_equal(ag_config_int("AGORA_DB", 0, 0, 100, &v), AG_ECONFIG);
    assert_int_equal(v, 5);
    assert_non_null(strstr(ag_config_last_error(), "\"2x\""));
}

int main(void)
{
    /* Failed getters log an error line; keep the test output clean. */
    ag_log_setup("config-test", AG_LOG_OFF);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_int, clean_env, clean_env),
        cmocka_unit_test_setup_teardown(test_int_errors_leave_out_unchanged, clean_env,
                                        clean_env),
        cmocka_unit_test_setup_teardown(test_int_rejects_leading_space, clean_env, clean_env),
        cmocka_unit_test_setup_teardown(test_last_error_names_variable_and_value, clean_env,
                                        clean_env),
        cmocka_unit_test_setup_teardown(test_bool, clean_env, clean_env),
        cmocka_unit_test_setup_teardown(test_parse_duration, clean_env, clean_env),
        cmocka_unit_test_setup_teardown(test_parse_size, clean_env, clean_env),
        cmocka_unit_test_setup_teardown(test_str_and_empty_is_unset, clean_env, clean_env),
        cmocka_unit_test_setup_teardown(test_service_override, clean_env, clean_env),
        cmocka_unit_test_setup_teardown(test_override_applies_to_typed_getters, clean_env,
                                        clean_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
