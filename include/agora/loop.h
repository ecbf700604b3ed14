/*
 * loop.h — the I/O threads: one libuv loop per core.
 *
 * An ag_loopset owns N threads, each running its own uv_loop_t. Servers put a
 * listening socket on every loop, all bound to the same port with
 * SO_REUSEPORT so that the kernel spreads connections across them (libuv 1.44
 * has no flag for it, so ag_listen_socket sets it by hand before bind).
 * Work reaches a loop from other threads through ag_loop_post.
 *
 * Ownership: the loopset owns its loops; handles opened on a loop belong to
 * whoever opened them and must be closed before ag_loopset_stop.
 */
#ifndef AGORA_LOOP_H
#define AGORA_LOOP_H

#include <stdbool.h>
#include <uv.h>

#include "agora/error.h"

typedef void (*ag_task_fn)(void *arg);

typedef struct ag_loop ag_loop;
typedef struct ag_loopset ag_loopset;

/* Creates `n` loops (0: one per online CPU). Threads start with _start. */
int ag_loopset_new(int n, ag_loopset **out);
int ag_loopset_size(const ag_loopset *s);
ag_loop *ag_loopset_get(ag_loopset *s, int i);
/* Starts one thread per loop. */
int ag_loopset_start(ag_loopset *s);
/* Stops every loop and joins its thread. Handles still open are closed
 * without callbacks (a leak that the sanitizer run will name). Idempotent. */
void ag_loopset_stop(ag_loopset *s);
/* Stops if needed and frees the set. NULL is a no-op. */
void ag_loopset_free(ag_loopset *s);

uv_loop_t *ag_loop_uv(ag_loop *l);
int ag_loop_index(const ag_loop *l);
/* The loop whose thread is calling, or NULL on any other thread. */
ag_loop *ag_loop_current(void);
/* Runs fn(arg) on the loop's thread soon, in posting order. Thread-safe.
 * Returns AG_ESTATE when the loop has stopped (fn will not run). */
int ag_loop_post(ag_loop *l, ag_task_fn fn, void *arg);

/* Opens a non-blocking TCP socket with SO_REUSEADDR and SO_REUSEPORT, bound
 * to host:port and listening. Returns the fd or a negative AG_E* code. */
int ag_listen_socket(const char *host, int port, int backlog);
/* The local port of a bound socket, or a negative AG_E* code. */
int ag_socket_port(int fd);

#endif
