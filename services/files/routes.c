/*
 * routes.c — agora-files' HTTP API (services/files/README.md), on workers.
 *
 *   POST   /v1/files?roomId=&name=   the raw file as the body (spooled)
 *   GET    /v1/files?roomId=&page=&limit=
 *   GET    /v1/files/:id
 *   DELETE /v1/files/:id
 *   GET    /v1/files/:id/content     content.c
 *
 * Who may (docs/internals/chat.md): only members of the file's room, per
 * the membership replica (chat_member_check); anyone else gets 404, the
 * same answer as for a file or room that does not exist. A file is deleted
 * by its uploader or a room owner/admin (403 otherwise).
 */
#include <string.h>
#include <strings.h>

#include "files.h"

/* Room and file ids: chat_id_ok's shape, but at most FILES_ID_MAX (64)
 * characters, not 127: file_row keeps both in buffers of that size. */
static bool id_ok(const char *s)
{
    return chat_id_ok(s) && strlen(s) <= FILES_ID_MAX;
}

int files_require_member(ag_http_req *req, ag_http_res *res, const char *room, const char *code,
                         char role[CHAT_ROLE_MAX])
{
    const ag_caller *who = ag_auth_caller_required(req, res);
    if (!who) return AG_EAUTH;
    int rc = AG_ENOTFOUND;
    if (id_ok(room))
        rc = chat_member_check(g_files.store, g_files.rooms, room, who->id,
                               ag_req_header(req, "Authorization"), ag_req_deadline(req),
                               ag_req_id(req), role);
    if (rc == AG_ENOTFOUND) {
        ag_res_error(res, 404, code,
                     strcmp(code, "ROOM_NOT_FOUND") == 0 ? "no such room" : "no such file", NULL);
    } else if (rc < 0) {
        ag_res_error(res, 503, "ROOMS_UNAVAILABLE", "membership cannot be checked right now", NULL);
    }
    return rc;
}

/* The file named by the path, for a member of its room: 0 and `f`
 * (`role` the caller's); answers 404 FILE_NOT_FOUND itself otherwise. */
static int member_file(ag_http_req *req, ag_http_res *res, file_row *f, char role[CHAT_ROLE_MAX])
{
    if (!ag_auth_caller_required(req, res)) return AG_EAUTH;
    const char *id = ag_req_param(req, "id");
    ag_db *db;
    int rc = ag_store_db(g_files.store, &db);
    if (rc == 0) rc = id_ok(id) ? files_get(db, id, f) : AG_ENOTFOUND;
    if (rc == AG_ENOTFOUND) {
        ag_res_error(res, 404, "FILE_NOT_FOUND", "no such file", NULL);
        return rc;
    }
    if (rc < 0) {
        ag_res_internal(req, res, "file lookup failed", rc);
        return rc;
    }
    return files_require_member(req, res, f->room_id, "FILE_NOT_FOUND", role);
}

/* ---- Names and types ------------------------------------------------------------------ */

/* True when the raw query's parameter `name` encodes a NUL (%00), which the
 * decoded value would silently end at. */
static bool raw_param_has_nul(ag_http_req *req, const char *name)
{
    const char *q = strchr(ag_req_target(req), '?');
    size_t nl = strlen(name);
    while (q && *q) {
        q++;
        const char *end = q + strcspn(q, "&");
        if ((size_t)(end - q) > nl && strncmp(q, name, nl) == 0 && q[nl] == '=') {
            for (const char *p = q + nl + 1; p + 3 <= end; p++)
                if (p[0] == '%' && p[1] == '0' && p[2] == '0') return true;
        }
        q = *end ? end : NULL;
    }
    return false;
}

/* Well-formed UTF-8 (no overlongs, no surrogates). */
static bool utf8_ok(const unsigned char *s)
{
    while (*s) {
        unsigned c = *s;
        int n = c < 0x80             ? 0
                : (c & 0xE0) == 0xC0 ? 1
                : (c & 0xF0) == 0xE0 ? 2
                : (c & 0xF8) == 0xF0 ? 3
                                     : -1;
        if (n < 0 || (n == 1 && c < 0xC2) || (n == 3 && c > 0xF4)) return false;
        unsigned cp = n == 0 ? c : c & (0x3Fu >> n);
        for (int i = 1; i <= n; i++) {
            if ((s[i] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[i] & 0x3F);
        }
        if ((n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 3 && cp < 0x10000))
            return false;
        s += n + 1;
    }
    return true;
}

/* A file name: 1 to 255 bytes of UTF-8, without '/', NUL or control
 * characters. NULL when fine, else why. */
static const char *name_problem(ag_http_req *req, const char *name)
{
    if (!name || !*name) return "name is required";
    if (raw_param_has_nul(req, "name")) return "name must not contain NUL";
    size_t n = strlen(name);
    if (n > FILES_NAME_MAX) return "name must be at most 255 bytes";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '/') return "name must not contain '/'";
        if (c < 0x20 || c == 0x7f) return "name must not contain control characters";
    }
    if (!utf8_ok((const unsigned char *)name)) return "name must be UTF-8";
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) return "name must not be . or ..";
    return NULL;
}

/* The request's Content-Type when it is a plausible media type (token/token
 * with parameters, printable ASCII), else application/octet-stream. */
static void content_type_of(ag_http_req *req, char out[FILES_TYPE_MAX + 1])
{
    const char *ct = ag_req_header(req, "Content-Type");
    bool ok = ct && *ct && strlen(ct) <= FILES_TYPE_MAX && strchr(ct, '/');
    for (const char *p = ct; ok && *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e) ok = false;
    snprintf(out, FILES_TYPE_MAX + 1, "%s", ok ? ct : "application/octet-stream");
}

/* ---- Upload ----------------------------------------------------------------------------- */

static int insert_tx(ag_db *db, void *ud)
{
    return files_insert(db, ud);
}

static void post_file(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *who = ag_auth_caller_required(req, res);
    if (!who) return;
    const char *room = ag_req_query(req, "roomId");
    if (!room || !*room) {
        ag_validator v;
        ag_v_init(&v);
        ag_v_fail(&v, "roomId", "roomId is required");
        ag_res_validation(res, &v);
        return;
    }
    char role[CHAT_ROLE_MAX];
    if (files_require_member(req, res, room, "ROOM_NOT_FOUND", role) < 0) return;
    const char *name = ag_req_query(req, "name");
    const char *why = name_problem(req, name);
    if (why) {
        ag_validator v;
        ag_v_init(&v);
        ag_v_fail(&v, "name", "%s", why);
        ag_res_validation(res, &v);
        return;
    }
    file_row f;
    memset(&f, 0, sizeof f);
    ag_id_new_str(f.id);
    snprintf(f.room_id, sizeof f.room_id, "%s", room);
    snprintf(f.owner_id, sizeof f.owner_id, "%s", who->id);
    snprintf(f.name, sizeof f.name, "%s", name);
    content_type_of(req, f.content_type);
    ag_time_now(f.created_at, sizeof f.created_at);
    int fd = -1;
    uint64_t size = 0;
    if (ag_req_body_file(req, &fd, &size) < 0) {
        size_t inmem = 0;
        ag_req_body(req, &inmem);
        if (inmem > 0) { /* the route is spooled: a body is never in memory */
            ag_res_internal(req, res, "upload body not spooled", AG_ESTATE);
            return;
        }
    }
    f.size = (int64_t)size;
    int rc = files_blob_put(fd, size, f.id, f.sha256);
    if (ag_res_rc(req, res, rc, NULL, "cannot store the file's bytes")) return;
    rc = ag_store_tx(g_files.store, insert_tx, &f);
    if (rc < 0) {
        files_blob_remove(f.id); /* no row: the bytes go too */
        ag_res_internal(req, res, "cannot record the file", rc);
        return;
    }
    char loc[96];
    snprintf(loc, sizeof loc, "/v1/files/%s", f.id);
    ag_res_header(res, "Location", loc);
    ag_res_ok(res, 201, files_row_json(&f));
}

/* ---- Reads ---------------------------------------------------------------------------------- */

static void get_file(ag_http_req *req, ag_http_res *res, void *ud)
{
    file_row f;
    char role[CHAT_ROLE_MAX];
    if (member_file(req, res, &f, role) < 0) return;
    ag_res_ok(res, 200, files_row_json(&f));
}

static void list_files(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!ag_auth_caller_required(req, res)) return;
    ag_validator v;
    ag_v_init(&v);
    const char *room = ag_req_query(req, "roomId");
    if (!room || !*room) ag_v_fail(&v, "roomId", "roomId is required");
    int64_t page = ag_v_query_int(&v, req, "page", 1, 1, 1000000);
    int64_t limit = ag_v_query_int(&v, req, "limit", 20, 1, 100);
    if (!ag_v_passed(&v, res, NULL)) return;
    char role[CHAT_ROLE_MAX];
    if (files_require_member(req, res, room, "ROOM_NOT_FOUND", role) < 0) return;
    ag_db *db;
    int64_t total = 0;
    json_t *arr = json_array();
    int rc = ag_store_db(g_files.store, &db);
    if (rc == 0) rc = files_list(db, room, limit, (page - 1) * limit, arr, &total);
    ag_res_page_rc(req, res, rc, arr, page, limit, total, "file list failed");
}

/* ---- Delete ---------------------------------------------------------------------------------- */

static int delete_tx(ag_db *db, void *ud)
{
    return files_trash_one(db, ud);
}

static void delete_file(ag_http_req *req, ag_http_res *res, void *ud)
{
    file_row f;
    char role[CHAT_ROLE_MAX];
    if (member_file(req, res, &f, role) < 0) return;
    const ag_caller *who = ag_auth_caller(req);
    if (strcmp(who->id, f.owner_id) != 0 && !chat_role_moderates(role)) {
        ag_res_error(res, 403, "FORBIDDEN",
                     "only the uploader or a room owner or admin may delete this file", NULL);
        return;
    }
    int rc = ag_store_tx(g_files.store, delete_tx, f.id);
    if (rc == AG_ENOTFOUND) {
        ag_res_error(res, 404, "FILE_NOT_FOUND", "no such file", NULL);
        return;
    }
    if (ag_res_rc(req, res, rc, NULL, "file delete failed")) return;
    ag_res_ok(res, 200, json_pack("{s:s, s:b}", "id", f.id, "deleted", 1));
}

void files_routes(ag_router *r)
{
    ag_router_add(r, "POST", "/v1/files", post_file, NULL, AG_ROUTE_SPOOL);
    ag_router_set_body_limit(r, "POST", "/v1/files", g_files.max_bytes);
    ag_router_set_spool_dir(r, g_files.spool);
    ag_router_add(r, "GET", "/v1/files", list_files, NULL, 0);
    ag_router_add(r, "GET", "/v1/files/:id", get_file, NULL, 0);
    ag_router_add(r, "DELETE", "/v1/files/:id", delete_file, NULL, 0);
    files_content_route(r);
}
