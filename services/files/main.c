/*
 * agora-files — the chat's files: upload, metadata, download with ranges,
 * delete (DESIGN.md §1, docs/internals/chat.md; port 7013). The API is in
 * routes.c, content.c and README.md.
 *
 * Wiring, top to bottom: configuration, the files directory, the store and
 * its migrations, the membership replica's tables (agora-chat), the start-
 * up sweep (store.c: orphan bytes of a crashed upload, the trash), the bus
 * (events.c: room.*), the token verifier, the rooms peer (membership
 * misses), the routes (uploads spooled into <dir>/spool, so that linking
 * them into <dir>/blobs copies nothing).
 *
 * Environment: AGORA_DB, AGORA_BUS, PORT (7013) and the JWT settings of
 * agora/peer.h as for every service; AGORA_ROOMS_URL; AGORA_FILES_DIR
 * (default var/files); AGORA_FILES_MAX_BYTES (the largest upload, default
 * 100 MiB; "100MiB" or a number of bytes); AGORA_SCHEMA_DIR (the
 * migrations; default the source tree's schema/).
 */
#include <string.h>

#include "files.h"

#ifndef AGORA_FILES_SCHEMA_DIR
#define AGORA_FILES_SCHEMA_DIR "services/files/schema"
#endif

files_ctx g_files;

/* Token checks on worker threads only: the download route runs on the loop
 * (AG_ROUTE_ASYNC) and verifies on a worker itself (content.c), since a
 * JWKS refresh blocks; the loop's other routes are /health and /metrics. */
static int auth_on_workers(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (ag_loop_current() != NULL) return AG_NEXT;
    return ag_auth_middleware(req, res, ud);
}

static int config(ag_service *svc)
{
    g_files.svc = svc;
    const char *dir;
    size_t max_bytes;
    int rc = 0;
    rc |= ag_config_str("AGORA_FILES_DIR", "var/files", &dir);
    rc |= ag_config_size("AGORA_FILES_MAX_BYTES", FILES_DEFAULT_MAX_BYTES, &max_bytes);
    if (rc < 0) return AG_ECONFIG;
    snprintf(g_files.dir, sizeof g_files.dir, "%s", dir);
    g_files.max_bytes = max_bytes;
    return files_dirs_init();
}

static int init(ag_service *svc)
{
    ag_router_use(ag_service_router(svc), auth_on_workers, g_files.auth);
    int rc = chat_members_init(g_files.store);
    return rc < 0 ? rc : files_sweep();
}

static const ag_service_def k_files = {
    .name = "files",
    .port = 7013,
    .config = config,
    .schema_dir = AGORA_FILES_SCHEMA_DIR,
    .store = &g_files.store,
    .bus = &g_files.bus,
    .subscribe = files_subscribe,
    .auth = &g_files.auth,
    .auth_flags = AG_AUTH_NO_MIDDLEWARE,
    .peers =
        (const ag_peer_def[]){
            {.name = "rooms", .default_url = "http://127.0.0.1:7011", .out = &g_files.rooms},
            {.name = NULL}},
    .init = init,
    .routes = files_routes,
    .openapi = files_openapi_json,
};

int main(void)
{
    return ag_service_main(&k_files);
}
