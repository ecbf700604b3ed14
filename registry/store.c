/*
 * store.c — agora-registry's persistence (schema/001_registry.sql).
 *
 * The catalog is small (one row per registered instance), so it is written
 * whole: a persister thread takes a snapshot of the catalog under g_reg.mu
 * and replaces the tables' contents in one transaction. Each instance is one
 * row whose `definition` is JSON (its service fields and its checks with
 * their last status and output); registry_names keeps the index of each
 * service name's last change, and registry_meta the index itself.
 *
 * Durability: register and deregister wait for their write (reg_store_sync);
 * check results are written within moments by the thread. The index never
 * goes back across a restart: at start it resumes one past the stored value
 * (an index bumped by a check result that was not yet written when the
 * process died is therefore never handed out twice in the same sequence).
 */
#include <stdlib.h>
#include <string.h>

#include "registry.h"

static pthread_mutex_t g_pmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_pcond = PTHREAD_COND_INITIALIZER;
static uint64_t g_wanted, g_written;
static bool g_stop, g_started;
static pthread_t g_thread;

static json_t *check_to_json(const reg_check *c)
{
    return json_pack("{s:s, s:s, s:s?, s:I, s:I, s:I, s:I, s:i, s:s, s:I, s:I, s:I}", "id", c->id,
                     "name", c->name, "http", c->http, "intervalMs", (json_int_t)c->interval_ms,
                     "timeoutMs", (json_int_t)c->timeout_ms, "ttlMs", (json_int_t)c->ttl_ms,
                     "deregMs", (json_int_t)c->dereg_ms, "status", (int)c->status, "output",
                     c->output ? c->output : "", "criticalSince", (json_int_t)c->critical_since,
                     "createIndex", (json_int_t)c->create_index, "modifyIndex",
                     (json_int_t)c->modify_index);
}

static json_t *svc_to_json(const reg_svc *s)
{
    json_t *checks = json_array();
    for (int i = 0; i < s->nchecks; i++) json_array_append_new(checks, check_to_json(&s->checks[i]));
    return json_pack("{s:s, s:s, s:s, s:i, s:O, s:O, s:o, s:I, s:I}", "id", s->id, "name", s->name,
                     "address", s->address, "port", s->port, "tags", s->tags, "meta", s->meta,
                     "checks", checks, "createIndex", (json_int_t)s->create_index, "modifyIndex",
                     (json_int_t)s->modify_index);
}

static uint64_t jint(json_t *o, const char *k)
{
    json_int_t v = json_integer_value(json_object_get(o, k));
    return v > 0 ? (uint64_t)v : 0;
}

static reg_svc *svc_from_json(json_t *o)
{
    const char *id = json_string_value(json_object_get(o, "id"));
    const char *name = json_string_value(json_object_get(o, "name"));
    const char *addr = json_string_value(json_object_get(o, "address"));
    json_t *checks = json_object_get(o, "checks");
    if (!id || !name || !addr || !json_is_array(checks)) return NULL;
    reg_svc *s = ag_calloc(1, sizeof *s);
    s->id = ag_strdup(id);
    s->name = ag_strdup(name);
    s->address = ag_strdup(addr);
    s->port = (int)jint(o, "port");
    json_t *tags = json_object_get(o, "tags"), *meta = json_object_get(o, "meta");
    s->tags = json_is_array(tags) ? json_incref(tags) : json_array();
    s->meta = json_is_object(meta) ? json_incref(meta) : json_object();
    s->create_index = jint(o, "createIndex");
    s->modify_index = jint(o, "modifyIndex");
    size_t n = json_array_size(checks);
    s->checks = n ? ag_calloc(n, sizeof *s->checks) : NULL;
    uint64_t now = ag_now_ms();
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(checks, i);
        const char *cid = json_string_value(json_object_get(c, "id"));
        const char *cname = json_string_value(json_object_get(c, "name"));
        if (!cid || !cname) continue;
        reg_check *k = &s->checks[s->nchecks++];
        k->id = ag_strdup(cid);
        k->name = ag_strdup(cname);
        const char *http = json_string_value(json_object_get(c, "http"));
        k->http = http ? ag_strdup(http) : NULL;
        k->interval_ms = jint(c, "intervalMs");
        k->timeout_ms = jint(c, "timeoutMs");
        k->ttl_ms = jint(c, "ttlMs");
        k->dereg_ms = jint(c, "deregMs");
        int st = (int)jint(c, "status");
        k->status = st == 1 ? REG_WARNING : st == 2 ? REG_CRITICAL : REG_PASSING;
        const char *out = json_string_value(json_object_get(c, "output"));
        k->output = ag_strdup(out ? out : "");
        k->critical_since = jint(c, "criticalSince");
        k->create_index = jint(c, "createIndex");
        k->modify_index = jint(c, "modifyIndex");
        k->next_run = now;
        /* A TTL's clock starts again: the process may have been down longer
         * than the TTL, which says nothing about the instance. */
        k->ttl_expires = now + k->ttl_ms;
        if (k->interval_ms < 100 && k->http) k->interval_ms = 100;
    }
    return s;
}

int reg_store_load(void)
{
    ag_db *db;
    int rc = ag_store_db(g_reg.store, &db);
    if (rc < 0) return rc;
    int64_t idx = 0;
    rc = ag_db_query_int(db, "SELECT value FROM registry_meta WHERE key = 'index'", NULL, 0, &idx);
    if (rc < 0 && rc != AG_ENOTFOUND) return rc;
    ag_rows *r;
    rc = ag_db_query(db, "SELECT name, idx FROM registry_names", NULL, 0, &r);
    if (rc < 0) return rc;
    while ((rc = ag_rows_next(r)) == 1)
        json_object_set_new(g_reg.names, ag_rows_text(r, 0), json_integer(ag_rows_int(r, 1)));
    ag_rows_free(r);
    if (rc < 0) return rc;
    rc = ag_db_query(db, "SELECT definition FROM registry_services ORDER BY id", NULL, 0, &r);
    if (rc < 0) return rc;
    while ((rc = ag_rows_next(r)) == 1) {
        json_t *o = json_loads(ag_rows_text(r, 0), 0, NULL);
        reg_svc *s = o ? svc_from_json(o) : NULL;
        json_decref(o);
        if (!s) {
            ag_warn("skipping an unreadable stored service");
            continue;
        }
        for (int k = 0; k < s->nchecks; k++) s->checks[k].gen = ++g_reg.gen;
        g_reg.svcs = ag_realloc(g_reg.svcs, (size_t)(g_reg.nsvcs + 1) * sizeof *g_reg.svcs);
        g_reg.svcs[g_reg.nsvcs++] = s;
    }
    ag_rows_free(r);
    if (rc < 0) return rc;
    g_reg.index = (uint64_t)(idx > 0 ? idx : 0) + 1;
    ag_info("catalog loaded", AG_FI("services", g_reg.nsvcs), AG_FI("index", g_reg.index));
    return 0;
}

typedef struct snapshot {
    json_t *svcs;  /* array of [id, name, definition text] */
    json_t *names; /* object */
    uint64_t index;
} snapshot;

static int write_tx(ag_db *db, void *ud)
{
    snapshot *sn = ud;
    int rc = ag_db_exec(db, "DELETE FROM registry_services", NULL, 0, NULL);
    if (rc == 0) rc = ag_db_exec(db, "DELETE FROM registry_names", NULL, 0, NULL);
    size_t i;
    json_t *e;
    json_array_foreach(sn->svcs, i, e)
    {
        if (rc < 0) break;
        ag_val p[] = {AG_VTEXT(json_string_value(json_array_get(e, 0))),
                      AG_VTEXT(json_string_value(json_array_get(e, 1))),
                      AG_VTEXT(json_string_value(json_array_get(e, 2)))};
        rc = ag_db_exec(db, "INSERT INTO registry_services (id, name, definition) VALUES ($1, $2, $3)",
                        p, 3, NULL);
    }
    const char *k;
    json_t *v;
    json_object_foreach(sn->names, k, v)
    {
        if (rc < 0) break;
        ag_val p[] = {AG_VTEXT(k), AG_VINT(json_integer_value(v))};
        rc = ag_db_exec(db, "INSERT INTO registry_names (name, idx) VALUES ($1, $2)", p, 2, NULL);
    }
    if (rc == 0) {
        ag_val p[] = {AG_VINT(sn->index)};
        rc = ag_db_exec(db,
                        "INSERT INTO registry_meta (key, value) VALUES ('index', $1)"
                        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        p, 1, NULL);
    }
    return rc;
}

/* Writes the catalog as it is now. */
static int write_snapshot(void)
{
    snapshot sn = {.svcs = json_array()};
    pthread_mutex_lock(&g_reg.mu);
    for (int i = 0; i < g_reg.nsvcs; i++) {
        json_t *d = svc_to_json(g_reg.svcs[i]);
        char *text = json_dumps(d, JSON_COMPACT);
        json_decref(d);
        json_array_append_new(sn.svcs, json_pack("[s, s, s]", g_reg.svcs[i]->id,
                                                 g_reg.svcs[i]->name, text));
        free(text);
    }
    sn.names = json_deep_copy(g_reg.names);
    sn.index = g_reg.index;
    pthread_mutex_unlock(&g_reg.mu);
    int rc = ag_store_tx(g_reg.store, write_tx, &sn);
    if (rc < 0) ag_error("could not write the catalog", AG_FERR(rc));
    json_decref(sn.svcs);
    json_decref(sn.names);
    return rc;
}

static void *persister_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_pmu);
    for (;;) {
        while (g_written >= g_wanted && !g_stop) pthread_cond_wait(&g_pcond, &g_pmu);
        if (g_written >= g_wanted && g_stop) break;
        uint64_t target = g_wanted;
        pthread_mutex_unlock(&g_pmu);
        int rc = write_snapshot();
        pthread_mutex_lock(&g_pmu);
        if (rc == 0 || g_stop) g_written = target; /* on failure a later change tries again */
        pthread_cond_broadcast(&g_pcond);
        if (rc < 0 && !g_stop) {
            /* Do not spin on a broken disk: wait for the next change. */
            g_wanted = g_written = target;
        }
    }
    pthread_mutex_unlock(&g_pmu);
    return NULL;
}

void reg_store_start(void)
{
    pthread_mutex_lock(&g_pmu);
    g_wanted = 1; /* write the bumped index at once */
    g_written = 0;
    pthread_mutex_unlock(&g_pmu);
    if (pthread_create(&g_thread, NULL, persister_main, NULL) == 0) g_started = true;
}

void reg_store_kick(void)
{
    pthread_mutex_lock(&g_pmu);
    g_wanted++;
    pthread_cond_broadcast(&g_pcond);
    pthread_mutex_unlock(&g_pmu);
}

void reg_store_sync(void)
{
    pthread_mutex_lock(&g_pmu);
    uint64_t target = ++g_wanted;
    pthread_cond_broadcast(&g_pcond);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 2;
    while (g_written < target && g_started)
        if (pthread_cond_timedwait(&g_pcond, &g_pmu, &until) != 0) break;
    pthread_mutex_unlock(&g_pmu);
}

void reg_store_stop(void *ud)
{
    (void)ud;
    if (!g_started) return;
    pthread_mutex_lock(&g_pmu);
    g_wanted++; /* one last write with the final state */
    g_stop = true;
    pthread_cond_broadcast(&g_pcond);
    pthread_mutex_unlock(&g_pmu);
    pthread_join(g_thread, NULL);
    g_started = false;
}
