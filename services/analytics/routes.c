/*
 * routes.c — agora-analytics' HTTP API (services/analytics/README.md).
 * Every route is for admins (role admin in the token; 401 without a token,
 * 403 for anyone else), and every answer is computed from the read model
 * alone (events.c), never from another service's database.
 *
 *   GET  /v1/analytics/summary                   all of the below, in short
 *   GET  /v1/analytics/revenue?from=&to=          by day (UTC) and currency
 *   GET  /v1/analytics/orders                     orders by status
 *   GET  /v1/analytics/products/top?by=&limit=    by units or revenue
 *   GET  /v1/analytics/conversion                 carts -> orders -> confirmed
 *   GET  /v1/analytics/users/active?days=         active users per day
 *   GET  /v1/analytics/rooms?limit=               chat activity per room
 *   POST /v1/admin/analytics/rebuild              drop the projections, fold
 *                                                 the journal again
 *
 * Revenue, top products and "confirmed" count orders whose furthest status
 * is CONFIRMED, SHIPPED or DELIVERED (status_rank 1 to 3): an order
 * cancelled after its confirmation (refunded) no longer counts.
 */
#include <string.h>

#include "analytics.h"

#define KEPT "status_rank BETWEEN 1 AND 3"

/* ---- Queries (each appends to or fills a new JSON value) ---------------------------- */

static int revenue_json(ag_db *db, const char *from, const char *to, json_t **out)
{
    ag_val p[] = {AG_VTEXT(from), AG_VTEXT(to)};
    ag_rows *r;
    int rc = ag_db_query(db,
                         "SELECT substr(placed_at, 1, 10), currency, COUNT(*), SUM(total_cents) "
                         "FROM a_orders WHERE " KEPT " AND substr(placed_at, 1, 10) >= $1 "
                         "AND substr(placed_at, 1, 10) <= $2 GROUP BY 1, 2 ORDER BY 1, 2",
                         p, 2, &r);
    if (rc < 0) return rc;
    json_t *arr = json_array();
    while ((rc = ag_rows_next(r)) > 0)
        json_array_append_new(arr, json_pack("{s:s, s:s, s:I, s:I}", "day", ag_rows_text(r, 0),
                                             "currency", ag_rows_text(r, 1), "orders",
                                             (json_int_t)ag_rows_int(r, 2), "revenueCents",
                                             (json_int_t)ag_rows_int(r, 3)));
    ag_rows_free(r);
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

static int totals_json(ag_db *db, json_t **out)
{
    ag_rows *r;
    int rc = ag_db_query(db,
                         "SELECT currency, COUNT(*), SUM(total_cents) FROM a_orders WHERE " KEPT
                         " GROUP BY currency ORDER BY currency",
                         NULL, 0, &r);
    if (rc < 0) return rc;
    json_t *arr = json_array();
    while ((rc = ag_rows_next(r)) > 0)
        json_array_append_new(arr, json_pack("{s:s, s:I, s:I}", "currency", ag_rows_text(r, 0),
                                             "orders", (json_int_t)ag_rows_int(r, 1),
                                             "revenueCents", (json_int_t)ag_rows_int(r, 2)));
    ag_rows_free(r);
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

static int status_json(ag_db *db, json_t **out)
{
    static const char *const k_status[] = {"PENDING", "CONFIRMED", "SHIPPED", "DELIVERED",
                                           "CANCELLED"};
    ag_rows *r;
    int rc = ag_db_query(db, "SELECT status, COUNT(*) FROM a_orders GROUP BY status", NULL, 0, &r);
    if (rc < 0) return rc;
    json_t *by = json_object();
    for (size_t i = 0; i < sizeof k_status / sizeof k_status[0]; i++)
        json_object_set_new(by, k_status[i], json_integer(0));
    json_int_t total = 0;
    while ((rc = ag_rows_next(r)) > 0) {
        json_object_set_new(by, ag_rows_text(r, 0), json_integer(ag_rows_int(r, 1)));
        total += ag_rows_int(r, 1);
    }
    ag_rows_free(r);
    if (rc < 0) {
        json_decref(by);
        return rc;
    }
    *out = json_pack("{s:I, s:o}", "total", total, "byStatus", by);
    return 0;
}

static int top_json(ag_db *db, bool by_units, int64_t limit, json_t **out)
{
    ag_val p[] = {AG_VINT(limit)};
    ag_rows *r;
    int rc = ag_db_query(
        db,
        by_units ? "SELECT i.product_id, MAX(i.name), o.currency, SUM(i.quantity), "
                   "SUM(i.quantity * i.unit_price_cents) FROM a_order_items i "
                   "JOIN a_orders o ON o.order_id = i.order_id WHERE o." KEPT
                   " GROUP BY i.product_id, o.currency ORDER BY 4 DESC, 5 DESC, 1 LIMIT $1"
                 : "SELECT i.product_id, MAX(i.name), o.currency, SUM(i.quantity), "
                   "SUM(i.quantity * i.unit_price_cents) FROM a_order_items i "
                   "JOIN a_orders o ON o.order_id = i.order_id WHERE o." KEPT
                   " GROUP BY i.product_id, o.currency ORDER BY 5 DESC, 4 DESC, 1 LIMIT $1",
        p, 1, &r);
    if (rc < 0) return rc;
    json_t *arr = json_array();
    while ((rc = ag_rows_next(r)) > 0)
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:I, s:I}", "productId",
                                             ag_rows_text(r, 0), "name", ag_rows_text(r, 1),
                                             "currency", ag_rows_text(r, 2), "units",
                                             (json_int_t)ag_rows_int(r, 3), "revenueCents",
                                             (json_int_t)ag_rows_int(r, 4)));
    ag_rows_free(r);
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

static double ratio(int64_t a, int64_t b)
{
    return b > 0 ? (double)(a * 10000 / b) / 10000.0 : 0.0;
}

static int conversion_json(ag_db *db, json_t **out)
{
    static const char *const k_sql[] = {
        "SELECT COUNT(*) FROM a_carts",
        "SELECT COUNT(*) FROM a_carts c WHERE EXISTS "
        "(SELECT 1 FROM a_orders o WHERE o.user_id = c.user_id)",
        "SELECT COUNT(*) FROM a_carts c WHERE EXISTS "
        "(SELECT 1 FROM a_orders o WHERE o.user_id = c.user_id AND o." KEPT ")",
        "SELECT COUNT(*) FROM a_orders",
        "SELECT COUNT(*) FROM a_orders WHERE " KEPT,
    };
    int64_t v[5];
    for (size_t i = 0; i < 5; i++) {
        int rc = ag_db_query_int(db, k_sql[i], NULL, 0, &v[i]);
        if (rc < 0) return rc;
    }
    *out = json_pack("{s:I, s:I, s:I, s:I, s:I, s:f, s:f}", "carts", (json_int_t)v[0],
                     "cartsOrdered", (json_int_t)v[1], "cartsConfirmed", (json_int_t)v[2],
                     "orders", (json_int_t)v[3], "confirmed", (json_int_t)v[4], "cartToOrder",
                     ratio(v[1], v[0]), "orderToConfirmed", ratio(v[4], v[3]));
    return 0;
}

/* The first day (UTC, YYYY-MM-DD) of a window of `days` ending today. */
static void window_start(int64_t days, char day[11])
{
    char t[32];
    ag_time_rfc3339(t, sizeof t, ag_wall_ms() - (uint64_t)(days - 1) * 86400000u);
    memcpy(day, t, 10);
    day[10] = '\0';
}

static int active_json(ag_db *db, int64_t days, json_t **out)
{
    char since[11];
    window_start(days, since);
    ag_val p[] = {AG_VTEXT(since)};
    int64_t total, registered;
    int rc = ag_db_query_int(db, "SELECT COUNT(DISTINCT user_id) FROM a_activity WHERE day >= $1",
                             p, 1, &total);
    if (rc == 0) rc = ag_db_query_int(db, "SELECT COUNT(*) FROM a_users", NULL, 0, &registered);
    ag_rows *r;
    if (rc == 0)
        rc = ag_db_query(db,
                         "SELECT day, COUNT(*) FROM a_activity WHERE day >= $1 "
                         "GROUP BY day ORDER BY day",
                         p, 1, &r);
    if (rc < 0) return rc;
    json_t *arr = json_array();
    while ((rc = ag_rows_next(r)) > 0)
        json_array_append_new(arr, json_pack("{s:s, s:I}", "day", ag_rows_text(r, 0), "users",
                                             (json_int_t)ag_rows_int(r, 1)));
    ag_rows_free(r);
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = json_pack("{s:I, s:s, s:I, s:I, s:o}", "days", (json_int_t)days, "since", since,
                     "activeUsers", (json_int_t)total, "registered", (json_int_t)registered,
                     "byDay", arr);
    return 0;
}

static int rooms_json(ag_db *db, int64_t limit, json_t **out)
{
    ag_val p[] = {AG_VINT(limit)};
    ag_rows *r;
    int rc = ag_db_query(db,
                         "SELECT r.room_id, r.name, r.is_private, r.deleted, r.messages, "
                         "r.messages_deleted, r.last_message_at, "
                         "(SELECT COUNT(*) FROM a_room_senders s WHERE s.room_id = r.room_id) "
                         "FROM a_rooms r ORDER BY r.messages DESC, r.room_id LIMIT $1",
                         p, 1, &r);
    if (rc < 0) return rc;
    json_t *arr = json_array();
    while ((rc = ag_rows_next(r)) > 0) {
        const char *last = ag_rows_text(r, 6);
        json_array_append_new(
            arr, json_pack("{s:s, s:s, s:b, s:b, s:I, s:I, s:I, s:o}", "roomId",
                           ag_rows_text(r, 0), "name", ag_rows_text(r, 1), "isPrivate",
                           ag_rows_int(r, 2) != 0, "deleted", ag_rows_int(r, 3) != 0, "messages",
                           (json_int_t)ag_rows_int(r, 4), "messagesDeleted",
                           (json_int_t)ag_rows_int(r, 5), "senders",
                           (json_int_t)ag_rows_int(r, 7), "lastMessageAt",
                           last ? json_string(last) : json_null()));
    }
    ag_rows_free(r);
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

static int journal_json(ag_db *db, json_t **out)
{
    int64_t events;
    char last[40] = "";
    int rc = ag_db_query_int(db, "SELECT COUNT(*) FROM journal", NULL, 0, &events);
    if (rc == 0 && events > 0)
        rc = ag_db_query_text(db, "SELECT MAX(time) FROM journal", NULL, 0, last, sizeof last);
    if (rc < 0) return rc;
    *out = json_pack("{s:I, s:o}", "events", (json_int_t)events, "lastEventAt",
                     *last ? json_string(last) : json_null());
    return 0;
}

/* ---- Handlers ---------------------------------------------------------------------- */

/* An admin's read connection, or NULL after answering. */
static ag_db *admin_db(ag_http_req *req, ag_http_res *res)
{
    if (!ag_auth_caller_role(req, res, "admin")) return NULL;
    ag_db *db;
    int rc = ag_store_db(g_an.store, &db);
    if (rc < 0) {
        ag_res_internal(req, res, "read model unavailable", rc);
        return NULL;
    }
    return db;
}

static void answer(ag_http_req *req, ag_http_res *res, int rc, json_t *data)
{
    if (rc < 0) {
        json_decref(data);
        ag_res_internal(req, res, "analytics query failed", rc);
        return;
    }
    ag_res_ok(res, 200, data);
}

/* A YYYY-MM-DD day from the query, or `def`; false after recording why. */
static bool query_day(ag_validator *v, ag_http_req *req, const char *name, const char *def,
                      char out[11])
{
    const char *s = ag_req_query(req, name);
    if (!s) {
        snprintf(out, 11, "%s", def);
        return true;
    }
    bool ok = strlen(s) == 10 && s[4] == '-' && s[7] == '-';
    for (int i = 0; ok && i < 10; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9')) ok = false;
    if (!ok) {
        ag_v_fail(v, name, "%s must be a day as YYYY-MM-DD", name);
        return false;
    }
    memcpy(out, s, 11);
    return true;
}

static void get_revenue(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_db *db = admin_db(req, res);
    if (!db) return;
    ag_validator v;
    ag_v_init(&v);
    char from[11], to[11];
    query_day(&v, req, "from", "0000-00-00", from);
    query_day(&v, req, "to", "9999-12-31", to);
    if (!ag_v_passed(&v, res, NULL)) return;
    json_t *data = NULL;
    int rc = revenue_json(db, from, to, &data);
    answer(req, res, rc, data);
}

static void get_orders(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_db *db = admin_db(req, res);
    if (!db) return;
    json_t *data = NULL;
    int rc = status_json(db, &data);
    answer(req, res, rc, data);
}

static void get_top(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_db *db = admin_db(req, res);
    if (!db) return;
    ag_validator v;
    ag_v_init(&v);
    const char *by = ag_req_query(req, "by");
    if (by && strcmp(by, "units") != 0 && strcmp(by, "revenue") != 0)
        ag_v_fail(&v, "by", "by must be units or revenue");
    int64_t limit = ag_v_query_int(&v, req, "limit", 10, 1, 100);
    if (!ag_v_passed(&v, res, NULL)) return;
    json_t *data = NULL;
    int rc = top_json(db, by && strcmp(by, "units") == 0, limit, &data);
    answer(req, res, rc, data);
}

static void get_conversion(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_db *db = admin_db(req, res);
    if (!db) return;
    json_t *data = NULL;
    int rc = conversion_json(db, &data);
    answer(req, res, rc, data);
}

static void get_active(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_db *db = admin_db(req, res);
    if (!db) return;
    ag_validator v;
    ag_v_init(&v);
    int64_t days = ag_v_query_int(&v, req, "days", 30, 1, 366);
    if (!ag_v_passed(&v, res, NULL)) return;
    json_t *data = NULL;
    int rc = active_json(db, days, &data);
    answer(req, res, rc, data);
}

static void get_rooms(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_db *db = admin_db(req, res);
    if (!db) return;
    ag_validator v;
    ag_v_init(&v);
    int64_t limit = ag_v_query_int(&v, req, "limit", 20, 1, 100);
    if (!ag_v_passed(&v, res, NULL)) return;
    json_t *data = NULL;
    int rc = rooms_json(db, limit, &data);
    answer(req, res, rc, data);
}

static void get_summary(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_db *db = admin_db(req, res);
    if (!db) return;
    json_t *journal = NULL, *orders = NULL, *conv = NULL, *revenue = NULL, *today = NULL,
           *month = NULL, *top = NULL, *rooms = NULL;
    int rc = journal_json(db, &journal);
    if (rc == 0) rc = status_json(db, &orders);
    if (rc == 0) rc = conversion_json(db, &conv);
    if (rc == 0) rc = totals_json(db, &revenue);
    if (rc == 0) rc = active_json(db, 1, &today);
    if (rc == 0) rc = active_json(db, 30, &month);
    if (rc == 0) rc = top_json(db, false, 5, &top);
    if (rc == 0) rc = rooms_json(db, 5, &rooms);
    json_t *data = json_object();
    json_object_set_new(data, "journal", journal ? journal : json_null());
    json_object_set_new(data, "orders", orders ? orders : json_null());
    json_object_set_new(data, "conversion", conv ? conv : json_null());
    json_object_set_new(data, "revenue", revenue ? revenue : json_null());
    json_object_set_new(
        data, "activeUsers",
        json_pack("{s:O?, s:O?}", "today", json_object_get(today, "activeUsers"), "last30Days",
                  json_object_get(month, "activeUsers")));
    json_decref(today);
    json_decref(month);
    json_object_set_new(data, "topProducts", top ? top : json_null());
    json_object_set_new(data, "rooms", rooms ? rooms : json_null());
    answer(req, res, rc, data);
}

static void post_rebuild(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!ag_auth_caller_role(req, res, "admin")) return;
    uint64_t t0 = ag_now_ms();
    int64_t events = 0;
    int rc = an_rebuild(g_an.store, &events);
    if (ag_res_rc(req, res, rc, NULL, "rebuild failed")) return;
    uint64_t took = ag_now_ms() - t0;
    ag_info("read model rebuilt from the journal", AG_FI("events", events),
            AG_FI("tookMs", took));
    ag_res_ok(res, 200, json_pack("{s:I, s:I}", "events", (json_int_t)events, "tookMs",
                                  (json_int_t)took));
}

void analytics_routes(ag_router *r)
{
    ag_router_add(r, "GET", "/v1/analytics/summary", get_summary, NULL, 0);
    ag_router_add(r, "GET", "/v1/analytics/revenue", get_revenue, NULL, 0);
    ag_router_add(r, "GET", "/v1/analytics/orders", get_orders, NULL, 0);
    ag_router_add(r, "GET", "/v1/analytics/products/top", get_top, NULL, 0);
    ag_router_add(r, "GET", "/v1/analytics/conversion", get_conversion, NULL, 0);
    ag_router_add(r, "GET", "/v1/analytics/users/active", get_active, NULL, 0);
    ag_router_add(r, "GET", "/v1/analytics/rooms", get_rooms, NULL, 0);
    ag_router_add(r, "POST", "/v1/admin/analytics/rebuild", post_rebuild, NULL, 0);
}
