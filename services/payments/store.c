/*
 * store.c — agora-payments' SQL: the payments and refunds tables
 * (schema/001_payments.sql). Every value goes in as a parameter. The refund
 * limit is enforced here in the UPDATE itself (and again by the table's
 * CHECK), so two refunds racing cannot together exceed the charge.
 */
#include <string.h>

#include "payments.h"

#define PAYMENT_COLS                                                                               \
    "id, order_id, user_id, status, amount_cents, refunded_cents, currency,"                       \
    " method_type, card_brand, card_last4, card_exp, wallet_id, provider, provider_ref,"           \
    " failure_code, failure_message, created_at"

static void payment_from_row(ag_rows *r, void *out)
{
    payment *p = out;
    memset(p, 0, sizeof *p);
    ag_rows_copy(r, 0, p->id, sizeof p->id);
    ag_rows_copy(r, 1, p->order_id, sizeof p->order_id);
    ag_rows_copy(r, 2, p->user_id, sizeof p->user_id);
    ag_rows_copy(r, 3, p->status, sizeof p->status);
    p->amount_cents = ag_rows_int(r, 4);
    p->refunded_cents = ag_rows_int(r, 5);
    ag_rows_copy(r, 6, p->currency, sizeof p->currency);
    ag_rows_copy(r, 7, p->method_type, sizeof p->method_type);
    ag_rows_copy(r, 8, p->card_brand, sizeof p->card_brand);
    ag_rows_copy(r, 9, p->card_last4, sizeof p->card_last4);
    ag_rows_copy(r, 10, p->card_exp, sizeof p->card_exp);
    ag_rows_copy(r, 11, p->wallet_id, sizeof p->wallet_id);
    ag_rows_copy(r, 12, p->provider, sizeof p->provider);
    ag_rows_copy(r, 13, p->provider_ref, sizeof p->provider_ref);
    ag_rows_copy(r, 14, p->failure_code, sizeof p->failure_code);
    ag_rows_copy(r, 15, p->failure_message, sizeof p->failure_message);
    ag_rows_copy(r, 16, p->created_at, sizeof p->created_at);
}

static int payment_one(ag_db *db, const char *sql, const char *key, payment *out)
{
    ag_val p[] = {AG_VTEXT(key)};
    return ag_db_query_one(db, sql, p, 1, payment_from_row, out);
}

int payment_get(ag_db *db, const char *id, payment *out)
{
    return payment_one(db, "SELECT " PAYMENT_COLS " FROM payments WHERE id = $1", id, out);
}

int payment_by_order(ag_db *db, const char *order_id, payment *out)
{
    return payment_one(db, "SELECT " PAYMENT_COLS " FROM payments WHERE order_id = $1", order_id,
                       out);
}

/* NULL for an empty string: the column is absent for this kind of payment. */
static ag_val opt(const char *s)
{
    return s && *s ? AG_VTEXT(s) : AG_VNULL;
}

int payment_insert(ag_db *db, const payment *x)
{
    ag_val p[] = {AG_VTEXT(x->id),         AG_VTEXT(x->order_id),    opt(x->user_id),
                  AG_VTEXT(x->status),     AG_VINT(x->amount_cents), AG_VINT(x->refunded_cents),
                  AG_VTEXT(x->currency),   AG_VTEXT(x->method_type), opt(x->card_brand),
                  opt(x->card_last4),      opt(x->card_exp),         opt(x->wallet_id),
                  AG_VTEXT(x->provider),   opt(x->provider_ref),     opt(x->failure_code),
                  opt(x->failure_message), AG_VTEXT(x->created_at)};
    return ag_db_exec(db,
                      "INSERT INTO payments (" PAYMENT_COLS ", updated_at) VALUES ($1, $2, $3,"
                      " $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17)",
                      p, 17, NULL);
}

int payment_add_refund(ag_db *db, const char *id, int64_t cents)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VTEXT(id), AG_VINT(cents), AG_VTEXT(ts)};
    return ag_db_exec_changed(
        db,
        "UPDATE payments SET refunded_cents = refunded_cents + $2, updated_at = $3"
        " WHERE id = $1 AND status = 'SUCCEEDED'"
        " AND refunded_cents + $2 <= amount_cents",
        p, 3, AG_ECONSTRAINT);
}

int refund_by_key(ag_db *db, const char *payment_id, const char *key, char **response,
                  int64_t *requested)
{
    *response = NULL;
    ag_val p[] = {AG_VTEXT(payment_id), AG_VTEXT(key)};
    ag_rows *r;
    int rc = ag_db_query(db,
                         "SELECT response, requested_cents FROM refunds"
                         " WHERE payment_id = $1 AND idempotency_key = $2",
                         p, 2, &r);
    if (rc < 0) return rc;
    rc = ag_rows_next(r);
    if (rc == 1) {
        *response = ag_strdup(ag_rows_text(r, 0));
        *requested = ag_rows_is_null(r, 1) ? -1 : ag_rows_int(r, 1);
    }
    ag_rows_free(r);
    return rc == 1 ? 0 : rc == 0 ? AG_ENOTFOUND : rc;
}

int refund_insert(ag_db *db, const char *id, const char *payment_id, int64_t cents,
                  int64_t requested, const char *key, const char *provider_ref,
                  const char *response, const char *created_at)
{
    ag_val p[] = {AG_VTEXT(id),       AG_VTEXT(payment_id),
                  AG_VINT(cents),     requested < 0 ? AG_VNULL : AG_VINT(requested),
                  opt(key),           opt(provider_ref),
                  AG_VTEXT(response), AG_VTEXT(created_at)};
    return ag_db_exec(db,
                      "INSERT INTO refunds (id, payment_id, amount_cents, requested_cents,"
                      " idempotency_key, provider_ref, response, created_at)"
                      " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                      p, 8, NULL);
}

int payments_list(ag_db *db, const char *order_id, int64_t limit, int64_t offset, json_t **out,
                  int64_t *total)
{
    /* Two statements rather than "$1 IS NULL OR ...": PostgreSQL cannot type
     * a parameter that is only ever compared with NULL. */
    *out = NULL;
    ag_val p[] = {AG_VINT(limit), AG_VINT(offset), AG_VTEXT(order_id)};
    int np = order_id ? 3 : 2;
    int rc = order_id ? ag_db_query_int(db, "SELECT COUNT(*) FROM payments WHERE order_id = $1",
                                        &p[2], 1, total)
                      : ag_db_query_int(db, "SELECT COUNT(*) FROM payments", NULL, 0, total);
    if (rc < 0) return rc;
    ag_rows *r;
    rc = ag_db_query(db,
                     order_id ? "SELECT " PAYMENT_COLS " FROM payments WHERE order_id = $3"
                                " ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2"
                              : "SELECT " PAYMENT_COLS " FROM payments"
                                " ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2",
                     p, np, &r);
    if (rc < 0) return rc;
    json_t *arr = json_array();
    payment x;
    while ((rc = ag_rows_next(r)) == 1) {
        payment_from_row(r, &x);
        json_array_append_new(arr, payment_json(&x));
    }
    ag_rows_free(r);
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

static json_t *opt_json(const char *s)
{
    return *s ? json_string(s) : json_null();
}

json_t *payment_json(const payment *p)
{
    json_t *method;
    if (strcmp(p->method_type, "card") == 0)
        method = json_pack("{s:s, s:s, s:s}", "type", "card", "brand", p->card_brand, "last4",
                           p->card_last4);
    else
        method = json_pack("{s:s, s:s}", "type", p->method_type, "walletId", p->wallet_id);
    return json_pack("{s:s, s:s, s:s, s:I, s:s, s:I, s:o, s:o, s:o, s:s}", "id", p->id, "orderId",
                     p->order_id, "status", p->status, "amountCents", (json_int_t)p->amount_cents,
                     "currency", p->currency, "refundedCents", (json_int_t)p->refunded_cents,
                     "method", method, "failureCode", opt_json(p->failure_code), "failureMessage",
                     opt_json(p->failure_message), "createdAt", p->created_at);
}
