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

int main(void)
{
    ag_service *svc;
    if (ag_service_new("rooms", 7011, &svc) < 0) return 2;
    const char *schema;
    ag_auth *auth;
    if (ag_config_str("AGORA_SCHEMA_DIR", AGORA_ROOMS_SCHEMA_DIR, &schema) < 0 ||
        ag_service_use_store(svc, schema, &g_rooms.store) < 0 ||
        ag_service_use_bus(svc, &g_rooms.bus) < 0 || rooms_subscribe(g_rooms.bus) < 0 ||
        ag_service_use_auth(svc, 0, &auth) < 0 ||
        ag_service_peer(svc, "users", "http://127.0.0.1:7001", &g_rooms.users) < 0) {
        ag_service_free(svc);
        return 2;
    }
    rooms_routes(ag_service_router(svc));
    ag_service_set_openapi(svc, rooms_openapi_json);
    int rc = ag_service_run(svc);
    ag_service_free(svc);
    return rc == 0 ? 0 : 1;
}
