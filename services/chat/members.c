/*
 * members.c — the membership replica of the chat services (members.h):
 * its tables, the room.* handlers that keep it, and the lookups, with the
 * fallback to agora-rooms on a miss.
 *
 * Every write is an upsert guarded by the row's version ("only if newer"),
 * the same statement on SQLite and PostgreSQL (INSERT ... ON CONFLICT ... DO
 * UPDATE ... WHERE), so applying an event twice or out of turn is harmless.
 */
#include <string.h>

#include "agora/id.h"
#include "agora/log.h"
#include "members.h"

static const char *const k_schema[] = {
    "CREATE TABLE IF NOT EXISTS chat_rooms (room_id TEXT PRIMARY KEY, name TEXT, "
    "is_private INTEGER NOT NULL DEFAULT 0, deleted INTEGER NOT NULL DEFAULT 0, "
    "version BIGINT NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS chat_members (room_id TEXT NOT NULL, user_id TEXT NOT NULL, "
    "role TEXT, version BIGINT NOT NULL, PRIMARY KEY (room_id, user_id))",
    "CREATE INDEX IF NOT EXISTS chat_members_user ON chat_members (user_id)",
};

int chat_members_init(ag_store *store)
{
    ag_db *db;
    int rc = ag_store_db(store, &db);
    for (size_t i = 0; rc == 0 && i < sizeof k_schema / sizeof *k_schema; i++)
        rc = ag_db_exec(db, k_schema[i], NULL, 0, NULL);
    if (rc < 0)
        ag_error("the membership replica's tables", AG_FERR(rc), AG_FS("db", ag_db_error(db)));
    return rc;
}

bool chat_role_moderates(const char *role)
{
    return role && (strcmp(role, "owner") == 0 || strcmp(role, "admin") == 0);
}

/* Ids reach a URL path (chat_member_check asks agora-rooms with them). */
bool chat_id_ok(const char *s)
{
    return s && ag_id_token_ok(s, CHAT_ID_MAX);
}

/* ---- Writes -------------------------------------------------------------------------------- */

static int put_member(ag_db *db, const char *room, const char *user, const char *role,
                      int64_t version)
{
    ag_val p[] = {AG_VTEXT(room), AG_VTEXT(user), AG_VTEXT(role), AG_VINT(version)};
    return ag_db_exec(db,
                      "INSERT INTO chat_members (room_id, user_id, role, version) "
                      "VALUES ($1, $2, $3, $4) ON CONFLICT (room_id, user_id) DO UPDATE "
                      "SET role = excluded.role, version = excluded.version "
                      "WHERE chat_members.version < excluded.version",
                      p, 4, NULL);
}

/* The room's row; `data` may lack name and privacy (membership events). */
static int put_room(ag_db *db, const char *room, json_t *data, int64_t version, bool deleted)
{
    const char *name = json_string_value(json_object_get(data, "name"));
    json_t *priv = json_object_get(data, "isPrivate");
    ag_val p[] = {AG_VTEXT(room),           AG_VTEXT(name),   AG_VINT(json_is_true(priv) ? 1 : 0),
                  AG_VINT(deleted ? 1 : 0), AG_VINT(version), AG_VINT(priv ? 1 : 0)};
    return ag_db_exec(
        db,
        "INSERT INTO chat_rooms (room_id, name, is_private, deleted, version) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id) DO UPDATE SET "
        "name = COALESCE(excluded.name, chat_rooms.name), "
        "is_private = CASE WHEN $6 = 1 THEN excluded.is_private "
        "ELSE chat_rooms.is_private END, "
        "deleted = CASE WHEN chat_rooms.deleted = 1 THEN 1 ELSE excluded.deleted END, "
        "version = excluded.version WHERE chat_rooms.version < excluded.version",
        p, 6, NULL);
}

int chat_members_apply(ag_db *db, const ag_event *ev, char *why, size_t why_len)
{
    json_t *d = ev->data;
    const char *room = json_string_value(json_object_get(d, "roomId"));
    json_t *jv = json_object_get(d, "version");
    if (!room || !json_is_integer(jv)) {
        /* Not ours to judge: an event of another shape is left to the caller. */
        ag_warn("room event without roomId or version", AG_FS("type", ev->type),
                AG_FS("id", ev->id));
        return 0;
    }
    int64_t v = json_integer_value(jv);
    int rc;
    if (strcmp(ev->type, "room.deleted") == 0) {
        rc = put_room(db, room, d, v, true);
        if (rc == 0) {
            ag_val p[] = {AG_VINT(v), AG_VTEXT(room)};
            rc = ag_db_exec(db,
                            "UPDATE chat_members SET role = NULL, version = $1 "
                            "WHERE room_id = $2 AND version < $1",
                            p, 2, NULL);
        }
    } else {
        rc = put_room(db, room, d, v, false);
        const char *user = json_string_value(json_object_get(d, "userId"));
        if (rc == 0 && strcmp(ev->type, "room.created") == 0) {
            size_t i;
            json_t *m;
            json_array_foreach(json_object_get(d, "members"), i, m)
            {
                const char *u = json_string_value(json_object_get(m, "userId"));
                const char *role = json_string_value(json_object_get(m, "role"));
                if (u && role && (rc = put_member(db, room, u, role, v)) < 0) break;
            }
            const char *owner = json_string_value(json_object_get(d, "ownerId"));
            if (rc == 0 && owner && !json_object_get(d, "members"))
                rc = put_member(db, room, owner, "owner", v);
        } else if (rc == 0 && strcmp(ev->type, "room.user_joined") == 0 && user) {
            const char *role = json_string_value(json_object_get(d, "role"));
            rc = put_member(db, room, user, role ? role : "member", v);
        } else if (rc == 0 && strcmp(ev->type, "room.user_left") == 0 && user) {
            rc = put_member(db, room, user, NULL, v);
        } else if (rc == 0 && strcmp(ev->type, "room.updated") == 0) {
            json_t *m = json_object_get(d, "member");
            json_t *ms = json_object_get(d, "members"); /* a hand-over names two */
            const char *u = json_string_value(json_object_get(m, "userId"));
            const char *role = json_string_value(json_object_get(m, "role"));
            if (u && role) rc = put_member(db, room, u, role, v);
            size_t i;
            json_t *x;
            json_array_foreach(ms, i, x)
            {
                u = json_string_value(json_object_get(x, "userId"));
                role = json_string_value(json_object_get(x, "role"));
                if (rc == 0 && u && role) rc = put_member(db, room, u, role, v);
            }
        }
    }
    if (rc < 0) snprintf(why, why_len, "membership replica: %s", ag_db_error(db));
    return rc;
}

static struct {
    ag_event_handler then;
    void *ud;
} g_sub;

static int on_room_event(ag_db *db, const ag_event *ev, void *ud, char *why, size_t why_len)
{
    int rc = chat_members_apply(db, ev, why, why_len);
    if (rc == 0 && g_sub.then) rc = g_sub.then(db, ev, g_sub.ud, why, why_len);
    return rc;
}

int chat_members_subscribe(ag_bus *bus, ag_event_handler then, void *ud)
{
    g_sub.then = then;
    g_sub.ud = ud;
    return ag_bus_subscribe(bus, "room.*", on_room_event, NULL);
}

/* ---- Reads --------------------------------------------------------------------------------- */

int chat_member_role(ag_db *db, const char *room, const char *user, char role[CHAT_ROLE_MAX])
{
    ag_val p[] = {AG_VTEXT(room), AG_VTEXT(user)};
    char buf[CHAT_ROLE_MAX] = "";
    int rc = ag_db_query_text(db,
                              "SELECT m.role FROM chat_members m LEFT JOIN chat_rooms r "
                              "ON r.room_id = m.room_id WHERE m.room_id = $1 AND m.user_id = $2 "
                              "AND m.role IS NOT NULL AND COALESCE(r.deleted, 0) = 0",
                              p, 2, buf, sizeof buf);
    if (rc < 0) return rc;
    if (role) memcpy(role, buf, CHAT_ROLE_MAX);
    return 0;
}

static bool room_deleted(ag_db *db, const char *room)
{
    ag_val p[] = {AG_VTEXT(room)};
    int64_t n = 0;
    return ag_db_query_int(db, "SELECT deleted FROM chat_rooms WHERE room_id = $1", p, 1, &n) ==
               0 &&
           n == 1;
}

typedef struct learn_ctx {
    const char *room, *user, *role;
    int64_t version;
} learn_ctx;

static int learn_tx(ag_db *db, void *ud)
{
    learn_ctx *c = ud;
    return put_member(db, c->room, c->user, c->role, c->version);
}

int chat_member_check(ag_store *store, ag_peer *rooms, const char *room, const char *user,
                      const char *auth, ag_deadline deadline, const char *request_id,
                      char role[CHAT_ROLE_MAX])
{
    if (!chat_id_ok(room) || !chat_id_ok(user)) return AG_ENOTFOUND;
    ag_db *db;
    int rc = ag_store_db(store, &db);
    if (rc < 0) return rc;
    rc = chat_member_role(db, room, user, role);
    if (rc != AG_ENOTFOUND) return rc;
    if (room_deleted(db, room)) return AG_ENOTFOUND;
    /* A miss: a join whose event has not arrived yet, or not a member. */
    char path[320];
    snprintf(path, sizeof path, "/v1/rooms/%s/members/%s", room, user);
    ag_peer_reply rep;
    rc = ag_peer_call(rooms, "GET", path, NULL, auth ? auth : "", deadline, request_id, &rep);
    if (rc < 0) return AG_EUNAVAIL;
    if (rep.status == 404 || rep.status == 403) {
        ag_peer_reply_clear(&rep);
        return AG_ENOTFOUND;
    }
    json_t *d = json_object_get(rep.doc, "data");
    const char *r = json_string_value(json_object_get(d, "role"));
    json_t *v = json_object_get(d, "version");
    if (rep.status != 200 || !r || strlen(r) >= CHAT_ROLE_MAX || !json_is_integer(v)) {
        ag_warn("agora-rooms' member lookup answered unexpectedly", AG_FI("status", rep.status),
                AG_FS("code", rep.code));
        ag_peer_reply_clear(&rep);
        return AG_EUNAVAIL;
    }
    learn_ctx c = {room, user, r, json_integer_value(v)};
    rc = ag_store_tx(store, learn_tx, &c);
    if (rc < 0) ag_warn("could not keep a member lookup", AG_FERR(rc)); /* the answer stands */
    if (role) snprintf(role, CHAT_ROLE_MAX, "%s", r);
    ag_peer_reply_clear(&rep);
    return 0;
}

static int append_ids(ag_db *db, const char *sql, const char *arg, json_t *arr)
{
    ag_val p[] = {AG_VTEXT(arg)};
    return ag_db_query_texts(db, sql, p, 1, arr);
}

int chat_room_members(ag_db *db, const char *room, json_t *arr)
{
    return append_ids(db,
                      "SELECT m.user_id FROM chat_members m LEFT JOIN chat_rooms r "
                      "ON r.room_id = m.room_id WHERE m.room_id = $1 AND m.role IS NOT NULL "
                      "AND COALESCE(r.deleted, 0) = 0 ORDER BY m.user_id",
                      room, arr);
}

int chat_user_rooms(ag_db *db, const char *user, json_t *arr)
{
    return append_ids(db,
                      "SELECT m.room_id FROM chat_members m LEFT JOIN chat_rooms r "
                      "ON r.room_id = m.room_id WHERE m.user_id = $1 AND m.role IS NOT NULL "
                      "AND COALESCE(r.deleted, 0) = 0 ORDER BY m.room_id",
                      user, arr);
}

int chat_co_members(ag_db *db, const char *user, json_t *arr)
{
    return append_ids(db,
                      "SELECT DISTINCT o.user_id FROM chat_members m "
                      "JOIN chat_members o ON o.room_id = m.room_id AND o.role IS NOT NULL "
                      "LEFT JOIN chat_rooms r ON r.room_id = m.room_id "
                      "WHERE m.user_id = $1 AND m.role IS NOT NULL AND o.user_id <> $1 "
                      "AND COALESCE(r.deleted, 0) = 0 ORDER BY o.user_id",
                      user, arr);
}
