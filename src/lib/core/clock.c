/* clock.c — monotonic and wall time, RFC 3339 stamps, deadlines. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "agora/clock.h"

uint64_t ag_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t ag_now_ms(void)
{
    return ag_now_ns() / 1000000u;
}

uint64_t ag_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void ag_time_now(char *out, size_t n)
{
    ag_time_rfc3339(out, n, ag_wall_ms());
}

void ag_time_rfc3339(char *out, size_t n, uint64_t wall_ms)
{
    /* Cache the formatted second per thread: logs stamp many lines a second. */
    static _Thread_local time_t cached_sec = -1;
    static _Thread_local char cached[24];
    time_t sec = (time_t)(wall_ms / 1000);
    if (sec != cached_sec) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = sec;
    }
    snprintf(out, n, "%s.%03uZ", cached, (unsigned)(wall_ms % 1000));
}

ag_deadline ag_deadline_in(uint64_t timeout_ms)
{
    return ag_now_ms() + timeout_ms;
}

uint64_t ag_deadline_remaining(ag_deadline d)
{
    if (d == AG_DEADLINE_NONE) return UINT64_MAX;
    uint64_t now = ag_now_ms();
    return d > now ? d - now : 0;
}

bool ag_deadline_expired(ag_deadline d)
{
    return d != AG_DEADLINE_NONE && ag_now_ms() >= d;
}

ag_deadline ag_deadline_min(ag_deadline a, ag_deadline b)
{
    return a < b ? a : b;
}

int ag_deadline_parse_header(const char *value, ag_deadline *out)
{
    if (!value || *value < '0' || *value > '9') return AG_EINVAL;
    char *end;
    unsigned long long ms = strtoull(value, &end, 10);
    if (*end != '\0' || ms > 86400000ull) return AG_EINVAL;
    *out = ag_deadline_in(ms);
    return 0;
}
