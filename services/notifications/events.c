/*
 * events.c — what agora-notifications consumes (docs/events.md) and how
 * each event becomes notifications, mail and pushes.
 *
 *   user.registered   projection; a welcome notification and a welcome mail
 *   user.updated      projection (e-mail address, role)
 *   user.deleted      tombstone; the user's notifications and pending mail go,
 *                     and later order events for them notify nobody
 *   order.created     "Order placed"       to data.userId
 *   order.confirmed   "Order confirmed"    to data.userId, with a mail
 *   order.cancelled   "Order cancelled"    to data.userId (with data.reason)
 *   order.shipped     "Order shipped"      to data.userId, with a mail
 *   order.delivered   "Order delivered"    to data.userId
 *   payment.failed    "Payment failed"     to data.userId when the event
 *                                          has one; skipped (logged) without
 *   inventory.low_stock "Low stock"        to every known admin
 *
 * Each handler runs in the bus's transaction, after the event id went into
 * the inbox (a redelivery never gets here); notifications are unique per
 * (event id, recipient) as well, and so are mails. Pushes and mail sending
 * must wait for the commit: the handler collects what it inserted in
 * `g_pending` and registers one after-commit hook that hands it to the hub
 * and wakes the mailer. Handlers run one at a time on the consumer thread,
 * so g_pending has one user; it is emptied when a handler starts (a retried
 * or rolled-back attempt leaves nothing behind: a rollback drops the hook).
 */
#include <string.h>

#include "hub.h"

/* ---- What the current handler inserted -------------------------------------------------- */

static struct {
    nt_item *items;
    char **users;
    size_t n, cap;
    bool mail;   /* a mail was queued */
    bool hooked; /* the after-commit hook is registered */
} g_pending;

static void pending_reset(void)
{
    for (size_t i = 0; i < g_pending.n; i++) {
        ag_free(g_pending.items[i].json);
        ag_free(g_pending.users[i]);
    }
    g_pending.n = 0;
    g_pending.mail = false;
    g_pending.hooked = false;
}

static void after_commit(void *ud)
{
    hub_publish(g_pending.items, (const char *const *)g_pending.users, g_pending.n);
    if (g_pending.mail) nt_mailer_wake();
    pending_reset();
}

static void hook(ag_db *db)
{
    if (g_pending.hooked) return;
    g_pending.hooked = true;
    ag_db_after_commit(db, after_commit, NULL);
}

void nt_push_begin(void)
{
    pending_reset();
}

/* `s` cut to fit `out` (n bytes with the NUL) on a character boundary: a
 * cut inside a UTF-8 sequence would make text that JSON cannot carry, and
 * the notification could not be served. */
static const char *clip(char *out, size_t n, const char *s)
{
    size_t len = strlen(s);
    if (len >= n) {
        len = n - 1;
        while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80)
            len--;
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return out;
}

void nt_push_after_commit(ag_db *db, int64_t id, const char *kind, char *json, const char *user)
{
    if (g_pending.n == g_pending.cap) {
        g_pending.cap = g_pending.cap ? g_pending.cap * 2 : 8;
        g_pending.items = ag_realloc(g_pending.items, g_pending.cap * sizeof *g_pending.items);
        g_pending.users = ag_realloc(g_pending.users, g_pending.cap * sizeof *g_pending.users);
    }
    nt_item *it = &g_pending.items[g_pending.n];
    *it = (nt_item){.id = id, .json = json, .len = strlen(json)};
    snprintf(it->kind, sizeof it->kind, "%s", kind);
    g_pending.users[g_pending.n] = ag_strdup(user);
    g_pending.n++;
    hook(db);
}

/* Stores one notification and remembers it for the push. */
static int notify(ag_db *db, const ag_event *ev, const char *user, const char *title,
                  const char *message, json_t *data)
{
    nt_new n = {.user_id = user,
                .event_id = ev->id,
                .type = ev->type,
                .title = title,
                .message = message,
                .data = data};
    int64_t id;
    char *json;
    int rc = nt_insert(db, &n, &id, &json);
    if (rc < 0 || id == 0) return rc; /* an error, or this event had notified them */
    nt_push_after_commit(db, id, "notification", json, user);
    return 0;
}

static int mail(ag_db *db, const ag_event *ev, const char *user, const char *to,
                const char *subject, const char *body)
{
    if (!to || !*to) {
        ag_info("no e-mail address known for the user: mail skipped", AG_FS("userId", user),
                AG_FS("event", ev->type), AG_FS("eventId", ev->id));
        return 0;
    }
    bool queued = false;
    int rc = nt_mail_queue(db, ev->id, user, to, subject, body, &queued);
    if (rc == 0 && queued) {
        g_pending.mail = true;
        hook(db);
    }
    return rc;
}

/* ---- Helpers ----------------------------------------------------------------------------- */

static const char *str(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s && *s ? s : NULL;
}

/* A new reference to obj[key], or null. */
static json_t *field(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return v ? json_incref(v) : json_null();
}

static int bad(const ag_event *ev, char *why, size_t n, const char *what)
{
    snprintf(why, n, "%s without %s", ev->type, what);
    return AG_EINVAL;
}

static int db_fail(ag_db *db, char *why, size_t n, int rc)
{
    snprintf(why, n, "store: %s", ag_db_error(db));
    return rc;
}

/* "12.50 USD" from cents. */
static void money(char *out, size_t n, json_t *cents, const char *currency)
{
    if (!json_is_integer(cents)) {
        snprintf(out, n, "?");
        return;
    }
    long long c = json_integer_value(cents);
    snprintf(out, n, "%s%lld.%02lld %s", c < 0 ? "-" : "", (c < 0 ? -c : c) / 100,
             (c < 0 ? -c : c) % 100, currency ? currency : "");
}

/* The first 8 characters of an order id, for people. */
static void short_id(char out[16], const char *id)
{
    snprintf(out, 16, "%.8s", id);
}

/* ---- Users ------------------------------------------------------------------------------- */

static int user_from_event(const ag_event *ev, nt_user *u, char *why, size_t n)
{
    memset(u, 0, sizeof *u);
    const char *id = str(ev->data, "userId");
    if (!id || strlen(id) >= sizeof u->id) return bad(ev, why, n, "a usable userId");
    snprintf(u->id, sizeof u->id, "%s", id);
    snprintf(u->username, sizeof u->username, "%s",
             str(ev->data, "username") ? str(ev->data, "username") : "");
    snprintf(u->email, sizeof u->email, "%s", str(ev->data, "email") ? str(ev->data, "email") : "");
    snprintf(u->role, sizeof u->role, "%s",
             str(ev->data, "role") ? str(ev->data, "role") : "customer");
    return 0;
}

static int on_user_registered(ag_db *db, const ag_event *ev, void *ud, char *why, size_t n)
{
    pending_reset();
    nt_user u;
    int rc = user_from_event(ev, &u, why, n);
    if (rc < 0) return rc;
    if ((rc = nt_user_upsert(db, &u)) < 0) return db_fail(db, why, n, rc);
    const char *name = u.username[0] ? u.username : "there";
    char msg[256], body[1024];
    snprintf(msg, sizeof msg, "Hi %s, thanks for joining Agora.", name);
    json_t *data = json_pack("{s:s, s:s}", "userId", u.id, "username", u.username);
    rc = notify(db, ev, u.id, "Welcome to Agora", msg, data);
    json_decref(data);
    if (rc < 0) return db_fail(db, why, n, rc);
    snprintf(body, sizeof body,
             "Hi %s,\n\nwelcome to Agora! Your account is ready: browse the shop, fill a cart\n"
             "and check out, or join a chat room.\n\nThe Agora team\n",
             name);
    rc = mail(db, ev, u.id, u.email, "Welcome to Agora", body);
    return rc < 0 ? db_fail(db, why, n, rc) : 0;
}

static int on_user_updated(ag_db *db, const ag_event *ev, void *ud, char *why, size_t n)
{
    pending_reset();
    nt_user u;
    int rc = user_from_event(ev, &u, why, n);
    if (rc < 0) return rc;
    rc = nt_user_upsert(db, &u);
    return rc < 0 ? db_fail(db, why, n, rc) : 0;
}

static int on_user_deleted(ag_db *db, const ag_event *ev, void *ud, char *why, size_t n)
{
    pending_reset();
    const char *id = str(ev->data, "userId");
    if (!id) id = ev->subject;
    if (!id || strlen(id) >= NT_USER_MAX) return bad(ev, why, n, "a usable userId");
    int rc = nt_user_delete(db, id);
    return rc < 0 ? db_fail(db, why, n, rc) : 0;
}

/* ---- Orders ------------------------------------------------------------------------------- */

typedef struct order_text {
    const char *type, *title, *verb; /* "Your order <id> (<total>) <verb>." */
    const char *subject;             /* a mail's subject, or NULL: no mail */
} order_text;

static const order_text k_orders[] = {
    {"order.created", "Order placed", "has been placed", NULL},
    {"order.confirmed", "Order confirmed", "is confirmed", "Your Agora order is confirmed"},
    {"order.cancelled", "Order cancelled", "was cancelled", NULL},
    {"order.shipped", "Order shipped", "is on its way", "Your Agora order has shipped"},
    {"order.delivered", "Order delivered", "was delivered", NULL},
};

static void order_mail_body(ag_buf *b, const order_text *t, json_t *data, const char *name,
                            const char *order, const char *total)
{
    ag_buf_printf(b, "Hi %s,\n\n", name);
    if (strcmp(t->type, "order.confirmed") == 0)
        ag_buf_printf(b, "thank you for your order %s. It is confirmed and paid:\n\n", order);
    else
        ag_buf_printf(b, "your order %s has shipped:\n\n", order);
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(data, "items"), i, it)
    {
        char unit[48];
        money(unit, sizeof unit, json_object_get(it, "unitPriceCents"), str(data, "currency"));
        const char *nm = str(it, "name") ? str(it, "name") : str(it, "productId");
        ag_buf_printf(b, "  %lld x %.80s  %s\n",
                      (long long)json_integer_value(json_object_get(it, "quantity")),
                      nm ? nm : "item", unit);
    }
    ag_buf_printf(b, "\nTotal: %s\n\nThe Agora team\n", total);
}

static int on_order(ag_db *db, const ag_event *ev, void *ud, char *why, size_t n)
{
    const order_text *t = ud;
    pending_reset();
    const char *order = str(ev->data, "orderId");
    if (!order) order = ev->subject;
    const char *user = str(ev->data, "userId");
    if (!order) return bad(ev, why, n, "orderId");
    if (!user || strlen(user) >= NT_USER_MAX) return bad(ev, why, n, "a usable userId");
    nt_user u;
    int rc = nt_user_get(db, user, &u);
    if (rc < 0 && rc != AG_ENOTFOUND) return db_fail(db, why, n, rc);
    bool known = rc == 0;
    if (known && u.deleted) {
        ag_info("order event for a deleted user: no notification", AG_FS("userId", user),
                AG_FS("event", ev->type));
        return 0;
    }
    char sid[16], total[48], msg[512];
    short_id(sid, order);
    money(total, sizeof total, json_object_get(ev->data, "totalCents"), str(ev->data, "currency"));
    snprintf(msg, sizeof msg, "Your order %s (%s) %s.", sid, total, t->verb);
    const char *reason = str(ev->data, "reason");
    if (reason && strcmp(t->type, "order.cancelled") == 0) {
        char cut[204];
        size_t l = strlen(msg);
        snprintf(msg + l - 1, sizeof msg - l + 1, ": %s.", clip(cut, sizeof cut, reason));
    }
    json_t *data = json_pack("{s:s, s:o, s:o, s:o, s:o, s:o}", "orderId", order, "status",
                             field(ev->data, "status"), "totalCents", field(ev->data, "totalCents"),
                             "currency", field(ev->data, "currency"), "reason",
                             field(ev->data, "reason"), "items", field(ev->data, "items"));
    rc = notify(db, ev, user, t->title, msg, data);
    json_decref(data);
    if (rc < 0) return db_fail(db, why, n, rc);
    if (!t->subject) return 0;
    if (!known) {
        ag_info("order mail skipped: the user is not known here", AG_FS("userId", user),
                AG_FS("event", ev->type));
        return 0;
    }
    ag_buf body;
    ag_buf_init(&body, 0);
    order_mail_body(&body, t, ev->data, u.username[0] ? u.username : "there", order, total);
    rc = mail(db, ev, user, u.email, t->subject, body.data);
    ag_buf_release(&body);
    return rc < 0 ? db_fail(db, why, n, rc) : 0;
}

/* ---- Payments and stock -------------------------------------------------------------------- */

static int on_payment_failed(ag_db *db, const ag_event *ev, void *ud, char *why, size_t n)
{
    pending_reset();
    const char *order = str(ev->data, "orderId");
    const char *user = str(ev->data, "userId");
    if (!user) {
        ag_info("payment.failed without a userId: no notification", AG_FS("eventId", ev->id),
                AG_FS("orderId", order ? order : ""));
        return 0;
    }
    if (strlen(user) >= NT_USER_MAX) return bad(ev, why, n, "a usable userId");
    char sid[16], total[48], msg[512];
    short_id(sid, order ? order : "?");
    money(total, sizeof total, json_object_get(ev->data, "amountCents"), str(ev->data, "currency"));
    const char *reason = str(ev->data, "failureMessage");
    char cut[204];
    snprintf(msg, sizeof msg, "The payment of %s for order %s did not go through%s%s.", total, sid,
             reason ? ": " : "", reason ? clip(cut, sizeof cut, reason) : "");
    int rc = notify(db, ev, user, "Payment failed", msg, ev->data);
    return rc < 0 ? db_fail(db, why, n, rc) : 0;
}

static int on_low_stock(ag_db *db, const ag_event *ev, void *ud, char *why, size_t n)
{
    pending_reset();
    const char *product = str(ev->data, "productId");
    if (!product) product = ev->subject;
    if (!product) return bad(ev, why, n, "productId");
    nt_user *admins;
    size_t na;
    int rc = nt_admins(db, &admins, &na);
    if (rc < 0) return db_fail(db, why, n, rc);
    if (na == 0)
        ag_warn("inventory.low_stock: no admin is known to notify", AG_FS("productId", product));
    char msg[512];
    snprintf(msg, sizeof msg, "Product %.64s is low on stock: %lld available (alert level %lld).",
             product, (long long)json_integer_value(json_object_get(ev->data, "available")),
             (long long)json_integer_value(json_object_get(ev->data, "lowStockLevel")));
    for (size_t i = 0; rc == 0 && i < na; i++)
        rc = notify(db, ev, admins[i].id, "Low stock", msg, ev->data);
    ag_free(admins);
    return rc < 0 ? db_fail(db, why, n, rc) : 0;
}

int nt_subscribe(ag_bus *bus)
{
    int rc = ag_bus_subscribe(bus, "user.registered", on_user_registered, NULL);
    if (rc == 0) rc = ag_bus_subscribe(bus, "user.updated", on_user_updated, NULL);
    if (rc == 0) rc = ag_bus_subscribe(bus, "user.deleted", on_user_deleted, NULL);
    for (size_t i = 0; rc == 0 && i < sizeof k_orders / sizeof *k_orders; i++)
        rc = ag_bus_subscribe(bus, k_orders[i].type, on_order, (void *)&k_orders[i]);
    if (rc == 0) rc = ag_bus_subscribe(bus, "payment.failed", on_payment_failed, NULL);
    if (rc == 0) rc = ag_bus_subscribe(bus, "inventory.low_stock", on_low_stock, NULL);
    if (rc == 0) rc = nt_chat_subscribe(bus);
    return rc;
}

void nt_events_free(void)
{
    pending_reset();
    ag_free(g_pending.items);
    ag_free(g_pending.users);
    g_pending.items = NULL;
    g_pending.users = NULL;
    g_pending.cap = 0;
}
