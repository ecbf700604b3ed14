/*
 * events.c — what agora-payments publishes (docs/events.md), each inside the
 * transaction that records the change (subject: the order id, so that a
 * consumer sees one order's payment events in order):
 *   payment.succeeded {paymentId, orderId, amountCents, currency, method}
 *   payment.failed    {paymentId, orderId, amountCents, currency, method,
 *                      failureCode, failureMessage}
 *   payment.refunded  {paymentId, orderId, refundId, amountCents (this
 *                      refund), refundedCents (all refunds so far),
 *                      currency, fullyRefunded}
 * method is {type, brand, last4} or {type, walletId}: never a card number.
 * Each also carries userId: the order's owner when the caller gave one
 * (agora-orders does), else null.
 * It consumes nothing.
 */
#include <string.h>

#include "payments.h"

int publish_payment_result(ag_db *db, const payment *p)
{
    bool ok = strcmp(p->status, "SUCCEEDED") == 0;
    json_t *full = payment_json(p);
    json_t *data = json_pack("{s:s, s:s, s:I, s:s, s:O}", "paymentId", p->id, "orderId",
                             p->order_id, "amountCents", (json_int_t)p->amount_cents, "currency",
                             p->currency, "method", json_object_get(full, "method"));
    json_decref(full);
    if (!data) return AG_EINVAL;
    json_object_set_new(data, "userId", p->user_id[0] ? json_string(p->user_id) : json_null());
    if (!ok) {
        json_object_set_new(data, "failureCode", json_string(p->failure_code));
        json_object_set_new(data, "failureMessage", json_string(p->failure_message));
    }
    return ag_bus_publish(g_pay.bus, db, ok ? "payment.succeeded" : "payment.failed",
                          p->order_id, data, NULL);
}

int publish_payment_refunded(ag_db *db, const payment *p, const char *refund_id, int64_t cents)
{
    json_t *data = json_pack(
        "{s:s, s:s, s:s, s:I, s:I, s:s, s:b}", "paymentId", p->id, "orderId", p->order_id,
        "refundId", refund_id, "amountCents", (json_int_t)cents, "refundedCents",
        (json_int_t)p->refunded_cents, "currency", p->currency, "fullyRefunded",
        p->refunded_cents == p->amount_cents);
    if (!data) return AG_EINVAL;
    json_object_set_new(data, "userId", p->user_id[0] ? json_string(p->user_id) : json_null());
    return ag_bus_publish(g_pay.bus, db, "payment.refunded", p->order_id, data, NULL);
}
