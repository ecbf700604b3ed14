/*
 * trust.c — whose word the gateway takes for the client's address.
 *
 * A request's peer is the client unless the peer is one of gateway.json's
 * "trustedProxies" (addresses or CIDR blocks, IPv4 and IPv6; none by
 * default). Only then is X-Forwarded-For read (or, without it, the for=
 * parameters of RFC 7239's Forwarded), right to left: each trusted hop is
 * passed over, and the first address that is not trusted is the client. An
 * entry that is not an address ends the walk at the last good one. A client
 * that is not behind a trusted proxy cannot choose the address it is rate
 * limited by, or the one services are told (its own X-Forwarded-For and
 * Forwarded are dropped, proxy.c).
 *
 * Written here, not taken from a library: the matching is inet_pton and a
 * prefix compare, and none of the Debian libraries the project uses offers
 * CIDR sets.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "gateway.h"

static bool parse_ip(const char *s, size_t n, int *family, unsigned char addr[16])
{
    char buf[64];
    if (n == 0 || n >= sizeof buf) return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (inet_pton(AF_INET, buf, addr) == 1) {
        *family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, buf, addr) == 1) {
        *family = AF_INET6;
        return true;
    }
    return false;
}

int gw_cidr_parse(const char *s, gw_cidr *out)
{
    memset(out, 0, sizeof *out);
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (!parse_ip(s, n, &out->family, out->addr)) return AG_EINVAL;
    int max = out->family == AF_INET ? 32 : 128;
    out->bits = max;
    if (slash) {
        const char *p = slash + 1;
        int bits = 0;
        if (!*p) return AG_EINVAL;
        for (; *p; p++) {
            if (!isdigit((unsigned char)*p) || bits > max) return AG_EINVAL;
            bits = bits * 10 + (*p - '0');
        }
        if (bits > max) return AG_EINVAL;
        out->bits = bits;
    }
    return 0;
}

/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d, how a dual-stack socket
 * reports IPv4 peers) compares as its IPv4 address. */
static void unmap(int *family, unsigned char addr[16])
{
    static const unsigned char prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (*family == AF_INET6 && memcmp(addr, prefix, 12) == 0) {
        memmove(addr, addr + 12, 4);
        *family = AF_INET;
    }
}

static bool trusted_addr(const gw_config *c, int family, unsigned char addr[16])
{
    unmap(&family, addr);
    for (int i = 0; i < c->ntrusted; i++) {
        const gw_cidr *k = &c->trusted[i];
        if (k->family != family) continue;
        int full = k->bits / 8, rest = k->bits % 8;
        if (memcmp(k->addr, addr, (size_t)full) != 0) continue;
        if (rest && ((k->addr[full] ^ addr[full]) & (0xff << (8 - rest)) & 0xff)) continue;
        return true;
    }
    return false;
}

bool gw_trusted(const gw_config *c, const char *ip)
{
    if (c->ntrusted == 0 || !ip) return false;
    int family;
    unsigned char addr[16];
    return parse_ip(ip, strlen(ip), &family, addr) && trusted_addr(c, family, addr);
}

bool gw_trusted_peer(const gw_config *c, ag_http_req *req)
{
    return gw_trusted(c, ag_req_remote_addr(req));
}

/* The address of one Forwarded for= value: a bare IPv4, "1.2.3.4:80",
 * "[2001:db8::1]" or "[2001:db8::1]:4711", quoted or not. */
static void forwarded_node(const char **s, size_t *n)
{
    const char *p = *s;
    size_t len = *n;
    if (len >= 2 && p[0] == '"' && p[len - 1] == '"') p++, len -= 2;
    if (len && p[0] == '[') {
        const char *close = memchr(p, ']', len);
        if (close) {
            *s = p + 1;
            *n = (size_t)(close - p - 1);
            return;
        }
    }
    const char *colon = memchr(p, ':', len);
    if (colon && !memchr(colon + 1, ':', len - (size_t)(colon + 1 - p))) len = (size_t)(colon - p);
    *s = p;
    *n = len;
}

/* The walk over one header's list, right to left. `forwarded` reads
 * RFC 7239 elements (their for= parameter) instead of bare addresses.
 * Updates *best with each address taken; false when the walk ended (an
 * untrusted address, or an entry that is not one). */
static bool walk(const gw_config *c, ag_arena *arena, const char *list, bool forwarded,
                 const char **best)
{
    const char *end = list + strlen(list);
    while (end > list) {
        const char *start = end;
        while (start > list && start[-1] != ',')
            start--;
        const char *s = start, *e = end;
        end = start > list ? start - 1 : list;
        if (forwarded) {
            const char *f = NULL;
            for (const char *p = s; p + 4 <= e; p++)
                if (strncasecmp(p, "for=", 4) == 0 && (p == s || p[-1] == ';' || p[-1] == ' ')) {
                    f = p + 4;
                    break;
                }
            if (!f) return false;
            const char *semi = memchr(f, ';', (size_t)(e - f));
            s = f;
            if (semi) e = semi;
        }
        while (s < e && isspace((unsigned char)*s))
            s++;
        while (e > s && isspace((unsigned char)e[-1]))
            e--;
        size_t n = (size_t)(e - s);
        if (forwarded) forwarded_node(&s, &n);
        int family;
        unsigned char addr[16];
        if (!parse_ip(s, n, &family, addr)) return false;
        *best = ag_arena_strndup(arena, s, n);
        if (!trusted_addr(c, family, addr)) return false;
    }
    return true;
}

/* Every `name` header of `req`, in order, as one list ("a, b"), in the
 * request's arena; NULL when there is none. */
static const char *joined(ag_http_req *req, const char *name)
{
    const char *out = NULL;
    size_t n = ag_req_header_count(req);
    for (size_t i = 0; i < n; i++) {
        const char *k, *v;
        ag_req_header_at(req, i, &k, &v);
        if (strcasecmp(k, name) != 0) continue;
        out = out ? ag_arena_printf(ag_req_arena(req), "%s, %s", out, v) : v;
    }
    return out;
}

const char *gw_client_ip_of(const gw_config *c, const char *peer, const char *xff,
                            const char *forwarded, ag_arena *arena)
{
    if (!gw_trusted(c, peer)) return peer;
    const char *best = peer;
    if (xff)
        walk(c, arena, xff, false, &best);
    else if (forwarded)
        walk(c, arena, forwarded, true, &best);
    return best;
}

const char *gw_client_ip(const gw_config *c, ag_http_req *req)
{
    const char *peer = ag_req_remote_addr(req);
    if (!gw_trusted(c, peer)) return peer;
    const char *xff = joined(req, "X-Forwarded-For");
    return gw_client_ip_of(c, peer, xff, xff ? NULL : joined(req, "Forwarded"), ag_req_arena(req));
}
