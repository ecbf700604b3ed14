/*
 * routes.c — agora-inventory's HTTP API (services/inventory/README.md).
 *
 *   GET  /v1/inventory/:productId              any authenticated caller
 *   GET  /v1/inventory                         admin, paginated
 *   POST /v1/inventory/:productId/adjust       admin
 *   POST /v1/reservations                      service or admin
 *   GET  /v1/reservations/:orderId             service or admin
 *   POST /v1/reservations/:orderId/commit      service or admin
 *   POST /v1/reservations/:orderId/release     service or admin
 *   POST /v1/reservations/:orderId/return      service or admin
 *
 * A reservation, keyed by the order id, moves through these states:
 *
 *        POST /v1/reservations
 *          |                \  (some line short: nothing is reserved)
 *          v                 v
 *      RESERVED            FAILED   (terminal; kept so a repeat answers 409 again)
 *       |     \
 *  commit     release
 *       v       v
 *  COMMITTED  RELEASED   (terminal)
 *       |
 *    return   (an order cancelled after it was confirmed, before shipping)
 *       v
 *  RETURNED   (terminal)
 *
 * commit on COMMITTED, release on RELEASED and return on RETURNED answer 200
 * with the state unchanged (idempotent); any other move is 409.
 * commit takes the units out of stock (quantity -= n, reserved -= n);
 * release gives them back to available (reserved -= n); return puts
 * committed units back into stock (quantity += n).
 *
 * Every change runs in one ag_store_tx together with its outbox events. A
 * transaction function may run more than once (ag_store_tx retries on
 * conflicts), so each one starts by resetting what it reports.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "inventory.h"

/* ---- Helpers ---------------------------------------------------------------------- */

/* Product and order ids: letters, digits, '-' and '_', 1 to INV_ID_MAX. */
static bool id_ok(const char *s)
{
    return ag_id_token_ok(s, INV_ID_MAX);
}

static const char *path_id(ag_http_req *req, ag_http_res *res, const char *name, const char *what)
{
    const char *id = ag_req_param(req, name);
    if (!id || !id_ok(id)) {
        ag_res_error(res, 404, "NOT_FOUND", what, NULL);
        return NULL;
    }
    return id;
}

/* ---- Stock ---------------------------------------------------------------------------- */

static void get_stock(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!ag_auth_caller_required(req, res)) return;
    const char *id = path_id(req, res, "productId", "no stock is known for this product");
    if (!id) return;
    ag_db *db;
    inv_stock s;
    int rc = ag_store_db(g_inv.store, &db);
    if (rc == 0) rc = inv_stock_get(db, id, &s);
    if (!ag_res_rc(req, res, rc, "no stock is known for this product", "stock read failed"))
        ag_res_ok(res, 200, inv_stock_json(&s));
}

static void list_stock(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!ag_auth_caller_role(req, res, "admin")) return;
    ag_validator v;
    ag_v_init(&v);
    int64_t page = ag_v_query_int(&v, req, "page", 1, 1, 1000000);
    int64_t limit = ag_v_query_int(&v, req, "limit", 20, 1, 100);
    if (!ag_v_passed(&v, res, NULL)) return;
    ag_db *db;
    int64_t total = 0;
    json_t *arr = json_array();
    int rc = ag_store_db(g_inv.store, &db);
    if (rc == 0) rc = inv_stock_list(db, page, limit, arr, &total);
    ag_res_page_rc(req, res, rc, arr, page, limit, total, "stock list failed");
}

typedef struct adjust_ctx {
    const char *product, *reason, *actor, *location;
    int64_t delta;
    const int64_t *low_level;
    bool created, insufficient;
} adjust_ctx;

static int adjust_tx(ag_db *db, void *ud)
{
    adjust_ctx *c = ud;
    c->created = c->insufficient = false;
    int rc;
    if (c->delta > 0) {
        rc = inv_stock_create(db, c->product, c->delta, &c->created);
        if (rc == 0 && !c->created) rc = inv_stock_add(db, c->product, c->delta);
    } else {
        rc = inv_stock_add(db, c->product, c->delta);
        if (rc == AG_ECONSTRAINT || rc == AG_ENOTFOUND) {
            c->insufficient = true;
            return AG_ECONSTRAINT;
        }
    }
    if (rc == 0 && (c->low_level || c->location))
        rc = inv_stock_set_meta(db, c->product, c->low_level, c->location);
    if (rc == 0) rc = inv_adjustment_record(db, c->product, c->delta, c->reason, c->actor);
    if (rc == 0) rc = inv_low_stock_check(db, c->product);
    return rc;
}

static void post_adjust(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_role(req, res, "admin");
    if (!me) return;
    const char *id = path_id(req, res, "productId", "no such product");
    if (!id) return;
    json_t *body;
    if (ag_req_json(req, res, &body) < 0) return;
    static const char *const allowed[] = {"delta", "reason", "lowStockLevel", "location", NULL};
    ag_validator v;
    ag_v_init(&v);
    long long delta = 0, level = 0;
    bool has_level = false;
    adjust_ctx c;
    memset(&c, 0, sizeof c);
    if (ag_v_fields(&v, body, allowed)) {
        if (ag_v_int(&v, body, "delta", AG_V_REQUIRED, -INV_MAX_QUANTITY, INV_MAX_QUANTITY,
                     &delta) &&
            delta == 0)
            ag_v_fail(&v, "delta", "delta must not be zero");
        c.reason = ag_v_str(&v, body, "reason", AG_V_REQUIRED, 1, 200);
        has_level = ag_v_int(&v, body, "lowStockLevel", 0, 0, INV_MAX_QUANTITY, &level);
        c.location = ag_v_str(&v, body, "location", 0, 1, 128);
    }
    if (!ag_v_passed(&v, res, body)) return;
    int64_t low = level;
    c.product = id;
    c.delta = delta;
    c.actor = me->id;
    c.low_level = has_level ? &low : NULL;
    int rc = ag_store_tx(g_inv.store, adjust_tx, &c);
    json_decref(body);
    if (c.insufficient) {
        ag_res_error(res, 409, "INSUFFICIENT_STOCK",
                     "the adjustment would take stock below zero or below what is reserved", NULL);
        return;
    }
    ag_db *db;
    inv_stock s;
    if (rc == 0) rc = ag_store_db(g_inv.store, &db);
    if (rc == 0) rc = inv_stock_get(db, id, &s);
    if (ag_res_rc(req, res, rc, NULL, "stock adjustment failed")) return;
    ag_res_ok(res, c.created ? 201 : 200, inv_stock_json(&s));
}

/* ---- Reservations -------------------------------------------------------------------- */

static int item_cmp(const void *a, const void *b)
{
    return strcmp(((const inv_item *)a)->product_id, ((const inv_item *)b)->product_id);
}

typedef struct reserve_ctx {
    const char *order, *key;
    inv_item *items;
    size_t n;
    int status;        /* 201, or 409 when short */
    bool conflict;     /* the order id was used with other items */
    json_t *shortages; /* 409's details */
} reserve_ctx;

static int reserve_tx(ag_db *db, void *ud)
{
    reserve_ctx *c = ud;
    c->status = 0;
    c->conflict = false;
    json_decref(c->shortages);
    c->shortages = NULL;
    char state[16], key[INV_MAX_ITEMS * (INV_ID_MAX + 12) + 1], sh[16384];
    int rc = inv_reservation_get(db, c->order, state, key, sizeof key, sh, sizeof sh);
    if (rc == 0) { /* a repeat */
        if (strcmp(key, c->key) != 0) {
            c->conflict = true;
            return 0;
        }
        c->status = strcmp(state, "FAILED") == 0 ? 409 : 201;
        if (c->status == 409) c->shortages = json_loads(sh, 0, NULL);
        return 0;
    }
    if (rc != AG_ENOTFOUND) return rc;
    bool *got = ag_calloc(c->n, sizeof *got);
    json_t *shortages = json_array();
    for (size_t i = 0; i < c->n; i++) {
        rc = inv_stock_reserve(db, c->items[i].product_id, c->items[i].quantity);
        if (rc == 0) {
            got[i] = true;
            continue;
        }
        if (rc != AG_ECONSTRAINT) goto out;
        inv_stock s;
        int64_t avail = 0;
        rc = inv_stock_get(db, c->items[i].product_id, &s);
        if (rc == 0 && !s.deleted) avail = s.quantity - s.reserved;
        if (rc < 0 && rc != AG_ENOTFOUND) goto out;
        json_array_append_new(shortages,
                              json_pack("{s:s, s:I, s:I}", "productId", c->items[i].product_id,
                                        "requested", (json_int_t)c->items[i].quantity, "available",
                                        (json_int_t)avail));
    }
    rc = 0;
    if (json_array_size(shortages) > 0) {
        /* All or nothing: give back what this transaction took. */
        for (size_t i = 0; rc == 0 && i < c->n; i++)
            if (got[i])
                rc = inv_stock_unreserve(db, c->items[i].product_id, c->items[i].quantity, false);
        char *text = rc == 0 ? json_dumps(shortages, JSON_COMPACT) : NULL;
        if (rc == 0)
            rc = inv_reservation_insert(db, c->order, "FAILED", c->key, text, c->items, c->n);
        free(text);
        if (rc == 0)
            rc = inv_publish(db, "inventory.reservation_failed", c->order,
                             json_pack("{s:s, s:o, s:O}", "orderId", c->order, "items",
                                       inv_items_json(c->items, c->n), "shortages", shortages));
        c->status = 409;
        c->shortages = json_incref(shortages);
    } else {
        rc = inv_reservation_insert(db, c->order, "RESERVED", c->key, NULL, c->items, c->n);
        if (rc == 0)
            rc = inv_publish(db, "inventory.reserved", c->order,
                             json_pack("{s:s, s:o}", "orderId", c->order, "items",
                                       inv_items_json(c->items, c->n)));
        for (size_t i = 0; rc == 0 && i < c->n; i++)
            rc = inv_low_stock_check(db, c->items[i].product_id);
        c->status = 201;
    }
    /* The same order id reserved at the same moment by another request: run
     * again, and answer as a repeat of it. */
    if (rc == AG_EEXISTS) rc = AG_ERETRY;
out:
    json_decref(shortages);
    ag_free(got);
    return rc;
}

int inv_reserve(const char *order, inv_item *items, size_t n, inv_reserve_outcome *outcome,
                json_t **shortages)
{
    *shortages = NULL;
    qsort(items, n, sizeof *items, item_cmp);
    ag_buf key;
    ag_buf_init(&key, 0);
    for (size_t i = 0; i < n; i++)
        ag_buf_printf(&key, "%s%s:%lld", i ? "," : "", items[i].product_id,
                      (long long)items[i].quantity);
    reserve_ctx c = {.order = order, .key = key.data ? key.data : "", .items = items, .n = n};
    int rc = ag_store_tx(g_inv.store, reserve_tx, &c);
    ag_buf_release(&key);
    if (rc < 0) {
        json_decref(c.shortages);
        return rc;
    }
    *outcome = c.conflict ? INV_RESERVE_CONFLICT : c.status == 409 ? INV_RESERVE_SHORT : INV_RESERVE_OK;
    *shortages = c.shortages;
    return 0;
}

static void answer_reservation(ag_http_req *req, ag_http_res *res, const char *order, int status)
{
    ag_db *db;
    json_t *j = NULL;
    if (ag_store_db(g_inv.store, &db) == 0) j = inv_reservation_json(db, order);
    if (!j)
        ag_res_internal(req, res, "reservation read failed", AG_EIO);
    else
        ag_res_ok(res, status, j);
}

static void post_reservation(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!ag_auth_caller_role(req, res, "service")) return;
    json_t *body;
    if (ag_req_json(req, res, &body) < 0) return;
    static const char *const allowed[] = {"orderId", "items", NULL};
    static const char *const item_fields[] = {"productId", "quantity", NULL};
    ag_validator v;
    ag_v_init(&v);
    const char *order = NULL;
    json_t *arr = NULL;
    inv_item *items = ag_calloc(INV_MAX_ITEMS, sizeof *items);
    size_t n = 0;
    if (ag_v_fields(&v, body, allowed)) {
        order = ag_v_str(&v, body, "orderId", AG_V_REQUIRED, 1, INV_ID_MAX);
        if (order && !id_ok(order))
            ag_v_fail(&v, "orderId", "orderId must be an id (letters, digits, - or _)");
        arr = ag_v_array(&v, body, "items", AG_V_REQUIRED, 1, INV_MAX_ITEMS);
    }
    size_t i;
    json_t *it;
    if (arr) json_array_foreach(arr, i, it)
        {
            if (!json_is_object(it)) {
                ag_v_fail(&v, "items", "items[%zu] must be an object", i);
                continue;
            }
            ag_v_only_fields(&v, it, NULL, item_fields);
            const char *pid = ag_v_str(&v, it, "productId", AG_V_REQUIRED, 1, INV_ID_MAX);
            long long q = 0;
            bool qok = ag_v_int(&v, it, "quantity", AG_V_REQUIRED, 1, INV_MAX_QUANTITY, &q);
            if (pid && !id_ok(pid)) {
                ag_v_fail(&v, "items", "items[%zu].productId must be a product id", i);
            } else if (pid && qok) {
                snprintf(items[n].product_id, sizeof items[n].product_id, "%s", pid);
                items[n++].quantity = q;
            }
        }
    qsort(items, n, sizeof *items, item_cmp);
    for (i = 1; i < n; i++)
        if (strcmp(items[i].product_id, items[i - 1].product_id) == 0)
            ag_v_fail(&v, "items", "product %s appears more than once", items[i].product_id);
    if (!ag_v_ok(&v)) {
        ag_res_validation(res, &v);
        json_decref(body);
        ag_free(items);
        return;
    }
    ag_v_release(&v);
    inv_reserve_outcome outcome;
    json_t *shortages;
    int rc = inv_reserve(order, items, n, &outcome, &shortages);
    if (rc < 0) {
        ag_res_internal(req, res, "reservation failed", rc);
    } else if (outcome == INV_RESERVE_CONFLICT) {
        ag_res_error(res, 409, "IDEMPOTENCY_CONFLICT",
                     "this order id was already used for a reservation of other items", NULL);
    } else if (outcome == INV_RESERVE_SHORT) {
        ag_res_error(res, 409, "INSUFFICIENT_STOCK",
                     "not enough stock for every item; nothing was reserved",
                     shortages ? json_incref(shortages) : NULL);
    } else {
        answer_reservation(req, res, order, 201);
    }
    json_decref(shortages);
    json_decref(body);
    ag_free(items);
}

static void get_reservation(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!ag_auth_caller_role(req, res, "service")) return;
    const char *order = path_id(req, res, "orderId", "no such reservation");
    if (!order) return;
    ag_db *db;
    char state[16];
    int rc = ag_store_db(g_inv.store, &db);
    if (rc == 0) rc = inv_reservation_get(db, order, state, NULL, 0, NULL, 0);
    if (!ag_res_rc(req, res, rc, "no such reservation", "reservation read failed"))
        answer_reservation(req, res, order, 200);
}

static const struct {
    const char *from, *to, *verb;
} k_finish[] = {
    [FINISH_COMMIT] = {"RESERVED", "COMMITTED", "committed"},
    [FINISH_RELEASE] = {"RESERVED", "RELEASED", "released"},
    [FINISH_RETURN] = {"COMMITTED", "RETURNED", "returned"},
};

typedef struct finish_ctx {
    const char *order;
    finish_op op;
    char state[16]; /* the state found */
} finish_ctx;

static int finish_tx(ag_db *db, void *ud)
{
    finish_ctx *c = ud;
    c->state[0] = '\0';
    int rc = inv_reservation_get(db, c->order, c->state, NULL, 0, NULL, 0);
    if (rc < 0) return rc;
    if (strcmp(c->state, k_finish[c->op].from) != 0) return 0; /* routes decide: repeat or 409 */
    inv_item *items;
    size_t n;
    rc = inv_reservation_items(db, c->order, &items, &n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = c->op == FINISH_RETURN
                 ? inv_stock_restock(db, items[i].product_id, items[i].quantity)
                 : inv_stock_unreserve(db, items[i].product_id, items[i].quantity,
                                       c->op == FINISH_COMMIT);
    if (rc == 0) rc = inv_reservation_set_state(db, c->order, k_finish[c->op].to);
    if (rc == 0 && c->op != FINISH_COMMIT)
        rc = inv_publish(db, "inventory.released", c->order,
                         json_pack("{s:s, s:o, s:b}", "orderId", c->order, "items",
                                   inv_items_json(items, n), "returned", c->op == FINISH_RETURN));
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = inv_low_stock_check(db, items[i].product_id);
    ag_free(items);
    return rc;
}

int inv_finish(const char *order, finish_op op, char *msg, size_t msg_len)
{
    finish_ctx c = {.order = order, .op = op};
    int rc = ag_store_tx(g_inv.store, finish_tx, &c);
    if (rc < 0) return rc;
    if (strcmp(c.state, k_finish[op].from) != 0 && strcmp(c.state, k_finish[op].to) != 0) {
        snprintf(msg, msg_len, "the reservation is %s; it cannot be %s", c.state,
                 k_finish[op].verb);
        return AG_ESTATE;
    }
    return 0;
}

static void finish(ag_http_req *req, ag_http_res *res, finish_op op)
{
    if (!ag_auth_caller_role(req, res, "service")) return;
    const char *order = path_id(req, res, "orderId", "no such reservation");
    if (!order) return;
    char msg[128];
    int rc = inv_finish(order, op, msg, sizeof msg);
    if (rc == AG_ENOTFOUND) {
        ag_res_error(res, 404, "NOT_FOUND", "no such reservation", NULL);
    } else if (rc == AG_ESTATE) {
        ag_res_error(res, 409, "INVALID_STATE", msg, NULL);
    } else if (rc < 0) {
        char what[64];
        snprintf(what, sizeof what, "%s failed", k_finish[op].verb);
        ag_res_internal(req, res, what, rc);
    } else {
        answer_reservation(req, res, order, 200);
    }
}

static void post_commit(ag_http_req *req, ag_http_res *res, void *ud)
{
    finish(req, res, FINISH_COMMIT);
}

static void post_release(ag_http_req *req, ag_http_res *res, void *ud)
{
    finish(req, res, FINISH_RELEASE);
}

static void post_return(ag_http_req *req, ag_http_res *res, void *ud)
{
    finish(req, res, FINISH_RETURN);
}

void inventory_routes(ag_router *r)
{
    ag_router_add(r, "GET", "/v1/inventory", list_stock, NULL, 0);
    ag_router_add(r, "GET", "/v1/inventory/:productId", get_stock, NULL, 0);
    ag_router_add(r, "POST", "/v1/inventory/:productId/adjust", post_adjust, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "POST", "/v1/reservations", post_reservation, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "GET", "/v1/reservations/:orderId", get_reservation, NULL, 0);
    ag_router_add(r, "POST", "/v1/reservations/:orderId/commit", post_commit, NULL, 0);
    ag_router_add(r, "POST", "/v1/reservations/:orderId/release", post_release, NULL, 0);
    ag_router_add(r, "POST", "/v1/reservations/:orderId/return", post_return, NULL, 0);
}
