/*
 * discovery.c — the registry client and the balancer (agora/discovery.h).
 *
 * State: one mutex guards the table of watched services, each with its list
 * of instances and their counters (outstanding calls, consecutive failures,
 * ejection). pick and release only take that mutex: no I/O, so loop threads
 * may call them.
 *
 * Threads, at most two per ag_discovery, started on first need:
 *  - the watcher runs every blocking query at once on one curl multi handle
 *    (curl_multi_poll), one easy handle per watched service. A new watch or
 *    ag_discovery_free wakes it (curl_multi_wakeup), so freeing never waits
 *    for a query's `wait` to run out. A failed query keeps the last list
 *    (marked stale) and is retried with a backoff of 250 ms doubling to 5 s.
 *    ag_http_client_do cannot be interrupted, which is why the long polls use
 *    curl directly; the short calls (register, deregister) use the client.
 *  - the keeper registers this process and, every AGORA_REGISTRY_RESYNC,
 *    asks the registry whether it still knows the instance; a 404 (the
 *    registry lost its store) registers it again.
 *
 * An instance's balancing state survives list updates: a new list keeps the
 * counters of the instances it still contains (matched by id). release finds
 * its instance by service and id, so an instance that left the list while a
 * call was out is simply forgotten.
 */
#include <ctype.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "agora/clock.h"
#include "agora/config.h"
#include "agora/discovery.h"
#include "agora/http_client.h"
#include "agora/id.h"
#include "agora/log.h"
#include "agora/mem.h"

#define EJECT_BASE_MS 10000
#define EJECT_MAX_MS 300000
#define WATCH_WAIT_S 30
#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 5000
#define MAX_WATCHES 256
#define MAX_BODY (4u << 20)

typedef struct inst {
    ag_instance in; /* service, id, address, port, version */
    int outstanding;
    int consecutive;
    int ejections;
    uint64_t ejected_until; /* monotonic ms; 0: not ejected */
    bool marked_down;
    uint64_t calls, failures;
} inst;

typedef struct watch {
    char name[64];
    inst *insts;
    int n;
    unsigned rr;
    uint64_t index;
    bool synced;     /* one answer (or static list) at least */
    bool tried;      /* one attempt finished, successful or not */
    bool stale;      /* the last attempt failed */
    uint64_t last_sync_wall;
    uint64_t retry_at; /* monotonic ms */
    uint64_t backoff;
    CURL *easy;        /* the query in flight, watcher thread only */
    ag_buf body;       /* its answer so far, watcher thread only */
    char *url;         /* watcher thread only */
} watch;

struct ag_discovery {
    bool is_static;
    char registry[512];
    ag_lb_policy policy;
    int eject_after;
    uint64_t eject_base_ms, eject_max_ms;
    ag_http_client *http;

    pthread_mutex_t mu;
    pthread_cond_t cond; /* first syncs, keeper wake-ups */
    watch **watches;
    int nwatches;
    bool stopping;
    void (*on_change)(void *, const char *);
    void *on_change_ud;

    /* The watcher thread. */
    bool watcher_started;
    pthread_t watcher;
    CURLM *multi;

    /* The registration and its keeper thread. */
    bool registered;
    bool keeper_started, keeper_stop;
    pthread_t keeper;
    char *reg_id;
    char *reg_body;
    uint64_t resync_ms;
};

/* ---- Creation ------------------------------------------------------------------ */

int ag_discovery_new(const char *registry, ag_discovery **out)
{
    if (!registry) {
        registry = ag_config_raw("AGORA_REGISTRY");
        if (!registry) registry = "static";
    }
    bool st = strcmp(registry, "static") == 0;
    if (!st && strncmp(registry, "http://", 7) != 0 && strncmp(registry, "https://", 8) != 0) {
        ag_error("invalid configuration", AG_FS("variable", "AGORA_REGISTRY"),
                 AG_FS("reason", "expected an http:// URL or \"static\""), AG_FS("value", registry));
        return AG_ECONFIG;
    }
    if (strlen(registry) >= 480) return AG_ECONFIG;
    ag_discovery *d = ag_calloc(1, sizeof *d);
    d->is_static = st;
    if (!st) {
        snprintf(d->registry, sizeof d->registry, "%s", registry);
        size_t n = strlen(d->registry);
        while (n > 0 && d->registry[n - 1] == '/')
            d->registry[--n] = '\0';
    }
    const char *lb = ag_config_raw("AGORA_LB");
    d->policy = lb && strcmp(lb, "round_robin") == 0 ? AG_LB_ROUND_ROBIN : AG_LB_P2C;
    d->eject_after = 5;
    d->eject_base_ms = EJECT_BASE_MS;
    d->eject_max_ms = EJECT_MAX_MS;
    if (ag_config_duration_ms("AGORA_REGISTRY_RESYNC", 5000, &d->resync_ms) < 0 ||
        d->resync_ms == 0)
        d->resync_ms = 5000;
    ag_http_client_opts ho = {.connect_timeout_ms = 1000, .timeout_ms = 2000};
    if (ag_http_client_new(&ho, &d->http) < 0) {
        ag_free(d);
        return AG_ENOMEM;
    }
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cond, NULL);
    *out = d;
    return 0;
}

bool ag_discovery_is_static(const ag_discovery *d)
{
    return d->is_static;
}

const char *ag_discovery_registry_url(const ag_discovery *d)
{
    return d->registry;
}

void ag_discovery_set_policy(ag_discovery *d, ag_lb_policy p)
{
    pthread_mutex_lock(&d->mu);
    d->policy = p;
    pthread_mutex_unlock(&d->mu);
}

void ag_discovery_set_eject_after(ag_discovery *d, int failures)
{
    pthread_mutex_lock(&d->mu);
    d->eject_after = failures < 0 ? 0 : failures;
    pthread_mutex_unlock(&d->mu);
}

void ag_discovery_set_eject_time(ag_discovery *d, uint64_t base_ms, uint64_t max_ms)
{
    pthread_mutex_lock(&d->mu);
    d->eject_base_ms = base_ms ? base_ms : EJECT_BASE_MS;
    d->eject_max_ms = max_ms >= d->eject_base_ms ? max_ms : d->eject_base_ms;
    pthread_mutex_unlock(&d->mu);
}

void ag_discovery_on_change(ag_discovery *d, void (*fn)(void *ud, const char *service), void *ud)
{
    pthread_mutex_lock(&d->mu);
    d->on_change = fn;
    d->on_change_ud = ud;
    pthread_mutex_unlock(&d->mu);
}

/* ---- Instance lists ------------------------------------------------------------ */

static watch *find_watch(ag_discovery *d, const char *name)
{
    for (int i = 0; i < d->nwatches; i++)
        if (strcmp(d->watches[i]->name, name) == 0) return d->watches[i];
    return NULL;
}

/* Replaces w's list by `fresh` (n entries, taken), keeping the counters of
 * the instances present in both. Returns true when the set of instances or
 * their addresses changed. Under d->mu. */
static bool replace_list(watch *w, inst *fresh, int n)
{
    bool changed = n != w->n;
    for (int i = 0; i < n; i++) {
        inst *old = NULL;
        for (int j = 0; j < w->n; j++)
            if (strcmp(w->insts[j].in.id, fresh[i].in.id) == 0) old = &w->insts[j];
        if (!old) {
            changed = true;
            continue;
        }
        if (old->in.port != fresh[i].in.port || strcmp(old->in.address, fresh[i].in.address) ||
            strcmp(old->in.version, fresh[i].in.version))
            changed = true;
        ag_instance keep = fresh[i].in;
        fresh[i] = *old;
        fresh[i].in = keep;
    }
    ag_free(w->insts);
    w->insts = fresh;
    w->n = n;
    return changed;
}

static void service_env_name(const char *service, char *out, size_t n)
{
    size_t k = (size_t)snprintf(out, n, "AGORA_");
    for (const char *p = service; *p && k + 5 < n; p++)
        out[k++] = *p == '-' || *p == '.' ? '_' : (char)toupper((unsigned char)*p);
    snprintf(out + k, n - k, "_URL");
}

/* Parses "http://host:port[/...]" into an instance; false when malformed. */
static bool parse_url_instance(const char *s, size_t len, const char *service, inst *out)
{
    char buf[256];
    while (len > 0 && isspace((unsigned char)*s)) s++, len--;
    while (len > 0 && isspace((unsigned char)s[len - 1])) len--;
    if (len == 0 || len >= sizeof buf) return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    const char *p = buf;
    if (strncmp(p, "http://", 7) == 0) p += 7;
    char *slash = strchr(p, '/');
    if (slash) *slash = '\0';
    char *colon = strrchr(p, ':');
    long port = 80;
    if (colon) {
        char *end;
        port = strtol(colon + 1, &end, 10);
        if (*end || port <= 0 || port > 65535) return false;
        *colon = '\0';
    }
    if (!*p || strlen(p) >= sizeof out->in.address) return false;
    memset(out, 0, sizeof *out);
    snprintf(out->in.service, sizeof out->in.service, "%s", service);
    snprintf(out->in.address, sizeof out->in.address, "%.63s", p);
    out->in.port = (int)port;
    snprintf(out->in.id, sizeof out->in.id, "%.63s:%ld", p, port);
    return true;
}

/* The static list of `service` from AGORA_<SERVICE>_URL. Under d->mu. */
static void load_static(watch *w)
{
    char var[128];
    service_env_name(w->name, var, sizeof var);
    const char *v = getenv(var);
    inst *list = NULL;
    int n = 0;
    if (v) {
        const char *p = v;
        while (*p) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            inst one;
            if (parse_url_instance(p, len, w->name, &one)) {
                list = ag_realloc(list, (size_t)(n + 1) * sizeof *list);
                list[n++] = one;
            } else if (len > 0) {
                ag_warn("ignoring a malformed instance URL", AG_FS("variable", var));
            }
            p = comma ? comma + 1 : p + len;
        }
    }
    replace_list(w, list, n);
    w->synced = w->tried = true;
    w->last_sync_wall = ag_wall_ms();
}

/* Parses a /v1/health/service answer into a new list. AG_EPROTO when it is
 * not one. */
static int parse_health(const char *service, const char *body, size_t len, inst **out, int *n)
{
    json_error_t err;
    json_t *arr = json_loadb(body, len, 0, &err);
    if (!json_is_array(arr)) {
        json_decref(arr);
        return AG_EPROTO;
    }
    size_t cnt = json_array_size(arr);
    inst *list = cnt ? ag_calloc(cnt, sizeof *list) : NULL;
    int k = 0;
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        json_t *svc = json_object_get(e, "Service");
        const char *id = json_string_value(json_object_get(svc, "ID"));
        const char *addr = json_string_value(json_object_get(svc, "Address"));
        if (!addr || !*addr)
            addr = json_string_value(json_object_get(json_object_get(e, "Node"), "Address"));
        json_int_t port = json_integer_value(json_object_get(svc, "Port"));
        const char *ver =
            json_string_value(json_object_get(json_object_get(svc, "Meta"), "version"));
        if (!id || !addr || port <= 0 || port > 65535) continue;
        inst *x = &list[k++];
        snprintf(x->in.service, sizeof x->in.service, "%s", service);
        snprintf(x->in.id, sizeof x->in.id, "%s", id);
        snprintf(x->in.address, sizeof x->in.address, "%s", addr);
        snprintf(x->in.version, sizeof x->in.version, "%s", ver ? ver : "");
        x->in.port = (int)port;
    }
    json_decref(arr);
    *out = list;
    *n = k;
    return 0;
}

/* ---- The watcher thread ---------------------------------------------------------- */

static size_t on_write(char *p, size_t size, size_t nmemb, void *ud)
{
    watch *w = ud;
    size_t n = size * nmemb;
    if (w->body.len + n > MAX_BODY) return 0;
    ag_buf_append(&w->body, p, n);
    return n;
}

static void start_query(ag_discovery *d, watch *w)
{
    char *esc = curl_easy_escape(NULL, w->name, 0);
    ag_buf u;
    ag_buf_init(&u, 0);
    ag_buf_printf(&u, "%s/v1/health/service/%s?passing=true", d->registry, esc ? esc : "");
    curl_free(esc);
    if (w->index > 0)
        ag_buf_printf(&u, "&index=%llu&wait=%ds", (unsigned long long)w->index, WATCH_WAIT_S);
    ag_free(w->url);
    w->url = ag_buf_detach(&u, NULL);
    ag_buf_release(&w->body);
    ag_buf_init(&w->body, 0);
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, w->url);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, w);
    curl_easy_setopt(e, CURLOPT_PRIVATE, w);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
    /* The registry answers within wait + wait/16; a little more for slack. */
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(WATCH_WAIT_S * 1000 + WATCH_WAIT_S * 1000 / 16 + 5000));
    w->easy = e;
    curl_multi_add_handle(d->multi, e);
}

/* A query finished: update the list (under d->mu). Returns true when the
 * watched list changed. */
static bool finish_query(ag_discovery *d, watch *w, CURLcode res)
{
    long status = 0;
    char *hdr_index = NULL;
    uint64_t new_index = 0;
    curl_easy_getinfo(w->easy, CURLINFO_RESPONSE_CODE, &status);
    struct curl_header *h;
    if (res == CURLE_OK &&
        curl_easy_header(w->easy, "X-Consul-Index", 0, CURLH_HEADER, -1, &h) == CURLHE_OK) {
        hdr_index = h->value;
        new_index = strtoull(hdr_index, NULL, 10);
    }
    inst *list = NULL;
    int n = 0;
    bool ok = res == CURLE_OK && status == 200 &&
              parse_health(w->name, w->body.data ? w->body.data : "", w->body.len, &list, &n) == 0;
    bool changed = false;
    uint64_t now = ag_now_ms();
    pthread_mutex_lock(&d->mu);
    if (ok) {
        changed = replace_list(w, list, n) || !w->synced;
        /* Consul's rule: an index that goes backwards (a registry restarted
         * without its store) starts the query over from 0. */
        w->index = new_index >= w->index ? new_index : 0;
        if (w->index == 0) w->retry_at = now + BACKOFF_MIN_MS;
        w->synced = true;
        w->stale = false;
        w->backoff = 0;
        w->last_sync_wall = ag_wall_ms();
    } else {
        if (!w->stale)
            ag_warn("discovery: registry query failed; keeping the last list",
                    AG_FS("service", w->name), AG_FS("registry", d->registry),
                    AG_FS("reason", res != CURLE_OK ? curl_easy_strerror(res) : "bad answer"),
                    AG_FI("status", status));
        w->stale = true;
        w->backoff = w->backoff ? w->backoff * 2 : BACKOFF_MIN_MS;
        if (w->backoff > BACKOFF_MAX_MS) w->backoff = BACKOFF_MAX_MS;
        w->retry_at = now + w->backoff;
        w->index = 0;
    }
    w->tried = true;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->mu);
    return changed;
}

static void *watcher_main(void *arg)
{
    ag_discovery *d = arg;
    for (;;) {
        uint64_t now = ag_now_ms();
        long timeout = 1000;
        pthread_mutex_lock(&d->mu);
        if (d->stopping) {
            pthread_mutex_unlock(&d->mu);
            break;
        }
        for (int i = 0; i < d->nwatches; i++) {
            watch *w = d->watches[i];
            if (w->easy) continue;
            if (w->retry_at <= now)
                start_query(d, w);
            else if ((long)(w->retry_at - now) < timeout)
                timeout = (long)(w->retry_at - now);
        }
        pthread_mutex_unlock(&d->mu);

        int running = 0;
        curl_multi_perform(d->multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(d->multi, &left))) {
            if (m->msg != CURLMSG_DONE) continue;
            watch *w = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&w);
            CURLcode res = m->data.result;
            bool changed = finish_query(d, w, res);
            curl_multi_remove_handle(d->multi, w->easy);
            curl_easy_cleanup(w->easy);
            w->easy = NULL;
            if (changed) {
                pthread_mutex_lock(&d->mu);
                void (*fn)(void *, const char *) = d->on_change;
                void *ud = d->on_change_ud;
                pthread_mutex_unlock(&d->mu);
                if (fn) fn(ud, w->name);
            }
            timeout = 0;
        }
        if (timeout > 0) curl_multi_poll(d->multi, NULL, 0, (int)timeout, NULL);
    }
    return NULL;
}

/* Under d->mu. */
static watch *add_watch(ag_discovery *d, const char *service)
{
    watch *w = find_watch(d, service);
    if (w) return w;
    if (d->nwatches >= MAX_WATCHES || strlen(service) >= sizeof w->name || !*service) return NULL;
    w = ag_calloc(1, sizeof *w);
    snprintf(w->name, sizeof w->name, "%s", service);
    ag_buf_init(&w->body, 0);
    d->watches = ag_realloc(d->watches, (size_t)(d->nwatches + 1) * sizeof *d->watches);
    d->watches[d->nwatches++] = w;
    if (d->is_static) {
        load_static(w);
        return w;
    }
    if (!d->watcher_started) {
        d->multi = curl_multi_init();
        if (pthread_create(&d->watcher, NULL, watcher_main, d) == 0) d->watcher_started = true;
    } else {
        curl_multi_wakeup(d->multi);
    }
    return w;
}

int ag_discovery_watch(ag_discovery *d, const char *service)
{
    if (!service) return AG_EINVAL;
    pthread_mutex_lock(&d->mu);
    watch *w = add_watch(d, service);
    if (!w) {
        pthread_mutex_unlock(&d->mu);
        return AG_EINVAL;
    }
    /* Wait for the first answer, bounded by 2 s. */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 2;
    while (!w->tried && !d->stopping)
        if (pthread_cond_timedwait(&d->cond, &d->mu, &until) != 0) break;
    pthread_mutex_unlock(&d->mu);
    return 0;
}

/* ---- Balancing ------------------------------------------------------------------ */

static bool eligible(const inst *x, uint64_t now)
{
    return !x->marked_down && (x->ejected_until == 0 || x->ejected_until <= now);
}

static uint32_t rand32(void)
{
    uint32_t r;
    ag_random_bytes(&r, sizeof r);
    return r;
}

int ag_discovery_pick(ag_discovery *d, const char *service, ag_instance *out)
{
    if (!service) return AG_EINVAL;
    pthread_mutex_lock(&d->mu);
    watch *w = find_watch(d, service);
    if (!w) {
        /* Watch it for the next time, without waiting here (loop threads). */
        add_watch(d, service);
        w = find_watch(d, service);
        if (!w || w->n == 0) {
            pthread_mutex_unlock(&d->mu);
            return AG_ENOTFOUND;
        }
    }
    if (w->n == 0) {
        pthread_mutex_unlock(&d->mu);
        return AG_ENOTFOUND;
    }
    uint64_t now = ag_now_ms();
    int idx[64], k = 0;
    int limit = w->n < 64 ? w->n : 64;
    for (int i = 0; i < limit; i++)
        if (eligible(&w->insts[i], now)) idx[k++] = i;
    if (k == 0) {
        pthread_mutex_unlock(&d->mu);
        return AG_EUNAVAIL;
    }
    int chosen;
    if (d->policy == AG_LB_ROUND_ROBIN) {
        chosen = idx[w->rr++ % (unsigned)k];
    } else if (k == 1) {
        chosen = idx[0];
    } else {
        int a = (int)(rand32() % (uint32_t)k);
        int b = (int)(rand32() % (uint32_t)(k - 1));
        if (b >= a) b++;
        inst *x = &w->insts[idx[a]], *y = &w->insts[idx[b]];
        chosen = y->outstanding < x->outstanding ? idx[b] : idx[a];
    }
    inst *x = &w->insts[chosen];
    x->outstanding++;
    x->calls++;
    if (x->ejected_until && x->ejected_until <= now) x->ejected_until = 0;
    *out = x->in;
    out->slot = w;
    pthread_mutex_unlock(&d->mu);
    return 0;
}

void ag_discovery_release(ag_discovery *d, const ag_instance *in, ag_call_outcome outcome)
{
    if (!in) return;
    pthread_mutex_lock(&d->mu);
    watch *w = find_watch(d, in->service);
    inst *x = NULL;
    for (int i = 0; w && i < w->n; i++)
        if (strcmp(w->insts[i].in.id, in->id) == 0) x = &w->insts[i];
    if (x) {
        if (x->outstanding > 0) x->outstanding--;
        if (outcome == AG_CALL_OK) {
            x->consecutive = 0;
            x->ejections = 0;
        } else if (outcome == AG_CALL_FAILED) {
            x->failures++;
            x->consecutive++;
            if (d->eject_after > 0 && x->consecutive >= d->eject_after) {
                uint64_t t = d->eject_base_ms;
                for (int i = 0; i < x->ejections && t < d->eject_max_ms; i++) t *= 2;
                if (t > d->eject_max_ms) t = d->eject_max_ms;
                x->ejected_until = ag_now_ms() + t;
                x->ejections++;
                x->consecutive = 0;
                ag_warn("discovery: instance ejected", AG_FS("service", in->service),
                        AG_FS("instance", in->id), AG_FI("forMs", t));
            }
        }
    }
    pthread_mutex_unlock(&d->mu);
}

void ag_discovery_mark(ag_discovery *d, const char *service, const char *id, bool healthy)
{
    pthread_mutex_lock(&d->mu);
    watch *w = find_watch(d, service);
    for (int i = 0; w && i < w->n; i++)
        if (strcmp(w->insts[i].in.id, id) == 0) w->insts[i].marked_down = !healthy;
    pthread_mutex_unlock(&d->mu);
}

int ag_discovery_instances(ag_discovery *d, const char *service, ag_instance *out, int n)
{
    pthread_mutex_lock(&d->mu);
    watch *w = find_watch(d, service);
    int total = w ? w->n : 0;
    for (int i = 0; i < total && i < n; i++) {
        out[i] = w->insts[i].in;
        out[i].slot = w;
    }
    pthread_mutex_unlock(&d->mu);
    return total;
}

void ag_instance_url(const ag_instance *in, char *out, size_t n)
{
    bool v6 = strchr(in->address, ':') != NULL;
    snprintf(out, n, v6 ? "http://[%s]:%d" : "http://%s:%d", in->address, in->port);
}

json_t *ag_discovery_json(ag_discovery *d)
{
    pthread_mutex_lock(&d->mu);
    uint64_t now = ag_now_ms();
    json_t *services = json_object();
    for (int i = 0; i < d->nwatches; i++) {
        watch *w = d->watches[i];
        json_t *arr = json_array();
        for (int j = 0; j < w->n; j++) {
            inst *x = &w->insts[j];
            bool ej = x->ejected_until > now;
            json_array_append_new(
                arr, json_pack("{s:s, s:s, s:i, s:s, s:i, s:b, s:b, s:I, s:i, s:I, s:I}", "id",
                               x->in.id, "address", x->in.address, "port", x->in.port, "version",
                               x->in.version, "outstanding", x->outstanding, "healthy",
                               !x->marked_down, "ejected", ej, "ejectedForMs",
                               (json_int_t)(ej ? x->ejected_until - now : 0),
                               "consecutiveFailures", x->consecutive, "calls",
                               (json_int_t)x->calls, "failures", (json_int_t)x->failures));
        }
        char ts[40] = "";
        if (w->last_sync_wall) ag_time_rfc3339(ts, sizeof ts, w->last_sync_wall);
        json_object_set_new(services, w->name,
                            json_pack("{s:o, s:b, s:o}", "lastSync",
                                      ts[0] ? json_string(ts) : json_null(), "stale", w->stale,
                                      "instances", arr));
    }
    json_t *o = json_pack("{s:s, s:s, s:s, s:o}", "mode", d->is_static ? "static" : "registry",
                          "registry", d->registry, "policy",
                          d->policy == AG_LB_ROUND_ROBIN ? "round_robin" : "p2c", "services",
                          services);
    pthread_mutex_unlock(&d->mu);
    return o;
}

/* ---- Registration ---------------------------------------------------------------- */

static int call_registry(ag_discovery *d, const char *method, const char *path, const char *body)
{
    char url[1024];
    snprintf(url, sizeof url, "%s%s", d->registry, path);
    ag_http_call c = {.method = method, .url = url, .body = body,
                      .body_len = body ? strlen(body) : 0, .timeout_ms = 2000};
    ag_http_reply rep;
    int rc = ag_http_client_do(d->http, &c, &rep);
    if (rc < 0) return rc;
    int status = rep.status;
    ag_http_reply_release(&rep);
    return status;
}

static bool id_path(const char *prefix, const char *id, char *out, size_t n)
{
    char *esc = curl_easy_escape(NULL, id, 0);
    int k = snprintf(out, n, "%s%s", prefix, esc ? esc : "");
    curl_free(esc);
    return k > 0 && (size_t)k < n;
}

/* Registers now; true when the registry took it. */
static bool do_register(ag_discovery *d)
{
    int st = call_registry(d, "PUT", "/v1/agent/service/register", d->reg_body);
    if (st == 200) return true;
    if (st >= 400) ag_warn("discovery: the registry refused the registration", AG_FI("status", st));
    return false;
}

static void *keeper_main(void *arg)
{
    ag_discovery *d = arg;
    char path[512];
    id_path("/v1/agent/service/", d->reg_id, path, sizeof path);
    bool known = false;
    for (;;) {
        pthread_mutex_lock(&d->mu);
        if (known || d->keeper_stop) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            uint64_t ns = (uint64_t)until.tv_nsec + (d->resync_ms % 1000) * 1000000ull;
            until.tv_sec += (time_t)(d->resync_ms / 1000 + ns / 1000000000ull);
            until.tv_nsec = (long)(ns % 1000000000ull);
            while (!d->keeper_stop)
                if (pthread_cond_timedwait(&d->cond, &d->mu, &until) != 0) break;
        }
        bool stop = d->keeper_stop;
        pthread_mutex_unlock(&d->mu);
        if (stop) break;
        int st = call_registry(d, "GET", path, NULL);
        if (st == 404 || (!known && st != 200)) {
            if (do_register(d)) {
                if (st == 404)
                    ag_info("registered again with the registry", AG_FS("id", d->reg_id));
                known = true;
            } else {
                known = false;
            }
        } else {
            known = st == 200;
        }
        if (!known) {
            /* The registry is away: try again after a short pause. */
            pthread_mutex_lock(&d->mu);
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += 500000000L;
            if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
            while (!d->keeper_stop)
                if (pthread_cond_timedwait(&d->cond, &d->mu, &until) != 0) break;
            pthread_mutex_unlock(&d->mu);
        }
    }
    return NULL;
}

static char *duration(uint64_t ms)
{
    char b[32];
    snprintf(b, sizeof b, "%llums", (unsigned long long)ms);
    return ag_strdup(b);
}

int ag_discovery_register(ag_discovery *d, const ag_registration *r)
{
    if (!r || !r->name || !*r->name || r->port <= 0 || r->port > 65535) return AG_EINVAL;
    if (d->is_static) return 0;
    pthread_mutex_lock(&d->mu);
    bool already = d->registered;
    pthread_mutex_unlock(&d->mu);
    if (already) return AG_ESTATE;

    const char *addr = r->address;
    if (!addr) addr = ag_config_raw("AGORA_ADVERTISE_HOST");
    if (!addr) addr = "127.0.0.1";
    const char *version = r->version;
    if (!version) version = ag_config_raw("AGORA_VERSION");
    if (!version) version = "dev";
    char id[256];
    if (r->id)
        snprintf(id, sizeof id, "%s", r->id);
    else
        snprintf(id, sizeof id, "%s-%s-%d", r->name, addr, r->port);
    const char *check_path = r->check_path ? r->check_path : "/health";
    char check_url[512];
    snprintf(check_url, sizeof check_url, strchr(addr, ':') ? "http://[%s]:%d%s" : "http://%s:%d%s",
             addr, r->port, check_path);
    char *iv = duration(r->check_interval_ms ? r->check_interval_ms : 2000);
    char *to = duration(r->check_timeout_ms ? r->check_timeout_ms : 1000);
    char *dr = duration(r->deregister_after_ms ? r->deregister_after_ms : 60000);
    json_t *tags = json_array();
    for (const char *const *t = r->tags; t && *t; t++) json_array_append_new(tags, json_string(*t));
    json_t *body = json_pack("{s:s, s:s, s:s, s:i, s:o, s:{s:s}, s:{s:s, s:s, s:s, s:s}}", "ID", id,
                             "Name", r->name, "Address", addr, "Port", r->port, "Tags", tags,
                             "Meta", "version", version, "Check", "HTTP", check_url, "Interval",
                             iv, "Timeout", to, "DeregisterCriticalServiceAfter", dr);
    ag_free(iv);
    ag_free(to);
    ag_free(dr);
    if (!body) return AG_EINVAL;
    pthread_mutex_lock(&d->mu);
    d->reg_body = json_dumps(body, JSON_COMPACT);
    d->reg_id = ag_strdup(id);
    d->registered = true;
    d->keeper_stop = false;
    pthread_mutex_unlock(&d->mu);
    json_decref(body);

    if (do_register(d))
        ag_info("registered with the registry", AG_FS("id", id), AG_FS("registry", d->registry));
    else
        ag_warn("registry unreachable; will register when it answers",
                AG_FS("registry", d->registry));
    if (pthread_create(&d->keeper, NULL, keeper_main, d) == 0) d->keeper_started = true;
    return 0;
}

int ag_discovery_deregister(ag_discovery *d)
{
    pthread_mutex_lock(&d->mu);
    bool reg = d->registered;
    d->registered = false;
    d->keeper_stop = true;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->mu);
    if (!reg) return 0;
    if (d->keeper_started) pthread_join(d->keeper, NULL);
    d->keeper_started = false;
    char path[512];
    id_path("/v1/agent/service/deregister/", d->reg_id, path, sizeof path);
    int st = call_registry(d, "PUT", path, NULL);
    if (st == 200)
        ag_info("deregistered from the registry", AG_FS("id", d->reg_id));
    else
        ag_warn("could not deregister from the registry", AG_FS("id", d->reg_id),
                AG_FI("status", st < 0 ? 0 : st), AG_FS("error", st < 0 ? ag_strerror(st) : ""));
    ag_free(d->reg_id);
    ag_free(d->reg_body);
    d->reg_id = d->reg_body = NULL;
    return st == 200 ? 0 : st < 0 ? st : AG_EIO;
}

void ag_discovery_free(ag_discovery *d)
{
    if (!d) return;
    ag_discovery_deregister(d);
    pthread_mutex_lock(&d->mu);
    d->stopping = true;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->mu);
    if (d->watcher_started) {
        curl_multi_wakeup(d->multi);
        pthread_join(d->watcher, NULL);
    }
    for (int i = 0; i < d->nwatches; i++) {
        watch *w = d->watches[i];
        if (w->easy) {
            curl_multi_remove_handle(d->multi, w->easy);
            curl_easy_cleanup(w->easy);
        }
        ag_buf_release(&w->body);
        ag_free(w->url);
        ag_free(w->insts);
        ag_free(w);
    }
    if (d->multi) curl_multi_cleanup(d->multi);
    ag_free(d->watches);
    ag_http_client_free(d->http);
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cond);
    ag_free(d);
}
