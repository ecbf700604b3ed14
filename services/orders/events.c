/*
 * events.c — what agora-orders publishes and consumes (docs/events.md).
 *
 * Published through the outbox, in the transaction of the change (subject:
 * the order id), every one with the data of ord_order_event_data:
 *   {orderId, userId, status, fromCart, totalCents, currency,
 *    items: [{productId, name, quantity, unitPriceCents}], reason}
 *   order.created    the order was accepted (PENDING)
 *   order.confirmed  stock reserved and committed, payment taken
 *   order.cancelled  compensated or cancelled (reason says why)
 *   order.shipped, order.delivered   an admin moved it
 *
 * Consumed, in the transaction that records the event in the inbox:
 *   user.deleted {userId}
 *       every PENDING order of that user gets CancelRequested (reason "the
 *       customer's account was deleted"); each checkout saga then stops at
 *       its next step and compensates. Confirmed orders are left alone:
 *       they are paid for and may still ship.
 */
#include <string.h>

#include "orders.h"

int ord_publish(ag_db *db, const char *type, const ord_order *o)
{
    return ag_bus_publish(g_ord.bus, db, type, o->id, ord_order_event_data(o), NULL);
}

static int on_user_deleted(ag_db *db, const ag_event *ev, void *ud, char *why, size_t n)
{
    const char *user = json_string_value(json_object_get(ev->data, "userId"));
    if (!user || !*user) {
        snprintf(why, n, "user.deleted without a userId");
        return AG_EINVAL;
    }
    char(*ids)[40];
    size_t count;
    int rc = ord_pending_of_user(db, user, &ids, &count);
    for (size_t i = 0; rc == 0 && i < count; i++) {
        ord_order o;
        rc = ord_order_get(db, ids[i], &o);
        if (rc == 0)
            rc = ord_append(db, &o, "CancelRequested",
                            json_pack("{s:s}", "reason", "the customer's account was deleted"),
                            "user.deleted");
        if (rc == AG_ESTATE) rc = 0;
        ord_order_clear(&o);
    }
    ag_free(ids);
    if (rc < 0) {
        snprintf(why, n, "cannot cancel the user's pending orders: %s", ag_db_error(db));
        return rc;
    }
    if (count)
        ag_info("pending orders of a deleted user asked to cancel", AG_FS("userId", user),
                AG_FI("orders", (long long)count));
    return 0;
}

int orders_subscribe(ag_bus *bus)
{
    return ag_bus_subscribe(bus, "user.deleted", on_user_deleted, NULL);
}
