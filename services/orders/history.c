/*
 * history.c — the order as an event-sourced aggregate.
 *
 * Every change to an order is an event appended to order_events (seq 1, 2,
 * ... per order, never updated). The orders row is a projection: `apply`
 * below folds one event into an ord_order, and ord_append writes the event
 * and the folded row in the same transaction, so the two never disagree.
 * ord_rebuild folds the events alone from scratch and rewrites any row that
 * differs: the test for "the current state can be rebuilt from the history"
 * and the tool to repair a projection after a bug.
 *
 * The transitions `apply` allows are the state machine drawn in orders.h.
 */
#include <string.h>

#include "orders.h"

void ord_order_clear(ord_order *o)
{
    json_decref(o->shipping_address);
    json_decref(o->payment_method);
    ag_free(o->items);
    memset(o, 0, sizeof *o);
}

static void set_str(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

/* ---- Folding one event ------------------------------------------------------------------ */

static int apply_placed(ord_order *o, json_t *d)
{
    json_t *items = json_object_get(d, "items");
    size_t n = json_array_size(items);
    if (n == 0 || n > ORD_MAX_ITEMS || !json_is_string(json_object_get(d, "userId")))
        return AG_EINVAL;
    o->items = ag_calloc(n, sizeof *o->items);
    o->nitems = n;
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(items, i);
        set_str(o->items[i].product_id, sizeof o->items[i].product_id,
                json_string_value(json_object_get(it, "productId")));
        set_str(o->items[i].name, sizeof o->items[i].name,
                json_string_value(json_object_get(it, "name")));
        o->items[i].quantity = json_integer_value(json_object_get(it, "quantity"));
        o->items[i].unit_price_cents = json_integer_value(json_object_get(it, "unitPriceCents"));
    }
    set_str(o->user_id, sizeof o->user_id, json_string_value(json_object_get(d, "userId")));
    o->total_cents = json_integer_value(json_object_get(d, "totalCents"));
    set_str(o->currency, sizeof o->currency, json_string_value(json_object_get(d, "currency")));
    o->from_cart = json_is_true(json_object_get(d, "fromCart"));
    o->shipping_address = json_incref(json_object_get(d, "shippingAddress"));
    o->payment_method = json_incref(json_object_get(d, "paymentMethod"));
    set_str(o->status, sizeof o->status, "PENDING");
    return 0;
}

/* Folds event `type` into `o`; AG_ESTATE when it does not apply. */
static int apply(ord_order *o, const char *type, json_t *d, const char *at)
{
    const char *reason = json_string_value(json_object_get(d, "reason"));
    const char *st = o->status;
    int rc = 0;
    if (strcmp(type, "OrderPlaced") == 0) {
        rc = st[0] ? AG_ESTATE : apply_placed(o, d);
        if (rc == 0) set_str(o->created_at, sizeof o->created_at, at);
    } else if (strcmp(type, "StockReserved") == 0) {
        rc = strcmp(st, "PENDING") == 0 ? 0 : AG_ESTATE;
    } else if (strcmp(type, "PaymentCharged") == 0) {
        rc = strcmp(st, "PENDING") == 0 ? 0 : AG_ESTATE;
        if (rc == 0)
            set_str(o->payment_id, sizeof o->payment_id,
                    json_string_value(json_object_get(d, "paymentId")));
    } else if (strcmp(type, "OrderConfirmed") == 0) {
        rc = strcmp(st, "PENDING") == 0 ? 0 : AG_ESTATE;
        if (rc == 0) set_str(o->status, sizeof o->status, "CONFIRMED");
    } else if (strcmp(type, "CancelRequested") == 0) {
        rc = strcmp(st, "PENDING") == 0 && !o->cancel_requested ? 0 : AG_ESTATE;
        if (rc == 0) {
            o->cancel_requested = true;
            set_str(o->reason, sizeof o->reason, reason);
        }
    } else if (strcmp(type, "CancellationStarted") == 0) {
        rc = strcmp(st, "CONFIRMED") == 0 ? 0 : AG_ESTATE;
        if (rc == 0) {
            set_str(o->status, sizeof o->status, "CANCELLING");
            set_str(o->reason, sizeof o->reason, reason);
        }
    } else if (strcmp(type, "OrderCancelled") == 0) {
        rc = strcmp(st, "PENDING") == 0 || strcmp(st, "CANCELLING") == 0 ? 0 : AG_ESTATE;
        if (rc == 0) {
            set_str(o->status, sizeof o->status, "CANCELLED");
            if (reason) set_str(o->reason, sizeof o->reason, reason);
        }
    } else if (strcmp(type, "OrderShipped") == 0) {
        rc = strcmp(st, "CONFIRMED") == 0 ? 0 : AG_ESTATE;
        if (rc == 0) set_str(o->status, sizeof o->status, "SHIPPED");
    } else if (strcmp(type, "OrderDelivered") == 0) {
        rc = strcmp(st, "SHIPPED") == 0 ? 0 : AG_ESTATE;
        if (rc == 0) set_str(o->status, sizeof o->status, "DELIVERED");
    } else {
        rc = AG_EINVAL;
    }
    if (rc == 0) {
        o->version++;
        set_str(o->updated_at, sizeof o->updated_at, at);
    }
    return rc;
}

/* ---- The projection row ------------------------------------------------------------------ */

#define ORDER_COLS                                                                                 \
    "id, user_id, status, total_cents, currency, from_cart, shipping_address,"                     \
    " payment_method, payment_id, reason, cancel_requested, version, created_at, updated_at"

static json_t *parse_text(const char *s)
{
    return s ? json_loads(s, 0, NULL) : NULL;
}

static void read_row(ag_rows *r, ord_order *o)
{
    set_str(o->id, sizeof o->id, ag_rows_text(r, 0));
    set_str(o->user_id, sizeof o->user_id, ag_rows_text(r, 1));
    set_str(o->status, sizeof o->status, ag_rows_text(r, 2));
    o->total_cents = ag_rows_int(r, 3);
    set_str(o->currency, sizeof o->currency, ag_rows_text(r, 4));
    o->from_cart = ag_rows_int(r, 5) != 0;
    o->shipping_address = parse_text(ag_rows_text(r, 6));
    o->payment_method = parse_text(ag_rows_text(r, 7));
    set_str(o->payment_id, sizeof o->payment_id, ag_rows_text(r, 8));
    set_str(o->reason, sizeof o->reason, ag_rows_text(r, 9));
    o->cancel_requested = ag_rows_int(r, 10) != 0;
    o->version = ag_rows_int(r, 11);
    set_str(o->created_at, sizeof o->created_at, ag_rows_text(r, 12));
    set_str(o->updated_at, sizeof o->updated_at, ag_rows_text(r, 13));
}

static int read_items(ag_db *db, ord_order *o)
{
    ag_val p[] = {AG_VTEXT(o->id)};
    ag_rows *r;
    int rc = ag_db_query(db,
                         "SELECT product_id, name, quantity, unit_price_cents FROM order_items"
                         " WHERE order_id = $1 ORDER BY product_id",
                         p, 1, &r);
    if (rc < 0) return rc;
    o->items = ag_calloc(ORD_MAX_ITEMS, sizeof *o->items);
    while (o->nitems < ORD_MAX_ITEMS && (rc = ag_rows_next(r)) == 1) {
        ord_item *it = &o->items[o->nitems++];
        set_str(it->product_id, sizeof it->product_id, ag_rows_text(r, 0));
        set_str(it->name, sizeof it->name, ag_rows_text(r, 1));
        it->quantity = ag_rows_int(r, 2);
        it->unit_price_cents = ag_rows_int(r, 3);
    }
    ag_rows_free(r);
    return rc < 0 ? rc : 0;
}

int ord_order_get(ag_db *db, const char *id, ord_order *out)
{
    memset(out, 0, sizeof *out);
    ag_val p[] = {AG_VTEXT(id)};
    ag_rows *r;
    int rc = ag_db_query(db, "SELECT " ORDER_COLS " FROM orders WHERE id = $1", p, 1, &r);
    if (rc < 0) return rc;
    rc = ag_rows_next(r);
    if (rc == 1) read_row(r, out);
    ag_rows_free(r);
    if (rc == 0) return AG_ENOTFOUND;
    if (rc < 0) return rc;
    rc = read_items(db, out);
    if (rc < 0) ord_order_clear(out);
    return rc;
}

static int write_items(ag_db *db, const ord_order *o)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < o->nitems; i++) {
        const ord_item *it = &o->items[i];
        ag_val p[] = {AG_VTEXT(o->id), AG_VTEXT(it->product_id), AG_VTEXT(it->name),
                      AG_VINT(it->quantity), AG_VINT(it->unit_price_cents)};
        rc = ag_db_exec(db,
                        "INSERT INTO order_items (order_id, product_id, name, quantity,"
                        " unit_price_cents) VALUES ($1, $2, $3, $4, $5)",
                        p, 5, NULL);
    }
    return rc;
}

/* Inserts the whole row (and its items). */
static int insert_row(ag_db *db, const ord_order *o)
{
    char *addr = json_dumps(o->shipping_address, JSON_COMPACT | JSON_SORT_KEYS);
    char *pm = json_dumps(o->payment_method, JSON_COMPACT | JSON_SORT_KEYS);
    ag_val p[] = {AG_VTEXT(o->id),
                  AG_VTEXT(o->user_id),
                  AG_VTEXT(o->status),
                  AG_VINT(o->total_cents),
                  AG_VTEXT(o->currency),
                  AG_VINT(o->from_cart),
                  AG_VTEXT(addr ? addr : "{}"),
                  AG_VTEXT(pm ? pm : "{}"),
                  AG_VTEXT(o->payment_id[0] ? o->payment_id : NULL),
                  AG_VTEXT(o->reason[0] ? o->reason : NULL),
                  AG_VINT(o->cancel_requested),
                  AG_VINT(o->version),
                  AG_VTEXT(o->created_at),
                  AG_VTEXT(o->updated_at)};
    int rc = ag_db_exec(db,
                        "INSERT INTO orders (" ORDER_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7,"
                        " $8, $9, $10, $11, $12, $13, $14)",
                        p, 14, NULL);
    free(addr);
    free(pm);
    return rc == 0 ? write_items(db, o) : rc;
}

/* Writes what an event after OrderPlaced may change; the version check
 * makes a lost update impossible even outside SERIALIZABLE. */
static int update_row(ag_db *db, const ord_order *o)
{
    ag_val p[] = {AG_VTEXT(o->id),
                  AG_VTEXT(o->status),
                  AG_VTEXT(o->payment_id[0] ? o->payment_id : NULL),
                  AG_VTEXT(o->reason[0] ? o->reason : NULL),
                  AG_VINT(o->cancel_requested),
                  AG_VINT(o->version),
                  AG_VTEXT(o->updated_at)};
    return ag_db_exec_changed(db,
                              "UPDATE orders SET status = $2, payment_id = $3, reason = $4,"
                              " cancel_requested = $5, version = $6, updated_at = $7"
                              " WHERE id = $1 AND version = $6 - 1",
                              p, 7, AG_ERETRY);
}

static void wake_waiters(void *ud)
{
    pthread_mutex_lock(&g_ord.wait_mu);
    g_ord.changes++;
    pthread_cond_broadcast(&g_ord.wait_cv);
    pthread_mutex_unlock(&g_ord.wait_mu);
}

int ord_append(ag_db *db, ord_order *o, const char *type, json_t *data, const char *actor)
{
    if (!data) data = json_object();
    char at[32];
    ag_time_now(at, sizeof at);
    bool placed = strcmp(type, "OrderPlaced") == 0;
    int rc = apply(o, type, data, at);
    if (rc == 0) {
        char *text = json_dumps(data, JSON_COMPACT | JSON_SORT_KEYS);
        ag_val p[] = {AG_VTEXT(o->id), AG_VINT(o->version),
                      AG_VTEXT(type),  AG_VTEXT(text ? text : "{}"),
                      AG_VTEXT(actor), AG_VTEXT(at)};
        rc = ag_db_exec(db,
                        "INSERT INTO order_events (order_id, seq, type, data, actor, at)"
                        " VALUES ($1, $2, $3, $4, $5, $6)",
                        p, 6, NULL);
        free(text);
    }
    if (rc == 0) rc = placed ? insert_row(db, o) : update_row(db, o);
    if (rc == 0) ag_db_after_commit(db, wake_waiters, NULL);
    json_decref(data);
    return rc;
}

/* ---- Reading ------------------------------------------------------------------------------ */

json_t *ord_order_json(const ord_order *o)
{
    json_t *items = json_array();
    for (size_t i = 0; i < o->nitems; i++) {
        const ord_item *it = &o->items[i];
        json_array_append_new(items, json_pack("{s:s, s:s, s:I, s:I, s:I}", "productId",
                                               it->product_id, "name", it->name, "quantity",
                                               (json_int_t)it->quantity, "unitPriceCents",
                                               (json_int_t)it->unit_price_cents, "lineTotalCents",
                                               (json_int_t)(it->quantity * it->unit_price_cents)));
    }
    json_t *j = json_pack(
        "{s:s, s:s, s:s, s:o, s:I, s:s, s:b, s:O, s:O, s:b, s:I, s:s, s:s}", "id", o->id, "userId",
        o->user_id, "status", o->status, "items", items, "totalCents", (json_int_t)o->total_cents,
        "currency", o->currency, "fromCart", o->from_cart, "shippingAddress",
        o->shipping_address ? o->shipping_address : json_null(), "paymentMethod",
        o->payment_method ? o->payment_method : json_null(), "cancelRequested", o->cancel_requested,
        "version", (json_int_t)o->version, "createdAt", o->created_at, "updatedAt", o->updated_at);
    json_object_set_new(j, "paymentId",
                        o->payment_id[0] ? json_string(o->payment_id) : json_null());
    json_object_set_new(j, "reason", o->reason[0] ? json_string(o->reason) : json_null());
    return j;
}

json_t *ord_order_event_data(const ord_order *o)
{
    json_t *items = json_array();
    for (size_t i = 0; i < o->nitems; i++)
        json_array_append_new(
            items, json_pack("{s:s, s:s, s:I, s:I}", "productId", o->items[i].product_id, "name",
                             o->items[i].name, "quantity", (json_int_t)o->items[i].quantity,
                             "unitPriceCents", (json_int_t)o->items[i].unit_price_cents));
    json_t *d = json_pack("{s:s, s:s, s:s, s:b, s:I, s:s, s:o}", "orderId", o->id, "userId",
                          o->user_id, "status", o->status, "fromCart", o->from_cart, "totalCents",
                          (json_int_t)o->total_cents, "currency", o->currency, "items", items);
    json_object_set_new(d, "reason", o->reason[0] ? json_string(o->reason) : json_null());
    return d;
}

int ord_history_json(ag_db *db, const char *id, json_t **out)
{
    *out = NULL;
    ag_val p[] = {AG_VTEXT(id)};
    ag_rows *r;
    int rc = ag_db_query(db,
                         "SELECT seq, type, data, actor, at FROM order_events WHERE order_id = $1"
                         " ORDER BY seq",
                         p, 1, &r);
    if (rc < 0) return rc;
    json_t *arr = json_array();
    while ((rc = ag_rows_next(r)) == 1) {
        json_t *data = parse_text(ag_rows_text(r, 2));
        json_t *e = json_pack("{s:I, s:s, s:o, s:s}", "seq", (json_int_t)ag_rows_int(r, 0), "type",
                              ag_rows_text(r, 1), "data", data ? data : json_object(), "at",
                              ag_rows_text(r, 4));
        json_object_set_new(e, "actor",
                            ag_rows_is_null(r, 3) ? json_null() : json_string(ag_rows_text(r, 3)));
        json_array_append_new(arr, e);
    }
    ag_rows_free(r);
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

int ord_list(ag_db *db, const char *user, const char *status, int64_t limit, int64_t offset,
             json_t **out, int64_t *total)
{
    *out = NULL;
    ag_val p[] = {AG_VTEXT(user), AG_VTEXT(status), AG_VINT(limit), AG_VINT(offset)};
    int rc = ag_db_query_int(
        db,
        "SELECT COUNT(*) FROM orders WHERE (CAST($1 AS TEXT) IS NULL OR user_id = $1)"
        " AND (CAST($2 AS TEXT) IS NULL OR status = $2)",
        p, 2, total);
    if (rc < 0) return rc;
    ag_rows *r;
    rc = ag_db_query(db,
                     "SELECT id FROM orders WHERE (CAST($1 AS TEXT) IS NULL OR user_id = $1)"
                     " AND (CAST($2 AS TEXT) IS NULL OR status = $2)"
                     " ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4",
                     p, 4, &r);
    if (rc < 0) return rc;
    char(*ids)[40] = ag_calloc((size_t)limit, sizeof *ids);
    size_t n = 0;
    while (n < (size_t)limit && (rc = ag_rows_next(r)) == 1)
        set_str(ids[n++], sizeof ids[0], ag_rows_text(r, 0));
    ag_rows_free(r);
    json_t *arr = json_array();
    for (size_t i = 0; rc >= 0 && i < n; i++) {
        ord_order o;
        rc = ord_order_get(db, ids[i], &o);
        if (rc == AG_ENOTFOUND) { /* deleted in between: not possible today, harmless */
            rc = 0;
            continue;
        }
        if (rc == 0) {
            json_array_append_new(arr, ord_order_json(&o));
            ord_order_clear(&o);
        }
    }
    ag_free(ids);
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

int ord_pending_of_user(ag_db *db, const char *user, char (**ids)[40], size_t *n)
{
    *ids = NULL;
    *n = 0;
    ag_val p[] = {AG_VTEXT(user)};
    ag_rows *r;
    int rc = ag_db_query(db,
                         "SELECT id FROM orders WHERE user_id = $1 AND status = 'PENDING'"
                         " AND cancel_requested = 0 ORDER BY id LIMIT 1000",
                         p, 1, &r);
    if (rc < 0) return rc;
    char(*out)[40] = NULL;
    size_t count = 0;
    while ((rc = ag_rows_next(r)) == 1) {
        if (!out) out = ag_calloc(1000, sizeof *out);
        set_str(out[count++], sizeof out[0], ag_rows_text(r, 0));
    }
    ag_rows_free(r);
    if (rc < 0) {
        ag_free(out);
        return rc;
    }
    *ids = out;
    *n = count;
    return 0;
}

void ord_wait_final(const char *id, uint64_t timeout_ms)
{
    ag_deadline dl = ag_deadline_in(timeout_ms);
    for (;;) {
        pthread_mutex_lock(&g_ord.wait_mu);
        uint64_t seen = g_ord.changes;
        pthread_mutex_unlock(&g_ord.wait_mu);
        ag_db *db;
        ord_order o;
        if (ag_store_db(g_ord.store, &db) < 0 || ord_order_get(db, id, &o) < 0) return;
        bool final = strcmp(o.status, "CONFIRMED") == 0 || strcmp(o.status, "CANCELLED") == 0;
        ord_order_clear(&o);
        uint64_t left = ag_deadline_remaining(dl);
        if (final || left == 0) return;
        if (left > 250) left = 250; /* a change committed by another process is seen too */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t)(left / 1000);
        ts.tv_nsec += (long)(left % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&g_ord.wait_mu);
        while (g_ord.changes == seen &&
               pthread_cond_timedwait(&g_ord.wait_cv, &g_ord.wait_mu, &ts) == 0) {
        }
        pthread_mutex_unlock(&g_ord.wait_mu);
    }
}

/* ---- Rebuilding ----------------------------------------------------------------------------- */

typedef struct rebuild_ctx {
    const char *id;
    bool changed;
} rebuild_ctx;

static int rebuild_one(ag_db *db, void *ud)
{
    rebuild_ctx *c = ud;
    c->changed = false;
    ag_val p[] = {AG_VTEXT(c->id)};
    ag_rows *r;
    int rc = ag_db_query(
        db, "SELECT type, data, at FROM order_events WHERE order_id = $1 ORDER BY seq", p, 1, &r);
    if (rc < 0) return rc;
    ord_order folded;
    memset(&folded, 0, sizeof folded);
    set_str(folded.id, sizeof folded.id, c->id);
    while (rc >= 0 && (rc = ag_rows_next(r)) == 1) {
        json_t *d = parse_text(ag_rows_text(r, 1));
        int arc = apply(&folded, ag_rows_text(r, 0), d, ag_rows_text(r, 2));
        json_decref(d);
        if (arc < 0) {
            ag_error("an order's history does not fold", AG_FS("orderId", c->id),
                     AG_FS("event", ag_rows_text(r, 0)), AG_FERR(arc));
            rc = arc;
        }
    }
    ag_rows_free(r);
    if (rc < 0) {
        ord_order_clear(&folded);
        return rc;
    }
    ord_order cur;
    int grc = ord_order_get(db, c->id, &cur);
    if (grc < 0 && grc != AG_ENOTFOUND) {
        ord_order_clear(&folded);
        return grc;
    }
    json_t *a = ord_order_json(&folded);
    json_t *b = grc == 0 ? ord_order_json(&cur) : NULL;
    c->changed = !b || !json_equal(a, b);
    json_decref(a);
    json_decref(b);
    if (grc == 0) ord_order_clear(&cur);
    if (c->changed) {
        rc = ag_db_exec(db, "DELETE FROM order_items WHERE order_id = $1", p, 1, NULL);
        if (rc == 0) rc = ag_db_exec(db, "DELETE FROM orders WHERE id = $1", p, 1, NULL);
        if (rc == 0) rc = insert_row(db, &folded);
    }
    ord_order_clear(&folded);
    return rc;
}

int ord_rebuild(ag_store *s, const char *id, int64_t *checked, int64_t *changed)
{
    *checked = *changed = 0;
    ag_db *db;
    int rc = ag_store_db(s, &db);
    if (rc < 0) return rc;
    ag_val p[] = {AG_VTEXT(id)};
    ag_rows *r;
    rc = ag_db_query(db,
                     "SELECT DISTINCT order_id FROM order_events"
                     " WHERE (CAST($1 AS TEXT) IS NULL OR order_id = $1) ORDER BY order_id",
                     p, 1, &r);
    if (rc < 0) return rc;
    size_t cap = 64, n = 0;
    char(*ids)[40] = ag_calloc(cap, sizeof *ids);
    while ((rc = ag_rows_next(r)) == 1) {
        if (n == cap) {
            ids = ag_realloc(ids, cap * 2 * sizeof *ids);
            cap *= 2;
        }
        set_str(ids[n++], sizeof ids[0], ag_rows_text(r, 0));
    }
    ag_rows_free(r);
    for (size_t i = 0; rc >= 0 && i < n; i++) {
        rebuild_ctx c = {.id = ids[i]};
        rc = ag_store_tx(s, rebuild_one, &c);
        if (rc >= 0) {
            (*checked)++;
            if (c.changed) (*changed)++;
        }
    }
    ag_free(ids);
    return rc < 0 ? rc : 0;
}
