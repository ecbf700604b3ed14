/*
 * log.h — structured JSON logging, one line per event on stderr.
 *
 *   ag_info("listening", AG_FI("port", 7001), AG_FS("addr", "127.0.0.1"));
 *   {"time":"2026-11-21T20:49:03.120Z","level":"info","service":"users",
 *    "msg":"listening","port":7001,"addr":"127.0.0.1"}
 *
 * Fields are typed (string, integer, double, boolean) so numbers stay numbers.
 * Each line is written with one write(2), so lines from threads never
 * interleave. The level comes from AGORA_LOG (debug, info, warn, error, off).
 */
#ifndef AGORA_LOG_H
#define AGORA_LOG_H

#include <stdbool.h>

#include "agora/error.h"

typedef enum ag_log_level {
    AG_LOG_DEBUG = 0,
    AG_LOG_INFO,
    AG_LOG_WARN,
    AG_LOG_ERROR,
    AG_LOG_OFF
} ag_log_level;

typedef enum ag_field_type { AG_F_END = 0, AG_F_STR, AG_F_INT, AG_F_DBL, AG_F_BOOL } ag_field_type;

typedef struct ag_field {
    const char *key;
    ag_field_type type;
    union {
        const char *s;
        long long i;
        double d;
        bool b;
    } v;
} ag_field;

#define AG_FS(k, x) ((ag_field){.key = (k), .type = AG_F_STR, .v.s = (x)})
#define AG_FI(k, x) ((ag_field){.key = (k), .type = AG_F_INT, .v.i = (long long)(x)})
#define AG_FD(k, x) ((ag_field){.key = (k), .type = AG_F_DBL, .v.d = (double)(x)})
#define AG_FB(k, x) ((ag_field){.key = (k), .type = AG_F_BOOL, .v.b = (x)})
#define AG_FERR(e) AG_FS("error", ag_strerror(e))
#define AG_FEND ((ag_field){.key = NULL, .type = AG_F_END})

/* Logs `msg` and the ag_field arguments that follow, up to AG_FEND. Prefer the
 * macros below, which add the AG_FEND. */
void ag_log_(ag_log_level level, const char *msg, ...);

#define ag_debug(...) ag_log_(AG_LOG_DEBUG, __VA_ARGS__, AG_FEND)
#define ag_info(...) ag_log_(AG_LOG_INFO, __VA_ARGS__, AG_FEND)
#define ag_warn(...) ag_log_(AG_LOG_WARN, __VA_ARGS__, AG_FEND)
#define ag_error(...) ag_log_(AG_LOG_ERROR, __VA_ARGS__, AG_FEND)

/* Sets the service name printed on every line (copied) and the level.
 * Not thread-safe: call at start, before threads run. */
void ag_log_setup(const char *service, ag_log_level level);
/* Parses "debug", "info", "warn", "error", "off"; AG_EINVAL otherwise. */
int ag_log_level_parse(const char *s, ag_log_level *out);
bool ag_log_enabled(ag_log_level level);
/* Redirects output to `fd` (default 2), for tests. */
void ag_log_set_fd(int fd);

#endif
