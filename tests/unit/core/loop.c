/* Unit tests of src/lib/core/loop.c: loop threads, ag_loop_post ordering and thread, listening sockets with SO_REUSEPORT. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agora/log.h"
#include "agora/loop.h"

/* What posted tasks record, and a way to wait for them. */
typedef struct rec {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int n;
    int seq[4096];
    bool wrong_loop; /* a task ran where ag_loop_current() was not its loop */
    pthread_t threads[4096];
} rec;

typedef struct item {
    rec *r;
    ag_loop *loop;
    int value;
} item;

static void rec_init(rec *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cond, NULL);
}

static void rec_destroy(rec *r)
{
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cond);
}

static void record(void *arg)
{
    item *it = arg;
    rec *r = it->r;
    pthread_mutex_lock(&r->mu);
    if (ag_loop_current() != it->loop) r->wrong_loop = true;
    r->threads[r->n] = pthread_self();
    r->seq[r->n++] = it->value;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->mu);
}

static bool rec_wait(rec *r, int n)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&r->mu);
    while (r->n < n)
        if (pthread_cond_timedwait(&r->cond, &r->mu, &until) != 0) break;
    bool ok = r->n >= n;
    pthread_mutex_unlock(&r->mu);
    return ok;
}

static void test_loopset_basics(void **state)
{
    (void)state;
    ag_loopset *s;
    assert_int_equal(ag_loopset_new(3, &s), 0);
    assert_int_equal(ag_loopset_size(s), 3);
    for (int i = 0; i < 3; i++) {
        ag_loop *l = ag_loopset_get(s, i);
        assert_non_null(l);
        assert_int_equal(ag_loop_index(l), i);
        assert_non_null(ag_loop_uv(l));
    }
    assert_null(ag_loopset_get(s, 3));
    assert_null(ag_loopset_get(s, -1));
    assert_ptr_not_equal(ag_loopset_get(s, 0), ag_loopset_get(s, 1));
    assert_null(ag_loop_current()); /* the test thread runs no loop */
    assert_int_equal(ag_loopset_start(s), 0);
    assert_int_equal(ag_loopset_start(s), AG_ESTATE);
    ag_loopset_stop(s);
    ag_loopset_stop(s); /* idempotent */
    ag_loopset_free(s);
    ag_loopset_free(NULL);

    ag_loopset *dflt;
    assert_int_equal(ag_loopset_new(0, &dflt), 0); /* one per CPU */
    assert_true(ag_loopset_size(dflt) >= 1);
    ag_loopset_free(dflt); /* never started */
}

static void test_post_runs_in_order_on_loop(void **state)
{
    (void)state;
    enum { N = 2000 };
    static rec r;
    static item items[N];
    rec_init(&r);
    ag_loopset *s;
    assert_int_equal(ag_loopset_new(2, &s), 0);
    assert_int_equal(ag_loopset_start(s), 0);
    ag_loop *l = ag_loopset_get(s, 1);
    for (int i = 0; i < N; i++) {
        items[i] = (item){&r, l, i};
        assert_int_equal(ag_loop_post(l, record, &items[i]), 0);
    }
    assert_true(rec_wait(&r, N));
    assert_false(r.wrong_loop);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r.seq[i], i);
        assert_true(pthread_equal(r.threads[i], r.threads[0])); /* one thread */
    }
    assert_false(pthread_equal(r.threads[0], pthread_self()));
    ag_loopset_free(s);
    rec_destroy(&r);
}

static void test_loops_have_own_threads(void **state)
{
    (void)state;
    static rec r;
    static item items[2];
    rec_init(&r);
    ag_loopset *s;
    assert_int_equal(ag_loopset_new(2, &s), 0);
    assert_int_equal(ag_loopset_start(s), 0);
    for (int i = 0; i < 2; i++) {
        items[i] = (item){&r, ag_loopset_get(s, i), i};
        assert_int_equal(ag_loop_post(items[i].loop, record, &items[i]), 0);
    }
    assert_true(rec_wait(&r, 2));
    assert_false(r.wrong_loop); /* each saw its own loop as current */
    assert_false(pthread_equal(r.threads[0], r.threads[1]));
    ag_loopset_free(s);
    rec_destroy(&r);
}

static void test_post_before_start_runs_after(void **state)
{
    (void)state;
    static rec r;
    static item it;
    rec_init(&r);
    ag_loopset *s;
    assert_int_equal(ag_loopset_new(1, &s), 0);
    it = (item){&r, ag_loopset_get(s, 0), 7};
    assert_int_equal(ag_loop_post(it.loop, record, &it), 0);
    assert_int_equal(ag_loopset_start(s), 0);
    assert_true(rec_wait(&r, 1));
    assert_int_equal(r.seq[0], 7);
    assert_false(r.wrong_loop);
    ag_loopset_free(s);
    rec_destroy(&r);
}

typedef struct poster {
    ag_loop *loop;
    rec *r;
    item items[500];
    int base;
} poster;

static void *poster_main(void *arg)
{
    poster *p = arg;
    for (int i = 0; i < 500; i++) {
        p->items[i] = (item){p->r, p->loop, p->base + i};
        ag_loop_post(p->loop, record, &p->items[i]);
    }
    return NULL;
}

static void test_post_from_many_threads(void **state)
{
    (void)state;
    static rec r;
    static poster ps[4];
    rec_init(&r);
    ag_loopset *s;
    assert_int_equal(ag_loopset_new(1, &s), 0);
    assert_int_equal(ag_loopset_start(s), 0);
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        ps[i].loop = ag_loopset_get(s, 0);
        ps[i].r = &r;
        ps[i].base = i * 1000;
        assert_int_equal(pthread_create(&t[i], NULL, poster_main, &ps[i]), 0);
    }
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    assert_true(rec_wait(&r, 2000));
    /* Every task ran once, and each poster's tasks in its posting order. */
    int last[4] = {-1, -1, -1, -1};
    for (int i = 0; i < 2000; i++) {
        int who = r.seq[i] / 1000, k = r.seq[i] % 1000;
        assert_true(who >= 0 && who < 4);
        assert_int_equal(k, last[who] + 1);
        last[who] = k;
    }
    for (int i = 0; i < 4; i++) assert_int_equal(last[i], 499);
    ag_loopset_free(s);
    rec_destroy(&r);
}

static void noop(void *arg)
{
    (void)arg;
}

static void test_post_after_stop_refused(void **state)
{
    (void)state;
    ag_loopset *s;
    assert_int_equal(ag_loopset_new(1, &s), 0);
    assert_int_equal(ag_loopset_start(s), 0);
    ag_loop *l = ag_loopset_get(s, 0);
    ag_loopset_stop(s);
    assert_int_equal(ag_loop_post(l, noop, NULL), AG_ESTATE);
    ag_loopset_free(s);
}

static void test_listen_socket_any_port(void **state)
{
    (void)state;
    int fd = ag_listen_socket("127.0.0.1", 0, 16);
    assert_true(fd >= 0);
    int port = ag_socket_port(fd);
    assert_true(port > 0 && port < 65536);
    /* It really listens: a client can connect. */
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof a), 0);
    close(c);
    close(fd);

    /* "localhost" and NULL mean 127.0.0.1. */
    fd = ag_listen_socket("localhost", 0, 0);
    assert_true(fd >= 0);
    assert_true(ag_socket_port(fd) > 0);
    close(fd);
    fd = ag_listen_socket(NULL, 0, 0);
    assert_true(fd >= 0);
    close(fd);
}

static void test_listen_socket_reuseport(void **state)
{
    (void)state;
    int a = ag_listen_socket("127.0.0.1", 0, 16);
    assert_true(a >= 0);
    int port = ag_socket_port(a);
    int b = ag_listen_socket("127.0.0.1", port, 16);
    assert_true(b >= 0); /* same port, thanks to SO_REUSEPORT */
    assert_int_equal(ag_socket_port(b), port);
    assert_int_not_equal(a, b);
    close(b);
    close(a);
}

static void test_listen_socket_errors(void **state)
{
    (void)state;
    assert_int_equal(ag_listen_socket("not-an-address", 0, 16), AG_EINVAL);
    assert_int_equal(ag_listen_socket("300.1.2.3", 0, 16), AG_EINVAL);
    assert_int_equal(ag_listen_socket("", 0, 16), AG_EINVAL);
    /* A port held by a socket without SO_REUSEPORT cannot be shared. */
    int plain = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    assert_int_equal(bind(plain, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(listen(plain, 1), 0);
    socklen_t len = sizeof addr;
    getsockname(plain, (struct sockaddr *)&addr, &len);
    int rc = ag_listen_socket("127.0.0.1", ntohs(addr.sin_port), 16);
    assert_int_equal(rc, AG_EEXISTS);
    close(plain);
    assert_true(ag_socket_port(-1) < 0);
}

int main(void)
{
    ag_log_setup("looptest", AG_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loopset_basics),
        cmocka_unit_test(test_post_runs_in_order_on_loop),
        cmocka_unit_test(test_loops_have_own_threads),
        cmocka_unit_test(test_post_before_start_runs_after),
        cmocka_unit_test(test_post_from_many_threads),
        cmocka_unit_test(test_post_after_stop_refused),
        cmocka_unit_test(test_listen_socket_any_port),
        cmocka_unit_test(test_listen_socket_reuseport),
        cmocka_unit_test(test_listen_socket_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
