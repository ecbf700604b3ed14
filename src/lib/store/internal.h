/*
 * internal.h — what store.c shares with its two engines (sqlite.c,
 * postgres.c). Each engine fills an ag__store_ops; store.c owns URLs,
 * per-thread connections, transactions and migrations.
 */
#ifndef AGORA_STORE_INTERNAL_H
#define AGORA_STORE_INTERNAL_H

#include <pthread.h>

#include "agora/mem.h"
#include "agora/metrics.h"
#include "agora/store.h"

typedef struct ag__after_commit {
    void (*fn)(void *);
    void *ud;
} ag__after_commit;

struct ag_db {
    ag_store *store;
    pthread_t thread;
    void *conn; /* the engine's connection */
    bool in_tx;
    ag__after_commit *hooks;
    size_t nhooks, cap_hooks;
    char error[512];
    ag_rows *open_rows; /* rows not yet freed (one at a time) */
};

typedef struct ag__store_ops {
    const char *name;
    /* Opens a connection for `db` (sets db->conn). */
    int (*connect)(ag_store *s, ag_db *db);
    void (*disconnect)(ag_db *db);
    int (*exec)(ag_db *db, const char *sql, const ag_val *p, int n, int64_t *changes);
    int (*query)(ag_db *db, const char *sql, const ag_val *p, int n, ag_rows **out);
    /* Runs SQL text with no parameters, possibly several statements
     * (migrations, BEGIN/COMMIT). */
    int (*exec_script)(ag_db *db, const char *sql);
    const char *begin_sql;
} ag__store_ops;

/* Rows: engine-specific, with a common head. */
typedef struct ag__rows_ops {
    int (*next)(ag_rows *r);
    int (*ncols)(const ag_rows *r);
    const char *(*name)(const ag_rows *r, int col);
    bool (*is_null)(const ag_rows *r, int col);
    const char *(*text)(const ag_rows *r, int col);
    int64_t (*int64)(const ag_rows *r, int col);
    double (*real)(const ag_rows *r, int col);
    const void *(*blob)(ag_rows *r, int col, size_t *len);
    void (*free)(ag_rows *r);
} ag__rows_ops;

struct ag_rows {
    const ag__rows_ops *ops;
    ag_db *db;
};

struct ag_store {
    ag_store_engine engine;
    const ag__store_ops *ops;
    char *url;      /* as given */
    char *url_safe; /* password masked */
    char *path;     /* SQLite: the file */
    int busy_timeout_ms;
    bool sync_full; /* SQLite: synchronous=FULL */
    int tx_retries;
    pthread_mutex_t mu; /* guards dbs */
    ag_db **dbs;
    size_t ndbs, cap_dbs;
    ag_series *m_tx_ok, *m_tx_failed; /* NULL until ag_store_instrument */
};

extern const ag__store_ops ag__sqlite_ops;
extern const ag__store_ops ag__postgres_ops;

/* Records the engine's message on `db` and logs nothing (callers decide). */
void ag__db_set_error(ag_db *db, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Text of a parameter value for engines that bind text ("t"/"f" for bools);
 * `buf` holds numbers. */
const char *ag__val_text(const ag_val *v, char *buf, size_t n, size_t *len);

/* PostgreSQL: creates the database named in `url` when it is missing. */
int ag__postgres_ensure_database(ag_store *s);

#endif
