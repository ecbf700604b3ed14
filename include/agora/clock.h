/*
 * clock.h — monotonic time, wall time and deadlines.
 *
 * Durations and deadlines use the monotonic clock; only timestamps shown to
 * people (logs, API fields) use wall time. A deadline is an absolute
 * monotonic time in milliseconds; AG_DEADLINE_NONE means no deadline. The
 * remaining budget travels between services in the X-Agora-Deadline-Ms
 * header (DESIGN.md §3) as a count of milliseconds left.
 */
#ifndef AGORA_CLOCK_H
#define AGORA_CLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/error.h"

#define AG_DEADLINE_HEADER "X-Agora-Deadline-Ms"
#define AG_DEADLINE_NONE UINT64_MAX

uint64_t ag_now_ns(void);  /* monotonic */
uint64_t ag_now_ms(void);  /* monotonic */
uint64_t ag_wall_ms(void); /* milliseconds since the Unix epoch */

/* Writes "2026-11-21T20:49:03.120Z" (24 chars + NUL); `n` must be >= 25. */
void ag_time_rfc3339(char *out, size_t n, uint64_t wall_ms);
/* The same for now (ag_wall_ms()): what every row's created_at gets. */
void ag_time_now(char *out, size_t n);

typedef uint64_t ag_deadline;

/* A deadline `timeout_ms` from now. */
ag_deadline ag_deadline_in(uint64_t timeout_ms);
/* Milliseconds left (0 when passed; UINT64_MAX for AG_DEADLINE_NONE). */
uint64_t ag_deadline_remaining(ag_deadline d);
bool ag_deadline_expired(ag_deadline d);
/* The earlier of two deadlines. */
ag_deadline ag_deadline_min(ag_deadline a, ag_deadline b);
/* Parses an X-Agora-Deadline-Ms value (decimal milliseconds left, at most a
 * day). Returns AG_EINVAL on anything else. */
int ag_deadline_parse_header(const char *value, ag_deadline *out);

#endif
