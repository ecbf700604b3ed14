/*
 * inventory.h — what the files of agora-inventory share: main.c wires the
 * service, routes.c is its HTTP API, store.c its SQL (and the low-stock
 * rule, which must run in the transaction of every stock change), events.c
 * what it publishes and consumes, openapi.json the description of its routes.
 */
#ifndef AGORA_INVENTORY_H
#define AGORA_INVENTORY_H

#include "agora/agora.h"
#include "agora/auth.h"
#include "agora/bus.h"
#include "agora/grpc.h"
#include "agora/store.h"

#define INV_ID_MAX 64             /* product and order ids: letters, digits, - and _ */
#define INV_MAX_ITEMS 100         /* lines in one reservation */
#define INV_MAX_QUANTITY 1000000  /* per line, and per adjustment */
#define INV_DEFAULT_LOW_LEVEL 5

typedef struct inv_ctx {
    ag_store *store;
    ag_bus *bus;
} inv_ctx;

extern inv_ctx g_inv;

/* One product's stock as stored. */
typedef struct inv_stock {
    char product_id[INV_ID_MAX + 1];
    int64_t quantity, reserved, low_level;
    char location[128 * 4 + 1];
    bool deleted;
    char updated_at[32];
} inv_stock;

/* One line of a reservation request or of a stored reservation. */
typedef struct inv_item {
    char product_id[INV_ID_MAX + 1];
    int64_t quantity;
} inv_item;

/* store.c. Functions return 0 or a negative AG_E* code; AG_ENOTFOUND for a
 * missing row. */
int inv_stock_get(ag_db *db, const char *product, inv_stock *out);
json_t *inv_stock_json(const inv_stock *s);
/* A page of stock rows ordered by product id, as JSON objects appended to
 * `arr`; *total gets the count of all rows. */
int inv_stock_list(ag_db *db, int64_t page, int64_t limit, json_t *arr, int64_t *total);
/* Creates the row (with `quantity`) unless it exists; *created says which. */
int inv_stock_create(ag_db *db, const char *product, int64_t quantity, bool *created);
/* quantity += delta, only when the result stays >= reserved (so >= 0):
 * AG_ECONSTRAINT otherwise, AG_ENOTFOUND without a row. */
int inv_stock_add(ag_db *db, const char *product, int64_t delta);
int inv_stock_set_meta(ag_db *db, const char *product, const int64_t *low_level,
                       const char *location);
int inv_stock_mark_deleted(ag_db *db, const char *product);
/* reserved += n when at least n are available (and the product is not
 * deleted): 0, or AG_ECONSTRAINT when short. */
int inv_stock_reserve(ag_db *db, const char *product, int64_t n);
/* reserved -= n (release), or quantity -= n and reserved -= n (commit). */
int inv_stock_unreserve(ag_db *db, const char *product, int64_t n, bool commit);
/* quantity += n: a committed reservation's units come back (return). */
int inv_stock_restock(ag_db *db, const char *product, int64_t n);
/* The low-stock rule, after any change to the row: when available is at or
 * below the level and no alert went out for this crossing, publishes
 * inventory.low_stock and remembers it; when available is above the level,
 * forgets it (so the next crossing alerts again). */
int inv_low_stock_check(ag_db *db, const char *product);
int inv_adjustment_record(ag_db *db, const char *product, int64_t delta, const char *reason,
                          const char *actor);

/* The stored reservation of `order`: its state, items_key and shortages
 * (copied into the buffers; shortages "" when none). AG_ENOTFOUND. */
int inv_reservation_get(ag_db *db, const char *order, char state[16], char *key, size_t keyn,
                        char *shortages, size_t shn);
/* Inserts the reservation (AG_EEXISTS when the order id is taken) and its
 * items (none for FAILED). */
int inv_reservation_insert(ag_db *db, const char *order, const char *state, const char *key,
                           const char *shortages, const inv_item *items, size_t n);
int inv_reservation_set_state(ag_db *db, const char *order, const char *state);
/* The items of a reservation, product id order; caller frees *out with ag_free. */
int inv_reservation_items(ag_db *db, const char *order, inv_item **out, size_t *n);
/* {orderId, state, items, createdAt, updatedAt}; NULL when absent. */
json_t *inv_reservation_json(ag_db *db, const char *order);

/* events.c */
json_t *inv_items_json(const inv_item *items, size_t n);
int inv_publish(ag_db *db, const char *type, const char *subject, json_t *data);
int inventory_subscribe(ag_bus *bus);

/* routes.c */
void inventory_routes(ag_router *r);

/* openapi.json, embedded by cmake/embed.cmake */
extern const char inventory_openapi_json[];

/* routes.c: what the HTTP API and the gRPC API (grpc.c) share. */
typedef enum inv_reserve_outcome {
    INV_RESERVE_OK,       /* reserved now, or before with the same items */
    INV_RESERVE_SHORT,    /* some line short: nothing reserved (kept FAILED) */
    INV_RESERVE_CONFLICT, /* the order id was used with other items */
} inv_reserve_outcome;
/* Reserves `items` (n, validated: ids, 1..INV_MAX_QUANTITY, no product
 * twice; sorted here) for `order`, all or nothing, idempotent by order id:
 * 0 with *outcome (and for SHORT, *shortages a new JSON array of
 * {productId, requested, available}; NULL otherwise), or a negative AG_E*
 * code. */
int inv_reserve(const char *order, inv_item *items, size_t n, inv_reserve_outcome *outcome,
                json_t **shortages);
typedef enum finish_op { FINISH_COMMIT, FINISH_RELEASE, FINISH_RETURN } finish_op;
/* Commits, releases or returns `order`'s reservation: 0 (done now or
 * already), AG_ENOTFOUND, AG_ESTATE with why in `msg`, or another code. */
int inv_finish(const char *order, finish_op op, char *msg, size_t msg_len);
/* grpc.c: agora.inventory.v1.InventoryService on port 7104. */
extern const ag_grpc_method inventory_grpc_methods[];
extern ag_auth *g_inv_auth;

#endif
