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
#include "tour.h"

double tour_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void tour_pause_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

void tour_answer_release(answer *a)
{
    json_decref(a->doc);
    a->doc = NULL;
}

const char *tour_str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

long long tour_num(json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

json_t *tour_data(const answer *a)
{
    return json_object_get(a->doc, "data");
}

/* "$12.99" for USD, "12.99 EUR" for anything else. */
const char *tour_money(char *out, size_t n, long long cents, const char *currency)
{
    if (!currency || !*currency || strcmp(currency, "USD") == 0)
        snprintf(out, n, "$%lld.%02lld", cents / 100, cents % 100);
    else
        snprintf(out, n, "%lld.%02lld %s", cents / 100, cents % 100, currency);
    return out;
}

/* "429 RATE_LIMITED: too many requests" or "no answer (connection refused)". */
const char *tour_why(const answer *a, char *out, size_t n)
{
    if (a->status < 0) {
        snprintf(out, n, "no answer (%s)", ag_strerror(a->status));
        return out;
    }
    json_t *err = json_object_get(a->doc, "error");
    if (json_is_object(err))
        snprintf(out, n, "%d %s: %s", a->status, tour_str(err, "code"), tour_str(err, "message"));
    else
        snprintf(out, n, "%d", a->status);
    return out;
}

/* One exchange with <api><path> (tour.h's tour_call and tour_call_raw). */
static void exchange(tour *t, const char *method, const char *path, const void *body, size_t len,
                     const char *content_type, const char *const *extra, bool quiet, answer *a)
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
    ag_http_call c = {.method = method,
                      .url = url,
                      .headers = headers,
                      .body = body,
                      .body_len = len,
                      .content_type = content_type,
                      .timeout_ms = (TOUR_WAIT_S + 5) * 1000};
    a->doc = NULL;
    double t0 = tour_now_s(), waited = 0;
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
            tour_pause_ms((long)(retry * 1000));
            waited += retry;
            continue;
        }
        if (rep.body.len) a->doc = json_loadb(rep.body.data, rep.body.len, 0, NULL);
        ag_http_reply_release(&rep);
        break;
    }
    a->ms = (tour_now_s() - t0 - waited) * 1000.0;
    if (!quiet) {
        if (a->status < 0)
            printf("   %s /api/v1%s -> no answer (%s)\n", method, path, ag_strerror(a->status));
        else
            printf("   %s /api/v1%s -> %d (%.0f ms)\n", method, path, a->status, a->ms);
        fflush(stdout);
    }
}

void tour_call(tour *t, const char *method, const char *path, json_t *body,
               const char *const *extra, bool quiet, answer *a)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    exchange(t, method, path, text, text ? strlen(text) : 0, NULL, extra, quiet, a);
    free(text);
}

void tour_call_raw(tour *t, const char *method, const char *path, const void *body, size_t len,
                   const char *content_type, bool quiet, answer *a)
{
    exchange(t, method, path, body, len, content_type, NULL, quiet, a);
}

int tour_register(tour *t, const char *prefix, char *name_out, size_t name_len)
{
    char id[AG_ID_LEN + 1], name[32], email[64];
    ag_id_new_str(id);
    /* The id's random tail: its head is the time, the same for two quick runs. */
    snprintf(name, sizeof name, "%s%.4s%.4s", prefix, id + 24, id + 32);
    snprintf(email, sizeof email, "%s@example.com", name);
    json_t *body = json_pack("{s:s, s:s, s:s}", "username", name, "email", email, "password",
                             "tour-password-1");
    answer a;
    tour_call(t, "POST", "/auth/register", body, NULL, false, &a);
    json_decref(body);
    const char *token = tour_str(tour_data(&a), "token");
    if (a.status != 201 || !*token) {
        int rc = tour_failed("registering", &a);
        tour_answer_release(&a);
        return rc;
    }
    snprintf(t->token, sizeof t->token, "%s", token);
    snprintf(t->user, sizeof t->user, "%s", tour_str(json_object_get(tour_data(&a), "user"), "id"));
    if (name_out) snprintf(name_out, name_len, "%s", name);
    printf("   %s <%s> has an account (id %s) and is signed in: the answer carries a token\n", name,
           email, t->user);
    tour_answer_release(&a);
    return 0;
}

void tour_step(int n, const char *fmt, ...)
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
int tour_failed(const char *what, const answer *a)
{
    char w[512];
    fprintf(stderr, "agora demo: %s failed: %s\n", what, tour_why(a, w, sizeof w));
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
    double t0 = tour_now_s();
    tour_call(t, "POST", "/orders", body, headers, false, a);
    if (a->status != 201) return -1;
    char path[256];
    snprintf(path, sizeof path, "/orders/%s", tour_str(tour_data(a), "id"));
    bool said = false;
    while (strcmp(tour_str(tour_data(a), "status"), "CONFIRMED") != 0 &&
           strcmp(tour_str(tour_data(a), "status"), "CANCELLED") != 0 &&
           tour_now_s() - t0 < TOUR_FINAL_S) {
        if (!said)
            printf("   still %s; asking again (GET /api/v1%s)\n", tour_str(tour_data(a), "status"),
                   path);
        said = true;
        tour_pause_ms(250);
        answer next;
        tour_call(t, "GET", path, NULL, NULL, true, &next);
        if (next.status == 200) {
            tour_answer_release(a);
            *a = next;
        } else {
            tour_answer_release(&next);
        }
    }
    return 0;
}

static void show_history(tour *t, const char *order, bool brief)
{
    char path[256];
    snprintf(path, sizeof path, "/orders/%s/history", order);
    answer a;
    tour_call(t, "GET", path, NULL, NULL, brief, &a);
    json_t *events = json_object_get(tour_data(&a), "events");
    if (a.status != 200 || !json_is_array(events)) {
        char w[512];
        printf("   the history is not available: %s\n", tour_why(&a, w, sizeof w));
        tour_answer_release(&a);
        return;
    }
    size_t i;
    json_t *e;
    if (brief) {
        printf("   its history:");
        json_array_foreach(events, i, e) printf("%s %s", i ? "," : "", tour_str(e, "type"));
        printf("\n");
    } else {
        json_array_foreach(events, i, e)
        {
            json_t *d = json_object_get(e, "data");
            const char *detail = "";
            char buf[256] = "";
            if (*tour_str(d, "paymentId"))
                snprintf(buf, sizeof buf, "  payment %s", tour_str(d, "paymentId"));
            else if (*tour_str(d, "reason"))
                snprintf(buf, sizeof buf, "  %s", tour_str(d, "reason"));
            detail = buf;
            printf("   %lld  %-18s %s%s\n", tour_num(e, "seq"), tour_str(e, "type"),
                   tour_str(e, "at"), detail);
        }
    }
    tour_answer_release(&a);
}

/* Whether the customer's notifications include the one saying that `order`
 * is confirmed (order.created may come first; the tour waits for this one). */
static bool about(json_t *list, const char *order)
{
    size_t i;
    json_t *n;
    json_array_foreach(list, i, n)
    {
        if (strcmp(tour_str(json_object_get(n, "data"), "orderId"), order) == 0 &&
            strstr(tour_str(n, "type"), "confirmed"))
            return true;
    }
    return false;
}

static void show_notifications(tour *t, const char *order)
{
    answer a;
    tour_call(t, "GET", "/notifications?limit=10", NULL, NULL, false, &a);
    double t0 = tour_now_s();
    /* Notifications follow the order's events over the bus: give them a
     * moment to arrive. */
    while (a.status == 200 && json_is_array(tour_data(&a)) && !about(tour_data(&a), order) &&
           tour_now_s() - t0 < TOUR_NOTIFY_S) {
        tour_answer_release(&a);
        tour_pause_ms(250);
        tour_call(t, "GET", "/notifications?limit=10", NULL, NULL, true, &a);
    }
    char w[512];
    if (a.status != 200 || !json_is_array(tour_data(&a))) {
        printf("   agora-notifications is not running here (%s):\n"
               "   the order's notification would be listed here, and pushed over\n"
               "   WebSocket (/api/v1/ws) and Server-Sent Events as it arrives\n",
               tour_why(&a, w, sizeof w));
        tour_answer_release(&a);
        return;
    }
    json_t *list = tour_data(&a);
    printf("   %zu notification(s), %lld unread%s\n", json_array_size(list),
           tour_num(a.doc, "unreadCount"),
           about(list, order) ? "" : " (not yet the order's confirmation, after 10 s)");
    size_t i;
    json_t *n;
    json_array_foreach(list, i, n)
    {
        printf("   [%s] %s: %s\n", tour_str(n, "type"), tour_str(n, "title"),
               tour_str(n, "message"));
    }
    tour_answer_release(&a);
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
    tour_step(1, "A new customer registers");
    if (tour_register(t, "tour", NULL, 0) != 0) goto out;

    json_t *body;

    /* 2. Browse. */
    tour_step(2, "Browses the products");
    tour_call(t, "GET", "/products?limit=20", NULL, NULL, false, &a);
    json_t *products = tour_data(&a);
    if (a.status != 200 || !json_is_array(products)) {
        rc = tour_failed("listing the products", &a);
        goto out;
    }
    printf("   %lld products in the catalogue; the first %zu:\n",
           tour_num(json_object_get(a.doc, "pagination"), "total"),
           json_array_size(products) < 5 ? json_array_size(products) : (size_t)5);
    const char *pick[2] = {NULL, NULL};
    size_t npick = 0, i;
    json_t *p;
    json_array_foreach(products, i, p)
    {
        if (i < 5)
            printf("   %-36.36s %10s  %s\n", tour_str(p, "name"),
                   tour_money(m, sizeof m, tour_num(p, "priceCents"), tour_str(p, "currency")),
                   json_is_true(json_object_get(p, "inStock")) ? "in stock" : "out of stock");
        if (npick < 2 && json_is_true(json_object_get(p, "inStock")) && tour_num(p, "stock") >= 3)
            pick[npick++] = tour_str(p, "id");
    }
    if (npick < 2) {
        fprintf(stderr,
                "agora demo: fewer than two products in stock among the first %zu; "
                "load the demo catalogue (agora demo) or add stock\n",
                json_array_size(products));
        goto out;
    }

    /* 3. Fill the cart: one of the first, two of the second. */
    tour_step(3, "Adds two products to the cart");
    for (int k = 0; k < 2; k++) {
        answer line;
        body = json_pack("{s:s, s:i}", "productId", pick[k], "quantity", k + 1);
        tour_call(t, "POST", "/cart/items", body, NULL, false, &line);
        json_decref(body);
        if (line.status != 201 && line.status != 200) {
            rc = tour_failed("adding to the cart", &line);
            tour_answer_release(&line);
            goto out;
        }
        printf("   %lld x %s\n", tour_num(tour_data(&line), "quantity"),
               tour_str(tour_data(&line), "name"));
        tour_answer_release(&line);
    }

    /* 4. The cart, priced by the catalog. */
    tour_step(4, "Looks at the cart");
    answer cart;
    tour_call(t, "GET", "/cart", NULL, NULL, false, &cart);
    json_t *items = json_object_get(tour_data(&cart), "items");
    if (cart.status != 200 || !json_is_array(items)) {
        rc = tour_failed("reading the cart", &cart);
        tour_answer_release(&cart);
        goto out;
    }
    json_array_foreach(items, i, p)
    {
        printf("   %lld x %-34.34s %10s  %10s\n", tour_num(p, "quantity"), tour_str(p, "name"),
               tour_money(m, sizeof m, tour_num(p, "priceCents"), tour_str(p, "currency")),
               tour_money(m2, sizeof m2, tour_num(p, "lineTotalCents"), tour_str(p, "currency")));
    }
    json_array_foreach(json_object_get(tour_data(&cart), "subtotals"), i, p)
    {
        printf("   %-39s %22s\n", "subtotal",
               tour_money(m, sizeof m, tour_num(p, "subtotalCents"), tour_str(p, "currency")));
    }
    tour_answer_release(&cart);

    /* 5. Check out from the cart with a card that is accepted. */
    tour_step(5, "Checks out from the cart, paying with the test card 4242 4242 4242 4242");
    body = order_body(NULL, "4242424242424242");
    int prc = place(t, body, &confirmed);
    json_decref(body);
    json_t *o = tour_data(&confirmed);
    if (prc < 0) {
        rc = tour_failed("placing the order", &confirmed);
        goto out;
    }
    char order[128];
    snprintf(order, sizeof order, "%s", tour_str(o, "id"));
    printf("   order %s is %s: %s, %zu line(s), paid by %s card ending %s\n", order,
           tour_str(o, "status"),
           tour_money(m, sizeof m, tour_num(o, "totalCents"), tour_str(o, "currency")),
           json_array_size(json_object_get(o, "items")),
           tour_str(json_object_get(o, "paymentMethod"), "brand"),
           tour_str(json_object_get(o, "paymentMethod"), "last4"));
    if (strcmp(tour_str(o, "status"), "CONFIRMED") != 0) {
        fprintf(stderr, "agora demo: the order ended %s (%s), not CONFIRMED\n",
                tour_str(o, "status"),
                *tour_str(o, "reason") ? tour_str(o, "reason") : "no reason given");
        goto out;
    }

    /* 6. What happened to it, from its events. */
    tour_step(6, "Reads the order's history (its events, oldest first)");
    show_history(t, order, false);

    /* 7. The notification. */
    tour_step(7, "Reads the notifications that arrived");
    show_notifications(t, order);

    /* 8. A card that is declined. */
    tour_step(8, "Orders once more, paying with the declined test card 4000 0000 0000 0002");
    body = order_body(pick[0], "4000000000000002");
    prc = place(t, body, &declined);
    json_decref(body);
    o = tour_data(&declined);
    if (prc < 0) {
        rc = tour_failed("placing the second order", &declined);
        goto out;
    }
    printf("   order %s is %s: %s\n", tour_str(o, "id"), tour_str(o, "status"),
           *tour_str(o, "reason") ? tour_str(o, "reason") : "(no reason given)");
    show_history(t, tour_str(o, "id"), true);
    if (strcmp(tour_str(o, "status"), "CANCELLED") != 0) {
        fprintf(stderr, "agora demo: the declined order ended %s, not CANCELLED\n",
                tour_str(o, "status"));
        goto out;
    }
    printf("\nagora demo: tour done: order %s CONFIRMED (%s), order %s CANCELLED "
           "(card declined)\n",
           order,
           tour_money(m, sizeof m, tour_num(tour_data(&confirmed), "totalCents"),
                      tour_str(tour_data(&confirmed), "currency")),
           tour_str(o, "id"));
    rc = 0;
out:
    tour_answer_release(&a);
    tour_answer_release(&confirmed);
    tour_answer_release(&declined);
    fflush(stdout);
    ag_free(t);
    return rc;
}
