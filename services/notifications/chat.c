/*
 * chat.c — the chat's realtime in agora-notifications (docs/internals/
 * chat.md): room.* and message.* events become chat feed rows pushed to the
 * connected members of the room; presence (user.online/offline, published
 * from the hub's connection counts and consumed back here) goes to the
 * user's co-members; typing goes to the room's other members.
 *
 * Threads: the handlers run on the bus's consumer thread in its
 * transaction (pushes wait for the commit through nt_push_after_commit);
 * presence publishing and typing run as pool tasks, posted from the loops.
 *
 * Why presence goes through the bus rather than straight to co-members:
 * the event is the record (users and other consumers read it), and
 * consuming it back gives one path for whichever instance holds the
 * co-members' connections.
 */
#include <string.h>

#include "hub.h"
#include "members.h"

static int64_t g_feed_keep; /* feed rows kept (AGORA_CHAT_FEED_KEEP) */

/* ---- Feed: room.* and message.* --------------------------------------------------------- */

static int db_fail(ag_db *db, char *why, size_t n, int rc)
{
    snprintf(why, n, "%s: %s", ag_strerror(rc), ag_db_error(db));
    return rc;
}

/* Pushes feed row `id` (`json`, borrowed) to each id of `users`, and to
 * `extra` when it is not among them. */
static void push_to(ag_db *db, int64_t id, const char *kind, const char *json, json_t *users,
                    const char *extra)
{
    size_t i;
    json_t *u;
    bool extra_done = !extra;
    json_array_foreach(users, i, u)
    {
        const char *uid = json_string_value(u);
        if (!uid) continue;
        if (extra && strcmp(uid, extra) == 0) extra_done = true;
        nt_push_after_commit(db, id, kind, ag_strdup(json), uid);
    }
    if (!extra_done) nt_push_after_commit(db, id, kind, ag_strdup(json), extra);
}

static int prune(ag_db *db, int64_t id)
{
    if (g_feed_keep <= 0 || id % 1024 != 0) return 0;
    ag_val p[] = {AG_VINT(id - g_feed_keep)};
    return ag_db_exec(db, "DELETE FROM chat_feed WHERE id <= $1", p, 1, NULL);
}

/* One event of a room into the feed and out to its members. `members`
 * (may be NULL: the replica's members now) are the recipients; `about`
 * the member a membership event concerns (may be NULL). */
static int feed(ag_db *db, const ag_event *ev, const char *room, const char *about, json_t *members,
                char *why, size_t n)
{
    char *json = json_dumps(ev->data, JSON_COMPACT);
    int64_t id;
    int rc = nt_feed_insert(db, room, about, ev->id, ev->type, json, &id);
    if (rc == 0 && id > 0) {
        json_t *to = members ? json_incref(members) : json_array();
        if (!members) rc = chat_room_members(db, room, to);
        if (rc == 0) push_to(db, id, ev->type, json, to, about);
        json_decref(to);
        if (rc == 0) rc = prune(db, id);
    }
    free(json);
    return rc < 0 ? db_fail(db, why, n, rc) : 0;
}

/* After the replica applied a room.* event (members.c calls this in the
 * same transaction). */
static int on_room(ag_db *db, const ag_event *ev, void *ud, char *why, size_t n)
{
    nt_push_begin();
    const char *room = json_string_value(json_object_get(ev->data, "roomId"));
    if (!room) return 0; /* members.c logged it */
    const char *about = json_string_value(json_object_get(ev->data, "userId"));
    json_t *ids =
        json_object_get(ev->data, "memberIds"); /* room.deleted: the replica is empty now */
    return feed(db, ev, room, about, json_is_array(ids) ? ids : NULL, why, n);
}

static int on_message(ag_db *db, const ag_event *ev, void *ud, char *why, size_t n)
{
    nt_push_begin();
    const char *room = json_string_value(json_object_get(ev->data, "roomId"));
    if (!room || !*room) {
        snprintf(why, n, "%s without roomId", ev->type);
        return AG_EINVAL; /* retried, then dead-lettered with this reason */
    }
    return feed(db, ev, room, NULL, NULL, why, n);
}

/* ---- Presence ------------------------------------------------------------------------------ */

static int on_presence(ag_db *db, const ag_event *ev, void *ud, char *why, size_t n)
{
    nt_push_begin();
    const char *user = json_string_value(json_object_get(ev->data, "userId"));
    json_t *seq = json_object_get(ev->data, "seq");
    if (!user || !json_is_integer(seq)) {
        snprintf(why, n, "%s without userId or seq", ev->type);
        return AG_EINVAL;
    }
    bool online = strcmp(ev->type, "user.online") == 0;
    bool changed;
    int rc = nt_presence_put(db, user, online, json_integer_value(seq), &changed);
    if (rc < 0) return db_fail(db, why, n, rc);
    if (!changed) return 0;
    json_t *to = json_array();
    rc = chat_co_members(db, user, to);
    if (rc == 0) {
        json_t *msg =
            json_pack("{s:s, s:s, s:O?}", "userId", user, "status", online ? "online" : "offline",
                      "at", json_object_get(ev->data, "at"));
        char *s = json_dumps(msg, JSON_COMPACT);
        json_decref(msg);
        push_to(db, 0, "presence", s, to, NULL);
        free(s);
    }
    json_decref(to);
    return rc < 0 ? db_fail(db, why, n, rc) : 0;
}

typedef struct presence_task {
    char user[NT_USER_MAX];
    bool online;
    int64_t seq;
} presence_task;

static int publish_presence(ag_db *db, void *ud)
{
    presence_task *t = ud;
    char at[32];
    ag_time_now(at, sizeof at);
    json_t *data = json_pack("{s:s, s:s, s:I, s:s}", "userId", t->user, "status",
                             t->online ? "online" : "offline", "seq", (json_int_t)t->seq, "at", at);
    return ag_bus_publish(g_nt.bus, db, t->online ? "user.online" : "user.offline", t->user, data,
                          NULL);
}

static void presence_work(void *arg)
{
    presence_task *t = arg;
    int rc = ag_store_tx(g_nt.store, publish_presence, t);
    if (rc < 0)
        ag_warn("presence change not published", AG_FS("userId", t->user), AG_FERR(rc),
                AG_FB("online", t->online));
    ag_free(t);
}

void nt_presence_changed(const char *user, bool online, int64_t seq)
{
    presence_task *t = ag_calloc(1, sizeof *t);
    snprintf(t->user, sizeof t->user, "%s", user);
    t->online = online;
    t->seq = seq;
    /* A full pool drops the change (logged): presence is a hint, and the
     * next change of the user corrects it. Never run it on the loop. */
    if (ag_pool_submit(ag_service_pool(g_nt.svc), presence_work, t) < 0) {
        ag_warn("presence change dropped: the pool is full", AG_FS("userId", user));
        ag_free(t);
    }
}

typedef struct reset_ctx {
    json_t *users;
    int64_t seq;
} reset_ctx;

static int reset_tx(ag_db *db, void *ud)
{
    reset_ctx *c = ud;
    size_t i;
    json_t *u;
    json_array_foreach(c->users, i, u)
    {
        presence_task t = {.online = false, .seq = c->seq + (int64_t)i};
        snprintf(t.user, sizeof t.user, "%s", json_string_value(u));
        int rc = publish_presence(db, &t);
        if (rc < 0) return rc;
    }
    return 0;
}

int nt_presence_reset(void)
{
    ag_db *db;
    reset_ctx c = {json_array(), (int64_t)ag_wall_ms() * 1000};
    int rc = ag_store_db(g_nt.store, &db);
    if (rc == 0) rc = nt_presence_online(db, c.users);
    if (rc == 0 && json_array_size(c.users) > 0) {
        ag_info("users a previous run left online go offline",
                AG_FI("users", (long long)json_array_size(c.users)));
        rc = ag_store_tx(g_nt.store, reset_tx, &c);
    }
    json_decref(c.users);
    return rc;
}

/* ---- Typing -------------------------------------------------------------------------------- */

typedef struct typing_task {
    char user[NT_USER_MAX];
    char room[NT_USER_MAX];
} typing_task;

static void typing_work(void *arg)
{
    typing_task *t = arg;
    ag_db *db;
    char role[CHAT_ROLE_MAX];
    json_t *to = json_array();
    if (ag_store_db(g_nt.store, &db) == 0 && chat_member_role(db, t->room, t->user, role) == 0 &&
        chat_room_members(db, t->room, to) == 0) {
        json_t *msg = json_pack("{s:s, s:s}", "roomId", t->room, "userId", t->user);
        char *s = json_dumps(msg, JSON_COMPACT);
        json_decref(msg);
        size_t n = json_array_size(to), k = 0;
        nt_item *items = ag_calloc(n ? n : 1, sizeof *items);
        const char **users = ag_calloc(n ? n : 1, sizeof *users);
        for (size_t i = 0; i < n; i++) {
            const char *u = json_string_value(json_array_get(to, i));
            if (!u || strcmp(u, t->user) == 0) continue;
            items[k] = (nt_item){.id = 0, .json = s, .len = strlen(s), .kind = "typing"};
            users[k++] = u;
        }
        hub_publish(items, users, k); /* copies */
        ag_free(items);
        ag_free(users);
        free(s);
    }
    json_decref(to);
    ag_free(t);
}

void nt_typing(const char *user, const char *room)
{
    typing_task *t = ag_calloc(1, sizeof *t);
    snprintf(t->user, sizeof t->user, "%s", user);
    snprintf(t->room, sizeof t->room, "%s", room);
    if (ag_pool_submit(ag_service_pool(g_nt.svc), typing_work, t) < 0) ag_free(t);
}

/* ---- Subscriptions ------------------------------------------------------------------------ */

int nt_chat_subscribe(ag_bus *bus)
{
    long long keep;
    if (ag_config_int("AGORA_CHAT_FEED_KEEP", 100000, 0, 1000000000LL, &keep) < 0)
        return AG_ECONFIG;
    g_feed_keep = keep;
    int rc = chat_members_init(g_nt.store);
    if (rc == 0) rc = chat_members_subscribe(bus, on_room, NULL);
    if (rc == 0) rc = ag_bus_subscribe(bus, "message.*", on_message, NULL);
    if (rc == 0) rc = ag_bus_subscribe(bus, "user.online", on_presence, NULL);
    if (rc == 0) rc = ag_bus_subscribe(bus, "user.offline", on_presence, NULL);
    return rc;
}
