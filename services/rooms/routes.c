/*
 * routes.c — agora-rooms' HTTP API (services/rooms/README.md). Every route
 * needs a verified caller (401 otherwise).
 *
 *   POST   /v1/rooms                          anyone: creates, becomes owner
 *   GET    /v1/rooms                          public + own private (admins: all)
 *   GET    /v1/rooms/:id                      who may see it
 *   PATCH  /v1/rooms/:id                      owner, room admin
 *   DELETE /v1/rooms/:id                      owner, platform admin
 *   POST   /v1/rooms/:id/join                 anyone, public rooms only
 *   POST   /v1/rooms/:id/leave                members but the owner
 *   GET    /v1/rooms/:id/members              who may see the room
 *   GET    /v1/rooms/:id/members/:userId      the user, members, admins, services
 *   POST   /v1/rooms/:id/members              owner, room admin (admins: owner)
 *   PUT    /v1/rooms/:id/members/:userId      owner (role "owner": hand-over)
 *   DELETE /v1/rooms/:id/members/:userId      owner, room admin; self: leave
 *
 * Who sees a room: everyone a public one; a private one its members,
 * platform admins and services. Anyone else gets 404 ROOM_NOT_FOUND, the
 * answer for a room that does not exist, on every route.
 *
 * Every change is one ag_store_tx (room_tx, or create_tx and invite_tx):
 * it reads the room with the caller's role, decides (the route's
 * room_step), and either refuses (returns 0 having written nothing; the
 * route answers the refusal) or bumps the room's version (rooms_bump),
 * writes, publishes its room.* event into the outbox and builds the answer.
 * A transaction may run more than once (conflicts rerun it), so each starts
 * by resetting what it reports.
 */
#include <string.h>

#include "rooms.h"

/* ---- Helpers ------------------------------------------------------------------------------ */

static bool is_admin(const ag_caller *me)
{
    return strcmp(me->role, "admin") == 0;
}

static bool sees_all(const ag_caller *me)
{
    return is_admin(me) || strcmp(me->role, "service") == 0;
}

static bool visible(const rooms_room *r, const ag_caller *me)
{
    return !r->is_private || r->my_role[0] || sees_all(me);
}

static bool moderates(const char *role)
{
    return strcmp(role, "owner") == 0 || strcmp(role, "admin") == 0;
}

static const char *room_param(ag_http_req *req, ag_http_res *res)
{
    const char *id = ag_req_param(req, "id");
    if (!rooms_id_ok(id)) {
        ag_res_error(res, 404, "ROOM_NOT_FOUND", "no such room", NULL);
        return NULL;
    }
    return id;
}

/* A name: 1..ROOMS_NAME_MAX characters once trimmed, no control
 * characters; the trimmed copy goes into `out`. */
static void check_name(ag_validator *v, json_t *body, unsigned flags, char *out, size_t n,
                       bool *given)
{
    const char *s = ag_v_str(v, body, "name", flags, 1, ROOMS_NAME_MAX);
    *given = false;
    if (!s) return;
    while (*s == ' ' || *s == '\t')
        s++;
    size_t len = strlen(s);
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
            ag_v_fail(v, "name", "name must not contain control characters");
            return;
        }
    if (len == 0) {
        ag_v_fail(v, "name", "name must not be blank");
        return;
    }
    snprintf(out, n, "%.*s", (int)len, s);
    *given = true;
}

static bool check_role(ag_validator *v, json_t *body, unsigned flags, bool owner_ok, char *out)
{
    const char *s = ag_v_str(v, body, "role", flags, 1, ROOMS_ROLE_MAX);
    if (!s) return false;
    if (strcmp(s, "member") != 0 && strcmp(s, "admin") != 0 &&
        !(owner_ok && strcmp(s, "owner") == 0)) {
        ag_v_fail(v, "role",
                  owner_ok ? "role must be member, admin or owner"
                           : "role must be member or admin");
        return false;
    }
    snprintf(out, ROOMS_ROLE_MAX, "%s", s);
    return true;
}

/* ---- The shape of every change ------------------------------------------------------------ */

/* A change to one room, run inside the transaction after the room was read
 * as the caller sees it (room_tx): 0 with c->answer set or a refusal
 * recorded in `c`, or an error code that rolls the transaction back. */
typedef struct op op;
typedef int (*room_step)(ag_db *db, op *c, rooms_room *r);

struct op {
    const ag_caller *me;
    const char *room;
    const char *user; /* the member a route acts on */
    /* PATCH */
    char name[ROOMS_NAME_MAX * 4 + 1];
    const char *description;
    bool has_name, has_description, has_private, is_private;
    char role[ROOMS_ROLE_MAX]; /* invite, PUT */
    /* the outcome */
    int status;
    const char *code;
    const char *msg;
    json_t *answer;
    room_step step; /* what room_tx runs */
};

static void op_reset(op *c)
{
    c->status = 200;
    c->code = c->msg = NULL;
    json_decref(c->answer);
    c->answer = NULL;
}

static int refuse(op *c, int status, const char *code, const char *msg)
{
    c->status = status;
    c->code = code;
    c->msg = msg;
    return 0;
}

static int refuse_room(op *c)
{
    return refuse(c, 404, "ROOM_NOT_FOUND", "no such room");
}

/* Reads the room as the caller sees it: 0, or a refusal recorded (404). */
static int load_room(ag_db *db, op *c, rooms_room *r, bool *ok)
{
    *ok = false;
    int rc = rooms_get(db, c->room, c->me->id, r);
    if (rc == AG_ENOTFOUND || (rc == 0 && !visible(r, c->me))) return refuse_room(c);
    if (rc < 0) return rc;
    *ok = true;
    return 0;
}

/* The room as the caller sees it now, as the answer. */
static int answer_room(ag_db *db, op *c)
{
    rooms_room r;
    int rc = rooms_get(db, c->room, c->me->id, &r);
    if (rc == 0) c->answer = rooms_room_json(&r);
    return rc;
}

static void finish(ag_http_req *req, ag_http_res *res, op *c, int rc, const char *what, int status)
{
    if (rc < 0)
        ag_res_internal(req, res, what, rc);
    else if (c->code)
        ag_res_error(res, c->status, c->code, c->msg, NULL);
    else
        ag_res_ok(res, status, json_incref(c->answer));
    json_decref(c->answer);
    c->answer = NULL;
}

/* The transaction of every route that changes a room: the room as the
 * caller sees it (404 when they do not), then c->step on it. A retried
 * transaction starts again from op_reset. */
static int room_tx(ag_db *db, void *ud)
{
    op *c = ud;
    op_reset(c);
    rooms_room r;
    bool ok;
    int rc = load_room(db, c, &r, &ok);
    if (!ok) return rc;
    return c->step(db, c, &r);
}

/* Starts `c` for a route on /v1/rooms/:id: the caller and the room id, or
 * false with 401 or 404 answered. */
static bool op_start(ag_http_req *req, ag_http_res *res, op *c)
{
    memset(c, 0, sizeof *c);
    return (c->me = ag_auth_caller_required(req, res)) && (c->room = room_param(req, res));
}

/* op_start for a route on /v1/rooms/:id/members/:userId, with c->user
 * (404 MEMBER_NOT_FOUND for an id that cannot be one). */
static bool op_start_member(ag_http_req *req, ag_http_res *res, op *c)
{
    if (!op_start(req, res, c)) return false;
    c->user = ag_req_param(req, "userId");
    if (!rooms_id_ok(c->user)) {
        ag_res_error(res, 404, "MEMBER_NOT_FOUND", "no such member", NULL);
        return false;
    }
    return true;
}

/* Runs `step` in room_tx and answers 200 with the outcome (`what` names a
 * failure in the log). */
static void run(ag_http_req *req, ag_http_res *res, op *c, room_step step, const char *what)
{
    c->step = step;
    int rc = ag_store_tx(g_rooms.store, room_tx, c);
    finish(req, res, c, rc, what, 200);
}

/* run() for a route with a body: 422 when `v` found problems, else the
 * step. Releases `v`, and `body` last, since `c` may point into it. */
static void run_body(ag_http_req *req, ag_http_res *res, op *c, ag_validator *v, json_t *body,
                     room_step step, const char *what)
{
    if (!ag_v_ok(v)) {
        ag_res_validation(res, v);
    } else {
        ag_v_release(v);
        run(req, res, c, step, what);
    }
    json_decref(body);
}

/* ---- Rooms -------------------------------------------------------------------------------- */

typedef struct create_ctx {
    rooms_room r;
    json_t *answer;
} create_ctx;

static int create_tx(ag_db *db, void *ud)
{
    create_ctx *c = ud;
    json_decref(c->answer);
    c->answer = NULL;
    c->r.version = 1;
    c->r.member_count = 1;
    snprintf(c->r.my_role, sizeof c->r.my_role, "owner");
    int rc = rooms_insert(db, &c->r);
    if (rc == 0) rc = rooms_member_add(db, c->r.id, c->r.owner_id, "owner", c->r.created_at, 1);
    if (rc == 0) rc = rooms_publish_created(db, &c->r);
    if (rc == 0) c->answer = rooms_room_json(&c->r);
    return rc;
}

static void post_room(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    static const char *const allowed[] = {"name", "description", "isPrivate", NULL};
    ag_validator v;
    json_t *body = ag_req_json_object(req, res, &v, allowed);
    if (!body) return;
    create_ctx c;
    memset(&c, 0, sizeof c);
    bool has_name, priv = false;
    check_name(&v, body, AG_V_REQUIRED, c.r.name, sizeof c.r.name, &has_name);
    const char *desc = ag_v_str(&v, body, "description", AG_V_NULLABLE, 0, ROOMS_DESCRIPTION_MAX);
    ag_v_bool(&v, body, "isPrivate", 0, &priv);
    if (!ag_v_passed(&v, res, body)) return;
    ag_id_new_str(c.r.id);
    snprintf(c.r.description, sizeof c.r.description, "%s", desc ? desc : "");
    c.r.is_private = priv;
    snprintf(c.r.owner_id, sizeof c.r.owner_id, "%s", me->id);
    rooms_now(c.r.created_at);
    memcpy(c.r.updated_at, c.r.created_at, sizeof c.r.updated_at);
    json_decref(body);
    int rc = ag_store_tx(g_rooms.store, create_tx, &c);
    if (rc < 0)
        ag_res_internal(req, res, "room create failed", rc);
    else
        ag_res_ok(res, 201, json_incref(c.answer));
    json_decref(c.answer);
}

static void list_rooms(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    ag_validator v;
    ag_v_init(&v);
    rooms_filter f = {.viewer = me->id, .all = sees_all(me)};
    f.page = ag_v_query_int(&v, req, "page", 1, 1, 1000000);
    f.limit = ag_v_query_int(&v, req, "limit", 20, 1, 100);
    const char *mine = ag_req_query(req, "mine");
    if (mine && strcmp(mine, "true") != 0 && strcmp(mine, "false") != 0)
        ag_v_fail(&v, "mine", "mine must be true or false");
    f.mine = mine && strcmp(mine, "true") == 0;
    f.q = ag_req_query(req, "q");
    if (f.q && strlen(f.q) > ROOMS_NAME_MAX * 4) ag_v_fail(&v, "q", "q is too long");
    if (f.q && !*f.q) f.q = NULL;
    if (!ag_v_passed(&v, res, NULL)) return;
    ag_db *db;
    int64_t total = 0;
    json_t *arr = json_array();
    int rc = ag_store_db(g_rooms.store, &db);
    if (rc == 0) rc = rooms_list(db, &f, arr, &total);
    ag_res_page_rc(req, res, rc, arr, f.page, f.limit, total, "room list failed");
}

static void get_room(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    const char *id = room_param(req, res);
    if (!id) return;
    ag_db *db;
    rooms_room r;
    int rc = ag_store_db(g_rooms.store, &db);
    if (rc == 0) rc = rooms_get(db, id, me->id, &r);
    if (rc == AG_ENOTFOUND || (rc == 0 && !visible(&r, me)))
        ag_res_error(res, 404, "ROOM_NOT_FOUND", "no such room", NULL);
    else if (rc < 0)
        ag_res_internal(req, res, "room read failed", rc);
    else
        ag_res_ok(res, 200, rooms_room_json(&r));
}

static int patch_step(ag_db *db, op *c, rooms_room *r)
{
    if (!moderates(r->my_role))
        return refuse(c, 403, "FORBIDDEN", "only the room's owner or an admin may edit it");
    bool changed = false;
    if (c->has_name && strcmp(r->name, c->name) != 0) {
        snprintf(r->name, sizeof r->name, "%s", c->name);
        changed = true;
    }
    if (c->has_description && strcmp(r->description, c->description) != 0) {
        snprintf(r->description, sizeof r->description, "%s", c->description);
        changed = true;
    }
    if (c->has_private && r->is_private != c->is_private) {
        r->is_private = c->is_private;
        changed = true;
    }
    if (changed) { /* an edit that changes nothing is answered, not counted */
        char now[32];
        rooms_now(now);
        int rc = rooms_bump(db, r, now);
        if (rc == 0) rc = rooms_save(db, r);
        if (rc == 0) rc = rooms_publish_updated(db, r, NULL, NULL);
        if (rc < 0) return rc;
    }
    return answer_room(db, c);
}

static void patch_room(ag_http_req *req, ag_http_res *res, void *ud)
{
    op c;
    if (!op_start(req, res, &c)) return;
    static const char *const allowed[] = {"name", "description", "isPrivate", NULL};
    ag_validator v;
    json_t *body = ag_req_json_object(req, res, &v, allowed);
    if (!body) return;
    check_name(&v, body, 0, c.name, sizeof c.name, &c.has_name);
    json_t *d = json_object_get(body, "description");
    c.has_description = d != NULL;
    c.description = ag_v_str(&v, body, "description", AG_V_NULLABLE, 0, ROOMS_DESCRIPTION_MAX);
    if (!c.description) c.description = "";
    c.has_private = ag_v_bool(&v, body, "isPrivate", 0, &c.is_private);
    run_body(req, res, &c, &v, body, patch_step, "room update failed");
}

static int delete_step(ag_db *db, op *c, rooms_room *r)
{
    if (strcmp(r->my_role, "owner") != 0 && !is_admin(c->me))
        return refuse(c, 403, "FORBIDDEN", "only the room's owner may delete it");
    char now[32];
    rooms_now(now);
    json_t *ids = json_array();
    int rc = rooms_bump(db, r, now);
    if (rc == 0) rc = rooms_member_ids(db, r->id, ids);
    if (rc == 0) rc = rooms_delete(db, r->id);
    if (rc < 0) {
        json_decref(ids);
        return rc;
    }
    rc = rooms_publish_deleted(db, r, c->me->id, ids);
    if (rc == 0) c->answer = json_pack("{s:s, s:b}", "id", r->id, "deleted", 1);
    return rc;
}

static void delete_room(ag_http_req *req, ag_http_res *res, void *ud)
{
    op c;
    if (!op_start(req, res, &c)) return;
    run(req, res, &c, delete_step, "room delete failed");
}

/* ---- Joining and leaving ------------------------------------------------------------------ */

static int join_step(ag_db *db, op *c, rooms_room *r)
{
    if (r->my_role[0]) return answer_room(db, c); /* already in: nothing changes */
    if (r->is_private)
        return refuse(c, 403, "INVITE_ONLY", "a private room is joined by invitation only");
    char now[32];
    rooms_now(now);
    int rc = rooms_bump(db, r, now);
    if (rc == 0) rc = rooms_member_add(db, r->id, c->me->id, "member", now, r->version);
    if (rc == 0) rc = rooms_publish_joined(db, r, c->me->id, "member", c->me->id, "joined");
    if (rc == 0) rc = answer_room(db, c);
    return rc;
}

static void post_join(ag_http_req *req, ag_http_res *res, void *ud)
{
    op c;
    if (!op_start(req, res, &c)) return;
    run(req, res, &c, join_step, "room join failed");
}

/* The caller leaves (how "left"); shared by POST leave and DELETE of
 * oneself. `answer_member` picks the DELETE route's answer. */
static int leave(ag_db *db, op *c, rooms_room *r, bool answer_member)
{
    if (!r->my_role[0]) return refuse(c, 409, "NOT_A_MEMBER", "you are not a member of this room");
    if (strcmp(r->my_role, "owner") == 0)
        return refuse(c, 409, "OWNER_CANNOT_LEAVE",
                      "the owner cannot leave: delete the room or hand it over first");
    char now[32];
    rooms_now(now);
    int rc = rooms_bump(db, r, now);
    if (rc == 0) rc = rooms_member_remove(db, r->id, c->me->id);
    if (rc == 0) rc = rooms_publish_left(db, r, c->me->id, c->me->id, "left");
    if (rc < 0) return rc;
    if (answer_member)
        c->answer = json_pack("{s:s, s:s, s:b, s:I}", "roomId", r->id, "userId", c->me->id,
                              "removed", 1, "version", (json_int_t)r->version);
    else
        rc = answer_room(db, c);
    return rc;
}

static int leave_step(ag_db *db, op *c, rooms_room *r)
{
    return leave(db, c, r, false);
}

static void post_leave(ag_http_req *req, ag_http_res *res, void *ud)
{
    op c;
    if (!op_start(req, res, &c)) return;
    /* The answer is the caller's last view of the room (myRole null), even
     * of a private room they may no longer see. */
    run(req, res, &c, leave_step, "room leave failed");
}

/* ---- Members ------------------------------------------------------------------------------ */

static void list_members(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    const char *id = room_param(req, res);
    if (!id) return;
    ag_validator v;
    ag_v_init(&v);
    int64_t page = ag_v_query_int(&v, req, "page", 1, 1, 1000000);
    int64_t limit = ag_v_query_int(&v, req, "limit", 50, 1, 100);
    if (!ag_v_passed(&v, res, NULL)) return;
    ag_db *db;
    rooms_room r;
    int64_t total = 0;
    int rc = ag_store_db(g_rooms.store, &db);
    if (rc == 0) rc = rooms_get(db, id, me->id, &r);
    if (rc == AG_ENOTFOUND || (rc == 0 && !visible(&r, me))) {
        ag_res_error(res, 404, "ROOM_NOT_FOUND", "no such room", NULL);
        return;
    }
    json_t *arr = json_array();
    if (rc == 0) rc = rooms_members_list(db, id, page, limit, arr, &total);
    ag_res_page_rc(req, res, rc, arr, page, limit, total, "member list failed");
}

/* The lookup agora-messages and agora-files make on a replica miss, with
 * the end user's token: may this user use the room, and as what? */
static void get_member(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    const char *id = room_param(req, res);
    if (!id) return;
    const char *user = ag_req_param(req, "userId");
    if (!rooms_id_ok(user)) {
        ag_res_error(res, 404, "MEMBER_NOT_FOUND", "no such member", NULL);
        return;
    }
    ag_db *db;
    rooms_room r;
    rooms_member m;
    int rc = ag_store_db(g_rooms.store, &db);
    if (rc == 0) rc = rooms_get(db, id, me->id, &r);
    if (rc == AG_ENOTFOUND || (rc == 0 && !visible(&r, me))) {
        ag_res_error(res, 404, "ROOM_NOT_FOUND", "no such room", NULL);
        return;
    }
    /* Others' membership is for the room's members, admins and services. */
    bool allowed = strcmp(user, me->id) == 0 || r.my_role[0] || sees_all(me);
    if (rc == 0 && !allowed) {
        ag_res_error(res, 404, "MEMBER_NOT_FOUND", "no such member", NULL);
        return;
    }
    if (rc == 0) rc = rooms_member_get(db, id, user, &m);
    if (rc == AG_ENOTFOUND) {
        ag_res_error(res, 404, "MEMBER_NOT_FOUND", "no such member", NULL);
    } else if (rc < 0) {
        ag_res_internal(req, res, "member read failed", rc);
    } else {
        json_t *j = rooms_member_json(&m);
        json_object_set_new(j, "version", json_integer(r.version));
        ag_res_ok(res, 200, j);
    }
}

/* Who may add `c->user` as `c->role`: 0 with c->code NULL when allowed. */
static int invite_check(ag_db *db, op *c, rooms_room *r, bool *ok)
{
    int rc = load_room(db, c, r, ok);
    if (!*ok) return rc;
    *ok = false;
    if (!moderates(r->my_role))
        return refuse(c, 403, "FORBIDDEN", "only the room's owner or an admin may add members");
    if (strcmp(c->role, "admin") == 0 && strcmp(r->my_role, "owner") != 0)
        return refuse(c, 403, "FORBIDDEN", "only the room's owner may add an admin");
    rooms_member m;
    rc = rooms_member_get(db, r->id, c->user, &m);
    if (rc == 0) return refuse(c, 409, "ALREADY_MEMBER", "the user is already a member");
    if (rc != AG_ENOTFOUND) return rc;
    *ok = true;
    return 0;
}

static int invite_tx(ag_db *db, void *ud)
{
    op *c = ud;
    op_reset(c);
    rooms_room r;
    bool ok;
    int rc = invite_check(db, c, &r, &ok);
    if (!ok) return rc;
    char now[32];
    rooms_now(now);
    rc = rooms_bump(db, &r, now);
    if (rc == 0) rc = rooms_member_add(db, r.id, c->user, c->role, now, r.version);
    if (rc == 0) rc = rooms_publish_joined(db, &r, c->user, c->role, c->me->id, "invited");
    if (rc == 0) {
        rooms_member m;
        rc = rooms_member_get(db, r.id, c->user, &m);
        if (rc == 0) c->answer = rooms_member_json(&m);
    }
    return rc;
}

/* Does agora-users know `user`? 0, or a refusal recorded in `c`. */
static int user_exists(ag_http_req *req, op *c)
{
    char path[64 + ROOMS_ID_MAX];
    snprintf(path, sizeof path, "/v1/users/%s", c->user);
    ag_peer_reply rep;
    int rc = ag_peer_call(g_rooms.users, "GET", path, NULL, ag_req_header(req, "Authorization"),
                          ag_req_deadline(req), ag_req_id(req), &rep);
    if (rc < 0) {
        ag_warn("agora-users did not answer", AG_FERR(rc), AG_FS("requestId", ag_req_id(req)));
        return refuse(c, 503, "USERS_UNAVAILABLE", "cannot check the user now; try again");
    }
    int status = rep.status;
    ag_peer_reply_clear(&rep);
    if (status == 404) return refuse(c, 404, "USER_NOT_FOUND", "no such user");
    if (status != 200) {
        ag_warn("agora-users answered a user lookup unexpectedly", AG_FI("status", status),
                AG_FS("requestId", ag_req_id(req)));
        return refuse(c, 503, "USERS_UNAVAILABLE", "cannot check the user now; try again");
    }
    return 0;
}

static void post_member(ag_http_req *req, ag_http_res *res, void *ud)
{
    op c;
    if (!op_start(req, res, &c)) return;
    static const char *const allowed[] = {"userId", "role", NULL};
    ag_validator v;
    json_t *body = ag_req_json_object(req, res, &v, allowed);
    if (!body) return;
    c.user = ag_v_str(&v, body, "userId", AG_V_REQUIRED, 1, ROOMS_ID_MAX);
    if (c.user && !rooms_id_ok(c.user))
        ag_v_fail(&v, "userId", "userId must be a user id (letters, digits, - or _)");
    if (!check_role(&v, body, 0, false, c.role) && !json_object_get(body, "role"))
        snprintf(c.role, sizeof c.role, "member");
    if (!ag_v_passed(&v, res, body)) return;
    /* Refusals the room decides come before asking agora-users; the
     * transaction checks them again on the state it writes to. */
    ag_db *db;
    rooms_room r;
    bool ok = false;
    op_reset(&c);
    int rc = ag_store_db(g_rooms.store, &db);
    if (rc == 0) rc = invite_check(db, &c, &r, &ok);
    if (rc == 0 && ok) rc = user_exists(req, &c);
    if (rc == 0 && !c.code) rc = ag_store_tx(g_rooms.store, invite_tx, &c);
    finish(req, res, &c, rc, "member add failed", 201);
    json_decref(body);
}

static int role_step(ag_db *db, op *c, rooms_room *r)
{
    if (strcmp(r->my_role, "owner") != 0)
        return refuse(c, 403, "FORBIDDEN", "only the room's owner may change roles");
    rooms_member m;
    int rc = rooms_member_get(db, r->id, c->user, &m);
    if (rc == AG_ENOTFOUND) return refuse(c, 404, "MEMBER_NOT_FOUND", "no such member");
    if (rc < 0) return rc;
    if (strcmp(m.role, c->role) == 0) { /* nothing changes */
        c->answer = rooms_member_json(&m);
        return 0;
    }
    if (strcmp(m.role, "owner") == 0)
        return refuse(c, 409, "OWNER_REQUIRED",
                      "a room keeps its owner: hand it over to another member instead");
    char now[32];
    rooms_now(now);
    rc = rooms_bump(db, r, now);
    json_t *members = NULL;
    if (rc == 0 && strcmp(c->role, "owner") == 0) {
        /* The hand-over: the old owner steps down to admin first, as the
         * one-owner index wants. */
        rc = rooms_member_set_role(db, r->id, c->me->id, "admin");
        if (rc == 0) rc = rooms_member_set_role(db, r->id, c->user, "owner");
        snprintf(r->owner_id, sizeof r->owner_id, "%s", c->user);
        if (rc == 0) rc = rooms_save(db, r);
        members = json_pack("[{s:s, s:s}, {s:s, s:s}]", "userId", c->user, "role", "owner",
                            "userId", c->me->id, "role", "admin");
    } else if (rc == 0) {
        rc = rooms_member_set_role(db, r->id, c->user, c->role);
    }
    if (rc < 0) {
        json_decref(members);
        return rc;
    }
    rc = rooms_publish_updated(db, r, json_pack("{s:s, s:s}", "userId", c->user, "role", c->role),
                               members);
    if (rc == 0) rc = rooms_member_get(db, r->id, c->user, &m);
    if (rc == 0) c->answer = rooms_member_json(&m);
    return rc;
}

static void put_member(ag_http_req *req, ag_http_res *res, void *ud)
{
    op c;
    if (!op_start_member(req, res, &c)) return;
    static const char *const allowed[] = {"role", NULL};
    ag_validator v;
    json_t *body = ag_req_json_object(req, res, &v, allowed);
    if (!body) return;
    check_role(&v, body, AG_V_REQUIRED, true, c.role);
    run_body(req, res, &c, &v, body, role_step, "role change failed");
}

static int kick_step(ag_db *db, op *c, rooms_room *r)
{
    if (strcmp(c->user, c->me->id) == 0) return leave(db, c, r, true);
    if (!moderates(r->my_role))
        return refuse(c, 403, "FORBIDDEN", "only the room's owner or an admin may remove members");
    rooms_member m;
    int rc = rooms_member_get(db, r->id, c->user, &m);
    if (rc == AG_ENOTFOUND) return refuse(c, 404, "MEMBER_NOT_FOUND", "no such member");
    if (rc < 0) return rc;
    if (strcmp(m.role, "owner") == 0)
        return refuse(c, 403, "FORBIDDEN", "the room's owner cannot be removed");
    if (strcmp(m.role, "admin") == 0 && strcmp(r->my_role, "owner") != 0)
        return refuse(c, 403, "FORBIDDEN", "only the room's owner may remove an admin");
    char now[32];
    rooms_now(now);
    rc = rooms_bump(db, r, now);
    if (rc == 0) rc = rooms_member_remove(db, r->id, c->user);
    if (rc == 0) rc = rooms_publish_left(db, r, c->user, c->me->id, "kicked");
    if (rc == 0)
        c->answer = json_pack("{s:s, s:s, s:b, s:I}", "roomId", r->id, "userId", c->user, "removed",
                              1, "version", (json_int_t)r->version);
    return rc;
}

static void delete_member(ag_http_req *req, ag_http_res *res, void *ud)
{
    op c;
    if (!op_start_member(req, res, &c)) return;
    run(req, res, &c, kick_step, "member remove failed");
}

void rooms_routes(ag_router *r)
{
    ag_router_add(r, "POST", "/v1/rooms", post_room, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "GET", "/v1/rooms", list_rooms, NULL, 0);
    ag_router_add(r, "GET", "/v1/rooms/:id", get_room, NULL, 0);
    ag_router_add(r, "PATCH", "/v1/rooms/:id", patch_room, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "DELETE", "/v1/rooms/:id", delete_room, NULL, 0);
    ag_router_add(r, "POST", "/v1/rooms/:id/join", post_join, NULL, 0);
    ag_router_add(r, "POST", "/v1/rooms/:id/leave", post_leave, NULL, 0);
    ag_router_add(r, "GET", "/v1/rooms/:id/members", list_members, NULL, 0);
    ag_router_add(r, "POST", "/v1/rooms/:id/members", post_member, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "GET", "/v1/rooms/:id/members/:userId", get_member, NULL, 0);
    ag_router_add(r, "PUT", "/v1/rooms/:id/members/:userId", put_member, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "DELETE", "/v1/rooms/:id/members/:userId", delete_member, NULL, 0);
}
