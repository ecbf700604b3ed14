/*
 * events.c — what agora-inventory publishes and consumes (docs/events.md).
 *
 * Published, each inside the transaction of its change (routes.c, store.c):
 *   inventory.reserved            subject orderId  {orderId, items}
 *   inventory.reservation_failed  subject orderId  {orderId, items, shortages}
 *   inventory.released            subject orderId  {orderId, items}
 *   inventory.low_stock           subject productId
 *       {productId, quantity, reserved, available, lowStockLevel, location}
 * A commit publishes nothing: inventory.committed is not in the catalogue
 * and the orders saga learns the outcome from the HTTP answer.
 *
 * Consumed, each in the transaction that records the event in the inbox:
 *   product.created {productId, stock, ...}
 *       creates the stock row with the product's initial stock (0 when the
 *       event has none); a row that exists already (an admin adjusted the
 *       product before the event arrived) is left as it is.
 *   product.deleted {productId, ...}
 *       marks the row deleted: nothing more can be reserved.
 */
#include <string.h>

#include "inventory.h"

json_t *inv_items_json(const inv_item *items, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:s, s:I}", "productId", items[i].product_id,
                                             "quantity", (json_int_t)items[i].quantity));
    return arr;
}

int inv_publish(ag_db *db, const char *type, const char *subject, json_t *data)
{
    if (!data) return AG_EINVAL;
    return ag_bus_publish(g_inv.bus, db, type, subject, data, NULL);
}

static const char *event_product(const ag_event *ev, char *why, size_t n)
{
    const char *id = json_string_value(json_object_get(ev->data, "productId"));
    if (!id || !*id || strlen(id) > INV_ID_MAX) {
        snprintf(why, n, "%s without a usable productId", ev->type);
        return NULL;
    }
    return id;
}

static int on_product_created(ag_db *db, const ag_event *ev, void *ud, char *why, size_t n)
{
    const char *id = event_product(ev, why, n);
    if (!id) return AG_EINVAL;
    json_t *stock = json_object_get(ev->data, "stock");
    int64_t qty = 0;
    if (json_is_integer(stock)) {
        qty = json_integer_value(stock);
    } else if (stock && !json_is_null(stock)) {
        snprintf(why, n, "product.created with a stock that is not an integer");
        return AG_EINVAL;
    }
    if (qty < 0) qty = 0;
    bool created = false;
    int rc = inv_stock_create(db, id, qty, &created);
    if (rc == 0 && created) rc = inv_low_stock_check(db, id);
    if (rc < 0) {
        snprintf(why, n, "cannot create the stock row: %s", ag_db_error(db));
        return rc;
    }
    if (created)
        ag_info("stock created for a new product", AG_FS("productId", id), AG_FI("quantity", qty));
    return 0;
}

static int on_product_deleted(ag_db *db, const ag_event *ev, void *ud, char *why, size_t n)
{
    const char *id = event_product(ev, why, n);
    if (!id) return AG_EINVAL;
    int rc = inv_stock_mark_deleted(db, id);
    if (rc < 0) {
        snprintf(why, n, "cannot mark the stock row deleted: %s", ag_db_error(db));
        return rc;
    }
    return 0;
}

int inventory_subscribe(ag_bus *bus)
{
    int rc = ag_bus_subscribe(bus, "product.created", on_product_created, NULL);
    if (rc == 0) rc = ag_bus_subscribe(bus, "product.deleted", on_product_deleted, NULL);
    return rc;
}
