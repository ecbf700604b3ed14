/*
 * postgres.c — the PostgreSQL engine of agora/store.h, on libpq.
 *
 * One PGconn per thread. Statements are prepared once per connection under a
 * generated name (cached by SQL text) and run with PQexecPrepared; values are
 * sent as text, blobs in binary. A connection that breaks is reset on its
 * next use (its prepared statements go with it), and one the server ended
 * while it was idle is noticed before a statement is sent on it
 * (ensure_ok). Transactions are
 * SERIALIZABLE so that both engines give the same isolation; SQLSTATE
 * 40001/40P01 become AG_ERETRY and ag_store_tx runs the work again.
 */
#include <libpq-fe.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "agora/log.h"
#include "internal.h"

#define STMT_CACHE 128
#define MAX_PARAMS 64 /* per statement; more is a design smell */

typedef struct pgc {
    PGconn *c;
    char *sqls[STMT_CACHE];
    int nstmts;
} pgc;

typedef struct pg_rows {
    ag_rows head;
    PGresult *res;
    int row, nrows;
    unsigned char *blob; /* last unescaped bytea */
} pg_rows;

static int map_result(ag_db *db, PGresult *res)
{
    pgc *p = db->conn;
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) return 0;
    const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(p->c);
    ag__db_set_error(db, "%s", msg && *msg ? msg : PQerrorMessage(p->c));
    size_t n = strlen(db->error);
    while (n && (db->error[n - 1] == '\n' || db->error[n - 1] == ' '))
        db->error[--n] = '\0';
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (!state || PQstatus(p->c) != CONNECTION_OK) return AG_EIO;
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0) return AG_ERETRY;
    if (strcmp(state, "23505") == 0) return AG_EEXISTS;
    if (strncmp(state, "23", 2) == 0) return AG_ECONSTRAINT;
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "57", 2) == 0) return AG_EIO;
    if (strncmp(state, "53", 2) == 0) return AG_EUNAVAIL;
    return AG_EINVAL;
}

static void forget_statements(pgc *p)
{
    for (int i = 0; i < p->nstmts; i++)
        ag_free(p->sqls[i]);
    p->nstmts = 0;
}

/* Outside a transaction nothing is in flight, so a readable socket means
 * the server spoke on its own: mostly its goodbye to a session it ended (a
 * restart, pg_terminate_backend, or a crashed backend, after which the
 * postmaster ends them all), an error then EOF. Reading it (libpq's
 * socket is non-blocking) lets libpq see the EOF and mark the connection
 * bad, so that ensure_ok resets it instead of failing the caller's
 * statement. Anything else (a notice) is read and dropped. One poll per
 * statement. */
static void notice_goodbye(pgc *p)
{
    struct pollfd pfd = {.fd = PQsocket(p->c), .events = POLLIN};
    if (pfd.fd < 0 || poll(&pfd, 1, 0) <= 0) return;
    for (int i = 0; i < 4 && PQstatus(p->c) == CONNECTION_OK; i++)
        if (!PQconsumeInput(p->c)) break;
    while (PQstatus(p->c) == CONNECTION_OK && !PQisBusy(p->c)) {
        PGresult *r = PQgetResult(p->c);
        if (!r) break;
        PQclear(r);
    }
}

/* Makes sure the connection works, resetting it when it broke. */
static int ensure_ok(ag_db *db)
{
    pgc *p = db->conn;
    if (PQstatus(p->c) == CONNECTION_OK && !db->in_tx) notice_goodbye(p);
    if (PQstatus(p->c) == CONNECTION_OK) return 0;
    PQreset(p->c);
    forget_statements(p);
    if (PQstatus(p->c) != CONNECTION_OK) {
        ag__db_set_error(db, "%s", PQerrorMessage(p->c));
        return AG_EIO;
    }
    if (db->in_tx) {
        /* The transaction died with the old connection. */
        ag__db_set_error(db, "connection lost inside a transaction");
        return AG_ERETRY;
    }
    return 0;
}

static void quiet_notice(void *arg, const char *message) {}

static int pg_connect(ag_store *s, ag_db *db)
{
    pgc *p = ag_calloc(1, sizeof *p);
    p->c = PQconnectdb(s->url);
    if (PQstatus(p->c) != CONNECTION_OK) {
        ag__db_set_error(db, "%s", PQerrorMessage(p->c));
        PQfinish(p->c);
        ag_free(p);
        return AG_EIO;
    }
    PQsetNoticeProcessor(p->c, quiet_notice, NULL);
    db->conn = p;
    return 0;
}

static void pg_disconnect(ag_db *db)
{
    pgc *p = db->conn;
    forget_statements(p);
    PQfinish(p->c);
    ag_free(p);
    db->conn = NULL;
}

static int pg_exec_script(ag_db *db, const char *sql)
{
    int rc = ensure_ok(db);
    if (rc < 0) return rc;
    pgc *p = db->conn;
    PGresult *res = PQexec(p->c, sql);
    rc = map_result(db, res);
    PQclear(res);
    return rc;
}

/* Prepares `sql` once per connection; returns the statement's name. */
static int prepared_name(ag_db *db, const char *sql, char name[16])
{
    pgc *p = db->conn;
    for (int i = 0; i < p->nstmts; i++) {
        if (strcmp(p->sqls[i], sql) == 0) {
            snprintf(name, 16, "ag%d", i);
            return 0;
        }
    }
    if (p->nstmts == STMT_CACHE) {
        /* Rare: drop them all rather than track use. */
        PGresult *r = PQexec(p->c, "DEALLOCATE ALL");
        PQclear(r);
        forget_statements(p);
    }
    int i = p->nstmts;
    snprintf(name, 16, "ag%d", i);
    PGresult *res = PQprepare(p->c, name, sql, 0, NULL);
    int rc = map_result(db, res);
    PQclear(res);
    if (rc < 0) return rc;
    p->sqls[p->nstmts++] = ag_strdup(sql);
    return 0;
}

static int run(ag_db *db, const char *sql, const ag_val *v, int n, PGresult **out)
{
    int rc = ensure_ok(db);
    if (rc < 0) return rc;
    char name[16];
    rc = prepared_name(db, sql, name);
    if (rc < 0) return rc;
    if (n > MAX_PARAMS) {
        ag__db_set_error(db, "%d parameters; at most %d", n, MAX_PARAMS);
        return AG_EINVAL;
    }
    const char *values[MAX_PARAMS];
    int lengths[MAX_PARAMS], formats[MAX_PARAMS];
    char nums[MAX_PARAMS][40];
    for (int i = 0; i < n; i++) {
        size_t len;
        values[i] = ag__val_text(&v[i], nums[i], sizeof nums[i], &len);
        lengths[i] = (int)len;
        formats[i] = v[i].type == AG_VT_BLOB ? 1 : 0;
        if (v[i].type == AG_VT_TEXT && values[i] && memchr(values[i], '\0', len)) {
            ag__db_set_error(db, "text parameter $%d contains a NUL byte", i + 1);
            return AG_EINVAL;
        }
    }
    pgc *p = db->conn;
    PGresult *res = PQexecPrepared(p->c, name, n, values, lengths, formats, 0);
    rc = map_result(db, res);
    if (rc < 0) {
        PQclear(res);
        return rc;
    }
    *out = res;
    return 0;
}

static int pg_exec(ag_db *db, const char *sql, const ag_val *v, int n, int64_t *changes)
{
    PGresult *res;
    int rc = run(db, sql, v, n, &res);
    if (rc < 0) return rc;
    const char *t = PQcmdTuples(res);
    *changes = t && *t ? strtoll(t, NULL, 10) : 0;
    PQclear(res);
    return 0;
}

static int pr_next(ag_rows *r)
{
    pg_rows *pr = (pg_rows *)r;
    if (pr->row + 1 >= pr->nrows) {
        pr->row = pr->nrows;
        return 0;
    }
    pr->row++;
    return 1;
}

static int pr_ncols(const ag_rows *r)
{
    return PQnfields(((const pg_rows *)r)->res);
}

static const char *pr_name(const ag_rows *r, int col)
{
    return PQfname(((const pg_rows *)r)->res, col);
}

static bool pr_is_null(const ag_rows *r, int col)
{
    const pg_rows *pr = (const pg_rows *)r;
    return PQgetisnull(pr->res, pr->row, col);
}

static const char *pr_text(const ag_rows *r, int col)
{
    const pg_rows *pr = (const pg_rows *)r;
    if (PQgetisnull(pr->res, pr->row, col)) return NULL;
    return PQgetvalue(pr->res, pr->row, col);
}

static int64_t pr_int(const ag_rows *r, int col)
{
    const char *t = pr_text(r, col);
    if (!t) return 0;
    if (t[0] == 't') return 1; /* booleans */
    if (t[0] == 'f') return 0;
    return strtoll(t, NULL, 10);
}

static double pr_real(const ag_rows *r, int col)
{
    const char *t = pr_text(r, col);
    return t ? strtod(t, NULL) : 0.0;
}

static const void *pr_blob(ag_rows *r, int col, size_t *len)
{
    pg_rows *pr = (pg_rows *)r;
    const char *t = pr_text(r, col);
    if (pr->blob) PQfreemem(pr->blob);
    pr->blob = NULL;
    *len = 0;
    if (!t) return NULL;
    pr->blob = PQunescapeBytea((const unsigned char *)t, len);
    return pr->blob;
}

static void pr_free(ag_rows *r)
{
    pg_rows *pr = (pg_rows *)r;
    if (pr->blob) PQfreemem(pr->blob);
    PQclear(pr->res);
    ag_free(pr);
}

static const ag__rows_ops pg_rows_ops = {
    pr_next, pr_ncols, pr_name, pr_is_null, pr_text, pr_int, pr_real, pr_blob, pr_free,
};

static int pg_query(ag_db *db, const char *sql, const ag_val *v, int n, ag_rows **out)
{
    PGresult *res;
    int rc = run(db, sql, v, n, &res);
    if (rc < 0) return rc;
    pg_rows *pr = ag_calloc(1, sizeof *pr);
    pr->head.ops = &pg_rows_ops;
    pr->head.db = db;
    pr->res = res;
    pr->row = -1;
    pr->nrows = PQntuples(res);
    *out = &pr->head;
    return 0;
}

int ag__postgres_ensure_database(ag_store *s)
{
    PGconn *c = PQconnectdb(s->url);
    if (PQstatus(c) == CONNECTION_OK) {
        PQfinish(c);
        return 0;
    }
    char *err = ag_strdup(PQerrorMessage(c));
    PQfinish(c);
    if (!strstr(err, "does not exist")) {
        ag_error("cannot connect to PostgreSQL", AG_FS("url", s->url_safe), AG_FS("error", err));
        ag_free(err);
        return AG_EIO;
    }
    ag_free(err);
    /* The database is missing: create it from the maintenance database. */
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(s->url, &perr);
    if (!opts) {
        ag_error("invalid PostgreSQL URL", AG_FS("url", s->url_safe),
                 AG_FS("error", perr ? perr : ""));
        PQfreemem(perr);
        return AG_EINVAL;
    }
    char *dbname = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "dbname") == 0 && o->val) dbname = ag_strdup(o->val);
    PQconninfoFree(opts);
    if (!dbname) return AG_EINVAL;
    const char *keys[] = {"dbname", "dbname", NULL};
    const char *vals[] = {s->url, "postgres", NULL};
    c = PQconnectdbParams(keys, vals, 1);
    int rc = 0;
    if (PQstatus(c) != CONNECTION_OK) {
        ag_error("cannot connect to PostgreSQL to create the database", AG_FS("url", s->url_safe),
                 AG_FS("error", PQerrorMessage(c)));
        rc = AG_EIO;
    } else {
        char *ident = PQescapeIdentifier(c, dbname, strlen(dbname));
        ag_buf sql;
        ag_buf_init(&sql, 0);
        ag_buf_printf(&sql, "CREATE DATABASE %s", ident ? ident : "\"\"");
        PQfreemem(ident);
        PGresult *res = PQexec(c, sql.data);
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (PQresultStatus(res) != PGRES_COMMAND_OK && !(state && strcmp(state, "42P04") == 0)) {
            ag_error("cannot create the database", AG_FS("database", dbname),
                     AG_FS("error", PQresultErrorMessage(res)));
            rc = AG_EIO;
        } else {
            ag_info("database created", AG_FS("database", dbname));
        }
        PQclear(res);
        ag_buf_release(&sql);
    }
    PQfinish(c);
    ag_free(dbname);
    return rc;
}

const ag__store_ops ag__postgres_ops = {
    .name = "postgres",
    .connect = pg_connect,
    .disconnect = pg_disconnect,
    .exec = pg_exec,
    .query = pg_query,
    .exec_script = pg_exec_script,
    .begin_sql = "BEGIN ISOLATION LEVEL SERIALIZABLE",
};
