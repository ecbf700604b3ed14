/*
 * events.c — what agora-cart consumes (docs/events.md). It publishes one
 * type, from routes.c in the transaction of the write:
 *   cart.item_added  subject userId  {userId, productId, quantity (added),
 *                    lineQuantity (the line's after)}
 *       on POST /v1/cart/items; agora-analytics counts carts from it.
 *
 * Consumed, each in the transaction that records the event in the inbox
 * (so a redelivery changes nothing more):
 *   order.confirmed {orderId, userId, items, fromCart}
 *       with fromCart true, the user's cart is cleared: the order was placed
 *       from it (the choreography half of "clear the cart after a confirmed
 *       order from the cart"). Without fromCart, or false, nothing changes.
 *   user.deleted {userId, ...}
 *       the user's cart is deleted.
 * An event without a userId is refused (it goes to dead letters with the
 * reason, never silently dropped).
 */
#include <string.h>

#include "cart.h"

static const char *event_user(const ag_event *ev, char *why, size_t n)
{
    const char *user = json_string_value(json_object_get(ev->data, "userId"));
    if (!user || !*user) snprintf(why, n, "%s without a userId", ev->type);
    return user && *user ? user : NULL;
}

static int on_order_confirmed(ag_db *db, const ag_event *ev, void *ud, char *why, size_t n)
{
    const char *user = event_user(ev, why, n);
    if (!user) return AG_EINVAL;
    json_t *from_cart = json_object_get(ev->data, "fromCart");
    if (from_cart && !json_is_boolean(from_cart)) {
        snprintf(why, n, "order.confirmed with a fromCart that is not a boolean");
        return AG_EINVAL;
    }
    if (!json_is_true(from_cart)) return 0;
    int64_t removed = 0;
    int rc = cart_clear(db, user, &removed);
    if (rc < 0) {
        snprintf(why, n, "cannot clear the cart: %s", ag_db_error(db));
        return rc;
    }
    const char *order = json_string_value(json_object_get(ev->data, "orderId"));
    ag_info("cart cleared after an order from it", AG_FS("userId", user),
            AG_FS("orderId", order ? order : ""), AG_FI("lines", removed));
    return 0;
}

static int on_user_deleted(ag_db *db, const ag_event *ev, void *ud, char *why, size_t n)
{
    const char *user = event_user(ev, why, n);
    if (!user) return AG_EINVAL;
    int64_t removed = 0;
    int rc = cart_clear(db, user, &removed);
    if (rc < 0) {
        snprintf(why, n, "cannot delete the cart: %s", ag_db_error(db));
        return rc;
    }
    ag_info("cart of a deleted user removed", AG_FS("userId", user), AG_FI("lines", removed));
    return 0;
}

int cart_subscribe(ag_bus *bus)
{
    int rc = ag_bus_subscribe(bus, "order.confirmed", on_order_confirmed, NULL);
    if (rc == 0) rc = ag_bus_subscribe(bus, "user.deleted", on_user_deleted, NULL);
    return rc;
}
