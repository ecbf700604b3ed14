/* balancer.c — static mode, the two balancing policies and passive ejection
 * (src/lib/discovery). No registry: instances come from AGORA_<SERVICE>_URL. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agora/discovery.h"

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static ag_discovery *make_static(const char *urls)
{
    setenv("AGORA_SHOP_API_URL", urls, 1);
    ag_discovery *d;
    assert_int_equal(ag_discovery_new("static", &d), 0);
    assert_true(ag_discovery_is_static(d));
    assert_int_equal(ag_discovery_watch(d, "shop-api"), 0);
    return d;
}

static void test_unset_registry_is_static(void **state)
{
    (void)state;
    unsetenv("AGORA_REGISTRY");
    ag_discovery *d;
    assert_int_equal(ag_discovery_new(NULL, &d), 0);
    assert_true(ag_discovery_is_static(d));
    assert_string_equal(ag_discovery_registry_url(d), "");
    /* Registering does nothing and succeeds. */
    assert_int_equal(ag_discovery_register(d, &(ag_registration){.name = "x", .port = 1}), 0);
    ag_discovery_free(d);

    assert_int_equal(ag_discovery_new("ftp://nope", &d), AG_ECONFIG);
    assert_int_equal(ag_discovery_new("http://127.0.0.1:8500/", &d), 0);
    assert_false(ag_discovery_is_static(d));
    assert_string_equal(ag_discovery_registry_url(d), "http://127.0.0.1:8500");
    ag_discovery_free(d);
}

static void test_static_list_parsing(void **state)
{
    (void)state;
    ag_discovery *d = make_static(" http://10.0.0.1:7002 ,http://backend:81/base,bogus:x,");
    ag_instance in[4];
    assert_int_equal(ag_discovery_instances(d, "shop-api", in, 4), 2);
    assert_string_equal(in[0].address, "10.0.0.1");
    assert_int_equal(in[0].port, 7002);
    assert_string_equal(in[1].address, "backend");
    assert_int_equal(in[1].port, 81);
    char url[128];
    ag_instance_url(&in[0], url, sizeof url);
    assert_string_equal(url, "http://10.0.0.1:7002");
    assert_int_equal(ag_discovery_instances(d, "other", in, 4), 0);
    ag_instance one;
    assert_int_equal(ag_discovery_pick(d, "other", &one), AG_ENOTFOUND);
    ag_discovery_free(d);
}

static void test_round_robin_cycles(void **state)
{
    (void)state;
    ag_discovery *d = make_static("http://a:1,http://b:2,http://c:3");
    ag_discovery_set_policy(d, AG_LB_ROUND_ROBIN);
    int seen[4] = {0};
    for (int i = 0; i < 30; i++) {
        ag_instance in;
        assert_int_equal(ag_discovery_pick(d, "shop-api", &in), 0);
        seen[in.port]++;
        ag_discovery_release(d, &in, AG_CALL_OK);
    }
    assert_int_equal(seen[1], 10);
    assert_int_equal(seen[2], 10);
    assert_int_equal(seen[3], 10);
    ag_discovery_free(d);
}

static void test_p2c_prefers_fewer_outstanding(void **state)
{
    (void)state;
    ag_discovery *d = make_static("http://a:1,http://b:2");
    /* Hold many calls on whichever instance is picked first: every later
     * pick with two instances compares both, so all go to the other one. */
    ag_instance first;
    assert_int_equal(ag_discovery_pick(d, "shop-api", &first), 0);
    for (int i = 0; i < 20; i++) {
        ag_instance in;
        assert_int_equal(ag_discovery_pick(d, "shop-api", &in), 0);
        if (i == 0) assert_int_not_equal(in.port, first.port);
        /* Keep the other one below `first`'s count until it catches up. */
        (void)in;
    }
    /* After 21 picks without release, the counts differ by at most one. */
    json_t *j = ag_discovery_json(d);
    json_t *arr = json_object_get(json_object_get(json_object_get(j, "services"), "shop-api"),
                                  "instances");
    json_int_t a = json_integer_value(json_object_get(json_array_get(arr, 0), "outstanding"));
    json_int_t b = json_integer_value(json_object_get(json_array_get(arr, 1), "outstanding"));
    assert_int_equal(a + b, 21);
    assert_true(llabs((long long)(a - b)) <= 1);
    assert_string_equal(json_string_value(json_object_get(j, "policy")), "p2c");
    assert_string_equal(json_string_value(json_object_get(j, "mode")), "static");
    json_decref(j);
    ag_discovery_free(d);
}

static void test_ejection_and_return(void **state)
{
    (void)state;
    ag_discovery *d = make_static("http://a:1,http://b:2");
    ag_discovery_set_eject_after(d, 3);
    ag_discovery_set_eject_time(d, 150, 1000);
    ag_discovery_set_policy(d, AG_LB_ROUND_ROBIN);
    /* Fail instance a three times in a row. */
    int fails = 0;
    while (fails < 3) {
        ag_instance in;
        assert_int_equal(ag_discovery_pick(d, "shop-api", &in), 0);
        bool bad = in.port == 1;
        ag_discovery_release(d, &in, bad ? AG_CALL_FAILED : AG_CALL_OK);
        fails += bad;
    }
    /* Now only b is picked. */
    for (int i = 0; i < 10; i++) {
        ag_instance in;
        assert_int_equal(ag_discovery_pick(d, "shop-api", &in), 0);
        assert_int_equal(in.port, 2);
        ag_discovery_release(d, &in, AG_CALL_NEUTRAL);
    }
    /* Marking b down leaves nothing: unavailable, not a known-bad pick. */
    ag_discovery_mark(d, "shop-api", "b:2", false);
    ag_instance in;
    assert_int_equal(ag_discovery_pick(d, "shop-api", &in), AG_EUNAVAIL);
    /* The ejection runs out; a comes back. */
    sleep_ms(250);
    assert_int_equal(ag_discovery_pick(d, "shop-api", &in), 0);
    assert_int_equal(in.port, 1);
    ag_discovery_release(d, &in, AG_CALL_OK);
    ag_discovery_mark(d, "shop-api", "b:2", true);
    int seen_b = 0;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(ag_discovery_pick(d, "shop-api", &in), 0);
        seen_b += in.port == 2;
        ag_discovery_release(d, &in, AG_CALL_OK);
    }
    assert_int_equal(seen_b, 2);
    ag_discovery_free(d);
}

static void test_eject_disabled(void **state)
{
    (void)state;
    ag_discovery *d = make_static("http://a:1");
    ag_discovery_set_eject_after(d, 0);
    for (int i = 0; i < 50; i++) {
        ag_instance in;
        assert_int_equal(ag_discovery_pick(d, "shop-api", &in), 0);
        ag_discovery_release(d, &in, AG_CALL_FAILED);
    }
    ag_discovery_free(d);
}

static void test_unreachable_registry_leaves_list_empty(void **state)
{
    (void)state;
    ag_discovery *d;
    /* Port 9 on loopback: nothing listens (connection refused at once). */
    assert_int_equal(ag_discovery_new("http://127.0.0.1:9", &d), 0);
    assert_int_equal(ag_discovery_watch(d, "catalog"), 0);
    ag_instance in;
    assert_int_equal(ag_discovery_pick(d, "catalog", &in), AG_ENOTFOUND);
    json_t *j = ag_discovery_json(d);
    assert_true(json_is_true(
        json_object_get(json_object_get(json_object_get(j, "services"), "catalog"), "stale")));
    json_decref(j);
    ag_discovery_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unset_registry_is_static),
        cmocka_unit_test(test_static_list_parsing),
        cmocka_unit_test(test_round_robin_cycles),
        cmocka_unit_test(test_p2c_prefers_fewer_outstanding),
        cmocka_unit_test(test_ejection_and_return),
        cmocka_unit_test(test_eject_disabled),
        cmocka_unit_test(test_unreachable_registry_leaves_list_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
