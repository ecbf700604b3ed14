/*
 * agora-rooms — the chat's rooms, membership and roles (DESIGN.md §1; port
 * 7011). The API is in routes.c and README.md; the contract with
 * agora-messages, agora-files and the realtime hub is
 * docs/internals/chat.md.
 *
 * Wiring, top to bottom: the store and its migrations, the bus and its one
 * subscription (events.c: user.deleted), the token verifier with its
 * middleware (agora/peer.h: AGORA_JWKS_URL, AGORA_JWT_*), agora-users as a
 * peer (AGORA_USERS_URL, default http://127.0.0.1:7001: does an invited
 * user exist?), the routes and their OpenAPI document.
 *
 * Environment: AGORA_DB, AGORA_BUS, PORT (7011) as for every service;
 * AGORA_SCHEMA_DIR (the migrations; default the source tree's schema/).
 */
#include "rooms.h"

#ifndef AGORA_ROOMS_SCHEMA_DIR
#define AGORA_ROOMS_SCHEMA_DIR "services/rooms/schema"
#endif

rooms_ctx g_rooms;

static const char *const k_publishes[] = {
    "room.created", "room.updated", "room.deleted", "room.user_joined", "room.user_left", NULL,
};

static ag_auth *s_auth;

static const ag_service_def k_rooms = {
    .name = "rooms",
    .port = 7011,
    .schema_dir = AGORA_ROOMS_SCHEMA_DIR,
    .store = &g_rooms.store,
    .bus = &g_rooms.bus,
    .subscribe = rooms_subscribe,
    .publishes = k_publishes,
    .auth = &s_auth,
    .peers =
        (const ag_peer_def[]){
            {.name = "users", .default_url = "http://127.0.0.1:7001", .out = &g_rooms.users},
            {.name = NULL}},
    .routes = rooms_routes,
    .openapi = rooms_openapi_json,
};

int main(void)
{
    return ag_service_main(&k_rooms);
}
