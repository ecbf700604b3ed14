/*
 * log.c — structured JSON log lines (see agora/log.h).
 *
 * The JSON is written by hand rather than through jansson: a line is built in
 * a thread-local buffer with no allocation per call, which matters for the
 * access log on the request path. Strings are escaped per RFC 8259.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "agora/clock.h"
#include "agora/log.h"
#include "agora/mem.h"
#include "agora/trace.h"

static char g_service[64] = "agora";
static ag_log_level g_level = AG_LOG_INFO;
static int g_fd = 2;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void ag_log_setup(const char *service, ag_log_level level)
{
    if (service) snprintf(g_service, sizeof g_service, "%s", service);
    g_level = level;
}

void ag_log_set_fd(int fd)
{
    g_fd = fd;
}

bool ag_log_enabled(ag_log_level level)
{
    return level >= g_level && level < AG_LOG_OFF;
}

int ag_log_level_parse(const char *s, ag_log_level *out)
{
    for (int i = 0; i <= AG_LOG_OFF; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (ag_log_level)i;
            return 0;
        }
    }
    if (strcmp(s, "warning") == 0) {
        *out = AG_LOG_WARN;
        return 0;
    }
    return AG_EINVAL;
}

/* A fixed line buffer. A line that would be longer keeps what fits: a string
 * value is cut on a character boundary and closed, a field that does not fit
 * whole is dropped with the fields after it, and "truncated":true is added,
 * so every line stays one valid JSON object. */
#define LINE_MAX_BYTES 8192
#define LINE_ROOM (LINE_MAX_BYTES - 32) /* keeps room for the tail */

typedef struct line {
    char buf[LINE_MAX_BYTES];
    size_t len;
    bool cut;
} line;

/* Appends all of `s` or nothing. */
static bool put(line *l, const char *s, size_t n)
{
    if (l->cut || l->len + n > LINE_ROOM) {
        l->cut = true;
        return false;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    return true;
}

static bool puts_(line *l, const char *s)
{
    return put(l, s, strlen(s));
}

/* Length of the UTF-8 sequence starting with byte `c` (1 for stray bytes). */
static size_t utf8_seq_len(unsigned char c)
{
    if (c >= 0xf0 && c < 0xf8) return 4;
    if (c >= 0xe0) return c < 0xf0 ? 3 : 1;
    if (c >= 0xc0) return 2;
    return 1;
}

/* Writes `s` as a JSON string. When it does not fit, writes the longest
 * prefix that ends on a character boundary, closes the string and marks the
 * line cut; returns false only if not even the quotes fit. */
static bool put_escaped(line *l, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    if (!s) return puts_(l, "null");
    if (l->cut || l->len + 2 > LINE_ROOM) {
        l->cut = true;
        return false;
    }
    l->buf[l->len++] = '"';
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        char piece[8];
        size_t n = 0;
        switch (*p) {
        case '"':
            memcpy(piece, "\\\"", n = 2);
            break;
        case '\\':
            memcpy(piece, "\\\\", n = 2);
            break;
        case '\n':
            memcpy(piece, "\\n", n = 2);
            break;
        case '\r':
            memcpy(piece, "\\r", n = 2);
            break;
        case '\t':
            memcpy(piece, "\\t", n = 2);
            break;
        default:
            if (*p < 0x20) {
                piece[0] = '\\', piece[1] = 'u', piece[2] = '0', piece[3] = '0';
                piece[4] = hex[*p >> 4], piece[5] = hex[*p & 15];
                n = 6;
            }
        }
        const char *src = piece;
        size_t adv = 1;
        if (n == 0) {
            /* A plain byte, or a whole UTF-8 sequence kept together. */
            n = utf8_seq_len(*p);
            for (size_t k = 1; k < n; k++)
                if ((p[k] & 0xc0) != 0x80) n = 1; /* malformed: one byte */
            src = (const char *)p;
            adv = n;
        }
        if (l->len + n + 1 > LINE_ROOM) {
            l->cut = true;
            break;
        }
        memcpy(l->buf + l->len, src, n);
        l->len += n;
        p += adv;
    }
    l->buf[l->len++] = '"';
    return true;
}

void ag_log_(ag_log_level level, const char *msg, ...)
{
    if (!ag_log_enabled(level)) return;
    static _Thread_local line l;
    l.len = 0;
    l.cut = false;
    char ts[32];
    ag_time_rfc3339(ts, sizeof ts, ag_wall_ms());
    puts_(&l, "{\"time\":\"");
    puts_(&l, ts);
    puts_(&l, "\",\"level\":\"");
    puts_(&l, level_names[level]);
    puts_(&l, "\",\"service\":");
    put_escaped(&l, g_service);
    puts_(&l, ",\"msg\":");
    put_escaped(&l, msg);
    ag_trace_ctx tc = ag_trace_current(); /* a line inside a span carries its ids */
    if (tc.valid) {
        char tid[33], sid[17];
        ag_trace_id_hex(&tc, tid);
        ag_span_id_hex(&tc, sid);
        puts_(&l, ",\"traceId\":\"");
        puts_(&l, tid);
        puts_(&l, "\",\"spanId\":\"");
        puts_(&l, sid);
        puts_(&l, "\"");
    }

    va_list ap;
    va_start(ap, msg);
    for (;;) {
        ag_field f = va_arg(ap, ag_field);
        if (f.type == AG_F_END) break;
        if (l.cut) continue; /* drain the arguments */
        size_t field_start = l.len;
        char num[64];
        bool ok = put(&l, ",", 1) && put_escaped(&l, f.key) && put(&l, ":", 1);
        if (ok) {
            switch (f.type) {
            case AG_F_STR:
                ok = put_escaped(&l, f.v.s);
                break;
            case AG_F_INT:
                snprintf(num, sizeof num, "%lld", f.v.i);
                ok = puts_(&l, num);
                break;
            case AG_F_DBL:
                snprintf(num, sizeof num, "%.6g", f.v.d);
                ok = isfinite(f.v.d) ? puts_(&l, num) : puts_(&l, "null");
                break;
            case AG_F_BOOL:
                ok = puts_(&l, f.v.b ? "true" : "false");
                break;
            case AG_F_END:
                break;
            }
        }
        if (!ok || (l.cut && f.type != AG_F_STR)) l.len = field_start; /* drop it whole */
    }
    va_end(ap);
    if (l.cut) {
        static const char mark[] = ",\"truncated\":true";
        memcpy(l.buf + l.len, mark, sizeof mark - 1);
        l.len += sizeof mark - 1;
    }
    l.buf[l.len++] = '}';
    l.buf[l.len++] = '\n';
    size_t off = 0;
    while (off < l.len) {
        ssize_t w = write(g_fd, l.buf + off, l.len - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
}
