/*
 * routes.c — agora-registry's HTTP API: the subset of Consul's agent, health
 * and catalog endpoints that Consul clients use, with Consul's field names
 * and shapes (docs/internals/registry.md), and the blocking queries.
 *
 * Writes (register, deregister, check pass/warn/fail) run on the worker pool:
 * they change the catalog under g_reg.mu and answer once the persister has
 * written the change. Reads that may block (health/service, catalog/service,
 * catalog/services) are AG_ROUTE_ASYNC: they run on the I/O loop and, when
 * the client's index is current, park a waiter on that loop instead of a
 * thread. A waiter ends one of three ways, all on its loop:
 *
 *   parked ── index moved (reg_changed posts a scan) ──► answer, send
 *     │ ──── its wait (+ jitter up to wait/16) ran out ─► answer, same index
 *     └───── client went away (abort callback) ────────► send (only releases)
 *
 * Waiters are kept in one list per loop, touched only by that loop's thread,
 * so no lock guards them; reg_changed reaches them with ag_loop_post. The
 * handler checks the index and parks the waiter in the same loop callback,
 * and the scan posted by a change runs after it on the same loop, so no
 * wake-up can fall between the two.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "registry.h"

#define WAIT_DEFAULT_MS (5 * 60 * 1000)
#define WAIT_MAX_MS (10 * 60 * 1000)
#define MAX_LOOPS 256

reg_state g_reg;

/* ---- The catalog ------------------------------------------------------------------ */

const char *reg_status_name(reg_status s)
{
    return s == REG_PASSING ? "passing" : s == REG_WARNING ? "warning" : "critical";
}

reg_svc *reg_find(const char *id)
{
    for (int i = 0; i < g_reg.nsvcs; i++)
        if (strcmp(g_reg.svcs[i]->id, id) == 0) return g_reg.svcs[i];
    return NULL;
}

uint64_t reg_touch(const char *name)
{
    g_reg.index++;
    if (name) json_object_set_new(g_reg.names, name, json_integer((json_int_t)g_reg.index));
    return g_reg.index;
}

void reg_remove_at(int i)
{
    reg_svc *s = g_reg.svcs[i];
    reg_touch(s->name);
    memmove(&g_reg.svcs[i], &g_reg.svcs[i + 1], (size_t)(g_reg.nsvcs - i - 1) * sizeof *g_reg.svcs);
    g_reg.nsvcs--;
    reg_svc_free(s);
}

reg_status reg_svc_status(const reg_svc *s)
{
    reg_status worst = REG_PASSING;
    for (int i = 0; i < s->nchecks; i++)
        if (s->checks[i].status > worst) worst = s->checks[i].status;
    return worst;
}

/* The index a query about `name` (NULL: every service) reports. An unknown
 * name reports 1: strictly positive, and below any index its first
 * registration will bring. */
static uint64_t index_of(const char *name)
{
    if (!name) return g_reg.index;
    json_t *v = json_object_get(g_reg.names, name);
    return v ? (uint64_t)json_integer_value(v) : 1;
}

/* ---- Shapes ----------------------------------------------------------------------- */

static json_t *node_json(void)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:{}, s:{}, s:I, s:I}", "ID", "", "Node", g_reg.node,
                     "Address", "127.0.0.1", "Datacenter", "dc1", "TaggedAddresses", "Meta",
                     "CreateIndex", (json_int_t)1, "ModifyIndex", (json_int_t)1);
}

static json_t *agent_service_json(const reg_svc *s)
{
    return json_pack("{s:s, s:s, s:O, s:O, s:i, s:s, s:{s:i, s:i}, s:b, s:s}", "ID", s->id,
                     "Service", s->name, "Tags", s->tags, "Meta", s->meta, "Port", s->port,
                     "Address", s->address, "Weights", "Passing", 1, "Warning", 1,
                     "EnableTagOverride", 0, "Datacenter", "dc1");
}

static json_t *check_json(const reg_svc *s, const reg_check *c)
{
    char iv[32] = "", to[32] = "";
    if (c->http) {
        snprintf(iv, sizeof iv, "%llums", (unsigned long long)c->interval_ms);
        snprintf(to, sizeof to, "%llums", (unsigned long long)c->timeout_ms);
    }
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:O, s:s, s:s, s:s, s:I, s:I}",
                     "Node", g_reg.node, "CheckID", c->id, "Name", c->name, "Status",
                     reg_status_name(c->status), "Notes", "", "Output", c->output ? c->output : "",
                     "ServiceID", s->id, "ServiceName", s->name, "ServiceTags", s->tags, "Type",
                     c->http ? "http" : "ttl", "Interval", iv, "Timeout", to, "CreateIndex",
                     (json_int_t)c->create_index, "ModifyIndex", (json_int_t)c->modify_index);
}

static bool has_tag(const reg_svc *s, const char *tag)
{
    size_t i;
    json_t *t;
    json_array_foreach(s->tags, i, t) if (strcmp(json_string_value(t), tag) == 0) return true;
    return false;
}

/* /v1/health/service/:name. Under g_reg.mu. */
static json_t *health_json(const char *name, bool passing, const char *tag)
{
    json_t *arr = json_array();
    for (int i = 0; i < g_reg.nsvcs; i++) {
        reg_svc *s = g_reg.svcs[i];
        if (strcmp(s->name, name) != 0) continue;
        if (passing && reg_svc_status(s) != REG_PASSING) continue;
        if (tag && !has_tag(s, tag)) continue;
        json_t *checks = json_array();
        for (int k = 0; k < s->nchecks; k++)
            json_array_append_new(checks, check_json(s, &s->checks[k]));
        json_t *svc = json_pack(
            "{s:s, s:s, s:O, s:s, s:i, s:O, s:{s:i, s:i}, s:b, s:I, s:I}", "ID", s->id, "Service",
            s->name, "Tags", s->tags, "Address", s->address, "Port", s->port, "Meta", s->meta,
            "Weights", "Passing", 1, "Warning", 1, "EnableTagOverride", 0, "CreateIndex",
            (json_int_t)s->create_index, "ModifyIndex", (json_int_t)s->modify_index);
        json_array_append_new(arr, json_pack("{s:o, s:o, s:o}", "Node", node_json(), "Service", svc,
                                             "Checks", checks));
    }
    return arr;
}

/* /v1/catalog/service/:name. Under g_reg.mu. */
static json_t *catalog_service_json(const char *name, const char *tag)
{
    json_t *arr = json_array();
    for (int i = 0; i < g_reg.nsvcs; i++) {
        reg_svc *s = g_reg.svcs[i];
        if (strcmp(s->name, name) != 0) continue;
        if (tag && !has_tag(s, tag)) continue;
        json_array_append_new(
            arr,
            json_pack("{s:s, s:s, s:s, s:s, s:{}, s:{}, s:s, s:s, s:s, s:O, s:s, s:O, s:i, "
                      "s:b, s:I, s:I}",
                      "ID", "", "Node", g_reg.node, "Address", "127.0.0.1", "Datacenter", "dc1",
                      "TaggedAddresses", "NodeMeta", "ServiceKind", "", "ServiceID", s->id,
                      "ServiceName", s->name, "ServiceTags", s->tags, "ServiceAddress", s->address,
                      "ServiceMeta", s->meta, "ServicePort", s->port, "ServiceEnableTagOverride", 0,
                      "CreateIndex", (json_int_t)s->create_index, "ModifyIndex",
                      (json_int_t)s->modify_index));
    }
    return arr;
}

/* /v1/catalog/services: {"name": [tags...]} with each tag once. */
static json_t *catalog_services_json(void)
{
    json_t *o = json_object();
    for (int i = 0; i < g_reg.nsvcs; i++) {
        reg_svc *s = g_reg.svcs[i];
        json_t *tags = json_object_get(o, s->name);
        if (!tags) {
            tags = json_array();
            json_object_set_new(o, s->name, tags);
        }
        size_t k;
        json_t *t;
        json_array_foreach(s->tags, k, t)
        {
            bool seen = false;
            size_t j;
            json_t *u;
            json_array_foreach(tags, j, u) if (json_equal(t, u)) seen = true;
            if (!seen) json_array_append(tags, t);
        }
    }
    return o;
}

/* ---- Metrics ---------------------------------------------------------------------- */

static ag_metric *g_instances;
static atomic_long g_waiting;

static double waiting_gauge(void *ud)
{
    (void)ud;
    return (double)atomic_load(&g_waiting);
}

static void update_gauges(void)
{
    if (!g_instances) return;
    int n[3] = {0, 0, 0};
    pthread_mutex_lock(&g_reg.mu);
    for (int i = 0; i < g_reg.nsvcs; i++)
        n[reg_svc_status(g_reg.svcs[i])]++;
    pthread_mutex_unlock(&g_reg.mu);
    for (int s = 0; s < 3; s++) {
        const char *v[] = {reg_status_name((reg_status)s)};
        ag_series_set(ag_metric_series(g_instances, v), n[s]);
    }
}

/* ---- Blocking queries -------------------------------------------------------------- */

typedef enum qkind { Q_HEALTH, Q_CATALOG_SERVICE, Q_CATALOG_SERVICES } qkind;

typedef struct waiter {
    struct waiter *prev, *next;
    struct loop_slot *slot;
    ag_http_req *req;
    ag_http_res *res;
    qkind kind;
    const char *name; /* in the request's arena */
    const char *tag;
    bool passing;
    uint64_t index;
    uv_timer_t timer;
} waiter;

typedef struct loop_slot {
    _Atomic(ag_loop *) loop;
    waiter *head; /* loop thread only */
    atomic_int count;
    atomic_bool scan_posted;
} loop_slot;

static loop_slot g_slots[MAX_LOOPS];
static atomic_bool g_draining;

/* Builds the answer of a query (status, X-Consul-Index, body). On any thread. */
static void answer(ag_http_res *res, qkind kind, const char *name, bool passing, const char *tag)
{
    pthread_mutex_lock(&g_reg.mu);
    uint64_t idx = index_of(kind == Q_CATALOG_SERVICES ? NULL : name);
    json_t *body = kind == Q_HEALTH            ? health_json(name, passing, tag)
                   : kind == Q_CATALOG_SERVICE ? catalog_service_json(name, tag)
                                               : catalog_services_json();
    pthread_mutex_unlock(&g_reg.mu);
    char ix[32];
    snprintf(ix, sizeof ix, "%llu", (unsigned long long)idx);
    ag_res_header(res, "X-Consul-Index", ix);
    ag_res_header(res, "X-Consul-KnownLeader", "true");
    ag_res_header(res, "X-Consul-LastContact", "0");
    ag_res_json(res, 200, body);
}

static uint64_t current_index(qkind kind, const char *name)
{
    pthread_mutex_lock(&g_reg.mu);
    uint64_t idx = index_of(kind == Q_CATALOG_SERVICES ? NULL : name);
    pthread_mutex_unlock(&g_reg.mu);
    return idx;
}

static void on_timer_closed(uv_handle_t *h)
{
    ag_free(h->data);
}

/* Unlinks w and frees it (the timer closes first). On w's loop. */
static void waiter_end(waiter *w)
{
    loop_slot *sl = w->slot;
    if (w->prev)
        w->prev->next = w->next;
    else
        sl->head = w->next;
    if (w->next) w->next->prev = w->prev;
    atomic_fetch_sub(&sl->count, 1);
    atomic_fetch_sub(&g_waiting, 1);
    uv_timer_stop(&w->timer);
    w->timer.data = w;
    uv_close((uv_handle_t *)&w->timer, on_timer_closed);
}

static void waiter_answer(waiter *w)
{
    ag_http_res *res = w->res;
    answer(res, w->kind, w->name, w->passing, w->tag);
    waiter_end(w);
    ag_res_send(res);
}

static void on_wait_timeout(uv_timer_t *t)
{
    waiter_answer(t->data);
}

static void on_client_gone(void *ud)
{
    waiter *w = ud;
    ag_http_res *res = w->res;
    waiter_end(w);
    ag_res_send(res); /* goes nowhere: only releases the response */
}

/* Posted to a loop after a change: answers its waiters whose index moved. */
static void scan_loop(void *arg)
{
    loop_slot *sl = arg;
    atomic_store(&sl->scan_posted, false);
    bool all = atomic_load(&g_draining);
    waiter *w = sl->head;
    while (w) {
        waiter *next = w->next;
        if (all || current_index(w->kind, w->name) > w->index) waiter_answer(w);
        w = next;
    }
}

static void wake_waiters(void)
{
    for (int i = 0; i < MAX_LOOPS; i++) {
        loop_slot *sl = &g_slots[i];
        ag_loop *l = atomic_load(&sl->loop);
        if (!l || atomic_load(&sl->count) == 0) continue;
        if (atomic_exchange(&sl->scan_posted, true)) continue;
        if (ag_loop_post(l, scan_loop, sl) < 0) atomic_store(&sl->scan_posted, false);
    }
}

void reg_release_waiters(void *ud)
{
    (void)ud;
    atomic_store(&g_draining, true);
    wake_waiters();
}

void reg_changed(void)
{
    wake_waiters();
    update_gauges();
    reg_store_kick();
}

/* `wait`: Consul's duration; default 5 min, at most 10 min. */
static int parse_wait(const char *s, uint64_t *ms)
{
    if (!s || !*s) {
        *ms = WAIT_DEFAULT_MS;
        return 0;
    }
    if (reg_parse_duration(s, ms) < 0) return AG_EINVAL;
    if (*ms == 0) *ms = WAIT_DEFAULT_MS;
    if (*ms > WAIT_MAX_MS) *ms = WAIT_MAX_MS;
    return 0;
}

/* `?passing`, `?passing=true|1|yes`: true; "false", "0": false. */
static bool query_flag(ag_http_req *req, const char *name)
{
    const char *v = ag_req_query(req, name);
    if (!v) return false;
    return !(strcasecmp(v, "false") == 0 || strcmp(v, "0") == 0 || strcasecmp(v, "no") == 0);
}

static void h_blocking(ag_http_req *req, ag_http_res *res, void *ud)
{
    qkind kind = (qkind)(intptr_t)ud;
    const char *name = kind == Q_CATALOG_SERVICES ? NULL : ag_req_param(req, "name");
    const char *is = ag_req_query(req, "index");
    const char *tag = ag_req_query(req, "tag");
    bool passing = query_flag(req, "passing");
    uint64_t index = 0, wait_ms;
    if (is && *is) {
        char *end;
        index = strtoull(is, &end, 10);
        if (*end || *is == '-') {
            ag_res_error(res, 400, "BAD_REQUEST", "index must be a non-negative integer", NULL);
            ag_res_send(res);
            return;
        }
    }
    if (parse_wait(ag_req_query(req, "wait"), &wait_ms) < 0) {
        ag_res_error(res, 400, "BAD_REQUEST",
                     "wait must be a duration such as \"30s\", \"500ms\" or \"5m\"", NULL);
        ag_res_send(res);
        return;
    }
    int li = ag_loop_index(ag_req_loop(req));
    if (index == 0 || current_index(kind, name) > index || atomic_load(&g_draining) || li < 0 ||
        li >= MAX_LOOPS) {
        answer(res, kind, name, passing, tag);
        ag_res_send(res);
        return;
    }
    /* Park it. Consul adds up to wait/16 of jitter so that many watchers
     * that started together do not come back together. */
    uint32_t r;
    ag_random_bytes(&r, sizeof r);
    uint64_t jitter = wait_ms / 16 ? r % (wait_ms / 16 + 1) : 0;
    loop_slot *sl = &g_slots[li];
    if (!atomic_load(&sl->loop)) atomic_store(&sl->loop, ag_req_loop(req));
    waiter *w = ag_calloc(1, sizeof *w);
    w->slot = sl;
    w->req = req;
    w->res = res;
    w->kind = kind;
    w->name = name;
    w->tag = tag;
    w->passing = passing;
    w->index = index;
    uv_timer_init(ag_loop_uv(ag_req_loop(req)), &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, on_wait_timeout, wait_ms + jitter, 0);
    w->next = sl->head;
    if (sl->head) sl->head->prev = w;
    sl->head = w;
    atomic_fetch_add(&sl->count, 1);
    atomic_fetch_add(&g_waiting, 1);
    ag_res_on_abort(res, on_client_gone, w);
}

/* ---- Registration ------------------------------------------------------------------ */

static void bad_request(ag_http_res *res, const char *msg)
{
    ag_res_error(res, 400, "BAD_REQUEST", msg, NULL);
}

static void h_register(ag_http_req *req, ag_http_res *res, void *ud)
{
    (void)ud;
    size_t len;
    const char *body = ag_req_body(req, &len);
    char why[400];
    reg_svc *s = reg_svc_parse(body, len, why, sizeof why);
    if (!s) {
        bad_request(res, why);
        return;
    }

    uint64_t now = ag_now_ms();
    pthread_mutex_lock(&g_reg.mu);
    int at = -1;
    for (int i = 0; i < g_reg.nsvcs; i++)
        if (strcmp(g_reg.svcs[i]->id, s->id) == 0) at = i;
    reg_svc *old = at >= 0 ? g_reg.svcs[at] : NULL;
    if (old && strcmp(old->name, s->name) != 0) reg_touch(old->name);
    uint64_t idx = reg_touch(s->name);
    s->create_index = old ? old->create_index : idx;
    s->modify_index = idx;
    for (int i = 0; i < s->nchecks; i++) {
        reg_check *c = &s->checks[i];
        c->gen = ++g_reg.gen;
        c->create_index = c->modify_index = idx;
        c->next_run = now; /* the first HTTP run happens at once */
        c->ttl_expires = now + c->ttl_ms;
        if (c->status == REG_CRITICAL) c->critical_since = ag_wall_ms();
        /* Re-registering keeps what a check already knew. */
        for (int k = 0; old && k < old->nchecks; k++)
            if (strcmp(old->checks[k].id, c->id) == 0) {
                c->status = old->checks[k].status;
                c->critical_since = old->checks[k].critical_since;
                c->create_index = old->checks[k].create_index;
                if (old->checks[k].output) c->output = ag_strdup(old->checks[k].output);
            }
    }
    if (old) {
        g_reg.svcs[at] = s;
        reg_svc_free(old);
    } else {
        g_reg.svcs = ag_realloc(g_reg.svcs, (size_t)(g_reg.nsvcs + 1) * sizeof *g_reg.svcs);
        g_reg.svcs[g_reg.nsvcs++] = s;
    }
    pthread_mutex_unlock(&g_reg.mu);
    ag_info("service registered", AG_FS("id", s->id), AG_FS("service", s->name),
            AG_FS("address", s->address), AG_FI("port", s->port), AG_FI("index", idx));
    reg_changed();
    reg_store_sync();
    ag_res_body(res, 200, "text/plain; charset=utf-8", "", 0);
}

static void h_deregister(ag_http_req *req, ag_http_res *res, void *ud)
{
    (void)ud;
    const char *id = ag_req_param(req, "id");
    pthread_mutex_lock(&g_reg.mu);
    bool found = false;
    for (int i = 0; i < g_reg.nsvcs; i++)
        if (strcmp(g_reg.svcs[i]->id, id) == 0) {
            reg_remove_at(i);
            found = true;
            break;
        }
    pthread_mutex_unlock(&g_reg.mu);
    if (!found) {
        /* Consul answers 404 "Unknown service ID" here. */
        ag_res_error(res, 404, "NOT_FOUND", "unknown service ID", NULL);
        return;
    }
    ag_info("service deregistered", AG_FS("id", id));
    reg_changed();
    reg_store_sync();
    ag_res_body(res, 200, "text/plain; charset=utf-8", "", 0);
}

static void h_agent_service(ag_http_req *req, ag_http_res *res, void *ud)
{
    (void)ud;
    pthread_mutex_lock(&g_reg.mu);
    reg_svc *s = reg_find(ag_req_param(req, "id"));
    json_t *o = s ? agent_service_json(s) : NULL;
    pthread_mutex_unlock(&g_reg.mu);
    if (!o) {
        ag_res_error(res, 404, "NOT_FOUND", "unknown service ID", NULL);
        return;
    }
    ag_res_json(res, 200, o);
}

static void h_agent_services(ag_http_req *req, ag_http_res *res, void *ud)
{
    (void)req;
    (void)ud;
    json_t *o = json_object();
    pthread_mutex_lock(&g_reg.mu);
    for (int i = 0; i < g_reg.nsvcs; i++)
        json_object_set_new(o, g_reg.svcs[i]->id, agent_service_json(g_reg.svcs[i]));
    pthread_mutex_unlock(&g_reg.mu);
    ag_res_json(res, 200, o);
}

/* PUT /v1/agent/check/{pass,warn,fail}/:id — TTL checks (any check, as in
 * Consul, though an HTTP check's next run overrides it). */
static void h_check_update(ag_http_req *req, ag_http_res *res, void *ud)
{
    reg_status st = (reg_status)(intptr_t)ud;
    const char *id = ag_req_param(req, "id");
    const char *note = ag_req_query(req, "note");
    size_t blen;
    const char *body = ag_req_body(req, &blen);
    json_t *j = blen ? json_loadb(body, blen, 0, NULL) : NULL;
    const char *out = json_string_value(json_object_get(j, "Output"));
    if (!out) out = note;
    bool found = false, changed = false;
    pthread_mutex_lock(&g_reg.mu);
    for (int i = 0; i < g_reg.nsvcs && !found; i++) {
        reg_svc *s = g_reg.svcs[i];
        for (int k = 0; k < s->nchecks; k++) {
            reg_check *c = &s->checks[k];
            if (strcmp(c->id, id) != 0) continue;
            found = true;
            if (c->ttl_ms) c->ttl_expires = ag_now_ms() + c->ttl_ms;
            if (c->status != st) {
                c->status = st;
                c->critical_since = st == REG_CRITICAL ? ag_wall_ms() : 0;
                c->modify_index = s->modify_index = reg_touch(s->name);
                changed = true;
            }
            ag_free(c->output);
            c->output = ag_strdup(out ? out : "");
            break;
        }
    }
    pthread_mutex_unlock(&g_reg.mu);
    json_decref(j);
    if (!found) {
        ag_res_error(res, 404, "NOT_FOUND", "unknown check ID", NULL);
        return;
    }
    if (changed) reg_changed();
    ag_res_body(res, 200, "text/plain; charset=utf-8", "", 0);
}

void reg_routes(ag_router *r)
{
    atomic_init(&g_waiting, 0);
    const char *labels[] = {"status"};
    ag_metrics *m = g_reg.metrics;
    g_instances =
        ag_metrics_family(m, AG_GAUGE, "agora_registry_instances",
                          "Registered service instances by health status.", 1, labels, NULL, 0);
    ag_metrics_gauge_fn(m, "agora_registry_blocking_queries",
                        "Blocking queries waiting for a change.", waiting_gauge, NULL);
    update_gauges();

    ag_router_add(r, "PUT", "/v1/agent/service/register", h_register, NULL, 0);
    ag_router_add(r, "PUT", "/v1/agent/service/deregister/:id", h_deregister, NULL, 0);
    ag_router_add(r, "GET", "/v1/agent/service/:id", h_agent_service, NULL, 0);
    ag_router_add(r, "GET", "/v1/agent/services", h_agent_services, NULL, 0);
    ag_router_add(r, "PUT", "/v1/agent/check/pass/:id", h_check_update, (void *)REG_PASSING, 0);
    ag_router_add(r, "PUT", "/v1/agent/check/warn/:id", h_check_update, (void *)REG_WARNING, 0);
    ag_router_add(r, "PUT", "/v1/agent/check/fail/:id", h_check_update, (void *)REG_CRITICAL, 0);
    ag_router_add(r, "GET", "/v1/health/service/:name", h_blocking, (void *)Q_HEALTH,
                  AG_ROUTE_ASYNC);
    ag_router_add(r, "GET", "/v1/catalog/service/:name", h_blocking, (void *)Q_CATALOG_SERVICE,
                  AG_ROUTE_ASYNC);
    ag_router_add(r, "GET", "/v1/catalog/services", h_blocking, (void *)Q_CATALOG_SERVICES,
                  AG_ROUTE_ASYNC);
}
