/*
 * events.c — what agora-files consumes (it publishes nothing: DESIGN.md's
 * event list has no file.* type, and nobody needs one yet).
 *
 *   room.*        the membership replica (agora-chat's members.c), which
 *                 decides who may read a room's files
 *   room.deleted  then, in the same inbox transaction: every file of the
 *                 room goes (its rows deleted, its ids in the trash), and
 *                 after commit its bytes are removed (store.c). From the
 *                 event on, the room's files answer 404 FILE_NOT_FOUND:
 *                 the replica says nobody is a member, and the rows are
 *                 gone. Deleting a room is final, so its files are too.
 */
#include <string.h>

#include "files.h"

static int after_room_event(ag_db *db, const ag_event *ev, void *ud, char *why, size_t n)
{
    if (strcmp(ev->type, "room.deleted") != 0) return 0;
    const char *room = json_string_value(json_object_get(ev->data, "roomId"));
    if (!room || !*room) room = ev->subject;
    if (!room || !*room) return 0;
    int64_t count = 0;
    int rc = files_trash_room(db, room, &count);
    if (rc < 0) {
        snprintf(why, n, "removing the room's files: %s", ag_db_error(db));
        return rc;
    }
    if (count > 0)
        ag_info("room deleted: its files go", AG_FS("roomId", room), AG_FI("files", count));
    return 0;
}

int files_subscribe(ag_bus *bus)
{
    return chat_members_subscribe(bus, after_room_event, NULL);
}
