/*
 * grpc.c — agora-inventory over gRPC: agora.inventory.v1.InventoryService
 * (inventory.proto) on port 7104 (the HTTP port + 100; agora/grpc.h), the
 * checkout saga's reservation calls with the HTTP API's rules (routes.c):
 *
 *   Reserve   service or admin; all or nothing, idempotent by order id:
 *             the Reservation; FAILED_PRECONDITION "INSUFFICIENT_STOCK: ..."
 *             when short (nothing reserved; the details as in the 409),
 *             ALREADY_EXISTS "IDEMPOTENCY_CONFLICT: ..." for an order id
 *             used with other items, INVALID_ARGUMENT naming the field
 *   Commit    service or admin: the Reservation (idempotent); NOT_FOUND;
 *   Release   FAILED_PRECONDITION "INVALID_STATE: ..." for a move its state
 *             does not allow
 *
 * UNAUTHENTICATED without or with a bad bearer token, PERMISSION_DENIED
 * for a customer's. Messages are protobuf-c (inventory.pb-c.h, generated
 * at build time).
 */
#include <string.h>

#include "inventory.h"
#include "inventory.pb-c.h"

static bool caller_ok(ag_grpc_call *c)
{
    ag_claims me;
    return ag_grpc_require_role(c, g_inv_auth, "service", &me);
}

/* Answers the stored reservation of `order` as a Reservation. */
static void reply_reservation(ag_grpc_call *c, const char *order)
{
    ag_db *db;
    json_t *j = NULL;
    if (ag_store_db(g_inv.store, &db) == 0) j = inv_reservation_json(db, order);
    if (!j) {
        ag_grpc_fail(c, AG_GRPC_INTERNAL, "reservation read failed");
        return;
    }
    json_t *arr = json_object_get(j, "items");
    size_t n = json_array_size(arr);
    Agora__Inventory__V1__Item *items = ag_calloc(n ? n : 1, sizeof *items);
    Agora__Inventory__V1__Item **ptrs = ag_calloc(n ? n : 1, sizeof *ptrs);
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(arr, i);
        agora__inventory__v1__item__init(&items[i]);
        const char *pid = json_string_value(json_object_get(it, "productId"));
        items[i].product_id = (char *)(pid ? pid : "");
        items[i].quantity = json_integer_value(json_object_get(it, "quantity"));
        ptrs[i] = &items[i];
    }
    Agora__Inventory__V1__Reservation r = AGORA__INVENTORY__V1__RESERVATION__INIT;
    const char *state = json_string_value(json_object_get(j, "state"));
    r.order_id = (char *)order;
    r.state = (char *)(state ? state : "");
    r.n_items = n;
    r.items = ptrs;
    size_t len = agora__inventory__v1__reservation__get_packed_size(&r);
    uint8_t *buf = ag_malloc(len ? len : 1);
    agora__inventory__v1__reservation__pack(&r, buf);
    ag_grpc_reply(c, buf, len);
    ag_free(buf);
    ag_free(ptrs);
    ag_free(items);
    json_decref(j);
}

static bool id_ok(const char *s)
{
    return ag_id_token_ok(s, INV_ID_MAX);
}

static void reserve(ag_grpc_call *c, void *ud)
{
    if (!caller_ok(c)) return;
    size_t len;
    const uint8_t *in = ag_grpc_request(c, &len);
    Agora__Inventory__V1__ReserveRequest *req =
        agora__inventory__v1__reserve_request__unpack(NULL, len, in);
    if (!req) {
        ag_grpc_fail(c, AG_GRPC_INVALID_ARGUMENT, "not a ReserveRequest");
        return;
    }
    inv_item *items = ag_calloc(INV_MAX_ITEMS, sizeof *items);
    const char *bad = NULL;
    if (!id_ok(req->order_id))
        bad = "order_id: an id (letters, digits, - or _) is required";
    else if (req->n_items < 1 || req->n_items > INV_MAX_ITEMS)
        bad = "items: 1 to 100 items are required";
    for (size_t i = 0; !bad && i < req->n_items; i++) {
        const Agora__Inventory__V1__Item *it = req->items[i];
        if (!id_ok(it->product_id))
            bad = "items: every product_id must be a product id";
        else if (it->quantity < 1 || it->quantity > INV_MAX_QUANTITY)
            bad = "items: every quantity must be between 1 and 1000000";
        for (size_t k = 0; !bad && k < i; k++)
            if (strcmp(req->items[k]->product_id, it->product_id) == 0)
                bad = "items: a product appears more than once";
        if (!bad) {
            snprintf(items[i].product_id, sizeof items[i].product_id, "%s", it->product_id);
            items[i].quantity = it->quantity;
        }
    }
    char order[INV_ID_MAX + 1];
    snprintf(order, sizeof order, "%s", req->order_id);
    size_t n = req->n_items;
    agora__inventory__v1__reserve_request__free_unpacked(req, NULL);
    if (bad) {
        ag_grpc_fail(c, AG_GRPC_INVALID_ARGUMENT, "%s", bad);
        ag_free(items);
        return;
    }
    inv_reserve_outcome outcome;
    json_t *shortages;
    int rc = inv_reserve(order, items, n, &outcome, &shortages);
    ag_free(items);
    if (rc < 0) {
        ag_grpc_fail(c, ag_grpc_status_of(rc), "reservation failed");
    } else if (outcome == INV_RESERVE_CONFLICT) {
        ag_grpc_fail(c, AG_GRPC_ALREADY_EXISTS,
                     "IDEMPOTENCY_CONFLICT: this order id was already used for a reservation "
                     "of other items");
    } else if (outcome == INV_RESERVE_SHORT) {
        json_t *d = json_array_get(shortages, 0);
        const char *pid = json_string_value(json_object_get(d, "productId"));
        ag_grpc_fail(c, AG_GRPC_FAILED_PRECONDITION,
                     "INSUFFICIENT_STOCK: %s has %lld available, %lld requested",
                     pid ? pid : "a product",
                     (long long)json_integer_value(json_object_get(d, "available")),
                     (long long)json_integer_value(json_object_get(d, "requested")));
    } else {
        reply_reservation(c, order);
    }
    json_decref(shortages);
}

static void finish(ag_grpc_call *c, finish_op op)
{
    if (!caller_ok(c)) return;
    size_t len;
    const uint8_t *in = ag_grpc_request(c, &len);
    Agora__Inventory__V1__ReservationRef *req =
        agora__inventory__v1__reservation_ref__unpack(NULL, len, in);
    if (!req) {
        ag_grpc_fail(c, AG_GRPC_INVALID_ARGUMENT, "not a ReservationRef");
        return;
    }
    char order[INV_ID_MAX + 1];
    bool ok = id_ok(req->order_id);
    snprintf(order, sizeof order, "%s", ok ? req->order_id : "");
    agora__inventory__v1__reservation_ref__free_unpacked(req, NULL);
    if (!ok) {
        ag_grpc_fail(c, AG_GRPC_NOT_FOUND, "no such reservation");
        return;
    }
    char msg[128] = "";
    int rc = inv_finish(order, op, msg, sizeof msg);
    if (rc == AG_ENOTFOUND)
        ag_grpc_fail(c, AG_GRPC_NOT_FOUND, "no such reservation");
    else if (rc == AG_ESTATE)
        ag_grpc_fail(c, AG_GRPC_FAILED_PRECONDITION, "INVALID_STATE: %s", msg);
    else if (rc < 0)
        ag_grpc_fail(c, ag_grpc_status_of(rc), "the reservation could not be changed");
    else
        reply_reservation(c, order);
}

static void commit(ag_grpc_call *c, void *ud)
{
    finish(c, FINISH_COMMIT);
}

static void release(ag_grpc_call *c, void *ud)
{
    finish(c, FINISH_RELEASE);
}

const ag_grpc_method inventory_grpc_methods[] = {
    {"/agora.inventory.v1.InventoryService/Reserve", reserve, NULL},
    {"/agora.inventory.v1.InventoryService/Commit", commit, NULL},
    {"/agora.inventory.v1.InventoryService/Release", release, NULL},
    {NULL, NULL, NULL},
};
