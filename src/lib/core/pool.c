/*
 * pool.c — a fixed set of worker threads over a bounded ring of tasks
 * (see agora/pool.h). One mutex and one condition variable, `ready`, that
 * wakes workers when a task arrives or on shutdown. Submitters never wait: a
 * full queue is refused. A task counts as waiting until a worker takes it, so
 * the bound is queue_cap waiting plus one per idle worker. A task runs
 * with the trace context that was current where it was submitted
 * (agora/trace.h), so its spans and log lines belong to that request.
 */
#include <pthread.h>

#include "agora/log.h"
#include "agora/mem.h"
#include "agora/pool.h"
#include "agora/trace.h"

typedef struct task {
    ag_task_fn fn;
    void *arg;
    ag_trace_ctx trace; /* the submitter's current context, current in the task */
} task;

struct ag_pool {
    pthread_mutex_t mu;
    pthread_cond_t ready;
    task *ring;
    size_t cap, head, count; /* guarded by mu */
    size_t queue_cap;
    size_t running;     /* guarded by mu */
    bool shutting_down; /* guarded by mu */
    bool joined;
    int nthreads;
    pthread_t *threads;
};

static _Thread_local const ag_pool *t_pool;

static void *worker_main(void *arg)
{
    ag_pool *p = arg;
    t_pool = p;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->count == 0 && !p->shutting_down)
            pthread_cond_wait(&p->ready, &p->mu);
        if (p->count == 0) break; /* shutting down and drained */
        task t = p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        p->count--;
        p->running++;
        pthread_mutex_unlock(&p->mu);
        ag_trace_set_current(&t.trace);
        t.fn(t.arg);
        ag_trace_set_current(NULL);
        pthread_mutex_lock(&p->mu);
        p->running--;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int ag_pool_new(int threads, int queue_cap, ag_pool **out)
{
    if (threads < 1 || queue_cap < 0) return AG_EINVAL;
    ag_pool *p = ag_calloc(1, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->ready, NULL);
    p->queue_cap = (size_t)queue_cap;
    p->cap = (size_t)queue_cap + (size_t)threads;
    p->ring = ag_calloc(p->cap, sizeof *p->ring);
    p->threads = ag_calloc((size_t)threads, sizeof *p->threads);
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0) {
            ag_error("cannot start worker thread");
            p->nthreads = i;
            ag_pool_free(p);
            return AG_ESYS;
        }
        p->nthreads = i + 1;
    }
    *out = p;
    return 0;
}

int ag_pool_submit(ag_pool *p, ag_task_fn fn, void *arg)
{
    pthread_mutex_lock(&p->mu);
    if (p->shutting_down) {
        pthread_mutex_unlock(&p->mu);
        return AG_ESTATE;
    }
    if (p->count >= p->queue_cap + ((size_t)p->nthreads - p->running)) {
        pthread_mutex_unlock(&p->mu);
        return AG_EBUSY;
    }
    p->ring[(p->head + p->count) % p->cap] = (task){fn, arg, ag_trace_current()};
    p->count++;
    pthread_cond_signal(&p->ready);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

void ag_pool_shutdown(ag_pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->shutting_down = true;
    pthread_cond_broadcast(&p->ready);
    pthread_mutex_unlock(&p->mu);
    if (p->joined) return;
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    p->joined = true;
}

void ag_pool_free(ag_pool *p)
{
    if (!p) return;
    ag_pool_shutdown(p);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->ready);
    ag_free(p->ring);
    ag_free(p->threads);
    ag_free(p);
}

int ag_pool_threads(const ag_pool *p)
{
    return p->nthreads;
}

size_t ag_pool_queued(ag_pool *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->count;
    pthread_mutex_unlock(&p->mu);
    return n;
}

size_t ag_pool_running(ag_pool *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->running;
    pthread_mutex_unlock(&p->mu);
    return n;
}

int ag_pool_is_worker(const ag_pool *p)
{
    return t_pool == p;
}
