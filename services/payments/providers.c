/*
 * providers.c — the two simulated providers behind provider.h.
 *
 * sim-card behaves like a card processor's test mode, by the number's last
 * four digits:
 *   …0002  declined: CARD_DECLINED
 *   …9995  declined: INSUFFICIENT_FUNDS
 *   …0119  never answers: the call waits until its deadline and fails with
 *          AG_EDEADLINE (the caller must assume nothing was charged)
 *   other  approved
 * sim-wallet declines wallets whose id starts "empty-" with
 * INSUFFICIENT_FUNDS and approves the others. Refunds always succeed.
 *
 * Neither keeps state: a reference is a fresh id. Neither logs: the card
 * number must never reach a log line.
 */
#include <string.h>
#include <time.h>

#include "agora/agora.h"
#include "provider.h"

static void decline(pay_result *out, const char *code, const char *message)
{
    out->approved = false;
    snprintf(out->failure_code, sizeof out->failure_code, "%s", code);
    snprintf(out->failure_message, sizeof out->failure_message, "%s", message);
}

static void approve(pay_result *out, const char *prefix)
{
    char id[AG_ID_LEN + 1];
    ag_id_new_str(id);
    out->approved = true;
    snprintf(out->ref, sizeof out->ref, "%s_%s", prefix, id);
}

/* Waits until `deadline` (at most 60 s when there is none): the processor
 * that never answers. */
static int hang_until(ag_deadline deadline)
{
    uint64_t left = ag_deadline_remaining(deadline);
    if (left > 60000) left = 60000;
    struct timespec ts = {(time_t)(left / 1000), (long)(left % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
    return AG_EDEADLINE;
}

static const char *card_name(void)
{
    return "sim-card";
}

static int card_charge(const char *order_id, int64_t amount_cents, const char *currency,
                       const pay_method *m, ag_deadline deadline, pay_result *out)
{
    memset(out, 0, sizeof *out);
    if (ag_deadline_expired(deadline)) return AG_EDEADLINE;
    if (strcmp(m->last4, "0002") == 0) {
        decline(out, "CARD_DECLINED", "the card was declined");
    } else if (strcmp(m->last4, "9995") == 0) {
        decline(out, "INSUFFICIENT_FUNDS", "the card has insufficient funds");
    } else if (strcmp(m->last4, "0119") == 0) {
        return hang_until(deadline);
    } else {
        approve(out, "ch");
    }
    return 0;
}

static int any_refund(const char *charge_ref, int64_t amount_cents, const char *currency,
                      ag_deadline deadline, pay_result *out)
{
    memset(out, 0, sizeof *out);
    if (ag_deadline_expired(deadline)) return AG_EDEADLINE;
    approve(out, "re");
    return 0;
}

static const char *wallet_name(void)
{
    return "sim-wallet";
}

static int wallet_charge(const char *order_id, int64_t amount_cents, const char *currency,
                         const pay_method *m, ag_deadline deadline, pay_result *out)
{
    memset(out, 0, sizeof *out);
    if (ag_deadline_expired(deadline)) return AG_EDEADLINE;
    if (strncmp(m->wallet_id, "empty-", 6) == 0)
        decline(out, "INSUFFICIENT_FUNDS", "the wallet has insufficient funds");
    else
        approve(out, "wc");
    return 0;
}

const pay_provider pay_card_provider = {card_name, card_charge, any_refund};
const pay_provider pay_wallet_provider = {wallet_name, wallet_charge, any_refund};

const pay_provider *pay_provider_for(const char *type)
{
    if (strcmp(type, "card") == 0) return &pay_card_provider;
    if (strcmp(type, "wallet") == 0) return &pay_wallet_provider;
    return NULL;
}
