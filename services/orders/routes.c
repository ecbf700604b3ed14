/*
 * routes.c — agora-orders' HTTP API (services/orders/README.md).
 *
 *   POST /v1/orders                      a customer (or admin): place an order
 *   GET  /v1/orders                      the caller's; admins all, with filters
 *   GET  /v1/orders/:id                  the owner, an admin or a service
 *   POST /v1/orders/:id/cancel           the owner or an admin, before shipping
 *   PUT  /v1/orders/:id/status           admin: SHIPPED, DELIVERED
 *   GET  /v1/orders/:id/history          the owner or an admin: the events
 *   GET  /v1/sagas/:orderId              admin: the checkout (and cancellation) saga
 *   POST /v1/admin/orders/rebuild        admin: rebuild projections from events
 *
 * Placing an order, in order: validate; answer a repeated Idempotency-Key
 * from the table (same request: the same order; another request: 409);
 * read the cart when fromCart; price every line from catalog (never from
 * the client); then one transaction writes the key, the order's first
 * event and its projection, the saga and order.created. The answer is 201
 * with the PENDING order, or, with "Prefer: wait=<s>", whatever the order
 * is after at most s seconds (CONFIRMED or CANCELLED when the saga ended).
 */
#include <ctype.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "orders.h"

/* ---- Helpers ------------------------------------------------------------------------------- */

static bool is_staff(const ag_caller *c)
{
    return strcmp(c->role, "admin") == 0 || strcmp(c->role, "service") == 0;
}

static bool id_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max) return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("-_.:", *s)) return false;
    return true;
}

/* "Prefer: wait=<seconds>" (RFC 7240): seconds to wait, capped at 60; 0 none. */
static int prefer_wait(ag_http_req *req, ag_http_res *res)
{
    const char *p = ag_req_header(req, "Prefer");
    const char *w = p ? strstr(p, "wait=") : NULL;
    if (!w) return 0;
    long s = strtol(w + 5, NULL, 10);
    if (s <= 0) return 0;
    if (s > 60) s = 60;
    char buf[32];
    snprintf(buf, sizeof buf, "wait=%ld", s);
    ag_res_header(res, "Preference-Applied", buf);
    return (int)s;
}

/* Reads order `id` for `me`: 404 unless theirs or `me` is staff. */
static int load_for(ag_http_req *req, ag_http_res *res, const ag_caller *me, const char *id,
                    ord_order *o)
{
    ag_db *db;
    int rc = id_ok(id, ORD_ID_MAX) ? ag_store_db(g_ord.store, &db) : AG_ENOTFOUND;
    if (rc == 0) rc = ord_order_get(db, id, o);
    if (rc == 0 && !is_staff(me) && strcmp(o->user_id, me->id) != 0) {
        ord_order_clear(o);
        rc = AG_ENOTFOUND;
    }
    ag_res_rc(req, res, rc, "no such order", "order read failed");
    return rc;
}

/* Answers the order as it is now, after waiting when asked to. */
static void answer_order(ag_http_req *req, ag_http_res *res, const char *id, int status, int wait_s)
{
    if (wait_s > 0) { /* within the caller's own deadline, keeping time to answer */
        uint64_t ms = (uint64_t)wait_s * 1000;
        ag_deadline dl = ag_req_deadline(req);
        if (dl != 0 && dl != AG_DEADLINE_NONE) {
            uint64_t left = ag_deadline_remaining(dl);
            left = left > 250 ? left - 250 : 0;
            if (left < ms) ms = left;
        }
        ord_wait_final(id, ms);
    }
    ag_db *db;
    ord_order o;
    int rc = ag_store_db(g_ord.store, &db);
    if (rc == 0) rc = ord_order_get(db, id, &o);
    if (ag_res_rc(req, res, rc, NULL, "order read failed")) return;
    char loc[96];
    snprintf(loc, sizeof loc, "/v1/orders/%s", o.id);
    if (status == 201) ag_res_header(res, "Location", loc);
    ag_res_ok(res, status, ord_order_json(&o));
    ord_order_clear(&o);
}

/* ---- POST /v1/orders ------------------------------------------------------------------------- */

typedef struct line {
    char product_id[ORD_ID_MAX + 1];
    long long quantity;
} line;

static void validate_address(ag_validator *v, json_t *a)
{
    static const char *const fields[] = {"name",       "line1",   "line2", "city",
                                         "postalCode", "country", NULL};
    if (!json_is_object(a)) {
        ag_v_fail(v, "shippingAddress", "shippingAddress must be an object");
        return;
    }
    ag_v_only_fields(v, a, "shippingAddress.", fields);
    ag_v_str(v, a, "name", AG_V_REQUIRED, 1, 100);
    ag_v_str(v, a, "line1", AG_V_REQUIRED, 1, 200);
    ag_v_str(v, a, "line2", 0, 0, 200);
    ag_v_str(v, a, "city", AG_V_REQUIRED, 1, 100);
    ag_v_str(v, a, "postalCode", AG_V_REQUIRED, 1, 20);
    const char *c = ag_v_str(v, a, "country", AG_V_REQUIRED, 2, 2);
    if (c && (!isupper((unsigned char)c[0]) || !isupper((unsigned char)c[1])))
        ag_v_fail(v, "shippingAddress.country",
                  "country must be two upper-case letters (ISO 3166)");
}

/* The items of the request body into lines; false (and v failed) when bad. */
static bool parse_items(ag_validator *v, json_t *items, line *lines, size_t *n)
{
    static const char *const fields[] = {"productId", "quantity", NULL};
    *n = 0;
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it)
    {
        if (!json_is_object(it)) {
            ag_v_fail(v, "items", "each item must be an object");
            return false;
        }
        ag_v_only_fields(v, it, "items[].", fields);
        const char *pid = ag_v_str(v, it, "productId", AG_V_REQUIRED, 1, ORD_ID_MAX);
        long long q = 0;
        ag_v_int(v, it, "quantity", AG_V_REQUIRED, 1, ORD_MAX_QUANTITY, &q);
        if (pid && !id_ok(pid, ORD_ID_MAX))
            ag_v_fail(v, "items.productId",
                      "productId may hold letters, digits, '-', '_', '.', ':'");
        if (!ag_v_ok(v)) return false;
        for (size_t k = 0; k < *n; k++)
            if (strcmp(lines[k].product_id, pid) == 0) {
                ag_v_fail(v, "items", "product %.64s appears twice; give one line per product",
                          pid);
                return false;
            }
        snprintf(lines[*n].product_id, sizeof lines[0].product_id, "%s", pid);
        lines[(*n)++].quantity = q;
    }
    return true;
}

/* The cart's lines, asked with the customer's own token. */
static int cart_lines(ag_http_req *req, ag_http_res *res, line *lines, size_t *n)
{
    *n = 0;
    peer_reply rep;
    int rc =
        peer_call(PEER_CART, "GET", "/v1/cart", NULL, ag_req_header(req, "Authorization"),
                  ag_deadline_min(ag_req_deadline(req), ag_deadline_in(g_ord.lookup_timeout_ms)),
                  ag_req_id(req), &rep);
    if (rc < 0 || rep.status != 200) {
        ag_warn("cart unavailable for an order", AG_FI("status", rep.status), AG_FERR(rc));
        ag_res_header(res, "Retry-After", "2");
        ag_res_error(res, 503, "SERVICE_UNAVAILABLE", "the cart cannot be read right now", NULL);
        peer_reply_clear(&rep);
        return AG_EUNAVAIL;
    }
    json_t *l;
    size_t i;
    json_array_foreach(json_object_get(json_object_get(rep.doc, "data"), "items"), i, l)
    {
        const char *pid = json_string_value(json_object_get(l, "productId"));
        json_int_t q = json_integer_value(json_object_get(l, "quantity"));
        if (!pid || !id_ok(pid, ORD_ID_MAX) || q < 1 || *n >= ORD_MAX_ITEMS) continue;
        snprintf(lines[*n].product_id, sizeof lines[0].product_id, "%s", pid);
        lines[(*n)++].quantity = q;
    }
    peer_reply_clear(&rep);
    if (*n == 0) {
        ag_res_error(res, 409, "CART_EMPTY", "the cart is empty", NULL);
        return AG_EINVAL;
    }
    return 0;
}

/* Prices every line from catalog into items; answers and fails otherwise. */
static int price_lines(ag_http_req *req, ag_http_res *res, const line *lines, size_t n,
                       ord_item *items, char currency[8], int64_t *total)
{
    *total = 0;
    currency[0] = '\0';
    ag_deadline dl = ag_deadline_min(ag_req_deadline(req), ag_deadline_in(g_ord.lookup_timeout_ms));
    for (size_t i = 0; i < n; i++) {
        char path[128];
        snprintf(path, sizeof path, "/v1/products/%.64s", lines[i].product_id);
        peer_reply rep;
        int rc = peer_call(PEER_CATALOG, "GET", path, NULL, ag_req_header(req, "Authorization"), dl,
                           ag_req_id(req), &rep);
        json_t *d = json_object_get(rep.doc, "data");
        const char *name = json_string_value(json_object_get(d, "name"));
        const char *cur = json_string_value(json_object_get(d, "currency"));
        json_t *price = json_object_get(d, "priceCents");
        if (rc == 0 && rep.status == 404) {
            char msg[128];
            snprintf(msg, sizeof msg, "no product %.64s", lines[i].product_id);
            ag_res_error(res, 404, "PRODUCT_NOT_FOUND", msg, NULL);
            rc = AG_ENOTFOUND;
        } else if (rc < 0 || rep.status != 200 || !name || !cur || strlen(cur) >= 8 ||
                   !json_is_integer(price) || json_integer_value(price) < 0 ||
                   json_integer_value(price) > 1000000000000LL) {
            ag_res_header(res, "Retry-After", "2");
            ag_res_error(res, 503, "SERVICE_UNAVAILABLE", "prices cannot be read right now", NULL);
            rc = AG_EUNAVAIL;
        } else if (!json_is_true(json_object_get(d, "isActive"))) {
            char msg[128];
            snprintf(msg, sizeof msg, "product %.64s is not for sale", lines[i].product_id);
            ag_res_error(res, 409, "PRODUCT_UNAVAILABLE", msg, NULL);
            rc = AG_EINVAL;
        } else if (currency[0] && strcmp(currency, cur) != 0) {
            ag_res_error(res, 422, "MIXED_CURRENCIES",
                         "every product of an order must be priced in the same currency", NULL);
            rc = AG_EINVAL;
        } else {
            snprintf(currency, 8, "%s", cur);
            ord_item *it = &items[i];
            snprintf(it->product_id, sizeof it->product_id, "%.64s", lines[i].product_id);
            snprintf(it->name, sizeof it->name, "%s", name);
            it->quantity = lines[i].quantity;
            it->unit_price_cents = json_integer_value(price);
            *total += it->quantity * it->unit_price_cents;
        }
        peer_reply_clear(&rep);
        if (rc < 0) return rc;
    }
    return 0;
}

static void request_hash(json_t *canon, char hex[65])
{
    char *text = json_dumps(canon, JSON_COMPACT | JSON_SORT_KEYS);
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)text, strlen(text));
    sodium_bin2hex(hex, 65, h, sizeof h);
    free(text);
}

/* The Idempotency-Key's order: 0 and *order_id (same request), AG_ENOTFOUND
 * (new key), AG_ECONSTRAINT (another request). */
static int key_lookup(ag_db *db, const char *user, const char *key, const char *hash,
                      char order_id[40])
{
    ag_val p[] = {AG_VTEXT(user), AG_VTEXT(key)};
    ag_rows *r;
    int rc = ag_db_query(db,
                         "SELECT request_hash, order_id FROM idempotency_keys"
                         " WHERE user_id = $1 AND key = $2",
                         p, 2, &r);
    if (rc < 0) return rc;
    rc = ag_rows_next(r);
    if (rc == 1) {
        ag_rows_copy(r, 1, order_id, 40);
        rc = strcmp(ag_rows_text(r, 0), hash) == 0 ? 0 : AG_ECONSTRAINT;
    } else if (rc == 0) {
        rc = AG_ENOTFOUND;
    }
    ag_rows_free(r);
    return rc;
}

typedef struct place_ctx {
    const char *user, *key, *hash;
    ord_order *o;
    json_t *placed; /* the OrderPlaced data */
    char existing[40];
} place_ctx;

static int place_tx(ag_db *db, void *ud)
{
    place_ctx *c = ud;
    c->existing[0] = '\0';
    int rc = key_lookup(db, c->user, c->key, c->hash, c->existing);
    if (rc != AG_ENOTFOUND) return rc < 0 ? rc : AG_EEXISTS; /* raced with a twin */
    char now[32];
    ag_time_now(now, sizeof now);
    ag_val p[] = {AG_VTEXT(c->user), AG_VTEXT(c->key), AG_VTEXT(c->hash), AG_VTEXT(c->o->id),
                  AG_VTEXT(now)};
    rc =
        ag_db_exec(db,
                   "INSERT INTO idempotency_keys (user_id, key, request_hash, order_id, created_at)"
                   " VALUES ($1, $2, $3, $4, $5)",
                   p, 5, NULL);
    /* The order as a fresh aggregate: a transaction retry starts over. */
    char id[40];
    snprintf(id, sizeof id, "%s", c->o->id);
    ord_order_clear(c->o);
    snprintf(c->o->id, sizeof c->o->id, "%s", id);
    if (rc == 0) rc = ord_append(db, c->o, "OrderPlaced", json_incref(c->placed), c->user);
    if (rc == 0)
        rc = ag_saga_create(g_ord.sagas, db, "checkout", c->o->id,
                            json_pack("{s:s}", "orderId", c->o->id));
    if (rc == 0) rc = ord_publish(db, "order.created", c->o);
    return rc;
}

static bool key_ok(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > 255) return false;
    for (; *k; k++)
        if (*k < 0x21 || *k > 0x7e) return false;
    return true;
}

static void post_order(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    if (strcmp(me->role, "service") == 0) {
        ag_res_error(res, 403, "FORBIDDEN", "orders are placed by customers", NULL);
        return;
    }
    const char *key = ag_req_header(req, "Idempotency-Key");
    if (!key) {
        ag_res_error(res, 400, "IDEMPOTENCY_KEY_REQUIRED",
                     "send an Idempotency-Key header (a unique string per order you mean to place)",
                     NULL);
        return;
    }
    if (!key_ok(key)) {
        ag_res_error(res, 400, "BAD_IDEMPOTENCY_KEY",
                     "Idempotency-Key must be 1-255 printable ASCII characters", NULL);
        return;
    }
    int wait_s = prefer_wait(req, res);
    json_t *body;
    if (ag_req_json(req, res, &body) < 0) return;
    static const char *const fields[] = {"items", "fromCart", "shippingAddress", "paymentMethod",
                                         NULL};
    ag_validator v;
    ag_v_init(&v);
    ag_v_fields(&v, body, fields);
    bool from_cart = false;
    ag_v_bool(&v, body, "fromCart", 0, &from_cart);
    json_t *items = ag_v_array(&v, body, "items", 0, 1, ORD_MAX_ITEMS);
    if (from_cart && items) ag_v_fail(&v, "items", "give items or fromCart, not both");
    if (!from_cart && !items && ag_v_ok(&v))
        ag_v_fail(&v, "items", "give items (1-%d lines) or \"fromCart\": true", ORD_MAX_ITEMS);
    validate_address(&v, json_object_get(body, "shippingAddress"));
    json_t *safe_method = NULL;
    cards_validate(&v, json_object_get(body, "paymentMethod"), &safe_method);
    line lines[ORD_MAX_ITEMS];
    size_t nlines = 0;
    if (ag_v_ok(&v) && items) parse_items(&v, items, lines, &nlines);
    if (!ag_v_ok(&v)) {
        ag_res_validation(res, &v);
        json_decref(safe_method);
        json_decref(body);
        return;
    }
    ag_v_release(&v);

    /* The request as it is remembered for the key: no card number in it. */
    json_t *canon = json_pack("{s:O, s:O, s:b, s:O?}", "shippingAddress",
                              json_object_get(body, "shippingAddress"), "paymentMethod",
                              safe_method, "fromCart", from_cart, "items", items);
    char hash[65];
    request_hash(canon, hash);
    json_decref(canon);

    char existing[40] = "";
    ag_db *db;
    int rc = ag_store_db(g_ord.store, &db);
    if (rc == 0) rc = key_lookup(db, me->id, key, hash, existing);
    if (rc == 0 || rc == AG_ECONSTRAINT || (rc < 0 && rc != AG_ENOTFOUND)) {
        json_decref(safe_method);
        json_decref(body);
        if (rc == AG_ECONSTRAINT) {
            ag_res_error(res, 409, "IDEMPOTENCY_CONFLICT",
                         "this Idempotency-Key was used for another request", NULL);
        } else if (rc < 0) {
            ag_res_internal(req, res, "idempotency read failed", rc);
        } else {
            ag_res_header(res, "Idempotent-Replayed", "true");
            answer_order(req, res, existing, 201, wait_s);
        }
        return;
    }

    if (from_cart && cart_lines(req, res, lines, &nlines) < 0) {
        json_decref(safe_method);
        json_decref(body);
        return;
    }
    ord_item *priced = ag_calloc(nlines, sizeof *priced);
    char currency[8];
    int64_t total = 0;
    if (price_lines(req, res, lines, nlines, priced, currency, &total) < 0) {
        ag_free(priced);
        json_decref(safe_method);
        json_decref(body);
        return;
    }
    json_t *jitems = json_array();
    for (size_t i = 0; i < nlines; i++)
        json_array_append_new(
            jitems, json_pack("{s:s, s:s, s:I, s:I}", "productId", priced[i].product_id, "name",
                              priced[i].name, "quantity", (json_int_t)priced[i].quantity,
                              "unitPriceCents", (json_int_t)priced[i].unit_price_cents));
    ag_free(priced);
    json_t *placed = json_pack(
        "{s:s, s:o, s:I, s:s, s:b, s:O, s:o}", "userId", me->id, "items", jitems, "totalCents",
        (json_int_t)total, "currency", currency, "fromCart", from_cart, "shippingAddress",
        json_object_get(body, "shippingAddress"), "paymentMethod", safe_method);
    ord_order o;
    memset(&o, 0, sizeof o);
    ag_id_new_str(o.id);
    bool card = strcmp(json_string_value(json_object_get(safe_method, "type")), "card") == 0;
    if (card) cards_put(o.id, json_deep_copy(json_object_get(body, "paymentMethod")));
    place_ctx c = {.user = me->id, .key = key, .hash = hash, .o = &o, .placed = placed};
    rc = ag_store_tx(g_ord.store, place_tx, &c);
    json_decref(placed);
    json_decref(body);
    if (rc < 0) cards_forget(o.id);
    if (rc == AG_EEXISTS && c.existing[0]) { /* a concurrent twin with the same key won */
        ag_res_header(res, "Idempotent-Replayed", "true");
        answer_order(req, res, c.existing, 201, wait_s);
    } else if (rc == AG_ECONSTRAINT) {
        ag_res_error(res, 409, "IDEMPOTENCY_CONFLICT",
                     "this Idempotency-Key was used for another request", NULL);
    } else if (rc < 0) {
        ag_res_internal(req, res, "order placement failed", rc);
    } else {
        ag_info("order placed", AG_FS("orderId", o.id), AG_FS("userId", me->id),
                AG_FI("totalCents", o.total_cents), AG_FS("requestId", ag_req_id(req)));
        answer_order(req, res, o.id, 201, wait_s);
    }
    ord_order_clear(&o);
}

/* ---- Reading -----------------------------------------------------------------------------------
 */

static void get_order(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    ord_order o;
    if (load_for(req, res, me, ag_req_param(req, "id"), &o) < 0) return;
    ag_res_ok(res, 200, ord_order_json(&o));
    ord_order_clear(&o);
}

static bool status_ok(const char *s)
{
    static const char *const all[] = {"PENDING",    "CONFIRMED", "SHIPPED", "DELIVERED",
                                      "CANCELLING", "CANCELLED", NULL};
    for (const char *const *a = all; *a; a++)
        if (strcmp(s, *a) == 0) return true;
    return false;
}

static void list_orders(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    const char *status = ag_req_query(req, "status");
    const char *user = ag_req_query(req, "userId");
    long long page, limit;
    ag_validator v;
    ag_v_init(&v);
    if (status && !status_ok(status))
        ag_v_fail(&v, "status",
                  "status must be one of PENDING, CONFIRMED, SHIPPED, DELIVERED,"
                  " CANCELLING, CANCELLED");
    if (user && !is_staff(me) && strcmp(user, me->id) != 0)
        ag_v_fail(&v, "userId", "only admins may list other customers' orders");
    page = ag_v_query_int(&v, req, "page", 1, 1, 1000000);
    limit = ag_v_query_int(&v, req, "limit", 20, 1, 100);
    if (!ag_v_passed(&v, res, NULL)) return;
    if (!is_staff(me)) user = me->id;
    ag_db *db;
    json_t *arr = NULL;
    int64_t total = 0;
    int rc = ag_store_db(g_ord.store, &db);
    if (rc == 0) rc = ord_list(db, user, status, limit, (page - 1) * limit, &arr, &total);
    ag_res_page_rc(req, res, rc, arr, page, limit, total, "order list failed");
}

static void get_history(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    ord_order o;
    if (load_for(req, res, me, ag_req_param(req, "id"), &o) < 0) return;
    ag_db *db;
    json_t *events = NULL;
    int rc = ag_store_db(g_ord.store, &db);
    if (rc == 0) rc = ord_history_json(db, o.id, &events);
    if (rc < 0)
        ag_res_internal(req, res, "history read failed", rc);
    else
        ag_res_ok(res, 200, json_pack("{s:s, s:o}", "orderId", o.id, "events", events));
    ord_order_clear(&o);
}

static void get_saga(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!ag_auth_caller_role(req, res, "admin")) return;
    const char *id = ag_req_param(req, "orderId");
    json_t *checkout = NULL, *cancel = NULL;
    int rc = id_ok(id, ORD_ID_MAX) ? ag_saga_get_json(g_ord.sagas, id, &checkout) : AG_ENOTFOUND;
    if (rc == 0) {
        char cid[80];
        snprintf(cid, sizeof cid, "%s:cancel", id);
        if (ag_saga_get_json(g_ord.sagas, cid, &cancel) < 0) cancel = NULL;
    }
    if (rc == AG_ENOTFOUND) {
        ag_res_error(res, 404, "NOT_FOUND", "no saga for this order", NULL);
    } else if (rc < 0) {
        ag_res_internal(req, res, "saga read failed", rc);
    } else {
        json_object_set_new(checkout, "cancellation", cancel ? cancel : json_null());
        ag_res_ok(res, 200, checkout);
    }
}

/* ---- Changing ----------------------------------------------------------------------------------
 */

typedef struct cancel_ctx {
    const char *id, *reason, *actor;
    char status[16]; /* as found */
    bool requested;  /* already asked before */
    int outcome;     /* the HTTP status to answer */
} cancel_ctx;

static int cancel_tx(ag_db *db, void *ud)
{
    cancel_ctx *c = ud;
    ord_order o;
    int rc = ord_order_get(db, c->id, &o);
    if (rc < 0) return rc;
    snprintf(c->status, sizeof c->status, "%s", o.status);
    c->requested = o.cancel_requested;
    c->outcome = 200;
    if (strcmp(o.status, "PENDING") == 0 && !o.cancel_requested) {
        rc = ord_append(db, &o, "CancelRequested", json_pack("{s:s}", "reason", c->reason),
                        c->actor);
        c->outcome = 202;
    } else if (strcmp(o.status, "CONFIRMED") == 0) {
        rc = checkout_start_cancellation(db, &o, c->reason, c->actor);
        c->outcome = 202;
    } else if (strcmp(o.status, "SHIPPED") == 0 || strcmp(o.status, "DELIVERED") == 0) {
        c->outcome = 409;
    }
    ord_order_clear(&o);
    return rc;
}

static void post_cancel(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    int wait_s = prefer_wait(req, res);
    ord_order o;
    if (load_for(req, res, me, ag_req_param(req, "id"), &o) < 0) return;
    char reason[256];
    snprintf(reason, sizeof reason, "%s",
             strcmp(o.user_id, me->id) == 0 ? "cancelled by the customer"
                                            : "cancelled by an admin");
    size_t blen = 0;
    ag_req_body(req, &blen);
    if (blen > 0) { /* optional {"reason": "..."} */
        json_t *body;
        if (ag_req_json(req, res, &body) < 0) {
            ord_order_clear(&o);
            return;
        }
        static const char *const fields[] = {"reason", NULL};
        ag_validator v;
        ag_v_init(&v);
        ag_v_fields(&v, body, fields);
        const char *r = ag_v_str(&v, body, "reason", 0, 1, 200);
        if (!ag_v_ok(&v)) {
            ag_res_validation(res, &v);
            json_decref(body);
            ord_order_clear(&o);
            return;
        }
        ag_v_release(&v);
        if (r) {
            char given[256];
            snprintf(given, sizeof given, "%.40s: %.200s", reason, r);
            memcpy(reason, given, sizeof reason);
        }
        json_decref(body);
    }
    cancel_ctx c = {.id = o.id, .reason = reason, .actor = me->id};
    int rc = ag_store_tx(g_ord.store, cancel_tx, &c);
    if (rc < 0) {
        ag_res_internal(req, res, "cancel failed", rc);
    } else if (c.outcome == 409) {
        char msg[96];
        snprintf(msg, sizeof msg, "the order is %s; it can no longer be cancelled", c.status);
        ag_res_error(res, 409, "INVALID_STATE", msg, NULL);
    } else {
        answer_order(req, res, o.id, c.outcome, wait_s);
    }
    ord_order_clear(&o);
}

typedef struct status_ctx {
    const char *id, *target, *actor;
    char found[16];
    bool changed;
} status_ctx;

static int status_tx(ag_db *db, void *ud)
{
    status_ctx *c = ud;
    c->changed = false;
    ord_order o;
    int rc = ord_order_get(db, c->id, &o);
    if (rc < 0) return rc;
    snprintf(c->found, sizeof c->found, "%s", o.status);
    if (strcmp(o.status, c->target) != 0) {
        bool ship = strcmp(c->target, "SHIPPED") == 0;
        rc = ord_append(db, &o, ship ? "OrderShipped" : "OrderDelivered", NULL, c->actor);
        if (rc == 0) rc = ord_publish(db, ship ? "order.shipped" : "order.delivered", &o);
        c->changed = rc == 0;
    }
    ord_order_clear(&o);
    return rc;
}

static void put_status(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_role(req, res, "admin");
    if (!me) return;
    json_t *body;
    if (ag_req_json(req, res, &body) < 0) return;
    static const char *const fields[] = {"status", NULL};
    ag_validator v;
    ag_v_init(&v);
    ag_v_fields(&v, body, fields);
    const char *target = ag_v_str(&v, body, "status", AG_V_REQUIRED, 1, 16);
    if (target && strcmp(target, "SHIPPED") != 0 && strcmp(target, "DELIVERED") != 0)
        ag_v_fail(&v, "status", "status must be SHIPPED or DELIVERED");
    if (!ag_v_passed(&v, res, body)) return;
    ord_order o;
    if (load_for(req, res, me, ag_req_param(req, "id"), &o) < 0) {
        json_decref(body);
        return;
    }
    status_ctx c = {.id = o.id, .target = target, .actor = me->id};
    int rc = ag_store_tx(g_ord.store, status_tx, &c);
    if (rc == AG_ESTATE) {
        char msg[128];
        snprintf(msg, sizeof msg, "the order is %s; it cannot become %s", c.found, target);
        ag_res_error(res, 409, "INVALID_STATE", msg, NULL);
    } else if (rc < 0) {
        ag_res_internal(req, res, "status change failed", rc);
    } else {
        answer_order(req, res, o.id, 200, 0);
    }
    json_decref(body);
    ord_order_clear(&o);
}

static void post_rebuild(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!ag_auth_caller_role(req, res, "admin")) return;
    const char *id = ag_req_query(req, "orderId");
    if (id && !id_ok(id, ORD_ID_MAX)) {
        ag_res_error(res, 422, "VALIDATION_FAILED", "orderId is not an order id", NULL);
        return;
    }
    int64_t checked = 0, changed = 0;
    int rc = ord_rebuild(g_ord.store, id, &checked, &changed);
    if (ag_res_rc(req, res, rc, NULL, "rebuild failed")) return;
    ag_info("order projections rebuilt", AG_FI("checked", checked), AG_FI("changed", changed));
    ag_res_ok(
        res, 200,
        json_pack("{s:I, s:I}", "checked", (json_int_t)checked, "changed", (json_int_t)changed));
}

void orders_routes(ag_router *r)
{
    ag_router_add(r, "POST", "/v1/orders", post_order, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "GET", "/v1/orders", list_orders, NULL, 0);
    ag_router_add(r, "GET", "/v1/orders/:id", get_order, NULL, 0);
    ag_router_add(r, "POST", "/v1/orders/:id/cancel", post_cancel, NULL, 0);
    ag_router_add(r, "PUT", "/v1/orders/:id/status", put_status, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "GET", "/v1/orders/:id/history", get_history, NULL, 0);
    ag_router_add(r, "GET", "/v1/sagas/:orderId", get_saga, NULL, 0);
    ag_router_add(r, "POST", "/v1/admin/orders/rebuild", post_rebuild, NULL, 0);
}
