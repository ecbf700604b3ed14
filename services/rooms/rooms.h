/*
 * rooms.h — what the files of agora-rooms share: main.c wires the service,
 * routes.c is its HTTP API, store.c its SQL, events.c what it publishes
 * (room.*) and consumes (user.deleted), openapi.json the description of its
 * routes. The contract with the other chat services is
 * docs/internals/chat.md.
 */
#ifndef AGORA_ROOMS_H
#define AGORA_ROOMS_H

#include "agora/agora.h"
#include "agora/peer.h"

#define ROOMS_ID_MAX 127   /* room and user ids: letters, digits, - and _ */
#define ROOMS_NAME_MAX 100 /* characters, after trimming */
#define ROOMS_DESCRIPTION_MAX 1000
#define ROOMS_ROLE_MAX 16

typedef struct rooms_ctx {
    ag_store *store;
    ag_bus *bus;
    ag_peer *users;
} rooms_ctx;

extern rooms_ctx g_rooms;

/* One room as stored, seen by one viewer (my_role "" when not a member). */
typedef struct rooms_room {
    char id[ROOMS_ID_MAX + 1];
    char name[ROOMS_NAME_MAX * 4 + 1];
    char description[ROOMS_DESCRIPTION_MAX * 4 + 1];
    bool is_private;
    char owner_id[ROOMS_ID_MAX + 1];
    int64_t member_count, version;
    char created_at[32], updated_at[32];
    char my_role[ROOMS_ROLE_MAX];
} rooms_room;

/* One membership. */
typedef struct rooms_member {
    char user_id[ROOMS_ID_MAX + 1];
    char role[ROOMS_ROLE_MAX];
    char joined_at[32];
} rooms_member;

/* True for the ids this service makes and accepts (path and body). */
bool rooms_id_ok(const char *s);
void rooms_now(char ts[32]);

/* ---- store.c: 0 or a negative AG_E* code; AG_ENOTFOUND for a missing row. ---- */

/* The room `id` as `viewer` (may be NULL) sees it: my_role is theirs. */
int rooms_get(ag_db *db, const char *id, const char *viewer, rooms_room *out);
json_t *rooms_room_json(const rooms_room *r);

typedef struct rooms_filter {
    const char *viewer;
    bool all;      /* platform admins (and services) see private rooms too */
    bool mine;     /* only rooms the viewer belongs to */
    const char *q; /* name substring, case-insensitive; NULL: any */
    int64_t page, limit;
} rooms_filter;
/* A page of the rooms `f` selects, newest first, as JSON appended to `arr`;
 * *total gets the count of all of them. */
int rooms_list(ag_db *db, const rooms_filter *f, json_t *arr, int64_t *total);

/* Inserts a new room at version 1 (r->version is not read). */
int rooms_insert(ag_db *db, const rooms_room *r);
/* The compare-and-set every change starts with: version = version + 1 and
 * updated_at = `now` when the stored version is still r->version, and
 * r->version, r->updated_at follow. AG_ERETRY when another change got there
 * first (ag_store_tx runs the transaction again). */
int rooms_bump(ag_db *db, rooms_room *r, const char *now);
/* Writes r's name, description, is_private and owner_id. */
int rooms_save(ag_db *db, const rooms_room *r);
/* Removes the room and every membership of it. */
int rooms_delete(ag_db *db, const char *id);

int rooms_member_get(ag_db *db, const char *room, const char *user, rooms_member *out);
json_t *rooms_member_json(const rooms_member *m);
int rooms_member_add(ag_db *db, const char *room, const char *user, const char *role,
                     const char *joined_at, int64_t joined_version);
int rooms_member_set_role(ag_db *db, const char *room, const char *user, const char *role);
int rooms_member_remove(ag_db *db, const char *room, const char *user);
/* A page of members in the order they joined, as JSON appended to `arr`. */
int rooms_members_list(ag_db *db, const char *room, int64_t page, int64_t limit, json_t *arr,
                       int64_t *total);
/* Every member's user id, appended to `arr`. */
int rooms_member_ids(ag_db *db, const char *room, json_t *arr);
/* Who inherits the room when its owner goes: the longest-standing admin,
 * else the longest-standing member, never `except`. AG_ENOTFOUND: nobody. */
int rooms_successor(ag_db *db, const char *room, const char *except, rooms_member *out);
/* The rooms `user` belongs to, as [{roomId, role}] appended to `arr`. */
int rooms_user_memberships(ag_db *db, const char *user, json_t *arr);

/* ---- events.c: each inside the caller's transaction (outbox). ---- */

int rooms_publish_created(ag_db *db, const rooms_room *r);
/* `member` and `members` (may be NULL; stolen) name role changes. */
int rooms_publish_updated(ag_db *db, const rooms_room *r, json_t *member, json_t *members);
int rooms_publish_deleted(ag_db *db, const rooms_room *r, const char *by, json_t *member_ids);
int rooms_publish_joined(ag_db *db, const rooms_room *r, const char *user, const char *role,
                         const char *by, const char *how);
int rooms_publish_left(ag_db *db, const rooms_room *r, const char *user, const char *by,
                       const char *how);
int rooms_subscribe(ag_bus *bus);

/* routes.c */
void rooms_routes(ag_router *r);

/* openapi.json, embedded by cmake/embed.cmake */
extern const char rooms_openapi_json[];

#endif
