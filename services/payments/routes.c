/*
 * routes.c — agora-payments' HTTP API (services/payments/README.md).
 *
 * Charging, for one order (the orders saga calls it with a service token):
 *
 *   validate ──► lock the order id (one charge in flight per order in this
 *   process) ──► a payment for this order already? ──yes──► same amount,
 *   currency and method: the first answer again; else 409
 *        │ no
 *        ▼
 *   provider.charge (no transaction open: nothing waits on the store while
 *   the provider thinks) ──timeout──► 504 PROVIDER_TIMEOUT, nothing stored
 *        │ approved or declined
 *        ▼
 *   one transaction: the payment row + payment.succeeded|failed (outbox)
 *
 * A decline is a payment too (201, status FAILED, a failureCode) so the saga
 * can tell "the card said no" from "payments is down". A timeout stores
 * nothing: the saga may try again with the same order id.
 *
 * Refunds follow the same shape under a lock on the payment id; the refund
 * limit is checked before asking the provider and enforced again by the
 * UPDATE in the transaction.
 *
 * The card number lives only in a stack pay_method for the length of the
 * request; it is wiped after the provider call and never logged or stored.
 * Validation messages never echo it.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "payments.h"

/* ---- Helpers ---------------------------------------------------------------------- */

/* Ids we accept from callers: letters, digits, '-', '_', '.', ':'. */
static bool id_ok(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == ':'))
            return false;
    }
    return n >= 1 && n <= max;
}

static void wipe(void *p, size_t n)
{
    volatile unsigned char *b = p;
    while (n--)
        *b++ = 0;
}

static ag_deadline provider_deadline(ag_http_req *req)
{
    return ag_deadline_min(ag_req_deadline(req), ag_deadline_in(g_pay.provider_timeout_ms));
}

/* ---- One operation in flight per order (or payment) ------------------------------- */

/* A second charge of the same order while the first waits on the provider
 * would charge twice; within one process a set of busy keys prevents it
 * (the order id's UNIQUE key catches what another instance might do). */
#define BUSY_MAX 1024
static pthread_mutex_t busy_mu = PTHREAD_MUTEX_INITIALIZER;
static char *busy[BUSY_MAX];

static bool busy_take(const char *key)
{
    bool ok = false;
    pthread_mutex_lock(&busy_mu);
    int free_slot = -1;
    bool taken = false;
    for (int i = 0; i < BUSY_MAX; i++) {
        if (!busy[i]) {
            if (free_slot < 0) free_slot = i;
        } else if (strcmp(busy[i], key) == 0) {
            taken = true;
        }
    }
    if (!taken && free_slot >= 0) {
        busy[free_slot] = ag_strdup(key);
        ok = true;
    }
    pthread_mutex_unlock(&busy_mu);
    return ok;
}

static void busy_give(const char *key)
{
    pthread_mutex_lock(&busy_mu);
    for (int i = 0; i < BUSY_MAX; i++) {
        if (busy[i] && strcmp(busy[i], key) == 0) {
            ag_free(busy[i]);
            busy[i] = NULL;
            break;
        }
    }
    pthread_mutex_unlock(&busy_mu);
}

static void answer_busy(ag_http_res *res)
{
    ag_res_header(res, "Retry-After", "1");
    ag_res_error(res, 409, "PAYMENT_IN_PROGRESS",
                 "another request for this payment is being processed; retry", NULL);
}

/* ---- Validating a payment method ------------------------------------------------------ */

static bool luhn_ok(const char *digits)
{
    size_t n = strlen(digits);
    int sum = 0;
    for (size_t i = 0; i < n; i++) {
        int d = digits[n - 1 - i] - '0';
        if (i % 2 == 1) {
            d *= 2;
            if (d > 9) d -= 9;
        }
        sum += d;
    }
    return sum % 10 == 0;
}

/* The brand from the IIN (the leading digits). */
static const char *card_brand(const char *d)
{
    int two = (d[0] - '0') * 10 + (d[1] - '0');
    int four = two * 100 + (d[2] - '0') * 10 + (d[3] - '0');
    if (d[0] == '4') return "visa";
    if ((two >= 51 && two <= 55) || (four >= 2221 && four <= 2720)) return "mastercard";
    if (two == 34 || two == 37) return "amex";
    return "card";
}

static bool all_digits(const char *s, size_t min, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (s[n] < '0' || s[n] > '9') return false;
    return n >= min && n <= max;
}

static void current_month(int *year, int *month)
{
    time_t t = (time_t)(ag_wall_ms() / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    *year = tm.tm_year + 1900;
    *month = tm.tm_mon + 1;
}

static void validate_method(ag_validator *v, json_t *pm, pay_method *m)
{
    memset(m, 0, sizeof *m);
    if (!json_is_object(pm)) {
        ag_v_fail(v, "paymentMethod", "paymentMethod must be an object");
        return;
    }
    const char *type = ag_v_str(v, pm, "type", AG_V_REQUIRED, 1, 16);
    if (!type) return;
    if (strcmp(type, "card") == 0) {
        static const char *const allowed[] = {"type", "number", "expMonth", "expYear", "cvc", NULL};
        ag_v_only_fields(v, pm, "paymentMethod.", allowed);
        snprintf(m->type, sizeof m->type, "card");
        /* Never ag_v_str on the number with a length limit message that could
         * be logged with the value: check it by hand, name no digits. */
        json_t *num = json_object_get(pm, "number");
        const char *s = json_string_value(num);
        if (!num) {
            ag_v_fail(v, "paymentMethod.number", "paymentMethod.number is required");
        } else if (!s || !all_digits(s, 12, 19)) {
            ag_v_fail(v, "paymentMethod.number",
                      "paymentMethod.number must be a string of 12 to 19 digits");
        } else if (!luhn_ok(s)) {
            ag_v_fail(v, "paymentMethod.number", "paymentMethod.number is not a valid card number");
        } else {
            size_t n = strlen(s);
            snprintf(m->number, sizeof m->number, "%s", s);
            snprintf(m->last4, sizeof m->last4, "%s", s + n - 4);
            snprintf(m->brand, sizeof m->brand, "%s", card_brand(s));
        }
        long long month = 0, year = 0;
        bool okm = ag_v_int(v, pm, "expMonth", AG_V_REQUIRED, 1, 12, &month);
        bool oky = ag_v_int(v, pm, "expYear", AG_V_REQUIRED, 2000, 2200, &year);
        if (okm && oky) {
            int cy, cm;
            current_month(&cy, &cm);
            if (year < cy || (year == cy && month < cm))
                ag_v_fail(v, "paymentMethod.expYear", "the card has expired");
            m->exp_month = (int)month;
            m->exp_year = (int)year;
        }
        json_t *cvc = json_object_get(pm, "cvc");
        const char *c = json_string_value(cvc);
        if (!cvc)
            ag_v_fail(v, "paymentMethod.cvc", "paymentMethod.cvc is required");
        else if (!c || !all_digits(c, 3, 4))
            ag_v_fail(v, "paymentMethod.cvc",
                      "paymentMethod.cvc must be a string of 3 or 4 digits");
    } else if (strcmp(type, "wallet") == 0) {
        static const char *const allowed[] = {"type", "walletId", NULL};
        ag_v_only_fields(v, pm, "paymentMethod.", allowed);
        snprintf(m->type, sizeof m->type, "wallet");
        const char *w = ag_v_str(v, pm, "walletId", AG_V_REQUIRED, 1, PAY_WALLET_ID_MAX);
        if (w && !id_ok(w, PAY_WALLET_ID_MAX))
            ag_v_fail(v, "paymentMethod.walletId",
                      "paymentMethod.walletId may hold letters, digits, '-', '_', '.' and ':'");
        else if (w)
            snprintf(m->wallet_id, sizeof m->wallet_id, "%s", w);
    } else {
        ag_v_fail(v, "paymentMethod.type", "paymentMethod.type must be \"card\" or \"wallet\"");
    }
}

/* ---- POST /v1/payments ---------------------------------------------------------------- */

typedef struct charge_req {
    const char *order_id;
    const char *user_id; /* may be NULL */
    int64_t amount;
    char currency[4];
    pay_method m;
} charge_req;

/* Whether a stored payment answers the same request (a repeat) or another
 * one (a conflict). */
static bool same_request(const payment *p, const charge_req *c)
{
    if (p->amount_cents != c->amount || strcmp(p->currency, c->currency) != 0 ||
        strcmp(p->method_type, c->m.type) != 0)
        return false;
    if (strcmp(c->m.type, "wallet") == 0) return strcmp(p->wallet_id, c->m.wallet_id) == 0;
    char exp[8];
    snprintf(exp, sizeof exp, "%02d/%04d", c->m.exp_month, c->m.exp_year);
    return strcmp(p->card_brand, c->m.brand) == 0 && strcmp(p->card_last4, c->m.last4) == 0 &&
           strcmp(p->card_exp, exp) == 0;
}

static void answer_existing(ag_http_res *res, const payment *p, const charge_req *c)
{
    if (same_request(p, c))
        ag_res_ok(res, 201, payment_json(p));
    else
        ag_res_error(res, 409, "IDEMPOTENCY_CONFLICT",
                     "this order already has a payment with another amount, currency or method",
                     NULL);
}

static int record_tx(ag_db *db, void *ud)
{
    payment *p = ud;
    int rc = payment_insert(db, p);
    if (rc == 0) rc = publish_payment_result(db, p);
    return rc;
}

static bool parse_charge(ag_http_req *req, ag_http_res *res, charge_req *c, json_t **body_out)
{
    json_t *body;
    *body_out = NULL;
    if (ag_req_json(req, res, &body) < 0) return false;
    static const char *const allowed[] = {"orderId",       "amountCents", "currency",
                                          "paymentMethod", "userId",      NULL};
    ag_validator v;
    ag_v_init(&v);
    memset(c, 0, sizeof *c);
    if (ag_v_fields(&v, body, allowed)) {
        c->order_id = ag_v_str(&v, body, "orderId", AG_V_REQUIRED, 1, PAY_ORDER_ID_MAX);
        if (c->order_id && !id_ok(c->order_id, PAY_ORDER_ID_MAX))
            ag_v_fail(&v, "orderId", "orderId may hold letters, digits, '-', '_', '.' and ':'");
        c->user_id = ag_v_str(&v, body, "userId", 0, 1, 127);
        long long amount = 0;
        ag_v_int(&v, body, "amountCents", AG_V_REQUIRED, 1, PAY_MAX_AMOUNT, &amount);
        c->amount = amount;
        const char *cur = ag_v_str(&v, body, "currency", AG_V_REQUIRED, 3, 3);
        if (cur) {
            bool ok = true;
            for (int i = 0; i < 3; i++)
                if (cur[i] < 'A' || cur[i] > 'Z') ok = false;
            if (!ok)
                ag_v_fail(&v, "currency",
                          "currency must be an ISO 4217 code (3 upper-case letters)");
            else
                snprintf(c->currency, sizeof c->currency, "%s", cur);
        }
        json_t *pm = json_object_get(body, "paymentMethod");
        if (!pm)
            ag_v_fail(&v, "paymentMethod", "paymentMethod is required");
        else
            validate_method(&v, pm, &c->m);
    }
    if (!ag_v_ok(&v)) {
        wipe(&c->m, sizeof c->m);
        ag_res_validation(res, &v);
        json_decref(body);
        return false;
    }
    ag_v_release(&v);
    *body_out = body;
    return true;
}

static void post_payment(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!ag_auth_caller_role(req, res, "service")) return;
    charge_req c;
    json_t *body;
    if (!parse_charge(req, res, &c, &body)) return;
    if (!busy_take(c.order_id)) {
        wipe(&c.m, sizeof c.m);
        answer_busy(res);
        json_decref(body);
        return;
    }
    ag_db *db;
    payment p;
    int rc = ag_store_db(g_pay.store, &db);
    if (rc == 0) rc = payment_by_order(db, c.order_id, &p);
    if (rc == 0) {
        answer_existing(res, &p, &c);
        goto done;
    }
    if (rc != AG_ENOTFOUND) {
        ag_res_internal(req, res, "payment lookup failed", rc);
        goto done;
    }
    const pay_provider *prov = pay_provider_for(c.m.type);
    pay_result out;
    rc = prov->charge(c.order_id, c.amount, c.currency, &c.m, provider_deadline(req), &out);
    wipe(c.m.number, sizeof c.m.number);
    if (rc == AG_EDEADLINE) {
        ag_warn("provider timed out; nothing recorded", AG_FS("orderId", c.order_id),
                AG_FS("provider", prov->name()), AG_FS("requestId", ag_req_id(req)));
        ag_res_error(res, 504, "PROVIDER_TIMEOUT",
                     "the payment provider did not answer in time; nothing was charged", NULL);
        goto done;
    }
    if (rc < 0) {
        ag_warn("provider failed; nothing recorded", AG_FS("orderId", c.order_id),
                AG_FS("provider", prov->name()), AG_FERR(rc), AG_FS("requestId", ag_req_id(req)));
        ag_res_error(res, 502, "PROVIDER_ERROR", "the payment provider failed; nothing was charged",
                     NULL);
        goto done;
    }
    memset(&p, 0, sizeof p);
    ag_id_new_str(p.id);
    snprintf(p.order_id, sizeof p.order_id, "%s", c.order_id);
    if (c.user_id) snprintf(p.user_id, sizeof p.user_id, "%s", c.user_id);
    snprintf(p.status, sizeof p.status, "%s", out.approved ? "SUCCEEDED" : "FAILED");
    p.amount_cents = c.amount;
    snprintf(p.currency, sizeof p.currency, "%s", c.currency);
    snprintf(p.method_type, sizeof p.method_type, "%s", c.m.type);
    if (strcmp(c.m.type, "card") == 0) {
        snprintf(p.card_brand, sizeof p.card_brand, "%s", c.m.brand);
        snprintf(p.card_last4, sizeof p.card_last4, "%s", c.m.last4);
        snprintf(p.card_exp, sizeof p.card_exp, "%02d/%04d", c.m.exp_month, c.m.exp_year);
    } else {
        snprintf(p.wallet_id, sizeof p.wallet_id, "%s", c.m.wallet_id);
    }
    snprintf(p.provider, sizeof p.provider, "%s", prov->name());
    snprintf(p.provider_ref, sizeof p.provider_ref, "%s", out.ref);
    snprintf(p.failure_code, sizeof p.failure_code, "%s", out.failure_code);
    snprintf(p.failure_message, sizeof p.failure_message, "%s", out.failure_message);
    ag_time_now(p.created_at, sizeof p.created_at);
    rc = ag_store_tx(g_pay.store, record_tx, &p);
    if (rc == AG_EEXISTS) { /* another instance charged this order meanwhile */
        payment first;
        rc = payment_by_order(db, c.order_id, &first);
        if (rc == 0) {
            answer_existing(res, &first, &c);
            goto done;
        }
    }
    if (rc < 0) {
        /* The provider charged but nothing is recorded: loud, for an operator. */
        ag_error("payment not recorded after the provider answered", AG_FERR(rc),
                 AG_FS("orderId", c.order_id), AG_FS("providerRef", out.ref),
                 AG_FS("requestId", ag_req_id(req)));
        ag_res_error(res, 500, "INTERNAL", "internal error", NULL);
        goto done;
    }
    ag_info("payment recorded", AG_FS("paymentId", p.id), AG_FS("orderId", p.order_id),
            AG_FS("status", p.status), AG_FS("method", p.method_type), AG_FS("brand", p.card_brand),
            AG_FS("last4", p.card_last4), AG_FS("failureCode", p.failure_code),
            AG_FI("amountCents", p.amount_cents));
    ag_res_ok(res, 201, payment_json(&p));
done:
    busy_give(c.order_id);
    wipe(&c.m, sizeof c.m);
    json_decref(body); /* c.order_id points into it */
}

/* ---- POST /v1/payments/:id/refund --------------------------------------------------- */

typedef struct refund_ctx {
    payment *p;
    const char *key;
    int64_t cents, requested;
    const char *provider_ref;
    char id[AG_ID_LEN + 1];
    char created_at[32];
    char *response; /* out: the answer's JSON text */
    bool exceeded;
} refund_ctx;

static int refund_tx(ag_db *db, void *ud)
{
    refund_ctx *c = ud;
    c->exceeded = false;
    ag_free(c->response);
    c->response = NULL;
    int rc = payment_add_refund(db, c->p->id, c->cents);
    if (rc == AG_ECONSTRAINT) {
        c->exceeded = true;
        return rc;
    }
    if (rc < 0) return rc;
    payment after;
    rc = payment_get(db, c->p->id, &after);
    if (rc < 0) return rc;
    json_t *ans =
        json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:o}", "id", c->id, "paymentId", after.id,
                  "orderId", after.order_id, "amountCents", (json_int_t)c->cents, "currency",
                  after.currency, "createdAt", c->created_at, "payment", payment_json(&after));
    c->response = json_dumps(ans, JSON_COMPACT);
    json_decref(ans);
    rc = refund_insert(db, c->id, after.id, c->cents, c->requested, c->key, c->provider_ref,
                       c->response, c->created_at);
    if (rc == 0) rc = publish_payment_refunded(db, &after, c->id, c->cents);
    if (rc == 0) *c->p = after;
    return rc;
}

static void answer_stored(ag_http_res *res, const char *response)
{
    json_t *data = json_loads(response, 0, NULL);
    ag_res_ok(res, 201, data ? data : json_object());
}

static void post_refund(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!ag_auth_caller_role(req, res, "service")) return;
    const char *id = ag_req_param(req, "id");
    if (!id || !id_ok(id, AG_ID_LEN)) {
        ag_res_error(res, 404, "NOT_FOUND", "no such payment", NULL);
        return;
    }
    const char *key = ag_req_header(req, "Idempotency-Key");
    ag_validator v;
    ag_v_init(&v);
    if (key && (strlen(key) < 1 || strlen(key) > 128))
        ag_v_fail(&v, "Idempotency-Key", "Idempotency-Key must be 1 to 128 characters long");
    long long requested = -1;
    size_t blen = 0;
    ag_req_body(req, &blen);
    if (blen > 0) {
        json_t *body;
        if (ag_req_json(req, res, &body) < 0) {
            ag_v_release(&v);
            return;
        }
        static const char *const allowed[] = {"amountCents", NULL};
        if (ag_v_fields(&v, body, allowed)) {
            ag_v_int(&v, body, "amountCents", 0, 1, PAY_MAX_AMOUNT, &requested);
        }
        json_decref(body);
    }
    if (!ag_v_passed(&v, res, NULL)) return;
    if (!busy_take(id)) {
        answer_busy(res);
        return;
    }
    ag_db *db;
    payment p;
    int rc = ag_store_db(g_pay.store, &db);
    if (rc == 0) rc = payment_get(db, id, &p);
    if (rc == AG_ENOTFOUND) {
        ag_res_error(res, 404, "NOT_FOUND", "no such payment", NULL);
        goto done;
    }
    if (rc < 0) {
        ag_res_internal(req, res, "payment lookup failed", rc);
        goto done;
    }
    if (key) {
        char *first = NULL;
        int64_t first_req = -1;
        rc = refund_by_key(db, id, key, &first, &first_req);
        if (rc == 0) {
            if (first_req == requested)
                answer_stored(res, first);
            else
                ag_res_error(res, 409, "IDEMPOTENCY_CONFLICT",
                             "this Idempotency-Key was used for a refund of another amount", NULL);
            ag_free(first);
            goto done;
        }
        if (rc != AG_ENOTFOUND) {
            ag_res_internal(req, res, "refund lookup failed", rc);
            goto done;
        }
    }
    if (strcmp(p.status, "SUCCEEDED") != 0) {
        ag_res_error(res, 409, "PAYMENT_NOT_REFUNDABLE", "only a succeeded payment can be refunded",
                     NULL);
        goto done;
    }
    int64_t left = p.amount_cents - p.refunded_cents;
    int64_t cents = requested < 0 ? left : requested;
    if (left <= 0 || cents > left) {
        ag_res_error(res, 409, "REFUND_EXCEEDS_CHARGE",
                     left <= 0 ? "this payment is already fully refunded"
                               : "the refund exceeds what is left of the charge",
                     NULL);
        goto done;
    }
    const pay_provider *prov = pay_provider_for(p.method_type);
    pay_result out;
    rc = prov ? prov->refund(p.provider_ref, cents, p.currency, provider_deadline(req), &out)
              : AG_EUNAVAIL;
    if (rc == 0 && !out.approved) rc = AG_EUNAVAIL;
    if (rc == AG_EDEADLINE) {
        ag_res_error(res, 504, "PROVIDER_TIMEOUT",
                     "the payment provider did not answer in time; nothing was refunded", NULL);
        goto done;
    }
    if (rc < 0) {
        ag_res_error(res, 502, "PROVIDER_ERROR", "the payment provider refused the refund", NULL);
        goto done;
    }
    refund_ctx c;
    memset(&c, 0, sizeof c);
    c.p = &p;
    c.key = key;
    c.cents = cents;
    c.requested = requested;
    c.provider_ref = out.ref;
    ag_id_new_str(c.id);
    ag_time_now(c.created_at, sizeof c.created_at);
    rc = ag_store_tx(g_pay.store, refund_tx, &c);
    if (rc == 0) {
        ag_info("payment refunded", AG_FS("paymentId", p.id), AG_FS("orderId", p.order_id),
                AG_FS("refundId", c.id), AG_FI("amountCents", cents),
                AG_FI("refundedCents", p.refunded_cents));
        answer_stored(res, c.response);
    } else if (c.exceeded) {
        ag_res_error(res, 409, "REFUND_EXCEEDS_CHARGE",
                     "the refund exceeds what is left of the charge", NULL);
    } else {
        ag_res_internal(req, res, "refund not recorded", rc);
    }
    ag_free(c.response);
done:
    busy_give(id);
}

/* ---- Reading ------------------------------------------------------------------------ */

static bool is_staff(const ag_caller *me)
{
    return strcmp(me->role, "admin") == 0 || strcmp(me->role, "service") == 0;
}

/* GET /v1/payments/:id: staff, or the user named when the payment was made
 * (orders passes userId); anyone else gets 404, as for a missing one. */
static void get_payment(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    const char *id = ag_req_param(req, "id");
    payment p;
    ag_db *db;
    int rc = AG_ENOTFOUND;
    if (id && id_ok(id, AG_ID_LEN)) {
        rc = ag_store_db(g_pay.store, &db);
        if (rc == 0) rc = payment_get(db, id, &p);
    }
    if (rc == 0 && !is_staff(me) && (!p.user_id[0] || strcmp(p.user_id, me->id) != 0))
        rc = AG_ENOTFOUND;
    if (!ag_res_rc(req, res, rc, "no such payment", "payment read failed"))
        ag_res_ok(res, 200, payment_json(&p));
}

static void list_payments(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!ag_auth_caller_role(req, res, "service")) return;
    const char *order = ag_req_query(req, "orderId");
    long long page, limit;
    ag_validator v;
    ag_v_init(&v);
    if (order && !id_ok(order, PAY_ORDER_ID_MAX))
        ag_v_fail(&v, "orderId", "orderId may hold letters, digits, '-', '_', '.' and ':'");
    page = ag_v_query_int(&v, req, "page", 1, 1, 1000000);
    limit = ag_v_query_int(&v, req, "limit", 20, 1, 100);
    if (!ag_v_passed(&v, res, NULL)) return;
    ag_db *db;
    json_t *arr = NULL;
    int64_t total = 0;
    int rc = ag_store_db(g_pay.store, &db);
    if (rc == 0) rc = payments_list(db, order, limit, (page - 1) * limit, &arr, &total);
    ag_res_page_rc(req, res, rc, arr, page, limit, total, "payment list failed");
}

void payments_routes(ag_router *r)
{
    ag_router_add(r, "POST", "/v1/payments", post_payment, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "GET", "/v1/payments", list_payments, NULL, 0);
    ag_router_add(r, "GET", "/v1/payments/:id", get_payment, NULL, 0);
    ag_router_add(r, "POST", "/v1/payments/:id/refund", post_refund, NULL, 0);
}
