/*
 * store.c — agora-files' metadata (the files table) and its bytes on disk.
 *
 * Layout under AGORA_FILES_DIR: blobs/<id> holds a file's bytes, spool/ the
 * uploads still arriving (the HTTP server's anonymous O_TMPFILE files, so
 * on the same filesystem as blobs/). An upload becomes a blob by linkat of
 * its spooled file (no copy), or by copy_file_range when the link is not
 * possible (another filesystem, or a spool without O_TMPFILE); the blob and
 * its directory are fsync'd before the row is committed.
 *
 * Invariant: a row never exists without its bytes. The orders that keep
 * it: upload = bytes, fsync, then the row; delete = the row (and a trash
 * row, one transaction), then after commit the bytes, then the trash row.
 * A crash leaves at worst bytes without a row (an orphan) or a trash row,
 * both removed by files_sweep at start.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "files.h"

#define COLS "id, room_id, owner_id, name, content_type, size, sha256, created_at"

/* ---- Directories and blobs ------------------------------------------------------- */

static int mkdir_p(const char *path)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0750) < 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0750) < 0 && errno != EEXIST) return -1;
    return 0;
}

int files_dirs_init(void)
{
    if (snprintf(g_files.blobs, sizeof g_files.blobs, "%s/blobs", g_files.dir) >=
            (int)sizeof g_files.blobs ||
        snprintf(g_files.spool, sizeof g_files.spool, "%s/spool", g_files.dir) >=
            (int)sizeof g_files.spool) {
        ag_error("AGORA_FILES_DIR is too long", AG_FS("dir", g_files.dir));
        return AG_ECONFIG;
    }
    if (mkdir_p(g_files.blobs) < 0 || mkdir_p(g_files.spool) < 0) {
        ag_error("cannot make the files directory", AG_FS("dir", g_files.dir),
                 AG_FS("error", strerror(errno)));
        return AG_EIO;
    }
    return 0;
}

void files_blob_path(const char *id, char *out, size_t n)
{
    /* The directory was checked at start; ids are at most FILES_ID_MAX. */
    if (snprintf(out, n, "%s/%s", g_files.blobs, id) >= (int)n) out[0] = '\0';
}

static int fsync_dir(const char *dir)
{
    int d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d < 0) return -1;
    int rc = fsync(d);
    close(d);
    return rc;
}

/* The sha256 of the first `size` bytes of `fd`, read 64 KiB at a time. */
static int hash_fd(int fd, uint64_t size, char sha[65])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md) return AG_ENOMEM;
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    char *buf = ag_malloc(65536);
    uint64_t off = 0;
    int rc = 0;
    while (off < size) {
        size_t want = size - off < 65536 ? (size_t)(size - off) : 65536;
        ssize_t n = pread(fd, buf, want, (off_t)off);
        if (n <= 0) {
            rc = AG_EIO;
            break;
        }
        EVP_DigestUpdate(md, buf, (size_t)n);
        off += (uint64_t)n;
    }
    ag_free(buf);
    unsigned char dig[32];
    unsigned int dlen = 0;
    EVP_DigestFinal_ex(md, dig, &dlen);
    EVP_MD_CTX_free(md);
    for (unsigned i = 0; i < 32; i++)
        snprintf(sha + 2 * i, 3, "%02x", dig[i]);
    return rc;
}

/* Copies `size` bytes of `in` into a new file at `path` inside the kernel
 * (copy_file_range: no trip through our memory), fsync'd. */
static int copy_to(int in, uint64_t size, const char *path)
{
    int out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (out < 0) return -1;
    loff_t off_in = 0;
    int rc = 0;
    while ((uint64_t)off_in < size) {
        ssize_t n = copy_file_range(in, &off_in, out, NULL, (size_t)(size - (uint64_t)off_in), 0);
        if (n <= 0) {
            rc = -1;
            break;
        }
    }
    if (rc == 0) rc = fsync(out);
    close(out);
    if (rc < 0) unlink(path);
    return rc;
}

int files_blob_put(int fd, uint64_t size, const char *id, char sha[65])
{
    char path[PATH_MAX];
    files_blob_path(id, path, sizeof path);
    if (fd < 0) { /* an empty file: nothing was spooled */
        int out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
        if (out < 0 || fsync(out) < 0) {
            if (out >= 0) close(out);
            return AG_EIO;
        }
        close(out);
        hash_fd(-1, 0, sha);
        return fsync_dir(g_files.blobs) < 0 ? AG_EIO : 0;
    }
    int rc = hash_fd(fd, size, sha);
    if (rc < 0) return rc;
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    if (linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0) {
        if (fsync(fd) < 0) {
            unlink(path);
            return AG_EIO;
        }
    } else {
        /* Said once: an operator may want the spool on the store's
         * filesystem (it is, unless AGORA_FILES_DIR spans mounts). */
        static atomic_bool told;
        if (!atomic_exchange(&told, true))
            ag_info("uploads are copied into the store, not linked",
                    AG_FS("reason", strerror(errno)));
        if (copy_to(fd, size, path) < 0) {
            ag_error("cannot store a file", AG_FS("path", path), AG_FS("error", strerror(errno)));
            return AG_EIO;
        }
    }
    if (fsync_dir(g_files.blobs) < 0) {
        unlink(path);
        return AG_EIO;
    }
    return 0;
}

void files_blob_remove(const char *id)
{
    char path[PATH_MAX];
    files_blob_path(id, path, sizeof path);
    if (unlink(path) < 0 && errno != ENOENT)
        ag_warn("cannot remove a file's bytes", AG_FS("path", path),
                AG_FS("error", strerror(errno)));
}

/* ---- Rows --------------------------------------------------------------------------- */

static void row_from(ag_rows *r, void *out)
{
    file_row *f = out;
    ag_rows_copy(r, 0, f->id, sizeof f->id);
    ag_rows_copy(r, 1, f->room_id, sizeof f->room_id);
    ag_rows_copy(r, 2, f->owner_id, sizeof f->owner_id);
    ag_rows_copy(r, 3, f->name, sizeof f->name);
    ag_rows_copy(r, 4, f->content_type, sizeof f->content_type);
    f->size = ag_rows_int(r, 5);
    ag_rows_copy(r, 6, f->sha256, sizeof f->sha256);
    ag_rows_copy(r, 7, f->created_at, sizeof f->created_at);
}

json_t *files_row_json(const file_row *f)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:s, s:s}", "id", f->id, "roomId", f->room_id,
                     "name", f->name, "size", (json_int_t)f->size, "contentType", f->content_type,
                     "sha256", f->sha256, "ownerId", f->owner_id, "createdAt", f->created_at);
}

int files_get(ag_db *db, const char *id, file_row *out)
{
    ag_val p[] = {AG_VTEXT(id)};
    return ag_db_query_one(db, "SELECT " COLS " FROM files WHERE id = $1", p, 1, row_from, out);
}

int files_insert(ag_db *db, const file_row *f)
{
    ag_val p[] = {AG_VTEXT(f->id),     AG_VTEXT(f->room_id),      AG_VTEXT(f->owner_id),
                  AG_VTEXT(f->name),   AG_VTEXT(f->content_type), AG_VINT(f->size),
                  AG_VTEXT(f->sha256), AG_VTEXT(f->created_at)};
    return ag_db_exec(db, "INSERT INTO files (" COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", p,
                      8, NULL);
}

int files_list(ag_db *db, const char *room, int64_t limit, int64_t offset, json_t *arr,
               int64_t *total)
{
    ag_val p[] = {AG_VTEXT(room), AG_VINT(limit), AG_VINT(offset)};
    int rc = ag_db_query_int(db, "SELECT COUNT(*) FROM files WHERE room_id = $1", p, 1, total);
    if (rc < 0) return rc;
    ag_rows *r;
    rc = ag_db_query(db,
                     "SELECT " COLS " FROM files WHERE room_id = $1"
                     " ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
                     p, 3, &r);
    if (rc < 0) return rc;
    while ((rc = ag_rows_next(r)) == 1) {
        file_row f;
        row_from(r, &f);
        json_array_append_new(arr, files_row_json(&f));
    }
    ag_rows_free(r);
    return rc;
}

int files_trash_one(ag_db *db, const char *id)
{
    ag_val p[] = {AG_VTEXT(id)};
    int64_t n = 0;
    int rc = ag_db_exec(db, "DELETE FROM files WHERE id = $1", p, 1, &n);
    if (rc < 0) return rc;
    if (n == 0) return AG_ENOTFOUND;
    rc = ag_db_exec(db, "INSERT INTO file_trash (id) VALUES ($1) ON CONFLICT (id) DO NOTHING", p, 1,
                    NULL);
    if (rc == 0) ag_db_after_commit(db, files_empty_trash, NULL);
    return rc;
}

int files_trash_room(ag_db *db, const char *room, int64_t *count)
{
    ag_val p[] = {AG_VTEXT(room)};
    int rc = ag_db_exec(db,
                        "INSERT INTO file_trash (id) SELECT id FROM files WHERE room_id = $1"
                        " ON CONFLICT (id) DO NOTHING",
                        p, 1, NULL);
    if (rc == 0) rc = ag_db_exec(db, "DELETE FROM files WHERE room_id = $1", p, 1, count);
    if (rc == 0 && *count > 0) ag_db_after_commit(db, files_empty_trash, NULL);
    return rc;
}

void files_empty_trash(void *ud)
{
    ag_db *db;
    if (ag_store_db(g_files.store, &db) < 0) return;
    for (;;) {
        json_t *ids = json_array();
        if (ag_db_query_texts(db, "SELECT id FROM file_trash ORDER BY id LIMIT 100", NULL, 0, ids) <
            0) {
            json_decref(ids);
            return;
        }
        size_t i, n = json_array_size(ids);
        json_t *v;
        json_array_foreach(ids, i, v)
        {
            files_blob_remove(json_string_value(v));
            ag_val p[] = {AG_VTEXT(json_string_value(v))};
            ag_db_exec(db, "DELETE FROM file_trash WHERE id = $1", p, 1, NULL);
        }
        json_decref(ids);
        if (n < 100) return;
    }
}

int files_sweep(void)
{
    files_empty_trash(NULL);
    ag_db *db;
    int rc = ag_store_db(g_files.store, &db);
    if (rc < 0) return rc;
    DIR *d = opendir(g_files.blobs);
    if (!d) return AG_EIO;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        ag_val p[] = {AG_VTEXT(e->d_name)};
        int64_t one;
        rc = ag_db_query_int(db, "SELECT 1 FROM files WHERE id = $1", p, 1, &one);
        if (rc == AG_ENOTFOUND) {
            files_blob_remove(e->d_name);
            removed++;
        } else if (rc < 0) {
            break;
        }
    }
    closedir(d);
    if (removed) ag_info("removed orphan files", AG_FI("count", removed));
    return rc == AG_ENOTFOUND ? 0 : rc < 0 ? rc : 0;
}
