/*
 * events.c — what agora-rooms publishes and consumes (docs/internals/chat.md).
 *
 * Published, each through the outbox in the transaction of its change,
 * subject = the room id, every one with the room's version after the change:
 *   room.created      {roomId, name, description, isPrivate, ownerId, version,
 *                      createdAt, members:[{userId, role}]}
 *   room.updated      {roomId, name, description, isPrivate, version, updatedAt}
 *                     + member:{userId, role} when a role changed; a hand-over
 *                     is one event whose member is the new owner and whose
 *                     members lists both changes ([new owner, old owner admin])
 *   room.deleted      {roomId, version, deletedBy, memberIds}
 *   room.user_joined  {roomId, userId, role, version, by, how: joined|invited}
 *   room.user_left    {roomId, userId, version, by, how: left|kicked|deleted}
 *
 * Consumed, in the transaction that records the event in the inbox:
 *   user.deleted {userId}: every membership of the user goes, one
 *     room.user_left how "deleted" (by: the user) each. A room the user owned
 *     goes first to its longest-standing admin, else its longest-standing
 *     member (room.updated with member:{userId, role:"owner"}, then the
 *     room.user_left); a room with nobody else is deleted (room.deleted,
 *     deletedBy the user). A repeat of the event finds no memberships and
 *     does nothing.
 */
#include <string.h>

#include "rooms.h"

static int publish(ag_db *db, const char *type, const char *room, json_t *data)
{
    if (!data) return AG_EINVAL;
    return ag_bus_publish(g_rooms.bus, db, type, room, data, NULL);
}

int rooms_publish_created(ag_db *db, const rooms_room *r)
{
    return publish(db, "room.created", r->id,
                   json_pack("{s:s, s:s, s:s, s:b, s:s, s:I, s:s, s:[{s:s, s:s}]}", "roomId", r->id,
                             "name", r->name, "description", r->description, "isPrivate",
                             r->is_private, "ownerId", r->owner_id, "version",
                             (json_int_t)r->version, "createdAt", r->created_at, "members",
                             "userId", r->owner_id, "role", "owner"));
}

int rooms_publish_updated(ag_db *db, const rooms_room *r, json_t *member, json_t *members)
{
    json_t *d = json_pack("{s:s, s:s, s:s, s:b, s:I, s:s}", "roomId", r->id, "name", r->name,
                          "description", r->description, "isPrivate", r->is_private, "version",
                          (json_int_t)r->version, "updatedAt", r->updated_at);
    if (d && member) json_object_set(d, "member", member);
    if (d && members) json_object_set(d, "members", members);
    json_decref(member);
    json_decref(members);
    return publish(db, "room.updated", r->id, d);
}

int rooms_publish_deleted(ag_db *db, const rooms_room *r, const char *by, json_t *member_ids)
{
    return publish(db, "room.deleted", r->id,
                   json_pack("{s:s, s:I, s:s, s:o}", "roomId", r->id, "version",
                             (json_int_t)r->version, "deletedBy", by, "memberIds", member_ids));
}

int rooms_publish_joined(ag_db *db, const rooms_room *r, const char *user, const char *role,
                         const char *by, const char *how)
{
    return publish(db, "room.user_joined", r->id,
                   json_pack("{s:s, s:s, s:s, s:I, s:s, s:s}", "roomId", r->id, "userId", user,
                             "role", role, "version", (json_int_t)r->version, "by", by, "how",
                             how));
}

int rooms_publish_left(ag_db *db, const rooms_room *r, const char *user, const char *by,
                       const char *how)
{
    return publish(db, "room.user_left", r->id,
                   json_pack("{s:s, s:s, s:I, s:s, s:s}", "roomId", r->id, "userId", user,
                             "version", (json_int_t)r->version, "by", by, "how", how));
}

/* ---- user.deleted ------------------------------------------------------------------------- */

/* The user leaves one room; an owner hands it on first, or the room goes. */
static int remove_deleted_user(ag_db *db, const char *room_id, const char *user)
{
    rooms_room r;
    int rc = rooms_get(db, room_id, user, &r);
    if (rc == AG_ENOTFOUND) return 0; /* a membership row without its room: nothing to tell */
    if (rc < 0) return rc;
    char now[32];
    rooms_now(now);
    if (strcmp(r.my_role, "owner") == 0) {
        rooms_member heir;
        rc = rooms_successor(db, room_id, user, &heir);
        if (rc == AG_ENOTFOUND) {
            json_t *ids = json_array();
            rc = rooms_bump(db, &r, now);
            if (rc == 0) rc = rooms_member_ids(db, room_id, ids);
            if (rc == 0) rc = rooms_delete(db, room_id);
            if (rc == 0) return rooms_publish_deleted(db, &r, user, ids);
            json_decref(ids);
            return rc;
        }
        if (rc < 0) return rc;
        /* The owner's row steps down first: one owner per room at any time. */
        rc = rooms_bump(db, &r, now);
        if (rc == 0) rc = rooms_member_set_role(db, room_id, user, "admin");
        if (rc == 0) rc = rooms_member_set_role(db, room_id, heir.user_id, "owner");
        if (rc == 0) {
            snprintf(r.owner_id, sizeof r.owner_id, "%s", heir.user_id);
            rc = rooms_save(db, &r);
        }
        if (rc == 0)
            rc = rooms_publish_updated(
                db, &r, json_pack("{s:s, s:s}", "userId", heir.user_id, "role", "owner"), NULL);
        if (rc < 0) return rc;
        ag_info("room handed over from a deleted user", AG_FS("roomId", room_id),
                AG_FS("ownerId", heir.user_id));
    }
    rc = rooms_bump(db, &r, now);
    if (rc == 0) rc = rooms_member_remove(db, room_id, user);
    if (rc == 0) rc = rooms_publish_left(db, &r, user, user, "deleted");
    return rc;
}

static int on_user_deleted(ag_db *db, const ag_event *ev, void *ud, char *why, size_t n)
{
    const char *user = json_string_value(json_object_get(ev->data, "userId"));
    if (!rooms_id_ok(user)) {
        snprintf(why, n, "user.deleted without a usable userId");
        return AG_EINVAL;
    }
    json_t *rooms = json_array();
    int rc = rooms_user_memberships(db, user, rooms);
    size_t i;
    json_t *m;
    json_array_foreach(rooms, i, m)
    {
        if (rc < 0) break;
        rc = remove_deleted_user(db, json_string_value(json_object_get(m, "roomId")), user);
    }
    json_decref(rooms);
    if (rc < 0) {
        snprintf(why, n, "cannot remove the deleted user's memberships: %s", ag_db_error(db));
        return rc;
    }
    return 0;
}

int rooms_subscribe(ag_bus *bus)
{
    return ag_bus_subscribe(bus, "user.deleted", on_user_deleted, NULL);
}
