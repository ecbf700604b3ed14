/* Unit tests of src/lib/core/pool.c: tasks on worker threads, the queue bound (AG_EBUSY), shutdown draining and AG_ESTATE after it. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

#include "agora/pool.h"

/* A gate that tasks wait on until the test opens it. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool open;
    int waiting; /* tasks currently blocked at the gate */
} gate;

static void gate_init(gate *g)
{
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->open = false;
    g->waiting = 0;
}

static void gate_destroy(gate *g)
{
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cond);
}

static void gate_pass(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->waiting++;
    pthread_cond_broadcast(&g->cond);
    while (!g->open) pthread_cond_wait(&g->cond, &g->mu);
    g->waiting--;
    pthread_mutex_unlock(&g->mu);
}

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->mu);
}

/* Waits until `n` tasks are blocked at the gate (at most 5 s). */
static bool gate_wait_for(gate *g, int n)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&g->mu);
    while (g->waiting < n)
        if (pthread_cond_timedwait(&g->cond, &g->mu, &until) != 0) break;
    bool ok = g->waiting >= n;
    pthread_mutex_unlock(&g->mu);
    return ok;
}

typedef struct ctx {
    ag_pool *pool;
    gate *gate;
    atomic_int ran;
    atomic_int on_worker;
    pthread_t main_thread;
    atomic_int on_main;
    atomic_int order[64];
    atomic_int norder;
} ctx;

typedef struct job {
    ctx *c;
    int id;
} job;

static void job_fn(void *arg)
{
    job *j = arg;
    ctx *c = j->c;
    if (ag_pool_is_worker(c->pool)) atomic_fetch_add(&c->on_worker, 1);
    if (pthread_equal(pthread_self(), c->main_thread)) atomic_fetch_add(&c->on_main, 1);
    if (c->gate) gate_pass(c->gate);
    int k = atomic_fetch_add(&c->norder, 1);
    if (k < 64) atomic_store(&c->order[k], j->id);
    atomic_fetch_add(&c->ran, 1);
}

static void test_new_rejects_bad_sizes(void **state)
{
    (void)state;
    ag_pool *p = (ag_pool *)0x1;
    assert_int_equal(ag_pool_new(0, 4, &p), AG_EINVAL);
    assert_int_equal(ag_pool_new(-1, 4, &p), AG_EINVAL);
    assert_int_equal(ag_pool_new(1, -1, &p), AG_EINVAL);
    assert_ptr_equal(p, (ag_pool *)0x1); /* untouched */
    assert_int_equal(ag_pool_new(1, 0, &p), 0);
    assert_int_equal(ag_pool_threads(p), 1);
    ag_pool_free(p);
    ag_pool_free(NULL);
}

static void test_tasks_run_on_workers(void **state)
{
    (void)state;
    ctx c = {0};
    c.main_thread = pthread_self();
    assert_int_equal(ag_pool_new(3, 64, &c.pool), 0);
    assert_int_equal(ag_pool_threads(c.pool), 3);
    assert_false(ag_pool_is_worker(c.pool)); /* the test thread is not one */
    job jobs[50];
    for (int i = 0; i < 50; i++) {
        jobs[i] = (job){&c, i};
        assert_int_equal(ag_pool_submit(c.pool, job_fn, &jobs[i]), 0);
    }
    ag_pool_shutdown(c.pool);
    assert_int_equal(atomic_load(&c.ran), 50);
    assert_int_equal(atomic_load(&c.on_worker), 50);
    assert_int_equal(atomic_load(&c.on_main), 0);
    ag_pool_free(c.pool);
}

static void test_is_worker_is_per_pool(void **state)
{
    (void)state;
    ctx c = {0};
    c.main_thread = pthread_self();
    ag_pool *other;
    assert_int_equal(ag_pool_new(1, 4, &c.pool), 0);
    assert_int_equal(ag_pool_new(1, 4, &other), 0);
    ctx c2 = c;
    c2.pool = other; /* jobs of pool 1 ask about pool 2 */
    job j = {&c2, 0};
    assert_int_equal(ag_pool_submit(c.pool, job_fn, &j), 0);
    ag_pool_shutdown(c.pool);
    assert_int_equal(atomic_load(&c2.ran), 1);
    assert_int_equal(atomic_load(&c2.on_worker), 0);
    ag_pool_free(c.pool);
    ag_pool_free(other);
}

static void test_bounded_queue(void **state)
{
    (void)state;
    /* One worker, room for two waiting tasks. The bound is queue_cap waiting
     * plus one per idle worker: with the worker busy, two more fit. */
    gate g;
    gate_init(&g);
    ctx c = {0};
    c.gate = &g;
    c.main_thread = pthread_self();
    assert_int_equal(ag_pool_new(1, 2, &c.pool), 0);
    job jobs[5];
    for (int i = 0; i < 5; i++) jobs[i] = (job){&c, i};

    assert_int_equal(ag_pool_submit(c.pool, job_fn, &jobs[0]), 0);
    assert_true(gate_wait_for(&g, 1)); /* the worker is now blocked in job 0 */
    assert_int_equal(ag_pool_running(c.pool), 1);
    assert_int_equal(ag_pool_queued(c.pool), 0);
    assert_int_equal(ag_pool_submit(c.pool, job_fn, &jobs[1]), 0);
    assert_int_equal(ag_pool_submit(c.pool, job_fn, &jobs[2]), 0);
    assert_int_equal(ag_pool_queued(c.pool), 2);
    /* The 4th submit is refused, and so is the 5th; refused tasks never run. */
    assert_int_equal(ag_pool_submit(c.pool, job_fn, &jobs[3]), AG_EBUSY);
    assert_int_equal(ag_pool_submit(c.pool, job_fn, &jobs[4]), AG_EBUSY);
    assert_int_equal(ag_pool_queued(c.pool), 2);

    gate_open(&g);
    ag_pool_shutdown(c.pool);
    assert_int_equal(atomic_load(&c.ran), 3);
    /* One worker: FIFO order. */
    assert_int_equal(atomic_load(&c.order[0]), 0);
    assert_int_equal(atomic_load(&c.order[1]), 1);
    assert_int_equal(atomic_load(&c.order[2]), 2);
    assert_int_equal(ag_pool_running(c.pool), 0);
    assert_int_equal(ag_pool_queued(c.pool), 0);
    ag_pool_free(c.pool);
    gate_destroy(&g);
}

static void test_bound_without_waiting_room(void **state)
{
    (void)state;
    /* queue_cap 0, two workers: only as many tasks as idle workers. */
    gate g;
    gate_init(&g);
    ctx c = {0};
    c.gate = &g;
    assert_int_equal(ag_pool_new(2, 0, &c.pool), 0);
    job jobs[3] = {{&c, 0}, {&c, 1}, {&c, 2}};
    assert_int_equal(ag_pool_submit(c.pool, job_fn, &jobs[0]), 0);
    assert_int_equal(ag_pool_submit(c.pool, job_fn, &jobs[1]), 0);
    assert_int_equal(ag_pool_submit(c.pool, job_fn, &jobs[2]), AG_EBUSY);
    assert_true(gate_wait_for(&g, 2));
    assert_int_equal(ag_pool_running(c.pool), 2);
    assert_int_equal(ag_pool_submit(c.pool, job_fn, &jobs[2]), AG_EBUSY);
    gate_open(&g);
    ag_pool_shutdown(c.pool);
    assert_int_equal(atomic_load(&c.ran), 2);
    ag_pool_free(c.pool);
    gate_destroy(&g);
}

static void test_shutdown_runs_queued_then_refuses(void **state)
{
    (void)state;
    gate g;
    gate_init(&g);
    ctx c = {0};
    c.gate = &g;
    assert_int_equal(ag_pool_new(1, 8, &c.pool), 0);
    job jobs[9];
    for (int i = 0; i < 9; i++) {
        jobs[i] = (job){&c, i};
        assert_int_equal(ag_pool_submit(c.pool, job_fn, &jobs[i]), 0);
    }
    assert_true(gate_wait_for(&g, 1));
    assert_int_equal(ag_pool_queued(c.pool), 8);
    /* Shutdown runs every queued task before it returns. */
    gate_open(&g);
    ag_pool_shutdown(c.pool);
    assert_int_equal(atomic_load(&c.ran), 9);
    for (int i = 0; i < 9; i++) assert_int_equal(atomic_load(&c.order[i]), i);
    job late = {&c, 99};
    assert_int_equal(ag_pool_submit(c.pool, job_fn, &late), AG_ESTATE);
    ag_pool_shutdown(c.pool); /* idempotent */
    assert_int_equal(atomic_load(&c.ran), 9);
    ag_pool_free(c.pool);
    gate_destroy(&g);
}

/* A task that submits another task to its own pool. */
typedef struct chain {
    ag_pool *pool;
    atomic_int left;
    atomic_int ran;
} chain;

static void chain_fn(void *arg)
{
    chain *ch = arg;
    atomic_fetch_add(&ch->ran, 1);
    if (atomic_fetch_sub(&ch->left, 1) > 1) (void)ag_pool_submit(ch->pool, chain_fn, ch);
}

static void test_submit_from_worker(void **state)
{
    (void)state;
    chain ch;
    atomic_init(&ch.left, 10);
    atomic_init(&ch.ran, 0);
    assert_int_equal(ag_pool_new(2, 4, &ch.pool), 0);
    assert_int_equal(ag_pool_submit(ch.pool, chain_fn, &ch), 0);
    for (int i = 0; i < 500 && atomic_load(&ch.ran) < 10; i++) usleep(2000);
    assert_int_equal(atomic_load(&ch.ran), 10);
    ag_pool_free(ch.pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_rejects_bad_sizes),
        cmocka_unit_test(test_tasks_run_on_workers),
        cmocka_unit_test(test_is_worker_is_per_pool),
        cmocka_unit_test(test_bounded_queue),
        cmocka_unit_test(test_bound_without_waiting_room),
        cmocka_unit_test(test_shutdown_runs_queued_then_refuses),
        cmocka_unit_test(test_submit_from_worker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
