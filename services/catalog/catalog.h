/*
 * catalog.h — what the files of agora-catalog share: main.c wires the
 * service, routes.c is its HTTP API, store.c its SQL, events.c what it
 * publishes and consumes, openapi.json the description of its routes.
 */
#ifndef AGORA_CATALOG_H
#define AGORA_CATALOG_H

#include "agora/agora.h"
#include "agora/auth.h"
#include "agora/bus.h"
#include "agora/store.h"

typedef struct catalog_ctx {
    ag_store *store;
    ag_bus *bus;
} catalog_ctx;

extern catalog_ctx g_catalog;

/* Product fields from a request. NULL strings and has_* false mean "not
 * given" (an update keeps the stored value). */
typedef struct product_fields {
    const char *name, *description, *category, *currency;
    bool has_price, has_stock, has_active;
    int64_t price_cents, stock;
    bool is_active;
} product_fields;

/* The filters and page of GET /v1/products. */
typedef enum product_sort {
    SORT_NEWEST,
    SORT_OLDEST,
    SORT_PRICE,
    SORT_PRICE_DESC,
    SORT_RATING,
    SORT_NAME,
    SORT_RELEVANCE
} product_sort;

typedef struct product_query {
    const char *q;                /* NULL: no text search */
    const char *category;         /* slug, or NULL */
    int64_t min_price, max_price; /* -1: none */
    int in_stock;                 /* -1 any, 0 out of stock, 1 in stock */
    bool include_inactive;
    product_sort sort;
    int64_t page, limit;
} product_query;

/* store.c. Functions return 0 or a negative AG_E* code; AG_ENOTFOUND for a
 * missing row. Returned json_t references are the caller's. */
int products_insert(ag_db *db, const char *id, const product_fields *f);
int products_update(ag_db *db, const char *id, const product_fields *f);
int products_set_active(ag_db *db, const char *id, bool active);
/* The product as the API shows it, whatever its isActive. */
int products_get(ag_db *db, const char *id, json_t **out);
/* Fills `arr` with one page of matches and *total with their count. */
int products_search(ag_db *db, const product_query *q, json_t *arr, int64_t *total);
/* Adds one review's stars to the product's average and count. */
int products_add_rating(ag_db *db, const char *id, int64_t stars);
int categories_insert(ag_db *db, const char *id, const char *name, const char *slug);
int categories_exists(ag_db *db, const char *slug);
int categories_list(ag_db *db, json_t *arr);
int reviews_insert(ag_db *db, const char *id, const char *product_id, const char *user_id,
                   int64_t rating, const char *text, bool verified, json_t **out);
int reviews_list(ag_db *db, const char *product_id, int64_t page, int64_t limit, json_t *arr,
                 int64_t *total);
int purchases_record(ag_db *db, const char *order_id, const char *user_id, const char *product_id,
                     int64_t quantity);
/* 1 when `user_id` bought `product_id` (an order.confirmed was seen), else 0. */
int purchases_has(ag_db *db, const char *user_id, const char *product_id);
/* Up to `limit` products bought together with what `user_id` (may be NULL)
 * bought, then the top-rated active products, each with a "reason". */
int recommendations(ag_db *db, const char *user_id, int64_t limit, json_t *arr);

/* events.c: publishing runs inside the caller's transaction. */
int publish_product_event(ag_db *db, const char *type, json_t *product);
int publish_price_updated(ag_db *db, const char *id, int64_t old_cents, int64_t new_cents,
                          const char *currency);
int publish_review_created(ag_db *db, json_t *review, json_t *product);
/* Subscribes to order.confirmed (verified purchases, recommendations). */
int catalog_subscribe(ag_bus *bus);

/* routes.c */
void catalog_routes(ag_router *r);

/* openapi.json (embedded by cmake/embed.cmake): the OpenAPI 3 document of the routes, a static string. */
extern const char catalog_openapi_json[];

#endif
