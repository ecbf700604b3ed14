/* Unit tests of src/lib/core/id.c: UUIDv7 format, parse, version/variant bits, ordering and uniqueness across threads, creation order across threads. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "agora/clock.h"
#include "agora/id.h"

static void check_canonical(const char *s)
{
    assert_int_equal(strlen(s), AG_ID_LEN);
    for (int i = 0; i < AG_ID_LEN; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            assert_int_equal(s[i], '-');
        } else if (!(isdigit((unsigned char)s[i]) || (s[i] >= 'a' && s[i] <= 'f'))) {
            fail_msg("char %d of \"%s\" is not lower-case hex", i, s);
        }
    }
    assert_int_equal(s[14], '7');              /* version */
    assert_non_null(strchr("89ab", s[19]));    /* variant 10xx */
}

static void test_version_and_variant(void **state)
{
    (void)state;
    for (int i = 0; i < 1000; i++) {
        ag_id id;
        ag_id_new(&id);
        assert_int_equal(id.b[6] >> 4, 7);
        assert_int_equal(id.b[8] >> 6, 2);
        char s[AG_ID_LEN + 1];
        ag_id_format(&id, s);
        check_canonical(s);
    }
}

static void test_format_parse_round_trip(void **state)
{
    (void)state;
    for (int i = 0; i < 100; i++) {
        ag_id id, back;
        ag_id_new(&id);
        char s[AG_ID_LEN + 1];
        ag_id_format(&id, s);
        memset(&back, 0, sizeof back);
        assert_int_equal(ag_id_parse(s, &back), 0);
        assert_memory_equal(id.b, back.b, 16);
    }
    /* A fixed value, both ways; upper-case parses too. */
    static const char *fixed = "0190c5a2-7f3e-7c1a-9b2e-5d4f3a2b1c0d";
    static const uint8_t bytes[16] = {0x01, 0x90, 0xc5, 0xa2, 0x7f, 0x3e, 0x7c, 0x1a,
                                      0x9b, 0x2e, 0x5d, 0x4f, 0x3a, 0x2b, 0x1c, 0x0d};
    ag_id id;
    assert_int_equal(ag_id_parse(fixed, &id), 0);
    assert_memory_equal(id.b, bytes, 16);
    char s[AG_ID_LEN + 1];
    ag_id_format(&id, s);
    assert_string_equal(s, fixed);
    assert_int_equal(ag_id_parse("0190C5A2-7F3E-7C1A-9B2E-5D4F3A2B1C0D", &id), 0);
    assert_memory_equal(id.b, bytes, 16);
    assert_true(ag_id_time_ms(&id) == 0x0190c5a27f3eull);
}

static void test_parse_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "0190c5a2-7f3e-7c1a-9b2e-5d4f3a2b1c0",   /* short */
        "0190c5a2-7f3e-7c1a-9b2e-5d4f3a2b1c0d0", /* long */
        "0190c5a2a7f3e-7c1a-9b2e-5d4f3a2b1c0d",  /* dash moved */
        "0190c5a2-7f3e-7c1a-9b2e_5d4f3a2b1c0d",  /* wrong separator */
        "0190c5a2-7f3e-7c1a-9b2e-5d4f3a2b1c0g",  /* not hex */
        "0190c5a27f3e7c1a9b2e5d4f3a2b1c0d",      /* no dashes */
        "{190c5a2-7f3e-7c1a-9b2e-5d4f3a2b1c0}",
        " 190c5a2-7f3e-7c1a-9b2e-5d4f3a2b1c0d",
        "0190c5a2-7f3e-7c1a-9b2e-5d4f3a2b1c0 ",
        "-190c5a2-7f3e-7c1a-9b2e-5d4f3a2b1c0d",
        "0190c5a2--f3e-7c1a-9b2e-5d4f3a2b1c0d",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ag_id id;
        memset(&id, 0xee, sizeof id);
        if (ag_id_parse(bad[i], &id) != AG_EINVAL) fail_msg("\"%s\" accepted", bad[i]);
        for (int j = 0; j < 16; j++) assert_int_equal(id.b[j], 0xee); /* untouched */
    }
    ag_id id;
    assert_int_equal(ag_id_parse(NULL, &id), AG_EINVAL);
}

static void test_time_close_to_now(void **state)
{
    (void)state;
    uint64_t before = ag_wall_ms();
    ag_id id;
    ag_id_new(&id);
    uint64_t after = ag_wall_ms();
    uint64_t t = ag_id_time_ms(&id);
    /* The counter may borrow a millisecond or two on overflow. */
    assert_true(t + 5 >= before);
    assert_true(t <= after + 5);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

enum { N_ORDER = 10000 };

static void test_one_thread_strictly_increasing(void **state)
{
    (void)state;
    char(*ids)[AG_ID_LEN + 1] = calloc(N_ORDER, sizeof *ids);
    assert_non_null(ids);
    for (int i = 0; i < N_ORDER; i++) ag_id_new_str(ids[i]);
    for (int i = 1; i < N_ORDER; i++) {
        if (strcmp(ids[i - 1], ids[i]) >= 0)
            fail_msg("id %d \"%s\" is not after \"%s\"", i, ids[i], ids[i - 1]);
    }
    free(ids);
}

enum { N_THREAD = 20000 };

typedef struct gen {
    char (*ids)[AG_ID_LEN + 1];
} gen;

static void *gen_main(void *arg)
{
    gen *g = arg;
    for (int i = 0; i < N_THREAD; i++) ag_id_new_str(g->ids[i]);
    return NULL;
}

static void test_two_threads_unique(void **state)
{
    (void)state;
    char(*all)[AG_ID_LEN + 1] = calloc(2 * N_THREAD, sizeof *all);
    assert_non_null(all);
    gen g[2] = {{all}, {all + N_THREAD}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&t[i], NULL, gen_main, &g[i]), 0);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    qsort(all, 2 * N_THREAD, sizeof *all, cmp_str);
    for (int i = 1; i < 2 * N_THREAD; i++) {
        if (strcmp(all[i - 1], all[i]) == 0) fail_msg("duplicate id %s", all[i]);
        check_canonical(all[i]);
    }
    free(all);
}

/* Ids made one after another on different threads (the lock orders them)
 * sort in the order they were made, also within one millisecond: a
 * service makes ids on its loop and on every worker. */
typedef struct relay {
    pthread_mutex_t mu;
    int next;
    char (*ids)[AG_ID_LEN + 1];
} relay;

static void *relay_main(void *arg)
{
    relay *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        if (r->next == 2 * N_THREAD) {
            pthread_mutex_unlock(&r->mu);
            return NULL;
        }
        ag_id_new_str(r->ids[r->next++]);
        pthread_mutex_unlock(&r->mu);
    }
}

static void test_threads_in_creation_order(void **state)
{
    (void)state;
    relay r = {.next = 0};
    pthread_mutex_init(&r.mu, NULL);
    r.ids = calloc(2 * N_THREAD, sizeof *r.ids);
    assert_non_null(r.ids);
    pthread_t t[2];
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&t[i], NULL, relay_main, &r), 0);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    for (int i = 1; i < 2 * N_THREAD; i++) {
        if (strcmp(r.ids[i - 1], r.ids[i]) >= 0)
            fail_msg("id %d \"%s\" is not after \"%s\"", i, r.ids[i], r.ids[i - 1]);
    }
    free(r.ids);
    pthread_mutex_destroy(&r.mu);
}

static void test_token_ok(void **state)
{
    (void)state;
    assert_true(ag_id_token_ok("0190c5a2-7f3e-7c1a-9b2e-5d4f3a2b1c0d", 64));
    assert_true(ag_id_token_ok("p_1-A", 5));
    assert_false(ag_id_token_ok("p_1-AB", 5)); /* longer than max */
    assert_false(ag_id_token_ok("", 5));
    assert_false(ag_id_token_ok("../x", 64));
    assert_false(ag_id_token_ok("a b", 64));
    assert_false(ag_id_token_ok("a?x=1", 64));
    assert_false(ag_id_token_ok("caf\xc3\xa9", 64));
}

static void test_random_bytes(void **state)
{
    (void)state;
    unsigned char a[64], b[64];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    ag_random_bytes(a, sizeof a);
    ag_random_bytes(b, sizeof b);
    assert_memory_not_equal(a, b, sizeof a);
    int zeros = 0;
    for (size_t i = 0; i < sizeof a; i++) zeros += a[i] == 0;
    assert_true(zeros < 16);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version_and_variant),
        cmocka_unit_test(test_format_parse_round_trip),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_time_close_to_now),
        cmocka_unit_test(test_one_thread_strictly_increasing),
        cmocka_unit_test(test_two_threads_unique),
        cmocka_unit_test(test_threads_in_creation_order),
        cmocka_unit_test(test_token_ok),
        cmocka_unit_test(test_random_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
