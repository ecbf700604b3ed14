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

static void on_stop(void *ud)
{
    (void)ud;
    msg_limiter_free();
}

int main(void)
{
    ag_service *svc;
    if (ag_service_new("messages", 7012, &svc) < 0) return 2;
    const char *schema;
    long long max_chars;
    double rate, burst;
    ag_auth *auth;
    int rc = 0;
    rc |= ag_config_str("AGORA_SCHEMA_DIR", AGORA_MESSAGES_SCHEMA_DIR, &schema);
    rc |= ag_config_int("AGORA_MESSAGE_MAX_CHARS", MSG_MAX_CHARS, 1, 100000, &max_chars);
    rc |= config_rate("AGORA_MESSAGES_RATE", 5, 1e-6, &rate);
    rc |= config_rate("AGORA_MESSAGES_BURST", 20, 1, &burst);
    if (rc < 0 || msg_limiter_init(rate, burst) < 0 ||
        ag_service_use_store(svc, schema, &g_msg.store) < 0 || chat_members_init(g_msg.store) < 0 ||
        ag_service_use_bus(svc, &g_msg.bus) < 0 || messages_subscribe(g_msg.bus) < 0 ||
        ag_service_use_auth(svc, 0, &auth) < 0 ||
        ag_service_peer(svc, "rooms", "http://127.0.0.1:7011", &g_msg.rooms) < 0 ||
        ag_service_peer(svc, "files", "http://127.0.0.1:7013", &g_msg.files) < 0 ||
        ag_service_peer(svc, "users", "http://127.0.0.1:7001", &g_msg.users) < 0) {
        ag_service_free(svc);
        return 2;
    }
    g_msg.max_chars = (size_t)max_chars;
    messages_routes(ag_service_router(svc));
    ag_service_set_openapi(svc, messages_openapi_json);
    ag_service_on_stop(svc, on_stop, NULL);
    rc = ag_service_run(svc);
    ag_service_free(svc);
    return rc == 0 ? 0 : 1;
}
