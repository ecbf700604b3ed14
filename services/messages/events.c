/*
 * events.c — what agora-messages publishes and consumes
 * (docs/internals/chat.md, services/messages/README.md).
 *
 * Published through the outbox, each in the transaction of its change
 * (routes.c), subject = the message id:
 *   message.sent     {messageId, roomId, userId, username, content, replyTo,
 *                     attachment, seq, createdAt}
 *   message.updated  {messageId, roomId, userId, content, editedAt,
 *                     reactions:[{emoji, count, userIds}], seq}
 *                    (an edit, or a reaction added or removed)
 *   message.deleted  {messageId, roomId, userId, deletedBy, seq}
 *
 * Consumed, each in the transaction that records the event in the inbox:
 *   room.*           the membership replica (agora-chat's members.c)
 *   user.registered, user.updated {userId, username, ...}
 *                    the users projection: the name a new message carries
 */
#include <string.h>

#include "messages.h"

static json_t *text_or_null(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

static json_t *attachment_json(const msg_row *m)
{
    if (!m->has_file) return json_null();
    return json_pack("{s:s, s:s, s:I, s:s}", "fileId", m->file.file_id, "name", m->file.name,
                     "size", (json_int_t)m->file.size, "contentType", m->file.content_type);
}

int msg_publish_sent(ag_db *db, const msg_row *m)
{
    json_t *d =
        json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:I, s:s}", "messageId", m->id, "roomId",
                  m->room_id, "userId", m->user_id, "username", m->username, "content",
                  text_or_null(m->content), "replyTo", text_or_null(m->reply_to), "attachment",
                  attachment_json(m), "seq", (json_int_t)m->seq, "createdAt", m->created_at);
    if (!d) return AG_EINVAL;
    return ag_bus_publish(g_msg.bus, db, "message.sent", m->id, d, NULL);
}

int msg_publish_updated(ag_db *db, const msg_row *m, json_t *reactions)
{
    json_t *d =
        json_pack("{s:s, s:s, s:s, s:o, s:o, s:O, s:I}", "messageId", m->id, "roomId", m->room_id,
                  "userId", m->user_id, "content", text_or_null(m->content), "editedAt",
                  text_or_null(m->edited_at), "reactions", reactions, "seq", (json_int_t)m->seq);
    if (!d) return AG_EINVAL;
    return ag_bus_publish(g_msg.bus, db, "message.updated", m->id, d, NULL);
}

int msg_publish_deleted(ag_db *db, const msg_row *m, const char *by)
{
    json_t *d = json_pack("{s:s, s:s, s:s, s:s, s:I}", "messageId", m->id, "roomId", m->room_id,
                          "userId", m->user_id, "deletedBy", by, "seq", (json_int_t)m->seq);
    if (!d) return AG_EINVAL;
    return ag_bus_publish(g_msg.bus, db, "message.deleted", m->id, d, NULL);
}

static int on_user(ag_db *db, const ag_event *ev, void *ud, char *why, size_t n)
{
    const char *id = json_string_value(json_object_get(ev->data, "userId"));
    const char *name = json_string_value(json_object_get(ev->data, "username"));
    if (!id || !*id || strlen(id) > MSG_ID_MAX || !name || !*name) {
        /* Nothing this projection can use; the event is still consumed. */
        ag_warn("user event without userId or username", AG_FS("type", ev->type),
                AG_FS("id", ev->id));
        return 0;
    }
    int rc = msg_username_put(db, id, name, true);
    if (rc < 0) snprintf(why, n, "users projection: %s", ag_db_error(db));
    return rc;
}

int messages_subscribe(ag_bus *bus)
{
    int rc = chat_members_subscribe(bus, NULL, NULL);
    if (rc == 0) rc = ag_bus_subscribe(bus, "user.registered", on_user, NULL);
    if (rc == 0) rc = ag_bus_subscribe(bus, "user.updated", on_user, NULL);
    return rc;
}
