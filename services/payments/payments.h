/*
 * payments.h — what the files of agora-payments share: main.c wires the
 * service, routes.c is its HTTP API, store.c its SQL, providers.c the
 * simulated providers behind provider.h, events.c what it publishes,
 * openapi.json the description of its routes.
 */
#ifndef AGORA_PAYMENTS_H
#define AGORA_PAYMENTS_H

#include "agora/agora.h"
#include "provider.h"

#define PAY_ORDER_ID_MAX 64
#define PAY_MAX_AMOUNT 100000000000LL /* a billion units of a currency: more is a bug */

typedef struct payments_ctx {
    ag_store *store;
    ag_bus *bus;
    uint64_t provider_timeout_ms; /* the most one provider call may take */
} payments_ctx;

extern payments_ctx g_pay;

/* One payment as stored (schema/001_payments.sql). Empty strings stand for
 * NULL columns. */
typedef struct payment {
    char id[AG_ID_LEN + 1];
    char order_id[PAY_ORDER_ID_MAX + 1];
    char user_id[128];
    char status[16]; /* SUCCEEDED | FAILED */
    int64_t amount_cents;
    int64_t refunded_cents;
    char currency[4];
    char method_type[8];
    char card_brand[16];
    char card_last4[5];
    char card_exp[8]; /* "MM/YYYY" */
    char wallet_id[PAY_WALLET_ID_MAX + 1];
    char provider[32];
    char provider_ref[64];
    char failure_code[32];
    char failure_message[128];
    char created_at[32];
} payment;

/* store.c. Functions return 0 or a negative AG_E* code. */
/* AG_ENOTFOUND when there is no such payment. */
int payment_get(ag_db *db, const char *id, payment *out);
int payment_by_order(ag_db *db, const char *order_id, payment *out);
/* AG_EEXISTS when the order already has a payment. */
int payment_insert(ag_db *db, const payment *p);
/* Adds `cents` to the payment's refunded amount; AG_ECONSTRAINT when that
 * would exceed the amount charged (nothing changes). */
int payment_add_refund(ag_db *db, const char *id, int64_t cents);
/* The first answer to a refund of `payment_id` with `key`: *response (the
 * caller's, ag_free) and *requested (-1 when the request named no amount);
 * AG_ENOTFOUND when there is none. */
int refund_by_key(ag_db *db, const char *payment_id, const char *key, char **response,
                  int64_t *requested);
int refund_insert(ag_db *db, const char *id, const char *payment_id, int64_t cents,
                  int64_t requested, const char *key, const char *provider_ref,
                  const char *response, const char *created_at);
/* Payments newest first, of one order when order_id is not NULL: a JSON
 * array (the caller's) and the total count. */
int payments_list(ag_db *db, const char *order_id, int64_t limit, int64_t offset, json_t **out,
                  int64_t *total);
/* The API's view of a payment (a new reference). */
json_t *payment_json(const payment *p);

/* events.c: payment.succeeded | payment.failed, and payment.refunded, each
 * written to the outbox within `db`'s transaction. */
int publish_payment_result(ag_db *db, const payment *p);
int publish_payment_refunded(ag_db *db, const payment *p, const char *refund_id,
                             int64_t cents);

/* routes.c */
void payments_routes(ag_router *r);

/* openapi.json, embedded by cmake/embed.cmake */
extern const char payments_openapi_json[];

#endif
