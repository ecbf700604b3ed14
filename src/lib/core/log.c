/*
 * log.c — structured JSON log lines (see agora/log.h).
 *
 * The JSON is written by hand rather than through jansson: a line is built in
 * a thread-local buffer with no allocation per call, which matters for the
 * access log on the request path. Strings are escaped per RFC 8259.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "agora/clock.h"
#include "agora/log.h"
#include "agora/mem.h"

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

/* A fixed line buffer: a line longer than this is cut and marked. */
#define LINE_MAX_BYTES 8192

typedef struct line {
    char buf[LINE_MAX_BYTES];
    size_t len;
    bool cut;
} line;

static void put(line *l, const char *s, size_t n)
{
    if (l->len + n > sizeof l->buf - 32) {
        n = l->len < sizeof l->buf - 32 ? sizeof l->buf - 32 - l->len : 0;
        l->cut = true;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void puts_(line *l, const char *s)
{
    put(l, s, strlen(s));
}

static void put_escaped(line *l, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    if (!s) {
        puts_(l, "null");
        return;
    }
    put(l, "\"", 1);
    const char *run = s;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        const char *esc = NULL;
        char u[7];
        switch (*p) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        default:
            if (*p < 0x20) {
                u[0] = '\\', u[1] = 'u', u[2] = '0', u[3] = '0';
                u[4] = hex[*p >> 4], u[5] = hex[*p & 15], u[6] = '\0';
                esc = u;
            }
        }
        if (esc) {
            put(l, run, (size_t)((const char *)p - run));
            puts_(l, esc);
            run = (const char *)p + 1;
        }
    }
    put(l, run, strlen(run));
    put(l, "\"", 1);
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

    va_list ap;
    va_start(ap, msg);
    for (;;) {
        ag_field f = va_arg(ap, ag_field);
        if (f.type == AG_F_END) break;
        char num[64];
        put(&l, ",", 1);
        put_escaped(&l, f.key);
        put(&l, ":", 1);
        switch (f.type) {
        case AG_F_STR:
            put_escaped(&l, f.v.s);
            break;
        case AG_F_INT:
            snprintf(num, sizeof num, "%lld", f.v.i);
            puts_(&l, num);
            break;
        case AG_F_DBL:
            snprintf(num, sizeof num, "%.6g", f.v.d);
            puts_(&l, num);
            break;
        case AG_F_BOOL:
            puts_(&l, f.v.b ? "true" : "false");
            break;
        case AG_F_END:
            break;
        }
    }
    va_end(ap);
    if (l.cut) {
        /* Close whatever string was open and say so. */
        l.buf[l.len++] = '"';
        memcpy(l.buf + l.len, ",\"truncated\":true", 17);
        l.len += 17;
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
