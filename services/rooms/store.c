/*
 * store.c — agora-rooms' SQL (schema/001_rooms.sql). Every value goes in as
 * a parameter; the list query is put together from constant fragments only.
 *
 * Why two changes of one room cannot share a version: every change starts
 * with rooms_bump, a compare-and-set of the version it read at the start
 * of its transaction. On SQLite writers are serialised anyway (BEGIN
 * IMMEDIATE); on PostgreSQL (SERIALIZABLE) the second writer either waits
 * for the row and fails to serialise, or finds the version moved and
 * answers AG_ERETRY: both rerun the transaction, which then reads the new
 * state and decides again (a check made on the old state never commits).
 */
#include <string.h>

#include "rooms.h"

bool rooms_id_ok(const char *s)
{
    size_t n = 0;
    if (!s) return false;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return n >= 1 && n <= ROOMS_ID_MAX;
}

void rooms_now(char ts[32])
{
    ag_time_now(ts, 32);
}

static void copy(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

/* ---- Rooms -------------------------------------------------------------------------------- */

#define ROOM_COLS                                                                                  \
    "r.id, r.name, r.description, r.is_private, r.owner_id, r.version, r.created_at, "             \
    "r.updated_at, (SELECT COUNT(*) FROM room_members c WHERE c.room_id = r.id), me.role"

/* $1 is always the viewer (NULL matches no member row). */
#define ROOM_FROM " FROM rooms r LEFT JOIN room_members me ON me.room_id = r.id AND me.user_id = $1"

static void room_from_row(ag_rows *rows, void *out)
{
    rooms_room *r = out;
    ag_rows_copy(rows, 0, r->id, sizeof r->id);
    ag_rows_copy(rows, 1, r->name, sizeof r->name);
    ag_rows_copy(rows, 2, r->description, sizeof r->description);
    r->is_private = ag_rows_int(rows, 3) != 0;
    ag_rows_copy(rows, 4, r->owner_id, sizeof r->owner_id);
    r->version = ag_rows_int(rows, 5);
    ag_rows_copy(rows, 6, r->created_at, sizeof r->created_at);
    ag_rows_copy(rows, 7, r->updated_at, sizeof r->updated_at);
    r->member_count = ag_rows_int(rows, 8);
    copy(r->my_role, sizeof r->my_role, ag_rows_is_null(rows, 9) ? "" : ag_rows_text(rows, 9));
}

int rooms_get(ag_db *db, const char *id, const char *viewer, rooms_room *out)
{
    ag_val p[] = {AG_VTEXT(viewer), AG_VTEXT(id)};
    return ag_db_query_one(db, "SELECT " ROOM_COLS ROOM_FROM " WHERE r.id = $2", p, 2,
                           room_from_row, out);
}

json_t *rooms_room_json(const rooms_room *r)
{
    return json_pack("{s:s, s:s, s:s, s:b, s:s, s:I, s:o, s:I, s:s, s:s}", "id", r->id, "name",
                     r->name, "description", r->description, "isPrivate", r->is_private, "ownerId",
                     r->owner_id, "memberCount", (json_int_t)r->member_count, "myRole",
                     r->my_role[0] ? json_string(r->my_role) : json_null(), "version",
                     (json_int_t)r->version, "createdAt", r->created_at, "updatedAt",
                     r->updated_at);
}

/* "%" and "_" in the user's text match themselves: escaped with '\'. */
static char *like_pattern(const char *q)
{
    ag_buf b;
    ag_buf_init(&b, 0);
    ag_buf_appends(&b, "%");
    for (const char *c = q; *c; c++) {
        if (*c == '%' || *c == '_' || *c == '\\') ag_buf_appends(&b, "\\");
        ag_buf_append(&b, c, 1);
    }
    ag_buf_appends(&b, "%");
    return ag_buf_detach(&b, NULL);
}

int rooms_list(ag_db *db, const rooms_filter *f, json_t *arr, int64_t *total)
{
    char *pattern = f->q ? like_pattern(f->q) : NULL;
    ag_val p[4] = {AG_VTEXT(f->viewer)};
    int n = 1;
    ag_buf where;
    ag_buf_init(&where, 0);
    ag_buf_appends(&where, " WHERE 1 = 1");
    if (f->mine)
        ag_buf_appends(&where, " AND me.role IS NOT NULL");
    else if (!f->all)
        ag_buf_appends(&where, " AND (r.is_private = 0 OR me.role IS NOT NULL)");
    if (pattern) {
        ag_buf_appends(&where, " AND LOWER(r.name) LIKE LOWER($2) ESCAPE '\\'");
        p[n++] = AG_VTEXT(pattern);
    }
    ag_buf count, page;
    ag_buf_init(&count, 0);
    ag_buf_init(&page, 0);
    ag_buf_printf(&count, "SELECT COUNT(*)" ROOM_FROM "%s", where.data);
    ag_buf_printf(&page,
                  "SELECT " ROOM_COLS ROOM_FROM "%s ORDER BY r.created_at DESC, r.id DESC"
                  " LIMIT $%d OFFSET $%d",
                  where.data, n + 1, n + 2);
    int rc = ag_db_query_int(db, count.data, p, n, total);
    if (rc == 0) {
        p[n] = AG_VINT(f->limit);
        p[n + 1] = AG_VINT((f->page - 1) * f->limit);
        ag_rows *rows;
        rc = ag_db_query(db, page.data, p, n + 2, &rows);
        if (rc == 0) {
            while ((rc = ag_rows_next(rows)) == 1) {
                rooms_room r;
                room_from_row(rows, &r);
                json_array_append_new(arr, rooms_room_json(&r));
            }
            ag_rows_free(rows);
        }
    }
    ag_buf_release(&where);
    ag_buf_release(&count);
    ag_buf_release(&page);
    ag_free(pattern);
    return rc < 0 ? rc : 0;
}

int rooms_insert(ag_db *db, const rooms_room *r)
{
    ag_val p[] = {AG_VTEXT(r->id),          AG_VTEXT(r->name),
                  AG_VTEXT(r->description), AG_VINT(r->is_private ? 1 : 0),
                  AG_VTEXT(r->owner_id),    AG_VTEXT(r->created_at)};
    return ag_db_exec(db,
                      "INSERT INTO rooms (id, name, description, is_private, owner_id, version,"
                      " created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 1, $6, $6)",
                      p, 6, NULL);
}

int rooms_bump(ag_db *db, rooms_room *r, const char *now)
{
    ag_val p[] = {AG_VTEXT(r->id), AG_VINT(r->version), AG_VTEXT(now)};
    int64_t changes = 0;
    int rc = ag_db_exec(db,
                        "UPDATE rooms SET version = version + 1, updated_at = $3"
                        " WHERE id = $1 AND version = $2",
                        p, 3, &changes);
    if (rc < 0) return rc;
    if (changes != 1) return AG_ERETRY;
    r->version++;
    copy(r->updated_at, sizeof r->updated_at, now);
    return 0;
}

int rooms_save(ag_db *db, const rooms_room *r)
{
    ag_val p[] = {AG_VTEXT(r->id), AG_VTEXT(r->name), AG_VTEXT(r->description),
                  AG_VINT(r->is_private ? 1 : 0), AG_VTEXT(r->owner_id)};
    return ag_db_exec(db,
                      "UPDATE rooms SET name = $2, description = $3, is_private = $4,"
                      " owner_id = $5 WHERE id = $1",
                      p, 5, NULL);
}

int rooms_delete(ag_db *db, const char *id)
{
    ag_val p[] = {AG_VTEXT(id)};
    int rc = ag_db_exec(db, "DELETE FROM room_members WHERE room_id = $1", p, 1, NULL);
    if (rc == 0) rc = ag_db_exec(db, "DELETE FROM rooms WHERE id = $1", p, 1, NULL);
    return rc;
}

/* ---- Members ------------------------------------------------------------------------------ */

static void member_from_row(ag_rows *rows, void *out)
{
    rooms_member *m = out;
    ag_rows_copy(rows, 0, m->user_id, sizeof m->user_id);
    ag_rows_copy(rows, 1, m->role, sizeof m->role);
    ag_rows_copy(rows, 2, m->joined_at, sizeof m->joined_at);
}

/* The first row of `sql` (which selects user_id, role, joined_at) into
 * `out`: 0, AG_ENOTFOUND for none, or the query's error. */
static int member_query(ag_db *db, const char *sql, const ag_val *p, int n, rooms_member *out)
{
    return ag_db_query_one(db, sql, p, n, member_from_row, out);
}

int rooms_member_get(ag_db *db, const char *room, const char *user, rooms_member *out)
{
    ag_val p[] = {AG_VTEXT(room), AG_VTEXT(user)};
    return member_query(db,
                        "SELECT user_id, role, joined_at FROM room_members"
                        " WHERE room_id = $1 AND user_id = $2",
                        p, 2, out);
}

json_t *rooms_member_json(const rooms_member *m)
{
    return json_pack("{s:s, s:s, s:s}", "userId", m->user_id, "role", m->role, "joinedAt",
                     m->joined_at);
}

int rooms_member_add(ag_db *db, const char *room, const char *user, const char *role,
                     const char *joined_at, int64_t joined_version)
{
    ag_val p[] = {AG_VTEXT(room), AG_VTEXT(user), AG_VTEXT(role), AG_VTEXT(joined_at),
                  AG_VINT(joined_version)};
    return ag_db_exec(db,
                      "INSERT INTO room_members (room_id, user_id, role, joined_at,"
                      " joined_version) VALUES ($1, $2, $3, $4, $5)",
                      p, 5, NULL);
}

int rooms_member_set_role(ag_db *db, const char *room, const char *user, const char *role)
{
    ag_val p[] = {AG_VTEXT(room), AG_VTEXT(user), AG_VTEXT(role)};
    return ag_db_exec_changed(
        db, "UPDATE room_members SET role = $3 WHERE room_id = $1 AND user_id = $2", p, 3,
        AG_ENOTFOUND);
}

int rooms_member_remove(ag_db *db, const char *room, const char *user)
{
    ag_val p[] = {AG_VTEXT(room), AG_VTEXT(user)};
    int64_t changes = 0;
    int rc = ag_db_exec(db, "DELETE FROM room_members WHERE room_id = $1 AND user_id = $2", p, 2,
                        &changes);
    return rc < 0 ? rc : changes == 1 ? 0 : AG_ENOTFOUND;
}

int rooms_members_list(ag_db *db, const char *room, int64_t page, int64_t limit, json_t *arr,
                       int64_t *total)
{
    ag_val p[] = {AG_VTEXT(room), AG_VINT(limit), AG_VINT((page - 1) * limit)};
    int rc =
        ag_db_query_int(db, "SELECT COUNT(*) FROM room_members WHERE room_id = $1", p, 1, total);
    if (rc < 0) return rc;
    ag_rows *rows;
    rc = ag_db_query(db,
                     "SELECT user_id, role, joined_at FROM room_members WHERE room_id = $1"
                     " ORDER BY joined_version, user_id LIMIT $2 OFFSET $3",
                     p, 3, &rows);
    if (rc < 0) return rc;
    while ((rc = ag_rows_next(rows)) == 1) {
        rooms_member m;
        member_from_row(rows, &m);
        json_array_append_new(arr, rooms_member_json(&m));
    }
    ag_rows_free(rows);
    return rc < 0 ? rc : 0;
}

int rooms_member_ids(ag_db *db, const char *room, json_t *arr)
{
    ag_val p[] = {AG_VTEXT(room)};
    return ag_db_query_texts(db,
                             "SELECT user_id FROM room_members WHERE room_id = $1"
                             " ORDER BY joined_version, user_id",
                             p, 1, arr);
}

int rooms_successor(ag_db *db, const char *room, const char *except, rooms_member *out)
{
    ag_val p[] = {AG_VTEXT(room), AG_VTEXT(except)};
    return member_query(db,
                        "SELECT user_id, role, joined_at FROM room_members"
                        " WHERE room_id = $1 AND user_id <> $2 AND role <> 'owner'"
                        " ORDER BY CASE WHEN role = 'admin' THEN 0 ELSE 1 END, joined_version,"
                        " user_id LIMIT 1",
                        p, 2, out);
}

int rooms_user_memberships(ag_db *db, const char *user, json_t *arr)
{
    ag_val p[] = {AG_VTEXT(user)};
    ag_rows *rows;
    int rc = ag_db_query(db,
                         "SELECT room_id, role FROM room_members WHERE user_id = $1"
                         " ORDER BY room_id",
                         p, 1, &rows);
    if (rc < 0) return rc;
    while ((rc = ag_rows_next(rows)) == 1)
        json_array_append_new(arr, json_pack("{s:s, s:s}", "roomId", ag_rows_text(rows, 0), "role",
                                             ag_rows_text(rows, 1)));
    ag_rows_free(rows);
    return rc < 0 ? rc : 0;
}
