/* id.c — UUIDv7 (RFC 9562) with a per-thread counter for ordering. */
#include <errno.h>
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
    static _Thread_local uint64_t last_ms;
    static _Thread_local uint16_t counter;

    if (pool_left < 10) {
        ag_random_bytes(pool, sizeof pool);
        pool_left = sizeof pool;
    }
    unsigned char *r = pool + sizeof pool - pool_left;
    pool_left -= 10;

    uint64_t ms = ag_wall_ms();
    if (ms <= last_ms) {
        /* Same (or earlier: clock stepped back) millisecond: count up so ids
         * stay ordered; on overflow borrow the next millisecond. */
        ms = last_ms;
        if (++counter > 0x0fff) {
            ms++;
            counter = (uint16_t)(r[0] & 0x03);
        }
    } else {
        /* Start low with random bits so the counter rarely overflows. */
        counter = (uint16_t)(((r[0] << 8) | r[1]) & 0x01ff);
    }
    last_ms = ms;

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
