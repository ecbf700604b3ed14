/*
 * loop.c — I/O threads, each with its own libuv loop (see agora/loop.h).
 *
 * Cross-thread work goes through a per-loop task queue guarded by a mutex and
 * a uv_async_t to wake the loop; the loop swaps the whole queue out under the
 * lock and runs it without holding it, so posters never wait on task bodies.
 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agora/log.h"
#include "agora/loop.h"
#include "agora/mem.h"

typedef struct task {
    ag_task_fn fn;
    void *arg;
} task;

struct ag_loop {
    uv_loop_t uv;
    uv_async_t wake;
    pthread_t thread;
    int index;
    bool thread_started;
    pthread_mutex_t mu;
    task *tasks; /* guarded by mu */
    size_t ntasks, cap;
    bool closed; /* guarded by mu: no more posts */
};

struct ag_loopset {
    int n;
    ag_loop **loops;
    bool started, stopped;
};

static _Thread_local ag_loop *t_current;

static void run_tasks(uv_async_t *h)
{
    ag_loop *l = h->data;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        task *batch = l->tasks;
        size_t n = l->ntasks;
        l->tasks = NULL;
        l->ntasks = l->cap = 0;
        pthread_mutex_unlock(&l->mu);
        if (n == 0) break;
        for (size_t i = 0; i < n; i++) batch[i].fn(batch[i].arg);
        ag_free(batch);
    }
}

static void stop_task(void *arg)
{
    ag_loop *l = arg;
    uv_stop(&l->uv);
}

static void *loop_main(void *arg)
{
    ag_loop *l = arg;
    t_current = l;
    uv_run(&l->uv, UV_RUN_DEFAULT);
    /* Tasks posted after the stop task never ran; run them so that owners of
     * their arguments still get called (they observe a stopping loop). */
    run_tasks(&l->wake);
    t_current = NULL;
    return NULL;
}

int ag_loopset_new(int n, ag_loopset **out)
{
    if (n <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 0 ? (int)cpus : 1;
    }
    ag_loopset *s = ag_calloc(1, sizeof *s);
    s->loops = ag_calloc((size_t)n, sizeof *s->loops);
    for (int i = 0; i < n; i++) {
        ag_loop *l = ag_calloc(1, sizeof *l);
        int rc = uv_loop_init(&l->uv);
        if (rc < 0) {
            ag_free(l);
            s->n = i;
            ag_loopset_free(s);
            return ag_err_from_errno(rc);
        }
        uv_async_init(&l->uv, &l->wake, run_tasks);
        l->wake.data = l;
        l->index = i;
        pthread_mutex_init(&l->mu, NULL);
        s->loops[i] = l;
    }
    s->n = n;
    *out = s;
    return 0;
}

int ag_loopset_size(const ag_loopset *s)
{
    return s->n;
}

ag_loop *ag_loopset_get(ag_loopset *s, int i)
{
    return i >= 0 && i < s->n ? s->loops[i] : NULL;
}

int ag_loopset_start(ag_loopset *s)
{
    if (s->started) return AG_ESTATE;
    for (int i = 0; i < s->n; i++) {
        ag_loop *l = s->loops[i];
        int rc = pthread_create(&l->thread, NULL, loop_main, l);
        if (rc != 0) {
            ag_error("cannot start loop thread", AG_FS("error", strerror(rc)));
            ag_loopset_stop(s);
            return AG_ESYS;
        }
        l->thread_started = true;
    }
    s->started = true;
    return 0;
}

static void close_leftover(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) {
        if (h->type != UV_ASYNC)
            ag_warn("loop stopped with an open handle", AG_FS("type", uv_handle_type_name(h->type)));
        uv_close(h, NULL);
    }
}

void ag_loopset_stop(ag_loopset *s)
{
    if (s->stopped) return;
    s->stopped = true;
    for (int i = 0; i < s->n; i++) {
        ag_loop *l = s->loops[i];
        if (l->thread_started) ag_loop_post(l, stop_task, l);
    }
    for (int i = 0; i < s->n; i++) {
        ag_loop *l = s->loops[i];
        if (l->thread_started) pthread_join(l->thread, NULL);
        pthread_mutex_lock(&l->mu);
        l->closed = true;
        pthread_mutex_unlock(&l->mu);
        run_tasks(&l->wake);
        uv_walk(&l->uv, close_leftover, NULL);
        uv_run(&l->uv, UV_RUN_DEFAULT);
        uv_loop_close(&l->uv);
    }
}

void ag_loopset_free(ag_loopset *s)
{
    if (!s) return;
    ag_loopset_stop(s);
    for (int i = 0; i < s->n; i++) {
        pthread_mutex_destroy(&s->loops[i]->mu);
        ag_free(s->loops[i]->tasks);
        ag_free(s->loops[i]);
    }
    ag_free(s->loops);
    ag_free(s);
}

uv_loop_t *ag_loop_uv(ag_loop *l)
{
    return &l->uv;
}

int ag_loop_index(const ag_loop *l)
{
    return l->index;
}

ag_loop *ag_loop_current(void)
{
    return t_current;
}

int ag_loop_post(ag_loop *l, ag_task_fn fn, void *arg)
{
    pthread_mutex_lock(&l->mu);
    if (l->closed) {
        pthread_mutex_unlock(&l->mu);
        return AG_ESTATE;
    }
    if (l->ntasks == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->tasks = ag_realloc(l->tasks, l->cap * sizeof *l->tasks);
    }
    l->tasks[l->ntasks++] = (task){fn, arg};
    pthread_mutex_unlock(&l->mu);
    uv_async_send(&l->wake);
    return 0;
}

int ag_listen_socket(const char *host, int port, int backlog)
{
    struct sockaddr_storage ss;
    if (!host || strcmp(host, "localhost") == 0) host = "127.0.0.1";
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
        return AG_EINVAL;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return ag_err_from_errno(-errno);
    int one = 1;
    /* SO_REUSEPORT: every loop binds its own socket to the same port and the
     * kernel balances accepted connections across them. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
        goto err;
    socklen_t len = ss.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                            : sizeof(struct sockaddr_in6);
    if (bind(fd, (struct sockaddr *)&ss, len) < 0) goto err;
    if (listen(fd, backlog > 0 ? backlog : 511) < 0) goto err;
    return fd;
err:;
    int e = errno;
    close(fd);
    return ag_err_from_errno(-e);
}

int ag_socket_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return ag_err_from_errno(-errno);
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return AG_EINVAL;
}
