/*
 * mem.h — allocation, arenas and growable buffers.
 *
 * Out of memory is handled in one place: ag_malloc and friends print a message
 * and abort (as h2o and Redis do), so callers never check for NULL.
 *
 * An arena (ag_arena) serves the many small allocations of one request and is
 * released in one call when the response is done (nginx pools). An ag_buf is
 * a growable byte buffer with a hard limit, for anything fed by input.
 */
#ifndef AGORA_MEM_H
#define AGORA_MEM_H

#include <stdarg.h>
#include <stddef.h>

#include "agora/error.h"

void *ag_malloc(size_t n);
void *ag_calloc(size_t count, size_t size);
void *ag_realloc(void *p, size_t n);
char *ag_strdup(const char *s);
char *ag_strndup(const char *s, size_t n);
void ag_free(void *p);

/* Arena: bump allocation from chunks; blocks larger than a chunk get their own.
 * Not thread-safe: one owner at a time. */
typedef struct ag_arena_chunk ag_arena_chunk;
typedef struct ag_arena {
    ag_arena_chunk *head;
    size_t chunk_size;
    size_t total; /* bytes handed out, for limits and tests */
} ag_arena;

/* Prepares an empty arena whose chunks are `chunk_size` bytes (0: 4096). */
void ag_arena_init(ag_arena *a, size_t chunk_size);
/* Frees every block of the arena; it may be reused after ag_arena_init. */
void ag_arena_release(ag_arena *a);
/* Frees all but keeps the first chunk for reuse (the arena stays initialised). */
void ag_arena_reset(ag_arena *a);
/* Returns `n` bytes aligned for any type, owned by the arena. */
void *ag_arena_alloc(ag_arena *a, size_t n);
void *ag_arena_calloc(ag_arena *a, size_t n);
char *ag_arena_strndup(ag_arena *a, const char *s, size_t n);
char *ag_arena_strdup(ag_arena *a, const char *s);
/* printf into the arena; the result is NUL-terminated and arena-owned. */
char *ag_arena_printf(ag_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Growable buffer with a hard limit. `data` is always NUL-terminated when not
 * NULL (the terminator is not counted in `len`). The caller owns the struct. */
typedef struct ag_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t limit; /* 0: no limit */
} ag_buf;

void ag_buf_init(ag_buf *b, size_t limit);
void ag_buf_release(ag_buf *b);
/* Returns AG_ETOOBIG (and appends nothing) when the limit would be passed. */
int ag_buf_append(ag_buf *b, const void *data, size_t n);
int ag_buf_appends(ag_buf *b, const char *s);
int ag_buf_printf(ag_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int ag_buf_vprintf(ag_buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Makes room for `n` more bytes; returns AG_ETOOBIG past the limit. */
int ag_buf_reserve(ag_buf *b, size_t n);
/* Removes the first `n` bytes. */
void ag_buf_consume(ag_buf *b, size_t n);
/* Hands the data to the caller (free with ag_free); the buffer becomes empty. */
char *ag_buf_detach(ag_buf *b, size_t *len);

#endif
