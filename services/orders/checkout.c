/*
 * checkout.c — the two sagas of agora-orders (DESIGN.md §7), run by
 * libagora's saga engine (include/agora/saga.h, docs/internals/saga.md).
 *
 * "checkout", id = the order id, created with the order in POST /v1/orders:
 *
 *   step       action                                  compensation
 *   reserve    POST inventory /v1/reservations         POST .../:id/release
 *              (gRPC InventoryService/Reserve first)
 *   charge     POST payments /v1/payments              refund what was charged
 *   confirm    POST inventory .../:id/commit           (none: the last step)
 *              (gRPC InventoryService/Commit first)
 *
 * The two hot inventory calls go over gRPC when inventory answers it, HTTP
 * otherwise (inventory_grpc.c).
 *
 *   every step done  -> OrderConfirmed, order.confirmed
 *   compensated      -> OrderCancelled (the reason), order.cancelled
 *
 * "cancellation", id = "<order id>:cancel", created when a CONFIRMED order
 * is cancelled (the customer, before shipping):
 *
 *   refund     refund what was charged (retried until it succeeds)
 *   restock    POST inventory .../:id/return (the committed units come back)
 *   done       -> OrderCancelled, order.cancelled
 *
 * Outcomes of a call, as the saga engine wants them: 0 done; AG_SAGA_FAILED
 * when the peer said no for good (insufficient stock, a declined card, a
 * refused request: compensate at once); a negative code when it may work
 * later (a 5xx, a timeout, the breaker open, PAYMENT_IN_PROGRESS): retried
 * with backoff up to the step's attempts, then compensated. Every call is
 * idempotent by order id on the peer's side, which is what makes running a
 * step again after a crash safe.
 *
 * A cancel asked for while the checkout runs (CancelRequested, from the
 * customer or from user.deleted) is honoured at the start of the next step:
 * the step fails permanently with the request's reason and the completed
 * steps are compensated. When it arrives while the last step runs, the
 * order is confirmed and at once cancelled through the cancellation saga.
 */
#include <string.h>

#include "orders.h"

/* "<order id>" or "<order id>:cancel" -> the order id. */
static void order_of(const ag_saga_ctx *ctx, char out[40])
{
    snprintf(out, 40, "%s", ag_saga_ctx_id(ctx));
    char *colon = strchr(out, ':');
    if (colon) *colon = '\0';
}

static int load(ag_saga_ctx *ctx, ag_db *db, ord_order *o)
{
    char id[40];
    order_of(ctx, id);
    ag_db *own = db;
    int rc = own ? 0 : ag_store_db(g_ord.store, &own);
    if (rc == 0) rc = ord_order_get(own, id, o);
    if (rc < 0) ag_saga_ctx_fail(ctx, "cannot read order %s (%s)", id, ag_strerror(rc));
    return rc;
}

/* A permanent failure when the order was asked to cancel. */
static bool cancel_requested(ag_saga_ctx *ctx, const ord_order *o)
{
    if (!o->cancel_requested) return false;
    ag_saga_ctx_fail(ctx, "%s", o->reason[0] ? o->reason : "cancelled");
    return true;
}

/* The common reading of a peer's answer: 5xx and no answer are transient,
 * other statuses outside `ok` are permanent. */
static int judge(ag_saga_ctx *ctx, int rc, const peer_reply *rep, int ok, const char *what)
{
    if (rc < 0) {
        ag_saga_ctx_fail(ctx, "%s: no answer (%s)", what, ag_strerror(rc));
        return rc;
    }
    if (rep->status == ok) return 0;
    ag_saga_ctx_fail(ctx, "%s: %d %s", what, rep->status, rep->code[0] ? rep->code : "");
    if (rep->status >= 500 || rep->status == 429) return AG_EUNAVAIL;
    return AG_SAGA_FAILED;
}

/* The order of this saga for a step: 0, the load's error, or
 * AG_SAGA_FAILED (o cleared) when a cancel was asked for. */
static int load_live(ag_saga_ctx *ctx, ord_order *o)
{
    int rc = load(ctx, NULL, o);
    if (rc < 0) return rc;
    if (cancel_requested(ctx, o)) {
        ord_order_clear(o);
        return AG_SAGA_FAILED;
    }
    return 0;
}

/* A call to a peer within the saga's deadline, under its id as request id. */
static int saga_call(ag_saga_ctx *ctx, ord_peer peer, const char *method, const char *path,
                     json_t *body, peer_reply *rep)
{
    return peer_call(peer, method, path, body, NULL, ag_saga_ctx_deadline(ctx), ag_saga_ctx_id(ctx),
                     rep);
}

/* prefix + id + suffix into buf. */
static const char *path_of(char *buf, size_t n, const char *prefix, const char *id,
                           const char *suffix)
{
    snprintf(buf, n, "%s%s%s", prefix, id, suffix);
    return buf;
}

/* ---- reserve ----------------------------------------------------------------------------------
 */

static int reserve(ag_saga_ctx *ctx, void *ud)
{
    ord_order o;
    int rc = load_live(ctx, &o);
    if (rc != 0) return rc;
    if (inventory_grpc_reserve(ctx, &o, &rc)) { /* gRPC answered; else HTTP */
        ord_order_clear(&o);
        return rc;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < o.nitems; i++)
        json_array_append_new(items, json_pack("{s:s, s:I}", "productId", o.items[i].product_id,
                                               "quantity", (json_int_t)o.items[i].quantity));
    json_t *body = json_pack("{s:s, s:o}", "orderId", o.id, "items", items);
    peer_reply rep;
    rc = saga_call(ctx, PEER_INVENTORY, "POST", "/v1/reservations", body, &rep);
    json_decref(body);
    if (rc == 0 && rep.status == 409 && strcmp(rep.code, "INSUFFICIENT_STOCK") == 0) {
        json_t *d =
            json_array_get(json_object_get(json_object_get(rep.doc, "error"), "details"), 0);
        const char *pid = json_string_value(json_object_get(d, "productId"));
        ag_saga_ctx_fail(ctx, "INSUFFICIENT_STOCK: %s has %lld available, %lld requested",
                         pid ? pid : "a product",
                         (long long)json_integer_value(json_object_get(d, "available")),
                         (long long)json_integer_value(json_object_get(d, "requested")));
        rc = AG_SAGA_FAILED;
    } else {
        rc = judge(ctx, rc, &rep, 201, "reserve stock");
    }
    peer_reply_clear(&rep);
    ord_order_clear(&o);
    return rc;
}

/* POST inventory /v1/reservations/<order>/<verb> as a compensation: a 404
 * (nothing was reserved) or 409 (the reservation failed, or is past this
 * move) leaves nothing to undo; anything else that is not 200 is retried. */
static int reservation_undo(ag_saga_ctx *ctx, const char *verb, const char *what)
{
    char id[40], path[128], suffix[16];
    order_of(ctx, id);
    snprintf(suffix, sizeof suffix, "/%s", verb);
    peer_reply rep;
    int rc = saga_call(ctx, PEER_INVENTORY, "POST",
                       path_of(path, sizeof path, "/v1/reservations/", id, suffix), NULL, &rep);
    if (rc == 0 && (rep.status == 404 || rep.status == 409)) {
        ag_info("nothing to undo at inventory", AG_FS("orderId", id), AG_FS("verb", verb),
                AG_FI("status", rep.status));
        rep.status = 200;
    }
    rc = judge(ctx, rc, &rep, 200, what);
    peer_reply_clear(&rep);
    return rc == AG_SAGA_FAILED ? AG_EUNAVAIL : rc;
}

static int release(ag_saga_ctx *ctx, void *ud)
{
    return reservation_undo(ctx, "release", "release stock");
}

/* ---- charge -----------------------------------------------------------------------------------
 */

static int charge(ag_saga_ctx *ctx, void *ud)
{
    ord_order o;
    int rc = load_live(ctx, &o);
    if (rc != 0) return rc;
    const char *type = json_string_value(json_object_get(o.payment_method, "type"));
    json_t *method =
        type && strcmp(type, "card") == 0 ? cards_get(o.id) : json_incref(o.payment_method);
    if (!method) {
        ag_saga_ctx_fail(ctx, "PAYMENT_DETAILS_LOST: the card details were held in memory only"
                              " and the service restarted before the charge; nothing was"
                              " charged, please order again");
        ord_order_clear(&o);
        return AG_SAGA_FAILED;
    }
    json_t *body = json_pack("{s:s, s:I, s:s, s:o, s:s}", "orderId", o.id, "amountCents",
                             (json_int_t)o.total_cents, "currency", o.currency, "paymentMethod",
                             method, "userId", o.user_id);
    peer_reply rep;
    rc = saga_call(ctx, PEER_PAYMENTS, "POST", "/v1/payments", body, &rep);
    json_decref(body);
    json_t *d = json_object_get(rep.doc, "data");
    const char *status = json_string_value(json_object_get(d, "status"));
    const char *pid = json_string_value(json_object_get(d, "id"));
    if (rc == 0 && rep.status == 201 && status && pid && strcmp(status, "SUCCEEDED") == 0) {
        json_object_set_new(ag_saga_ctx_data(ctx), "paymentId", json_string(pid));
        cards_forget(o.id);
        rc = 0;
    } else if (rc == 0 && rep.status == 201 && status && strcmp(status, "FAILED") == 0) {
        const char *code = json_string_value(json_object_get(d, "failureCode"));
        const char *msg = json_string_value(json_object_get(d, "failureMessage"));
        ag_saga_ctx_fail(ctx, "%s: %s", code ? code : "PAYMENT_FAILED",
                         msg ? msg : "the payment was refused");
        cards_forget(o.id);
        rc = AG_SAGA_FAILED;
    } else if (rc == 0 && rep.status == 409 && strcmp(rep.code, "PAYMENT_IN_PROGRESS") == 0) {
        ag_saga_ctx_fail(ctx, "charge: PAYMENT_IN_PROGRESS");
        rc = AG_EBUSY;
    } else if (rc == 0 && rep.status == 504) {
        ag_saga_ctx_fail(ctx, "PROVIDER_TIMEOUT: the payment provider did not answer in time");
        rc = AG_ETIMEDOUT;
    } else {
        rc = judge(ctx, rc, &rep, 201, "charge");
    }
    peer_reply_clear(&rep);
    ord_order_clear(&o);
    return rc;
}

/* Refunds whatever was charged for the order (nothing when nothing was):
 * the payment id from the saga's data, else looked up by order id (a
 * charge whose answer was lost to a timeout may still have happened). */
static int refund(ag_saga_ctx *ctx, void *ud)
{
    char id[40], path[160];
    order_of(ctx, id);
    cards_forget(id);
    char pid[64] = "";
    const char *known = json_string_value(json_object_get(ag_saga_ctx_data(ctx), "paymentId"));
    peer_reply rep;
    int rc;
    if (known) {
        snprintf(pid, sizeof pid, "%s", known);
    } else {
        rc = saga_call(ctx, PEER_PAYMENTS, "GET",
                       path_of(path, sizeof path, "/v1/payments?orderId=", id, ""), NULL, &rep);
        if ((rc = judge(ctx, rc, &rep, 200, "find the payment")) != 0) {
            peer_reply_clear(&rep);
            return rc == AG_SAGA_FAILED ? AG_EUNAVAIL : rc;
        }
        json_t *p;
        size_t i;
        json_array_foreach(json_object_get(rep.doc, "data"), i, p)
        {
            const char *st = json_string_value(json_object_get(p, "status"));
            const char *pi = json_string_value(json_object_get(p, "id"));
            if (st && pi && strcmp(st, "SUCCEEDED") == 0) snprintf(pid, sizeof pid, "%s", pi);
        }
        peer_reply_clear(&rep);
        if (!pid[0]) return 0; /* nothing was charged */
    }
    rc = saga_call(ctx, PEER_PAYMENTS, "POST",
                   path_of(path, sizeof path, "/v1/payments/", pid, "/refund"), NULL, &rep);
    /* Already refunded in full (a repeat after a crash), or not refundable
     * because it never succeeded: either way nothing is left to give back. */
    if (rc == 0 && rep.status == 409 &&
        (strcmp(rep.code, "REFUND_EXCEEDS_CHARGE") == 0 ||
         strcmp(rep.code, "PAYMENT_NOT_REFUNDABLE") == 0))
        rep.status = 201;
    rc = judge(ctx, rc, &rep, 201, "refund");
    peer_reply_clear(&rep);
    return rc == AG_SAGA_FAILED ? AG_EUNAVAIL : rc; /* a refund is never given up */
}

/* ---- confirm, restock ---------------------------------------------------------------------- */

static int confirm(ag_saga_ctx *ctx, void *ud)
{
    ord_order o;
    int rc = load_live(ctx, &o);
    if (rc != 0) return rc;
    if (inventory_grpc_commit(ctx, o.id, &rc)) { /* gRPC answered; else HTTP */
        ord_order_clear(&o);
        return rc;
    }
    char path[128];
    peer_reply rep;
    rc = saga_call(ctx, PEER_INVENTORY, "POST",
                   path_of(path, sizeof path, "/v1/reservations/", o.id, "/commit"), NULL, &rep);
    rc = judge(ctx, rc, &rep, 200, "commit the reservation");
    peer_reply_clear(&rep);
    ord_order_clear(&o);
    return rc;
}

static int restock(ag_saga_ctx *ctx, void *ud)
{
    return reservation_undo(ctx, "return", "return the stock");
}

/* ---- Hooks: run inside the transaction that records the saga's progress -------------------- */

static int record(ag_saga_ctx *ctx, ag_db *db, const char *type, json_t *data, const char *publish)
{
    ord_order o;
    int rc = load(ctx, db, &o);
    if (rc < 0) {
        json_decref(data);
        return rc;
    }
    rc = ord_append(db, &o, type, data, "saga");
    if (rc == AG_ESTATE) { /* already there: a repeat after a crash */
        ag_warn("order event does not apply; skipped", AG_FS("orderId", o.id), AG_FS("event", type),
                AG_FS("status", o.status));
        rc = 0;
    } else if (rc == 0 && publish) {
        rc = ord_publish(db, publish, &o);
    }
    ord_order_clear(&o);
    return rc;
}

static int on_step_done(ag_saga_ctx *ctx, ag_db *db, void *ud)
{
    if (ag_saga_ctx_step(ctx) == 0) return record(ctx, db, "StockReserved", NULL, NULL);
    if (ag_saga_ctx_step(ctx) == 1) {
        const char *pid = json_string_value(json_object_get(ag_saga_ctx_data(ctx), "paymentId"));
        return record(ctx, db, "PaymentCharged", json_pack("{s:s?}", "paymentId", pid), NULL);
    }
    return 0;
}

static int on_confirmed(ag_saga_ctx *ctx, ag_db *db, void *ud)
{
    ord_order o;
    int rc = load(ctx, db, &o);
    if (rc < 0) return rc;
    bool cancel = o.cancel_requested;
    rc = ord_append(db, &o, "OrderConfirmed", NULL, "saga");
    if (rc == 0 && cancel) /* asked while the last step ran: undo it all now */
        rc = checkout_start_cancellation(db, &o, o.reason[0] ? o.reason : "cancelled", "saga");
    else if (rc == 0)
        rc = ord_publish(db, "order.confirmed", &o);
    if (rc == AG_ESTATE) rc = 0;
    ord_order_clear(&o);
    return rc;
}

static int on_checkout_compensated(ag_saga_ctx *ctx, ag_db *db, void *ud)
{
    const char *why = ag_saga_ctx_reason(ctx);
    return record(ctx, db, "OrderCancelled", json_pack("{s:s}", "reason", why ? why : "failed"),
                  "order.cancelled");
}

static int on_cancellation_done(ag_saga_ctx *ctx, ag_db *db, void *ud)
{
    return record(ctx, db, "OrderCancelled", NULL, "order.cancelled");
}

static int on_cancellation_stuck(ag_saga_ctx *ctx, ag_db *db, void *ud)
{
    /* Only after the refund failed on every one of its attempts (days of
     * backoff): the order stays CANCELLING for a person to look at. */
    ag_error("an order's cancellation could not refund; it stays CANCELLING",
             AG_FS("saga", ag_saga_ctx_id(ctx)),
             AG_FS("reason", ag_saga_ctx_reason(ctx) ? ag_saga_ctx_reason(ctx) : ""));
    return 0;
}

/* ---- Definitions -------------------------------------------------------------------------------
 */

static ag_saga_step g_checkout_steps[] = {
    {.name = "reserve", .action = reserve, .compensate = release, .max_attempts = 8},
    {.name = "charge", .action = charge, .compensate = refund, .max_attempts = 4},
    {.name = "confirm", .action = confirm, .max_attempts = 10},
};

static ag_saga_step g_cancel_steps[] = {
    {.name = "refund", .action = refund, .max_attempts = 100000},
    {.name = "restock", .action = restock, .max_attempts = 100000},
};

static const ag_saga_def g_checkout = {
    .name = "checkout",
    .steps = g_checkout_steps,
    .nsteps = 3,
    .on_step_done = on_step_done,
    .on_completed = on_confirmed,
    .on_compensated = on_checkout_compensated,
};

static const ag_saga_def g_cancellation = {
    .name = "cancellation",
    .steps = g_cancel_steps,
    .nsteps = 2,
    .on_completed = on_cancellation_done,
    .on_compensated = on_cancellation_stuck,
};

int checkout_register(void)
{
    for (int i = 0; i < 3; i++)
        g_checkout_steps[i].deadline_ms = g_ord.step_deadline_ms;
    for (int i = 0; i < 2; i++)
        g_cancel_steps[i].deadline_ms = g_ord.step_deadline_ms;
    int rc = ag_saga_register(g_ord.sagas, &g_checkout);
    if (rc == 0) rc = ag_saga_register(g_ord.sagas, &g_cancellation);
    return rc;
}

int checkout_start_cancellation(ag_db *db, ord_order *o, const char *reason, const char *actor)
{
    int rc = ord_append(db, o, "CancellationStarted", json_pack("{s:s}", "reason", reason), actor);
    char sid[64];
    snprintf(sid, sizeof sid, "%s:cancel", o->id);
    if (rc == 0)
        rc = ag_saga_create(g_ord.sagas, db, "cancellation", sid,
                            json_pack("{s:s, s:s?}", "orderId", o->id, "paymentId",
                                      o->payment_id[0] ? o->payment_id : NULL));
    return rc;
}
