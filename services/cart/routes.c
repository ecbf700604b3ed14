/*
 * routes.c — agora-cart's HTTP API (services/cart/README.md).
 *
 * Every cart route works on the caller's own cart: the user id comes from the
 * verified token (ag_auth_middleware), never from the path or the body, so
 * another user's cart cannot even be named. The client sends product ids and
 * quantities only; names and prices always come from agora-catalog
 * (catalog_client.c), and unknown fields are refused, so no price from a
 * client is ever stored or shown.
 *
 * Adding or changing a line asks catalog first (outside any transaction: no
 * store transaction waits on the network), then checks the limits and writes
 * in one transaction. A transaction function may run more than once
 * (ag_store_tx retries on conflicts), so each one starts by resetting what
 * it reports.
 */
#include <stdlib.h>
#include <string.h>

#include "cart.h"

/* ---- Helpers ---------------------------------------------------------------------- */

/* Every key of `body` must be one of `allowed` (NULL-terminated). */

/* Catalog's ids are UUIDs; anything of letters, digits, '-' and '_' up to
 * CART_PRODUCT_ID_MAX may be one. Nothing else reaches catalog's URL. */
static bool product_id_ok(const char *s)
{
    return ag_id_token_ok(s, CART_PRODUCT_ID_MAX);
}

/* The path's product id, or NULL after answering 404 (it cannot be a line). */
static const char *path_product(ag_http_req *req, ag_http_res *res)
{
    const char *id = ag_req_param(req, "productId");
    if (!id || !product_id_ok(id)) {
        ag_res_error(res, 404, "NOT_FOUND", "no such item in your cart", NULL);
        return NULL;
    }
    return id;
}

static json_t *line_json(const product_info *p, int64_t qty, bool available)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:I, s:I, s:b}", "productId", p->id, "name", p->name,
                     "priceCents", (json_int_t)p->price_cents, "currency", p->currency, "quantity",
                     (json_int_t)qty, "lineTotalCents", (json_int_t)(p->price_cents * qty),
                     "available", available);
}

static ag_deadline lookup_deadline(ag_http_req *req)
{
    return ag_deadline_min(ag_req_deadline(req), ag_deadline_in(g_cart.catalog_timeout_ms));
}

/* Asks catalog about `id` for a write; false after answering when the line
 * cannot be written (unknown or inactive product, catalog unavailable). */
static bool product_for_write(ag_http_req *req, ag_http_res *res, const char *id, product_info *p)
{
    int retry_s = 1;
    int rc = catalog_lookup(req, id, lookup_deadline(req), p, &retry_s);
    if (rc == 0 && p->active) return true;
    if (rc == 0) {
        ag_res_error(res, 409, "PRODUCT_UNAVAILABLE", "this product is no longer sold", NULL);
    } else if (rc == AG_ENOTFOUND) {
        ag_res_error(res, 404, "PRODUCT_NOT_FOUND", "no such product", NULL);
    } else if (rc == AG_EUNAVAIL) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", retry_s);
        ag_res_header(res, "Retry-After", ra);
        ag_res_error(res, 503, "CATALOG_UNAVAILABLE",
                     "the catalog cannot confirm this product now; nothing was changed", NULL);
    } else {
        ag_res_error(res, 502, "CATALOG_ERROR", "the catalog refused the product lookup", NULL);
    }
    return false;
}

/* ---- Writing lines ------------------------------------------------------------------ */

typedef struct line_ctx {
    const char *user;
    product_info p;
    int64_t qty;    /* POST: to add; PUT: the new quantity */
    bool add;       /* POST adds to an existing line; PUT replaces */
    int64_t result; /* the line's quantity after the write */
    bool created, missing, too_many, full;
} line_ctx;

static int line_tx(ag_db *db, void *ud)
{
    line_ctx *c = ud;
    c->result = 0;
    c->created = c->missing = c->too_many = c->full = false;
    int64_t have = 0;
    int rc = cart_line_quantity(db, c->user, c->p.id, &have);
    if (rc == AG_ENOTFOUND) {
        if (!c->add) {
            c->missing = true;
            return rc;
        }
        int64_t lines = 0;
        rc = cart_line_count(db, c->user, &lines);
        if (rc < 0) return rc;
        if (lines >= CART_MAX_LINES) {
            c->full = true;
            return AG_EINVAL;
        }
        c->created = true;
        have = 0;
    } else if (rc < 0) {
        return rc;
    }
    c->result = c->add ? have + c->qty : c->qty;
    if (c->result > CART_MAX_QUANTITY) {
        c->too_many = true;
        c->result = have;
        return AG_EINVAL;
    }
    rc = cart_line_put(db, c->user, &c->p, c->result);
    if (rc == 0 && c->add) /* what agora-analytics counts as a cart (docs/events.md) */
        rc = ag_bus_publish(g_cart.bus, db, "cart.item_added", c->user,
                            json_pack("{s:s, s:s, s:I, s:I}", "userId", c->user, "productId",
                                      c->p.id, "quantity", (json_int_t)c->qty, "lineQuantity",
                                      (json_int_t)c->result),
                            NULL);
    return rc;
}

static void answer_line_write(ag_http_req *req, ag_http_res *res, line_ctx *c, int rc)
{
    if (rc == 0) {
        ag_res_ok(res, c->created ? 201 : 200, line_json(&c->p, c->result, true));
    } else if (c->missing) {
        ag_res_error(res, 404, "NOT_FOUND", "no such item in your cart", NULL);
    } else if (c->too_many) {
        ag_validator v;
        ag_v_init(&v);
        ag_v_fail(&v, "quantity", "a line holds at most %d; the cart has %lld of this product",
                  CART_MAX_QUANTITY, (long long)c->result);
        ag_res_validation(res, &v);
    } else if (c->full) {
        ag_res_error(res, 409, "CART_FULL", "a cart holds at most 100 different products", NULL);
    } else {
        ag_res_internal(req, res, "cart write failed", rc);
    }
}

static void post_item(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    json_t *body;
    if (ag_req_json(req, res, &body) < 0) return;
    static const char *const allowed[] = {"productId", "quantity", NULL};
    ag_validator v;
    ag_v_init(&v);
    const char *pid = NULL;
    long long qty = 1;
    if (ag_v_fields(&v, body, allowed)) {
        pid = ag_v_str(&v, body, "productId", AG_V_REQUIRED, 1, CART_PRODUCT_ID_MAX);
        if (pid && !product_id_ok(pid))
            ag_v_fail(&v, "productId", "productId must be a product id (letters, digits, - or _)");
        ag_v_int(&v, body, "quantity", 0, 1, CART_MAX_QUANTITY, &qty);
    }
    if (!ag_v_passed(&v, res, body)) return;
    line_ctx c;
    memset(&c, 0, sizeof c);
    if (product_for_write(req, res, pid, &c.p)) {
        c.user = me->id;
        c.qty = qty;
        c.add = true;
        answer_line_write(req, res, &c, ag_store_tx(g_cart.store, line_tx, &c));
    }
    json_decref(body);
}

static void put_item(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    json_t *body;
    if (ag_req_json(req, res, &body) < 0) return;
    static const char *const allowed[] = {"quantity", NULL};
    ag_validator v;
    ag_v_init(&v);
    long long qty = 0;
    if (ag_v_fields(&v, body, allowed)) {
        ag_v_int(&v, body, "quantity", AG_V_REQUIRED, 1, CART_MAX_QUANTITY, &qty);
    }
    json_decref(body);
    if (!ag_v_passed(&v, res, NULL)) return;
    const char *pid = path_product(req, res);
    if (!pid) return;
    /* A line that is not there is 404 without bothering catalog. */
    ag_db *db;
    int64_t have;
    int rc = ag_store_db(g_cart.store, &db);
    if (rc == 0) rc = cart_line_quantity(db, me->id, pid, &have);
    if (ag_res_rc(req, res, rc, "no such item in your cart", "cart read failed")) return;
    line_ctx c;
    memset(&c, 0, sizeof c);
    if (!product_for_write(req, res, pid, &c.p)) return;
    c.user = me->id;
    c.qty = qty;
    answer_line_write(req, res, &c, ag_store_tx(g_cart.store, line_tx, &c));
}

typedef struct remove_ctx {
    const char *user, *product;
} remove_ctx;

static int remove_tx(ag_db *db, void *ud)
{
    remove_ctx *c = ud;
    return c->product ? cart_line_remove(db, c->user, c->product) : cart_clear(db, c->user, NULL);
}

static void delete_item(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    const char *pid = path_product(req, res);
    if (!pid) return;
    remove_ctx c = {me->id, pid};
    int rc = ag_store_tx(g_cart.store, remove_tx, &c);
    if (!ag_res_rc(req, res, rc, "no such item in your cart", "remove line failed"))
        ag_res_status(res, 204);
}

static void delete_cart(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    remove_ctx c = {me->id, NULL};
    int rc = ag_store_tx(g_cart.store, remove_tx, &c);
    if (rc < 0)
        ag_res_internal(req, res, "clear cart failed", rc);
    else
        ag_res_status(res, 204);
}

/* ---- Reading the cart ------------------------------------------------------------------ */

typedef struct snapshot_ctx {
    const char *user;
    cart_line *lines;
    const bool *changed;
    size_t n;
} snapshot_ctx;

static int snapshot_tx(ag_db *db, void *ud)
{
    snapshot_ctx *c = ud;
    for (size_t i = 0; i < c->n; i++) {
        if (!c->changed[i]) continue;
        int rc = cart_line_snapshot(db, c->user, &c->lines[i].p);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Adds `cents` to the subtotal of `currency` in `subs` ([{currency,
 * subtotalCents}], in first-seen order). */
static void add_subtotal(json_t *subs, const char *currency, int64_t cents)
{
    size_t i;
    json_t *s;
    json_array_foreach(subs, i, s)
    {
        if (strcmp(json_string_value(json_object_get(s, "currency")), currency) == 0) {
            json_t *v = json_object_get(s, "subtotalCents");
            json_integer_set(v, json_integer_value(v) + cents);
            return;
        }
    }
    json_array_append_new(
        subs, json_pack("{s:s, s:I}", "currency", currency, "subtotalCents", (json_int_t)cents));
}

/* GET /v1/cart: every line with catalog's current name and price, looked up
 * one at a time within one budget (the request's deadline, at most the
 * lookup limit). Once catalog fails, the breaker is open or the budget is
 * spent, the remaining lines show their stored snapshot and the answer says
 * "pricesMayBeStale": true. A product catalog no longer has (or hides:
 * soft-deleted) stays in the cart as "available": false and counts in no
 * subtotal. Fresh prices are saved as the lines' new snapshot. */
static void get_cart(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    ag_db *db;
    cart_line *lines = NULL;
    size_t n = 0;
    int rc = ag_store_db(g_cart.store, &db);
    if (rc == 0) rc = cart_lines(db, me->id, &lines, &n);
    if (ag_res_rc(req, res, rc, NULL, "cart read failed")) return;
    bool *changed = n ? ag_calloc(n, sizeof *changed) : NULL;
    bool stale = false, any_changed = false;
    ag_deadline budget = lookup_deadline(req);
    json_t *items = json_array(), *subs = json_array();
    int64_t count = 0;
    for (size_t i = 0; i < n; i++) {
        cart_line *l = &lines[i];
        bool available = true;
        if (stale) {
            /* catalog already failed us in this request: do not ask again */
        } else {
            product_info cur;
            int retry_s;
            rc = catalog_lookup(req, l->p.id, budget, &cur, &retry_s);
            if (rc == 0) {
                available = cur.active;
                if (strcmp(cur.name, l->p.name) != 0 || cur.price_cents != l->p.price_cents ||
                    strcmp(cur.currency, l->p.currency) != 0) {
                    l->p = cur;
                    changed[i] = any_changed = true;
                }
            } else if (rc == AG_ENOTFOUND) {
                available = false;
            } else {
                stale = true;
            }
        }
        json_array_append_new(items, line_json(&l->p, l->quantity, available));
        if (available) {
            add_subtotal(subs, l->p.currency, l->p.price_cents * l->quantity);
            count += l->quantity;
        }
    }
    if (any_changed) {
        snapshot_ctx c = {me->id, lines, changed, n};
        rc = ag_store_tx(g_cart.store, snapshot_tx, &c);
        if (rc < 0)
            ag_warn("saving price snapshots failed", AG_FERR(rc),
                    AG_FS("requestId", ag_req_id(req)));
    }
    ag_free(changed);
    ag_free(lines);
    ag_res_ok(res, 200,
              json_pack("{s:o, s:o, s:I, s:b}", "items", items, "subtotals", subs, "itemCount",
                        (json_int_t)count, "pricesMayBeStale", stale));
}

/* ---- Operations ---------------------------------------------------------------------------- */

static void get_breakers(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!ag_auth_caller_role(req, res, "admin")) return;
    json_t *arr = json_array();
    json_array_append_new(arr, ag_breaker_json(g_cart.catalog_breaker));
    ag_res_ok(res, 200, arr);
}

void cart_routes(ag_router *r)
{
    ag_router_add(r, "GET", "/v1/cart", get_cart, NULL, 0);
    ag_router_add(r, "DELETE", "/v1/cart", delete_cart, NULL, 0);
    ag_router_add(r, "POST", "/v1/cart/items", post_item, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "PUT", "/v1/cart/items/:productId", put_item, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "DELETE", "/v1/cart/items/:productId", delete_item, NULL, 0);
    ag_router_add(r, "GET", "/v1/admin/breakers", get_breakers, NULL, 0);
}
