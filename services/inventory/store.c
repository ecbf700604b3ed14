/*
 * store.c — agora-inventory's SQL (schema/001_inventory.sql). Every value
 * goes in as a parameter.
 *
 * Why reservations cannot oversell: a reservation takes stock with one
 * conditional UPDATE per line ("reserved = reserved + n WHERE quantity -
 * reserved >= n") and looks at the row count; the check and the write are
 * one statement inside one ag_store_tx, so two concurrent reservations can
 * never both see the same units as free. SQLite serialises writers (BEGIN
 * IMMEDIATE); PostgreSQL runs the transaction SERIALIZABLE and a conflict
 * reruns it. The table's CHECK (reserved <= quantity) is the last guard.
 */
#include <string.h>

#include "inventory.h"

/* A returned reservation keeps state COMMITTED in its row and gets a
 * returned_at (002_returned.sql: a column, because SQLite cannot widen the
 * state's CHECK in place); readers see RETURNED. */
#define RES_STATE "CASE WHEN returned_at IS NULL THEN state ELSE 'RETURNED' END"

#define STOCK_COLS "product_id, quantity, reserved, low_stock_level, location, deleted, updated_at"

static void stock_from_row(ag_rows *r, void *out)
{
    inv_stock *s = out;
    ag_rows_copy(r, 0, s->product_id, sizeof s->product_id);
    s->quantity = ag_rows_int(r, 1);
    s->reserved = ag_rows_int(r, 2);
    s->low_level = ag_rows_int(r, 3);
    ag_rows_copy(r, 4, s->location, sizeof s->location);
    s->deleted = ag_rows_int(r, 5) != 0;
    ag_rows_copy(r, 6, s->updated_at, sizeof s->updated_at);
}

int inv_stock_get(ag_db *db, const char *product, inv_stock *out)
{
    ag_val p[] = {AG_VTEXT(product)};
    return ag_db_query_one(db, "SELECT " STOCK_COLS " FROM stock WHERE product_id = $1", p, 1,
                           stock_from_row, out);
}

json_t *inv_stock_json(const inv_stock *s)
{
    return json_pack("{s:s, s:I, s:I, s:I, s:I, s:s, s:b, s:s}", "productId", s->product_id,
                     "quantity", (json_int_t)s->quantity, "reserved", (json_int_t)s->reserved,
                     "available", (json_int_t)(s->quantity - s->reserved), "lowStockLevel",
                     (json_int_t)s->low_level, "location", s->location, "deleted", s->deleted,
                     "updatedAt", s->updated_at);
}

int inv_stock_list(ag_db *db, int64_t page, int64_t limit, json_t *arr, int64_t *total)
{
    int rc = ag_db_query_int(db, "SELECT COUNT(*) FROM stock", NULL, 0, total);
    if (rc < 0) return rc;
    ag_val p[] = {AG_VINT(limit), AG_VINT((page - 1) * limit)};
    ag_rows *r;
    rc = ag_db_query(db, "SELECT " STOCK_COLS " FROM stock ORDER BY product_id LIMIT $1 OFFSET $2",
                     p, 2, &r);
    if (rc < 0) return rc;
    while ((rc = ag_rows_next(r)) == 1) {
        inv_stock s;
        stock_from_row(r, &s);
        json_array_append_new(arr, inv_stock_json(&s));
    }
    ag_rows_free(r);
    return rc < 0 ? rc : 0;
}

int inv_stock_create(ag_db *db, const char *product, int64_t quantity, bool *created)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VTEXT(product), AG_VINT(quantity), AG_VINT(INV_DEFAULT_LOW_LEVEL),
                  AG_VTEXT(ts)};
    int64_t changes = 0;
    int rc = ag_db_exec(db,
                        "INSERT INTO stock (product_id, quantity, reserved, low_stock_level,"
                        " created_at, updated_at) VALUES ($1, $2, 0, $3, $4, $4)"
                        " ON CONFLICT (product_id) DO NOTHING",
                        p, 4, &changes);
    if (rc == 0 && created) *created = changes > 0;
    return rc;
}

int inv_stock_add(ag_db *db, const char *product, int64_t delta)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VINT(delta), AG_VTEXT(product), AG_VTEXT(ts)};
    int64_t changes = 0;
    int rc = ag_db_exec(db,
                        "UPDATE stock SET quantity = quantity + $1, updated_at = $3"
                        " WHERE product_id = $2 AND quantity + $1 >= reserved",
                        p, 3, &changes);
    if (rc < 0 || changes > 0) return rc;
    inv_stock s;
    rc = inv_stock_get(db, product, &s);
    return rc < 0 ? rc : AG_ECONSTRAINT;
}

int inv_stock_set_meta(ag_db *db, const char *product, const int64_t *low_level,
                       const char *location)
{
    ag_val p[] = {AG_VTEXT(product), low_level ? AG_VINT(*low_level) : AG_VNULL,
                  AG_VTEXT(location)};
    return ag_db_exec(db,
                      "UPDATE stock SET low_stock_level = COALESCE($2, low_stock_level),"
                      " location = COALESCE($3, location) WHERE product_id = $1",
                      p, 3, NULL);
}

int inv_stock_mark_deleted(ag_db *db, const char *product)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VTEXT(product), AG_VTEXT(ts)};
    return ag_db_exec(db, "UPDATE stock SET deleted = 1, updated_at = $2 WHERE product_id = $1", p,
                      2, NULL);
}

int inv_stock_reserve(ag_db *db, const char *product, int64_t n)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VINT(n), AG_VTEXT(product), AG_VTEXT(ts)};
    return ag_db_exec_changed(
        db,
        "UPDATE stock SET reserved = reserved + $1, updated_at = $3"
        " WHERE product_id = $2 AND deleted = 0 AND quantity - reserved >= $1",
        p, 3, AG_ECONSTRAINT);
}

int inv_stock_unreserve(ag_db *db, const char *product, int64_t n, bool commit)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VINT(n), AG_VTEXT(product), AG_VTEXT(ts)};
    int64_t changes = 0;
    int rc =
        ag_db_exec(db,
                   commit ? "UPDATE stock SET quantity = quantity - $1, reserved = reserved - $1,"
                            " updated_at = $3 WHERE product_id = $2 AND reserved >= $1"
                          : "UPDATE stock SET reserved = reserved - $1, updated_at = $3"
                            " WHERE product_id = $2 AND reserved >= $1",
                   p, 3, &changes);
    if (rc < 0) return rc;
    return changes == 1 ? 0 : AG_ECONSTRAINT; /* a reservation's units are always there */
}

int inv_low_stock_check(ag_db *db, const char *product)
{
    ag_val p[] = {AG_VTEXT(product)};
    ag_rows *r;
    int rc = ag_db_query(db, "SELECT " STOCK_COLS ", low_alerted FROM stock WHERE product_id = $1",
                         p, 1, &r);
    if (rc < 0) return rc;
    rc = ag_rows_next(r);
    if (rc != 1) {
        ag_rows_free(r);
        return rc;
    }
    inv_stock s;
    stock_from_row(r, &s);
    bool alerted = ag_rows_int(r, 7) != 0;
    ag_rows_free(r);
    bool low = s.quantity - s.reserved <= s.low_level;
    if (low == alerted) return 0;
    ag_val q[] = {AG_VTEXT(product), AG_VINT(low ? 1 : 0)};
    rc = ag_db_exec(db, "UPDATE stock SET low_alerted = $2 WHERE product_id = $1", q, 2, NULL);
    if (rc < 0 || !low) return rc;
    json_t *data = json_pack("{s:s, s:I, s:I, s:I, s:I, s:s}", "productId", s.product_id,
                             "quantity", (json_int_t)s.quantity, "reserved", (json_int_t)s.reserved,
                             "available", (json_int_t)(s.quantity - s.reserved), "lowStockLevel",
                             (json_int_t)s.low_level, "location", s.location);
    return inv_publish(db, "inventory.low_stock", product, data);
}

int inv_adjustment_record(ag_db *db, const char *product, int64_t delta, const char *reason,
                          const char *actor)
{
    char ts[32], id[AG_ID_LEN + 1];
    ag_time_now(ts, sizeof ts);
    ag_id_new_str(id);
    ag_val p[] = {AG_VTEXT(id),     AG_VTEXT(product), AG_VINT(delta),
                  AG_VTEXT(reason), AG_VTEXT(actor),   AG_VTEXT(ts)};
    return ag_db_exec(db,
                      "INSERT INTO adjustments (id, product_id, delta, reason, actor, created_at)"
                      " VALUES ($1, $2, $3, $4, $5, $6)",
                      p, 6, NULL);
}

int inv_reservation_get(ag_db *db, const char *order, char state[16], char *key, size_t keyn,
                        char *shortages, size_t shn)
{
    ag_val p[] = {AG_VTEXT(order)};
    ag_rows *r;
    int rc = ag_db_query(
        db, "SELECT " RES_STATE ", items_key, shortages FROM reservations WHERE order_id = $1", p,
        1, &r);
    if (rc < 0) return rc;
    rc = ag_rows_next(r);
    if (rc == 1) {
        ag_rows_copy(r, 0, state, 16);
        if (key) snprintf(key, keyn, "%s", ag_rows_text(r, 1));
        if (shortages) {
            const char *sh = ag_rows_text(r, 2);
            snprintf(shortages, shn, "%s", sh ? sh : "");
        }
    }
    ag_rows_free(r);
    return rc == 1 ? 0 : rc == 0 ? AG_ENOTFOUND : rc;
}

int inv_reservation_insert(ag_db *db, const char *order, const char *state, const char *key,
                           const char *shortages, const inv_item *items, size_t n)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VTEXT(order), AG_VTEXT(state), AG_VTEXT(key), AG_VTEXT(shortages),
                  AG_VTEXT(ts)};
    int rc = ag_db_exec(db,
                        "INSERT INTO reservations (order_id, state, items_key, shortages,"
                        " created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
                        p, 5, NULL);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        ag_val q[] = {AG_VTEXT(order), AG_VTEXT(items[i].product_id), AG_VINT(items[i].quantity)};
        rc = ag_db_exec(db,
                        "INSERT INTO reservation_items (order_id, product_id, quantity)"
                        " VALUES ($1, $2, $3)",
                        q, 3, NULL);
    }
    return rc;
}

int inv_reservation_set_state(ag_db *db, const char *order, const char *state)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VTEXT(order), AG_VTEXT(state), AG_VTEXT(ts)};
    if (strcmp(state, "RETURNED") == 0) /* see RES_STATE */
        return ag_db_exec(db,
                          "UPDATE reservations SET returned_at = $2, updated_at = $2"
                          " WHERE order_id = $1 AND state = 'COMMITTED'",
                          (ag_val[]){p[0], p[2]}, 2, NULL);
    return ag_db_exec(db, "UPDATE reservations SET state = $2, updated_at = $3 WHERE order_id = $1",
                      p, 3, NULL);
}

int inv_stock_restock(ag_db *db, const char *product, int64_t n)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VINT(n), AG_VTEXT(product), AG_VTEXT(ts)};
    return ag_db_exec_changed(db,
                              "UPDATE stock SET quantity = quantity + $1, updated_at = $3"
                              " WHERE product_id = $2",
                              p, 3, AG_ECONSTRAINT); /* a committed reservation's row is kept */
}

int inv_reservation_items(ag_db *db, const char *order, inv_item **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    ag_val p[] = {AG_VTEXT(order), AG_VINT(INV_MAX_ITEMS)};
    ag_rows *r;
    int rc = ag_db_query(db,
                         "SELECT product_id, quantity FROM reservation_items WHERE order_id = $1"
                         " ORDER BY product_id LIMIT $2",
                         p, 2, &r);
    if (rc < 0) return rc;
    inv_item *items = NULL;
    size_t count = 0;
    while ((rc = ag_rows_next(r)) == 1) {
        if (!items) items = ag_calloc(INV_MAX_ITEMS, sizeof *items);
        snprintf(items[count].product_id, sizeof items[count].product_id, "%s", ag_rows_text(r, 0));
        items[count++].quantity = ag_rows_int(r, 1);
    }
    ag_rows_free(r);
    if (rc < 0) {
        ag_free(items);
        return rc;
    }
    *out = items;
    *n = count;
    return 0;
}

json_t *inv_reservation_json(ag_db *db, const char *order)
{
    ag_val p[] = {AG_VTEXT(order)};
    ag_rows *r;
    if (ag_db_query(db,
                    "SELECT " RES_STATE
                    ", created_at, updated_at FROM reservations WHERE order_id = $1",
                    p, 1, &r) < 0)
        return NULL;
    json_t *out = NULL;
    if (ag_rows_next(r) == 1)
        out = json_pack("{s:s, s:s, s:s, s:s}", "orderId", order, "state", ag_rows_text(r, 0),
                        "createdAt", ag_rows_text(r, 1), "updatedAt", ag_rows_text(r, 2));
    ag_rows_free(r);
    if (!out) return NULL;
    inv_item *items;
    size_t n;
    if (inv_reservation_items(db, order, &items, &n) < 0) {
        json_decref(out);
        return NULL;
    }
    json_object_set_new(out, "items", inv_items_json(items, n));
    ag_free(items);
    return out;
}
