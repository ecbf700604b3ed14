/*
 * checks.c — agora-registry runs the health checks itself.
 *
 * One loop thread of its own (not the server's loops) ticks every 100 ms:
 * it starts the HTTP checks that are due on the asynchronous libcurl client
 * (at most MAX_INFLIGHT at once, never a thread per check), turns TTL checks
 * whose time ran out critical, and removes services that stayed critical
 * longer than their DeregisterCriticalServiceAfter. An HTTP answer of 2xx is
 * passing, 429 warning, anything else (or no answer within Timeout)
 * critical, as in Consul.
 *
 * A run finishes under g_reg.mu by looking its check up again by service id,
 * check id and generation: the service may have been re-registered or
 * removed while the request was out, and then the result is dropped.
 */
#include <stdlib.h>
#include <string.h>

#include "registry.h"

#define TICK_MS 100
#define MAX_INFLIGHT 64
#define MAX_OUTPUT 512

typedef struct run {
    char *svc_id, *check_id, *url;
    uint64_t gen;
    int status;
    ag_buf out;
    ag_http_op *op;
    struct run *prev, *next; /* g_runs: runs in flight */
} run;

static run *g_runs;

static ag_loopset *g_loops;
static ag_loop *g_loop;
static ag_http_client *g_http;
static uv_timer_t g_tick;
static int g_inflight;

static reg_check *find_check(const char *svc_id, const char *check_id, uint64_t gen, reg_svc **sp)
{
    reg_svc *s = reg_find(svc_id);
    for (int i = 0; s && i < s->nchecks; i++)
        if (s->checks[i].gen == gen && strcmp(s->checks[i].id, check_id) == 0) {
            *sp = s;
            return &s->checks[i];
        }
    return NULL;
}

/* Under g_reg.mu: records a result; true when the status changed. */
static bool set_status(reg_svc *s, reg_check *c, reg_status st, const char *output)
{
    ag_free(c->output);
    c->output = ag_strdup(output);
    if (c->status == st) return false;
    ag_info("check status changed", AG_FS("check", c->id), AG_FS("service", s->id),
            AG_FS("from", reg_status_name(c->status)), AG_FS("to", reg_status_name(st)));
    c->status = st;
    c->critical_since = st == REG_CRITICAL ? ag_wall_ms() : 0;
    c->modify_index = s->modify_index = reg_touch(s->name);
    return true;
}

static int on_head(void *ud, int status, const char *headers, size_t len)
{
    (void)headers;
    (void)len;
    ((run *)ud)->status = status;
    return AG_NEXT;
}

static int on_body(void *ud, const char *data, size_t len)
{
    run *r = ud;
    if (r->out.len < MAX_OUTPUT)
        ag_buf_append(&r->out, data, len < MAX_OUTPUT - r->out.len ? len : MAX_OUTPUT - r->out.len);
    return 0;
}

static void on_done(void *ud, int err)
{
    run *r = ud;
    g_inflight--;
    if (r->op) {
        if (r->prev)
            r->prev->next = r->next;
        else
            g_runs = r->next;
        if (r->next) r->next->prev = r->prev;
    }
    reg_status st;
    ag_buf msg;
    ag_buf_init(&msg, 0);
    if (err == AG_ECANCELED) {
        st = REG_CRITICAL; /* stopping: the result is not recorded */
    } else if (err < 0) {
        st = REG_CRITICAL;
        ag_buf_printf(&msg, "Get \"%s\": %s", r->url, ag_strerror(err));
    } else {
        st = r->status >= 200 && r->status < 300 ? REG_PASSING
             : r->status == 429                  ? REG_WARNING
                                                 : REG_CRITICAL;
        ag_buf_printf(&msg, "HTTP GET %s: %d %s Output: %.*s", r->url, r->status,
                      ag_http_reason(r->status), (int)r->out.len, r->out.data ? r->out.data : "");
    }
    bool changed = false;
    pthread_mutex_lock(&g_reg.mu);
    reg_svc *s;
    reg_check *c = find_check(r->svc_id, r->check_id, r->gen, &s);
    if (c) {
        c->running = false;
        if (err != AG_ECANCELED) changed = set_status(s, c, st, msg.data ? msg.data : "");
    }
    pthread_mutex_unlock(&g_reg.mu);
    if (changed) reg_changed();
    ag_buf_release(&msg);
    ag_buf_release(&r->out);
    ag_free(r->svc_id);
    ag_free(r->check_id);
    ag_free(r->url);
    ag_free(r);
}

static void start_run(run *r, uint64_t timeout_ms)
{
    static const ag_http_async_cbs cbs = {
        .on_head = on_head, .on_body = on_body, .on_done = on_done};
    ag_http_call call = {.method = "GET", .url = r->url, .timeout_ms = timeout_ms};
    ag_http_op *op;
    g_inflight++;
    int rc = ag_http_client_start(g_http, g_loop, &call, &cbs, r, &op);
    if (rc < 0) {
        on_done(r, rc);
        return;
    }
    r->op = op;
    r->next = g_runs;
    if (g_runs) g_runs->prev = r;
    g_runs = r;
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
    uint64_t now = ag_now_ms(), wall = ag_wall_ms();
    run *due[MAX_INFLIGHT];
    uint64_t timeouts[MAX_INFLIGHT];
    int ndue = 0;
    bool changed = false;
    pthread_mutex_lock(&g_reg.mu);
    for (int i = 0; i < g_reg.nsvcs; i++) {
        reg_svc *s = g_reg.svcs[i];
        for (int k = 0; k < s->nchecks; k++) {
            reg_check *c = &s->checks[k];
            if (c->http && !c->running && now >= c->next_run && g_inflight + ndue < MAX_INFLIGHT) {
                run *r = ag_calloc(1, sizeof *r);
                r->svc_id = ag_strdup(s->id);
                r->check_id = ag_strdup(c->id);
                r->url = ag_strdup(c->http);
                r->gen = c->gen;
                ag_buf_init(&r->out, 0);
                timeouts[ndue] = c->timeout_ms;
                due[ndue++] = r;
                c->running = true;
                c->next_run = now + c->interval_ms;
            }
            if (c->ttl_ms && now >= c->ttl_expires && c->status != REG_CRITICAL)
                changed |= set_status(s, c, REG_CRITICAL, "TTL expired");
        }
    }
    /* Reap services critical for longer than they allow. */
    for (int i = 0; i < g_reg.nsvcs;) {
        reg_svc *s = g_reg.svcs[i];
        bool reap = false;
        for (int k = 0; k < s->nchecks; k++) {
            reg_check *c = &s->checks[k];
            if (c->status == REG_CRITICAL && c->dereg_ms && c->critical_since &&
                wall - c->critical_since >= c->dereg_ms)
                reap = true;
        }
        if (reap) {
            ag_info("service deregistered: critical for too long", AG_FS("id", s->id));
            reg_remove_at(i);
            changed = true;
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&g_reg.mu);
    if (changed) reg_changed();
    for (int i = 0; i < ndue; i++)
        start_run(due[i], timeouts[i]);
}

static void start_on_loop(void *arg)
{
    (void)arg;
    uv_timer_init(ag_loop_uv(g_loop), &g_tick);
    uv_timer_start(&g_tick, on_tick, TICK_MS, TICK_MS);
}

int reg_checks_start(void)
{
    ag_http_client_opts o = {.connect_timeout_ms = 2000, .user_agent = "agora-registry"};
    int rc = ag_http_client_new(&o, &g_http);
    if (rc < 0) return rc;
    rc = ag_loopset_new(1, &g_loops);
    if (rc == 0) rc = ag_loopset_start(g_loops);
    if (rc < 0) {
        ag_loopset_free(g_loops);
        ag_http_client_free(g_http);
        return rc;
    }
    g_loop = ag_loopset_get(g_loops, 0);
    return ag_loop_post(g_loop, start_on_loop, NULL);
}

/* On the checker loop: cancel what runs, close the timer and the client's
 * per-loop state; then signal the main thread. */
static pthread_mutex_t g_smu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_scond = PTHREAD_COND_INITIALIZER;
static bool g_stopped;

static void stop_on_loop(void *arg)
{
    (void)arg;
    uv_timer_stop(&g_tick);
    uv_close((uv_handle_t *)&g_tick, NULL);
    while (g_runs)
        ag_http_op_cancel(g_runs->op); /* on_done unlinks it */
    ag_http_client_loop_release(g_http, g_loop);
    pthread_mutex_lock(&g_smu);
    g_stopped = true;
    pthread_cond_broadcast(&g_scond);
    pthread_mutex_unlock(&g_smu);
}

void reg_checks_stop(void *ud)
{
    (void)ud;
    if (!g_loops) return;
    if (ag_loop_post(g_loop, stop_on_loop, NULL) == 0) {
        pthread_mutex_lock(&g_smu);
        while (!g_stopped)
            pthread_cond_wait(&g_scond, &g_smu);
        pthread_mutex_unlock(&g_smu);
    }
    ag_loopset_free(g_loops);
    ag_http_client_free(g_http);
    g_loops = NULL;
}
