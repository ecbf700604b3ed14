/*
 * ratelimit.c — the token buckets of ratelimit.h, in memory and in Redis.
 *
 * Memory store: buckets in a hash table split into shards, each with its
 * own mutex, hash chains and an LRU list (most recent at the head). A shard
 * holds at most its share of max_keys; inserting into a full shard evicts its
 * least recently used bucket. A bucket that has refilled is the same as no
 * bucket, so evicting it loses nothing; each take also drops up to two such
 * buckets from the LRU tail, so the table tracks the clients active within a
 * refill time rather than everyone ever seen. Only a flood of distinct keys
 * within one refill time evicts a bucket still short of tokens ("early"),
 * which hands that client a fresh bucket: bounded memory wins over a perfect
 * count, and the metric shows it happening.
 *
 * Redis store: one hiredis connection per loop thread (rl_conn), found by the
 * loop pointer, created on that loop's first take and only touched there.
 * A take sends EVALSHA (EVAL until SCRIPT LOAD has answered, and again on
 * NOSCRIPT) and waits in the connection's FIFO of waiting requests; a timer
 * set to the oldest deadline answers late ones from memory. The request
 * itself (rl_req) stays owned by hiredis until its reply callback runs,
 * which hiredis guarantees, with a NULL reply when the connection goes.
 *
 *   IDLE --take, after retry_at--> RESOLVING (host is a name) --> CONNECTING
 *   IDLE --take, numeric host-------------------------------------> CONNECTING
 *   CONNECTING --connected--> READY --error, EOF, stall, release--> IDLE
 *   CONNECTING --refused, resolve error, connect timeout----------> IDLE
 *   (every way back to IDLE sets retry_at: backoff 100 ms doubling to 5 s,
 *    reset once connected)
 *
 * The connection is wired to the loop by io_attach below rather than by
 * <hiredis/adapters/libuv.h>: in hiredis 0.14 (Debian 12) that adapter drops
 * libuv's poll errors, and libuv reports a refused connect or a reset socket
 * only as an error (POLLERR) while stopping the poll. hiredis then never
 * looks at the socket again and the connection hangs until a timeout.
 *
 * While a reply is overdue (`suspect`) new takes are answered from memory at
 * once instead of queueing behind it; any reply clears it, and no reply for
 * the stall time drops the connection.
 */
#include <arpa/inet.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "agora/clock.h"
#include "agora/config.h"
#include "agora/log.h"
#include "agora/loop.h"
#include "agora/mem.h"
#include "ratelimit.h"

#define MAX_SHARDS 64
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define MAX_OUTSTANDING 10000 /* per connection; past it, answer from memory */
#define WARN_EVERY_MS 10000
#define REDIS_PREFIX "agora:rl:"

/* The token bucket, run by Redis on its own clock so that every replica sees
 * one bucket. KEYS[1]: the bucket (a hash: t = tokens, ts = last update in
 * microseconds of the server's TIME). ARGV: rate (tokens/s), burst. Returns
 * {allowed (0/1), tokens left as a string (Lua numbers in replies are cut to
 * integers)}. The key expires once the bucket would be full anyway. */
static const char LUA_BUCKET[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local rate = tonumber(ARGV[1])\n"
    "local burst = tonumber(ARGV[2])\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local b = redis.call('HMGET', KEYS[1], 't', 'ts')\n"
    "local tokens = tonumber(b[1])\n"
    "local ts = tonumber(b[2])\n"
    "if tokens == nil or ts == nil then\n"
    "  tokens = burst\n"
    "elseif now > ts then\n"
    "  tokens = tokens + (now - ts) * rate / 1000000\n"
    "else\n"
    "  now = ts\n" /* the server's clock stepped back: keep the bucket's time */
    "end\n"
    "if tokens > burst then tokens = burst end\n"
    "local allowed = 0\n"
    "if tokens >= 1 then\n"
    "  tokens = tokens - 1\n"
    "  allowed = 1\n"
    "end\n"
    "local left = string.format('%.6f', tokens)\n"
    "redis.call('HSET', KEYS[1], 't', left, 'ts', string.format('%.0f', now))\n"
    "local ttl = math.ceil((burst - tokens) / rate * 1000) + 1000\n"
    "if ttl > 31536000000 then ttl = 31536000000 end\n"
    "redis.call('PEXPIRE', KEYS[1], string.format('%.0f', ttl))\n"
    "return {allowed, left}\n";

/* ------------------------------------------------------------------ types -- */

typedef struct mbucket {
    struct mbucket *hnext;       /* hash chain */
    struct mbucket *prev, *next; /* LRU list */
    uint64_t hash;
    uint64_t ts_ms;
    double tokens, rate;
    int burst;
    size_t klen;
    char k[]; /* policy name, NUL, client key */
} mbucket;

typedef struct shard {
    pthread_mutex_t mu;
    mbucket **slots;
    size_t nslots, count, cap;
    mbucket lru; /* sentinel: lru.next most recent, lru.prev least recent */
} shard;

typedef enum conn_state { C_IDLE, C_RESOLVING, C_CONNECTING, C_READY } conn_state;

typedef struct rl_req rl_req;

typedef struct rl_conn {
    gw_ratelimit *rl;
    ag_loop *loop;
    uv_loop_t *uv;
    struct rl_conn *next; /* in rl->conns */
    redisAsyncContext *ac;
    conn_state state;
    bool connected; /* counted in the connected gauge */
    bool suspect;   /* a reply is overdue */
    bool closing;
    bool failed_before; /* log "reachable again" on the next connect */
    int refs;           /* timer + resolver: freed when both are done */
    uint64_t retry_at, backoff;
    uint64_t connect_deadline;
    uint64_t last_progress; /* last reply, or when the first one went out */
    int outstanding;        /* commands sent, reply not yet seen */
    uv_timer_t timer;
    uv_getaddrinfo_t gai;
    rl_req *wait_head, *wait_tail; /* sent, not yet answered; FIFO by deadline */
    char sha[41];
} rl_conn;

struct rl_req {
    rl_req *prev, *next; /* in wait list while not answered */
    rl_conn *c;
    gw_rl_cb cb;
    void *ud;
    double rate;
    int burst;
    bool answered, waiting;
    uint64_t deadline;
    size_t plen, klen;
    char *rkey;   /* Redis key: prefix, policy, ':', key */
    char names[]; /* policy NUL key NUL */
};

struct gw_ratelimit {
    bool redis;
    char *host;
    int port, db;
    uint64_t timeout_ms, stall_ms, connect_timeout_ms;
    size_t max_keys;
    uint64_t (*now_ms)(void *ud);
    void *now_ud;
    int nshards;
    shard shards[MAX_SHARDS];

    pthread_mutex_t conns_mu;
    rl_conn *conns;
    atomic_uint_fast64_t last_warn_ms;

    ag_metrics *metrics;
    ag_metric *m_requests;
    ag_series *m_keys, *m_evict_refilled, *m_evict_early, *m_connected;
    ag_metric *m_errors, *m_fallbacks;
};

/* --------------------------------------------------------------- results -- */

static long ceil_secs(double s)
{
    if (!(s > 1e-9)) return 0;
    if (s > 1e12) return 1000000000000L;
    return (long)ceil(s - 1e-9);
}

static void fill_result(gw_rl_result *r, bool allowed, double tokens, double rate, int burst,
                        bool degraded)
{
    if (tokens < 0) tokens = 0;
    if (tokens > burst) tokens = burst;
    r->allowed = allowed;
    r->limit = burst;
    r->remaining = (long)floor(tokens + 1e-9);
    r->reset_s = ceil_secs(((double)burst - tokens) / rate);
    r->retry_after_s = 0;
    if (!allowed) {
        r->retry_after_s = ceil_secs((1.0 - tokens) / rate);
        if (r->retry_after_s < 1) r->retry_after_s = 1;
        if (r->reset_s < r->retry_after_s) r->reset_s = r->retry_after_s;
    }
    r->degraded = degraded;
}

void gw_rl_headers_format(const gw_rl_result *r, const gw_rl_policy *p, gw_rl_headers *h)
{
    snprintf(h->limit, sizeof h->limit, "%ld", r->limit);
    snprintf(h->remaining, sizeof h->remaining, "%ld", r->remaining);
    snprintf(h->reset, sizeof h->reset, "%ld", r->reset_s);
    double rate = p && isfinite(p->rate) && p->rate > 1e-6 ? p->rate : 1e-6;
    snprintf(h->policy, sizeof h->policy, "%ld;w=%ld", r->limit,
             ceil_secs((double)r->limit / rate));
    if (r->allowed)
        h->retry_after[0] = '\0';
    else
        snprintf(h->retry_after, sizeof h->retry_after, "%ld", r->retry_after_s);
}

static void policy_values(const gw_rl_policy *p, double *rate, int *burst)
{
    *rate = isfinite(p->rate) && p->rate > 1e-6 ? p->rate : 1e-6;
    *burst = p->burst >= 1 ? p->burst : 1;
}

static void count_decision(gw_ratelimit *rl, const char *policy, bool allowed)
{
    const char *v[] = {policy, allowed ? "allowed" : "limited"};
    ag_series_inc(ag_metric_series(rl->m_requests, v), 1);
}

/* ---------------------------------------------------------- memory store -- */

static uint64_t default_now(void *ud)
{
    (void)ud;
    return ag_now_ms();
}

static uint64_t hash_key(const char *policy, size_t plen, const char *key, size_t klen)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < plen; i++)
        h = (h ^ (unsigned char)policy[i]) * 1099511628211ULL;
    h = (h ^ 0) * 1099511628211ULL;
    for (size_t i = 0; i < klen; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211ULL;
    /* mix the high bits down: shards use the low ones, slots the next ones */
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;
    return h;
}

static void lru_unlink(mbucket *b)
{
    b->prev->next = b->next;
    b->next->prev = b->prev;
}

static void lru_push_front(shard *s, mbucket *b)
{
    b->prev = &s->lru;
    b->next = s->lru.next;
    s->lru.next->prev = b;
    s->lru.next = b;
}

static bool refilled(const mbucket *b, uint64_t now)
{
    double dt = now > b->ts_ms ? (double)(now - b->ts_ms) : 0;
    return b->tokens + dt * b->rate / 1000.0 >= (double)b->burst;
}

/* Called with s->mu held. */
static void evict(gw_ratelimit *rl, shard *s, mbucket *b, uint64_t now)
{
    mbucket **pp = &s->slots[(b->hash >> 8) & (s->nslots - 1)];
    while (*pp != b)
        pp = &(*pp)->hnext;
    *pp = b->hnext;
    lru_unlink(b);
    s->count--;
    ag_series_add(rl->m_keys, -1);
    ag_series_inc(refilled(b, now) ? rl->m_evict_refilled : rl->m_evict_early, 1);
    ag_free(b);
}

static void grow(shard *s)
{
    size_t n = s->nslots * 2;
    mbucket **slots = ag_calloc(n, sizeof *slots);
    for (size_t i = 0; i < s->nslots; i++) {
        mbucket *b = s->slots[i];
        while (b) {
            mbucket *next = b->hnext;
            size_t j = (b->hash >> 8) & (n - 1);
            b->hnext = slots[j];
            slots[j] = b;
            b = next;
        }
    }
    ag_free(s->slots);
    s->slots = slots;
    s->nslots = n;
}

/* Takes a token from the in-memory bucket and fills r. Thread-safe. */
static void mem_take(gw_ratelimit *rl, const char *policy, size_t plen, const char *key,
                     size_t klen, double rate, int burst, bool degraded, gw_rl_result *r)
{
    uint64_t h = hash_key(policy, plen, key, klen);
    shard *s = &rl->shards[rl->nshards == 1 ? 0 : h % (uint64_t)rl->nshards];
    size_t len = plen + 1 + klen;

    pthread_mutex_lock(&s->mu);
    uint64_t now = rl->now_ms(rl->now_ud);
    mbucket *b = s->slots[(h >> 8) & (s->nslots - 1)];
    while (b && !(b->hash == h && b->klen == len && memcmp(b->k, policy, plen) == 0 &&
                  b->k[plen] == '\0' && memcmp(b->k + plen + 1, key, klen) == 0))
        b = b->hnext;
    if (b) {
        if (now > b->ts_ms) {
            b->tokens += (double)(now - b->ts_ms) * rate / 1000.0;
            b->ts_ms = now;
        }
        lru_unlink(b);
    } else {
        if (s->count >= s->cap) evict(rl, s, s->lru.prev, now);
        if (s->count >= s->nslots) grow(s);
        b = ag_malloc(sizeof *b + len);
        b->hash = h;
        b->klen = len;
        memcpy(b->k, policy, plen);
        b->k[plen] = '\0';
        memcpy(b->k + plen + 1, key, klen);
        b->tokens = burst;
        b->ts_ms = now;
        size_t i = (h >> 8) & (s->nslots - 1);
        b->hnext = s->slots[i];
        s->slots[i] = b;
        s->count++;
        ag_series_add(rl->m_keys, 1);
    }
    lru_push_front(s, b);
    b->rate = rate;
    b->burst = burst;
    if (b->tokens > burst) b->tokens = burst;
    bool allowed = b->tokens >= 1.0;
    if (allowed) b->tokens -= 1.0;
    fill_result(r, allowed, b->tokens, rate, burst, degraded);
    /* Drop buckets that have refilled from the cold end: they hold nothing. */
    for (int i = 0; i < 2; i++) {
        mbucket *old = s->lru.prev;
        if (old == &s->lru || old == b || !refilled(old, now)) break;
        evict(rl, s, old, now);
    }
    pthread_mutex_unlock(&s->mu);
}

size_t gw_ratelimit_mem_keys(gw_ratelimit *rl)
{
    size_t n = 0;
    for (int i = 0; i < rl->nshards; i++) {
        pthread_mutex_lock(&rl->shards[i].mu);
        n += rl->shards[i].count;
        pthread_mutex_unlock(&rl->shards[i].mu);
    }
    return n;
}

/* ------------------------------------------------------------- fallbacks -- */

static void warn_degraded(gw_ratelimit *rl, const char *reason, const char *detail)
{
    uint64_t now = ag_now_ms();
    uint_fast64_t last = atomic_load(&rl->last_warn_ms);
    if (last != 0 && now - last < WARN_EVERY_MS) return;
    if (!atomic_compare_exchange_strong(&rl->last_warn_ms, &last, now)) return;
    ag_warn("rate limiter: Redis unavailable, answering from memory", AG_FS("reason", reason),
            AG_FS("detail", detail ? detail : ""), AG_FS("host", rl->host),
            AG_FI("port", rl->port));
}

static void count_error(gw_ratelimit *rl, const char *kind)
{
    const char *v[] = {kind};
    ag_series_inc(ag_metric_series(rl->m_errors, v), 1);
}

/* Answers from memory: in Redis mode that is a fallback, counted and warned. */
static void answer_mem(gw_ratelimit *rl, const char *policy, size_t plen, const char *key,
                       size_t klen, double rate, int burst, const char *reason, gw_rl_cb cb,
                       void *ud)
{
    gw_rl_result r;
    mem_take(rl, policy, plen, key, klen, rate, burst, reason != NULL, &r);
    if (reason) {
        const char *v[] = {reason};
        ag_series_inc(ag_metric_series(rl->m_fallbacks, v), 1);
        warn_degraded(rl, reason, NULL);
    }
    count_decision(rl, policy, r.allowed);
    cb(ud, &r);
}

/* ------------------------------------------------------------ Redis: reqs -- */

static void wait_remove(rl_conn *c, rl_req *q)
{
    if (!q->waiting) return;
    if (q->prev)
        q->prev->next = q->next;
    else
        c->wait_head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        c->wait_tail = q->prev;
    q->prev = q->next = NULL;
    q->waiting = false;
}

static void req_answer_mem(gw_ratelimit *rl, rl_req *q, const char *reason)
{
    if (q->answered) return;
    q->answered = true;
    if (q->c) wait_remove(q->c, q);
    answer_mem(rl, q->names, q->plen, q->names + q->plen + 1, q->klen, q->rate, q->burst, reason,
               q->cb, q->ud);
}

static void conn_arm(rl_conn *c);
static void conn_fail(rl_conn *c, const char *kind, const char *detail);

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);

static int req_send(rl_conn *c, rl_req *q)
{
    char rate[32], burst[16];
    snprintf(rate, sizeof rate, "%.17g", q->rate);
    snprintf(burst, sizeof burst, "%d", q->burst);
    const char *argv[6];
    size_t lens[6];
    int argc = 0;
    if (c->sha[0]) {
        argv[argc] = "EVALSHA", lens[argc++] = 7;
        argv[argc] = c->sha, lens[argc++] = 40;
    } else {
        argv[argc] = "EVAL", lens[argc++] = 4;
        argv[argc] = LUA_BUCKET, lens[argc++] = sizeof LUA_BUCKET - 1;
    }
    argv[argc] = "1", lens[argc++] = 1;
    argv[argc] = q->rkey, lens[argc++] = strlen(q->rkey);
    argv[argc] = rate, lens[argc++] = strlen(rate);
    argv[argc] = burst, lens[argc++] = strlen(burst);
    if (redisAsyncCommandArgv(c->ac, on_reply, q, argc, argv, lens) != REDIS_OK) return AG_EIO;
    if (c->outstanding++ == 0) c->last_progress = ag_now_ms();
    return 0;
}

static void req_free(rl_req *q)
{
    ag_free(q);
}

static bool parse_reply(const redisReply *r, bool *allowed, double *tokens)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) return false;
    const redisReply *a = r->element[0], *t = r->element[1];
    if (a->type != REDIS_REPLY_INTEGER) return false;
    if (t->type == REDIS_REPLY_STRING) {
        char *end;
        *tokens = strtod(t->str, &end);
        if (end == t->str || *end != '\0' || !isfinite(*tokens)) return false;
    } else if (t->type == REDIS_REPLY_INTEGER) {
        *tokens = (double)t->integer;
    } else {
        return false;
    }
    *allowed = a->integer == 1;
    return true;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    rl_req *q = privdata;
    rl_conn *c = q->c;
    gw_ratelimit *rl = c->rl;
    redisReply *r = reply;
    c->outstanding--;
    if (r) {
        c->last_progress = ag_now_ms();
        c->suspect = false;
    }
    if (q->answered) {
        req_free(q);
        return;
    }
    if (!r) {
        /* the connection is going: hiredis hands back every pending request */
        req_answer_mem(rl, q, "unavailable");
        req_free(q);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        if (strncmp(r->str, "NOSCRIPT", 8) == 0 && c->sha[0]) {
            /* Redis restarted or flushed its scripts: EVAL loads it again. */
            c->sha[0] = '\0';
            if (c->ac && req_send(c, q) == 0) return;
        }
        count_error(rl, "reply");
        ag_warn("rate limiter: Redis error reply", AG_FS("error", r->str));
        req_answer_mem(rl, q, "error");
        req_free(q);
        return;
    }
    bool allowed;
    double tokens;
    if (!parse_reply(r, &allowed, &tokens)) {
        count_error(rl, "reply");
        req_answer_mem(rl, q, "error");
        req_free(q);
        return;
    }
    q->answered = true;
    wait_remove(c, q);
    gw_rl_result res;
    fill_result(&res, allowed, tokens, q->rate, q->burst, false);
    count_decision(rl, q->names, res.allowed);
    q->cb(q->ud, &res);
    req_free(q);
    (void)ac;
}

/* ------------------------------------------------------ Redis: the loop -- */

/* hiredis's event hooks on a uv_poll_t (see the top of the file for why not
 * the stock adapter). */
typedef struct rl_io {
    redisAsyncContext *ac; /* NULL once hiredis has let go */
    uv_poll_t poll;
    int events;
} rl_io;

static void io_cb(uv_poll_t *h, int status, int events)
{
    rl_io *io = h->data;
    /* On an error libuv has stopped the poll: let hiredis do what it waited
     * for; its read or write meets the socket's error and tears down. */
    int ev = status < 0 ? io->events : events;
    if (io->ac && (ev & UV_WRITABLE)) redisAsyncHandleWrite(io->ac);
    if (io->ac && (ev & UV_READABLE)) redisAsyncHandleRead(io->ac);
    if (status < 0 && io->ac && io->events) uv_poll_start(&io->poll, io->events, io_cb);
}

static void io_update(rl_io *io)
{
    if (io->events)
        uv_poll_start(&io->poll, io->events, io_cb);
    else
        uv_poll_stop(&io->poll);
}

static void io_add_read(void *p)
{
    rl_io *io = p;
    io->events |= UV_READABLE;
    io_update(io);
}

static void io_del_read(void *p)
{
    rl_io *io = p;
    io->events &= ~UV_READABLE;
    io_update(io);
}

static void io_add_write(void *p)
{
    rl_io *io = p;
    io->events |= UV_WRITABLE;
    io_update(io);
}

static void io_del_write(void *p)
{
    rl_io *io = p;
    io->events &= ~UV_WRITABLE;
    io_update(io);
}

static void io_closed(uv_handle_t *h)
{
    ag_free(h->data);
}

static void io_cleanup(void *p)
{
    rl_io *io = p;
    io->ac = NULL;
    uv_close((uv_handle_t *)&io->poll, io_closed);
}

static int io_attach(redisAsyncContext *ac, uv_loop_t *uv)
{
    rl_io *io = ag_calloc(1, sizeof *io);
    if (uv_poll_init(uv, &io->poll, ac->c.fd) < 0) {
        ag_free(io);
        return AG_EIO;
    }
    io->ac = ac;
    io->poll.data = io;
    ac->ev.data = io;
    ac->ev.addRead = io_add_read;
    ac->ev.delRead = io_del_read;
    ac->ev.addWrite = io_add_write;
    ac->ev.delWrite = io_del_write;
    ac->ev.cleanup = io_cleanup;
    return 0;
}

/* --------------------------------------------------------- Redis: conns -- */

static void conn_set_connected(rl_conn *c, bool on)
{
    if (c->connected == on) return;
    c->connected = on;
    ag_series_add(c->rl->m_connected, on ? 1 : -1);
}

static void conn_fail(rl_conn *c, const char *kind, const char *detail)
{
    gw_ratelimit *rl = c->rl;
    conn_set_connected(c, false);
    c->state = C_IDLE;
    c->suspect = false;
    if (c->closing) return;
    count_error(rl, kind);
    if (!c->backoff) c->backoff = BACKOFF_MIN_MS;
    /* up to a quarter more, so that replicas do not reconnect in step */
    uint64_t jitter = (ag_now_ns() / 1000) % (c->backoff / 4 + 1);
    c->retry_at = ag_now_ms() + c->backoff + jitter;
    c->backoff = c->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff * 2;
    c->failed_before = true;
    warn_degraded(rl, kind, detail);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    rl_conn *c = ac->data;
    if (!c || c->ac != ac) return;
    if (status != REDIS_OK) {
        c->ac = NULL; /* hiredis frees it after this callback */
        conn_fail(c, "connect", ac->errstr);
        return;
    }
    c->state = C_READY;
    c->backoff = 0;
    conn_set_connected(c, true);
    if (c->failed_before) {
        ag_info("rate limiter: Redis reachable again", AG_FS("host", c->rl->host),
                AG_FI("port", c->rl->port), AG_FI("loop", ag_loop_index(c->loop)));
        c->failed_before = false;
    }
    conn_arm(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    rl_conn *c = ac->data;
    if (!c || c->ac != ac) return; /* dropped by us: already accounted */
    c->ac = NULL;
    conn_fail(c, "disconnect", status == REDIS_OK ? "closed" : ac->errstr);
}

static void on_script_loaded(redisAsyncContext *ac, void *reply, void *privdata)
{
    rl_conn *c = privdata;
    redisReply *r = reply;
    c->outstanding--;
    if (!r) return;
    c->last_progress = ag_now_ms();
    c->suspect = false;
    if (r->type == REDIS_REPLY_STRING && r->len == 40) {
        memcpy(c->sha, r->str, 40);
        c->sha[40] = '\0';
    } else if (r->type == REDIS_REPLY_ERROR) {
        ag_warn("rate limiter: SCRIPT LOAD failed, using EVAL", AG_FS("error", r->str));
    }
    (void)ac;
}

static void on_selected(redisAsyncContext *ac, void *reply, void *privdata)
{
    rl_conn *c = privdata;
    redisReply *r = reply;
    c->outstanding--;
    if (!r) return;
    c->last_progress = ag_now_ms();
    if (r->type == REDIS_REPLY_ERROR) {
        count_error(c->rl, "reply");
        ag_error("rate limiter: Redis SELECT failed", AG_FS("error", r->str),
                 AG_FI("db", c->rl->db));
        redisAsyncDisconnect(ac); /* requests queued behind it answer from memory */
    }
}

/* Drops the connection from outside hiredis's callbacks: pending requests
 * get their NULL reply (answered from memory) before this returns. */
static void conn_drop(rl_conn *c, const char *kind, const char *detail)
{
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    conn_fail(c, kind, detail);
    if (ac) {
        ac->data = NULL; /* on_connect/on_disconnect: not ours any more */
        redisAsyncFree(ac);
    }
}

static void do_connect(rl_conn *c, const char *ip)
{
    gw_ratelimit *rl = c->rl;
    redisAsyncContext *ac = redisAsyncConnect(ip, rl->port);
    if (!ac || ac->err) {
        conn_fail(c, "connect", ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        return;
    }
    if (io_attach(ac, c->uv) < 0) {
        conn_fail(c, "connect", "cannot attach to the loop");
        redisAsyncFree(ac);
        return;
    }
    ac->data = c;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
    c->state = C_CONNECTING;
    c->connect_deadline = ag_now_ms() + rl->connect_timeout_ms;
    c->suspect = false;
    c->sha[0] = '\0';
    /* queued until connected, and answered before any take */
    if (rl->db != 0 && redisAsyncCommand(ac, on_selected, c, "SELECT %d", rl->db) == REDIS_OK)
        c->outstanding++;
    if (redisAsyncCommand(ac, on_script_loaded, c, "SCRIPT LOAD %s", LUA_BUCKET) == REDIS_OK)
        c->outstanding++;
    c->last_progress = ag_now_ms();
    conn_arm(c);
}

static void conn_unref(rl_conn *c)
{
    if (--c->refs == 0) ag_free(c);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    rl_conn *c = req->data;
    if (c->closing) {
        uv_freeaddrinfo(res);
        conn_unref(c);
        return;
    }
    conn_unref(c); /* the timer still holds one */
    char ip[INET6_ADDRSTRLEN] = "";
    if (status == 0 && res) {
        if (res->ai_family == AF_INET)
            uv_ip4_name((const struct sockaddr_in *)res->ai_addr, ip, sizeof ip);
        else if (res->ai_family == AF_INET6)
            uv_ip6_name((const struct sockaddr_in6 *)res->ai_addr, ip, sizeof ip);
    }
    uv_freeaddrinfo(res);
    if (!ip[0]) {
        conn_fail(c, "connect", status < 0 ? uv_strerror(status) : "no address");
        return;
    }
    do_connect(c, ip);
}

static bool is_numeric_host(const char *h)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

static void conn_connect(rl_conn *c)
{
    if (is_numeric_host(c->rl->host)) {
        do_connect(c, c->rl->host);
        return;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    c->gai.data = c;
    int rc = uv_getaddrinfo(c->uv, &c->gai, on_resolved, c->rl->host, NULL, &hints);
    if (rc < 0) {
        conn_fail(c, "connect", uv_strerror(rc));
        return;
    }
    c->refs++;
    c->state = C_RESOLVING;
}

static void on_timer(uv_timer_t *t)
{
    rl_conn *c = t->data;
    gw_ratelimit *rl = c->rl;
    uint64_t now = ag_now_ms();
    if (c->wait_head && c->wait_head->deadline <= now) {
        /* set first: a callback taking again must not queue behind these */
        c->suspect = true;
        count_error(rl, "timeout");
        while (c->wait_head && c->wait_head->deadline <= now)
            req_answer_mem(rl, c->wait_head, "timeout"); /* stays with hiredis */
    }
    if (c->ac && c->state == C_CONNECTING && now >= c->connect_deadline) {
        conn_drop(c, "connect", "connect timed out");
    } else if (c->ac && c->outstanding > 0 && now - c->last_progress >= rl->stall_ms) {
        conn_drop(c, "stalled", "no reply within the stall time");
    }
    conn_arm(c);
}

/* Sets the timer to the next thing to look at, or stops it. */
static void conn_arm(rl_conn *c)
{
    if (c->closing) return;
    uint64_t next = UINT64_MAX;
    if (c->wait_head) next = c->wait_head->deadline;
    if (c->ac && c->state == C_CONNECTING && c->connect_deadline < next) next = c->connect_deadline;
    if (c->ac && c->outstanding > 0 && c->last_progress + c->rl->stall_ms < next)
        next = c->last_progress + c->rl->stall_ms;
    if (next == UINT64_MAX) {
        uv_timer_stop(&c->timer);
        return;
    }
    uint64_t now = ag_now_ms();
    uv_timer_start(&c->timer, on_timer, next > now ? next - now : 0, 0);
}

static rl_conn *conn_for(gw_ratelimit *rl, ag_loop *loop, bool create)
{
    pthread_mutex_lock(&rl->conns_mu);
    rl_conn *c = rl->conns;
    while (c && c->loop != loop)
        c = c->next;
    if (!c && create) {
        c = ag_calloc(1, sizeof *c);
        c->rl = rl;
        c->loop = loop;
        c->uv = ag_loop_uv(loop);
        uv_timer_init(c->uv, &c->timer);
        c->timer.data = c;
        c->refs = 1;
        c->next = rl->conns;
        rl->conns = c;
    }
    pthread_mutex_unlock(&rl->conns_mu);
    return c;
}

static void on_timer_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

void gw_ratelimit_loop_release(gw_ratelimit *rl)
{
    ag_loop *loop = ag_loop_current();
    if (!rl || !rl->redis || !loop) return;
    rl_conn *c = conn_for(rl, loop, false);
    if (!c) return;
    /* Still listed while closing, so that a callback taking again is
     * answered from memory rather than opening a new connection. */
    c->closing = true;
    conn_set_connected(c, false);
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    if (ac) {
        ac->data = NULL;
        redisAsyncFree(ac); /* every waiting take is answered from memory */
    }
    while (c->wait_head)
        req_answer_mem(rl, c->wait_head, "unavailable");
    pthread_mutex_lock(&rl->conns_mu);
    rl_conn **pp = &rl->conns;
    while (*pp != c)
        pp = &(*pp)->next;
    *pp = c->next;
    pthread_mutex_unlock(&rl->conns_mu);
    if (c->state == C_RESOLVING) uv_cancel((uv_req_t *)&c->gai);
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

/* ------------------------------------------------------------------ take -- */

static void redis_take(gw_ratelimit *rl, ag_loop *loop, const char *policy, size_t plen,
                       const char *key, size_t klen, double rate, int burst, gw_rl_cb cb, void *ud)
{
    rl_conn *c = conn_for(rl, loop, true);
    uint64_t now = ag_now_ms();
    if (!c->closing && !c->ac && c->state == C_IDLE && now >= c->retry_at) conn_connect(c);
    const char *reason = NULL;
    if (c->closing || !c->ac)
        reason = c->state == C_RESOLVING ? "connecting" : "unavailable";
    else if (c->suspect)
        reason = "timeout";
    else if (c->outstanding >= MAX_OUTSTANDING)
        reason = "overload";
    if (reason) {
        answer_mem(rl, policy, plen, key, klen, rate, burst, reason, cb, ud);
        return;
    }
    size_t rlen = sizeof REDIS_PREFIX - 1 + plen + 1 + klen;
    rl_req *q = ag_calloc(1, sizeof *q + plen + 1 + klen + 1 + rlen + 1);
    q->c = c;
    q->cb = cb;
    q->ud = ud;
    q->rate = rate;
    q->burst = burst;
    q->plen = plen;
    q->klen = klen;
    memcpy(q->names, policy, plen);
    memcpy(q->names + plen + 1, key, klen);
    q->rkey = q->names + plen + 1 + klen + 1;
    memcpy(q->rkey, REDIS_PREFIX, sizeof REDIS_PREFIX - 1);
    memcpy(q->rkey + sizeof REDIS_PREFIX - 1, policy, plen);
    q->rkey[sizeof REDIS_PREFIX - 1 + plen] = ':';
    memcpy(q->rkey + sizeof REDIS_PREFIX + plen, key, klen);
    if (req_send(c, q) < 0) {
        ag_free(q);
        answer_mem(rl, policy, plen, key, klen, rate, burst, "unavailable", cb, ud);
        return;
    }
    q->deadline = now + rl->timeout_ms;
    q->waiting = true;
    q->prev = c->wait_tail;
    if (c->wait_tail)
        c->wait_tail->next = q;
    else
        c->wait_head = q;
    c->wait_tail = q;
    if (q == c->wait_head) conn_arm(c);
}

void gw_ratelimit_take(gw_ratelimit *rl, const char *key, const gw_rl_policy *p, gw_rl_cb cb,
                       void *ud)
{
    double rate;
    int burst;
    policy_values(p, &rate, &burst);
    const char *policy = p->name ? p->name : "";
    size_t plen = strlen(policy), klen = strlen(key);
    if (klen > GW_RL_MAX_KEY_LEN) klen = GW_RL_MAX_KEY_LEN;
    if (plen > GW_RL_MAX_KEY_LEN) plen = GW_RL_MAX_KEY_LEN;
    ag_loop *loop = rl->redis ? ag_loop_current() : NULL;
    if (loop) {
        redis_take(rl, loop, policy, plen, key, klen, rate, burst, cb, ud);
        return;
    }
    answer_mem(rl, policy, plen, key, klen, rate, burst, rl->redis ? "off_loop" : NULL, cb, ud);
}

/* -------------------------------------------------------------- lifecycle -- */

/* redis://host[:port][/db]; host may be [v6]. */
static int parse_url(gw_ratelimit *rl, const char *url)
{
    static const char scheme[] = "redis://";
    if (strncmp(url, scheme, sizeof scheme - 1) != 0) return AG_ECONFIG;
    const char *h = url + sizeof scheme - 1, *end;
    if (strpbrk(h, "@?#")) return AG_ECONFIG; /* no credentials or options (yet) */
    const char *hend;
    if (*h == '[') {
        hend = strchr(h, ']');
        if (!hend) return AG_ECONFIG;
        rl->host = ag_strndup(h + 1, (size_t)(hend - h - 1));
        end = hend + 1;
    } else {
        hend = h + strcspn(h, ":/");
        rl->host = ag_strndup(h, (size_t)(hend - h));
        end = hend;
    }
    if (!rl->host[0]) return AG_ECONFIG;
    rl->port = 6379;
    if (*end == ':') {
        char *e;
        long port = strtol(end + 1, &e, 10);
        if (e == end + 1 || port < 1 || port > 65535) return AG_ECONFIG;
        rl->port = (int)port;
        end = e;
    }
    rl->db = 0;
    if (*end == '/') {
        end++;
        if (*end) {
            char *e;
            long db = strtol(end, &e, 10);
            if (e == end || *e || db < 0 || db > 1000000) return AG_ECONFIG;
            rl->db = (int)db;
            end = e;
        }
    }
    return *end ? AG_ECONFIG : 0;
}

static void free_shards(gw_ratelimit *rl)
{
    for (int i = 0; i < rl->nshards; i++) {
        shard *s = &rl->shards[i];
        mbucket *b = s->lru.next;
        while (b && b != &s->lru) {
            mbucket *next = b->next;
            ag_free(b);
            b = next;
        }
        ag_free(s->slots);
        pthread_mutex_destroy(&s->mu);
    }
}

static void metrics_setup(gw_ratelimit *rl)
{
    ag_metrics *m = rl->metrics;
    const char *lr[] = {"policy", "outcome"};
    rl->m_requests =
        ag_metrics_family(m, AG_COUNTER, "agora_ratelimit_requests_total",
                          "Rate-limit decisions by policy and outcome.", 2, lr, NULL, 0);
    rl->m_keys = ag_metric_series(ag_metrics_family(m, AG_GAUGE, "agora_ratelimit_memory_keys",
                                                    "Token buckets held in the gateway's memory.",
                                                    0, NULL, NULL, 0),
                                  NULL);
    const char *le[] = {"state"};
    ag_metric *ev = ag_metrics_family(
        m, AG_COUNTER, "agora_ratelimit_evictions_total",
        "Buckets evicted from memory: refilled (lossless) or early (the store was full).", 1, le,
        NULL, 0);
    rl->m_evict_refilled = ag_metric_series(ev, (const char *[]){"refilled"});
    rl->m_evict_early = ag_metric_series(ev, (const char *[]){"early"});
    const char *lk[] = {"kind"};
    rl->m_errors = ag_metrics_family(
        m, AG_COUNTER, "agora_ratelimit_redis_errors_total",
        "Redis failures: connect, disconnect, stalled, timeout, reply.", 1, lk, NULL, 0);
    const char *lre[] = {"reason"};
    rl->m_fallbacks = ag_metrics_family(
        m, AG_COUNTER, "agora_ratelimit_fallbacks_total",
        "Decisions answered from memory while Redis is configured, by reason.", 1, lre, NULL, 0);
    rl->m_connected = ag_metric_series(
        ag_metrics_family(m, AG_GAUGE, "agora_ratelimit_redis_connections",
                          "Open Redis connections of the rate limiter (one per loop).", 0, NULL,
                          NULL, 0),
        NULL);
}

int gw_ratelimit_new_opts(const gw_rl_opts *o, gw_ratelimit **out)
{
    gw_rl_opts d = {0};
    if (!o) o = &d;
    uint64_t timeout = o->timeout_ms;
    if (!timeout) {
        if (ag_config_duration_ms("AGORA_RATELIMIT_TIMEOUT", GW_RL_DEFAULT_TIMEOUT_MS, &timeout) <
            0) {
            ag_error("rate limiter: bad configuration", AG_FS("detail", ag_config_last_error()));
            return AG_ECONFIG;
        }
        if (!timeout) timeout = 1;
    }
    size_t max_keys = o->max_keys;
    if (!max_keys) {
        long long n;
        if (ag_config_int("AGORA_RATELIMIT_MAX_KEYS", GW_RL_DEFAULT_MAX_KEYS, 1, 1000000000LL, &n) <
            0) {
            ag_error("rate limiter: bad configuration", AG_FS("detail", ag_config_last_error()));
            return AG_ECONFIG;
        }
        max_keys = (size_t)n;
    }
    gw_ratelimit *rl = ag_calloc(1, sizeof *rl);
    const char *url = o->url;
    if (url && strcmp(url, "memory") != 0) {
        rl->redis = true;
        if (parse_url(rl, url) < 0) {
            ag_error("rate limiter: expected \"memory\" or redis://host[:port][/db]",
                     AG_FS("url", url));
            ag_free(rl->host);
            ag_free(rl);
            return AG_ECONFIG;
        }
    } else {
        rl->host = ag_strdup("memory");
    }
    rl->timeout_ms = timeout;
    rl->stall_ms = timeout * 20 > 1000 ? timeout * 20 : 1000;
    rl->connect_timeout_ms = timeout * 20 > 1000 ? timeout * 20 : 1000;
    rl->max_keys = max_keys;
    rl->now_ms = default_now;
    /* Shards for concurrency once the table is big enough that a 64th of it
     * is still a useful LRU; one shard below that. Caps add up to max_keys. */
    rl->nshards = max_keys >= 64 * 16 ? MAX_SHARDS : 1;
    for (int i = 0; i < rl->nshards; i++) {
        shard *s = &rl->shards[i];
        pthread_mutex_init(&s->mu, NULL);
        s->cap =
            max_keys / (size_t)rl->nshards + ((size_t)i < max_keys % (size_t)rl->nshards ? 1 : 0);
        s->nslots = 16;
        s->slots = ag_calloc(s->nslots, sizeof *s->slots);
        s->lru.next = s->lru.prev = &s->lru;
    }
    pthread_mutex_init(&rl->conns_mu, NULL);
    rl->metrics = o->metrics ? o->metrics : ag_metrics_default();
    metrics_setup(rl);
    *out = rl;
    return 0;
}

int gw_ratelimit_new(const char *url, ag_metrics *m, gw_ratelimit **out)
{
    gw_rl_opts o = {.url = url, .metrics = m};
    return gw_ratelimit_new_opts(&o, out);
}

int gw_ratelimit_from_env(ag_metrics *m, gw_ratelimit **out)
{
    const char *url;
    if (ag_config_str("AGORA_RATELIMIT", "memory", &url) < 0) return AG_ECONFIG;
    return gw_ratelimit_new(url, m, out);
}

bool gw_ratelimit_is_redis(const gw_ratelimit *rl)
{
    return rl->redis;
}

void gw_ratelimit_set_clock(gw_ratelimit *rl, uint64_t (*now_ms)(void *ud), void *ud)
{
    rl->now_ms = now_ms ? now_ms : default_now;
    rl->now_ud = ud;
}

void gw_ratelimit_free(gw_ratelimit *rl)
{
    if (!rl) return;
    if (rl->conns)
        ag_error("rate limiter freed with open Redis connections; "
                 "call gw_ratelimit_loop_release on each loop first");
    ag_series_add(rl->m_keys, -(double)gw_ratelimit_mem_keys(rl));
    free_shards(rl);
    pthread_mutex_destroy(&rl->conns_mu);
    ag_free(rl->host);
    ag_free(rl);
}
