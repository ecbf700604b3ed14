/*
 * store.c — agora-notifications' SQL (schema/001_notifications.*.sql): the
 * users projection, the notifications and the mail outbox. Every value is
 * a parameter; both engines run the same statements.
 */
#include <string.h>

#include "notifications.h"

/* ---- Notifications ---------------------------------------------------------------------- */

#define NT_COLS "id, type, title, message, data, is_read, created_at"

/* The JSON object of a row selected with NT_COLS; ids are strings (DESIGN.md
 * §4) holding the increasing integer. */
static json_t *row_json(ag_rows *r)
{
    json_t *data = json_loads(ag_rows_text(r, 4), 0, NULL);
    char id[24];
    snprintf(id, sizeof id, "%lld", (long long)ag_rows_int(r, 0));
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:b, s:s}", "id", id, "type", ag_rows_text(r, 1),
                     "title", ag_rows_text(r, 2), "message", ag_rows_text(r, 3), "data",
                     data ? data : json_object(), "read", ag_rows_bool(r, 5), "createdAt",
                     ag_rows_text(r, 6));
}

int nt_insert(ag_db *db, const nt_new *n, int64_t *id, char **json)
{
    *id = 0;
    if (json) *json = NULL;
    int64_t pid;
    int rc = nt_next_push_id(db, &pid);
    if (rc < 0) return rc;
    char *data = json_dumps(n->data ? n->data : json_object(), JSON_COMPACT);
    char now[32];
    ag_time_now(now, 32);
    ag_val p[] = {AG_VTEXT(n->user_id), AG_VTEXT(n->event_id), AG_VTEXT(n->type),
                  AG_VTEXT(n->title),   AG_VTEXT(n->message),  AG_VTEXT(data),
                  AG_VTEXT(now),        AG_VINT(pid)};
    ag_rows *r;
    rc = ag_db_query(db,
                     "INSERT INTO notifications (id, user_id, event_id, type, title, message, "
                     "data, created_at) VALUES ($8, $1, $2, $3, $4, $5, $6, $7) "
                     "ON CONFLICT (event_id, user_id) DO NOTHING RETURNING " NT_COLS,
                     p, 8, &r);
    if (rc < 0) {
        free(data);
        return rc;
    }
    rc = ag_rows_next(r); /* `data` is bound until the rows are freed */
    if (rc == 1) {
        *id = ag_rows_int(r, 0);
        rc = 0;
        if (json) {
            json_t *j = row_json(r);
            char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
            json_decref(j);
            if (s)
                *json = ag_strdup(s);
            else
                rc = AG_EINVAL; /* text JSON cannot carry: logged by the caller */
            free(s);
        }
    }
    ag_rows_free(r);
    free(data);
    return rc;
}

int nt_unread_count(ag_db *db, const char *user, int64_t *unread)
{
    ag_val p[] = {AG_VTEXT(user)};
    int rc = ag_db_query_int(db,
                             "SELECT COUNT(*) FROM notifications WHERE user_id = $1 AND "
                             "is_read = FALSE",
                             p, 1, unread);
    if (rc == AG_ENOTFOUND) {
        *unread = 0;
        rc = 0;
    }
    return rc;
}

int nt_list(ag_db *db, const char *user, bool unread_only, int64_t page, int64_t limit, json_t *arr,
            int64_t *total, int64_t *unread)
{
    int rc = nt_unread_count(db, user, unread);
    if (rc < 0) return rc;
    if (unread_only) {
        *total = *unread;
    } else {
        ag_val p[] = {AG_VTEXT(user)};
        rc = ag_db_query_int(db, "SELECT COUNT(*) FROM notifications WHERE user_id = $1", p, 1,
                             total);
        if (rc < 0) return rc;
    }
    ag_val p[] = {AG_VTEXT(user), AG_VBOOL(unread_only), AG_VINT(limit),
                  AG_VINT((page - 1) * limit)};
    ag_rows *r;
    rc = ag_db_query(db,
                     "SELECT " NT_COLS " FROM notifications WHERE user_id = $1 AND "
                     "($2 = FALSE OR is_read = FALSE) ORDER BY id DESC LIMIT $3 OFFSET $4",
                     p, 4, &r);
    if (rc < 0) return rc;
    while ((rc = ag_rows_next(r)) == 1)
        json_array_append_new(arr, row_json(r));
    ag_rows_free(r);
    return rc < 0 ? rc : 0;
}

int nt_mark_read(ag_db *db, const char *user, int64_t id, int64_t *changed)
{
    ag_val p[] = {AG_VINT(id), AG_VTEXT(user)};
    return ag_db_exec(db,
                      "UPDATE notifications SET is_read = TRUE WHERE id = $1 AND user_id = $2 "
                      "AND is_read = FALSE",
                      p, 2, changed);
}

int nt_mark_all_read(ag_db *db, const char *user, int64_t *changed)
{
    ag_val p[] = {AG_VTEXT(user)};
    return ag_db_exec(db,
                      "UPDATE notifications SET is_read = TRUE WHERE user_id = $1 AND "
                      "is_read = FALSE",
                      p, 1, changed);
}

void nt_items_free(nt_item *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ag_free(items[i].json);
    ag_free(items);
}

int nt_next_push_id(ag_db *db, int64_t *id)
{
    return ag_db_query_int(db, "UPDATE push_seq SET n = n + 1 RETURNING n", NULL, 0, id);
}

/* Rows of `sql` (id, kind-or-NULL, then either NT_COLS' rest or a JSON text
 * column) appended to items[*k..limit). */
static int since_rows(ag_db *db, const char *sql, const ag_val *p, int np, bool feed,
                      nt_item *items, size_t *k, size_t limit)
{
    ag_rows *r;
    int rc = ag_db_query(db, sql, p, np, &r);
    if (rc < 0) return rc;
    while (*k < limit && (rc = ag_rows_next(r)) == 1) {
        nt_item *it = &items[(*k)++];
        it->id = ag_rows_int(r, 0);
        if (feed) {
            ag_rows_copy(r, 1, it->kind, sizeof it->kind);
            it->json = ag_strdup(ag_rows_text(r, 2));
        } else {
            snprintf(it->kind, sizeof it->kind, "notification");
            json_t *j = row_json(r);
            char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
            json_decref(j);
            /* A row JSON cannot carry (not UTF-8) is served as an empty
             * notification of its id rather than not at all. */
            char bare[48];
            snprintf(bare, sizeof bare, "{\"id\":\"%lld\"}", (long long)it->id);
            it->json = ag_strdup(s ? s : bare);
            free(s);
        }
        it->len = strlen(it->json);
    }
    ag_rows_free(r);
    return rc < 0 ? rc : 0;
}

static int item_cmp(const void *a, const void *b)
{
    int64_t x = ((const nt_item *)a)->id, y = ((const nt_item *)b)->id;
    return x < y ? -1 : x > y;
}

int nt_since(ag_db *db, const char *user, int64_t since, int limit, nt_item **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    ag_val p[] = {AG_VTEXT(user), AG_VINT(since), AG_VINT(limit)};
    /* The first `limit` of the merge are among the first `limit` of each. */
    nt_item *items = ag_calloc((size_t)limit * 2, sizeof *items);
    size_t k = 0;
    int rc = since_rows(db,
                        "SELECT " NT_COLS " FROM notifications WHERE user_id = $1 AND id > $2 "
                        "ORDER BY id LIMIT $3",
                        p, 3, false, items, &k, (size_t)limit);
    if (rc == 0)
        rc = since_rows(db,
                        "SELECT f.id, f.type, f.data FROM chat_feed f LEFT JOIN chat_members m "
                        "ON m.room_id = f.room_id AND m.user_id = $1 AND m.role IS NOT NULL "
                        "WHERE f.id > $2 AND (m.user_id IS NOT NULL OR f.user_id = $1) "
                        "ORDER BY f.id LIMIT $3",
                        p, 3, true, items, &k, (size_t)limit * 2);
    if (rc < 0) {
        nt_items_free(items, k);
        return rc;
    }
    qsort(items, k, sizeof *items, item_cmp);
    while (k > (size_t)limit)
        ag_free(items[--k].json);
    *out = items;
    *n = k;
    return 0;
}

int nt_feed_insert(ag_db *db, const char *room, const char *user, const char *event_id,
                   const char *type, const char *json, int64_t *id)
{
    *id = 0;
    int64_t pid;
    int rc = nt_next_push_id(db, &pid);
    if (rc < 0) return rc;
    char now[32];
    ag_time_now(now, 32);
    ag_val p[] = {AG_VINT(pid),   AG_VTEXT(room), AG_VTEXT(user), AG_VTEXT(event_id),
                  AG_VTEXT(type), AG_VTEXT(json), AG_VTEXT(now)};
    int64_t changes = 0;
    rc =
        ag_db_exec(db,
                   "INSERT INTO chat_feed (id, room_id, user_id, event_id, type, data, created_at) "
                   "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING",
                   p, 7, &changes);
    if (rc == 0 && changes == 1) *id = pid;
    return rc;
}

int nt_presence_put(ag_db *db, const char *user, bool online, int64_t seq, bool *changed)
{
    *changed = false;
    char now[32];
    ag_time_now(now, 32);
    ag_val q[] = {AG_VTEXT(user)};
    int64_t was = -1;
    int rc = ag_db_query_int(db, "SELECT online FROM presence WHERE user_id = $1", q, 1, &was);
    if (rc < 0 && rc != AG_ENOTFOUND) return rc;
    ag_val p[] = {AG_VTEXT(user), AG_VINT(online ? 1 : 0), AG_VINT(seq), AG_VTEXT(now)};
    int64_t changes = 0;
    rc = ag_db_exec(
        db,
        "INSERT INTO presence (user_id, online, seq, changed_at) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (user_id) DO UPDATE SET online = excluded.online, "
        "seq = excluded.seq, changed_at = excluded.changed_at "
        "WHERE presence.seq < excluded.seq",
        p, 4, &changes);
    if (rc == 0 && changes == 1 && was != (online ? 1 : 0)) *changed = true;
    return rc;
}

int nt_presence_get(ag_db *db, json_t *ids, json_t *arr)
{
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v)
    {
        ag_val p[] = {AG_VTEXT(json_string_value(v))};
        ag_rows *r;
        int rc =
            ag_db_query(db, "SELECT online, changed_at FROM presence WHERE user_id = $1", p, 1, &r);
        if (rc < 0) return rc;
        bool on = false;
        const char *at = NULL;
        if ((rc = ag_rows_next(r)) == 1) {
            on = ag_rows_int(r, 0) == 1;
            at = ag_rows_text(r, 1);
        }
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s?}", "userId", json_string_value(v),
                                             "status", on ? "online" : "offline", "changedAt", at));
        ag_rows_free(r);
        if (rc < 0) return rc;
    }
    return 0;
}

int nt_presence_online(ag_db *db, json_t *arr)
{
    return ag_db_query_texts(db, "SELECT user_id FROM presence WHERE online = 1", NULL, 0, arr);
}

/* ---- Users ------------------------------------------------------------------------------ */

int nt_user_upsert(ag_db *db, const nt_user *u)
{
    char now[32];
    ag_time_now(now, 32);
    ag_val p[] = {AG_VTEXT(u->id), AG_VTEXT(u->username), AG_VTEXT(u->email), AG_VTEXT(u->role),
                  AG_VTEXT(now)};
    return ag_db_exec(db,
                      "INSERT INTO users (id, username, email, role, source, updated_at) "
                      "VALUES ($1, $2, $3, $4, 'event', $5) ON CONFLICT (id) DO UPDATE SET "
                      "username = excluded.username, email = excluded.email, "
                      "role = excluded.role, source = 'event', updated_at = excluded.updated_at "
                      "WHERE users.deleted = FALSE",
                      p, 5, NULL);
}

int nt_user_learn(ag_db *db, const char *id, const char *email, const char *role)
{
    ag_val q[] = {AG_VTEXT(id)};
    int64_t one;
    int rc = ag_db_query_int(db, "SELECT 1 FROM users WHERE id = $1", q, 1, &one);
    if (rc != AG_ENOTFOUND) return rc; /* known (or an error) */
    char now[32];
    ag_time_now(now, 32);
    ag_val p[] = {AG_VTEXT(id), AG_VTEXT(email && *email ? email : NULL),
                  AG_VTEXT(role && *role ? role : "customer"), AG_VTEXT(now)};
    return ag_db_exec(db,
                      "INSERT INTO users (id, email, role, source, updated_at) "
                      "VALUES ($1, $2, $3, 'token', $4) ON CONFLICT (id) DO NOTHING",
                      p, 4, NULL);
}

int nt_user_delete(ag_db *db, const char *id)
{
    char now[32];
    ag_time_now(now, 32);
    ag_val p[] = {AG_VTEXT(id), AG_VTEXT(now)};
    int rc = ag_db_exec(db,
                        "INSERT INTO users (id, role, deleted, source, updated_at) "
                        "VALUES ($1, 'customer', TRUE, 'event', $2) ON CONFLICT (id) DO UPDATE "
                        "SET deleted = TRUE, email = NULL, username = NULL, "
                        "updated_at = excluded.updated_at",
                        p, 2, NULL);
    if (rc == 0) rc = ag_db_exec(db, "DELETE FROM notifications WHERE user_id = $1", p, 1, NULL);
    if (rc == 0)
        rc = ag_db_exec(db,
                        "UPDATE mail_outbox SET state = 'CANCELLED' WHERE user_id = $1 AND "
                        "state = 'PENDING'",
                        p, 1, NULL);
    return rc;
}

int nt_user_get(ag_db *db, const char *id, nt_user *out)
{
    ag_val p[] = {AG_VTEXT(id)};
    ag_rows *r;
    int rc = ag_db_query(db, "SELECT id, username, email, role, deleted FROM users WHERE id = $1",
                         p, 1, &r);
    if (rc < 0) return rc;
    rc = ag_rows_next(r);
    if (rc == 1) {
        ag_rows_copy(r, 0, out->id, sizeof out->id);
        ag_rows_copy(r, 1, out->username, sizeof out->username);
        ag_rows_copy(r, 2, out->email, sizeof out->email);
        ag_rows_copy(r, 3, out->role, sizeof out->role);
        out->deleted = ag_rows_bool(r, 4);
        rc = 0;
    } else if (rc == 0) {
        rc = AG_ENOTFOUND;
    }
    ag_rows_free(r);
    return rc;
}

int nt_admins(ag_db *db, nt_user **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    ag_rows *r;
    int rc = ag_db_query(db,
                         "SELECT id, username, email, role FROM users WHERE role = 'admin' AND "
                         "deleted = FALSE ORDER BY id",
                         NULL, 0, &r);
    if (rc < 0) return rc;
    size_t cap = 0, k = 0;
    nt_user *v = NULL;
    while ((rc = ag_rows_next(r)) == 1) {
        if (k == cap) {
            cap = cap ? cap * 2 : 8;
            v = ag_realloc(v, cap * sizeof *v);
        }
        memset(&v[k], 0, sizeof v[k]);
        ag_rows_copy(r, 0, v[k].id, sizeof v[k].id);
        ag_rows_copy(r, 1, v[k].username, sizeof v[k].username);
        ag_rows_copy(r, 2, v[k].email, sizeof v[k].email);
        ag_rows_copy(r, 3, v[k].role, sizeof v[k].role);
        k++;
    }
    ag_rows_free(r);
    if (rc < 0) {
        ag_free(v);
        return rc;
    }
    *out = v;
    *n = k;
    return 0;
}

/* ---- Mail outbox ------------------------------------------------------------------------ */

int nt_mail_queue(ag_db *db, const char *event_id, const char *user_id, const char *to,
                  const char *subject, const char *body, bool *queued)
{
    int64_t now = (int64_t)ag_wall_ms();
    ag_val p[] = {AG_VTEXT(event_id), AG_VTEXT(user_id), AG_VTEXT(to),
                  AG_VTEXT(subject),  AG_VTEXT(body),    AG_VINT(now)};
    int64_t changes = 0;
    int rc = ag_db_exec(db,
                        "INSERT INTO mail_outbox (event_id, user_id, to_addr, subject, body, "
                        "next_attempt_ms, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $6) "
                        "ON CONFLICT (event_id, user_id) DO NOTHING",
                        p, 6, &changes);
    *queued = rc == 0 && changes > 0;
    return rc;
}

void nt_mails_free(nt_mail *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ag_free(m[i].body);
    ag_free(m);
}

int nt_mail_due(ag_db *db, int64_t now_ms, int limit, nt_mail **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    ag_val p[] = {AG_VINT(now_ms), AG_VINT(limit)};
    ag_rows *r;
    int rc = ag_db_query(db,
                         "SELECT id, event_id, user_id, to_addr, subject, body, created_ms, "
                         "attempts FROM mail_outbox WHERE state = 'PENDING' AND "
                         "next_attempt_ms <= $1 ORDER BY id LIMIT $2",
                         p, 2, &r);
    if (rc < 0) return rc;
    nt_mail *m = ag_calloc((size_t)limit, sizeof *m);
    size_t k = 0;
    while ((rc = ag_rows_next(r)) == 1 && k < (size_t)limit) {
        m[k].id = ag_rows_int(r, 0);
        ag_rows_copy(r, 1, m[k].event_id, sizeof m[k].event_id);
        ag_rows_copy(r, 2, m[k].user_id, sizeof m[k].user_id);
        ag_rows_copy(r, 3, m[k].to, sizeof m[k].to);
        ag_rows_copy(r, 4, m[k].subject, sizeof m[k].subject);
        m[k].body = ag_strdup(ag_rows_text(r, 5) ? ag_rows_text(r, 5) : "");
        m[k].created_ms = ag_rows_int(r, 6);
        m[k].attempts = (int)ag_rows_int(r, 7);
        k++;
    }
    ag_rows_free(r);
    if (rc < 0) {
        nt_mails_free(m, k);
        return rc;
    }
    *out = m;
    *n = k;
    return 0;
}

int nt_mail_sent(ag_db *db, int64_t id)
{
    char now[32];
    ag_time_now(now, 32);
    ag_val p[] = {AG_VINT(id), AG_VTEXT(now)};
    return ag_db_exec(
        db,
        "UPDATE mail_outbox SET state = 'SENT', sent_at = $2, attempts = attempts + 1, "
        "last_error = NULL WHERE id = $1 AND state = 'PENDING'",
        p, 2, NULL);
}

int nt_mail_failed(ag_db *db, int64_t id, const char *error, int64_t next_ms, bool give_up)
{
    ag_val p[] = {AG_VINT(id), AG_VTEXT(error), AG_VINT(next_ms),
                  AG_VTEXT(give_up ? "FAILED" : "PENDING")};
    return ag_db_exec(db,
                      "UPDATE mail_outbox SET attempts = attempts + 1, last_error = $2, "
                      "next_attempt_ms = $3, state = $4 WHERE id = $1 AND state = 'PENDING'",
                      p, 4, NULL);
}
