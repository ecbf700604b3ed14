/*
 * members.h — a replica of agora-rooms' membership, kept by each chat
 * service that must know who may read a room (agora-messages, agora-files,
 * agora-notifications), from room.* events and, on a miss, from agora-rooms
 * itself. Linked as the static library agora-chat (services/chat/).
 *
 * Why a replica: a message send is the hot path of the chat; asking
 * agora-rooms on every send would double its cost and tie every send to
 * rooms being up. DESIGN.md §1: nothing reads another service's tables, so
 * the replica is this service's own copy, built from events.
 *
 * Tables (made by chat_members_init with CREATE TABLE IF NOT EXISTS, in the
 * service's own store, as the bus makes its outbox):
 *   chat_rooms(room_id PK, name, is_private, deleted, version)
 *   chat_members(room_id, user_id, role, version, PK(room_id, user_id))
 *     role is "owner", "admin", "member", or NULL for a user who left.
 *
 * Versions. agora-rooms keeps one version per room that grows by one with
 * every change of the room or its membership, and every room.* event and
 * member lookup carries it. A (room, user) row changes only for an event or
 * lookup of a newer version than the row's, so a late event or a lookup
 * racing an event never brings back a member who left. Events of one room
 * arrive in order (the bus keeps order per aggregate), but a lookup may
 * arrive between two of them; the per-row version makes that harmless.
 *
 * Events consumed (docs/events.md): room.created (the room and its owner),
 * room.updated (name, privacy; a role change carries "member"), room.deleted
 * (every member gone), room.user_joined, room.user_left.
 */
#ifndef AGORA_CHAT_MEMBERS_H
#define AGORA_CHAT_MEMBERS_H

#include "agora/bus.h"
#include "agora/peer.h"
#include "agora/store.h"

#define CHAT_ROLE_MAX 16
#define CHAT_ID_MAX 127 /* the longest id chat_id_ok accepts */

/* Creates the replica's tables when missing. Call after the store opened. */
int chat_members_init(ag_store *store);

/* Subscribes the replica's handlers to room.*; `then` (may be NULL) runs in
 * the same transaction after the replica applied an event (a service that
 * also reacts to room.* events, the realtime hub, does it there). */
int chat_members_subscribe(ag_bus *bus, ag_event_handler then, void *ud);

/* The replica's handler itself, for a service that subscribes room.* on
 * its own and calls it first. */
int chat_members_apply(ag_db *db, const ag_event *ev, char *why, size_t why_len);

/* The user's role in the room from the replica: 0 and `role` filled, or
 * AG_ENOTFOUND (not a member, the room deleted or unknown). */
int chat_member_role(ag_db *db, const char *room, const char *user, char role[CHAT_ROLE_MAX]);

/* The user's role in the room: the replica first; on a miss, agora-rooms'
 * GET /v1/rooms/:id/members/:userId with the caller's `auth` (their own
 * "Bearer ..."), whose answer is stored in the replica when newer. 0 and
 * `role`; AG_ENOTFOUND when not a member; AG_EUNAVAIL when the replica
 * missed and agora-rooms could not answer. Worker threads. */
int chat_member_check(ag_store *store, ag_peer *rooms, const char *room, const char *user,
                      const char *auth, ag_deadline deadline, const char *request_id,
                      char role[CHAT_ROLE_MAX]);

/* The members of a room (user ids), appended to `arr`. */
int chat_room_members(ag_db *db, const char *room, json_t *arr);
/* The rooms a user belongs to (room ids), appended to `arr`. */
int chat_user_rooms(ag_db *db, const char *user, json_t *arr);
/* Every user who shares at least one room with `user` (not `user`), appended
 * to `arr`: who sees their presence. */
int chat_co_members(ag_db *db, const char *user, json_t *arr);

/* True for a role that may moderate the room (owner, admin). */
bool chat_role_moderates(const char *role);

/* True for an id of the shape agora-rooms and agora-users make (room, user,
 * and the chat services' own file and message ids): 1 to CHAT_ID_MAX letters,
 * digits, '-' and '_'. Such an id is safe in a URL path. NULL is false. A
 * service whose buffers hold fewer characters checks its own bound too. */
bool chat_id_ok(const char *s);

#endif
