/*
 * agora-users — accounts, login, JWT issuing, JWKS, profiles, presence
 * (DESIGN.md §1, §5; port 7001).
 *
 * Wiring, top to bottom: configuration, the store and its migrations, the
 * bus, the signing keys (loaded from the store; generated on first start in
 * development; required in production), service clients, the first admin,
 * the auth middleware and the routes.
 */
#include <string.h>

#include "users.h"

#ifndef AGORA_USERS_SCHEMA_DIR
#define AGORA_USERS_SCHEMA_DIR "services/users/schema"
#endif

users_ctx g_users;

static int setup_keys(void)
{
    ag_db *db;
    int rc = ag_store_db(g_users.store, &db);
    if (rc < 0) return rc;
    int n = keys_load(db, g_users.keys);
    if (n < 0) return n;
    if (n > 0) return 0;
    const char *env;
    ag_config_str("AGORA_ENV", "development", &env);
    const char *file;
    ag_config_str("AGORA_JWT_KEYS", NULL, &file);
    if (file) {
        json_error_t jerr;
        json_t *doc = json_load_file(file, 0, &jerr);
        if (!doc || ag_keyset_import_private(g_users.keys, doc) <= 0) {
            json_decref(doc);
            ag_error("AGORA_JWT_KEYS holds no usable private key", AG_FS("file", file));
            return AG_ECONFIG;
        }
        json_decref(doc);
        return 0;
    }
    if (strcmp(env, "production") == 0) {
        ag_error("no signing key: in production configure AGORA_JWT_KEYS or provision the "
                 "store's signing_keys; refusing to start with a made-up key");
        return AG_ECONFIG;
    }
    char kid[AG_KID_MAX];
    rc = ag_keyset_generate(g_users.keys, kid);
    if (rc == 0) rc = keys_save(db, g_users.keys, kid);
    if (rc == 0) ag_info("signing key generated (development)", AG_FS("kid", kid));
    return rc;
}

/* AGORA_SERVICE_CLIENTS="orders:secret,cart:secret2": clients that may get
 * service tokens with client credentials. */
static int setup_clients(void)
{
    const char *spec;
    ag_config_str("AGORA_SERVICE_CLIENTS", NULL, &spec);
    if (!spec) return 0;
    char *copy = ag_strdup(spec), *save = NULL;
    int rc = 0;
    ag_db *db;
    rc = ag_store_db(g_users.store, &db);
    for (char *item = strtok_r(copy, ",", &save); item && rc == 0;
         item = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(item, ':');
        if (!colon || colon == item || !colon[1]) {
            ag_error("AGORA_SERVICE_CLIENTS: expected id:secret pairs separated by commas");
            rc = AG_ECONFIG;
            break;
        }
        *colon = '\0';
        char hash[AG_PASSWORD_HASH_MAX];
        rc = ag_password_hash(colon + 1, hash);
        if (rc == 0) rc = clients_put(db, item, hash, item);
    }
    ag_free(copy);
    return rc;
}

typedef struct admin_ctx {
    user_row u;
    const char *hash;
} admin_ctx;

static int admin_tx(ag_db *db, void *ud)
{
    admin_ctx *a = ud;
    int rc = users_insert(db, &a->u, a->hash);
    if (rc < 0) return rc;
    return publish_user_event(db, "user.registered", &a->u);
}

static int setup_admin(void)
{
    const char *email, *password;
    ag_config_str("AGORA_ADMIN_EMAIL", NULL, &email);
    ag_config_str("AGORA_ADMIN_PASSWORD", NULL, &password);
    if (!email) return 0;
    if (!password || strlen(password) < 8) {
        ag_error("AGORA_ADMIN_EMAIL needs AGORA_ADMIN_PASSWORD of at least 8 characters");
        return AG_ECONFIG;
    }
    admin_ctx a;
    memset(&a, 0, sizeof a);
    snprintf(a.u.email, sizeof a.u.email, "%s", email);
    for (char *p = a.u.email; *p; p++)
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    ag_db *db;
    int rc = ag_store_db(g_users.store, &db);
    if (rc < 0) return rc;
    user_row existing;
    if (users_get_by_email(db, a.u.email, &existing, NULL, 0) == 0) return 0;
    ag_id_new_str(a.u.id);
    snprintf(a.u.username, sizeof a.u.username, "admin");
    snprintf(a.u.role, sizeof a.u.role, "admin");
    ag_time_now(a.u.created_at, sizeof a.u.created_at);
    char hash[AG_PASSWORD_HASH_MAX];
    rc = ag_password_hash(password, hash);
    a.hash = hash;
    if (rc == 0) rc = ag_store_tx(g_users.store, admin_tx, &a);
    if (rc == AG_EEXISTS) {
        /* "admin" as a username is taken by someone else: use the id. */
        snprintf(a.u.username, sizeof a.u.username, "admin-%.8s", a.u.id + 28);
        rc = ag_store_tx(g_users.store, admin_tx, &a);
    }
    if (rc == 0) ag_info("first admin created", AG_FS("email", a.u.email));
    return rc;
}

static int config(ag_service *svc)
{
    uint64_t ttl_ms, refresh_ms;
    int rc = 0;
    rc |= ag_config_duration_ms("AGORA_JWT_TTL", 15 * 60 * 1000, &ttl_ms);
    rc |= ag_config_duration_ms("AGORA_REFRESH_TTL", 30ull * 24 * 3600 * 1000, &refresh_ms);
    rc |= ag_config_str("AGORA_JWT_ISSUER", "agora-users", &g_users.issuer);
    rc |= ag_config_str("AGORA_JWT_AUDIENCE", "agora", &g_users.audience);
    if (rc < 0) return AG_ECONFIG;
    g_users.access_ttl_s = (int64_t)(ttl_ms / 1000);
    g_users.refresh_ttl_s = (int64_t)(refresh_ms / 1000);
    return ag_keyset_new(&g_users.keys);
}

/* The signing keys, service clients and first admin in the store; then
 * this service verifies its own tokens with its own keys (the others use
 * its JWKS through ag_service_use_auth). */
static int init(ag_service *svc)
{
    int rc = setup_keys();
    if (rc == 0) rc = setup_clients();
    if (rc == 0) rc = setup_admin();
    if (rc < 0) return rc;
    g_users.auth.keys = g_users.keys;
    g_users.auth.policy.iss = g_users.issuer;
    g_users.auth.policy.aud = g_users.audience;
    g_users.auth.policy.leeway_s = 30;
    ag_router_use(ag_service_router(svc), ag_auth_middleware, &g_users.auth);
    return 0;
}

static void cleanup(void)
{
    ag_keyset_free(g_users.keys);
}

static const char *const k_publishes[] = {
    "user.registered", "user.updated", "user.deleted", "user.logged_in", "user.logged_out", NULL,
};

static const ag_service_def k_users = {
    .name = "users",
    .port = 7001,
    .config = config,
    .schema_dir = AGORA_USERS_SCHEMA_DIR,
    .store = &g_users.store,
    .bus = &g_users.bus,
    .publishes = k_publishes,
    .init = init,
    .routes = users_routes,
    .openapi = users_openapi_json,
    .grpc = users_grpc_methods,
    .grpc_name = "agora.users.v1.UserService",
    .cleanup = cleanup,
};

int main(void)
{
    return ag_service_main(&k_users);
}
