/*
 * pool.h — the bounded worker pool that runs request handlers.
 *
 * Handlers may block (SQL, outbound HTTP), so they run here rather than on an
 * I/O loop. The pool's size is the service's bulkhead: its queue has a hard
 * capacity and ag_pool_submit refuses work beyond it (the HTTP server answers
 * 503 with Retry-After), so load never queues without bound. libuv's own
 * threadpool is not used for this: it is process-global, its queue is
 * unbounded and its size is fixed by an environment variable at first use.
 */
#ifndef AGORA_POOL_H
#define AGORA_POOL_H

#include <stddef.h>

#include "agora/loop.h"

typedef struct ag_pool ag_pool;

/* `threads` workers (>= 1) and room for `queue_cap` waiting tasks (>= 0). */
int ag_pool_new(int threads, int queue_cap, ag_pool **out);
/* Queues fn(arg). AG_EBUSY when the queue is full, AG_ESTATE after shutdown;
 * on failure fn never runs and the caller keeps `arg`. Thread-safe. */
int ag_pool_submit(ag_pool *p, ag_task_fn fn, void *arg);
/* Stops taking work, runs what is queued, joins the threads. Idempotent. */
void ag_pool_shutdown(ag_pool *p);
/* Shuts down if needed and frees. NULL is a no-op. */
void ag_pool_free(ag_pool *p);

int ag_pool_threads(const ag_pool *p);
/* Tasks waiting, and tasks running, right now. */
size_t ag_pool_queued(ag_pool *p);
size_t ag_pool_running(ag_pool *p);
/* True on a thread of pool `p`. */
int ag_pool_is_worker(const ag_pool *p);

#endif
