/*
 * provider.h — the one interface every payment provider implements, and the
 * two simulated ones agora-payments ships with (providers.c).
 *
 * A provider is a small table of function pointers. routes.c picks one per
 * payment by the method's type ("card" → the card processor, "wallet" → the
 * wallet) and never looks inside it; a real processor would be one more
 * table. Providers are called from a worker thread, outside any store
 * transaction, and must return by `deadline` (the earlier of the request's
 * deadline and AGORA_PROVIDER_TIMEOUT).
 *
 * Card data: the provider is the only code that sees the full card number
 * (pay_method.number). It must not log or keep it; what the service stores
 * and shows is the brand and the last four digits only.
 */
#ifndef AGORA_PAYMENTS_PROVIDER_H
#define AGORA_PAYMENTS_PROVIDER_H

#include <stdbool.h>
#include <stdint.h>

#include "agora/clock.h"

#define PAY_WALLET_ID_MAX 64

/* A payment method as validated by routes.c. */
typedef struct pay_method {
    char type[8];     /* "card" | "wallet" */
    char number[20];  /* card: digits only, 12-19 of them; wiped after the charge */
    int exp_month;    /* card */
    int exp_year;     /* card */
    char brand[16];   /* card: visa | mastercard | amex | card */
    char last4[5];    /* card */
    char wallet_id[PAY_WALLET_ID_MAX + 1]; /* wallet */
} pay_method;

/* What a provider answered. A decline is an answer (approved false with a
 * code), not an error. */
typedef struct pay_result {
    bool approved;
    char ref[64];              /* the provider's reference for the charge/refund */
    char failure_code[32];     /* e.g. CARD_DECLINED, INSUFFICIENT_FUNDS */
    char failure_message[128];
} pay_result;

typedef struct pay_provider {
    /* The provider's name as stored with the payment ("sim-card"). */
    const char *(*name)(void);
    /* Charges `amount_cents` of `currency` to `m` for `order_id`.
     *   0            the provider answered; *out says approved or declined
     *   AG_EDEADLINE no answer by `deadline`: nothing may be assumed charged
     *   AG_EUNAVAIL  the provider failed (nothing charged) */
    int (*charge)(const char *order_id, int64_t amount_cents, const char *currency,
                  const pay_method *m, ag_deadline deadline, pay_result *out);
    /* Refunds `amount_cents` of the charge `charge_ref`; same returns. */
    int (*refund)(const char *charge_ref, int64_t amount_cents, const char *currency,
                  ag_deadline deadline, pay_result *out);
} pay_provider;

extern const pay_provider pay_card_provider;   /* "sim-card" */
extern const pay_provider pay_wallet_provider; /* "sim-wallet" */

/* The provider for a method type, or NULL. */
const pay_provider *pay_provider_for(const char *type);

#endif
