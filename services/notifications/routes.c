/*
 * routes.c — agora-notifications' HTTP API (services/notifications/README.md).
 *
 *   GET  /v1/notifications        the caller's, newest first, paginated,
 *                                 ?unread=true for the unread ones only;
 *                                 "unreadCount" (and "unread", which the
 *                                 gateway's dashboard reads) beside the page
 *   POST /v1/notifications/read   {"ids": [...]} or {"all": true}: marks the
 *                                 caller's as read; answers how many changed
 *   GET  /v1/presence?userIds=a,b online or offline now, for each (at most
 *                                 100 ids; unknown users are offline)
 *   GET  /v1/ws                   ws.c
 *   GET  /v1/stream               sse.c
 *
 * Each caller sees only their own notifications; another user's id in
 * "ids" changes nothing (it is not counted). Every caller is recorded in
 * the users projection when unknown (verify.c explains why).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "notifications.h"

#define MAX_IDS 1000

int nt_auth_middleware(ag_http_req *req, ag_http_res *res, void *ud)
{
    const char *route = ag_req_route(req);
    if (route && (strcmp(route, "/v1/ws") == 0 || strcmp(route, "/v1/stream") == 0))
        return AG_NEXT; /* on the loop: verified on the pool by ws.c / sse.c */
    return ag_auth_middleware(req, res, ud);
}

/* The caller, recorded in the projection when new. */
static const ag_caller *caller(ag_http_req *req, ag_http_res *res, ag_db **db)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return NULL;
    int rc = ag_store_db(g_nt.store, db);
    if (rc == 0) rc = nt_user_learn(*db, me->id, me->email, me->role);
    if (rc < 0) {
        ag_res_internal(req, res, "store unavailable", rc);
        return NULL;
    }
    return me;
}

typedef struct list_ctx {
    const char *user;
    bool unread_only;
    int64_t page, limit, total, unread;
    json_t *arr;
} list_ctx;

/* The page, its total and the unread count from one snapshot: read apart,
 * a notification committed between them makes them disagree. */
static int list_tx(ag_db *db, void *ud)
{
    list_ctx *c = ud;
    json_array_clear(c->arr);
    return nt_list(db, c->user, c->unread_only, c->page, c->limit, c->arr, &c->total, &c->unread);
}

static void list(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_db *db;
    const ag_caller *me = caller(req, res, &db);
    if (!me) return;
    ag_validator v;
    ag_v_init(&v);
    int64_t page = ag_v_query_int(&v, req, "page", 1, 1, 1000000);
    int64_t limit = ag_v_query_int(&v, req, "limit", 20, 1, 100);
    const char *u = ag_req_query(req, "unread");
    bool unread_only = false;
    if (u && strcmp(u, "true") == 0)
        unread_only = true;
    else if (u && strcmp(u, "false") != 0)
        ag_v_fail(&v, "unread", "unread must be true or false");
    if (!ag_v_passed(&v, res, NULL)) return;
    json_t *arr = json_array();
    list_ctx lc = {me->id, unread_only, page, limit, 0, 0, arr};
    int rc = ag_store_tx(g_nt.store, list_tx, &lc);
    int64_t total = lc.total, unread = lc.unread;
    if (rc < 0) {
        json_decref(arr);
        ag_res_internal(req, res, "notification list failed", rc);
        return;
    }
    /* The §4 envelope with two more top-level fields after "pagination". */
    json_t *env = ag_page_envelope(arr, page, limit, total);
    json_object_set_new(env, "unreadCount", json_integer(unread));
    json_object_set_new(env, "unread", json_integer(unread));
    ag_res_json(res, 200, env);
}

typedef struct read_ctx {
    const char *user;
    int64_t *ids;
    size_t n;
    bool all;
    int64_t marked, unread;
} read_ctx;

static int read_tx(ag_db *db, void *ud)
{
    read_ctx *c = ud;
    c->marked = 0;
    int rc = 0;
    if (c->all) {
        rc = nt_mark_all_read(db, c->user, &c->marked);
    } else {
        for (size_t i = 0; rc == 0 && i < c->n; i++) {
            int64_t ch = 0;
            rc = nt_mark_read(db, c->user, c->ids[i], &ch);
            c->marked += ch;
        }
    }
    if (rc == 0) rc = nt_unread_count(db, c->user, &c->unread);
    return rc;
}

static void mark_read(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_db *db;
    const ag_caller *me = caller(req, res, &db);
    if (!me) return;
    json_t *body;
    if (ag_req_json(req, res, &body) < 0) return;
    ag_validator v;
    ag_v_init(&v);
    read_ctx c = {.user = me->id};
    json_t *ids = NULL;
    static const char *const allowed[] = {"ids", "all", NULL};
    if (ag_v_fields(&v, body, allowed)) {
        ids = ag_v_array(&v, body, "ids", 0, 1, MAX_IDS);
        bool all = false;
        bool has_all = ag_v_bool(&v, body, "all", 0, &all);
        if (has_all && !all) ag_v_fail(&v, "all", "all must be true when given");
        c.all = has_all && all;
        if (ids && c.all) ag_v_fail(&v, "", "give either ids or all, not both");
        if (!ids && !c.all && ag_v_ok(&v))
            ag_v_fail(&v, "ids", "ids (a list of notification ids) or all: true is required");
    }
    if (ids) {
        c.ids = ag_calloc(json_array_size(ids), sizeof *c.ids);
        size_t i;
        json_t *it;
        json_array_foreach(ids, i, it)
        {
            if (!ag_json_int_of(it, 1, &c.ids[c.n])) {
                ag_v_fail(&v, "ids", "ids[%zu] is not a notification id", i);
                continue;
            }
            c.n++;
        }
    }
    if (!ag_v_ok(&v)) {
        ag_res_validation(res, &v);
        ag_free(c.ids);
        json_decref(body);
        return;
    }
    ag_v_release(&v);
    int rc = ag_store_tx(g_nt.store, read_tx, &c);
    ag_free(c.ids);
    json_decref(body);
    if (ag_res_rc(req, res, rc, NULL, "mark read failed")) return;
    ag_res_ok(res, 200,
              json_pack("{s:I, s:I}", "marked", (json_int_t)c.marked, "unreadCount",
                        (json_int_t)c.unread));
}

static void presence(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!ag_auth_caller_required(req, res)) return;
    const char *q = ag_req_query(req, "userIds");
    if (!q || !*q) {
        ag_res_error(res, 422, "VALIDATION_FAILED", "userIds is required (comma-separated ids)",
                     NULL);
        return;
    }
    json_t *ids = json_array();
    const char *p = q;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0 || n >= NT_USER_MAX || json_array_size(ids) >= 100) {
            json_decref(ids);
            ag_res_error(res, 422, "VALIDATION_FAILED",
                         "userIds: 1 to 100 non-empty ids, comma-separated", NULL);
            return;
        }
        json_array_append_new(ids, json_stringn(p, n));
        p += n + (e ? 1 : 0);
    }
    json_t *out = json_array();
    ag_db *db;
    int rc = ag_store_db(g_nt.store, &db);
    if (rc == 0) rc = nt_presence_get(db, ids, out);
    json_decref(ids);
    if (rc < 0) {
        json_decref(out);
        ag_res_internal(req, res, "presence read failed", rc);
        return;
    }
    ag_res_ok(res, 200, out);
}

void nt_routes(ag_router *r)
{
    ag_router_add(r, "GET", "/v1/presence", presence, NULL, 0);
    ag_router_add(r, "GET", "/v1/notifications", list, NULL, 0);
    ag_router_add(r, "POST", "/v1/notifications/read", mark_read, NULL, AG_ROUTE_JSON);
    nt_ws_routes(r);
    nt_sse_routes(r);
}
