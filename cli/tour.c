/*
 * tour.c — `agora demo`'s scripted tour of the shop, through the gateway.
 *
 * After the demo catalogue is loaded, a new customer does what a person
 * would, one step at a time, each printed with the request it makes and
 * what came back:
 *
 *   1. registers (POST /auth/register; the answer carries a token)
 *   2. browses (GET /products): a few products with their prices
 *   3. adds two of them to the cart (POST /cart/items)
 *   4. looks at the cart (GET /cart): lines, prices from the catalog, total
 *   5. checks out from the cart with the test card 4242… (POST /orders,
 *      Idempotency-Key, Prefer: wait=8) and gets the order CONFIRMED
 *   6. reads the order's history (GET /orders/:id/history): its events
 *   7. reads the notifications that arrived (GET /notifications); when
 *      agora-notifications is not running, says so and goes on
 *   8. orders again with the declined test card 4000…0002: CANCELLED, with
 *      the reason
 *
 * Everything goes through the public API at <gateway>/api/v1, as a client's
 * calls would. Prefer: wait stays under the gateway's 10 s budget for
 * agora-orders (config/gateway.json); an order still PENDING after it is
 * polled. A 429 is retried after its Retry-After, as a polite client does
 * (registration is rate-limited per address). The tour is a success when the
 * first order ends CONFIRMED and the second CANCELLED.
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agora/error.h"
#include "agora/id.h"
#include "agora/mem.h"
#include "cli.h"

#define TOUR_WAIT_S 8          /* Prefer: wait; the gateway allows orders 10 s */
#define TOUR_FINAL_S 60        /* how long an order may take to end */
#define TOUR_NOTIFY_S 10       /* how long to wait for the order's notification */
#define TOUR_RETRY_BUDGET_S 60 /* Retry-After waits, in all, per call */

typedef struct tour {
    char api[512];    /* "http://127.0.0.1:8080/api/v1" */
    char token[4096]; /* the customer's, once registered */
    char user[96];    /* the customer's id */
} tour;

/* What one call brought back. */
typedef struct answer {
    int status;  /* the HTTP status, or a negative AG_E* code */
    json_t *doc; /* the parsed body, or NULL */
    double ms;
} answer;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pause_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void answer_release(answer *a)
{
    json_decref(a->doc);
    a->doc = NULL;
}

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static long long num(json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

static json_t *data_of(const answer *a)
{
    return json_object_get(a->doc, "data");
}

/* "$12.99" for USD, "12.99 EUR" for anything else. */
static const char *money(char *out, size_t n, long long cents, const char *currency)
{
    if (!currency || !*currency || strcmp(currency, "USD") == 0)
        snprintf(out, n, "$%lld.%02lld", cents / 100, cents % 100);
    else
        snprintf(out, n, "%lld.%02lld %s", cents / 100, cents % 100, currency);
    return out;
}

/* "429 RATE_LIMITED: too many requests" or "no answer (connection refused)". */
static const char *why(const answer *a, char *out, size_t n)
{
    if (a->status < 0) {
        snprintf(out, n, "no answer (%s)", ag_strerror(a->status));
        return out;
    }
    json_t *err = json_object_get(a->doc, "error");
    if (json_is_object(err))
        snprintf(out, n, "%d %s: %s", a->status, str(err, "code"), str(err, "message"));
    else
        snprintf(out, n, "%d", a->status);
    return out;
}

/* One call to <api><path>, with the customer's token once there is one. The
 * request and its status are printed unless `quiet`. `extra` headers are
 * "Name: value" strings, NULL-terminated (may be NULL). */
static void call(tour *t, const char *method, const char *path, json_t *body,
                 const char *const *extra, bool quiet, answer *a)
{
    char url[1024], auth[4200];
    snprintf(url, sizeof url, "%s%s", t->api, path);
    const char *headers[8];
    size_t nh = 0;
    if (t->token[0]) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", t->token);
        headers[nh++] = auth;
    }
    for (size_t i = 0; extra && extra[i] && nh < 7; i++)
        headers[nh++] = extra[i];
    headers[nh] = NULL;
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    ag_http_call c = {.method = method,
                      .url = url,
                      .headers = headers,
                      .body = text,
                      .body_len = text ? strlen(text) : 0,
                      .timeout_ms = (TOUR_WAIT_S + 5) * 1000};
    a->doc = NULL;
    double t0 = now_s(), waited = 0;
    for (;;) {
        ag_http_reply rep;
        a->status = cli_http_do(&c, &rep);
        if (a->status < 0) break;
        a->status = rep.status;
        char ra[32];
        double retry = 0;
        if (rep.status == 429 && ag_http_reply_header(&rep, "Retry-After", ra, sizeof ra) > 0)
            retry = atof(ra);
        if (retry > 0 && waited < TOUR_RETRY_BUDGET_S) {
            ag_http_reply_release(&rep);
            if (retry > 10) retry = 10;
            if (!quiet)
                printf("   (rate limited; trying again in %.0f s, as Retry-After says)\n", retry);
            fflush(stdout);
            pause_ms((long)(retry * 1000));
            waited += retry;
            continue;
        }
        if (rep.body.len) a->doc = json_loadb(rep.body.data, rep.body.len, 0, NULL);
        ag_http_reply_release(&rep);
        break;
    }
    a->ms = (now_s() - t0 - waited) * 1000.0;
    free(text);
    if (!quiet) {
        if (a->status < 0)
            printf("   %s /api/v1%s -> no answer (%s)\n", method, path, ag_strerror(a->status));
        else
            printf("   %s /api/v1%s -> %d (%.0f ms)\n", method, path, a->status, a->ms);
        fflush(stdout);
    }
}

static void step(int n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void step(int n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("\n%d. ", n);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
}

/* Prints why the step failed; returns 1 (the tour's exit status). */
static int failed(const char *what, const answer *a)
{
    char w[512];
    fprintf(stderr, "agora demo: %s failed: %s\n", what, why(a, w, sizeof w));
    if (a->status == 502 || a->status == 503 || a->status == 504 || a->status < 0)
        fprintf(stderr, "agora demo: is everything up? see agora status\n");
    return 1;
}

static const char *const k_address =
    "{\"name\":\"Ada Lovelace\",\"line1\":\"12 St James's Square\",\"city\":\"London\","
    "\"postalCode\":\"SW1Y 4JH\",\"country\":\"GB\"}";

/* The order body: from the cart, or one of `product`; paid with `card`. */
static json_t *order_body(const char *product, const char *card)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    json_t *b = json_object();
    if (product)
        json_object_set_new(b, "items",
                            json_pack("[{s:s, s:i}]", "productId", product, "quantity", 1));
    else
        json_object_set_new(b, "fromCart", json_true());
    json_object_set_new(b, "shippingAddress", json_loads(k_address, 0, NULL));
    json_object_set_new(b, "paymentMethod",
                        json_pack("{s:s, s:s, s:i, s:i, s:s}", "type", "card", "number", card,
                                  "expMonth", 12, "expYear", tm.tm_year + 1900 + 2, "cvc", "123"));
    return b;
}

/* Places an order and waits for its end: CONFIRMED or CANCELLED (or what it
 * still is after TOUR_FINAL_S). On success `a` holds the order's last
 * answer (data = the order). */
static int place(tour *t, json_t *body, answer *a)
{
    char key[AG_ID_LEN + 32], prefer[32], idem[AG_ID_LEN + 1];
    ag_id_new_str(idem);
    snprintf(key, sizeof key, "Idempotency-Key: %s", idem);
    snprintf(prefer, sizeof prefer, "Prefer: wait=%d", TOUR_WAIT_S);
    const char *headers[] = {key, prefer, NULL};
    printf("   (Idempotency-Key: %s, Prefer: wait=%d)\n", idem, TOUR_WAIT_S);
    double t0 = now_s();
    call(t, "POST", "/orders", body, headers, false, a);
    if (a->status != 201) return -1;
    char path[256];
    snprintf(path, sizeof path, "/orders/%s", str(data_of(a), "id"));
    bool said = false;
    while (strcmp(str(data_of(a), "status"), "CONFIRMED") != 0 &&
           strcmp(str(data_of(a), "status"), "CANCELLED") != 0 && now_s() - t0 < TOUR_FINAL_S) {
        if (!said)
            printf("   still %s; asking again (GET /api/v1%s)\n", str(data_of(a), "status"), path);
        said = true;
        pause_ms(250);
        answer next;
        call(t, "GET", path, NULL, NULL, true, &next);
        if (next.status == 200) {
            answer_release(a);
            *a = next;
        } else {
            answer_release(&next);
        }
    }
    return 0;
}

static void show_history(tour *t, const char *order, bool brief)
{
    char path[256];
    snprintf(path, sizeof path, "/orders/%s/history", order);
    answer a;
    call(t, "GET", path, NULL, NULL, brief, &a);
    json_t *events = json_object_get(data_of(&a), "events");
    if (a.status != 200 || !json_is_array(events)) {
        char w[512];
        printf("   the history is not available: %s\n", why(&a, w, sizeof w));
        answer_release(&a);
        return;
    }
    size_t i;
    json_t *e;
    if (brief) {
        printf("   its history:");
        json_array_foreach(events, i, e) printf("%s %s", i ? "," : "", str(e, "type"));
        printf("\n");
    } else {
        json_array_foreach(events, i, e)
        {
            json_t *d = json_object_get(e, "data");
            const char *detail = "";
            char buf[256] = "";
            if (*str(d, "paymentId"))
                snprintf(buf, sizeof buf, "  payment %s", str(d, "paymentId"));
            else if (*str(d, "reason"))
                snprintf(buf, sizeof buf, "  %s", str(d, "reason"));
            detail = buf;
            printf("   %lld  %-18s %s%s\n", num(e, "seq"), str(e, "type"), str(e, "at"), detail);
        }
    }
    answer_release(&a);
}

/* Whether the customer's notifications include the one saying that `order`
 * is confirmed (order.created may come first; the tour waits for this one). */
static bool about(json_t *list, const char *order)
{
    size_t i;
    json_t *n;
    json_array_foreach(list, i, n)
    {
        if (strcmp(str(json_object_get(n, "data"), "orderId"), order) == 0 &&
            strstr(str(n, "type"), "confirmed"))
            return true;
    }
    return false;
}

static void show_notifications(tour *t, const char *order)
{
    answer a;
    call(t, "GET", "/notifications?limit=10", NULL, NULL, false, &a);
    double t0 = now_s();
    /* Notifications follow the order's events over the bus: give them a
     * moment to arrive. */
    while (a.status == 200 && json_is_array(data_of(&a)) && !about(data_of(&a), order) &&
           now_s() - t0 < TOUR_NOTIFY_S) {
        answer_release(&a);
        pause_ms(250);
        call(t, "GET", "/notifications?limit=10", NULL, NULL, true, &a);
    }
    char w[512];
    if (a.status != 200 || !json_is_array(data_of(&a))) {
        printf("   agora-notifications is not running here (%s):\n"
               "   the order's notification would be listed here, and pushed over\n"
               "   WebSocket (/api/v1/ws) and Server-Sent Events as it arrives\n",
               why(&a, w, sizeof w));
        answer_release(&a);
        return;
    }
    json_t *list = data_of(&a);
    printf("   %zu notification(s), %lld unread%s\n", json_array_size(list),
           num(a.doc, "unreadCount"),
           about(list, order) ? "" : " (not yet the order's confirmation, after 10 s)");
    size_t i;
    json_t *n;
    json_array_foreach(list, i, n)
    {
        printf("   [%s] %s: %s\n", str(n, "type"), str(n, "title"), str(n, "message"));
    }
    answer_release(&a);
}

int cli_tour(cli_config *cfg)
{
    cli_component *gw = cli_config_find(cfg, "gateway");
    if (!gw) {
        fprintf(stderr, "agora demo: the tour goes through the gateway, and %s has none\n",
                cfg->path);
        return 1;
    }
    tour *t = ag_calloc(1, sizeof *t);
    snprintf(t->api, sizeof t->api, "%s/api/v1", gw->url);
    int rc = 1;
    answer a = {0}, confirmed = {0}, declined = {0};
    char m[64], m2[64];
    printf("agora demo: a tour of the shop through the gateway, %s\n", t->api);

    /* 1. Register. */
    char id[AG_ID_LEN + 1], name[32], email[64];
    ag_id_new_str(id);
    /* The id's random tail: its head is the time, the same for two quick runs. */
    snprintf(name, sizeof name, "tour%.4s%.4s", id + 24, id + 32);
    snprintf(email, sizeof email, "%s@example.com", name);
    step(1, "A new customer, %s, registers", name);
    json_t *body = json_pack("{s:s, s:s, s:s}", "username", name, "email", email, "password",
                             "tour-password-1");
    call(t, "POST", "/auth/register", body, NULL, false, &a);
    json_decref(body);
    const char *token = str(data_of(&a), "token");
    if (a.status != 201 || !*token) {
        rc = failed("registering", &a);
        goto out;
    }
    snprintf(t->token, sizeof t->token, "%s", token);
    snprintf(t->user, sizeof t->user, "%s", str(json_object_get(data_of(&a), "user"), "id"));
    printf("   %s <%s> has an account (id %s) and is signed in: the answer carries a token\n", name,
           email, t->user);
    answer_release(&a);

    /* 2. Browse. */
    step(2, "Browses the products");
    call(t, "GET", "/products?limit=20", NULL, NULL, false, &a);
    json_t *products = data_of(&a);
    if (a.status != 200 || !json_is_array(products)) {
        rc = failed("listing the products", &a);
        goto out;
    }
    printf("   %lld products in the catalogue; the first %zu:\n",
           num(json_object_get(a.doc, "pagination"), "total"),
           json_array_size(products) < 5 ? json_array_size(products) : (size_t)5);
    const char *pick[2] = {NULL, NULL};
    size_t npick = 0, i;
    json_t *p;
    json_array_foreach(products, i, p)
    {
        if (i < 5)
            printf("   %-36.36s %10s  %s\n", str(p, "name"),
                   money(m, sizeof m, num(p, "priceCents"), str(p, "currency")),
                   json_is_true(json_object_get(p, "inStock")) ? "in stock" : "out of stock");
        if (npick < 2 && json_is_true(json_object_get(p, "inStock")) && num(p, "stock") >= 3)
            pick[npick++] = str(p, "id");
    }
    if (npick < 2) {
        fprintf(stderr,
                "agora demo: fewer than two products in stock among the first %zu; "
                "load the demo catalogue (agora demo) or add stock\n",
                json_array_size(products));
        goto out;
    }

    /* 3. Fill the cart: one of the first, two of the second. */
    step(3, "Adds two products to the cart");
    for (int k = 0; k < 2; k++) {
        answer line;
        body = json_pack("{s:s, s:i}", "productId", pick[k], "quantity", k + 1);
        call(t, "POST", "/cart/items", body, NULL, false, &line);
        json_decref(body);
        if (line.status != 201 && line.status != 200) {
            rc = failed("adding to the cart", &line);
            answer_release(&line);
            goto out;
        }
        printf("   %lld x %s\n", num(data_of(&line), "quantity"), str(data_of(&line), "name"));
        answer_release(&line);
    }

    /* 4. The cart, priced by the catalog. */
    step(4, "Looks at the cart");
    answer cart;
    call(t, "GET", "/cart", NULL, NULL, false, &cart);
    json_t *items = json_object_get(data_of(&cart), "items");
    if (cart.status != 200 || !json_is_array(items)) {
        rc = failed("reading the cart", &cart);
        answer_release(&cart);
        goto out;
    }
    json_array_foreach(items, i, p)
    {
        printf("   %lld x %-34.34s %10s  %10s\n", num(p, "quantity"), str(p, "name"),
               money(m, sizeof m, num(p, "priceCents"), str(p, "currency")),
               money(m2, sizeof m2, num(p, "lineTotalCents"), str(p, "currency")));
    }
    json_array_foreach(json_object_get(data_of(&cart), "subtotals"), i, p)
    {
        printf("   %-39s %22s\n", "subtotal",
               money(m, sizeof m, num(p, "subtotalCents"), str(p, "currency")));
    }
    answer_release(&cart);

    /* 5. Check out from the cart with a card that is accepted. */
    step(5, "Checks out from the cart, paying with the test card 4242 4242 4242 4242");
    body = order_body(NULL, "4242424242424242");
    int prc = place(t, body, &confirmed);
    json_decref(body);
    json_t *o = data_of(&confirmed);
    if (prc < 0) {
        rc = failed("placing the order", &confirmed);
        goto out;
    }
    char order[128];
    snprintf(order, sizeof order, "%s", str(o, "id"));
    printf("   order %s is %s: %s, %zu line(s), paid by %s card ending %s\n", order,
           str(o, "status"), money(m, sizeof m, num(o, "totalCents"), str(o, "currency")),
           json_array_size(json_object_get(o, "items")),
           str(json_object_get(o, "paymentMethod"), "brand"),
           str(json_object_get(o, "paymentMethod"), "last4"));
    if (strcmp(str(o, "status"), "CONFIRMED") != 0) {
        fprintf(stderr, "agora demo: the order ended %s (%s), not CONFIRMED\n", str(o, "status"),
                *str(o, "reason") ? str(o, "reason") : "no reason given");
        goto out;
    }

    /* 6. What happened to it, from its events. */
    step(6, "Reads the order's history (its events, oldest first)");
    show_history(t, order, false);

    /* 7. The notification. */
    step(7, "Reads the notifications that arrived");
    show_notifications(t, order);

    /* 8. A card that is declined. */
    step(8, "Orders once more, paying with the declined test card 4000 0000 0000 0002");
    body = order_body(pick[0], "4000000000000002");
    prc = place(t, body, &declined);
    json_decref(body);
    o = data_of(&declined);
    if (prc < 0) {
        rc = failed("placing the second order", &declined);
        goto out;
    }
    printf("   order %s is %s: %s\n", str(o, "id"), str(o, "status"),
           *str(o, "reason") ? str(o, "reason") : "(no reason given)");
    show_history(t, str(o, "id"), true);
    if (strcmp(str(o, "status"), "CANCELLED") != 0) {
        fprintf(stderr, "agora demo: the declined order ended %s, not CANCELLED\n",
                str(o, "status"));
        goto out;
    }
    printf("\nagora demo: tour done: order %s CONFIRMED (%s), order %s CANCELLED "
           "(card declined)\n",
           order,
           money(m, sizeof m, num(data_of(&confirmed), "totalCents"),
                 str(data_of(&confirmed), "currency")),
           str(o, "id"));
    rc = 0;
out:
    answer_release(&a);
    answer_release(&confirmed);
    answer_release(&declined);
    fflush(stdout);
    ag_free(t);
    return rc;
}
