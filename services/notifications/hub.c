/*
 * hub.c — the push hub (hub.h): connections per loop and per user, the
 * per-user cap, catch-up reads on the worker pool, and the hand-over of
 * committed notifications from the bus thread to the loops.
 *
 * Shared state and its lock: the list of loops that have had a connection
 * and the per-user connection counts live under g_hub.mu (taken briefly by
 * loops at attach/detach and by the bus thread when it posts). A loop's
 * hub_loop (its connections, its user buckets) is touched only by that
 * loop's thread. A batch of notifications is shared by the loops it was
 * posted to and freed by the last one (an atomic count).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "hub.h"

#define MAX_LOOPS 256
#define BUCKETS 256
#define CATCHUP_PAGE 200 /* rows per catch-up read */
#define PENDING_MAX 1024 /* commits held per connection during a catch-up */

struct hub_loop {
    ag_loop *loop;
    hub_sub *all;
    hub_sub *users[BUCKETS];
};

typedef struct ucount {
    struct ucount *next;
    int n;
    char user[NT_USER_MAX];
} ucount;

static struct {
    pthread_mutex_t mu;
    hub_loop *loops[MAX_LOOPS];
    int nloops;
    ucount *counts[BUCKETS];
    atomic_long nconns;
} g_hub = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* A presence change's number (g_hub.mu held): microseconds of wall time,
 * forced to grow, so that a restart continues above what it numbered. */
static int64_t presence_seq(void)
{
    static int64_t last;
    int64_t now = (int64_t)ag_wall_ms() * 1000;
    last = now > last ? now : last + 1;
    return last;
}

static unsigned bucket_of(const char *user)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)user; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % BUCKETS;
}

/* The calling loop's state, made on its first connection. */
static hub_loop *loop_state(void)
{
    ag_loop *l = ag_loop_current();
    hub_loop *hl = NULL;
    pthread_mutex_lock(&g_hub.mu);
    for (int i = 0; i < g_hub.nloops; i++)
        if (g_hub.loops[i]->loop == l) hl = g_hub.loops[i];
    if (!hl && g_hub.nloops < MAX_LOOPS) {
        hl = ag_calloc(1, sizeof *hl);
        hl->loop = l;
        g_hub.loops[g_hub.nloops++] = hl;
    }
    pthread_mutex_unlock(&g_hub.mu);
    return hl;
}

/* ---- Lifecycle ------------------------------------------------------------------------- */

void hub_sub_init(hub_sub *s, const hub_sub_ops *ops)
{
    s->ops = ops;
    s->hl = loop_state();
    s->refs = 1;
    s->state = HS_NEW;
    s->attached = false;
    s->uprev = s->unext = NULL;
    s->user[0] = '\0';
    s->last_sent = 0;
    s->gen = 0;
    s->pending = NULL;
    s->npending = s->cap_pending = 0;
    s->overflow = false;
    s->q = NULL;
    s->qn = s->qpos = 0;
    s->q_full_page = s->q_is_pending = s->paused = false;
    s->prev = NULL;
    s->next = s->hl->all;
    if (s->next) s->next->prev = s;
    s->hl->all = s;
}

void hub_sub_ref(hub_sub *s)
{
    s->refs++;
}

static void pending_clear(hub_sub *s)
{
    nt_items_free(s->pending, s->npending);
    s->pending = NULL;
    s->npending = s->cap_pending = 0;
}

static void q_clear(hub_sub *s)
{
    nt_items_free(s->q, s->qn);
    s->q = NULL;
    s->qn = s->qpos = 0;
    s->q_full_page = s->q_is_pending = false;
}

void hub_sub_unref(hub_sub *s)
{
    if (--s->refs > 0) return;
    hub_detach(s);
    if (s->prev)
        s->prev->next = s->next;
    else
        s->hl->all = s->next;
    if (s->next) s->next->prev = s->prev;
    s->ops->release(s);
}

int hub_attach(hub_sub *s, const char *user, bool resume, int64_t since)
{
    if (s->attached) return AG_ESTATE;
    unsigned b = bucket_of(user);
    pthread_mutex_lock(&g_hub.mu);
    ucount *uc = g_hub.counts[b];
    while (uc && strcmp(uc->user, user) != 0)
        uc = uc->next;
    if (uc && uc->n >= g_nt.cfg.max_conns_per_user) {
        pthread_mutex_unlock(&g_hub.mu);
        return AG_EBUSY;
    }
    if (!uc) {
        uc = ag_calloc(1, sizeof *uc);
        snprintf(uc->user, sizeof uc->user, "%s", user);
        uc->next = g_hub.counts[b];
        g_hub.counts[b] = uc;
    }
    bool first = uc->n++ == 0;
    int64_t seq = first ? presence_seq() : 0;
    pthread_mutex_unlock(&g_hub.mu);
    if (first) nt_presence_changed(user, true, seq);
    atomic_fetch_add(&g_hub.nconns, 1);
    snprintf(s->user, sizeof s->user, "%s", user);
    s->attached = true;
    s->uprev = NULL;
    s->unext = s->hl->users[b];
    if (s->unext) s->unext->uprev = s;
    s->hl->users[b] = s;
    if (resume) {
        hub_resume(s, since);
    } else {
        s->state = HS_LIVE;
        s->last_sent = 0;
    }
    return 0;
}

void hub_detach(hub_sub *s)
{
    if (!s->attached) {
        s->state = HS_DEAD;
        return;
    }
    s->attached = false;
    s->state = HS_DEAD;
    pending_clear(s);
    q_clear(s);
    unsigned b = bucket_of(s->user);
    if (s->uprev)
        s->uprev->unext = s->unext;
    else
        s->hl->users[b] = s->unext;
    if (s->unext) s->unext->uprev = s->uprev;
    s->uprev = s->unext = NULL;
    atomic_fetch_sub(&g_hub.nconns, 1);
    pthread_mutex_lock(&g_hub.mu);
    ucount **pp = &g_hub.counts[b];
    while (*pp && strcmp((*pp)->user, s->user) != 0)
        pp = &(*pp)->next;
    bool last = false;
    int64_t seq = 0;
    if (*pp && --(*pp)->n == 0) {
        ucount *dead = *pp;
        *pp = dead->next;
        ag_free(dead);
        last = true;
        seq = presence_seq();
    }
    pthread_mutex_unlock(&g_hub.mu);
    if (last) nt_presence_changed(s->user, false, seq);
}

bool hub_user_online(const char *user)
{
    unsigned b = bucket_of(user);
    pthread_mutex_lock(&g_hub.mu);
    ucount *uc = g_hub.counts[b];
    while (uc && strcmp(uc->user, user) != 0)
        uc = uc->next;
    bool on = uc && uc->n > 0;
    pthread_mutex_unlock(&g_hub.mu);
    return on;
}

/* ---- Sending and catching up ----------------------------------------------------------- */

/* Sends one notification unless it was sent already: 0, AG_EBUSY (sent;
 * pause the catch-up), or < 0 when the connection is going away. */
static int send_one(hub_sub *s, const nt_item *it, bool catchup)
{
    if (s->state == HS_DEAD) return AG_ECLOSED;
    if (it->id == 0) return s->ops->deliver(s, it, catchup); /* ephemeral */
    if (it->id <= s->last_sent) return 0;
    int rc = s->ops->deliver(s, it, catchup);
    if (rc == 0 || rc == AG_EBUSY) s->last_sent = it->id;
    return rc;
}

typedef struct read_task {
    hub_sub *s;
    ag_loop *loop;
    unsigned gen;
    int64_t since;
    char user[NT_USER_MAX];
    nt_item *items;
    size_t n;
    int rc;
} read_task;

static void submit_read(hub_sub *s);

/* Sends what q holds, then moves on: another read, the held commits, or
 * LIVE. Stops when the owner asks to pause or the connection goes. */
static void catchup_continue(hub_sub *s)
{
    while (s->state == HS_CATCHUP && !s->paused) {
        if (s->qpos < s->qn) {
            nt_item *it = &s->q[s->qpos++];
            int rc = send_one(s, it, true);
            if (rc == AG_EBUSY) {
                s->paused = true;
                s->ops->wait_drain(s);
                return;
            }
            if (rc < 0) return;
            continue;
        }
        bool full = s->q_full_page;
        q_clear(s);
        if (full || s->overflow) {
            /* More rows may wait, or commits were dropped: read again. */
            pending_clear(s);
            s->overflow = false;
            submit_read(s);
            return;
        }
        if (s->npending == 0) {
            s->state = HS_LIVE;
            return;
        }
        /* The rows are out: now what came in meanwhile. */
        s->q = s->pending;
        s->qn = s->npending;
        s->pending = NULL;
        s->npending = s->cap_pending = 0;
        s->q_is_pending = true;
    }
}

int hub_paced(long long queued, bool catchup)
{
    if (queued < 0) return (int)queued;
    return catchup && (size_t)queued > g_nt.cfg.max_queue / 2 ? AG_EBUSY : 0;
}

static void drained(void *ud)
{
    hub_sub_drained(ud);
}

void hub_drain_on(hub_sub *s, ag_http_res *res)
{
    ag_res_on_drain(res, g_nt.cfg.max_queue / 4, drained, s);
}

void hub_sub_drained(hub_sub *s)
{
    if (!s->paused) return;
    s->paused = false;
    hub_sub_ref(s);
    catchup_continue(s);
    hub_sub_unref(s);
}

static void read_done(void *arg)
{
    read_task *t = arg;
    hub_sub *s = t->s;
    if (s->state == HS_CATCHUP && t->gen == s->gen) {
        if (t->rc < 0) {
            ag_error("catch-up read failed", AG_FERR(t->rc), AG_FS("userId", s->user));
            s->ops->fail(s, "cannot read your notifications right now");
        } else {
            q_clear(s);
            s->q = t->items;
            s->qn = t->n;
            s->q_full_page = t->n == CATCHUP_PAGE;
            t->items = NULL;
            t->n = 0;
            catchup_continue(s);
        }
    }
    nt_items_free(t->items, t->n);
    ag_free(t);
    hub_sub_unref(s);
}

static void read_work(void *arg)
{
    read_task *t = arg;
    ag_db *db;
    t->rc = ag_store_db(g_nt.store, &db);
    if (t->rc == 0) t->rc = nt_since(db, t->user, t->since, CATCHUP_PAGE, &t->items, &t->n);
    if (ag_loop_post(t->loop, read_done, t) < 0) {
        /* The loop has stopped: nobody is left to send to. */
        nt_items_free(t->items, t->n);
        ag_free(t);
    }
}

static void submit_read(hub_sub *s)
{
    read_task *t = ag_calloc(1, sizeof *t);
    t->s = s;
    t->loop = s->hl->loop;
    t->gen = s->gen;
    t->since = s->last_sent;
    snprintf(t->user, sizeof t->user, "%s", s->user);
    hub_sub_ref(s);
    if (ag_pool_submit(ag_service_pool(g_nt.svc), read_work, t) < 0) {
        ag_free(t);
        s->ops->fail(s, "the service is busy; reconnect shortly");
        hub_sub_unref(s);
    }
}

void hub_resume(hub_sub *s, int64_t since)
{
    if (!s->attached || s->state == HS_DEAD) return;
    s->state = HS_CATCHUP;
    s->last_sent = since;
    s->gen++;
    s->paused = false;
    q_clear(s);
    pending_clear(s);
    s->overflow = false;
    submit_read(s);
}

/* ---- From the bus thread to the loops --------------------------------------------------- */

typedef struct batch {
    atomic_int refs;
    size_t n;
    nt_item *items;
    char **users;
} batch;

typedef struct batch_post {
    hub_loop *hl;
    batch *b;
} batch_post;

static void batch_unref(batch *b)
{
    if (atomic_fetch_sub(&b->refs, 1) != 1) return;
    for (size_t i = 0; i < b->n; i++)
        ag_free(b->users[i]);
    ag_free(b->users);
    nt_items_free(b->items, b->n);
    ag_free(b);
}

static void hold(hub_sub *s, const nt_item *it)
{
    if (s->overflow) return;
    if (s->npending == PENDING_MAX) {
        pending_clear(s);
        s->overflow = true;
        return;
    }
    if (s->npending == s->cap_pending) {
        s->cap_pending = s->cap_pending ? s->cap_pending * 2 : 8;
        s->pending = ag_realloc(s->pending, s->cap_pending * sizeof *s->pending);
    }
    nt_item *p = &s->pending[s->npending++];
    *p = *it;
    p->json = ag_strndup(it->json, it->len);
}

static void batch_task(void *arg)
{
    batch_post *bp = arg;
    hub_loop *hl = bp->hl;
    batch *b = bp->b;
    ag_free(bp);
    for (size_t i = 0; i < b->n; i++) {
        const nt_item *it = &b->items[i];
        hub_sub *s = hl->users[bucket_of(b->users[i])];
        while (s) {
            hub_sub *next = s->unext;
            if (strcmp(s->user, b->users[i]) == 0) {
                hub_sub_ref(s);
                if (s->state == HS_LIVE)
                    send_one(s, it, false);
                else if (s->state == HS_CATCHUP && it->id > 0)
                    hold(s, it);
                /* `next` stays valid: only `s` can have left the chain. */
                hub_sub_unref(s);
            }
            s = next;
        }
    }
    batch_unref(b);
}

void hub_publish(const nt_item *items, const char *const *users, size_t n)
{
    if (n == 0) return;
    batch *b = ag_calloc(1, sizeof *b);
    b->n = n;
    b->items = ag_calloc(n, sizeof *b->items);
    b->users = ag_calloc(n, sizeof *b->users);
    for (size_t i = 0; i < n; i++) {
        b->items[i] = items[i];
        b->items[i].json = ag_strndup(items[i].json, items[i].len);
        b->users[i] = ag_strdup(users[i]);
    }
    atomic_init(&b->refs, 1); /* this function's, dropped below */
    pthread_mutex_lock(&g_hub.mu);
    for (int i = 0; i < g_hub.nloops; i++) {
        batch_post *bp = ag_malloc(sizeof *bp);
        bp->hl = g_hub.loops[i];
        bp->b = b;
        atomic_fetch_add(&b->refs, 1);
        if (ag_loop_post(bp->hl->loop, batch_task, bp) < 0) {
            ag_free(bp);
            atomic_fetch_sub(&b->refs, 1);
        }
    }
    pthread_mutex_unlock(&g_hub.mu);
    batch_unref(b);
}

/* ---- Stop -------------------------------------------------------------------------------- */

static void drain_task(void *arg)
{
    hub_loop *hl = arg;
    hub_sub *s = hl->all;
    while (s) {
        hub_sub_ref(s);
        s->ops->shutdown(s);
        hub_sub *next = s->next;
        hub_sub_unref(s);
        s = next;
    }
}

void hub_drain(void)
{
    pthread_mutex_lock(&g_hub.mu);
    for (int i = 0; i < g_hub.nloops; i++)
        ag_loop_post(g_hub.loops[i]->loop, drain_task, g_hub.loops[i]);
    pthread_mutex_unlock(&g_hub.mu);
}

double hub_connections(void *ud)
{
    return (double)atomic_load(&g_hub.nconns);
}

void hub_free(void)
{
    pthread_mutex_lock(&g_hub.mu);
    for (int i = 0; i < g_hub.nloops; i++)
        ag_free(g_hub.loops[i]);
    g_hub.nloops = 0;
    for (int b = 0; b < BUCKETS; b++) {
        while (g_hub.counts[b]) {
            ucount *dead = g_hub.counts[b];
            g_hub.counts[b] = dead->next;
            ag_free(dead);
        }
    }
    pthread_mutex_unlock(&g_hub.mu);
}
