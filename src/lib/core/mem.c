/* mem.c — allocation that aborts on exhaustion, arenas and growable buffers. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agora/mem.h"

static void oom(size_t n)
{
    char msg[96];
    int len = snprintf(msg, sizeof msg, "agora: out of memory allocating %zu bytes\n", n);
    if (len > 0) (void)!write(2, msg, (size_t)len);
    abort();
}

void *ag_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) oom(n);
    return p;
}

void *ag_calloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) oom(count * size);
    return p;
}

void *ag_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n);
    return q;
}

char *ag_strndup(const char *s, size_t n)
{
    char *d = ag_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *ag_strdup(const char *s)
{
    return ag_strndup(s, strlen(s));
}

void ag_free(void *p)
{
    free(p);
}

/* ---- Arena ---------------------------------------------------------------
 * Chunks form a singly linked list, newest first; allocation bumps `used` in
 * the head chunk. A request larger than a quarter chunk gets a chunk of its
 * own, linked behind the head so the head keeps serving small allocations. */
struct ag_arena_chunk {
    ag_arena_chunk *next;
    size_t size, used;
    _Alignas(max_align_t) unsigned char data[];
};

#define ARENA_ALIGN _Alignof(max_align_t)

void ag_arena_init(ag_arena *a, size_t chunk_size)
{
    a->head = NULL;
    a->chunk_size = chunk_size ? chunk_size : 4096;
    a->total = 0;
}

void ag_arena_release(ag_arena *a)
{
    ag_arena_chunk *c = a->head;
    while (c) {
        ag_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->total = 0;
}

void ag_arena_reset(ag_arena *a)
{
    ag_arena_chunk *keep = NULL, *c = a->head;
    while (c) {
        ag_arena_chunk *next = c->next;
        if (!keep && c->size == a->chunk_size) {
            keep = c;
        } else {
            free(c);
        }
        c = next;
    }
    if (keep) {
        keep->next = NULL;
        keep->used = 0;
    }
    a->head = keep;
    a->total = 0;
}

static ag_arena_chunk *chunk_new(size_t size)
{
    ag_arena_chunk *c = ag_malloc(sizeof *c + size);
    c->next = NULL;
    c->size = size;
    c->used = 0;
    return c;
}

void *ag_arena_alloc(ag_arena *a, size_t n)
{
    if (n > SIZE_MAX - ARENA_ALIGN - sizeof(ag_arena_chunk)) oom(n);
    size_t need = (n + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
    if (need == 0) need = ARENA_ALIGN;
    a->total += need;
    if (need > a->chunk_size / 4) {
        ag_arena_chunk *big = chunk_new(need);
        big->used = need;
        if (a->head) {
            big->next = a->head->next;
            a->head->next = big;
        } else {
            a->head = big;
        }
        return big->data;
    }
    if (!a->head || a->head->size - a->head->used < need) {
        ag_arena_chunk *c = chunk_new(a->chunk_size);
        c->next = a->head;
        a->head = c;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += need;
    return p;
}

void *ag_arena_calloc(ag_arena *a, size_t n)
{
    void *p = ag_arena_alloc(a, n);
    memset(p, 0, n);
    return p;
}

char *ag_arena_strndup(ag_arena *a, const char *s, size_t n)
{
    char *d = ag_arena_alloc(a, n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *ag_arena_strdup(ag_arena *a, const char *s)
{
    return ag_arena_strndup(a, s, strlen(s));
}

char *ag_arena_printf(ag_arena *a, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    char *d = ag_arena_alloc(a, (size_t)n + 1);
    vsnprintf(d, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return d;
}

/* ---- Buffer -------------------------------------------------------------- */

void ag_buf_init(ag_buf *b, size_t limit)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->limit = limit;
}

void ag_buf_release(ag_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int ag_buf_reserve(ag_buf *b, size_t n)
{
    if (b->limit && (n > b->limit || b->len > b->limit - n)) return AG_ETOOBIG;
    if (n > SIZE_MAX - b->len - 1) return AG_ETOOBIG;
    size_t want = b->len + n + 1; /* + NUL */
    if (want <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < want) cap = cap < SIZE_MAX / 2 ? cap * 2 : want;
    b->data = ag_realloc(b->data, cap);
    b->cap = cap;
    return 0;
}

int ag_buf_append(ag_buf *b, const void *data, size_t n)
{
    int rc = ag_buf_reserve(b, n);
    if (rc < 0) return rc;
    if (n) memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int ag_buf_appends(ag_buf *b, const char *s)
{
    return ag_buf_append(b, s, strlen(s));
}

int ag_buf_vprintf(ag_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    if (n < 0) {
        va_end(ap2);
        return AG_EINVAL;
    }
    int rc = ag_buf_reserve(b, (size_t)n);
    if (rc == 0) {
        if ((size_t)n < sizeof small)
            memcpy(b->data + b->len, small, (size_t)n + 1);
        else
            vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    }
    va_end(ap2);
    return rc;
}

int ag_buf_printf(ag_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = ag_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void ag_buf_consume(ag_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data) b->data[b->len] = '\0';
}

char *ag_buf_detach(ag_buf *b, size_t *len)
{
    char *d = b->data;
    if (!d) d = ag_strdup("");
    if (len) *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return d;
}
