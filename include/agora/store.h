/*
 * store.h — a service's own database: SQLite or PostgreSQL behind one API.
 *
 * The engine comes from the URL (AGORA_DB): "sqlite:var/users.db" (the
 * default; WAL, a busy timeout, one file per service) or
 * "postgres://user@host:port/dbname" (libpq; the database is created at open
 * when it is missing and the role may create it).
 *
 * Values reach SQL only as parameters: statements use $1, $2, ... on both
 * engines, and nothing in this API splices a value into SQL text.
 *
 * Connections: every thread that uses the store gets its own connection,
 * opened on first use and kept until ag_store_close (worker threads each have
 * theirs, as DESIGN.md §3 asks). Calls from an I/O loop thread are refused
 * with AG_ESTATE: nothing here may block a loop.
 *
 * Transactions: ag_store_tx runs a function inside one (SQLite: BEGIN
 * IMMEDIATE; PostgreSQL: SERIALIZABLE, so both engines give the same
 * isolation), commits when it returns >= 0, rolls back otherwise, and runs it
 * again (with backoff, a bounded number of times) when the engine reports a
 * conflict (SQLITE_BUSY, SQLSTATE 40001/40P01), which surfaces as AG_ERETRY.
 *
 * Errors: AG_EEXISTS (unique key), AG_ECONSTRAINT (other constraints),
 * AG_ERETRY (conflict), AG_EINVAL (bad SQL or parameters), AG_EIO (the
 * connection or the disk); ag_db_error() has the engine's message for logs.
 */
#ifndef AGORA_STORE_H
#define AGORA_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/error.h"

typedef enum ag_store_engine { AG_STORE_SQLITE, AG_STORE_POSTGRES } ag_store_engine;

typedef struct ag_store ag_store;
typedef struct ag_db ag_db;
typedef struct ag_rows ag_rows;

typedef enum ag_val_type {
    AG_VT_NULL = 0,
    AG_VT_TEXT,
    AG_VT_INT,
    AG_VT_REAL,
    AG_VT_BOOL,
    AG_VT_BLOB
} ag_val_type;

/* A parameter value. Strings and blobs are borrowed for the call. */
typedef struct ag_val {
    ag_val_type type;
    union {
        const char *s;
        int64_t i;
        double d;
        bool b;
        const void *p;
    } v;
    size_t len; /* text (SIZE_MAX: NUL-terminated) and blob lengths */
} ag_val;

#define AG_VNULL ((ag_val){.type = AG_VT_NULL})
/* A NULL string binds SQL NULL. */
#define AG_VTEXT(x) ((ag_val){.type = AG_VT_TEXT, .v.s = (x), .len = SIZE_MAX})
#define AG_VINT(x) ((ag_val){.type = AG_VT_INT, .v.i = (int64_t)(x)})
#define AG_VREAL(x) ((ag_val){.type = AG_VT_REAL, .v.d = (double)(x)})
#define AG_VBOOL(x) ((ag_val){.type = AG_VT_BOOL, .v.b = (x)})
#define AG_VBLOB(ptr, n) ((ag_val){.type = AG_VT_BLOB, .v.p = (ptr), .len = (n)})

/* Opens the store at `url`. For SQLite the parent directory is created and
 * the file switched to WAL. For PostgreSQL a connection is made now (so a
 * bad URL fails at start), creating the database when it does not exist.
 * The caller owns the store. */
int ag_store_open(const char *url, ag_store **out);
/* Records every transaction's duration in `m` (NULL: the default registry)
 * as agora_store_tx_duration_seconds{service,outcome}; ag_service_use_store
 * calls it. Before any transaction runs. */
struct ag_metrics;
void ag_store_instrument(ag_store *s, struct ag_metrics *m, const char *service);
/* Closes every connection and frees the store. No call may be in flight. */
void ag_store_close(ag_store *s);
ag_store_engine ag_store_engine_of(const ag_store *s);
/* The URL with any password replaced by "***", for logs. */
const char *ag_store_url_safe(const ag_store *s);

/* The calling thread's connection (opened on first use). The store owns it. */
int ag_store_db(ag_store *s, ag_db **out);

/* Runs a statement that returns no rows; *changes (may be NULL) gets the
 * number of rows it changed. */
int ag_db_exec(ag_db *db, const char *sql, const ag_val *params, int nparams, int64_t *changes);
/* A statement meant to change a row (an UPDATE or DELETE by key, an
 * insert that may conflict): 0 when it changed one or more, `none` when it
 * changed none (AG_ENOTFOUND, AG_ECONSTRAINT, a lost race), or its error. */
int ag_db_exec_changed(ag_db *db, const char *sql, const ag_val *params, int nparams, int none);
/* Runs a query; *out is the caller's to free with ag_rows_free (before the
 * next statement on this connection). */
int ag_db_query(ag_db *db, const char *sql, const ag_val *params, int nparams, ag_rows **out);
/* The first column of the first row as an integer or (copied into `buf`)
 * text; AG_ENOTFOUND when there is no row or the value is NULL. */
int ag_db_query_int(ag_db *db, const char *sql, const ag_val *params, int nparams, int64_t *out);
int ag_db_query_text(ag_db *db, const char *sql, const ag_val *params, int nparams, char *buf,
                     size_t n);
/* A query of at most one row (a lookup by key): `fill(r, out)` runs on
 * the row while it is current. 0, AG_ENOTFOUND when there is no row, or
 * the query's error. */
typedef void (*ag_row_fill)(ag_rows *r, void *out);
int ag_db_query_one(ag_db *db, const char *sql, const ag_val *params, int nparams, ag_row_fill fill,
                    void *out);
/* Appends the first column of every row to the JSON array `arr` as a
 * string (SQL NULL as null): 0 or the query's error (rows read before
 * it stay appended). */
int ag_db_query_texts(ag_db *db, const char *sql, const ag_val *params, int nparams, json_t *arr);
/* The engine's message for the last failure on this connection. */
const char *ag_db_error(const ag_db *db);
ag_store *ag_db_store(ag_db *db);
bool ag_db_in_tx(const ag_db *db);

/* Steps to the next row: 1 when there is one, 0 at the end, or an error. */
int ag_rows_next(ag_rows *r);
int ag_rows_ncols(const ag_rows *r);
const char *ag_rows_name(const ag_rows *r, int col);
bool ag_rows_is_null(const ag_rows *r, int col);
/* Text of a column (NULL for SQL NULL), valid until the next step. */
const char *ag_rows_text(const ag_rows *r, int col);
/* The column's text copied into `buf` of `n` bytes (cut to fit, always
 * terminated; "" for SQL NULL): the shape every row-to-struct reader uses. */
void ag_rows_copy(const ag_rows *r, int col, char *buf, size_t n);
int64_t ag_rows_int(const ag_rows *r, int col);
double ag_rows_real(const ag_rows *r, int col);
bool ag_rows_bool(const ag_rows *r, int col);
/* Bytes of a BLOB/bytea column, valid until the next step. */
const void *ag_rows_blob(ag_rows *r, int col, size_t *len);
void ag_rows_free(ag_rows *r);

/* Transactions. fn returns >= 0 to commit, < 0 to roll back (its value is
 * returned). AG_ERETRY from fn, or a conflict at commit, runs fn again after
 * a jittered backoff, at most AGORA_DB_TX_RETRIES (default 32) times. Inside a
 * transaction, ag_store_tx on the same thread simply calls fn (no nesting). */
typedef int (*ag_tx_fn)(ag_db *db, void *ud);
int ag_store_tx(ag_store *s, ag_tx_fn fn, void *ud);
/* Registers fn(ud) to run after the current transaction commits (dropped if
 * it rolls back). The bus uses it to wake its relay. */
void ag_db_after_commit(ag_db *db, void (*fn)(void *ud), void *ud);

/* Migrations: applies the files NNN_name.sql of `dir` (NNN a number; an
 * engine-specific NNN_name.sqlite.sql or NNN_name.postgres.sql replaces the
 * common file of the same number) in order, each in its own transaction,
 * recording them in agora_migrations; applied ones are never run again.
 * Refuses with AG_ESTATE a database whose version is newer than the newest
 * file (a service older than its database). *applied (may be NULL) gets the
 * number of files applied now. */
int ag_store_migrate(ag_store *s, const char *dir, int *applied);
/* The highest applied migration (0 for none). */
int ag_store_version(ag_store *s, int64_t *version);

/* A readiness check (the shape of ag_ready_check): 0 when a trivial query
 * answers. */
int ag_store_ping(void *store, char *why, size_t why_len);

#endif
