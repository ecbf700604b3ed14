/*
 * cards.c — a card's details between POST /v1/orders and the charge.
 *
 * Card numbers are never stored or logged (the seed's PCI rule, as in
 * agora-payments). The order is accepted (201) before it is charged, so the
 * number has to wait somewhere: here, in this process's memory, keyed by
 * order id, wiped (sodium_memzero over the string) once the charge step has
 * an answer or the order ends. The order row keeps brand and last four.
 *
 * Consequence, on purpose: when agora-orders restarts between accepting an
 * order paid by card and charging it, the details are gone; the charge
 * step then fails permanently with PAYMENT_DETAILS_LOST and the order is
 * cancelled (stock released, nothing charged), which the customer sees with
 * its reason. Wallet payments carry no secret and survive restarts. A
 * vault at the payment provider (a token in place of the number) would
 * remove this window; the simulated providers have none yet.
 *
 * Validation here mirrors agora-payments' (Luhn, expiry, CVC), so a typo
 * is a 422 on the order instead of a cancelled order a moment later.
 */
#include <ctype.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "orders.h"

typedef struct held {
    char id[40];
    json_t *method;
    struct held *next;
} held;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static held *g_held;

static void wipe(json_t *method)
{
    if (!method) return;
    json_t *num = json_object_get(method, "number");
    json_t *cvc = json_object_get(method, "cvc");
    /* jansson keeps the string's bytes in the value; wipe them before free. */
    if (json_is_string(num))
        sodium_memzero((char *)json_string_value(num), json_string_length(num));
    if (json_is_string(cvc))
        sodium_memzero((char *)json_string_value(cvc), json_string_length(cvc));
    json_decref(method);
}

void cards_put(const char *id, json_t *method)
{
    held *h = ag_calloc(1, sizeof *h);
    snprintf(h->id, sizeof h->id, "%s", id);
    h->method = method;
    pthread_mutex_lock(&g_mu);
    h->next = g_held;
    g_held = h;
    pthread_mutex_unlock(&g_mu);
}

json_t *cards_get(const char *id)
{
    json_t *m = NULL;
    pthread_mutex_lock(&g_mu);
    for (held *h = g_held; h; h = h->next)
        if (strcmp(h->id, id) == 0) {
            m = json_deep_copy(h->method);
            break;
        }
    pthread_mutex_unlock(&g_mu);
    return m;
}

void cards_forget(const char *id)
{
    held *found = NULL;
    pthread_mutex_lock(&g_mu);
    for (held **pp = &g_held; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->id, id) == 0) {
            found = *pp;
            *pp = found->next;
            break;
        }
    pthread_mutex_unlock(&g_mu);
    if (found) {
        wipe(found->method);
        ag_free(found);
    }
}

static bool digits(const char *s, size_t min, size_t max)
{
    size_t n = strlen(s);
    if (n < min || n > max) return false;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i])) return false;
    return true;
}

static bool luhn(const char *s)
{
    int sum = 0;
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++) {
        int d = s[n - 1 - i] - '0';
        if (i % 2 == 1) d = d * 2 > 9 ? d * 2 - 9 : d * 2;
        sum += d;
    }
    return sum % 10 == 0;
}

static const char *brand_of(const char *num)
{
    int two = (num[0] - '0') * 10 + (num[1] - '0');
    int four = (int)strtol((char[5]){num[0], num[1], num[2], num[3], 0}, NULL, 10);
    if (num[0] == '4') return "visa";
    if ((two >= 51 && two <= 55) || (four >= 2221 && four <= 2720)) return "mastercard";
    if (two == 34 || two == 37) return "amex";
    return "card";
}

static bool id_chars(const char *s)
{
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("-_.:", *s)) return false;
    return true;
}

bool cards_validate(ag_validator *v, json_t *m, json_t **safe)
{
    *safe = NULL;
    if (!json_is_object(m)) {
        ag_v_fail(v, "paymentMethod", "paymentMethod must be an object");
        return false;
    }
    const char *type = json_string_value(json_object_get(m, "type"));
    if (type && strcmp(type, "wallet") == 0) {
        const char *w = ag_v_str(v, m, "walletId", AG_V_REQUIRED, 1, 64);
        if (w && !id_chars(w))
            ag_v_fail(v, "paymentMethod.walletId",
                      "walletId may hold letters, digits, '-', '_', '.' and ':'");
        if (json_object_size(m) != 2)
            ag_v_fail(v, "paymentMethod", "a wallet takes only type and walletId");
        if (!ag_v_ok(v)) return false;
        *safe = json_pack("{s:s, s:s}", "type", "wallet", "walletId", w);
        return true;
    }
    if (!type || strcmp(type, "card") != 0) {
        ag_v_fail(v, "paymentMethod.type", "type must be \"card\" or \"wallet\"");
        return false;
    }
    const char *num = json_string_value(json_object_get(m, "number"));
    const char *cvc = json_string_value(json_object_get(m, "cvc"));
    long long month = 0, year = 0;
    /* Messages never echo the number. */
    if (!num || !digits(num, 12, 19) || !luhn(num))
        ag_v_fail(v, "paymentMethod.number", "number must be a card number of 12-19 digits");
    if (!cvc || !digits(cvc, 3, 4)) ag_v_fail(v, "paymentMethod.cvc", "cvc must be 3 or 4 digits");
    ag_v_int(v, m, "expMonth", AG_V_REQUIRED, 1, 12, &month);
    ag_v_int(v, m, "expYear", AG_V_REQUIRED, 2000, 2100, &year);
    if (json_object_size(m) != 5)
        ag_v_fail(v, "paymentMethod", "a card takes type, number, expMonth, expYear and cvc");
    if (ag_v_ok(v)) {
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        long long cur = (tm.tm_year + 1900) * 12LL + tm.tm_mon + 1;
        if (year * 12 + month < cur) ag_v_fail(v, "paymentMethod.expYear", "the card has expired");
    }
    if (!ag_v_ok(v)) return false;
    size_t n = strlen(num);
    *safe = json_pack("{s:s, s:s, s:s, s:I, s:I}", "type", "card", "brand", brand_of(num), "last4",
                      num + n - 4, "expMonth", (json_int_t)month, "expYear", (json_int_t)year);
    return true;
}
