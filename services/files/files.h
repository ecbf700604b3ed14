/*
 * files.h — what the parts of agora-files share (services/files/README.md).
 *
 *   main.c     wiring
 *   routes.c   POST /v1/files, GET /v1/files, GET/DELETE /v1/files/:id
 *   content.c  GET /v1/files/:id/content: ranges, streamed from disk
 *   store.c    the files table, the bytes on disk, the trash and the sweep
 *   events.c   room.* into the replica; room.deleted removes the room's files
 *   openapi.json  /openapi.json (embedded by cmake/embed.cmake)
 */
#ifndef AGORA_FILES_H
#define AGORA_FILES_H

#include <limits.h>

#include "agora/agora.h"
#include "members.h"

#define FILES_ID_MAX 64
#define FILES_NAME_MAX 255
#define FILES_TYPE_MAX 255
#define FILES_DEFAULT_MAX_BYTES (100ull << 20)

typedef struct files_ctx {
    ag_service *svc;
    ag_store *store;
    ag_bus *bus;
    ag_auth *auth;
    ag_peer *rooms;
    char dir[PATH_MAX - 128]; /* AGORA_FILES_DIR (room left for what goes under it) */
    char blobs[PATH_MAX];     /* <dir>/blobs: one file per id */
    char spool[PATH_MAX];     /* <dir>/spool: uploads in progress (O_TMPFILE) */
    uint64_t max_bytes;       /* AGORA_FILES_MAX_BYTES */
} files_ctx;

extern files_ctx g_files;

typedef struct file_row {
    char id[FILES_ID_MAX + 1];
    char room_id[FILES_ID_MAX + 1];
    char owner_id[128];
    char name[FILES_NAME_MAX + 1];
    char content_type[FILES_TYPE_MAX + 1];
    char sha256[65];
    char created_at[40];
    int64_t size;
} file_row;

/* ---- store.c ---- */

/* Makes <dir>, its blobs/ and spool/ directories. */
int files_dirs_init(void);
/* The path of the bytes of file `id`. */
void files_blob_path(const char *id, char *out, size_t n);
/* Links (or, across filesystems, copies) the spooled body `fd` of `size`
 * bytes to the blob of `id`, fsync'd with its directory, and computes its
 * sha256 (lower-case hex). 0, or a negative AG_E* code with nothing left
 * at the blob's path. */
int files_blob_put(int fd, uint64_t size, const char *id, char sha[65]);
/* Removes the blob of `id` (a missing one is fine). */
void files_blob_remove(const char *id);

json_t *files_row_json(const file_row *f);
int files_get(ag_db *db, const char *id, file_row *out);
int files_insert(ag_db *db, const file_row *f);
/* The room's files, newest first, a page of them appended to `arr`;
 * `*total` all of them. */
int files_list(ag_db *db, const char *room, int64_t limit, int64_t offset, json_t *arr,
               int64_t *total);
/* Deletes the row of `id` and puts it in the trash (same transaction). */
int files_trash_one(ag_db *db, const char *id);
/* The same for every file of `room`. */
int files_trash_room(ag_db *db, const char *room, int64_t *count);
/* Removes the bytes of what is in the trash, then the trash rows; for
 * ag_db_after_commit (ud unused). */
void files_empty_trash(void *ud);
/* At start: empties the trash and removes blobs without a row (an upload
 * that crashed between its bytes and its row). */
int files_sweep(void);

/* ---- routes.c, content.c, events.c ---- */

void files_routes(ag_router *r);
void files_content_route(ag_router *r);
/* The caller's access to the room: 0 and `role`; answers 404 (`code`) or
 * 503 itself and returns < 0. Worker threads. */
int files_require_member(ag_http_req *req, ag_http_res *res, const char *room, const char *code,
                         char role[CHAT_ROLE_MAX]);
int files_subscribe(ag_bus *bus);
extern const char files_openapi_json[];

#endif
