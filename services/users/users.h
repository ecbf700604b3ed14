/*
 * users.h — what the files of agora-users share: main.c wires the service,
 * routes.c is its HTTP API, store.c its SQL, events.c what it publishes.
 */
#ifndef AGORA_USERS_H
#define AGORA_USERS_H

#include "agora/agora.h"
#include "agora/auth.h"
#include "agora/bus.h"
#include "agora/grpc.h"
#include "agora/store.h"

typedef struct users_ctx {
    ag_store *store;
    ag_bus *bus;
    ag_keyset *keys;
    ag_auth auth;
    const char *issuer;
    const char *audience;
    int64_t access_ttl_s;
    int64_t refresh_ttl_s;
} users_ctx;

extern users_ctx g_users;

/* A user row, as the API shows it (strings owned by the struct). */
typedef struct user_row {
    char id[64], username[64], email[256], role[32];
    char avatar_url[512], bio[1024], last_seen[40], created_at[40];
    bool online;
} user_row;

/* store.c */
int users_insert(ag_db *db, const user_row *u, const char *password_hash);
int users_get(ag_db *db, const char *id, user_row *out, char *hash_out, size_t hash_len);
int users_get_by_email(ag_db *db, const char *email, user_row *out, char *hash_out,
                       size_t hash_len);
int users_set_online(ag_db *db, const char *id, bool online);
int users_update_profile(ag_db *db, const char *id, const char *username, const char *avatar_url,
                         const char *bio);
int users_set_password(ag_db *db, const char *id, const char *hash);
int users_delete(ag_db *db, const char *id);
int users_count(ag_db *db, int64_t *n);
/* Fills `arr` with page `page` (1-based) of `limit` users as JSON. */
int users_list(ag_db *db, int64_t page, int64_t limit, json_t *arr);
/* users_count into *total, then users_list: one page of a listing. */
int users_page(ag_db *db, int64_t page, int64_t limit, json_t *arr, int64_t *total);
int refresh_store(ag_db *db, const char *token_hash, const char *user_id, int64_t expires_ms);
/* Marks the token revoked; *user_id gets its owner. AG_ENOTFOUND when it
 * does not exist, is revoked or expired. */
int refresh_take(ag_db *db, const char *token_hash, char *user_id, size_t n);
int refresh_revoke_user(ag_db *db, const char *user_id);
int keys_load(ag_db *db, ag_keyset *ks);
int keys_save(ag_db *db, ag_keyset *ks, const char *kid);
int clients_get_hash(ag_db *db, const char *client_id, char *hash, size_t n);
int clients_put(ag_db *db, const char *client_id, const char *hash, const char *name);

json_t *user_json(const user_row *u, bool private_fields);

/* events.c: each publishes inside the caller's transaction. */
int publish_user_event(ag_db *db, const char *type, const user_row *u);

/* routes.c */
void users_routes(ag_router *r);
/* Registers a customer from {username, email, password} (the rules of
 * POST /v1/auth/register): 0 with *out filled; AG_EINVAL with the problems
 * in `v` (initialised by the caller, released by it); AG_EEXISTS with
 * *conflict 1 (email taken) or 2 (username taken); another AG_E* code.
 * With `refresh` (64 bytes) non-NULL, a refresh token for the new session
 * is made and kept. user.registered is published in the same transaction. */
int users_register(json_t *body, ag_validator *v, user_row *out, char *refresh, int *conflict);

/* grpc.c: agora.users.v1.UserService (user.proto) on port 7101. */
extern const ag_grpc_method users_grpc_methods[];
/* openapi.json (embedded by cmake/embed.cmake): the document served at /openapi.json. */
extern const char users_openapi_json[];

#endif
