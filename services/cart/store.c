/*
 * store.c — agora-cart's SQL: the cart_items table (schema/001_cart.sql),
 * one row per (user, product). Every value goes in as a parameter. The
 * quantity limits are checked by routes.c inside the same transaction as
 * the write, and again by the table's CHECK.
 */
#include <string.h>

#include "cart.h"

int cart_lines(ag_db *db, const char *user, cart_line **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    ag_val p[] = {AG_VTEXT(user), AG_VINT(CART_MAX_LINES)};
    ag_rows *r;
    int rc = ag_db_query(db,
                         "SELECT product_id, name, price_cents, currency, quantity, added_at"
                         " FROM cart_items WHERE user_id = $1"
                         " ORDER BY added_at, product_id LIMIT $2",
                         p, 2, &r);
    if (rc < 0) return rc;
    cart_line *lines = NULL;
    size_t count = 0;
    while ((rc = ag_rows_next(r)) == 1) {
        if (!lines) lines = ag_calloc(CART_MAX_LINES, sizeof *lines);
        cart_line *l = &lines[count++];
        ag_rows_copy(r, 0, l->p.id, sizeof l->p.id);
        ag_rows_copy(r, 1, l->p.name, sizeof l->p.name);
        l->p.price_cents = ag_rows_int(r, 2);
        ag_rows_copy(r, 3, l->p.currency, sizeof l->p.currency);
        l->p.active = true;
        l->quantity = ag_rows_int(r, 4);
        ag_rows_copy(r, 5, l->added_at, sizeof l->added_at);
    }
    ag_rows_free(r);
    if (rc < 0) {
        ag_free(lines);
        return rc;
    }
    *out = lines;
    *n = count;
    return 0;
}

int cart_line_count(ag_db *db, const char *user, int64_t *n)
{
    ag_val p[] = {AG_VTEXT(user)};
    return ag_db_query_int(db, "SELECT COUNT(*) FROM cart_items WHERE user_id = $1", p, 1, n);
}

int cart_line_quantity(ag_db *db, const char *user, const char *product, int64_t *qty)
{
    ag_val p[] = {AG_VTEXT(user), AG_VTEXT(product)};
    return ag_db_query_int(
        db, "SELECT quantity FROM cart_items WHERE user_id = $1 AND product_id = $2", p, 2, qty);
}

int cart_line_put(ag_db *db, const char *user, const product_info *pi, int64_t qty)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VTEXT(user),     AG_VTEXT(pi->id),         AG_VINT(qty),
                  AG_VTEXT(pi->name), AG_VINT(pi->price_cents), AG_VTEXT(pi->currency),
                  AG_VTEXT(ts)};
    return ag_db_exec(db,
                      "INSERT INTO cart_items (user_id, product_id, quantity, name, price_cents,"
                      " currency, priced_at, added_at, updated_at)"
                      " VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7)"
                      " ON CONFLICT (user_id, product_id) DO UPDATE SET"
                      " quantity = excluded.quantity, name = excluded.name,"
                      " price_cents = excluded.price_cents, currency = excluded.currency,"
                      " priced_at = excluded.priced_at, updated_at = excluded.updated_at",
                      p, 7, NULL);
}

int cart_line_snapshot(ag_db *db, const char *user, const product_info *pi)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VTEXT(user),           AG_VTEXT(pi->id),       AG_VTEXT(pi->name),
                  AG_VINT(pi->price_cents), AG_VTEXT(pi->currency), AG_VTEXT(ts)};
    return ag_db_exec(db,
                      "UPDATE cart_items SET name = $3, price_cents = $4, currency = $5,"
                      " priced_at = $6 WHERE user_id = $1 AND product_id = $2",
                      p, 6, NULL);
}

int cart_line_remove(ag_db *db, const char *user, const char *product)
{
    ag_val p[] = {AG_VTEXT(user), AG_VTEXT(product)};
    int64_t changes = 0;
    int rc = ag_db_exec(db, "DELETE FROM cart_items WHERE user_id = $1 AND product_id = $2", p, 2,
                        &changes);
    if (rc < 0) return rc;
    return changes == 0 ? AG_ENOTFOUND : 0;
}

int cart_clear(ag_db *db, const char *user, int64_t *removed)
{
    ag_val p[] = {AG_VTEXT(user)};
    int64_t changes = 0;
    int rc = ag_db_exec(db, "DELETE FROM cart_items WHERE user_id = $1", p, 1, &changes);
    if (rc == 0 && removed) *removed = changes;
    return rc;
}
