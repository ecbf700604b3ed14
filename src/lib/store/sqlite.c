/*
 * sqlite.c — the SQLite engine of agora/store.h.
 *
 * One sqlite3 handle per thread (opened without SQLite's own mutexes: the
 * store never shares a handle). WAL journal, synchronous=FULL unless
 * AGORA_SQLITE_SYNC_FULL=off, foreign keys on, a busy timeout. Statements are
 * prepared once per connection and kept in a small cache keyed by their SQL
 * text. "$1".."$n" are SQLite named parameters, bound by name.
 */
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "agora/log.h"
#include "internal.h"

#define STMT_CACHE 64

typedef struct cached {
    char *sql;
    sqlite3_stmt *stmt;
    bool busy; /* handed out as rows */
} cached;

typedef struct lite {
    sqlite3 *h;
    cached cache[STMT_CACHE];
    int ncache, next_evict;
} lite;

typedef struct lite_rows {
    ag_rows head;
    sqlite3_stmt *stmt;
    cached *slot; /* NULL when the statement is not cached */
} lite_rows;

static int map_rc(ag_db *db, int rc)
{
    lite *l = db->conn;
    ag__db_set_error(db, "%s", sqlite3_errmsg(l->h));
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return 0;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return AG_ERETRY;
    case SQLITE_CONSTRAINT: {
        int ext = sqlite3_extended_errcode(l->h);
        if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY)
            return AG_EEXISTS;
        return AG_ECONSTRAINT;
    }
    case SQLITE_NOMEM:
        return AG_ENOMEM;
    case SQLITE_IOERR:
    case SQLITE_CORRUPT:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
        return AG_EIO;
    case SQLITE_TOOBIG:
        return AG_ETOOBIG;
    default:
        return AG_EINVAL;
    }
}

static int lite_exec_script(ag_db *db, const char *sql)
{
    lite *l = db->conn;
    char *err = NULL;
    int rc = sqlite3_exec(l->h, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        int mapped = map_rc(db, rc);
        if (err) ag__db_set_error(db, "%s", err);
        sqlite3_free(err);
        return mapped;
    }
    return 0;
}

static int lite_connect(ag_store *s, ag_db *db)
{
    lite *l = ag_calloc(1, sizeof *l);
    int rc = sqlite3_open_v2(
        s->path, &l->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        ag__db_set_error(db, "%s", l->h ? sqlite3_errmsg(l->h) : "cannot open");
        sqlite3_close(l->h);
        ag_free(l);
        return AG_EIO;
    }
    db->conn = l;
    sqlite3_busy_timeout(l->h, s->busy_timeout_ms);
    sqlite3_extended_result_codes(l->h, 1);
    char pragmas[256];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA foreign_keys=ON;",
             s->sync_full ? "FULL" : "NORMAL");
    rc = lite_exec_script(db, pragmas);
    if (rc < 0) {
        sqlite3_close(l->h);
        ag_free(l);
        db->conn = NULL;
        return rc;
    }
    return 0;
}

static void lite_disconnect(ag_db *db)
{
    lite *l = db->conn;
    for (int i = 0; i < l->ncache; i++) {
        sqlite3_finalize(l->cache[i].stmt);
        ag_free(l->cache[i].sql);
    }
    sqlite3_close(l->h);
    ag_free(l);
    db->conn = NULL;
}

/* A prepared statement for `sql`: from the cache when it is there and free. */
static int prepare(ag_db *db, const char *sql, sqlite3_stmt **out, cached **slot)
{
    lite *l = db->conn;
    for (int i = 0; i < l->ncache; i++) {
        if (!l->cache[i].busy && strcmp(l->cache[i].sql, sql) == 0) {
            *out = l->cache[i].stmt;
            *slot = &l->cache[i];
            return 0;
        }
    }
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v3(l->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK) return map_rc(db, rc);
    if (!st) {
        ag__db_set_error(db, "empty statement");
        return AG_EINVAL;
    }
    cached *c = NULL;
    if (l->ncache < STMT_CACHE) {
        c = &l->cache[l->ncache++];
    } else {
        /* Evict round-robin, skipping statements in use. */
        for (int k = 0; k < STMT_CACHE && !c; k++) {
            cached *cand = &l->cache[(l->next_evict + k) % STMT_CACHE];
            if (!cand->busy) c = cand;
        }
        l->next_evict = (l->next_evict + 1) % STMT_CACHE;
        if (c) {
            sqlite3_finalize(c->stmt);
            ag_free(c->sql);
        }
    }
    if (c) {
        c->sql = ag_strdup(sql);
        c->stmt = st;
        c->busy = false;
    }
    *out = st;
    *slot = c;
    return 0;
}

static void release_stmt(sqlite3_stmt *st, cached *slot)
{
    if (slot) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        slot->busy = false;
    } else {
        sqlite3_finalize(st);
    }
}

static int bind_all(ag_db *db, sqlite3_stmt *st, const ag_val *p, int n)
{
    int expected = sqlite3_bind_parameter_count(st);
    if (expected > n) {
        ag__db_set_error(db, "statement has %d parameters, %d given", expected, n);
        return AG_EINVAL;
    }
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "$%d", i + 1);
        int idx = sqlite3_bind_parameter_index(st, name);
        if (idx == 0) continue; /* unused parameter */
        int rc;
        switch (p[i].type) {
        case AG_VT_NULL:
            rc = sqlite3_bind_null(st, idx);
            break;
        case AG_VT_TEXT:
            if (!p[i].v.s) {
                rc = sqlite3_bind_null(st, idx);
                break;
            }
            rc = sqlite3_bind_text64(st, idx, p[i].v.s,
                                     p[i].len == SIZE_MAX ? strlen(p[i].v.s) : p[i].len,
                                     SQLITE_STATIC, SQLITE_UTF8);
            break;
        case AG_VT_INT:
            rc = sqlite3_bind_int64(st, idx, p[i].v.i);
            break;
        case AG_VT_REAL:
            rc = sqlite3_bind_double(st, idx, p[i].v.d);
            break;
        case AG_VT_BOOL:
            rc = sqlite3_bind_int(st, idx, p[i].v.b ? 1 : 0);
            break;
        case AG_VT_BLOB:
            rc = sqlite3_bind_blob64(st, idx, p[i].v.p, p[i].len, SQLITE_STATIC);
            break;
        default:
            rc = SQLITE_MISUSE;
        }
        if (rc != SQLITE_OK) return map_rc(db, rc);
    }
    return 0;
}

/* A statement ready to step: prepared (or taken from the cache, marked
 * busy) and bound. On failure nothing is held. */
static int prepare_bound(ag_db *db, const char *sql, const ag_val *p, int n, sqlite3_stmt **st,
                         cached **slot)
{
    int rc = prepare(db, sql, st, slot);
    if (rc < 0) return rc;
    if (*slot) (*slot)->busy = true;
    rc = bind_all(db, *st, p, n);
    if (rc < 0) release_stmt(*st, *slot);
    return rc;
}

static int lite_exec(ag_db *db, const char *sql, const ag_val *p, int n, int64_t *changes)
{
    lite *l = db->conn;
    sqlite3_stmt *st;
    cached *slot;
    *changes = 0;
    int rc = prepare_bound(db, sql, p, n, &st, &slot);
    if (rc < 0) return rc;
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
    }
    rc = s == SQLITE_DONE ? 0 : map_rc(db, s);
    if (rc == AG_ERETRY && !db->in_tx) rc = AG_EBUSY; /* no transaction to retry */
    *changes = sqlite3_changes64(l->h);
    release_stmt(st, slot);
    return rc;
}

static int lr_next(ag_rows *r)
{
    lite_rows *lr = (lite_rows *)r;
    int s = sqlite3_step(lr->stmt);
    if (s == SQLITE_ROW) return 1;
    if (s == SQLITE_DONE) return 0;
    return map_rc(r->db, s);
}

static int lr_ncols(const ag_rows *r)
{
    return sqlite3_column_count(((const lite_rows *)r)->stmt);
}

static const char *lr_name(const ag_rows *r, int col)
{
    return sqlite3_column_name(((const lite_rows *)r)->stmt, col);
}

static bool lr_is_null(const ag_rows *r, int col)
{
    return sqlite3_column_type(((const lite_rows *)r)->stmt, col) == SQLITE_NULL;
}

static const char *lr_text(const ag_rows *r, int col)
{
    return (const char *)sqlite3_column_text(((const lite_rows *)r)->stmt, col);
}

static int64_t lr_int(const ag_rows *r, int col)
{
    return sqlite3_column_int64(((const lite_rows *)r)->stmt, col);
}

static double lr_real(const ag_rows *r, int col)
{
    return sqlite3_column_double(((const lite_rows *)r)->stmt, col);
}

static const void *lr_blob(ag_rows *r, int col, size_t *len)
{
    lite_rows *lr = (lite_rows *)r;
    const void *p = sqlite3_column_blob(lr->stmt, col);
    *len = (size_t)sqlite3_column_bytes(lr->stmt, col);
    return p;
}

static void lr_free(ag_rows *r)
{
    lite_rows *lr = (lite_rows *)r;
    release_stmt(lr->stmt, lr->slot);
    ag_free(lr);
}

static const ag__rows_ops lite_rows_ops = {
    lr_next, lr_ncols, lr_name, lr_is_null, lr_text, lr_int, lr_real, lr_blob, lr_free,
};

static int lite_query(ag_db *db, const char *sql, const ag_val *p, int n, ag_rows **out)
{
    sqlite3_stmt *st;
    cached *slot;
    int rc = prepare_bound(db, sql, p, n, &st, &slot);
    if (rc < 0) return rc;
    lite_rows *lr = ag_calloc(1, sizeof *lr);
    lr->head.ops = &lite_rows_ops;
    lr->head.db = db;
    lr->stmt = st;
    lr->slot = slot;
    *out = &lr->head;
    return 0;
}

const ag__store_ops ag__sqlite_ops = {
    .name = "sqlite",
    .connect = lite_connect,
    .disconnect = lite_disconnect,
    .exec = lite_exec,
    .query = lite_query,
    .exec_script = lite_exec_script,
    .begin_sql = "BEGIN IMMEDIATE",
};
