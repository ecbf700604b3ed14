/*
 * inventory_grpc.c — the checkout saga's two hot calls to agora-inventory
 * over gRPC (agora.inventory.v1.InventoryService, services/inventory/
 * inventory.proto): Reserve for the reserve step and Commit for the
 * confirm step. Every order makes both, so they are the calls that gain
 * most from HTTP/2 and protobuf (bench/grpc measures the two transports).
 *
 * HTTP stays the fallback: when no gRPC answer comes (ag_peer_grpc's
 * AG_EUNAVAIL: gRPC off with AGORA_INVENTORY_GRPC_URL=off, an inventory
 * without it, refused, reset), these return 0 and checkout.c makes the
 * HTTP call, and the peer tries gRPC again after 5 s. A gRPC answer is
 * judged as checkout.c judges the HTTP one: OK done; FAILED_PRECONDITION
 * (INSUFFICIENT_STOCK, INVALID_STATE), ALREADY_EXISTS and other refusals
 * permanent (AG_SAGA_FAILED, compensate); UNAVAILABLE, RESOURCE_EXHAUSTED,
 * DEADLINE_EXCEEDED, INTERNAL, UNKNOWN and ABORTED transient (retried).
 */
#include <string.h>

#include "inventory.pb-c.h"
#include "orders.h"

#define SERVICE "/agora.inventory.v1.InventoryService/"

/* 1 with *outcome when gRPC answered; 0 for "use HTTP". */
static int call(ag_saga_ctx *ctx, const char *method, const void *req, size_t len,
                const char *what, int *outcome)
{
    ag_grpc_answer a;
    int rc = ag_peer_grpc(g_ord_peers[PEER_INVENTORY], method, req, len, NULL,
                          ag_saga_ctx_deadline(ctx), &a);
    if (rc == AG_EUNAVAIL) return 0;
    if (rc < 0) {
        ag_saga_ctx_fail(ctx, "%s: no answer (%s)", what, ag_strerror(rc));
        *outcome = rc;
        return 1;
    }
    switch (a.status) {
    case AG_GRPC_OK:
        *outcome = 0;
        break;
    case AG_GRPC_UNAVAILABLE:
    case AG_GRPC_RESOURCE_EXHAUSTED:
    case AG_GRPC_DEADLINE_EXCEEDED:
    case AG_GRPC_INTERNAL:
    case AG_GRPC_UNKNOWN:
    case AG_GRPC_ABORTED:
        ag_saga_ctx_fail(ctx, "%s: %s %s", what, ag_grpc_status_name(a.status), a.message);
        *outcome = AG_EUNAVAIL;
        break;
    default:
        /* INSUFFICIENT_STOCK: ... reads as over HTTP (the reason shown). */
        if (strncmp(a.message, "INSUFFICIENT_STOCK", 18) == 0)
            ag_saga_ctx_fail(ctx, "%s", a.message);
        else
            ag_saga_ctx_fail(ctx, "%s: %s %s", what, ag_grpc_status_name(a.status), a.message);
        *outcome = AG_SAGA_FAILED;
    }
    ag_grpc_answer_clear(&a);
    return 1;
}

int inventory_grpc_reserve(ag_saga_ctx *ctx, const ord_order *o, int *outcome)
{
    Agora__Inventory__V1__Item *items = ag_calloc(o->nitems ? o->nitems : 1, sizeof *items);
    Agora__Inventory__V1__Item **ptrs = ag_calloc(o->nitems ? o->nitems : 1, sizeof *ptrs);
    for (size_t i = 0; i < o->nitems; i++) {
        agora__inventory__v1__item__init(&items[i]);
        items[i].product_id = (char *)o->items[i].product_id;
        items[i].quantity = o->items[i].quantity;
        ptrs[i] = &items[i];
    }
    Agora__Inventory__V1__ReserveRequest req = AGORA__INVENTORY__V1__RESERVE_REQUEST__INIT;
    req.order_id = (char *)o->id;
    req.n_items = o->nitems;
    req.items = ptrs;
    size_t len = agora__inventory__v1__reserve_request__get_packed_size(&req);
    uint8_t *buf = ag_malloc(len ? len : 1);
    agora__inventory__v1__reserve_request__pack(&req, buf);
    int answered = call(ctx, SERVICE "Reserve", buf, len, "reserve stock", outcome);
    ag_free(buf);
    ag_free(ptrs);
    ag_free(items);
    return answered;
}

int inventory_grpc_commit(ag_saga_ctx *ctx, const char *order, int *outcome)
{
    Agora__Inventory__V1__ReservationRef req = AGORA__INVENTORY__V1__RESERVATION_REF__INIT;
    req.order_id = (char *)order;
    uint8_t buf[128];
    size_t len = agora__inventory__v1__reservation_ref__get_packed_size(&req);
    if (len > sizeof buf) return 0;
    agora__inventory__v1__reservation_ref__pack(&req, buf);
    return call(ctx, SERVICE "Commit", buf, len, "commit the reservation", outcome);
}
