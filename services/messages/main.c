/*
 * agora-messages — the chat's messages: history, replies, reactions, read
 * markers and search (DESIGN.md §1, docs/internals/chat.md; port 7012).
 * The API is in routes.c and README.md.
 *
 * Wiring, top to bottom: configuration, the store and its migrations, the
 * membership replica's tables (agora-chat), the bus and its subscriptions
 * (events.c: room.* into the replica, user.* into the users projection),
 * the token verifier and its middleware, the peers (agora-rooms for
 * membership misses, agora-files for attachments, agora-users for the name
 * of a user whose event has not arrived), the send rate limit, the routes.
 *
 * Environment: AGORA_DB, AGORA_BUS, PORT (7012) and the JWT settings of
 * agora/peer.h as for every service; AGORA_ROOMS_URL, AGORA_FILES_URL,
 * AGORA_USERS_URL; AGORA_MESSAGES_RATE (sends a second per user, default 5)
 * and AGORA_MESSAGES_BURST (20); AGORA_MESSAGE_MAX_CHARS (4000);
 * AGORA_SCHEMA_DIR (the migrations; default the source tree's schema/).
 */
#include <stdlib.h>
#include <string.h>

#include "messages.h"

#ifndef AGORA_MESSAGES_SCHEMA_DIR
#define AGORA_MESSAGES_SCHEMA_DIR "services/messages/schema"
#endif

msg_ctx g_msg;

/* A positive number from the environment (fractions allowed: 0.5 a second). */
static int config_rate(const char *name, double def, double min, double *out)
{
    const char *raw = ag_config_raw(name);
    if (!raw) {
        *out = def;
        return 0;
    }
    char *end;
    double v = strtod(raw, &end);
    if (end == raw || *end || !(v >= min) || v > 1e6) {
        ag_error("bad configuration", AG_FS("variable", name),
                 AG_FS("expected", "a number of at least 1 (rate: above 0)"), AG_FS("got", raw));
        return AG_ECONFIG;
    }
    *out = v;
    return 0;
}

static int config(ag_service *svc)
{
    long long max_chars;
    double rate, burst;
    int rc = 0;
    rc |= ag_config_int("AGORA_MESSAGE_MAX_CHARS", MSG_MAX_CHARS, 1, 100000, &max_chars);
    rc |= config_rate("AGORA_MESSAGES_RATE", 5, 1e-6, &rate);
    rc |= config_rate("AGORA_MESSAGES_BURST", 20, 1, &burst);
    if (rc < 0) return AG_ECONFIG;
    g_msg.max_chars = (size_t)max_chars;
    return msg_limiter_init(rate, burst);
}

static int init(ag_service *svc)
{
    return chat_members_init(g_msg.store);
}

static const char *const k_publishes[] = {"message.sent", "message.updated", "message.deleted",
                                          NULL};

static ag_auth *s_auth;

static const ag_service_def k_messages = {
    .name = "messages",
    .port = 7012,
    .config = config,
    .schema_dir = AGORA_MESSAGES_SCHEMA_DIR,
    .store = &g_msg.store,
    .bus = &g_msg.bus,
    .subscribe = messages_subscribe,
    .publishes = k_publishes,
    .auth = &s_auth,
    .peers =
        (const ag_peer_def[]){
            {.name = "rooms", .default_url = "http://127.0.0.1:7011", .out = &g_msg.rooms},
            {.name = "files", .default_url = "http://127.0.0.1:7013", .out = &g_msg.files},
            {.name = "users", .default_url = "http://127.0.0.1:7001", .out = &g_msg.users},
            {.name = NULL}},
    .init = init,
    .routes = messages_routes,
    .openapi = messages_openapi_json,
    .cleanup = msg_limiter_free,
};

int main(void)
{
    return ag_service_main(&k_messages);
}
