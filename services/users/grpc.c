/*
 * grpc.c — agora-users over gRPC: agora.users.v1.UserService (user.proto,
 * seed 002's, with what Agora's users have), on port 7101 (the HTTP port +
 * 100; agora/grpc.h). The rules are the HTTP API's (routes.c, README.md):
 *
 *   GetUser        anyone; the email only to the user, an admin or a
 *                  service (a bearer token in the authorization metadata);
 *                  NOT_FOUND for an unknown id
 *   CreateUser     anyone (POST /v1/auth/register): INVALID_ARGUMENT naming
 *                  the fields, ALREADY_EXISTS for a taken email or name;
 *                  user.registered is published as over HTTP
 *   ListUsers      a valid bearer token (UNAUTHENTICATED without); emails
 *                  only to admins and services
 *   ValidateToken  anyone (POST /v1/auth/verify): valid, or not valid with
 *                  the reason (an answer, not an error status)
 *
 * A bearer that does not verify is UNAUTHENTICATED. Messages are protobuf-c
 * (user.pb-c.h, generated from user.proto at build time).
 */
#include <string.h>

#include "user.pb-c.h"
#include "users.h"

/* The caller's claims from the bearer metadata: 1 with *out, 0 without a
 * bearer, or -1 after answering UNAUTHENTICATED. */
static int caller(ag_grpc_call *c, ag_claims *out)
{
    return ag_grpc_auth(c, &g_users.auth, out);
}

static bool privileged(const ag_claims *me)
{
    return strcmp(me->role, "admin") == 0 || strcmp(me->role, "service") == 0;
}

/* A User message over `u` (borrowing its strings). */
static void user_msg(Agora__Users__V1__User *m, const user_row *u, bool private_fields)
{
    agora__users__v1__user__init(m);
    m->id = (char *)u->id;
    m->name = (char *)u->username;
    m->role = (char *)u->role;
    m->created_at = (char *)u->created_at;
    m->avatar_url = (char *)u->avatar_url;
    m->bio = (char *)u->bio;
    m->online = u->online;
    if (private_fields) m->email = (char *)u->email;
}

static void reply_user(ag_grpc_call *c, const user_row *u, bool private_fields)
{
    Agora__Users__V1__User m;
    user_msg(&m, u, private_fields);
    size_t n = agora__users__v1__user__get_packed_size(&m);
    uint8_t *buf = ag_malloc(n ? n : 1);
    agora__users__v1__user__pack(&m, buf);
    ag_grpc_reply(c, buf, n);
    ag_free(buf);
}

static void get_user(ag_grpc_call *c, void *ud)
{
    size_t n;
    const uint8_t *in = ag_grpc_request(c, &n);
    Agora__Users__V1__GetUserRequest *req = agora__users__v1__get_user_request__unpack(NULL, n, in);
    if (!req) {
        ag_grpc_fail(c, AG_GRPC_INVALID_ARGUMENT, "not a GetUserRequest");
        return;
    }
    ag_claims me;
    int who = caller(c, &me);
    user_row u;
    ag_db *db;
    int rc = who < 0 ? 0 : ag_store_db(g_users.store, &db);
    if (who >= 0 && rc == 0) {
        if (!req->id[0] || strlen(req->id) >= sizeof u.id) {
            ag_grpc_fail(c, AG_GRPC_INVALID_ARGUMENT, "id: a user id is required");
        } else if ((rc = users_get(db, req->id, &u, NULL, 0)) == AG_ENOTFOUND) {
            ag_grpc_fail(c, AG_GRPC_NOT_FOUND, "no such user");
        } else if (rc == 0) {
            reply_user(c, &u, who == 1 && (privileged(&me) || strcmp(me.sub, u.id) == 0));
        }
    }
    if (rc < 0 && rc != AG_ENOTFOUND) ag_grpc_fail(c, ag_grpc_status_of(rc), "get user failed");
    agora__users__v1__get_user_request__free_unpacked(req, NULL);
}

static void create_user(ag_grpc_call *c, void *ud)
{
    size_t n;
    const uint8_t *in = ag_grpc_request(c, &n);
    Agora__Users__V1__CreateUserRequest *req =
        agora__users__v1__create_user_request__unpack(NULL, n, in);
    if (!req) {
        ag_grpc_fail(c, AG_GRPC_INVALID_ARGUMENT, "not a CreateUserRequest");
        return;
    }
    /* The HTTP rules, from the same validator: absent fields are "". */
    json_t *body = json_object();
    if (req->name[0]) json_object_set_new(body, "username", json_string(req->name));
    if (req->email[0]) json_object_set_new(body, "email", json_string(req->email));
    if (req->password[0]) json_object_set_new(body, "password", json_string(req->password));
    agora__users__v1__create_user_request__free_unpacked(req, NULL);
    ag_validator v;
    ag_v_init(&v);
    user_row u;
    int conflict;
    int rc = users_register(body, &v, &u, NULL, &conflict);
    json_decref(body);
    if (rc == AG_EINVAL && !ag_v_ok(&v)) {
        char msg[256] = "";
        size_t off = 0, i;
        json_t *d;
        json_array_foreach(v.details, i, d)
        {
            const char *f = json_string_value(json_object_get(d, "field"));
            const char *m = json_string_value(json_object_get(d, "message"));
            if (!f || !m || off >= sizeof msg) continue;
            /* The proto's names: name for username. */
            off += (size_t)snprintf(msg + off, sizeof msg - off, "%s%s: %s", off ? "; " : "",
                                    strcmp(f, "username") == 0 ? "name" : f, m);
        }
        ag_grpc_fail(c, AG_GRPC_INVALID_ARGUMENT, "%s", msg);
    } else if (rc == AG_EEXISTS) {
        ag_grpc_fail(c, AG_GRPC_ALREADY_EXISTS, "%s",
                     conflict == 2 ? "name is taken" : "email is already registered");
    } else if (rc < 0) {
        ag_grpc_fail(c, ag_grpc_status_of(rc), "create user failed");
    } else {
        reply_user(c, &u, true);
    }
    ag_v_release(&v);
}

/* A user_row from users_list's JSON object (the fields a listing has). */
static void row_of(json_t *o, user_row *u)
{
    memset(u, 0, sizeof *u);
#define COPY(field, key)                                                    \
    snprintf(u->field, sizeof u->field, "%s",                               \
             json_string_value(json_object_get(o, key)) ? json_string_value( \
                                                              json_object_get(o, key)) \
                                                        : "")
    COPY(id, "id");
    COPY(username, "username");
    COPY(email, "email");
    COPY(role, "role");
    COPY(created_at, "createdAt");
    COPY(avatar_url, "avatarUrl");
    COPY(bio, "bio");
#undef COPY
    u->online = json_is_true(json_object_get(o, "online"));
}

static void list_users(ag_grpc_call *c, void *ud)
{
    size_t n;
    const uint8_t *in = ag_grpc_request(c, &n);
    Agora__Users__V1__ListUsersRequest *req =
        agora__users__v1__list_users_request__unpack(NULL, n, in);
    if (!req) {
        ag_grpc_fail(c, AG_GRPC_INVALID_ARGUMENT, "not a ListUsersRequest");
        return;
    }
    int64_t page = req->page ? req->page : 1, limit = req->page_size ? req->page_size : 20;
    agora__users__v1__list_users_request__free_unpacked(req, NULL);
    ag_claims me;
    int who = caller(c, &me);
    if (who < 0) return;
    if (who == 0) {
        ag_grpc_fail(c, AG_GRPC_UNAUTHENTICATED, "a bearer token is required");
        return;
    }
    if (page < 1 || page > 1000000 || limit < 1 || limit > 100) {
        ag_grpc_fail(c, AG_GRPC_INVALID_ARGUMENT,
                     "page must be 1 to 1000000 and page_size 1 to 100");
        return;
    }
    ag_db *db;
    int64_t total = 0;
    json_t *arr = json_array();
    int rc = ag_store_db(g_users.store, &db);
    if (rc == 0) rc = users_page(db, page, limit, arr, &total);
    if (rc < 0) {
        json_decref(arr);
        ag_grpc_fail(c, ag_grpc_status_of(rc), "list users failed");
        return;
    }
    size_t count = json_array_size(arr);
    user_row *rows = ag_calloc(count ? count : 1, sizeof *rows);
    Agora__Users__V1__User *msgs = ag_calloc(count ? count : 1, sizeof *msgs);
    Agora__Users__V1__User **ptrs = ag_calloc(count ? count : 1, sizeof *ptrs);
    for (size_t i = 0; i < count; i++) {
        row_of(json_array_get(arr, i), &rows[i]);
        /* The listing's JSON is the public view: the email, for those who
         * may see it, comes from the row itself. */
        bool own = privileged(&me) || strcmp(me.sub, rows[i].id) == 0;
        user_row full;
        if (own && users_get(db, rows[i].id, &full, NULL, 0) == 0) rows[i] = full;
        user_msg(&msgs[i], &rows[i], own);
        ptrs[i] = &msgs[i];
    }
    json_decref(arr);
    Agora__Users__V1__ListUsersResponse resp = AGORA__USERS__V1__LIST_USERS_RESPONSE__INIT;
    resp.n_users = count;
    resp.users = ptrs;
    resp.total = (int32_t)total;
    size_t len = agora__users__v1__list_users_response__get_packed_size(&resp);
    uint8_t *buf = ag_malloc(len ? len : 1);
    agora__users__v1__list_users_response__pack(&resp, buf);
    ag_grpc_reply(c, buf, len);
    ag_free(buf);
    ag_free(ptrs);
    ag_free(msgs);
    ag_free(rows);
}

static void validate_token(ag_grpc_call *c, void *ud)
{
    size_t n;
    const uint8_t *in = ag_grpc_request(c, &n);
    Agora__Users__V1__ValidateTokenRequest *req =
        agora__users__v1__validate_token_request__unpack(NULL, n, in);
    if (!req) {
        ag_grpc_fail(c, AG_GRPC_INVALID_ARGUMENT, "not a ValidateTokenRequest");
        return;
    }
    Agora__Users__V1__ValidateTokenResponse resp = AGORA__USERS__V1__VALIDATE_TOKEN_RESPONSE__INIT;
    ag_claims cl;
    char why[128] = "";
    int rc = req->token[0] && strlen(req->token) <= 8192
                 ? ag_jwt_verify(g_users.keys, req->token, &g_users.auth.policy, &cl, why,
                                 sizeof why)
                 : AG_EINVAL;
    if (rc == 0) {
        resp.valid = true;
        resp.user_id = cl.sub;
        resp.email = cl.email;
        resp.role = cl.role;
        resp.expires_at = cl.exp;
    } else {
        resp.reason = rc == AG_ENOTFOUND ? "unknown key"
                      : why[0]           ? why
                                         : "token: a token of at most 8192 bytes is required";
    }
    uint8_t buf[1024];
    size_t len = agora__users__v1__validate_token_response__get_packed_size(&resp);
    if (len <= sizeof buf) {
        agora__users__v1__validate_token_response__pack(&resp, buf);
        ag_grpc_reply(c, buf, len);
    } else {
        ag_grpc_fail(c, AG_GRPC_INTERNAL, "answer too large");
    }
    agora__users__v1__validate_token_request__free_unpacked(req, NULL);
}

const ag_grpc_method users_grpc_methods[] = {
    {"/agora.users.v1.UserService/GetUser", get_user, NULL},
    {"/agora.users.v1.UserService/CreateUser", create_user, NULL},
    {"/agora.users.v1.UserService/ListUsers", list_users, NULL},
    {"/agora.users.v1.UserService/ValidateToken", validate_token, NULL},
    {NULL, NULL, NULL},
};
