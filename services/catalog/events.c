/*
 * events.c — what agora-catalog publishes and consumes (docs/events.md).
 *
 * Published, each inside the transaction of its change (subject: the
 * product id):
 *   product.created | product.updated | product.deleted
 *       {productId, name, category, priceCents, currency, stock, isActive}
 *   product.price_updated  {productId, oldPriceCents, newPriceCents, currency}
 *   review.created  {reviewId, productId, userId, rating, verifiedPurchase,
 *                    productRating, reviewCount}
 *
 * Consumed: order.confirmed {orderId, userId, items: [{productId, quantity}]}
 * records one purchases row per product of the order (idempotent through
 * the bus's inbox and the table's key). Those rows make a later review by
 * that user of that product a verifiedPurchase (and mark an earlier one),
 * and feed the bought-together recommendations.
 */
#include <string.h>

#include "catalog.h"

int publish_product_event(ag_db *db, const char *type, json_t *product)
{
    const char *id = json_string_value(json_object_get(product, "id"));
    json_t *data = json_pack(
        "{s:s, s:O, s:O, s:O, s:O, s:O, s:O}", "productId", id, "name",
        json_object_get(product, "name"), "category", json_object_get(product, "category"),
        "priceCents", json_object_get(product, "priceCents"), "currency",
        json_object_get(product, "currency"), "stock", json_object_get(product, "stock"),
        "isActive", json_object_get(product, "isActive"));
    if (!data) return AG_EINVAL;
    return ag_bus_publish(g_catalog.bus, db, type, id, data, NULL);
}

int publish_price_updated(ag_db *db, const char *id, int64_t old_cents, int64_t new_cents,
                          const char *currency)
{
    json_t *data =
        json_pack("{s:s, s:I, s:I, s:s}", "productId", id, "oldPriceCents", (json_int_t)old_cents,
                  "newPriceCents", (json_int_t)new_cents, "currency", currency);
    return ag_bus_publish(g_catalog.bus, db, "product.price_updated", id, data, NULL);
}

int publish_review_created(ag_db *db, json_t *review, json_t *product)
{
    const char *pid = json_string_value(json_object_get(review, "productId"));
    json_t *data = json_pack(
        "{s:O, s:s, s:O, s:O, s:O, s:O, s:O}", "reviewId", json_object_get(review, "id"),
        "productId", pid, "userId", json_object_get(review, "userId"), "rating",
        json_object_get(review, "rating"), "verifiedPurchase",
        json_object_get(review, "verifiedPurchase"), "productRating",
        json_object_get(product, "rating"), "reviewCount", json_object_get(product, "reviewCount"));
    if (!data) return AG_EINVAL;
    return ag_bus_publish(g_catalog.bus, db, "review.created", pid, data, NULL);
}

static int on_order_confirmed(ag_db *db, const ag_event *ev, void *ud, char *why, size_t n)
{
    const char *order = json_string_value(json_object_get(ev->data, "orderId"));
    const char *user = json_string_value(json_object_get(ev->data, "userId"));
    json_t *items = json_object_get(ev->data, "items");
    if (!order || !user || !json_is_array(items)) {
        snprintf(why, n, "order.confirmed without orderId, userId or items");
        return AG_EINVAL;
    }
    size_t i;
    json_t *item;
    json_array_foreach(items, i, item)
    {
        const char *product = json_string_value(json_object_get(item, "productId"));
        json_t *qty = json_object_get(item, "quantity");
        if (!product || (qty && !json_is_integer(qty))) {
            snprintf(why, n, "order.confirmed item %zu without productId or with a bad quantity",
                     i);
            return AG_EINVAL;
        }
        int rc = purchases_record(db, order, user, product, qty ? json_integer_value(qty) : 1);
        if (rc < 0) {
            snprintf(why, n, "cannot record a purchase: %s", ag_db_error(db));
            return rc;
        }
    }
    return 0;
}

int catalog_subscribe(ag_bus *bus)
{
    return ag_bus_subscribe(bus, "order.confirmed", on_order_confirmed, NULL);
}
