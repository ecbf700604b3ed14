/* Unit tests of src/lib/core/mem.c: arenas (alignment, large blocks, reset, strdup/printf) and ag_buf (limits, consume, detach, printf). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agora/mem.h"

#define ALIGN _Alignof(max_align_t)

static void test_arena_alignment(void **state)
{
    (void)state;
    ag_arena a;
    ag_arena_init(&a, 256);
    /* Odd sizes must not push the next block off alignment. */
    static const size_t sizes[] = {1, 3, 7, 8, 13, 16, 17, 31, 33, 63, 1, 2, 5};
    char *prev = NULL;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char *p = ag_arena_alloc(&a, sizes[i]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % ALIGN, 0);
        memset(p, 0xab, sizes[i]); /* the whole block is writable (ASan checks) */
        assert_ptr_not_equal(p, prev);
        prev = p;
    }
    /* total counts aligned bytes handed out. */
    assert_true(a.total >= 1 + 3 + 7 + 8 + 13 + 16 + 17 + 31 + 33 + 63 + 1 + 2 + 5);
    assert_int_equal(a.total % ALIGN, 0);
    ag_arena_release(&a);
    assert_null(a.head);
    assert_int_equal(a.total, 0);
}

static void test_arena_zero_size_distinct(void **state)
{
    (void)state;
    ag_arena a;
    ag_arena_init(&a, 0); /* default chunk size */
    assert_int_equal(a.chunk_size, 4096);
    void *p = ag_arena_alloc(&a, 0);
    void *q = ag_arena_alloc(&a, 0);
    assert_non_null(p);
    assert_non_null(q);
    assert_ptr_not_equal(p, q);
    ag_arena_release(&a);
}

static void test_arena_blocks_do_not_overlap(void **state)
{
    (void)state;
    ag_arena a;
    ag_arena_init(&a, 512);
    enum { N = 200 };
    unsigned char *blocks[N];
    for (int i = 0; i < N; i++) {
        blocks[i] = ag_arena_alloc(&a, 40);
        memset(blocks[i], i, 40);
    }
    for (int i = 0; i < N; i++)
        for (int j = 0; j < 40; j++) assert_int_equal(blocks[i][j], (unsigned char)i);
    ag_arena_release(&a);
}

static void test_arena_large_allocation(void **state)
{
    (void)state;
    ag_arena a;
    ag_arena_init(&a, 1024);
    char *small1 = ag_arena_alloc(&a, 16);
    memcpy(small1, "before-big", 11);
    /* Far larger than a chunk: gets its own block. */
    size_t big_n = 1 << 20;
    unsigned char *big = ag_arena_alloc(&a, big_n);
    assert_non_null(big);
    assert_int_equal((uintptr_t)big % ALIGN, 0);
    memset(big, 0x5a, big_n);
    assert_int_equal(big[0], 0x5a);
    assert_int_equal(big[big_n - 1], 0x5a);
    /* The head chunk keeps serving small allocations after a big one. */
    char *small2 = ag_arena_alloc(&a, 16);
    assert_true(small2 > small1 && small2 < small1 + 1024);
    assert_string_equal(small1, "before-big");
    assert_true(a.total >= big_n + 32);
    ag_arena_release(&a);
}

static void test_arena_calloc_zeroes(void **state)
{
    (void)state;
    ag_arena a;
    ag_arena_init(&a, 128);
    unsigned char *p = ag_arena_alloc(&a, 64);
    memset(p, 0xff, 64);
    ag_arena_reset(&a);
    unsigned char *z = ag_arena_calloc(&a, 64); /* likely reuses the dirty chunk */
    for (int i = 0; i < 64; i++) assert_int_equal(z[i], 0);
    ag_arena_release(&a);
}

static void test_arena_reset_keeps_working(void **state)
{
    (void)state;
    ag_arena a;
    ag_arena_init(&a, 256);
    for (int round = 0; round < 50; round++) {
        char *strs[30];
        for (int i = 0; i < 30; i++) {
            strs[i] = ag_arena_printf(&a, "round %d item %d", round, i);
        }
        (void)ag_arena_alloc(&a, 5000); /* a big block too */
        for (int i = 0; i < 30; i++) {
            char want[64];
            snprintf(want, sizeof want, "round %d item %d", round, i);
            assert_string_equal(strs[i], want);
        }
        assert_true(a.total > 0);
        ag_arena_reset(&a);
        assert_int_equal(a.total, 0);
        /* One regular chunk is kept for reuse, alone. */
        assert_non_null(a.head);
    }
    ag_arena_release(&a);
}

static void test_arena_strdup_printf(void **state)
{
    (void)state;
    ag_arena a;
    ag_arena_init(&a, 64);
    const char *src = "hello arena";
    char *d = ag_arena_strdup(&a, src);
    assert_ptr_not_equal(d, src);
    assert_string_equal(d, src);
    char *n = ag_arena_strndup(&a, "abcdef", 3);
    assert_string_equal(n, "abc");
    char *e = ag_arena_strdup(&a, "");
    assert_string_equal(e, "");
    char *p = ag_arena_printf(&a, "%s-%d-%05.1f", "x", 42, 3.14159);
    assert_string_equal(p, "x-42-003.1");
    /* Longer than the chunk: must still be complete. */
    char *longp = ag_arena_printf(&a, "%0200d", 7);
    assert_int_equal(strlen(longp), 200);
    assert_int_equal(longp[199], '7');
    assert_int_equal(longp[0], '0');
    assert_string_equal(d, src); /* earlier strings untouched */
    ag_arena_release(&a);
}

static void test_heap_helpers(void **state)
{
    (void)state;
    char *d = ag_strdup("copy me");
    assert_string_equal(d, "copy me");
    char *n = ag_strndup("truncate", 4);
    assert_string_equal(n, "trun");
    unsigned char *z = ag_calloc(10, 10);
    for (int i = 0; i < 100; i++) assert_int_equal(z[i], 0);
    z = ag_realloc(z, 1000);
    z[999] = 1;
    void *m0 = ag_malloc(0); /* never NULL */
    assert_non_null(m0);
    ag_free(m0);
    ag_free(z);
    ag_free(n);
    ag_free(d);
    ag_free(NULL);
}

static void test_buf_append_and_nul(void **state)
{
    (void)state;
    ag_buf b;
    ag_buf_init(&b, 0);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(ag_buf_appends(&b, "abc"), 0);
    assert_int_equal(ag_buf_append(&b, "def\0ghi", 7), 0); /* binary safe */
    assert_int_equal(b.len, 10);
    assert_memory_equal(b.data, "abcdef\0ghi", 10);
    assert_int_equal(b.data[10], '\0');
    assert_true(b.cap > b.len);
    ag_buf_release(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
}

static void test_buf_limit(void **state)
{
    (void)state;
    ag_buf b;
    ag_buf_init(&b, 10);
    assert_int_equal(ag_buf_appends(&b, "12345"), 0);
    assert_int_equal(ag_buf_appends(&b, "67890"), 0); /* exactly the limit */
    assert_int_equal(b.len, 10);
    /* One byte more is refused and nothing changes. */
    assert_int_equal(ag_buf_appends(&b, "x"), AG_ETOOBIG);
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "1234567890");
    ag_buf_consume(&b, 4);
    assert_string_equal(b.data, "567890");
    /* Room for 4 again, not 5. */
    assert_int_equal(ag_buf_appends(&b, "abcde"), AG_ETOOBIG);
    assert_string_equal(b.data, "567890");
    assert_int_equal(ag_buf_appends(&b, "abcd"), 0);
    assert_string_equal(b.data, "567890abcd");
    /* Huge sizes must not wrap around the limit check. */
    assert_int_equal(ag_buf_reserve(&b, SIZE_MAX), AG_ETOOBIG);
    assert_int_equal(ag_buf_reserve(&b, SIZE_MAX - 5), AG_ETOOBIG);
    assert_int_equal(ag_buf_reserve(&b, 1), AG_ETOOBIG);
    assert_int_equal(ag_buf_reserve(&b, 0), 0);
    assert_string_equal(b.data, "567890abcd");
    ag_buf_release(&b);
}

static void test_buf_limit_printf(void **state)
{
    (void)state;
    ag_buf b;
    ag_buf_init(&b, 8);
    assert_int_equal(ag_buf_printf(&b, "%d", 1234), 0);
    assert_int_equal(ag_buf_printf(&b, "%s", "56789"), AG_ETOOBIG);
    assert_int_equal(b.len, 4);
    assert_string_equal(b.data, "1234");
    assert_int_equal(ag_buf_printf(&b, "%s", "5678"), 0);
    assert_string_equal(b.data, "12345678");
    ag_buf_release(&b);
}

static void test_buf_printf_growth(void **state)
{
    (void)state;
    ag_buf b;
    ag_buf_init(&b, 0);
    assert_int_equal(ag_buf_printf(&b, "[%s]", "start"), 0);
    /* Longer than printf's small stack buffer (> 256 bytes). */
    char big[1000];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(ag_buf_printf(&b, "<%s>%d", big, 77), 0);
    assert_int_equal(b.len, 7 + 1 + 999 + 1 + 2);
    assert_memory_equal(b.data, "[start]<qqq", 11);
    assert_string_equal(b.data + b.len - 4, "q>77");
    /* Many small pieces: order preserved. */
    for (int i = 0; i < 1000; i++) assert_int_equal(ag_buf_printf(&b, "%d,", i % 10), 0);
    assert_int_equal(b.len, 1010 + 2000);
    assert_memory_equal(b.data + 1010, "0,1,2,3,4,5,6,7,8,9,0,", 22);
    assert_int_equal(b.data[b.len], '\0');
    ag_buf_release(&b);
}

static void test_buf_consume(void **state)
{
    (void)state;
    ag_buf b;
    ag_buf_init(&b, 0);
    ag_buf_consume(&b, 5); /* on an empty buffer: no-op */
    assert_int_equal(b.len, 0);
    ag_buf_appends(&b, "hello world");
    ag_buf_consume(&b, 0);
    assert_string_equal(b.data, "hello world");
    ag_buf_consume(&b, 6);
    assert_int_equal(b.len, 5);
    assert_string_equal(b.data, "world");
    ag_buf_consume(&b, 100); /* more than there is */
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_int_equal(ag_buf_appends(&b, "again"), 0);
    assert_string_equal(b.data, "again");
    ag_buf_release(&b);
}

static void test_buf_detach(void **state)
{
    (void)state;
    ag_buf b;
    ag_buf_init(&b, 100);
    ag_buf_appends(&b, "payload");
    size_t len = 0;
    char *d = ag_buf_detach(&b, &len);
    assert_int_equal(len, 7);
    assert_string_equal(d, "payload");
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    /* The buffer stays usable (and keeps its limit). */
    assert_int_equal(ag_buf_appends(&b, "next"), 0);
    assert_string_equal(b.data, "next");
    ag_free(d);
    ag_buf_release(&b);

    /* Detaching an empty buffer gives an empty string, not NULL. */
    ag_buf e;
    ag_buf_init(&e, 0);
    len = 99;
    char *s = ag_buf_detach(&e, &len);
    assert_non_null(s);
    assert_string_equal(s, "");
    assert_int_equal(len, 0);
    ag_free(s);
    s = ag_buf_detach(&e, NULL);
    assert_string_equal(s, "");
    ag_free(s);
}

/* Runs fn in a child process. Returns the child's exit code, or -signal. */
static int in_child(void (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fn();
        _exit(0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

/* An impossible size must not wrap around to a small block: the allocator
 * either aborts (out of memory) or refuses. Exit 0 means it returned a block. */
static void child_arena_huge(void)
{
    ag_arena a;
    ag_arena_init(&a, 0);
    void *p = ag_arena_alloc(&a, SIZE_MAX - 8);
    _exit(p != NULL ? 0 : 3);
}

static void test_arena_huge_size_does_not_wrap(void **state)
{
    (void)state;
    int rc = in_child(child_arena_huge);
    if (rc == 0) fail_msg("ag_arena_alloc(SIZE_MAX - 8) returned a block (size wrapped)");
}

static void child_buf_reserve_huge(void)
{
    ag_buf b;
    ag_buf_init(&b, 0); /* no limit */
    ag_buf_appends(&b, "abc");
    int rc = ag_buf_reserve(&b, SIZE_MAX - 1);
    _exit(rc == 0 ? 0 : 3);
}

static void test_buf_reserve_huge_without_limit(void **state)
{
    (void)state;
    int rc = in_child(child_buf_reserve_huge);
    if (rc == 0) fail_msg("ag_buf_reserve(SIZE_MAX - 1) on an unlimited buffer returned 0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_alignment),
        cmocka_unit_test(test_arena_zero_size_distinct),
        cmocka_unit_test(test_arena_blocks_do_not_overlap),
        cmocka_unit_test(test_arena_large_allocation),
        cmocka_unit_test(test_arena_calloc_zeroes),
        cmocka_unit_test(test_arena_reset_keeps_working),
        cmocka_unit_test(test_arena_strdup_printf),
        cmocka_unit_test(test_heap_helpers),
        cmocka_unit_test(test_buf_append_and_nul),
        cmocka_unit_test(test_buf_limit),
        cmocka_unit_test(test_buf_limit_printf),
        cmocka_unit_test(test_buf_printf_growth),
        cmocka_unit_test(test_buf_consume),
        cmocka_unit_test(test_buf_detach),
        cmocka_unit_test(test_arena_huge_size_does_not_wrap),
        cmocka_unit_test(test_buf_reserve_huge_without_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
