/*
 * store.c — agora-messages' SQL (schema/). Every value goes in as a
 * parameter; the only SQL built at run time is the IN (...) list of a
 * reactions lookup, made of $n placeholders.
 *
 * Positions in a room. msg_next_seq bumps the room's row of room_counters
 * with one upsert ... RETURNING inside the send's transaction. SQLite
 * serialises writers (BEGIN IMMEDIATE); on PostgreSQL two concurrent sends
 * to one room both write that row, so SERIALIZABLE makes one of them
 * conflict and ag_store_tx runs it again with the next number. Either way
 * no two messages of a room share a seq and a rolled-back send leaves no
 * hole; UNIQUE (room_id, seq) is the last guard.
 *
 * Full-text search differs per engine (schema/002_search.*): SQLite's FTS5
 * table messages_fts shares the message's rowid, PostgreSQL matches the
 * generated tsvector column messages.search. Both get the same query made
 * from the words of ?q= (runs of letters, digits and non-ASCII bytes;
 * everything else separates words and is dropped, so no search syntax from
 * a client reaches either engine), each a prefix, all required.
 */
#include <ctype.h>
#include <string.h>

#include "messages.h"

#define MSG_COLS                                                                                   \
    "m.id, m.room_id, m.user_id, m.username, m.reply_to, m.content, m.file_id, m.file_name,"       \
    " m.file_size, m.file_type, m.seq, m.edited, m.deleted, m.edited_at, m.created_at,"            \
    " m.updated_at"

static void copy_text(char *dst, size_t n, const char *s)
{
    snprintf(dst, n, "%s", s ? s : "");
}

void msg_row_release(msg_row *m)
{
    ag_free(m->content);
    ag_free(m->file.name);
    ag_free(m->file.content_type);
    m->content = m->file.name = m->file.content_type = NULL;
}

static void row_from(ag_rows *r, void *out)
{
    msg_row *m = out;
    memset(m, 0, sizeof *m);
    ag_rows_copy(r, 0, m->id, sizeof m->id);
    ag_rows_copy(r, 1, m->room_id, sizeof m->room_id);
    ag_rows_copy(r, 2, m->user_id, sizeof m->user_id);
    ag_rows_copy(r, 3, m->username, sizeof m->username);
    ag_rows_copy(r, 4, m->reply_to, sizeof m->reply_to);
    if (!ag_rows_is_null(r, 5)) m->content = ag_strdup(ag_rows_text(r, 5));
    if (!ag_rows_is_null(r, 6)) {
        m->has_file = true;
        ag_rows_copy(r, 6, m->file.file_id, sizeof m->file.file_id);
        m->file.name = ag_strdup(ag_rows_text(r, 7) ? ag_rows_text(r, 7) : "");
        m->file.size = ag_rows_int(r, 8);
        m->file.content_type = ag_strdup(ag_rows_text(r, 9) ? ag_rows_text(r, 9) : "");
    }
    m->seq = ag_rows_int(r, 10);
    m->edited = ag_rows_int(r, 11) != 0;
    m->deleted = ag_rows_int(r, 12) != 0;
    ag_rows_copy(r, 13, m->edited_at, sizeof m->edited_at);
    ag_rows_copy(r, 14, m->created_at, sizeof m->created_at);
    ag_rows_copy(r, 15, m->updated_at, sizeof m->updated_at);
}

int msg_get(ag_db *db, const char *id, msg_row *out)
{
    ag_val p[] = {AG_VTEXT(id)};
    return ag_db_query_one(db, "SELECT " MSG_COLS " FROM messages m WHERE m.id = $1", p, 1,
                           row_from, out);
}

int msg_next_seq(ag_db *db, const char *room, int64_t *seq)
{
    ag_val p[] = {AG_VTEXT(room)};
    return ag_db_query_int(db,
                           "INSERT INTO room_counters (room_id, last_seq) VALUES ($1, 1)"
                           " ON CONFLICT (room_id) DO UPDATE"
                           " SET last_seq = room_counters.last_seq + 1 RETURNING last_seq",
                           p, 1, seq);
}

int msg_insert(ag_db *db, const msg_row *m)
{
    ag_val p[] = {AG_VTEXT(m->id),
                  AG_VTEXT(m->room_id),
                  AG_VINT(m->seq),
                  AG_VTEXT(m->user_id),
                  AG_VTEXT(m->username),
                  AG_VTEXT(m->content),
                  AG_VTEXT(m->reply_to[0] ? m->reply_to : NULL),
                  AG_VTEXT(m->has_file ? m->file.file_id : NULL),
                  AG_VTEXT(m->has_file ? m->file.name : NULL),
                  m->has_file ? AG_VINT(m->file.size) : AG_VNULL,
                  AG_VTEXT(m->has_file ? m->file.content_type : NULL),
                  AG_VTEXT(m->created_at)};
    return ag_db_exec(db,
                      "INSERT INTO messages (id, room_id, seq, user_id, username, content,"
                      " reply_to, file_id, file_name, file_size, file_type, created_at,"
                      " updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,"
                      " $12)",
                      p, 12, NULL);
}

int msg_set_content(ag_db *db, const char *id, const char *content, const char *ts)
{
    ag_val p[] = {AG_VTEXT(id), AG_VTEXT(content), AG_VTEXT(ts)};
    return ag_db_exec(db,
                      "UPDATE messages SET content = $2, edited = 1, edited_at = $3,"
                      " updated_at = $3 WHERE id = $1 AND deleted = 0",
                      p, 3, NULL);
}

int msg_mark_deleted(ag_db *db, const char *id, const char *by, const char *ts)
{
    ag_val p[] = {AG_VTEXT(id), AG_VTEXT(by), AG_VTEXT(ts)};
    int rc = ag_db_exec(db, "DELETE FROM reactions WHERE message_id = $1", p, 1, NULL);
    if (rc == 0)
        rc = ag_db_exec(db,
                        "UPDATE messages SET deleted = 1, deleted_by = $2, content = NULL,"
                        " file_id = NULL, file_name = NULL, file_size = NULL, file_type = NULL,"
                        " updated_at = $3 WHERE id = $1",
                        p, 3, NULL);
    return rc;
}

int msg_touch(ag_db *db, const char *id, const char *ts)
{
    ag_val p[] = {AG_VTEXT(id), AG_VTEXT(ts)};
    return ag_db_exec(db, "UPDATE messages SET updated_at = $2 WHERE id = $1", p, 2, NULL);
}

int msg_reaction_add(ag_db *db, const char *id, const char *emoji, const char *user, const char *ts,
                     bool *changed)
{
    ag_val p[] = {AG_VTEXT(id), AG_VTEXT(emoji), AG_VTEXT(user), AG_VTEXT(ts)};
    int64_t n = 0;
    int rc = ag_db_exec(db,
                        "INSERT INTO reactions (message_id, emoji, user_id, created_at)"
                        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        p, 4, &n);
    *changed = rc == 0 && n > 0;
    return rc;
}

int msg_reaction_remove(ag_db *db, const char *id, const char *emoji, const char *user,
                        bool *changed)
{
    ag_val p[] = {AG_VTEXT(id), AG_VTEXT(emoji), AG_VTEXT(user)};
    int64_t n = 0;
    int rc = ag_db_exec(db,
                        "DELETE FROM reactions WHERE message_id = $1 AND emoji = $2"
                        " AND user_id = $3",
                        p, 3, &n);
    *changed = rc == 0 && n > 0;
    return rc;
}

/* Appends (emoji, user) to the summary `arr`, keeping the emoji's first place. */
static void reaction_fold(json_t *arr, const char *emoji, const char *user)
{
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "emoji")), emoji) == 0) {
            json_array_append_new(json_object_get(e, "userIds"), json_string(user));
            json_object_set_new(e, "count",
                                json_integer(json_integer_value(json_object_get(e, "count")) + 1));
            return;
        }
    }
    json_array_append_new(
        arr, json_pack("{s:s, s:i, s:[s]}", "emoji", emoji, "count", 1, "userIds", user));
}

json_t *msg_reactions_json(ag_db *db, const char *id)
{
    ag_val p[] = {AG_VTEXT(id)};
    ag_rows *r;
    if (ag_db_query(db,
                    "SELECT emoji, user_id FROM reactions WHERE message_id = $1"
                    " ORDER BY created_at, user_id",
                    p, 1, &r) < 0)
        return NULL;
    json_t *arr = json_array();
    int rc;
    while ((rc = ag_rows_next(r)) == 1)
        reaction_fold(arr, ag_rows_text(r, 0), ag_rows_text(r, 1));
    ag_rows_free(r);
    if (rc < 0) {
        json_decref(arr);
        return NULL;
    }
    return arr;
}

static json_t *text_or_null(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

json_t *msg_json(const msg_row *m, json_t *reactions)
{
    json_t *att = json_null();
    if (m->has_file)
        att = json_pack("{s:s, s:s, s:I, s:s}", "fileId", m->file.file_id, "name", m->file.name,
                        "size", (json_int_t)m->file.size, "contentType", m->file.content_type);
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:I, s:b, s:b, s:o, s:s, s:s}", "id",
                     m->id, "roomId", m->room_id, "userId", m->user_id, "username", m->username,
                     "content", m->content ? json_string(m->content) : json_null(), "replyTo",
                     text_or_null(m->reply_to), "attachment", att, "reactions",
                     reactions ? reactions : json_array(), "seq", (json_int_t)m->seq, "edited",
                     m->edited, "deleted", m->deleted, "editedAt", text_or_null(m->edited_at),
                     "createdAt", m->created_at, "updatedAt", m->updated_at);
}

static int rows_into(ag_db *db, const char *sql, const ag_val *p, int n, json_t *arr)
{
    ag_rows *r;
    int rc = ag_db_query(db, sql, p, n, &r);
    if (rc < 0) return rc;
    while ((rc = ag_rows_next(r)) == 1) {
        msg_row m;
        row_from(r, &m);
        json_array_append_new(arr, msg_json(&m, NULL));
        msg_row_release(&m);
    }
    ag_rows_free(r);
    return rc < 0 ? rc : 0;
}

/* One lookup of the reactions of arr[from, from + n), n <= REACTIONS_BATCH
 * (the store takes at most 64 parameters a statement). */
#define REACTIONS_BATCH 50

static int attach_batch(ag_db *db, json_t *arr, size_t from, size_t n)
{
    ag_buf sql;
    ag_buf_init(&sql, 0);
    ag_buf_appends(&sql, "SELECT message_id, emoji, user_id FROM reactions WHERE message_id IN (");
    ag_val p[REACTIONS_BATCH];
    json_t *byid = json_object();
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(arr, from + i);
        const char *id = json_string_value(json_object_get(m, "id"));
        p[i] = AG_VTEXT(id);
        json_object_set(byid, id, json_object_get(m, "reactions"));
        ag_buf_printf(&sql, "%s$%zu", i ? ", " : "", i + 1);
    }
    ag_buf_appends(&sql, ") ORDER BY created_at, user_id");
    ag_rows *r;
    int rc = ag_db_query(db, sql.data, p, (int)n, &r);
    if (rc == 0) {
        while ((rc = ag_rows_next(r)) == 1) {
            json_t *summary = json_object_get(byid, ag_rows_text(r, 0));
            if (summary) reaction_fold(summary, ag_rows_text(r, 1), ag_rows_text(r, 2));
        }
        ag_rows_free(r);
    }
    json_decref(byid);
    ag_buf_release(&sql);
    return rc < 0 ? rc : 0;
}

int msg_attach_reactions(ag_db *db, json_t *arr)
{
    size_t total = json_array_size(arr);
    int rc = 0;
    for (size_t from = 0; rc == 0 && from < total; from += REACTIONS_BATCH)
        rc = attach_batch(db, arr, from,
                          total - from < REACTIONS_BATCH ? total - from : REACTIONS_BATCH);
    return rc;
}

int msg_history(ag_db *db, const char *room, int64_t before_seq, int64_t limit, json_t *arr,
                bool *more)
{
    ag_val p[] = {AG_VTEXT(room), AG_VINT(before_seq), AG_VINT(limit + 1)};
    int rc = rows_into(db,
                       "SELECT " MSG_COLS " FROM messages m WHERE m.room_id = $1 AND m.seq < $2"
                       " ORDER BY m.seq DESC LIMIT $3",
                       p, 3, arr);
    if (rc < 0) return rc;
    *more = (int64_t)json_array_size(arr) > limit;
    if (*more) json_array_remove(arr, json_array_size(arr) - 1);
    return msg_attach_reactions(db, arr);
}

/* The words of `q` as the engine's full-text query; the number of words. */
static int search_words(const char *q, bool sqlite, ag_buf *out)
{
    int words = 0;
    const unsigned char *s = (const unsigned char *)q;
    for (;;) {
        while (*s && !isalnum(*s) && *s < 0x80)
            s++;
        const unsigned char *w = s;
        while (*s && (isalnum(*s) || *s >= 0x80))
            s++;
        if (s == w || words == MSG_SEARCH_WORDS) break;
        if (words++) ag_buf_appends(out, sqlite ? " " : " & ");
        ag_buf_appends(out, sqlite ? "\"" : "'");
        ag_buf_append(out, w, (size_t)(s - w));
        ag_buf_appends(out, sqlite ? "\"*" : "':*");
    }
    return words;
}

/* $1 the user, $2 the full-text query, $3 the limit, $4 the room. */
#define SEARCH_FROM                                                                                \
    "SELECT " MSG_COLS " FROM messages m JOIN chat_members cm ON cm.room_id = m.room_id"           \
    " AND cm.user_id = $1 AND cm.role IS NOT NULL LEFT JOIN chat_rooms cr"                         \
    " ON cr.room_id = m.room_id WHERE COALESCE(cr.deleted, 0) = 0 AND m.deleted = 0"
#define SEARCH_SQLITE " AND m.rowid IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH $2)"
#define SEARCH_POSTGRES " AND m.search @@ to_tsquery('simple', $2)"
#define SEARCH_ROOM " AND m.room_id = $4"
#define SEARCH_ORDER " ORDER BY m.created_at DESC, m.id DESC LIMIT $3"

int msg_search(ag_db *db, const char *user, const char *room, const char *q, int64_t limit,
               json_t *arr, int *words)
{
    bool sqlite = ag_store_engine_of(ag_db_store(db)) == AG_STORE_SQLITE;
    ag_buf fts;
    ag_buf_init(&fts, 0);
    *words = search_words(q, sqlite, &fts);
    if (*words == 0) {
        ag_buf_release(&fts);
        return 0;
    }
    static const char *const sql[2][2] = {
        {SEARCH_FROM SEARCH_POSTGRES SEARCH_ORDER,
         SEARCH_FROM SEARCH_POSTGRES SEARCH_ROOM SEARCH_ORDER},
        {SEARCH_FROM SEARCH_SQLITE SEARCH_ORDER,
         SEARCH_FROM SEARCH_SQLITE SEARCH_ROOM SEARCH_ORDER},
    };
    ag_val p[] = {AG_VTEXT(user), AG_VTEXT(fts.data), AG_VINT(limit), AG_VTEXT(room)};
    int rc = rows_into(db, sql[sqlite][room != NULL], p, room ? 4 : 3, arr);
    ag_buf_release(&fts);
    if (rc == 0) rc = msg_attach_reactions(db, arr);
    return rc;
}

int msg_marker_advance(ag_db *db, const char *room, const char *user, int64_t seq, const char *id,
                       const char *ts)
{
    ag_val p[] = {AG_VTEXT(room), AG_VTEXT(user), AG_VINT(seq), AG_VTEXT(id), AG_VTEXT(ts)};
    return ag_db_exec(db,
                      "INSERT INTO read_markers (room_id, user_id, last_seq, last_id, updated_at)"
                      " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, user_id) DO UPDATE"
                      " SET last_seq = excluded.last_seq, last_id = excluded.last_id,"
                      " updated_at = excluded.updated_at"
                      " WHERE read_markers.last_seq < excluded.last_seq",
                      p, 5, NULL);
}

int msg_marker_get(ag_db *db, const char *room, const char *user, char *last_id, size_t n,
                   int64_t *seq)
{
    ag_val p[] = {AG_VTEXT(room), AG_VTEXT(user)};
    ag_rows *r;
    *seq = 0;
    last_id[0] = '\0';
    int rc = ag_db_query(db,
                         "SELECT last_seq, last_id FROM read_markers WHERE room_id = $1"
                         " AND user_id = $2",
                         p, 2, &r);
    if (rc < 0) return rc;
    rc = ag_rows_next(r);
    if (rc == 1) {
        *seq = ag_rows_int(r, 0);
        copy_text(last_id, n, ag_rows_text(r, 1));
    }
    ag_rows_free(r);
    return rc < 0 ? rc : 0;
}

int msg_unread_count(ag_db *db, const char *room, const char *user, int64_t seq, int64_t *count)
{
    ag_val p[] = {AG_VTEXT(room), AG_VTEXT(user), AG_VINT(seq)};
    return ag_db_query_int(db,
                           "SELECT COUNT(*) FROM messages WHERE room_id = $1 AND seq > $3"
                           " AND user_id <> $2 AND deleted = 0",
                           p, 3, count);
}

int msg_unread_all(ag_db *db, const char *user, json_t *arr)
{
    ag_val p[] = {AG_VTEXT(user)};
    ag_rows *r;
    int rc = ag_db_query(
        db,
        "SELECT cm.room_id, (SELECT COUNT(*) FROM messages x WHERE x.room_id = cm.room_id"
        " AND x.seq > COALESCE(rm.last_seq, 0) AND x.user_id <> $1 AND x.deleted = 0),"
        " rm.last_id FROM chat_members cm LEFT JOIN chat_rooms cr ON cr.room_id = cm.room_id"
        " LEFT JOIN read_markers rm ON rm.room_id = cm.room_id AND rm.user_id = cm.user_id"
        " WHERE cm.user_id = $1 AND cm.role IS NOT NULL AND COALESCE(cr.deleted, 0) = 0"
        " ORDER BY cm.room_id",
        p, 1, &r);
    if (rc < 0) return rc;
    while ((rc = ag_rows_next(r)) == 1)
        json_array_append_new(arr, json_pack("{s:s, s:I, s:o}", "roomId", ag_rows_text(r, 0),
                                             "unread", (json_int_t)ag_rows_int(r, 1), "lastReadId",
                                             text_or_null(ag_rows_text(r, 2))));
    ag_rows_free(r);
    return rc < 0 ? rc : 0;
}

int msg_username_get(ag_db *db, const char *user, char *out, size_t n)
{
    ag_val p[] = {AG_VTEXT(user)};
    return ag_db_query_text(db, "SELECT username FROM user_names WHERE user_id = $1", p, 1, out, n);
}

int msg_username_put(ag_db *db, const char *user, const char *name, bool overwrite)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VTEXT(user), AG_VTEXT(name), AG_VTEXT(ts)};
    return ag_db_exec(db,
                      overwrite ? "INSERT INTO user_names (user_id, username, updated_at)"
                                  " VALUES ($1, $2, $3) ON CONFLICT (user_id) DO UPDATE"
                                  " SET username = excluded.username,"
                                  " updated_at = excluded.updated_at"
                                : "INSERT INTO user_names (user_id, username, updated_at)"
                                  " VALUES ($1, $2, $3) ON CONFLICT (user_id) DO NOTHING",
                      p, 3, NULL);
}
