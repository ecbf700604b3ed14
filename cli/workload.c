/*
 * workload.c — the traffic of `agora chaos` and `agora soak`, its ledger and
 * the invariants (workload.h).
 *
 * Threads: one per shopper, chatter and browser, and the watcher (a
 * WebSocket). Each person belongs to one thread; the administrator is used
 * by the main thread only (set-up and check). The ledger is a few growing
 * arrays under one mutex: the workers append, the check reads once they
 * have stopped (the watcher last: it is stopped by the check once the pushes
 * it waits for have come, or the time is up).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agora/error.h"
#include "agora/id.h"
#include "agora/mem.h"
#include "tour.h"
#include "workload.h"

#define WL_PRODUCTS 3
#define WL_ORDER_RETRY_S 30 /* how long a customer tries to get an answer to one order */
#define WL_MAX_PEOPLE 64
#define WL_PASSWORD "workload-password-1"
#define WL_PAGE 100

/* A signed-in person; used by one thread at a time. */
typedef struct wl_person {
    tour t;
    char email[96];
    char password[64];
    uint64_t rnd; /* this person's random state (xorshift) */
} wl_person;

typedef struct wl_order {
    int customer;
    char id[48];
} wl_order;

typedef struct wl_message {
    char id[48]; /* "" when the send had no answer */
    char content[96];
} wl_message;

/* A growing array of fixed-size records. */
typedef struct wl_vec {
    void *items;
    size_t n, cap, size;
} wl_vec;

typedef struct job {
    struct workload *w;
    int i;
} job;

struct workload {
    cli_config *cfg;
    wl_opts o;
    char api[512];
    char ws_base[256];
    wl_person admin;
    wl_person *shoppers, *chatters, *browsers, watcher;
    char products[WL_PRODUCTS][48];
    char room[48];
    pthread_t *threads;
    job *jobs; /* one per thread, its argument: as long-lived as the threads */
    int nthreads;
    pthread_t watch_thread;
    bool watching;
    atomic_bool stop, stop_watch;

    pthread_mutex_t mu; /* everything below */
    wl_vec orders;      /* wl_order */
    wl_vec messages;    /* wl_message */
    wl_vec pushes;      /* char[48]: message ids as the watcher got them */
    wl_counts counts;
    char first_error[512];
    char first_given_up[256];
};

/* ---- Small things ------------------------------------------------------------------------- */

static void vec_init(wl_vec *v, size_t size)
{
    memset(v, 0, sizeof *v);
    v->size = size;
}

static void vec_push(wl_vec *v, const void *item)
{
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        v->items = ag_realloc(v->items, v->cap * v->size);
    }
    memcpy((char *)v->items + v->n * v->size, item, v->size);
    v->n++;
}

static void *vec_at(const wl_vec *v, size_t i)
{
    return (char *)v->items + i * v->size;
}

static uint64_t next_rand(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* A number in [0, 1). */
static double uniform(uint64_t *s)
{
    return (double)(next_rand(s) >> 11) / (double)(1ull << 53);
}

static void pause_jittered(wl_person *p, double mean_s)
{
    if (mean_s <= 0) return;
    tour_pause_ms((long)(mean_s * (0.5 + uniform(&p->rnd)) * 1000.0));
}

/* Notes the first answer no retry could mend, for the summary. */
static void note_error(workload *w, const char *what, const answer *a)
{
    char why[256];
    pthread_mutex_lock(&w->mu);
    w->counts.errors++;
    if (!w->first_error[0])
        snprintf(w->first_error, sizeof w->first_error, "%s: %s", what,
                 tour_why(a, why, sizeof why));
    pthread_mutex_unlock(&w->mu);
}

static bool transient(const answer *a)
{
    return a->status < 0 || a->status >= 500;
}

/* ---- Calls as a person --------------------------------------------------------------------- */

static int sign_in(wl_person *p)
{
    json_t *body = json_pack("{s:s, s:s}", "email", p->email, "password", p->password);
    answer a;
    p->t.token[0] = '\0';
    tour_call(&p->t, "POST", "/auth/login", body, NULL, true, &a);
    json_decref(body);
    const char *token = tour_str(tour_data(&a), "token");
    int rc = a.status == 200 && *token ? 0 : AG_EAUTH;
    if (rc == 0) {
        snprintf(p->t.token, sizeof p->t.token, "%s", token);
        snprintf(p->t.user, sizeof p->t.user, "%s",
                 tour_str(json_object_get(tour_data(&a), "user"), "id"));
    }
    tour_answer_release(&a);
    return rc;
}

/* One call; a 401 (a token that expired during a long run) signs in again
 * and tries once more. */
static void call(wl_person *p, const char *method, const char *path, json_t *body,
                 const char *const *extra, answer *a)
{
    tour_call(&p->t, method, path, body, extra, true, a);
    if (a->status == 401 && p->password[0] && sign_in(p) == 0) {
        tour_answer_release(a);
        tour_call(&p->t, method, path, body, extra, true, a);
    }
}

/* A read that is tried again while the answer is a 5xx or none, for up to
 * `budget_s`. */
static void read_until(wl_person *p, const char *path, double budget_s, answer *a)
{
    double end = tour_now_s() + budget_s;
    for (;;) {
        call(p, "GET", path, NULL, NULL, a);
        if (!transient(a) || tour_now_s() > end) return;
        tour_answer_release(a);
        tour_pause_ms(250);
    }
}

static int make_person(workload *w, wl_person *p, const char *role, int i)
{
    char id[AG_ID_LEN + 1], name[40];
    ag_id_new_str(id);
    snprintf(name, sizeof name, "%s%d%.6s", role, i, id + 26);
    snprintf(p->email, sizeof p->email, "%s@workload.test", name);
    snprintf(p->password, sizeof p->password, "%s", WL_PASSWORD);
    snprintf(p->t.api, sizeof p->t.api, "%s", w->api);
    p->rnd = w->o.seed * 1000003u + (uint64_t)i * 7919u + (uint64_t)role[0];
    json_t *body =
        json_pack("{s:s, s:s, s:s}", "username", name, "email", p->email, "password", p->password);
    answer a;
    double end = tour_now_s() + 30;
    for (;;) {
        call(p, "POST", "/auth/register", body, NULL, &a);
        if (!transient(&a) || tour_now_s() > end) break;
        tour_answer_release(&a);
        tour_pause_ms(250);
    }
    json_decref(body);
    const char *token = tour_str(tour_data(&a), "token");
    if (a.status != 201 || !*token) {
        char why[256];
        fprintf(stderr, "agora: registering %s: %s\n", p->email, tour_why(&a, why, sizeof why));
        tour_answer_release(&a);
        return AG_EPROTO;
    }
    snprintf(p->t.token, sizeof p->t.token, "%s", token);
    snprintf(p->t.user, sizeof p->t.user, "%s",
             tour_str(json_object_get(tour_data(&a), "user"), "id"));
    tour_answer_release(&a);
    return 0;
}

/* ---- Set-up -------------------------------------------------------------------------------- */

static int make_products(workload *w)
{
    answer a;
    json_t *body = json_pack("{s:s, s:s}", "name", "Workload", "slug", "workload");
    call(&w->admin, "POST", "/categories", body, NULL, &a); /* 409 when it exists */
    json_decref(body);
    tour_answer_release(&a);
    for (int i = 0; i < WL_PRODUCTS; i++) {
        char name[64], id[AG_ID_LEN + 1];
        ag_id_new_str(id);
        snprintf(name, sizeof name, "Workload item %d %.6s", i + 1, id + 26);
        body = json_pack("{s:s, s:s, s:s, s:i, s:i}", "name", name, "description",
                         "made by agora chaos or agora soak", "category", "workload", "priceCents",
                         500 + 250 * i, "stock", w->o.stock);
        call(&w->admin, "POST", "/products", body, NULL, &a);
        json_decref(body);
        if (a.status != 201) {
            char why[256];
            fprintf(stderr, "agora: making a product: %s\n", tour_why(&a, why, sizeof why));
            tour_answer_release(&a);
            return AG_EPROTO;
        }
        snprintf(w->products[i], sizeof w->products[i], "%s", tour_str(tour_data(&a), "id"));
        tour_answer_release(&a);
        /* inventory learns of it from product.created */
        char path[128];
        snprintf(path, sizeof path, "/inventory/%s", w->products[i]);
        double end = tour_now_s() + 30;
        for (;;) {
            call(&w->admin, "GET", path, NULL, NULL, &a);
            int st = a.status;
            tour_answer_release(&a);
            if (st == 200) break;
            if (tour_now_s() > end) {
                fprintf(stderr, "agora: inventory has no stock for %s after 30 s (last %d)\n",
                        w->products[i], st);
                return AG_ETIMEDOUT;
            }
            tour_pause_ms(200);
        }
    }
    return 0;
}

static int make_room(workload *w)
{
    if (w->o.chatters <= 0) return 0;
    answer a;
    json_t *body = json_pack("{s:s, s:s, s:b}", "name", "Workload room", "description",
                             "made by agora chaos or agora soak", "isPrivate", 1);
    call(&w->chatters[0], "POST", "/rooms", body, NULL, &a);
    json_decref(body);
    if (a.status != 201) {
        char why[256];
        fprintf(stderr, "agora: making the room: %s\n", tour_why(&a, why, sizeof why));
        tour_answer_release(&a);
        return AG_EPROTO;
    }
    snprintf(w->room, sizeof w->room, "%s", tour_str(tour_data(&a), "id"));
    tour_answer_release(&a);
    char path[128];
    snprintf(path, sizeof path, "/rooms/%s/members", w->room);
    for (int i = 1; i <= w->o.chatters; i++) {
        wl_person *p = i < w->o.chatters ? &w->chatters[i] : &w->watcher;
        body = json_pack("{s:s}", "userId", p->t.user);
        call(&w->chatters[0], "POST", path, body, NULL, &a);
        json_decref(body);
        int st = a.status;
        if (st != 201) {
            char why[256];
            fprintf(stderr, "agora: inviting to the room: %s\n", tour_why(&a, why, sizeof why));
        }
        tour_answer_release(&a);
        if (st != 201) return AG_EPROTO;
    }
    return 0;
}

int wl_setup(workload **out, cli_config *cfg, const wl_opts *o)
{
    *out = NULL;
    cli_component *gw = cli_config_find(cfg, "gateway");
    if (!gw) {
        fprintf(stderr, "agora: the traffic goes through the gateway, and %s has none\n",
                cfg->path);
        return AG_EINVAL;
    }
    if (o->shoppers + o->chatters + o->browsers + 1 > WL_MAX_PEOPLE) {
        fprintf(stderr, "agora: at most %d people in all\n", WL_MAX_PEOPLE - 1);
        return AG_EINVAL;
    }
    const char *email = cli_config_env(cfg, "AGORA_ADMIN_EMAIL");
    const char *password = getenv("AGORA_ADMIN_PASSWORD");
    if (!password) password = cli_config_env(cfg, "AGORA_ADMIN_PASSWORD");
    if (!email || !password) {
        fprintf(stderr, "agora: AGORA_ADMIN_EMAIL and AGORA_ADMIN_PASSWORD are not in %s\n",
                cfg->path);
        return AG_EINVAL;
    }
    workload *w = ag_calloc(1, sizeof *w);
    w->cfg = cfg;
    w->o = *o;
    snprintf(w->api, sizeof w->api, "%s/api/v1", gw->url);
    snprintf(w->ws_base, sizeof w->ws_base, "%s", gw->url);
    pthread_mutex_init(&w->mu, NULL);
    vec_init(&w->orders, sizeof(wl_order));
    vec_init(&w->messages, sizeof(wl_message));
    vec_init(&w->pushes, 48);
    w->shoppers = ag_calloc((size_t)o->shoppers + 1, sizeof(wl_person));
    w->chatters = ag_calloc((size_t)o->chatters + 1, sizeof(wl_person));
    w->browsers = ag_calloc((size_t)o->browsers + 1, sizeof(wl_person));
    *out = w;

    snprintf(w->admin.t.api, sizeof w->admin.t.api, "%s", w->api);
    snprintf(w->admin.email, sizeof w->admin.email, "%s", email);
    snprintf(w->admin.password, sizeof w->admin.password, "%s", password);
    if (sign_in(&w->admin) != 0) {
        fprintf(stderr,
                "agora: cannot sign in as %s through %s: is everything up? "
                "(agora status)\n",
                email, w->api);
        return AG_EAUTH;
    }
    int rc = make_products(w);
    for (int i = 0; rc == 0 && i < o->shoppers; i++)
        rc = make_person(w, &w->shoppers[i], "shopper", i);
    for (int i = 0; rc == 0 && i < o->chatters; i++)
        rc = make_person(w, &w->chatters[i], "chatter", i);
    for (int i = 0; rc == 0 && i < o->browsers; i++)
        rc = make_person(w, &w->browsers[i], "browser", i);
    if (rc == 0 && o->chatters > 0) rc = make_person(w, &w->watcher, "watcher", 0);
    if (rc == 0) rc = make_room(w);
    return rc;
}

/* ---- The workers --------------------------------------------------------------------------- */

/* What a customer pays with: mostly a wallet or a good card; now and then an
 * empty wallet or the declined test card, so that some sagas compensate. */
static json_t *payment_method(wl_person *p)
{
    double kind = uniform(&p->rnd);
    char wallet[64];
    if (kind < 0.6 || (kind >= 0.8 && kind < 0.9)) {
        snprintf(wallet, sizeof wallet, "%s%.8s", kind < 0.6 ? "w-" : "empty-", p->t.user);
        return json_pack("{s:s, s:s}", "type", "wallet", "walletId", wallet);
    }
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    return json_pack("{s:s, s:s, s:i, s:i, s:s}", "type", "card", "number",
                     kind < 0.8 ? "4242424242424242" : "4000000000000002", "expMonth", 12,
                     "expYear", tm.tm_year + 1900 + 2, "cvc", "123");
}

static json_t *order_body(workload *w, wl_person *p)
{
    json_t *method = payment_method(p);
    const char *product = w->products[next_rand(&p->rnd) % WL_PRODUCTS];
    int qty = 1 + (int)(next_rand(&p->rnd) % 2);
    return json_pack("{s:[{s:s, s:i}], s:{s:s, s:s, s:s, s:s, s:s}, s:o}", "items", "productId",
                     product, "quantity", qty, "shippingAddress", "name", "Workload Person",
                     "line1", "1 Test Street", "city", "Testville", "postalCode", "12345",
                     "country", "GB", "paymentMethod", method);
}

/* One order, tried until it gets an answer: the same Idempotency-Key each
 * time, so that however many tries reach orders, it is one order. */
static void *shopper(void *arg)
{
    job *j = arg;
    workload *w = j->w;
    wl_person *p = &w->shoppers[j->i];
    while (!atomic_load(&w->stop)) {
        json_t *body = order_body(w, p);
        char idem[AG_ID_LEN + 1], key[AG_ID_LEN + 32];
        ag_id_new_str(idem);
        snprintf(key, sizeof key, "Idempotency-Key: %s", idem);
        const char *headers[] = {key, NULL};
        double end = tour_now_s() + WL_ORDER_RETRY_S;
        answer a;
        for (;;) {
            call(p, "POST", "/orders", body, headers, &a);
            if (!transient(&a) || tour_now_s() > end) break;
            tour_answer_release(&a);
            tour_pause_ms(200);
        }
        json_decref(body);
        pthread_mutex_lock(&w->mu);
        if (a.status == 201) {
            wl_order o = {.customer = j->i};
            snprintf(o.id, sizeof o.id, "%s", tour_str(tour_data(&a), "id"));
            vec_push(&w->orders, &o);
            w->counts.orders_accepted++;
        } else if (transient(&a)) {
            /* 30 s of 5xx or no answer: the customer gives up. Nothing was
             * accepted, so nothing is owed; counted and shown. */
            w->counts.orders_given_up++;
            if (!w->first_given_up[0]) {
                char why[256];
                snprintf(w->first_given_up, sizeof w->first_given_up, "%s",
                         tour_why(&a, why, sizeof why));
            }
        } else {
            w->counts.orders_refused++;
        }
        pthread_mutex_unlock(&w->mu);
        /* A 4xx is not what a customer should see from a working system,
         * chaos or not. */
        if (a.status != 201 && !transient(&a)) note_error(w, "an order", &a);
        tour_answer_release(&a);
        pause_jittered(p, w->o.pause_s);
    }
    return NULL;
}

/* Messages in the room; one without an answer is not sent again. */
static void *chatter(void *arg)
{
    job *j = arg;
    workload *w = j->w;
    wl_person *p = &w->chatters[j->i];
    long n = 0;
    while (!atomic_load(&w->stop)) {
        wl_message m = {0};
        snprintf(m.content, sizeof m.content, "workload %llu c%d #%ld",
                 (unsigned long long)w->o.seed, j->i, ++n);
        json_t *body = json_pack("{s:s, s:s}", "roomId", w->room, "content", m.content);
        answer a;
        call(p, "POST", "/messages", body, NULL, &a);
        json_decref(body);
        if (a.status == 201) {
            snprintf(m.id, sizeof m.id, "%s", tour_str(tour_data(&a), "id"));
            pthread_mutex_lock(&w->mu);
            vec_push(&w->messages, &m);
            w->counts.messages_acked++;
            pthread_mutex_unlock(&w->mu);
        } else if (transient(&a)) {
            pthread_mutex_lock(&w->mu);
            vec_push(&w->messages, &m);
            w->counts.messages_unanswered++;
            pthread_mutex_unlock(&w->mu);
        } else if (a.status != 429) {
            note_error(w, "a message", &a);
        }
        tour_answer_release(&a);
        pause_jittered(p, w->o.pause_s);
    }
    return NULL;
}

/* Browsing: the catalogue's pages, a search, a product, a cart line; the
 * cart emptied now and then. Only for the soak's mix. */
static void *browser(void *arg)
{
    job *j = arg;
    workload *w = j->w;
    wl_person *p = &w->browsers[j->i];
    static const char *const searches[] = {"item", "workload", "lamp", "book", "zzz"};
    while (!atomic_load(&w->stop)) {
        char path[256];
        uint64_t r = next_rand(&p->rnd) % 6;
        if (r == 0)
            snprintf(path, sizeof path, "/products?limit=20&page=%d",
                     1 + (int)(next_rand(&p->rnd) % 3));
        else if (r == 1)
            snprintf(path, sizeof path, "/products?q=%s&sort=price",
                     searches[next_rand(&p->rnd) % 5]);
        else if (r == 2)
            snprintf(path, sizeof path, "/products/%s",
                     w->products[next_rand(&p->rnd) % WL_PRODUCTS]);
        else if (r == 3)
            snprintf(path, sizeof path, "/cart");
        else
            path[0] = '\0';
        answer a;
        if (path[0]) {
            read_until(p, path, 10, &a);
        } else if (r == 4) {
            json_t *body = json_pack("{s:s, s:i}", "productId",
                                     w->products[next_rand(&p->rnd) % WL_PRODUCTS], "quantity", 1);
            call(p, "POST", "/cart/items", body, NULL, &a);
            json_decref(body);
        } else {
            call(p, "DELETE", "/cart", NULL, NULL, &a);
        }
        bool ok = a.status >= 200 && a.status < 300;
        /* a full cart is the browser's doing: empty it */
        if (a.status == 409) {
            tour_answer_release(&a);
            call(p, "DELETE", "/cart", NULL, NULL, &a);
            ok = a.status == 204;
        }
        if (!ok && !transient(&a) && a.status != 429) note_error(w, "browsing", &a);
        pthread_mutex_lock(&w->mu);
        w->counts.browses++;
        pthread_mutex_unlock(&w->mu);
        tour_answer_release(&a);
        pause_jittered(p, w->o.pause_s);
    }
    return NULL;
}

/* The room watched on a WebSocket; every drop is followed by a reconnection
 * with ?since=<the last push id seen>, as the web UI does. */
static void *watcher(void *arg)
{
    workload *w = arg;
    long long since = 0;
    bool first = true;
    while (!atomic_load(&w->stop_watch)) {
        char path[128];
        if (since > 0)
            snprintf(path, sizeof path, "/api/v1/ws?since=%lld", since);
        else
            snprintf(path, sizeof path, "/api/v1/ws");
        cli_ws ws;
        if (cli_ws_open(&ws, w->ws_base, path, w->watcher.t.token) < 0) {
            if (ws.status == 401) (void)sign_in(&w->watcher);
            tour_pause_ms(300);
            continue;
        }
        if (!first) {
            pthread_mutex_lock(&w->mu);
            w->counts.reconnects++;
            pthread_mutex_unlock(&w->mu);
        }
        first = false;
        while (!atomic_load(&w->stop_watch)) {
            json_t *m = cli_ws_next(&ws, NULL, 300);
            if (!m) {
                if (ws.ended) break;
                continue;
            }
            const char *type = tour_str(m, "type");
            long long id = strtoll(tour_str(m, "id"), NULL, 10);
            if (id > since) since = id;
            if (strcmp(type, "message.sent") == 0) {
                char mid[48];
                /* the event's data: {messageId, roomId, ...} (docs/events.md) */
                snprintf(mid, sizeof mid, "%s", tour_str(json_object_get(m, "data"), "messageId"));
                pthread_mutex_lock(&w->mu);
                vec_push(&w->pushes, mid);
                w->counts.pushes++;
                pthread_mutex_unlock(&w->mu);
            }
            json_decref(m);
        }
        cli_ws_close(&ws);
    }
    return NULL;
}

int wl_start(workload *w)
{
    int n = w->o.shoppers + w->o.chatters + w->o.browsers;
    w->threads = ag_calloc((size_t)n + 1, sizeof(pthread_t));
    w->jobs = ag_calloc((size_t)n + 1, sizeof(job));
    job *jobs = w->jobs;
    int k = 0;
    if (w->o.chatters > 0) {
        if (pthread_create(&w->watch_thread, NULL, watcher, w) != 0) return AG_ENOMEM;
        w->watching = true;
        tour_pause_ms(300); /* connected before the first message */
    }
    for (int i = 0; i < w->o.shoppers; i++, k++) {
        jobs[k] = (job){w, i};
        if (pthread_create(&w->threads[k], NULL, shopper, &jobs[k]) != 0) break;
    }
    for (int i = 0; i < w->o.chatters; i++, k++) {
        jobs[k] = (job){w, i};
        if (pthread_create(&w->threads[k], NULL, chatter, &jobs[k]) != 0) break;
    }
    for (int i = 0; i < w->o.browsers; i++, k++) {
        jobs[k] = (job){w, i};
        if (pthread_create(&w->threads[k], NULL, browser, &jobs[k]) != 0) break;
    }
    w->nthreads = k;
    return k == n ? 0 : AG_ENOMEM;
}

void wl_stop(workload *w)
{
    atomic_store(&w->stop, true);
    for (int i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    w->nthreads = 0;
}

void wl_counts_get(workload *w, wl_counts *c)
{
    pthread_mutex_lock(&w->mu);
    *c = w->counts;
    pthread_mutex_unlock(&w->mu);
}

static void stop_watcher(workload *w)
{
    if (!w->watching) return;
    atomic_store(&w->stop_watch, true);
    pthread_join(w->watch_thread, NULL);
    w->watching = false;
}

void wl_free(workload *w)
{
    if (!w) return;
    wl_stop(w);
    stop_watcher(w);
    ag_free(w->threads);
    ag_free(w->jobs);
    ag_free(w->orders.items);
    ag_free(w->messages.items);
    ag_free(w->pushes.items);
    ag_free(w->shoppers);
    ag_free(w->chatters);
    ag_free(w->browsers);
    pthread_mutex_destroy(&w->mu);
    ag_free(w);
}

/* ---- The check ----------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void verdict(FILE *out, bool ok, int *failed, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void verdict(FILE *out, bool ok, int *failed, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(out, "  %-4s  ", ok ? "ok" : "FAIL");
    vfprintf(out, fmt, ap);
    fputc('\n', out);
    va_end(ap);
    fflush(out);
    if (!ok) (*failed)++;
}

/* Invariant 1: every accepted order ends. finals[i] gets its last state. */
static void check_orders(workload *w, FILE *out, int *failed, json_t **finals, double end)
{
    size_t n = w->orders.n, done = 0, confirmed = 0;
    char open_one[160] = "";
    for (size_t i = 0; i < n; i++) {
        wl_order *o = vec_at(&w->orders, i);
        char path[128];
        snprintf(path, sizeof path, "/orders/%s", o->id);
        for (;;) {
            answer a;
            read_until(&w->shoppers[o->customer], path, 10, &a);
            const char *st = tour_str(tour_data(&a), "status");
            bool final =
                a.status == 200 && (strcmp(st, "CONFIRMED") == 0 || strcmp(st, "CANCELLED") == 0);
            if (final || tour_now_s() > end) {
                if (final) {
                    finals[i] = json_incref(tour_data(&a));
                    done++;
                    confirmed += strcmp(st, "CONFIRMED") == 0;
                } else if (!open_one[0]) {
                    snprintf(open_one, sizeof open_one, "%s is still %s (%d)", o->id,
                             *st ? st : "unknown", a.status);
                }
                tour_answer_release(&a);
                break;
            }
            tour_answer_release(&a);
            tour_pause_ms(300);
        }
    }
    verdict(out, done == n, failed,
            "every accepted order ended: %zu of %zu (%zu CONFIRMED, %zu CANCELLED)%s%s", done, n,
            confirmed, done - confirmed, open_one[0] ? "; " : "", open_one);
}

/* Invariant 2: stock. */
static void check_stock(workload *w, FILE *out, int *failed, json_t **finals)
{
    bool ok = true;
    char detail[512] = "";
    size_t off = 0;
    for (int p = 0; p < WL_PRODUCTS; p++) {
        long long units = 0;
        for (size_t i = 0; i < w->orders.n; i++) {
            if (!finals[i] || strcmp(tour_str(finals[i], "status"), "CONFIRMED") != 0) continue;
            size_t k;
            json_t *it;
            json_array_foreach(json_object_get(finals[i], "items"), k, it)
            {
                if (strcmp(tour_str(it, "productId"), w->products[p]) == 0)
                    units += tour_num(it, "quantity");
            }
        }
        char path[128];
        snprintf(path, sizeof path, "/inventory/%s", w->products[p]);
        answer a;
        read_until(&w->admin, path, 30, &a);
        long long left = tour_num(tour_data(&a), "quantity");
        long long reserved = tour_num(tour_data(&a), "reserved");
        bool good =
            a.status == 200 && reserved == 0 && w->o.stock - left == units && units <= w->o.stock;
        ok &= good;
        off += (size_t)snprintf(detail + off, sizeof detail - off,
                                "%s%lld of %d sold, %lld confirmed, %lld reserved", p ? "; " : "",
                                w->o.stock - left, w->o.stock, units, reserved);
        if (a.status != 200 && off < sizeof detail)
            off += (size_t)snprintf(detail + off, sizeof detail - off, " (inventory %d)", a.status);
        if (off >= sizeof detail) off = sizeof detail - 1;
        tour_answer_release(&a);
    }
    verdict(out, ok, failed, "no unit oversold: %s", detail);
}

/* Invariant 3: payments. */
static void check_payments(workload *w, FILE *out, int *failed, json_t **finals, double end)
{
    size_t charged = 0, refunded = 0, bad = 0;
    char first_bad[256] = "";
    for (size_t i = 0; i < w->orders.n; i++) {
        if (!finals[i]) continue;
        wl_order *o = vec_at(&w->orders, i);
        bool confirmed = strcmp(tour_str(finals[i], "status"), "CONFIRMED") == 0;
        char path[160];
        snprintf(path, sizeof path, "/payments?orderId=%s", o->id);
        for (;;) {
            answer a;
            read_until(&w->admin, path, 30, &a);
            size_t ok_pays = 0, k;
            bool good = a.status == 200, settling = false;
            json_t *pay;
            json_array_foreach(tour_data(&a), k, pay)
            {
                if (strcmp(tour_str(pay, "status"), "SUCCEEDED") != 0) continue;
                ok_pays++;
                long long amount = tour_num(pay, "amountCents");
                long long back = tour_num(pay, "refundedCents");
                if (confirmed) {
                    good &= amount == tour_num(finals[i], "totalCents") && back == 0;
                } else if (back != amount) {
                    settling = true; /* a refund still on its way */
                }
            }
            if (confirmed) good &= ok_pays == 1;
            if (settling && tour_now_s() < end) {
                tour_answer_release(&a);
                tour_pause_ms(300);
                continue;
            }
            good &= !settling;
            if (good && confirmed) charged++;
            if (good && !confirmed && ok_pays) refunded++;
            if (!good) {
                bad++;
                if (!first_bad[0])
                    snprintf(first_bad, sizeof first_bad,
                             "; order %s (%s): %zu successful "
                             "payments%s",
                             o->id, confirmed ? "CONFIRMED" : "CANCELLED", ok_pays,
                             settling ? ", a refund not done" : "");
            }
            tour_answer_release(&a);
            break;
        }
    }
    verdict(out, bad == 0, failed,
            "no charge without confirmation or refund: %zu charged once, %zu refunded in full, "
            "%zu wrong%s",
            charged, refunded, bad, first_bad);
}

/* Invariant 4: notifications, per customer. */
static void check_notifications(workload *w, FILE *out, int *failed, json_t **finals, double end)
{
    size_t want = 0, seen_once = 0, doubled = 0;
    char first_bad[256] = "";
    for (int c = 0; c < w->o.shoppers; c++) {
        /* this customer's outcomes: order id + type */
        size_t mine = 0;
        for (size_t i = 0; i < w->orders.n; i++)
            mine += finals[i] && ((wl_order *)vec_at(&w->orders, i))->customer == c;
        if (!mine) continue;
        want += mine;
        int *count = ag_calloc(w->orders.n, sizeof(int));
        for (;;) {
            memset(count, 0, w->orders.n * sizeof(int));
            bool read_ok = true;
            for (int page = 1;; page++) {
                char path[128];
                snprintf(path, sizeof path, "/notifications?limit=%d&page=%d", WL_PAGE, page);
                answer a;
                read_until(&w->shoppers[c], path, 30, &a);
                if (a.status != 200) {
                    read_ok = false;
                    tour_answer_release(&a);
                    break;
                }
                size_t k;
                json_t *n;
                json_array_foreach(tour_data(&a), k, n)
                {
                    const char *oid = tour_str(json_object_get(n, "data"), "orderId");
                    const char *type = tour_str(n, "type");
                    for (size_t i = 0; *oid && i < w->orders.n; i++) {
                        wl_order *o = vec_at(&w->orders, i);
                        if (!finals[i] || o->customer != c || strcmp(o->id, oid) != 0) continue;
                        char t[40];
                        snprintf(t, sizeof t, "order.%s", tour_str(finals[i], "status"));
                        for (char *q = t; *q; q++)
                            if (*q >= 'A' && *q <= 'Z') *q = (char)(*q - 'A' + 'a');
                        if (strcmp(type, t) == 0) count[i]++;
                    }
                }
                long long pages = tour_num(json_object_get(a.doc, "pagination"), "pages");
                tour_answer_release(&a);
                if (page >= pages) break;
            }
            size_t missing = 0;
            for (size_t i = 0; i < w->orders.n; i++)
                if (finals[i] && ((wl_order *)vec_at(&w->orders, i))->customer == c)
                    missing += count[i] == 0;
            if ((missing == 0 && read_ok) || tour_now_s() > end) break;
            tour_pause_ms(500);
        }
        for (size_t i = 0; i < w->orders.n; i++) {
            wl_order *o = vec_at(&w->orders, i);
            if (!finals[i] || o->customer != c) continue;
            if (count[i] == 1) seen_once++;
            if (count[i] > 1) doubled++;
            if (count[i] != 1 && !first_bad[0])
                snprintf(first_bad, sizeof first_bad, "; order %s's outcome notified %d times",
                         o->id, count[i]);
        }
        ag_free(count);
    }
    verdict(out, seen_once == want, failed,
            "each order's outcome notified once to its customer: %zu of %zu (%zu doubled)%s",
            seen_once, want, doubled, first_bad);
}

/* The room's whole history, ids and contents (sorted by id). */
static int read_history(workload *w, wl_vec *hist)
{
    char before[48] = "";
    for (;;) {
        char path[256];
        snprintf(path, sizeof path, "/messages?roomId=%s&limit=%d%s%s", w->room, WL_PAGE,
                 before[0] ? "&before=" : "", before);
        answer a;
        read_until(&w->chatters[0], path, 30, &a);
        if (a.status != 200) {
            tour_answer_release(&a);
            return AG_EIO;
        }
        size_t k, got = json_array_size(tour_data(&a));
        json_t *m;
        json_array_foreach(tour_data(&a), k, m)
        {
            wl_message h = {0};
            snprintf(h.id, sizeof h.id, "%s", tour_str(m, "id"));
            snprintf(h.content, sizeof h.content, "%s", tour_str(m, "content"));
            vec_push(hist, &h);
            snprintf(before, sizeof before, "%s", h.id);
        }
        tour_answer_release(&a);
        if (got < WL_PAGE) return 0;
    }
}

static int cmp_content(const void *a, const void *b)
{
    return strcmp(((const wl_message *)a)->content, ((const wl_message *)b)->content);
}

/* How many of the sorted-by-content `v` hold `content`. */
static size_t copies_of(const wl_vec *v, const char *content)
{
    wl_message key = {0};
    snprintf(key.content, sizeof key.content, "%s", content);
    wl_message *hit = bsearch(&key, v->items, v->n, v->size, cmp_content);
    if (!hit) return 0;
    size_t at = (size_t)((char *)hit - (char *)v->items) / v->size, lo = at, hi = at;
    while (lo > 0 && cmp_content(vec_at(v, lo - 1), &key) == 0)
        lo--;
    while (hi + 1 < v->n && cmp_content(vec_at(v, hi + 1), &key) == 0)
        hi++;
    return hi - lo + 1;
}

/* Invariants 5 and 6: history and pushes. */
static void check_messages(workload *w, FILE *out, int *failed, double end)
{
    wl_vec hist;
    vec_init(&hist, sizeof(wl_message));
    int rc = read_history(w, &hist);
    /* the ids first (a wl_message starts with its id), then the contents */
    size_t twice = 0, strangers = 0, lost = 0, acked = 0, unanswered = 0, stored_unanswered = 0;
    qsort(hist.items, hist.n, hist.size, cmp_str);
    for (size_t i = 0; i + 1 < hist.n; i++)
        twice += strcmp(vec_at(&hist, i), vec_at(&hist, i + 1)) == 0;
    qsort(hist.items, hist.n, hist.size, cmp_content);
    qsort(w->messages.items, w->messages.n, w->messages.size, cmp_content);
    for (size_t i = 0; i < w->messages.n; i++) {
        wl_message *m = vec_at(&w->messages, i);
        size_t copies = copies_of(&hist, m->content);
        twice += copies > 1;
        if (m->id[0]) {
            acked++;
            lost += copies == 0;
        } else {
            unanswered++;
            stored_unanswered += copies == 1;
        }
    }
    for (size_t k = 0; k < hist.n; k++)
        strangers += copies_of(&w->messages, ((wl_message *)vec_at(&hist, k))->content) == 0;
    verdict(out, rc == 0 && lost == 0 && twice == 0 && strangers == 0, failed,
            "each acknowledged message stored once: %zu acknowledged, %zu lost, %zu twice, %zu "
            "never sent; %zu sent without an answer (%zu of them stored)%s",
            acked, lost, twice, strangers, unanswered, stored_unanswered,
            rc < 0 ? "; the history could not be read" : "");

    /* Pushes: wait until every acknowledged message came, or the end. */
    size_t missing;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        qsort(w->pushes.items, w->pushes.n, w->pushes.size, cmp_str);
        missing = 0;
        for (size_t i = 0; i < w->messages.n; i++) {
            wl_message *m = vec_at(&w->messages, i);
            if (m->id[0] && !bsearch(m->id, w->pushes.items, w->pushes.n, w->pushes.size, cmp_str))
                missing++;
        }
        pthread_mutex_unlock(&w->mu);
        if (missing == 0 || tour_now_s() > end) break;
        tour_pause_ms(300);
    }
    stop_watcher(w);
    qsort(w->pushes.items, w->pushes.n, w->pushes.size, cmp_str);
    size_t dup = 0;
    for (size_t i = 0; i + 1 < w->pushes.n; i++)
        dup += strcmp(vec_at(&w->pushes, i), vec_at(&w->pushes, i + 1)) == 0;
    verdict(out, missing == 0 && dup == 0, failed,
            "each acknowledged message pushed once to a member's WebSocket: %zu pushes, %zu "
            "missing, %zu twice, across %ld reconnections",
            w->pushes.n, missing, dup, w->counts.reconnects);
    ag_free(hist.items);
}

int wl_check(workload *w, FILE *out, double settle_s)
{
    wl_stop(w);
    double end = tour_now_s() + settle_s;
    int failed = 0;
    json_t **finals = ag_calloc(w->orders.n + 1, sizeof(json_t *));
    if (w->o.shoppers > 0) {
        check_orders(w, out, &failed, finals, end);
        check_stock(w, out, &failed, finals);
        check_payments(w, out, &failed, finals, end);
        check_notifications(w, out, &failed, finals, end);
    }
    if (w->o.chatters > 0) check_messages(w, out, &failed, end);
    if (w->counts.orders_given_up)
        fprintf(out,
                "  info  %ld orders given up after %d s of 5xx or no answer (never "
                "accepted, so nothing is owed); the first: %s\n",
                w->counts.orders_given_up, WL_ORDER_RETRY_S, w->first_given_up);
    if (w->counts.errors)
        verdict(out, false, &failed, "%ld answers the workload did not expect; the first: %s",
                w->counts.errors, w->first_error);
    for (size_t i = 0; i < w->orders.n; i++)
        json_decref(finals[i]);
    ag_free(finals);
    return failed ? 1 : 0;
}
