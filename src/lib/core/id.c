/* id.c — UUIDv7 (RFC 9562) with a process-wide counter for ordering. */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>

#include "agora/clock.h"
#include "agora/id.h"

void ag_random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            /* getrandom cannot fail on Linux >= 3.17 once the pool is ready;
             * there is no safe fallback for ids, so stop loudly. */
            abort();
        }
        p += r;
        n -= (size_t)r;
    }
}

void ag_id_new(ag_id *out)
{
    /* Per-thread random pool, refilled in blocks to spare syscalls. */
    static _Thread_local unsigned char pool[256];
    static _Thread_local size_t pool_left;
    /* Process-wide (ms << 12 | counter) of the last id: a service makes ids
     * on its loop and on every worker thread, and ids made in one
     * millisecond must still sort in the order they were made. */
    static _Atomic uint64_t last;

    if (pool_left < 10) {
        ag_random_bytes(pool, sizeof pool);
        pool_left = sizeof pool;
    }
    unsigned char *r = pool + sizeof pool - pool_left;
    pool_left -= 10;

    /* A new millisecond starts its counter low with random bits, so it
     * rarely overflows; the same (or an earlier: the clock stepped back)
     * millisecond counts up, and an overflow borrows the next millisecond. */
    uint64_t fresh = (ag_wall_ms() << 12) | (uint64_t)(((r[0] << 8) | r[1]) & 0x01ff);
    uint64_t prev = atomic_load_explicit(&last, memory_order_relaxed);
    uint64_t next;
    do {
        next = (fresh >> 12) > (prev >> 12) ? fresh : prev + 1;
    } while (!atomic_compare_exchange_weak_explicit(&last, &prev, next, memory_order_relaxed,
                                                    memory_order_relaxed));
    uint64_t ms = next >> 12;
    unsigned counter = (unsigned)(next & 0x0fff);

    for (int i = 0; i < 6; i++) out->b[i] = (uint8_t)(ms >> (40 - 8 * i));
    out->b[6] = (uint8_t)(0x70 | ((counter >> 8) & 0x0f));
    out->b[7] = (uint8_t)(counter & 0xff);
    memcpy(out->b + 8, r + 2, 8);
    out->b[8] = (uint8_t)(0x80 | (out->b[8] & 0x3f));
}

void ag_id_format(const ag_id *id, char *out)
{
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) *o++ = '-';
        *o++ = hex[id->b[i] >> 4];
        *o++ = hex[id->b[i] & 15];
    }
    *o = '\0';
}

void ag_id_new_str(char out[AG_ID_LEN + 1])
{
    ag_id id;
    ag_id_new(&id);
    ag_id_format(&id, out);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int ag_id_parse(const char *s, ag_id *out)
{
    if (!s || strlen(s) != AG_ID_LEN) return AG_EINVAL;
    ag_id id;
    int j = 0;
    for (int i = 0; i < AG_ID_LEN;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') return AG_EINVAL;
            i++;
            continue;
        }
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0) return AG_EINVAL;
        id.b[j++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    *out = id;
    return 0;
}

uint64_t ag_id_time_ms(const ag_id *id)
{
    uint64_t ms = 0;
    for (int i = 0; i < 6; i++) ms = ms << 8 | id->b[i];
    return ms;
}

bool ag_id_token_ok(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return n >= 1 && n <= max;
}
