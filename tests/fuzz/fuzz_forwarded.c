/* X-Forwarded-For and Forwarded from a proxy in front of the gateway
 * (gateway/trust.c): with 10.0.0.0/8 and 2001:db8::/32 trusted, the
 * input's first byte picks the header kind and the peer, the rest is the
 * header's value. The client's address is always the peer or an address
 * that was in the header, and never a trusted one unless every hop was. */
#include "fuzz.h"

#include <arpa/inet.h>

#include "gateway.h"

static gw_config g_cfg;
static gw_cidr g_set[2];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    if (gw_cidr_parse("10.0.0.0/8", &g_set[0]) < 0 || gw_cidr_parse("2001:db8::/32", &g_set[1]) < 0)
        abort();
    g_cfg.trusted = g_set;
    g_cfg.ntrusted = 2;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    static const char *const peers[] = {"10.1.2.3", "203.0.113.5", "2001:db8::7",
                                        "::ffff:10.0.0.1"};
    const char *peer = peers[data[0] % 4];
    char *value = fuzz_str(data + 1, size - 1);
    ag_arena a;
    ag_arena_init(&a, 0);
    bool xff = data[0] & 4;
    const char *ip = gw_client_ip_of(&g_cfg, peer, xff ? value : NULL, xff ? NULL : value, &a);
    FUZZ_CHECK(ip != NULL);
    if (ip != peer) {
        unsigned char buf[16];
        FUZZ_CHECK(inet_pton(AF_INET, ip, buf) == 1 || inet_pton(AF_INET6, ip, buf) == 1);
        FUZZ_CHECK(gw_trusted(&g_cfg, peer));
        FUZZ_CHECK(strstr(value, ip) != NULL);
    }
    if (!gw_trusted(&g_cfg, peer)) FUZZ_CHECK(ip == peer);
    ag_arena_release(&a);
    free(value);
    return 0;
}
