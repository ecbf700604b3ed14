/*
 * routes.c — agora-messages' HTTP API (services/messages/README.md). Every
 * route needs a verified caller.
 *
 *   POST   /v1/messages                        send (members; rate limited)
 *   GET    /v1/messages?roomId=&before=&limit= history, newest first
 *   GET    /v1/messages/search?q=&roomId=&limit=
 *   GET    /v1/messages/unread                 per room the caller is in
 *   POST   /v1/messages/read                   move the read marker forward
 *   GET    /v1/messages/:id
 *   PATCH  /v1/messages/:id                    the author
 *   DELETE /v1/messages/:id                    the author, a room owner/admin
 *   POST   /v1/messages/:id/reactions
 *   DELETE /v1/messages/:id/reactions/:emoji
 *
 * Who may: only members of a room read or write its messages
 * (chat_member_check: the replica, then agora-rooms on a miss); anyone else
 * gets 404 ROOM_NOT_FOUND or MESSAGE_NOT_FOUND, the answer for a room or a
 * message that does not exist. Membership is checked before a write's
 * transaction (the check may call agora-rooms, which must not happen with a
 * transaction open); the message itself is read again inside it.
 *
 * Every change runs in one ag_store_tx with its outbox event, and the
 * answer goes out after the commit: a 201 means the message is on disk. A
 * transaction function may run more than once (conflicts), so each one
 * resets what it reports first.
 */
#include <string.h>

#include "agora/websocket.h"
#include "messages.h"

/* ---- Helpers ----------------------------------------------------------------------------- */

static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80) n++;
    return n;
}

static bool blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r') return false;
    return true;
}

/* An emoji (any short token really): 1..MSG_EMOJI_MAX bytes of UTF-8 with
 * no control character and no white space, ASCII or Unicode. */
static bool emoji_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > MSG_EMOJI_MAX || !ag_ws_utf8_valid(s, n)) return false;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n; i++) {
        if (p[i] <= 0x20 || p[i] == 0x7F) return false;
        if (p[i] == 0xC2 && i + 1 < n && (p[i + 1] == 0x85 || p[i + 1] == 0xA0)) return false;
        if (p[i] == 0xE1 && i + 2 < n && p[i + 1] == 0x9A && p[i + 2] == 0x80) return false;
        if (p[i] == 0xE2 && i + 2 < n && p[i + 1] == 0x80 &&
            (p[i + 2] <= 0x8A || p[i + 2] == 0xA8 || p[i + 2] == 0xA9 || p[i + 2] == 0xAF))
            return false;
        if (p[i] == 0xE2 && i + 2 < n && p[i + 1] == 0x81 && p[i + 2] == 0x9F) return false;
        if (p[i] == 0xE3 && i + 2 < n && p[i + 1] == 0x80 && p[i + 2] == 0x80) return false;
    }
    return true;
}

/* The body, first of all UTF-8 (the JSON parser would call bad bytes
 * malformed, 400, but they are a problem with a field's value: 422), then
 * JSON; NULL after answering. Otherwise `v` is initialised with a problem
 * recorded for a body that is not an object or for fields not in
 * `allowed`; the route reads its fields only from an object, and releases
 * `v` and the body. */
static json_t *object_body(ag_http_req *req, ag_http_res *res, ag_validator *v,
                           const char *const *allowed)
{
    size_t len;
    const char *raw = ag_req_body(req, &len);
    if (raw && len && !ag_ws_utf8_valid(raw, len)) {
        ag_v_init(v);
        ag_v_fail(v, "content", "the body is not valid UTF-8");
        ag_res_validation(res, v);
        return NULL;
    }
    return ag_req_json_object(req, res, v, allowed);
}

/* Checks `content`: required unless `optional`, a string of at most the
 * limit's characters, not only white space. Sets *too_long. */
static const char *content_field(ag_validator *v, json_t *body, bool optional, bool *too_long)
{
    json_t *c = json_object_get(body, "content");
    *too_long = false;
    if (!c || json_is_null(c)) {
        if (!optional) ag_v_fail(v, "content", "content is required");
        return NULL;
    }
    if (!json_is_string(c)) {
        ag_v_fail(v, "content", "content must be a string");
        return NULL;
    }
    const char *s = json_string_value(c);
    if (utf8_chars(s) > g_msg.max_chars) {
        *too_long = true;
        ag_v_fail(v, "content", "content must be at most %zu characters", g_msg.max_chars);
        return NULL;
    }
    if (blank(s)) {
        if (!optional) ag_v_fail(v, "content", "content must not be empty");
        return NULL;
    }
    return s;
}

/* Answers the validator's problems: 422 CONTENT_TOO_LONG when the content
 * was too long, else 422 VALIDATION_FAILED. */
static void refuse(ag_http_res *res, ag_validator *v, bool too_long)
{
    if (!too_long) {
        ag_res_validation(res, v);
        return;
    }
    char msg[96];
    snprintf(msg, sizeof msg, "content must be at most %zu characters", g_msg.max_chars);
    ag_res_error(res, 422, "CONTENT_TOO_LONG", msg, json_incref(v->details));
    ag_v_release(v);
}

static const char *auth_of(ag_http_req *req)
{
    return ag_req_header(req, "Authorization");
}

/* 0 when `me` is a member of `room` (role filled); otherwise answered:
 * 404 `code` for a non-member (or a deleted or unknown room), 503 when the
 * replica missed and agora-rooms could not say. */
static int member_or_answer(ag_http_req *req, ag_http_res *res, const char *room,
                            const ag_caller *me, char role[CHAT_ROLE_MAX], const char *code,
                            const char *what)
{
    int rc = chat_member_check(g_msg.store, g_msg.rooms, room, me->id, auth_of(req),
                               ag_req_deadline(req), ag_req_id(req), role);
    if (rc == 0) return 0;
    if (rc == AG_ENOTFOUND)
        ag_res_error(res, 404, code, what, NULL);
    else if (rc == AG_EUNAVAIL)
        ag_res_error(res, 503, "ROOMS_UNAVAILABLE",
                     "membership cannot be checked right now; try again", NULL);
    else
        ag_res_internal(req, res, "membership check failed", rc);
    return rc;
}

/* The message `id` when `me` may read it (role in its room filled);
 * otherwise answered 404 MESSAGE_NOT_FOUND (or 503/500). */
static int visible_message(ag_http_req *req, ag_http_res *res, const char *id, const ag_caller *me,
                           msg_row *m, char role[CHAT_ROLE_MAX])
{
    static const char k_none[] = "no such message";
    if (!chat_id_ok(id)) {
        ag_res_error(res, 404, "MESSAGE_NOT_FOUND", k_none, NULL);
        return AG_ENOTFOUND;
    }
    ag_db *db;
    int rc = ag_store_db(g_msg.store, &db);
    if (rc == 0) rc = msg_get(db, id, m);
    if (rc == AG_ENOTFOUND) {
        ag_res_error(res, 404, "MESSAGE_NOT_FOUND", k_none, NULL);
        return rc;
    }
    if (rc < 0) {
        ag_res_internal(req, res, "message read failed", rc);
        return rc;
    }
    rc = member_or_answer(req, res, m->room_id, me, role, "MESSAGE_NOT_FOUND", k_none);
    if (rc < 0) msg_row_release(m);
    return rc;
}

/* The message with its reactions, answered with `status`. */
static void answer_message(ag_http_req *req, ag_http_res *res, const char *id, int status)
{
    ag_db *db;
    msg_row m;
    int rc = ag_store_db(g_msg.store, &db);
    if (rc == 0) rc = msg_get(db, id, &m);
    if (ag_res_rc(req, res, rc, NULL, "message read failed")) return;
    json_t *reactions = msg_reactions_json(db, id);
    if (!reactions) {
        msg_row_release(&m);
        ag_res_internal(req, res, "reactions read failed", AG_EIO);
        return;
    }
    ag_res_ok(res, status, msg_json(&m, reactions));
    msg_row_release(&m);
}

/* ---- Who is writing: the name a message carries ----------------------------------------- */

/* The users projection; for a user whose user.registered has not arrived,
 * agora-users' GET /v1/users/me with their own token (kept, without
 * overwriting what an event brings); when agora-users cannot say either, the
 * local part of the token's e-mail address. */
static void username_of(ag_http_req *req, const ag_caller *me, char *out, size_t n)
{
    ag_db *db = NULL;
    if (ag_store_db(g_msg.store, &db) < 0) db = NULL;
    if (db && msg_username_get(db, me->id, out, n) == 0 && *out) return;
    ag_peer_reply rep;
    if (ag_peer_call(g_msg.users, "GET", "/v1/users/me", NULL, auth_of(req), ag_req_deadline(req),
                     ag_req_id(req), &rep) == 0) {
        const char *name =
            json_string_value(json_object_get(json_object_get(rep.doc, "data"), "username"));
        if (rep.status == 200 && name && *name) {
            snprintf(out, n, "%s", name);
            if (db && msg_username_put(db, me->id, name, false) < 0)
                ag_warn("could not keep a username", AG_FS("userId", me->id));
            ag_peer_reply_clear(&rep);
            return;
        }
        ag_peer_reply_clear(&rep);
    }
    const char *at = strchr(me->email, '@');
    size_t len = at ? (size_t)(at - me->email) : strlen(me->email);
    if (len == 0) {
        snprintf(out, n, "%s", me->id);
        return;
    }
    snprintf(out, n, "%.*s", (int)len, me->email);
}

/* ---- Send -------------------------------------------------------------------------------- */

/* The file `id` from agora-files, asked with the caller's own token: 0 and
 * `att` filled when it exists and belongs to `room`; AG_ENOTFOUND; or
 * AG_EUNAVAIL. */
static int file_lookup(ag_http_req *req, const char *id, const char *room, msg_attachment *att)
{
    char path[64 + MSG_ID_MAX];
    snprintf(path, sizeof path, "/v1/files/%s", id);
    ag_peer_reply rep;
    int rc = ag_peer_call(g_msg.files, "GET", path, NULL, auth_of(req), ag_req_deadline(req),
                          ag_req_id(req), &rep);
    if (rc < 0) return AG_EUNAVAIL;
    json_t *d = json_object_get(rep.doc, "data");
    const char *froom = json_string_value(json_object_get(d, "roomId"));
    const char *name = json_string_value(json_object_get(d, "name"));
    const char *type = json_string_value(json_object_get(d, "contentType"));
    json_t *size = json_object_get(d, "size");
    if (rep.status >= 500) {
        rc = AG_EUNAVAIL;
    } else if (rep.status != 200 || !froom || strcmp(froom, room) != 0) {
        rc = AG_ENOTFOUND;
    } else if (!name || !json_is_integer(size)) {
        ag_warn("agora-files described a file unexpectedly", AG_FS("fileId", id));
        rc = AG_EUNAVAIL;
    } else {
        snprintf(att->file_id, sizeof att->file_id, "%s", id);
        att->name = ag_strdup(name);
        att->content_type = ag_strdup(type ? type : "application/octet-stream");
        att->size = json_integer_value(size);
        rc = 0;
    }
    ag_peer_reply_clear(&rep);
    return rc;
}

static int send_tx(ag_db *db, void *ud)
{
    msg_row *m = ud;
    int rc = msg_next_seq(db, m->room_id, &m->seq);
    if (rc == 0) rc = msg_insert(db, m);
    if (rc == 0) rc = msg_publish_sent(db, m);
    return rc;
}

static void post_message(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    static const char *const allowed[] = {"roomId", "content", "replyTo", "fileId", NULL};
    ag_validator v;
    json_t *body = object_body(req, res, &v, allowed);
    if (!body) return;
    const char *room = NULL, *content = NULL, *reply = NULL, *file = NULL;
    bool too_long = false;
    if (json_is_object(body)) {
        room = ag_v_str(&v, body, "roomId", AG_V_REQUIRED, 1, MSG_ID_MAX);
        if (room && !chat_id_ok(room)) ag_v_fail(&v, "roomId", "roomId must be a room id");
        reply = ag_v_str(&v, body, "replyTo", AG_V_NULLABLE, 1, MSG_ID_MAX);
        if (reply && !chat_id_ok(reply)) ag_v_fail(&v, "replyTo", "replyTo must be a message id");
        file = ag_v_str(&v, body, "fileId", AG_V_NULLABLE, 1, MSG_ID_MAX);
        if (file && !chat_id_ok(file)) ag_v_fail(&v, "fileId", "fileId must be a file id");
        content = content_field(&v, body, file != NULL, &too_long);
    }
    if (!ag_v_ok(&v)) {
        refuse(res, &v, too_long);
        json_decref(body);
        return;
    }
    msg_row m;
    memset(&m, 0, sizeof m);
    char role[CHAT_ROLE_MAX];
    if (member_or_answer(req, res, room, me, role, "ROOM_NOT_FOUND", "no such room") < 0) goto out;
    ag_db *db;
    int rc = ag_store_db(g_msg.store, &db);
    if (rc == 0 && reply) {
        msg_row target;
        rc = msg_get(db, reply, &target);
        bool same = rc == 0 && strcmp(target.room_id, room) == 0;
        if (rc == 0) msg_row_release(&target);
        if (rc == 0 || rc == AG_ENOTFOUND) rc = 0;
        if (rc == 0 && !same) {
            ag_v_fail(&v, "replyTo", "replyTo must be a message of the same room");
            ag_res_validation(res, &v);
            goto out;
        }
    }
    if (rc < 0) {
        ag_res_internal(req, res, "reply target read failed", rc);
        goto out;
    }
    if (file) {
        rc = file_lookup(req, file, room, &m.file);
        if (rc == AG_ENOTFOUND) {
            ag_v_fail(&v, "fileId", "fileId must be a file uploaded to this room");
            ag_res_error(res, 422, "FILE_NOT_FOUND", "no such file in this room",
                         json_incref(v.details));
            goto out;
        }
        if (rc < 0) {
            ag_res_error(res, 503, "FILES_UNAVAILABLE",
                         "the attachment cannot be checked right now; try again", NULL);
            goto out;
        }
        m.has_file = true;
    }
    int retry = 1;
    if (!msg_limiter_take(me->id, &retry)) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", retry);
        ag_res_header(res, "Retry-After", ra);
        ag_res_error(res, 429, "RATE_LIMITED", "too many messages; slow down", NULL);
        goto out;
    }
    ag_id_new_str(m.id);
    snprintf(m.room_id, sizeof m.room_id, "%s", room);
    snprintf(m.user_id, sizeof m.user_id, "%s", me->id);
    username_of(req, me, m.username, sizeof m.username);
    if (reply) snprintf(m.reply_to, sizeof m.reply_to, "%s", reply);
    if (content) m.content = ag_strdup(content);
    ag_time_now(m.created_at, 32);
    memcpy(m.updated_at, m.created_at, sizeof m.updated_at);
    rc = ag_store_tx(g_msg.store, send_tx, &m);
    if (rc < 0) {
        ag_res_internal(req, res, "send failed", rc);
        goto out;
    }
    ag_res_ok(res, 201, msg_json(&m, NULL));
out:
    ag_v_release(&v);
    msg_row_release(&m);
    json_decref(body);
}

/* ---- Read -------------------------------------------------------------------------------- */

static void list_messages(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    ag_validator v;
    ag_v_init(&v);
    const char *room = ag_req_query(req, "roomId");
    const char *before = ag_req_query(req, "before");
    int64_t limit = ag_v_query_int(&v, req, "limit", MSG_PAGE_DEFAULT, 1, MSG_PAGE_MAX);
    if (!room || !*room)
        ag_v_fail(&v, "roomId", "roomId is required");
    else if (!chat_id_ok(room))
        ag_v_fail(&v, "roomId", "roomId must be a room id");
    if (before && !chat_id_ok(before)) ag_v_fail(&v, "before", "before must be a message id");
    if (!ag_v_ok(&v)) {
        ag_res_validation(res, &v);
        return;
    }
    char role[CHAT_ROLE_MAX];
    if (member_or_answer(req, res, room, me, role, "ROOM_NOT_FOUND", "no such room") < 0) {
        ag_v_release(&v);
        return;
    }
    ag_db *db;
    int rc = ag_store_db(g_msg.store, &db);
    int64_t before_seq = INT64_MAX;
    if (rc == 0 && before) {
        msg_row b;
        rc = msg_get(db, before, &b);
        bool same = rc == 0 && strcmp(b.room_id, room) == 0;
        if (rc == 0) {
            before_seq = b.seq;
            msg_row_release(&b);
        }
        if (rc == 0 || rc == AG_ENOTFOUND) rc = 0;
        if (rc == 0 && !same) {
            ag_v_fail(&v, "before", "before must be a message of this room");
            ag_res_validation(res, &v);
            return;
        }
    }
    ag_v_release(&v);
    json_t *arr = json_array();
    bool more = false;
    if (rc == 0) rc = msg_history(db, room, before_seq, limit, arr, &more);
    if (rc < 0) {
        json_decref(arr);
        ag_res_internal(req, res, "history read failed", rc);
        return;
    }
    size_t n = json_array_size(arr);
    json_t *oldest = n ? json_object_get(json_array_get(arr, n - 1), "id") : NULL;
    ag_res_json(res, 200,
                json_pack("{s:b, s:o, s:{s:O, s:b}}", "success", 1, "data", arr, "cursor", "before",
                          oldest ? oldest : json_null(), "hasMore", more));
}

static void get_message(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    msg_row m;
    char role[CHAT_ROLE_MAX];
    if (visible_message(req, res, ag_req_param(req, "id"), me, &m, role) < 0) return;
    answer_message(req, res, m.id, 200);
    msg_row_release(&m);
}

static void search_messages(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    ag_validator v;
    ag_v_init(&v);
    const char *q = ag_req_query(req, "q");
    const char *room = ag_req_query(req, "roomId");
    int64_t limit = ag_v_query_int(&v, req, "limit", MSG_SEARCH_DEFAULT, 1, MSG_SEARCH_MAX);
    if (!q || blank(q))
        ag_v_fail(&v, "q", "q is required");
    else if (strlen(q) > 200 || !ag_ws_utf8_valid(q, strlen(q)))
        ag_v_fail(&v, "q", "q must be at most 200 bytes of UTF-8");
    if (room && !chat_id_ok(room)) ag_v_fail(&v, "roomId", "roomId must be a room id");
    if (!ag_v_passed(&v, res, NULL)) return;
    char role[CHAT_ROLE_MAX];
    if (room && member_or_answer(req, res, room, me, role, "ROOM_NOT_FOUND", "no such room") < 0)
        return;
    ag_db *db;
    json_t *arr = json_array();
    int words = 0;
    int rc = ag_store_db(g_msg.store, &db);
    if (rc == 0) rc = msg_search(db, me->id, room, q, limit, arr, &words);
    if (rc < 0) {
        json_decref(arr);
        ag_res_internal(req, res, "search failed", rc);
        return;
    }
    ag_res_ok(res, 200, arr);
}

static void get_unread(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    ag_db *db;
    json_t *arr = json_array();
    int rc = ag_store_db(g_msg.store, &db);
    if (rc == 0) rc = msg_unread_all(db, me->id, arr);
    if (rc < 0) {
        json_decref(arr);
        ag_res_internal(req, res, "unread read failed", rc);
        return;
    }
    ag_res_ok(res, 200, arr);
}

typedef struct read_ctx {
    const char *room, *user, *id;
    int64_t seq;
    char last_id[MSG_ID_MAX + 1];
    int64_t last_seq, unread;
} read_ctx;

static int read_tx(ag_db *db, void *ud)
{
    read_ctx *c = ud;
    char ts[32];
    ag_time_now(ts, 32);
    int rc = msg_marker_advance(db, c->room, c->user, c->seq, c->id, ts);
    if (rc == 0)
        rc = msg_marker_get(db, c->room, c->user, c->last_id, sizeof c->last_id, &c->last_seq);
    if (rc == 0) rc = msg_unread_count(db, c->room, c->user, c->last_seq, &c->unread);
    return rc;
}

static void post_read(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    static const char *const allowed[] = {"roomId", "messageId", NULL};
    ag_validator v;
    json_t *body = object_body(req, res, &v, allowed);
    if (!body) return;
    const char *room = NULL, *id = NULL;
    if (json_is_object(body)) {
        room = ag_v_str(&v, body, "roomId", AG_V_REQUIRED, 1, MSG_ID_MAX);
        if (room && !chat_id_ok(room)) ag_v_fail(&v, "roomId", "roomId must be a room id");
        id = ag_v_str(&v, body, "messageId", AG_V_REQUIRED, 1, MSG_ID_MAX);
        if (id && !chat_id_ok(id)) ag_v_fail(&v, "messageId", "messageId must be a message id");
    }
    if (!ag_v_passed(&v, res, body)) return;
    char role[CHAT_ROLE_MAX];
    ag_db *db;
    msg_row m;
    int rc = member_or_answer(req, res, room, me, role, "ROOM_NOT_FOUND", "no such room");
    if (rc < 0) goto out;
    rc = ag_store_db(g_msg.store, &db);
    if (rc == 0) rc = msg_get(db, id, &m);
    if (rc == 0 && strcmp(m.room_id, room) != 0) {
        msg_row_release(&m);
        rc = AG_ENOTFOUND;
    }
    if (rc == AG_ENOTFOUND) {
        ag_res_error(res, 404, "MESSAGE_NOT_FOUND", "no such message in this room", NULL);
        goto out;
    }
    if (rc < 0) {
        ag_res_internal(req, res, "message read failed", rc);
        goto out;
    }
    read_ctx c = {.room = room, .user = me->id, .id = id, .seq = m.seq};
    msg_row_release(&m);
    rc = ag_store_tx(g_msg.store, read_tx, &c);
    if (rc < 0) {
        ag_res_internal(req, res, "read marker failed", rc);
        goto out;
    }
    ag_res_ok(res, 200,
              json_pack("{s:s, s:s, s:I}", "roomId", room, "lastReadId", c.last_id, "unread",
                        (json_int_t)c.unread));
out:
    json_decref(body);
}

/* ---- Change ------------------------------------------------------------------------------ */

typedef enum change_op { CHANGE_EDIT, CHANGE_DELETE, CHANGE_REACT, CHANGE_UNREACT } change_op;

typedef struct change_ctx {
    change_op op;
    const char *id, *user, *content, *emoji;
    bool gone;    /* the message was deleted (by now) */
    bool changed; /* something changed and an event went out */
} change_ctx;

static int change_tx(ag_db *db, void *ud)
{
    change_ctx *c = ud;
    c->gone = c->changed = false;
    msg_row m;
    int rc = msg_get(db, c->id, &m);
    if (rc < 0) return rc;
    char ts[32];
    ag_time_now(ts, 32);
    if (m.deleted) {
        c->gone = true;
        msg_row_release(&m);
        return 0;
    }
    switch (c->op) {
    case CHANGE_EDIT:
        rc = msg_set_content(db, c->id, c->content, ts);
        c->changed = true;
        break;
    case CHANGE_DELETE:
        rc = msg_mark_deleted(db, c->id, c->user, ts);
        if (rc == 0) rc = msg_publish_deleted(db, &m, c->user);
        c->changed = true;
        msg_row_release(&m);
        return rc;
    case CHANGE_REACT:
        rc = msg_reaction_add(db, c->id, c->emoji, c->user, ts, &c->changed);
        break;
    case CHANGE_UNREACT:
        rc = msg_reaction_remove(db, c->id, c->emoji, c->user, &c->changed);
        break;
    }
    if (rc == 0 && c->changed && c->op != CHANGE_EDIT) rc = msg_touch(db, c->id, ts);
    if (rc == 0 && c->changed) {
        msg_row_release(&m);
        rc = msg_get(db, c->id, &m);
        if (rc < 0) return rc;
        json_t *reactions = msg_reactions_json(db, c->id);
        rc = reactions ? msg_publish_updated(db, &m, reactions) : AG_EIO;
        json_decref(reactions);
    }
    msg_row_release(&m);
    return rc;
}

/* Runs the change and answers with the message. */
static void change(ag_http_req *req, ag_http_res *res, change_ctx *c)
{
    int rc = ag_store_tx(g_msg.store, change_tx, c);
    if (rc < 0) {
        ag_res_internal(req, res, "message change failed", rc);
    } else if (c->gone && c->op != CHANGE_DELETE) {
        ag_res_error(res, 409, "MESSAGE_DELETED", "the message was deleted", NULL);
    } else {
        answer_message(req, res, c->id, 200);
    }
}

static void patch_message(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    static const char *const allowed[] = {"content", NULL};
    ag_validator v;
    json_t *body = object_body(req, res, &v, allowed);
    if (!body) return;
    const char *content = NULL;
    bool too_long = false;
    if (json_is_object(body)) {
        content = content_field(&v, body, false, &too_long);
    }
    if (!ag_v_ok(&v)) {
        refuse(res, &v, too_long);
        json_decref(body);
        return;
    }
    ag_v_release(&v);
    msg_row m;
    char role[CHAT_ROLE_MAX];
    if (visible_message(req, res, ag_req_param(req, "id"), me, &m, role) == 0) {
        if (strcmp(m.user_id, me->id) != 0) {
            ag_res_error(res, 403, "NOT_AUTHOR", "only the author edits a message", NULL);
        } else {
            change_ctx c = {.op = CHANGE_EDIT, .id = m.id, .user = me->id, .content = content};
            change(req, res, &c);
        }
        msg_row_release(&m);
    }
    json_decref(body);
}

static void delete_message(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    msg_row m;
    char role[CHAT_ROLE_MAX];
    if (visible_message(req, res, ag_req_param(req, "id"), me, &m, role) < 0) return;
    if (strcmp(m.user_id, me->id) != 0 && !chat_role_moderates(role)) {
        ag_res_error(res, 403, "FORBIDDEN",
                     "only the author or a room owner or admin deletes a message", NULL);
    } else {
        change_ctx c = {.op = CHANGE_DELETE, .id = m.id, .user = me->id};
        change(req, res, &c);
    }
    msg_row_release(&m);
}

static void react(ag_http_req *req, ag_http_res *res, const ag_caller *me, const char *emoji,
                  change_op op)
{
    msg_row m;
    char role[CHAT_ROLE_MAX];
    if (visible_message(req, res, ag_req_param(req, "id"), me, &m, role) < 0) return;
    change_ctx c = {.op = op, .id = m.id, .user = me->id, .emoji = emoji};
    change(req, res, &c);
    msg_row_release(&m);
}

static void post_reaction(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    static const char *const allowed[] = {"emoji", NULL};
    ag_validator v;
    json_t *body = object_body(req, res, &v, allowed);
    if (!body) return;
    const char *emoji = NULL;
    if (json_is_object(body)) {
        emoji = ag_v_str(&v, body, "emoji", AG_V_REQUIRED, 1, MSG_EMOJI_MAX);
        if (emoji && !emoji_ok(emoji))
            ag_v_fail(&v, "emoji", "emoji must be 1 to %d bytes without white space",
                      MSG_EMOJI_MAX);
    }
    if (!ag_v_passed(&v, res, body)) return;
    react(req, res, me, emoji, CHANGE_REACT);
    json_decref(body);
}

static void delete_reaction(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    const char *emoji = ag_req_param(req, "emoji");
    if (!emoji_ok(emoji)) {
        ag_validator v;
        ag_v_init(&v);
        ag_v_fail(&v, "emoji", "emoji must be 1 to %d bytes without white space", MSG_EMOJI_MAX);
        ag_res_validation(res, &v);
        return;
    }
    react(req, res, me, emoji, CHANGE_UNREACT);
}

void messages_routes(ag_router *r)
{
    ag_router_add(r, "POST", "/v1/messages", post_message, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "GET", "/v1/messages", list_messages, NULL, 0);
    ag_router_add(r, "GET", "/v1/messages/search", search_messages, NULL, 0);
    ag_router_add(r, "GET", "/v1/messages/unread", get_unread, NULL, 0);
    ag_router_add(r, "POST", "/v1/messages/read", post_read, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "GET", "/v1/messages/:id", get_message, NULL, 0);
    ag_router_add(r, "PATCH", "/v1/messages/:id", patch_message, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "DELETE", "/v1/messages/:id", delete_message, NULL, 0);
    ag_router_add(r, "POST", "/v1/messages/:id/reactions", post_reaction, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "DELETE", "/v1/messages/:id/reactions/:emoji", delete_reaction, NULL, 0);
}
