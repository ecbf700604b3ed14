/*
 * orders.h — what the files of agora-orders share.
 *
 *   main.c       wiring: store, bus, saga engine, peers, token verifier, routes
 *   routes.c     the HTTP API (README.md)
 *   history.c    the order's event history and the projection built from it
 *   checkout.c   the checkout and cancellation sagas (DESIGN.md §7)
 *   peers.c      calls to catalog, cart, inventory, payments and users
 *   cards.c      card details held in memory until the charge
 *   events.c     order.* published, user.deleted consumed
 *   openapi.json /openapi.json
 *
 * An order's state machine (the projection of its history; history.c
 * applies one event at a time):
 *
 *     OrderPlaced
 *        │
 *        ▼            CancelRequested (customer, or user.deleted): the saga
 *     PENDING ─────── stops at its next step and compensates
 *      │     │
 *      │     └── OrderCancelled ─────────────────────────► CANCELLED
 *      │          (the checkout saga compensated: reason)      ▲
 *      ▼ OrderConfirmed                                         │
 *     CONFIRMED ── CancellationStarted ─► CANCELLING ── OrderCancelled
 *      │           (refund, return stock)
 *      ▼ OrderShipped (admin)
 *     SHIPPED ── OrderDelivered (admin) ─► DELIVERED
 *
 * StockReserved and PaymentCharged are recorded along the way and change
 * no status (paymentId is kept).
 */
#ifndef AGORA_ORDERS_H
#define AGORA_ORDERS_H

#include <pthread.h>

#include "agora/agora.h"
#include "agora/peer.h"
#include "agora/auth.h"
#include "agora/bus.h"
#include "agora/discovery.h"
#include "agora/resilience.h"
#include "agora/saga.h"
#include "agora/store.h"

#define ORD_MAX_ITEMS 50
#define ORD_MAX_QUANTITY 99
#define ORD_ID_MAX 64

/* The services orders calls. */
typedef enum ord_peer {
    PEER_CATALOG = 0,
    PEER_CART,
    PEER_INVENTORY,
    PEER_PAYMENTS,
    PEER_USERS,
    PEER_COUNT
} ord_peer;

typedef struct orders_ctx {
    ag_store *store;
    ag_bus *bus;
    ag_saga_engine *sagas;
    const char *client_secret;  /* for the service token (checked at start) */
    uint64_t lookup_timeout_ms; /* catalog and cart during POST /v1/orders */
    uint64_t step_deadline_ms;  /* each saga step's call */
    /* Waiters of Prefer: wait, woken after each order change commits. */
    pthread_mutex_t wait_mu;
    pthread_cond_t wait_cv;
    uint64_t changes;
} orders_ctx;

extern orders_ctx g_ord;

/* ---- history.c: the event-sourced order ------------------------------------------------ */

typedef struct ord_item {
    char product_id[ORD_ID_MAX + 1];
    char name[1024];
    int64_t quantity;
    int64_t unit_price_cents;
} ord_item;

/* An order as the projection holds it. */
typedef struct ord_order {
    char id[40];
    char user_id[128];
    char status[16];
    int64_t total_cents;
    char currency[8];
    bool from_cart;
    json_t *shipping_address; /* owned */
    json_t *payment_method;   /* owned; brand and last four only */
    char payment_id[64];
    char reason[256];
    bool cancel_requested;
    int64_t version;
    char created_at[32], updated_at[32];
    ord_item *items; /* owned (ag_free) */
    size_t nitems;
} ord_order;

void ord_order_clear(ord_order *o);
/* Reads the projection row and its items. AG_ENOTFOUND when absent. */
int ord_order_get(ag_db *db, const char *id, ord_order *out);
/* The API's view of an order (routes, events). */
json_t *ord_order_json(const ord_order *o);
/* The order.* event data: {orderId, userId, status, fromCart, totalCents,
 * currency, items, reason}. */
json_t *ord_order_event_data(const ord_order *o);

/* Appends event `type` (OrderPlaced, StockReserved, PaymentCharged,
 * OrderConfirmed, CancelRequested, CancellationStarted, OrderCancelled,
 * OrderShipped, OrderDelivered) with `data` (stolen) to order `o->id`'s
 * history and applies it to `o` and to the projection row, in `db`'s
 * transaction. `o` must be the current projection (ord_order_get), or, for
 * OrderPlaced, a zeroed order with only its id set. AG_ESTATE when the event
 * does not apply to the current status (nothing is written). Wakes the
 * Prefer: wait waiters after the commit. */
int ord_append(ag_db *db, ord_order *o, const char *type, json_t *data, const char *actor);
/* The history as a JSON array of {seq, type, data, actor, at}. */
int ord_history_json(ag_db *db, const char *id, json_t **out);
/* Rebuilds the projection of order `id` (NULL: every order) from its
 * events alone; *checked and *changed count the orders seen and the rows
 * that differed (and were rewritten). */
int ord_rebuild(ag_store *s, const char *id, int64_t *checked, int64_t *changed);
/* Lists orders, newest first: `user` (NULL: all), `status` (NULL: any). */
int ord_list(ag_db *db, const char *user, const char *status, int64_t limit, int64_t offset,
             json_t **out, int64_t *total);
/* The ids of `user`'s PENDING orders not yet asked to cancel (at most 1000). */
int ord_pending_of_user(ag_db *db, const char *user, char (**ids)[40], size_t *n);
/* Blocks until order `id` is CONFIRMED or CANCELLED, or `timeout_ms` passed. */
void ord_wait_final(const char *id, uint64_t timeout_ms);

/* ---- checkout.c: the sagas ------------------------------------------------------------- */

/* Registers "checkout" and "cancellation" with g_ord.sagas. */
int checkout_register(void);
/* Inside a transaction: starts the cancellation saga of a CONFIRMED order
 * (refund, return the stock), after appending CancellationStarted. */
int checkout_start_cancellation(ag_db *db, ord_order *o, const char *reason, const char *actor);

/* ---- cards.c: card details until the charge -------------------------------------------- */

/* Keeps the full payment method of order `id` in memory (never stored,
 * never logged) for the charge step. Steals `method`. */
void cards_put(const char *id, json_t *method);
/* A new reference to the method, or NULL when this process does not hold
 * it (it restarted since the order was placed). */
json_t *cards_get(const char *id);
/* Wipes and forgets it. */
void cards_forget(const char *id);
/* Validates a paymentMethod object; on success *safe gets what may be
 * stored ({type, brand, last4, expMonth, expYear} or {type, walletId}). */
bool cards_validate(ag_validator *v, json_t *method, json_t **safe);

/* ---- peers.c: outbound calls ----------------------------------------------------------- */

typedef ag_peer_reply peer_reply;

/* The peers, indexed by ord_peer; main.c declares them (each with a
 * breaker that judges after 10 calls: a saga retries, and one slow moment
 * of a peer should not open it). */
extern ag_peer *g_ord_peers[PEER_COUNT];

/* inventory_grpc.c: the reserve and confirm steps' calls over gRPC. 1 with
 * *outcome (the step's result) when gRPC answered; 0: make the HTTP call. */
int inventory_grpc_reserve(ag_saga_ctx *ctx, const ord_order *o, int *outcome);
int inventory_grpc_commit(ag_saga_ctx *ctx, const char *order, int *outcome);

/* Calls `peer` (through the registry when there is one, else its URL)
 * behind its circuit breaker. `auth` is the Authorization header value
 * (NULL: the service token). Returns 0 when an answer arrived (any status),
 * AG_EUNAVAIL when the breaker is open or no instance is up, or the
 * transport error. The caller releases `rep` with peer_reply_clear. */
int peer_call(ord_peer peer, const char *method, const char *path, json_t *body, const char *auth,
              ag_deadline deadline, const char *request_id, peer_reply *rep);
void peer_reply_clear(peer_reply *rep);
const char *peer_name(ord_peer p);

/* ---- events.c ------------------------------------------------------------------------ */

/* Publishes order.<kind> for `o` through the outbox, in `db`'s transaction. */
int ord_publish(ag_db *db, const char *type, const ord_order *o);
int orders_subscribe(ag_bus *bus);

/* ---- routes.c, openapi.json ----------------------------------------------------------------- */

void orders_routes(ag_router *r);
extern const char orders_openapi_json[];

#endif
