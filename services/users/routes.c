/*
 * routes.c — agora-users' HTTP API (docs/api.md, "agora-users").
 *
 * Passwords are hashed before any transaction (Argon2id is slow on purpose);
 * every state change and its event commit together. Login failures answer
 * one message for any bad credential, and take as long for an unknown email
 * as for a wrong password.
 */
#include <ctype.h>
#include <sodium.h>
#include <string.h>

#include "users.h"

/* ---- Helpers ---------------------------------------------------------------------- */

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

static bool username_ok(const char *s)
{
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '.' && *s != '-') return false;
    return true;
}

static void hash_token(const char *token, char hex[65])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)token, strlen(token));
    sodium_bin2hex(hex, 65, h, sizeof h);
}

/* A new refresh token (the client's) and its hash (what is stored). */
static void new_refresh_token(char out[64], char hash[65])
{
    unsigned char raw[32];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(out, 64, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    hash_token(out, hash);
}

/* Stores a refresh token's hash for `user_id`, valid for the configured time. */
static int refresh_keep(ag_db *db, const char *hash, const char *user_id)
{
    return refresh_store(db, hash, user_id, (int64_t)ag_wall_ms() + g_users.refresh_ttl_s * 1000);
}

/* Signs an access token for `u`. */
static int access_token(const user_row *u, char **token)
{
    ag_claims c;
    memset(&c, 0, sizeof c);
    snprintf(c.sub, sizeof c.sub, "%s", u->id);
    snprintf(c.email, sizeof c.email, "%s", u->email);
    snprintf(c.role, sizeof c.role, "%s", u->role);
    snprintf(c.iss, sizeof c.iss, "%s", g_users.issuer);
    snprintf(c.aud, sizeof c.aud, "%s", g_users.audience);
    ag_id_new_str(c.jti);
    c.iat = (int64_t)(ag_wall_ms() / 1000);
    c.exp = c.iat + g_users.access_ttl_s;
    return ag_jwt_sign(g_users.keys, &c, token);
}

/* Answers `status` with the session: user, a new access token, the refresh
 * token and expiresIn. */
static void answer_session(ag_http_req *req, ag_http_res *res, int status, const user_row *u,
                           const char *refresh)
{
    char *token;
    int rc = access_token(u, &token);
    if (ag_res_rc(req, res, rc, NULL, "token signing failed")) return;
    ag_res_ok(res, status,
              json_pack("{s:o, s:s, s:s, s:I}", "user", user_json(u, true), "token", token,
                        "refreshToken", refresh, "expiresIn", (json_int_t)g_users.access_ttl_s));
    ag_free(token);
}

/* The username rule beyond its length (the schema's pattern says the same). */
static void check_username(ag_validator *v, const char *username)
{
    if (username && !username_ok(username))
        ag_v_fail(v, "username", "username may contain letters, digits, '_', '.' and '-'");
}

/* ---- Register -------------------------------------------------------------------------- */

typedef struct register_ctx {
    user_row u;
    const char *hash;
    char refresh_hash[65]; /* "": no session */
    int conflict;          /* 1 email, 2 username */
} register_ctx;

static int register_tx(ag_db *db, void *ud)
{
    register_ctx *c = ud;
    user_row existing;
    c->conflict = 0;
    if (users_get_by_email(db, c->u.email, &existing, NULL, 0) == 0) {
        c->conflict = 1;
        return AG_EEXISTS;
    }
    int rc = users_insert(db, &c->u, c->hash);
    if (rc == AG_EEXISTS) c->conflict = 2;
    if (rc < 0) return rc;
    rc = publish_user_event(db, "user.registered", &c->u);
    if (rc < 0 || !c->refresh_hash[0]) return rc;
    return refresh_keep(db, c->refresh_hash, c->u.id);
}

int users_register(json_t *body, ag_validator *v, user_row *out, char *refresh, int *conflict)
{
    *conflict = 0;
    const char *username = ag_v_str(v, body, "username", AG_V_REQUIRED, 3, 50);
    const char *email = ag_v_email(v, body, "email", AG_V_REQUIRED);
    const char *password = ag_v_str(v, body, "password", AG_V_REQUIRED, 8, 128);
    check_username(v, username);
    if (!ag_v_ok(v)) return AG_EINVAL;
    register_ctx c;
    memset(&c, 0, sizeof c);
    ag_id_new_str(c.u.id);
    snprintf(c.u.username, sizeof c.u.username, "%s", username);
    snprintf(c.u.email, sizeof c.u.email, "%s", email);
    lower(c.u.email);
    snprintf(c.u.role, sizeof c.u.role, "customer");
    ag_time_now(c.u.created_at, sizeof c.u.created_at);
    char hash[AG_PASSWORD_HASH_MAX];
    int rc = ag_password_hash(password, hash);
    if (rc < 0) return rc;
    c.hash = hash;
    if (refresh) new_refresh_token(refresh, c.refresh_hash);
    rc = ag_store_tx(g_users.store, register_tx, &c);
    *conflict = c.conflict;
    if (rc == 0) *out = c.u;
    return rc;
}

static void post_register(ag_http_req *req, ag_http_res *res, void *ud)
{
    json_t *body;
    if (ag_req_json(req, res, &body) < 0) return;
    ag_validator v;
    ag_v_init(&v);
    user_row u;
    char refresh[64];
    int conflict;
    int rc = users_register(body, &v, &u, refresh, &conflict);
    if (rc == AG_EINVAL && !ag_v_ok(&v)) {
        ag_v_passed(&v, res, body);
        return;
    }
    json_decref(body);
    ag_v_release(&v);
    if (rc == AG_EEXISTS) {
        ag_res_error(res, 409, "CONFLICT",
                     conflict == 2 ? "username is taken" : "email is already registered", NULL);
        return;
    }
    if (ag_res_rc(req, res, rc, NULL, "register failed")) return;
    answer_session(req, res, 201, &u, refresh);
}

/* ---- Login, refresh, logout, verify ------------------------------------------------------- */

typedef struct session_ctx {
    user_row u;
    char refresh_hash[65];
    char old_hash[65];
    bool online;
} session_ctx;

static int login_tx(ag_db *db, void *ud)
{
    session_ctx *c = ud;
    int rc = users_set_online(db, c->u.id, true);
    if (rc < 0) return rc;
    c->u.online = true;
    rc = publish_user_event(db, "user.logged_in", &c->u);
    if (rc < 0) return rc;
    return refresh_keep(db, c->refresh_hash, c->u.id);
}

static void post_login(ag_http_req *req, ag_http_res *res, void *ud)
{
    json_t *body;
    if (ag_req_json(req, res, &body) < 0) return;
    ag_validator v;
    ag_v_init(&v);
    const char *email = ag_v_str(&v, body, "email", AG_V_REQUIRED, 1, 254);
    const char *password = ag_v_str(&v, body, "password", AG_V_REQUIRED, 1, 128);
    if (!ag_v_passed(&v, res, body)) return;
    session_ctx c;
    memset(&c, 0, sizeof c);
    char mail[256];
    snprintf(mail, sizeof mail, "%s", email);
    lower(mail);
    char hash[AG_PASSWORD_HASH_MAX] = "";
    ag_db *db;
    int rc = ag_store_db(g_users.store, &db);
    if (rc == 0) rc = users_get_by_email(db, mail, &c.u, hash, sizeof hash);
    if (rc < 0 && rc != AG_ENOTFOUND) {
        json_decref(body);
        ag_res_internal(req, res, "login lookup failed", rc);
        return;
    }
    /* The same work for an unknown email as for a wrong password. */
    static char dummy[AG_PASSWORD_HASH_MAX];
    if (!dummy[0]) ag_password_hash("not a real password", dummy);
    bool ok = ag_password_verify(rc == 0 ? hash : dummy, password) && rc == 0;
    json_decref(body);
    if (!ok) {
        ag_res_error(res, 401, "INVALID_CREDENTIALS", "invalid email or password", NULL);
        return;
    }
    char refresh[64];
    new_refresh_token(refresh, c.refresh_hash);
    rc = ag_store_tx(g_users.store, login_tx, &c);
    if (ag_res_rc(req, res, rc, NULL, "login failed")) return;
    answer_session(req, res, 200, &c.u, refresh);
}

static int refresh_tx(ag_db *db, void *ud)
{
    session_ctx *c = ud;
    char user_id[64];
    int rc = refresh_take(db, c->old_hash, user_id, sizeof user_id);
    if (rc < 0) return rc;
    rc = users_get(db, user_id, &c->u, NULL, 0);
    if (rc < 0) return rc;
    return refresh_keep(db, c->refresh_hash, c->u.id);
}

static void post_refresh(ag_http_req *req, ag_http_res *res, void *ud)
{
    json_t *body;
    if (ag_req_json(req, res, &body) < 0) return;
    ag_validator v;
    ag_v_init(&v);
    const char *old = ag_v_str(&v, body, "refreshToken", AG_V_REQUIRED, 1, 200);
    if (!ag_v_passed(&v, res, body)) return;
    session_ctx c;
    memset(&c, 0, sizeof c);
    hash_token(old, c.old_hash);
    json_decref(body);
    char refresh[64];
    new_refresh_token(refresh, c.refresh_hash);
    int rc = ag_store_tx(g_users.store, refresh_tx, &c);
    if (rc == AG_ENOTFOUND) {
        ag_res_error(res, 401, "INVALID_REFRESH_TOKEN", "refresh token invalid or expired", NULL);
        return;
    }
    if (ag_res_rc(req, res, rc, NULL, "refresh failed")) return;
    answer_session(req, res, 200, &c.u, refresh);
}

static int logout_tx(ag_db *db, void *ud)
{
    session_ctx *c = ud;
    int rc = refresh_revoke_user(db, c->u.id);
    if (rc < 0) return rc;
    rc = users_set_online(db, c->u.id, false);
    if (rc < 0) return rc;
    c->u.online = false;
    return publish_user_event(db, "user.logged_out", &c->u);
}

static void post_logout(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    session_ctx c;
    memset(&c, 0, sizeof c);
    ag_db *db;
    int rc = ag_store_db(g_users.store, &db);
    if (rc == 0) rc = users_get(db, me->id, &c.u, NULL, 0);
    if (rc == AG_ENOTFOUND) {
        ag_res_error(res, 401, "UNAUTHENTICATED", "user no longer exists", NULL);
        return;
    }
    if (rc == 0) rc = ag_store_tx(g_users.store, logout_tx, &c);
    if (ag_res_rc(req, res, rc, NULL, "logout failed")) return;
    ag_res_status(res, 204);
}

static void post_verify(ag_http_req *req, ag_http_res *res, void *ud)
{
    json_t *body;
    if (ag_req_json(req, res, &body) < 0) return;
    ag_validator v;
    ag_v_init(&v);
    const char *token = ag_v_str(&v, body, "token", AG_V_REQUIRED, 1, 8192);
    if (!ag_v_passed(&v, res, body)) return;
    ag_claims c;
    char why[128];
    int rc = ag_jwt_verify(g_users.keys, token, &g_users.auth.policy, &c, why, sizeof why);
    json_decref(body);
    if (rc < 0) {
        ag_res_error(res, 401, "INVALID_TOKEN", rc == AG_ENOTFOUND ? "unknown key" : why, NULL);
        return;
    }
    ag_res_ok(res, 200,
              json_pack("{s:b, s:{s:s, s:s, s:s}, s:I}", "valid", 1, "user", "id", c.sub, "email",
                        c.email, "role", c.role, "exp", (json_int_t)c.exp));
}

static void get_jwks(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_res_header(res, "Cache-Control", "public, max-age=300");
    ag_res_json(res, 200, ag_keyset_jwks(g_users.keys));
}

static void post_token(ag_http_req *req, ag_http_res *res, void *ud)
{
    json_t *body;
    if (ag_req_json(req, res, &body) < 0) return;
    ag_validator v;
    ag_v_init(&v);
    const char *id = ag_v_str(&v, body, "clientId", AG_V_REQUIRED, 1, 64);
    const char *secret = ag_v_str(&v, body, "clientSecret", AG_V_REQUIRED, 1, 256);
    if (!ag_v_passed(&v, res, body)) return;
    char hash[AG_PASSWORD_HASH_MAX] = "";
    ag_db *db;
    int rc = ag_store_db(g_users.store, &db);
    if (rc == 0) rc = clients_get_hash(db, id, hash, sizeof hash);
    bool ok = rc == 0 && ag_password_verify(hash, secret);
    user_row u;
    memset(&u, 0, sizeof u);
    snprintf(u.id, sizeof u.id, "service:%s", id);
    json_decref(body);
    if (!ok) {
        ag_res_error(res, 401, "INVALID_CLIENT", "invalid client credentials", NULL);
        return;
    }
    snprintf(u.role, sizeof u.role, "service");
    char *token;
    if ((rc = access_token(&u, &token)) < 0) {
        ag_res_internal(req, res, "token signing failed", rc);
        return;
    }
    ag_res_ok(res, 200,
              json_pack("{s:s, s:s, s:I}", "token", token, "tokenType", "Bearer", "expiresIn",
                        (json_int_t)g_users.access_ttl_s));
    ag_free(token);
}

/* ---- Users ---------------------------------------------------------------------------------- */

static void get_me(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    user_row u;
    ag_db *db;
    int rc = ag_store_db(g_users.store, &db);
    if (rc == 0) rc = users_get(db, me->id, &u, NULL, 0);
    if (ag_res_rc(req, res, rc, "no such user", "get me failed")) return;
    ag_res_ok(res, 200, user_json(&u, true));
}

static void get_user(ag_http_req *req, ag_http_res *res, void *ud)
{
    user_row u;
    ag_db *db;
    int rc = ag_store_db(g_users.store, &db);
    if (rc == 0) rc = users_get(db, ag_req_param(req, "id"), &u, NULL, 0);
    if (ag_res_rc(req, res, rc, "no such user", "get user failed")) return;
    const ag_caller *me = ag_auth_caller(req);
    bool own = me && (strcmp(me->id, u.id) == 0 || strcmp(me->role, "admin") == 0);
    ag_res_ok(res, 200, user_json(&u, own));
}

/* Self or admin; otherwise 403 (after 401 without a caller). */
static const ag_caller *self_or_admin(ag_http_req *req, ag_http_res *res, const char *id)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return NULL;
    if (strcmp(me->id, id) != 0 && strcmp(me->role, "admin") != 0) {
        ag_res_error(res, 403, "FORBIDDEN", "only the user or an admin may do this", NULL);
        return NULL;
    }
    return me;
}

typedef struct update_ctx {
    const char *id, *username, *avatar, *bio;
    user_row u;
} update_ctx;

static int update_tx(ag_db *db, void *ud)
{
    update_ctx *c = ud;
    int rc = users_update_profile(db, c->id, c->username, c->avatar, c->bio);
    if (rc < 0) return rc;
    rc = users_get(db, c->id, &c->u, NULL, 0);
    if (rc < 0) return rc;
    return publish_user_event(db, "user.updated", &c->u);
}

static void put_user(ag_http_req *req, ag_http_res *res, void *ud)
{
    const char *id = ag_req_param(req, "id");
    if (!self_or_admin(req, res, id)) return;
    static const char *const fields[] = {"username", "avatarUrl", "bio", NULL};
    ag_validator v;
    json_t *body = ag_req_json_object(req, res, &v, fields);
    if (!body) return;
    update_ctx c = {.id = id};
    c.username = ag_v_str(&v, body, "username", 0, 3, 50);
    c.avatar = ag_v_str(&v, body, "avatarUrl", 0, 0, 500);
    c.bio = ag_v_str(&v, body, "bio", 0, 0, 1000);
    check_username(&v, c.username);
    if (!ag_v_passed(&v, res, body)) return;
    int rc = ag_store_tx(g_users.store, update_tx, &c);
    json_decref(body);
    if (rc == AG_EEXISTS) {
        ag_res_error(res, 409, "CONFLICT", "username is taken", NULL);
        return;
    }
    if (ag_res_rc(req, res, rc, "no such user", "update failed")) return;
    ag_res_ok(res, 200, user_json(&c.u, true));
}

typedef struct password_ctx {
    const char *id;
    const char *hash;
} password_ctx;

static int password_tx(ag_db *db, void *ud)
{
    password_ctx *c = ud;
    int rc = users_set_password(db, c->id, c->hash);
    if (rc < 0) return rc;
    return refresh_revoke_user(db, c->id); /* other sessions end */
}

static void put_password(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    json_t *body;
    if (ag_req_json(req, res, &body) < 0) return;
    ag_validator v;
    ag_v_init(&v);
    const char *old = ag_v_str(&v, body, "oldPassword", AG_V_REQUIRED, 1, 128);
    const char *new_pw = ag_v_str(&v, body, "newPassword", AG_V_REQUIRED, 8, 128);
    if (!ag_v_passed(&v, res, body)) return;
    user_row u;
    char hash[AG_PASSWORD_HASH_MAX];
    ag_db *db;
    int rc = ag_store_db(g_users.store, &db);
    if (rc == 0) rc = users_get(db, me->id, &u, hash, sizeof hash);
    if (rc < 0 || !ag_password_verify(hash, old)) {
        json_decref(body);
        ag_res_error(res, 401, "INVALID_CREDENTIALS", "the old password is wrong", NULL);
        return;
    }
    char new_hash[AG_PASSWORD_HASH_MAX];
    rc = ag_password_hash(new_pw, new_hash);
    json_decref(body);
    password_ctx c = {me->id, new_hash};
    if (rc == 0) rc = ag_store_tx(g_users.store, password_tx, &c);
    if (ag_res_rc(req, res, rc, NULL, "password change failed")) return;
    ag_res_status(res, 204);
}

typedef struct delete_ctx {
    user_row u;
} delete_ctx;

static int delete_tx(ag_db *db, void *ud)
{
    delete_ctx *c = ud;
    int rc = users_get(db, c->u.id, &c->u, NULL, 0);
    if (rc < 0) return rc;
    rc = users_delete(db, c->u.id);
    if (rc < 0) return rc;
    return publish_user_event(db, "user.deleted", &c->u);
}

static void delete_user(ag_http_req *req, ag_http_res *res, void *ud)
{
    const char *id = ag_req_param(req, "id");
    if (!self_or_admin(req, res, id)) return;
    delete_ctx c;
    memset(&c, 0, sizeof c);
    snprintf(c.u.id, sizeof c.u.id, "%s", id);
    int rc = ag_store_tx(g_users.store, delete_tx, &c);
    if (ag_res_rc(req, res, rc, "no such user", "delete failed")) return;
    ag_res_status(res, 204);
}

static void list_users(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!ag_auth_caller_required(req, res)) return;
    int64_t page, limit;
    if (!ag_req_page(req, res, 20, 100, &page, &limit)) return;
    ag_db *db;
    int64_t total = 0;
    json_t *arr = json_array();
    int rc = ag_store_db(g_users.store, &db);
    if (rc == 0) rc = users_page(db, page, limit, arr, &total);
    ag_res_page_rc(req, res, rc, arr, page, limit, total, "list failed");
}

static void rotate_keys(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!ag_auth_caller_role(req, res, "admin")) return;
    char kid[AG_KID_MAX];
    int rc = ag_keyset_generate(g_users.keys, kid);
    ag_db *db;
    if (rc == 0) rc = ag_store_db(g_users.store, &db);
    if (rc == 0) rc = keys_save(db, g_users.keys, kid);
    if (ag_res_rc(req, res, rc, NULL, "key rotation failed")) return;
    ag_info("signing key rotated", AG_FS("kid", kid));
    ag_res_ok(res, 201, json_pack("{s:s}", "kid", kid));
}

void users_routes(ag_router *r)
{
    ag_router_add(r, "POST", "/v1/auth/register", post_register, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "POST", "/v1/auth/login", post_login, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "POST", "/v1/auth/refresh", post_refresh, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "POST", "/v1/auth/logout", post_logout, NULL, 0);
    ag_router_add(r, "POST", "/v1/auth/verify", post_verify, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "POST", "/v1/auth/token", post_token, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "GET", "/.well-known/jwks.json", get_jwks, NULL, 0);
    ag_router_add(r, "GET", "/v1/users/me", get_me, NULL, 0);
    ag_router_add(r, "PUT", "/v1/users/me/password", put_password, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "GET", "/v1/users", list_users, NULL, 0);
    ag_router_add(r, "GET", "/v1/users/:id", get_user, NULL, 0);
    ag_router_add(r, "PUT", "/v1/users/:id", put_user, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "DELETE", "/v1/users/:id", delete_user, NULL, 0);
    ag_router_add(r, "POST", "/v1/admin/keys/rotate", rotate_keys, NULL, 0);
}
