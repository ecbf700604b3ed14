/*
 * id.h — time-ordered unique ids (UUIDv7, RFC 9562).
 *
 * 48 bits of Unix milliseconds, then a 12-bit counter that keeps ids made in
 * the same millisecond by one process, on any of its threads, in order
 * (RFC 9562 §6.2 method 1), then 62 random bits from getrandom(2). Sorting
 * ids as strings sorts them by time, and one process's ids by creation.
 */
#ifndef AGORA_ID_H
#define AGORA_ID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/error.h"

#define AG_ID_LEN 36 /* "0190c5a2-7f3e-7c1a-9b2e-5d4f3a2b1c0d" */

typedef struct ag_id {
    uint8_t b[16];
} ag_id;

void ag_id_new(ag_id *out);
/* Writes the canonical lower-case form and a NUL into `out` (>= AG_ID_LEN + 1). */
void ag_id_format(const ag_id *id, char *out);
/* Shorthand: a new id, formatted. */
void ag_id_new_str(char out[AG_ID_LEN + 1]);
/* Parses the canonical form; AG_EINVAL otherwise. */
int ag_id_parse(const char *s, ag_id *out);
/* The Unix milliseconds embedded in a v7 id. */
uint64_t ag_id_time_ms(const ag_id *id);
/* Whether `s` is 1 to `max` characters of [A-Za-z0-9_-]: an id a client
 * gives (a product, a room) that is safe in a path, a subject or a log
 * line. UUIDs pass; "../x", "a b" and "" do not. */
bool ag_id_token_ok(const char *s, size_t max);
/* Fills `buf` with `n` random bytes from the kernel. */
void ag_random_bytes(void *buf, size_t n);

#endif
