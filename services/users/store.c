/* store.c — agora-users' SQL. Every value goes in as a parameter. */
#include <string.h>

#include "users.h"

#define USER_COLS                                                                                  \
    "id, username, email, role, COALESCE(avatar_url, ''), COALESCE(bio, ''), online,"              \
    " COALESCE(last_seen, ''), created_at, password_hash"

static void copy(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

static void row_to_user(ag_rows *r, user_row *u, char *hash, size_t hash_len)
{
    ag_rows_copy(r, 0, u->id, sizeof u->id);
    ag_rows_copy(r, 1, u->username, sizeof u->username);
    ag_rows_copy(r, 2, u->email, sizeof u->email);
    ag_rows_copy(r, 3, u->role, sizeof u->role);
    ag_rows_copy(r, 4, u->avatar_url, sizeof u->avatar_url);
    ag_rows_copy(r, 5, u->bio, sizeof u->bio);
    u->online = ag_rows_bool(r, 6);
    ag_rows_copy(r, 7, u->last_seen, sizeof u->last_seen);
    ag_rows_copy(r, 8, u->created_at, sizeof u->created_at);
    if (hash) copy(hash, hash_len, ag_rows_text(r, 9));
}

static int get_one(ag_db *db, const char *sql, const char *key, user_row *out, char *hash,
                   size_t hash_len)
{
    ag_val p = AG_VTEXT(key);
    ag_rows *r;
    int rc = ag_db_query(db, sql, &p, 1, &r);
    if (rc < 0) return rc;
    rc = ag_rows_next(r);
    if (rc == 1) {
        row_to_user(r, out, hash, hash_len);
        rc = 0;
    } else if (rc == 0) {
        rc = AG_ENOTFOUND;
    }
    ag_rows_free(r);
    return rc;
}

int users_get(ag_db *db, const char *id, user_row *out, char *hash, size_t hash_len)
{
    return get_one(db, "SELECT " USER_COLS " FROM users WHERE id = $1", id, out, hash, hash_len);
}

int users_get_by_email(ag_db *db, const char *email, user_row *out, char *hash, size_t hash_len)
{
    return get_one(db, "SELECT " USER_COLS " FROM users WHERE email = $1", email, out, hash,
                   hash_len);
}

int users_insert(ag_db *db, const user_row *u, const char *password_hash)
{
    ag_val p[] = {AG_VTEXT(u->id),         AG_VTEXT(u->username), AG_VTEXT(u->email),
                  AG_VTEXT(password_hash), AG_VTEXT(u->role),     AG_VTEXT(u->created_at)};
    return ag_db_exec(db,
                      "INSERT INTO users (id, username, email, password_hash, role, created_at,"
                      " updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                      p, 6, NULL);
}

int users_set_online(ag_db *db, const char *id, bool online)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VBOOL(online), AG_VTEXT(ts), AG_VTEXT(id)};
    return ag_db_exec(db, "UPDATE users SET online = $1, last_seen = $2 WHERE id = $3", p, 3, NULL);
}

int users_update_profile(ag_db *db, const char *id, const char *username, const char *avatar_url,
                         const char *bio)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    /* NULL keeps a field as it is. */
    ag_val p[] = {AG_VTEXT(username), AG_VTEXT(avatar_url), AG_VTEXT(bio), AG_VTEXT(ts),
                  AG_VTEXT(id)};
    return ag_db_exec_changed(db,
                              "UPDATE users SET username = COALESCE($1, username),"
                              " avatar_url = COALESCE($2, avatar_url), bio = COALESCE($3, bio),"
                              " updated_at = $4 WHERE id = $5",
                              p, 5, AG_ENOTFOUND);
}

int users_set_password(ag_db *db, const char *id, const char *hash)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VTEXT(hash), AG_VTEXT(ts), AG_VTEXT(id)};
    return ag_db_exec(db, "UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3", p,
                      3, NULL);
}

int users_delete(ag_db *db, const char *id)
{
    ag_val p = AG_VTEXT(id);
    int64_t n = 0;
    int rc = ag_db_exec(db, "DELETE FROM users WHERE id = $1", &p, 1, &n);
    if (rc < 0) return rc;
    if (n == 0) return AG_ENOTFOUND;
    return ag_db_exec(db, "DELETE FROM refresh_tokens WHERE user_id = $1", &p, 1, NULL);
}

int users_count(ag_db *db, int64_t *n)
{
    return ag_db_query_int(db, "SELECT COUNT(*) FROM users", NULL, 0, n);
}

int users_page(ag_db *db, int64_t page, int64_t limit, json_t *arr, int64_t *total)
{
    int rc = users_count(db, total);
    return rc < 0 ? rc : users_list(db, page, limit, arr);
}

int users_list(ag_db *db, int64_t page, int64_t limit, json_t *arr)
{
    ag_val p[] = {AG_VINT(limit), AG_VINT((page - 1) * limit)};
    ag_rows *r;
    int rc = ag_db_query(
        db, "SELECT " USER_COLS " FROM users ORDER BY created_at, id LIMIT $1 OFFSET $2", p, 2, &r);
    if (rc < 0) return rc;
    while ((rc = ag_rows_next(r)) == 1) {
        user_row u;
        row_to_user(r, &u, NULL, 0);
        json_array_append_new(arr, user_json(&u, false));
    }
    ag_rows_free(r);
    return rc < 0 ? rc : 0;
}

int refresh_store(ag_db *db, const char *token_hash, const char *user_id, int64_t expires_ms)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VTEXT(token_hash), AG_VTEXT(user_id), AG_VINT(expires_ms), AG_VTEXT(ts)};
    return ag_db_exec(db,
                      "INSERT INTO refresh_tokens (token_hash, user_id, expires_ms, created_at)"
                      " VALUES ($1, $2, $3, $4)",
                      p, 4, NULL);
}

int refresh_take(ag_db *db, const char *token_hash, char *user_id, size_t n)
{
    ag_val p[] = {AG_VTEXT(token_hash), AG_VINT((int64_t)ag_wall_ms())};
    int rc = ag_db_query_text(db,
                              "SELECT user_id FROM refresh_tokens WHERE token_hash = $1"
                              " AND revoked = FALSE AND expires_ms > $2",
                              p, 2, user_id, n);
    if (rc < 0) return rc;
    ag_val h = AG_VTEXT(token_hash);
    return ag_db_exec(db, "UPDATE refresh_tokens SET revoked = TRUE WHERE token_hash = $1", &h, 1,
                      NULL);
}

int refresh_revoke_user(ag_db *db, const char *user_id)
{
    ag_val p = AG_VTEXT(user_id);
    return ag_db_exec(db, "UPDATE refresh_tokens SET revoked = TRUE WHERE user_id = $1", &p, 1,
                      NULL);
}

int keys_load(ag_db *db, ag_keyset *ks)
{
    ag_rows *r;
    int rc =
        ag_db_query(db, "SELECT private_jwks FROM signing_keys ORDER BY created_ms", NULL, 0, &r);
    if (rc < 0) return rc;
    int n = 0;
    while ((rc = ag_rows_next(r)) == 1) {
        json_t *doc = json_loads(ag_rows_text(r, 0), 0, NULL);
        if (doc && ag_keyset_import_private(ks, doc) >= 0) n++;
        json_decref(doc);
    }
    ag_rows_free(r);
    return rc < 0 ? rc : n;
}

int keys_save(ag_db *db, ag_keyset *ks, const char *kid)
{
    json_t *all = ag_keyset_export_private(ks);
    json_t *keys = json_object_get(all, "keys");
    json_t *one = NULL;
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        const char *id = json_string_value(json_object_get(k, "kid"));
        if (id && strcmp(id, kid) == 0) one = k;
    }
    int rc = AG_ENOTFOUND;
    if (one) {
        json_t *doc = json_pack("{s:[O]}", "keys", one);
        char *text = json_dumps(doc, JSON_COMPACT);
        ag_val p[] = {AG_VTEXT(kid), AG_VTEXT(text), AG_VINT((int64_t)ag_wall_ms())};
        rc = ag_db_exec(
            db, "INSERT INTO signing_keys (kid, private_jwks, created_ms) VALUES ($1, $2, $3)", p,
            3, NULL);
        ag_free(text);
        json_decref(doc);
    }
    json_decref(all);
    return rc;
}

int clients_get_hash(ag_db *db, const char *client_id, char *hash, size_t n)
{
    ag_val p = AG_VTEXT(client_id);
    return ag_db_query_text(db, "SELECT secret_hash FROM clients WHERE client_id = $1", &p, 1, hash,
                            n);
}

int clients_put(ag_db *db, const char *client_id, const char *hash, const char *name)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VTEXT(client_id), AG_VTEXT(hash), AG_VTEXT(name), AG_VTEXT(ts)};
    ag_val del = AG_VTEXT(client_id);
    int rc = ag_db_exec(db, "DELETE FROM clients WHERE client_id = $1", &del, 1, NULL);
    if (rc < 0) return rc;
    return ag_db_exec(db,
                      "INSERT INTO clients (client_id, secret_hash, name, created_at)"
                      " VALUES ($1, $2, $3, $4)",
                      p, 4, NULL);
}

json_t *user_json(const user_row *u, bool private_fields)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:b}", "id", u->id, "username", u->username, "role",
                          u->role, "online", u->online);
    json_object_set_new(o, "avatarUrl",
                        u->avatar_url[0] ? json_string(u->avatar_url) : json_null());
    json_object_set_new(o, "bio", u->bio[0] ? json_string(u->bio) : json_null());
    json_object_set_new(o, "lastSeen", u->last_seen[0] ? json_string(u->last_seen) : json_null());
    json_object_set_new(o, "createdAt", json_string(u->created_at));
    if (private_fields) json_object_set_new(o, "email", json_string(u->email));
    return o;
}
