/*
 * cart.h — what the files of agora-cart share: main.c wires the service,
 * routes.c is its HTTP API, store.c its SQL, catalog_client.c its calls to
 * agora-catalog (deadline, request id, circuit breaker), events.c what it
 * consumes, openapi.json the description of its routes.
 */
#ifndef AGORA_CART_H
#define AGORA_CART_H

#include "agora/agora.h"
#include "agora/auth.h"
#include "agora/bus.h"
#include "agora/discovery.h"
#include "agora/resilience.h"
#include "agora/store.h"

#define CART_MAX_QUANTITY 99 /* per line */
#define CART_MAX_LINES 100
#define CART_PRODUCT_ID_MAX 64 /* catalog's ids are UUIDs (36); room to spare */

typedef struct cart_ctx {
    ag_store *store;
    ag_bus *bus;
    ag_http_client *http;        /* the service's (ag_service_http); borrowed */
    ag_breaker *catalog_breaker; /* "catalog" */
    const char *catalog_url;     /* "http://127.0.0.1:7002", no trailing slash */
    ag_discovery *disc;          /* with a registry: catalog's instances; else NULL */
    uint64_t catalog_timeout_ms; /* the most one catalog lookup may take */
} cart_ctx;

extern cart_ctx g_cart;

/* A product as catalog describes it, or as the cart last saw it. */
typedef struct product_info {
    char id[CART_PRODUCT_ID_MAX + 1];
    char name[256 * 4 + 1]; /* catalog names are at most 200 code points */
    int64_t price_cents;
    char currency[8];
    bool active;
} product_info;

/* One line of a cart as stored. */
typedef struct cart_line {
    product_info p; /* the snapshot */
    int64_t quantity;
    char added_at[32];
} cart_line;

/* store.c. Functions return 0 or a negative AG_E* code; AG_ENOTFOUND for a
 * missing line. */
/* The lines of `user`'s cart, oldest first: an array the caller frees with
 * ag_free (NULL when empty); *n gets their count (at most CART_MAX_LINES). */
int cart_lines(ag_db *db, const char *user, cart_line **out, size_t *n);
int cart_line_count(ag_db *db, const char *user, int64_t *n);
/* The quantity of one line; AG_ENOTFOUND when the cart has none. */
int cart_line_quantity(ag_db *db, const char *user, const char *product, int64_t *qty);
/* Inserts the line or sets its quantity, and saves the product snapshot. */
int cart_line_put(ag_db *db, const char *user, const product_info *p, int64_t qty);
/* Saves a newer snapshot of the product into a line that exists. */
int cart_line_snapshot(ag_db *db, const char *user, const product_info *p);
/* Removes one line (AG_ENOTFOUND when absent) or every line (*removed, may
 * be NULL, gets how many). */
int cart_line_remove(ag_db *db, const char *user, const char *product);
int cart_clear(ag_db *db, const char *user, int64_t *removed);

/* catalog_client.c: GET /v1/products/:id on agora-catalog through the
 * "catalog" breaker, from a worker, within `deadline` (already the minimum
 * of the request's deadline and the lookup's own limit), forwarding the
 * request id, traceparent and the caller's bearer token.
 *   0            found; *out filled (out->active may be false)
 *   AG_ENOTFOUND catalog has no such product (or hides it: soft-deleted)
 *   AG_EUNAVAIL  the breaker is open, or catalog failed (5xx, timeout,
 *                connection error, a response that is not a product);
 *                *retry_after_s gets a Retry-After in seconds
 *   AG_EPROTO    catalog answered an unexpected 4xx (a success for the
 *                breaker: catalog is up) */
int catalog_lookup(ag_http_req *req, const char *product_id, ag_deadline deadline,
                   product_info *out, int *retry_after_s);

/* events.c: order.confirmed (fromCart) clears the user's cart; user.deleted
 * deletes it. */
int cart_subscribe(ag_bus *bus);

/* routes.c */
void cart_routes(ag_router *r);

/* openapi.json, embedded by cmake/embed.cmake */
extern const char cart_openapi_json[];

#endif
