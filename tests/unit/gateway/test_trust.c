/* Unit tests of gateway/trust.c: which address is the client's. Trusted
 * proxies as addresses and CIDR blocks (IPv4, IPv6, IPv4-mapped peers);
 * X-Forwarded-For walked from the right past trusted hops; Forwarded's for=
 * (quoted, bracketed IPv6, ports); a forged left part never chosen while a
 * real hop stands right of it; garbage ending the walk; nothing believed
 * from an untrusted peer or with no trusted proxies at all. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "agora/agora.h"
#include "gateway.h"

static gw_config g_cfg;
static gw_cidr g_set[8];
static ag_arena g_arena;

static void trust(const char *const *list)
{
    g_cfg.trusted = g_set;
    g_cfg.ntrusted = 0;
    for (; *list; list++)
        assert_int_equal(gw_cidr_parse(*list, &g_set[g_cfg.ntrusted++]), 0);
}

static const char *client(const char *peer, const char *xff, const char *fwd)
{
    return gw_client_ip_of(&g_cfg, peer, xff, fwd, &g_arena);
}

static int setup(void **state)
{
    ag_arena_init(&g_arena, 0);
    memset(&g_cfg, 0, sizeof g_cfg);
    return 0;
}

static int teardown(void **state)
{
    ag_arena_release(&g_arena);
    return 0;
}

static void test_cidr_parse(void **state)
{
    gw_cidr c;
    assert_int_equal(gw_cidr_parse("10.0.0.0/8", &c), 0);
    assert_int_equal(c.bits, 8);
    assert_int_equal(gw_cidr_parse("192.168.1.7", &c), 0);
    assert_int_equal(c.bits, 32);
    assert_int_equal(gw_cidr_parse("2001:db8::/32", &c), 0);
    assert_int_equal(c.bits, 32);
    assert_int_equal(gw_cidr_parse("::1", &c), 0);
    assert_int_equal(c.bits, 128);
    const char *bad[] = {"",         "10.0.0.0/",   "10.0.0.0/33", "::/129",
                         "10.0.0/8", "example.com", "10.0.0.0/8x", "10.0.0.0/-1",
                         "1.2.3.4 ", NULL};
    for (const char **b = bad; *b; b++)
        assert_int_equal(gw_cidr_parse(*b, &c), AG_EINVAL);
}

static void test_nothing_trusted_means_the_peer(void **state)
{
    assert_string_equal(client("203.0.113.9", "1.1.1.1", NULL), "203.0.113.9");
    assert_string_equal(client("127.0.0.1", "1.1.1.1", "for=2.2.2.2"), "127.0.0.1");
    assert_false(gw_trusted(&g_cfg, "127.0.0.1"));
}

static void test_untrusted_peer_is_the_client(void **state)
{
    trust((const char *[]){"10.0.0.0/8", NULL});
    /* a client that writes its own X-Forwarded-For is not believed */
    assert_string_equal(client("203.0.113.9", "10.1.1.1, 1.1.1.1", NULL), "203.0.113.9");
}

static void test_xff_walked_from_the_right(void **state)
{
    trust((const char *[]){"10.0.0.0/8", "192.168.0.5", NULL});
    /* client -> 192.168.0.5 -> 10.0.0.2 -> gateway */
    assert_string_equal(client("10.0.0.2", "198.51.100.7, 192.168.0.5", NULL), "198.51.100.7");
    /* a forged entry left of the real client is never taken */
    assert_string_equal(client("10.0.0.2", "6.6.6.6, 198.51.100.7", NULL), "198.51.100.7");
    /* spaces, and two headers joined */
    assert_string_equal(client("10.0.0.2", " 198.51.100.7 ,10.9.9.9 ", NULL), "198.51.100.7");
    /* every hop trusted: the leftmost */
    assert_string_equal(client("10.0.0.2", "10.0.0.3, 10.0.0.4", NULL), "10.0.0.3");
    /* garbage ends the walk at the last address taken */
    assert_string_equal(client("10.0.0.2", "198.51.100.7, unknown", NULL), "10.0.0.2");
    assert_string_equal(client("10.0.0.2", "nonsense, 10.0.0.9", NULL), "10.0.0.9");
    assert_string_equal(client("10.0.0.2", "", NULL), "10.0.0.2");
    /* a trusted peer with no header is the client */
    assert_string_equal(client("10.0.0.2", NULL, NULL), "10.0.0.2");
}

static void test_ipv6_and_mapped(void **state)
{
    trust((const char *[]){"2001:db8::/32", "127.0.0.1", NULL});
    assert_string_equal(client("2001:db8::1", "2001:db9::5", NULL), "2001:db9::5");
    assert_string_equal(client("2001:db9::1", "198.51.100.7", NULL), "2001:db9::1");
    /* a dual-stack socket's IPv4 peer */
    assert_true(gw_trusted(&g_cfg, "::ffff:127.0.0.1"));
    assert_string_equal(client("::ffff:127.0.0.1", "198.51.100.7", NULL), "198.51.100.7");
    assert_false(gw_trusted(&g_cfg, "127.0.0.2"));
}

static void test_forwarded(void **state)
{
    trust((const char *[]){"10.0.0.0/8", NULL});
    assert_string_equal(client("10.0.0.2", NULL, "for=198.51.100.7;proto=https"), "198.51.100.7");
    assert_string_equal(client("10.0.0.2", NULL, "for=\"[2001:db8::9]:4711\", for=10.0.0.3"),
                        "2001:db8::9");
    assert_string_equal(client("10.0.0.2", NULL, "for=198.51.100.7:8080;by=10.0.0.2"),
                        "198.51.100.7");
    assert_string_equal(client("10.0.0.2", NULL, "proto=http;For=198.51.100.8"), "198.51.100.8");
    /* an obfuscated node ends the walk */
    assert_string_equal(client("10.0.0.2", NULL, "for=_hidden, for=10.0.0.3"), "10.0.0.3");
    /* X-Forwarded-For wins when both are there (the caller passes one) */
    assert_string_equal(client("10.0.0.2", "198.51.100.1", NULL), "198.51.100.1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cidr_parse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nothing_trusted_means_the_peer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_untrusted_peer_is_the_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_xff_walked_from_the_right, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ipv6_and_mapped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forwarded, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
