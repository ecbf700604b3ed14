/*
 * events.c — agora-analytics' read model: what it consumes and how each
 * event folds into the projections (docs/events.md, schema/001_analytics.sql).
 *
 * Consumed (every one is first written to the journal, in the transaction
 * that records it in the inbox, then folded by an_apply):
 *   order.created|confirmed|shipped|delivered|cancelled  (the order data)
 *       a_orders: the order with the furthest status its events reached
 *       (the event's type names the status), placed at its earliest event;
 *       a_order_items: its lines. order.created marks the user active.
 *   cart.item_added {userId, productId, quantity}
 *       a_carts: the user has a cart; active.
 *   user.registered {userId}   a_users; active.
 *   user.logged_in {userId}    active.
 *   room.created|updated {roomId, name, isPrivate, version}
 *       a_rooms: the name of the highest version.
 *   room.deleted {roomId}      a_rooms.deleted.
 *   message.sent {roomId, userId}
 *       a_rooms.messages and last_message_at; a_room_senders; active.
 *   message.deleted {roomId}   a_rooms.messages_deleted.
 *
 * Why every fold is order-independent: the bus keeps one aggregate's events
 * in order but not the order between aggregates, a redelivery may come
 * after later events, and a rebuild folds the journal in time order. With
 * counts, set inserts, first/last times and a status rank that only rises,
 * the projections are the same function of the set of events however they
 * arrive, so a rebuild ends identical to the live read model.
 *
 * Rebuild (an_rebuild): one transaction that deletes every a_* row and
 * folds the journal again, in pages of REBUILD_PAGE by (time, id). The
 * journal, not the broker, is what is replayed: the read model's first
 * fill comes from the broker (a new durable consumer on JetStream starts
 * at the first event of stream AGORA; a RabbitMQ queue from its
 * declaration), and from then on a rebuild needs neither the broker's
 * retention nor a second consumer.
 */
#include <string.h>

#include "analytics.h"

#define REBUILD_PAGE 500
#define ID_MAX 128

static const char *const k_projections[] = {
    "a_orders", "a_order_items", "a_carts", "a_users", "a_activity", "a_rooms", "a_room_senders",
};

/* ---- Reading event data ------------------------------------------------------------ */

static const char *data_str(const json_t *data, const char *key, const char *type, char *why,
                            size_t n)
{
    const char *s = json_string_value(json_object_get(data, key));
    if (!s || !*s || strlen(s) > ID_MAX) {
        snprintf(why, n, "%s without a usable %s", type, key);
        return NULL;
    }
    return s;
}

static bool data_int(const json_t *data, const char *key, int64_t min, int64_t *out)
{
    const json_t *v = json_object_get(data, key);
    if (!json_is_integer(v) || json_integer_value(v) < min) return false;
    *out = json_integer_value(v);
    return true;
}

/* The UTC day of an RFC 3339 time: its first ten characters. */
static bool day_of(const char *time, char day[11])
{
    if (!time || strlen(time) < 10 || time[4] != '-' || time[7] != '-') return false;
    memcpy(day, time, 10);
    day[10] = '\0';
    return true;
}

static int fail_db(ag_db *db, int rc, const char *what, char *why, size_t n)
{
    snprintf(why, n, "%s: %s", what, ag_db_error(db));
    return rc;
}

/* ---- Folds ------------------------------------------------------------------------- */

static int active(ag_db *db, const char *user, const char *time, char *why, size_t n)
{
    char day[11];
    if (!day_of(time, day)) {
        snprintf(why, n, "an event time that is not RFC 3339");
        return AG_EINVAL;
    }
    ag_val p[] = {AG_VTEXT(day), AG_VTEXT(user)};
    int rc = ag_db_exec(db,
                        "INSERT INTO a_activity (day, user_id) VALUES ($1, $2) "
                        "ON CONFLICT (day, user_id) DO NOTHING",
                        p, 2, NULL);
    return rc < 0 ? fail_db(db, rc, "activity", why, n) : 0;
}

/* The status an order event's type names, and its rank (which only rises). */
static int order_status(const char *type, const char **status)
{
    static const struct {
        const char *type, *status;
        int rank;
    } k[] = {
        {"order.created", "PENDING", 0},     {"order.confirmed", "CONFIRMED", 1},
        {"order.shipped", "SHIPPED", 2},     {"order.delivered", "DELIVERED", 3},
        {"order.cancelled", "CANCELLED", 4},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (strcmp(type, k[i].type) == 0) {
            *status = k[i].status;
            return k[i].rank;
        }
    return -1;
}

static int fold_order(ag_db *db, const char *type, const char *time, const json_t *d, char *why,
                      size_t n)
{
    const char *status;
    int rank = order_status(type, &status);
    if (rank < 0) return 0; /* order.* types the read model does not use */
    const char *order = data_str(d, "orderId", type, why, n);
    const char *user = order ? data_str(d, "userId", type, why, n) : NULL;
    const char *currency = user ? data_str(d, "currency", type, why, n) : NULL;
    if (!currency) return AG_EINVAL;
    int64_t total;
    const json_t *items = json_object_get(d, "items");
    if (!data_int(d, "totalCents", 0, &total) || !json_is_array(items)) {
        snprintf(why, n, "%s without totalCents and items", type);
        return AG_EINVAL;
    }
    ag_val p[] = {AG_VTEXT(order), AG_VTEXT(user),     AG_VTEXT(status),
                  AG_VINT(rank),   AG_VINT(total),     AG_VTEXT(currency),
                  AG_VINT(json_is_true(json_object_get(d, "fromCart")) ? 1 : 0), AG_VTEXT(time)};
    int rc = ag_db_exec(
        db,
        "INSERT INTO a_orders (order_id, user_id, status, status_rank, total_cents, currency, "
        "from_cart, placed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
        "ON CONFLICT (order_id) DO UPDATE SET "
        "status = CASE WHEN excluded.status_rank > a_orders.status_rank "
        "THEN excluded.status ELSE a_orders.status END, "
        "status_rank = CASE WHEN excluded.status_rank > a_orders.status_rank "
        "THEN excluded.status_rank ELSE a_orders.status_rank END, "
        "placed_at = CASE WHEN excluded.placed_at < a_orders.placed_at "
        "THEN excluded.placed_at ELSE a_orders.placed_at END",
        p, 8, NULL);
    if (rc < 0) return fail_db(db, rc, "order", why, n);
    size_t i;
    const json_t *it;
    json_array_foreach(items, i, it)
    {
        const char *product = data_str(it, "productId", type, why, n);
        const char *name = json_string_value(json_object_get(it, "name"));
        int64_t qty, unit;
        if (!product || !data_int(it, "quantity", 1, &qty) ||
            !data_int(it, "unitPriceCents", 0, &unit)) {
            snprintf(why, n, "%s with a line that is not {productId, quantity, unitPriceCents}",
                     type);
            return AG_EINVAL;
        }
        ag_val q[] = {AG_VTEXT(order), AG_VTEXT(product), AG_VTEXT(name ? name : ""),
                      AG_VINT(qty), AG_VINT(unit)};
        rc = ag_db_exec(db,
                        "INSERT INTO a_order_items (order_id, product_id, name, quantity, "
                        "unit_price_cents) VALUES ($1, $2, $3, $4, $5) "
                        "ON CONFLICT (order_id, product_id) DO NOTHING",
                        q, 5, NULL);
        if (rc < 0) return fail_db(db, rc, "order line", why, n);
    }
    return rank == 0 ? active(db, user, time, why, n) : 0;
}

static int fold_cart(ag_db *db, const char *type, const char *time, const json_t *d, char *why,
                     size_t n)
{
    if (strcmp(type, "cart.item_added") != 0) return 0;
    const char *user = data_str(d, "userId", type, why, n);
    if (!user) return AG_EINVAL;
    int64_t qty;
    if (!data_int(d, "quantity", 1, &qty)) {
        snprintf(why, n, "%s without a quantity", type);
        return AG_EINVAL;
    }
    ag_val p[] = {AG_VTEXT(user), AG_VTEXT(time), AG_VINT(qty)};
    int rc = ag_db_exec(db,
                        "INSERT INTO a_carts (user_id, first_at, items_added) VALUES ($1, $2, $3) "
                        "ON CONFLICT (user_id) DO UPDATE SET "
                        "first_at = CASE WHEN excluded.first_at < a_carts.first_at "
                        "THEN excluded.first_at ELSE a_carts.first_at END, "
                        "items_added = a_carts.items_added + excluded.items_added",
                        p, 3, NULL);
    if (rc < 0) return fail_db(db, rc, "cart", why, n);
    return active(db, user, time, why, n);
}

static int fold_user(ag_db *db, const char *type, const char *time, const json_t *d, char *why,
                     size_t n)
{
    bool registered = strcmp(type, "user.registered") == 0;
    if (!registered && strcmp(type, "user.logged_in") != 0) return 0;
    const char *user = data_str(d, "userId", type, why, n);
    if (!user) return AG_EINVAL;
    if (registered) {
        ag_val p[] = {AG_VTEXT(user), AG_VTEXT(time)};
        int rc = ag_db_exec(db,
                            "INSERT INTO a_users (user_id, registered_at) VALUES ($1, $2) "
                            "ON CONFLICT (user_id) DO NOTHING",
                            p, 2, NULL);
        if (rc < 0) return fail_db(db, rc, "user", why, n);
    }
    return active(db, user, time, why, n);
}

static int fold_room(ag_db *db, const char *type, const json_t *d, char *why, size_t n)
{
    const char *room = data_str(d, "roomId", type, why, n);
    if (!room) return AG_EINVAL;
    int rc;
    if (strcmp(type, "room.deleted") == 0) {
        ag_val p[] = {AG_VTEXT(room)};
        rc = ag_db_exec(db,
                        "INSERT INTO a_rooms (room_id, deleted) VALUES ($1, 1) "
                        "ON CONFLICT (room_id) DO UPDATE SET deleted = 1",
                        p, 1, NULL);
    } else if (strcmp(type, "room.created") == 0 || strcmp(type, "room.updated") == 0) {
        const char *name = json_string_value(json_object_get(d, "name"));
        int64_t version;
        if (!name || !data_int(d, "version", 0, &version)) {
            snprintf(why, n, "%s without a name and a version", type);
            return AG_EINVAL;
        }
        ag_val p[] = {AG_VTEXT(room), AG_VTEXT(name), AG_VINT(version),
                      AG_VINT(json_is_true(json_object_get(d, "isPrivate")) ? 1 : 0)};
        rc = ag_db_exec(db,
                        "INSERT INTO a_rooms (room_id, name, version, is_private) "
                        "VALUES ($1, $2, $3, $4) ON CONFLICT (room_id) DO UPDATE SET "
                        "name = CASE WHEN excluded.version > a_rooms.version "
                        "THEN excluded.name ELSE a_rooms.name END, "
                        "is_private = CASE WHEN excluded.version > a_rooms.version "
                        "THEN excluded.is_private ELSE a_rooms.is_private END, "
                        "version = CASE WHEN excluded.version > a_rooms.version "
                        "THEN excluded.version ELSE a_rooms.version END",
                        p, 4, NULL);
    } else {
        return 0;
    }
    return rc < 0 ? fail_db(db, rc, "room", why, n) : 0;
}

static int fold_message(ag_db *db, const char *type, const char *time, const json_t *d,
                        char *why, size_t n)
{
    bool sent = strcmp(type, "message.sent") == 0;
    if (!sent && strcmp(type, "message.deleted") != 0) return 0;
    const char *room = data_str(d, "roomId", type, why, n);
    const char *user = room ? data_str(d, "userId", type, why, n) : NULL;
    if (!user) return AG_EINVAL;
    int rc;
    if (!sent) {
        ag_val p[] = {AG_VTEXT(room)};
        rc = ag_db_exec(db,
                        "INSERT INTO a_rooms (room_id, messages_deleted) VALUES ($1, 1) "
                        "ON CONFLICT (room_id) DO UPDATE SET "
                        "messages_deleted = a_rooms.messages_deleted + 1",
                        p, 1, NULL);
        return rc < 0 ? fail_db(db, rc, "room", why, n) : 0;
    }
    ag_val p[] = {AG_VTEXT(room), AG_VTEXT(time)};
    rc = ag_db_exec(db,
                    "INSERT INTO a_rooms (room_id, messages, last_message_at) VALUES ($1, 1, $2) "
                    "ON CONFLICT (room_id) DO UPDATE SET messages = a_rooms.messages + 1, "
                    "last_message_at = CASE WHEN a_rooms.last_message_at IS NULL "
                    "OR excluded.last_message_at > a_rooms.last_message_at "
                    "THEN excluded.last_message_at ELSE a_rooms.last_message_at END",
                    p, 2, NULL);
    if (rc < 0) return fail_db(db, rc, "room", why, n);
    ag_val q[] = {AG_VTEXT(room), AG_VTEXT(user)};
    rc = ag_db_exec(db,
                    "INSERT INTO a_room_senders (room_id, user_id) VALUES ($1, $2) "
                    "ON CONFLICT (room_id, user_id) DO NOTHING",
                    q, 2, NULL);
    if (rc < 0) return fail_db(db, rc, "room sender", why, n);
    return active(db, user, time, why, n);
}

int an_apply(ag_db *db, const char *type, const char *time, const json_t *data, char *why,
             size_t n)
{
    char day[11];
    if (!day_of(time, day)) {
        snprintf(why, n, "%s with a time that is not RFC 3339", type);
        return AG_EINVAL;
    }
    if (!json_is_object(data)) {
        snprintf(why, n, "%s whose data is not an object", type);
        return AG_EINVAL;
    }
    if (strncmp(type, "order.", 6) == 0) return fold_order(db, type, time, data, why, n);
    if (strncmp(type, "cart.", 5) == 0) return fold_cart(db, type, time, data, why, n);
    if (strncmp(type, "user.", 5) == 0) return fold_user(db, type, time, data, why, n);
    if (strncmp(type, "room.", 5) == 0) return fold_room(db, type, data, why, n);
    if (strncmp(type, "message.", 8) == 0) return fold_message(db, type, time, data, why, n);
    return 0;
}

/* ---- The consumer ------------------------------------------------------------------ */

static int on_event(ag_db *db, const ag_event *ev, void *ud, char *why, size_t n)
{
    (void)ud;
    char *text = json_dumps(ev->data, JSON_COMPACT);
    if (!text) {
        snprintf(why, n, "%s whose data cannot be written", ev->type);
        return AG_EINVAL;
    }
    ag_val p[] = {AG_VTEXT(ev->id), AG_VTEXT(ev->type), AG_VTEXT(ev->subject),
                  AG_VTEXT(ev->time), AG_VTEXT(text)};
    int rc = ev->time ? ag_db_exec(db,
                                   "INSERT INTO journal (id, type, subject, time, data) "
                                   "VALUES ($1, $2, $3, $4, $5)",
                                   p, 5, NULL)
                      : AG_EINVAL;
    ag_free(text);
    if (rc == AG_EINVAL && !ev->time) {
        snprintf(why, n, "%s without a time", ev->type);
        return rc;
    }
    if (rc < 0) return fail_db(db, rc, "journal", why, n);
    return an_apply(db, ev->type, ev->time, ev->data, why, n);
}

int analytics_subscribe(ag_bus *bus)
{
    static const char *const k_patterns[] = {
        "order.*",        "cart.item_added", "user.registered", "user.logged_in",
        "room.*",         "message.*",
    };
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof k_patterns / sizeof k_patterns[0]; i++)
        rc = ag_bus_subscribe(bus, k_patterns[i], on_event, NULL);
    return rc;
}

/* ---- Rebuild ----------------------------------------------------------------------- */

typedef struct rebuild_ctx {
    int64_t events;
} rebuild_ctx;

typedef struct journal_row {
    char type[64];
    char time[40];
    char id[ID_MAX + 1];
    json_t *data;
} journal_row;

static int rebuild_tx(ag_db *db, void *ud)
{
    rebuild_ctx *c = ud;
    c->events = 0;
    char sql[80];
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof k_projections / sizeof k_projections[0]; i++) {
        snprintf(sql, sizeof sql, "DELETE FROM %s", k_projections[i]);
        rc = ag_db_exec(db, sql, NULL, 0, NULL);
    }
    if (rc < 0) return rc;
    /* Pages by (time, id): a page is read whole before it is folded, so no
     * statement is open while the fold writes. */
    char after_time[40] = "", after_id[ID_MAX + 1] = "";
    journal_row *page = ag_calloc(REBUILD_PAGE, sizeof *page);
    for (;;) {
        ag_val p[] = {AG_VTEXT(after_time), AG_VTEXT(after_id), AG_VINT(REBUILD_PAGE)};
        ag_rows *rows;
        rc = ag_db_query(db,
                         "SELECT type, time, id, data FROM journal "
                         "WHERE time > $1 OR (time = $1 AND id > $2) "
                         "ORDER BY time, id LIMIT $3",
                         p, 3, &rows);
        if (rc < 0) break;
        size_t got = 0;
        while (got < REBUILD_PAGE && (rc = ag_rows_next(rows)) > 0) {
            journal_row *r = &page[got++];
            ag_rows_copy(rows, 0, r->type, sizeof r->type);
            ag_rows_copy(rows, 1, r->time, sizeof r->time);
            ag_rows_copy(rows, 2, r->id, sizeof r->id);
            r->data = json_loads(ag_rows_text(rows, 3), 0, NULL);
        }
        ag_rows_free(rows);
        if (rc < 0) break;
        char why[256] = "";
        for (size_t i = 0; i < got && rc >= 0; i++) {
            rc = an_apply(db, page[i].type, page[i].time, page[i].data, why, sizeof why);
            if (rc < 0)
                ag_error("a journal event no longer folds", AG_FS("id", page[i].id),
                         AG_FS("type", page[i].type), AG_FS("reason", why));
        }
        for (size_t i = 0; i < got; i++)
            json_decref(page[i].data);
        if (rc < 0 || got == 0) break;
        c->events += (int64_t)got;
        snprintf(after_time, sizeof after_time, "%s", page[got - 1].time);
        snprintf(after_id, sizeof after_id, "%s", page[got - 1].id);
        if (got < REBUILD_PAGE) break;
    }
    ag_free(page);
    return rc < 0 ? rc : 0;
}

int an_rebuild(ag_store *s, int64_t *events)
{
    rebuild_ctx c = {0};
    int rc = ag_store_tx(s, rebuild_tx, &c);
    *events = c.events;
    return rc;
}
