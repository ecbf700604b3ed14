/*
 * store.c — the engine-independent half of agora/store.h: URLs, one
 * connection per thread, transactions with retry, migrations.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agora/clock.h"
#include "agora/config.h"
#include "agora/id.h"
#include "agora/log.h"
#include "agora/loop.h"
#include "agora/trace.h"
#include "internal.h"

void ag__db_set_error(ag_db *db, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(db->error, sizeof db->error, fmt, ap);
    va_end(ap);
}

const char *ag__val_text(const ag_val *v, char *buf, size_t n, size_t *len)
{
    switch (v->type) {
    case AG_VT_NULL:
        *len = 0;
        return NULL;
    case AG_VT_TEXT:
        if (!v->v.s) {
            *len = 0;
            return NULL;
        }
        *len = v->len == SIZE_MAX ? strlen(v->v.s) : v->len;
        return v->v.s;
    case AG_VT_INT:
        *len = (size_t)snprintf(buf, n, "%lld", (long long)v->v.i);
        return buf;
    case AG_VT_REAL:
        *len = (size_t)snprintf(buf, n, "%.17g", v->v.d);
        return buf;
    case AG_VT_BOOL:
        *len = 1;
        return v->v.b ? "t" : "f";
    case AG_VT_BLOB:
        *len = v->len;
        return v->v.p;
    }
    *len = 0;
    return NULL;
}

/* ---- Opening ----------------------------------------------------------------- */

static char *mask_password(const char *url)
{
    /* scheme://user:password@host → scheme://user:***@host */
    const char *scheme = strstr(url, "://");
    const char *at = scheme ? strchr(scheme + 3, '@') : NULL;
    const char *colon = scheme ? strchr(scheme + 3, ':') : NULL;
    if (!at || !colon || colon > at) return ag_strdup(url);
    ag_buf b;
    ag_buf_init(&b, 0);
    ag_buf_append(&b, url, (size_t)(colon - url) + 1);
    ag_buf_appends(&b, "***");
    ag_buf_appends(&b, at);
    return ag_buf_detach(&b, NULL);
}

static int mkdir_parents(const char *path)
{
    char tmp[4096];
    int n = snprintf(tmp, sizeof tmp, "%s", path);
    if (n <= 0 || (size_t)n >= sizeof tmp) return AG_EINVAL;
    char *slash = strrchr(tmp, '/');
    if (!slash) return 0;
    *slash = '\0';
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) < 0 && errno != EEXIST) return ag_err_from_errno(-errno);
        *p = '/';
    }
    if (tmp[0] && mkdir(tmp, 0755) < 0 && errno != EEXIST) return ag_err_from_errno(-errno);
    return 0;
}

int ag_store_open(const char *url, ag_store **out)
{
    if (!url || !*url) return AG_EINVAL;
    ag_store *s = ag_calloc(1, sizeof *s);
    s->url = ag_strdup(url);
    s->url_safe = mask_password(url);
    pthread_mutex_init(&s->mu, NULL);
    long long n;
    bool full = true;
    int rc = 0;
    rc |= ag_config_int("AGORA_DB_BUSY_TIMEOUT_MS", 5000, 0, 600000, &n);
    s->busy_timeout_ms = (int)n;
    /* Generous: a hot row under SERIALIZABLE can lose several rounds in a
     * row; each retry waits a jittered backoff (at most 200 ms). */
    rc |= ag_config_int("AGORA_DB_TX_RETRIES", 32, 0, 1000, &n);
    s->tx_retries = (int)n;
    rc |= ag_config_bool("AGORA_SQLITE_SYNC_FULL", true, &full);
    s->sync_full = full;
    if (rc < 0) {
        ag_store_close(s);
        return AG_ECONFIG;
    }
    if (strncmp(url, "sqlite:", 7) == 0) {
        s->engine = AG_STORE_SQLITE;
        s->ops = &ag__sqlite_ops;
        const char *path = url + 7;
        if (strncmp(path, "//", 2) == 0) path += 2; /* sqlite://path */
        if (!*path || strcmp(path, ":memory:") == 0) {
            /* Every thread would get its own empty database. */
            ag_error("invalid store URL", AG_FS("url", s->url_safe),
                     AG_FS("reason", "SQLite needs a file path (sqlite:var/name.db)"));
            ag_store_close(s);
            return AG_EINVAL;
        }
        s->path = ag_strdup(path);
        rc = mkdir_parents(s->path);
        if (rc < 0) {
            ag_error("cannot create the store's directory", AG_FS("path", s->path), AG_FERR(rc));
            ag_store_close(s);
            return rc;
        }
    } else if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0) {
        s->engine = AG_STORE_POSTGRES;
        s->ops = &ag__postgres_ops;
        rc = ag__postgres_ensure_database(s);
        if (rc < 0) {
            ag_store_close(s);
            return rc;
        }
    } else {
        ag_error("invalid store URL", AG_FS("url", s->url_safe),
                 AG_FS("reason", "expected sqlite:<path> or postgres://..."));
        ag_store_close(s);
        return AG_EINVAL;
    }
    /* Connect now, on this thread, so that a bad store fails at start. */
    ag_db *db;
    rc = ag_store_db(s, &db);
    if (rc < 0) {
        ag_error("cannot open the store", AG_FS("url", s->url_safe), AG_FERR(rc));
        ag_store_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void ag_store_close(ag_store *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->ndbs; i++) {
        ag_db *db = s->dbs[i];
        if (db->open_rows) ag_rows_free(db->open_rows);
        if (db->conn) s->ops->disconnect(db);
        ag_free(db->hooks);
        ag_free(db);
    }
    ag_free(s->dbs);
    pthread_mutex_destroy(&s->mu);
    ag_free(s->url);
    ag_free(s->url_safe);
    ag_free(s->path);
    ag_free(s);
}

ag_store_engine ag_store_engine_of(const ag_store *s)
{
    return s->engine;
}

const char *ag_store_url_safe(const ag_store *s)
{
    return s->url_safe;
}

int ag_store_db(ag_store *s, ag_db **out)
{
    if (ag_loop_current()) {
        ag_error("store used on an I/O loop thread; refused");
        return AG_ESTATE;
    }
    pthread_t self = pthread_self();
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->ndbs; i++) {
        if (pthread_equal(s->dbs[i]->thread, self)) {
            ag_db *db = s->dbs[i];
            pthread_mutex_unlock(&s->mu);
            if (!db->conn) {
                int rc = s->ops->connect(s, db);
                if (rc < 0) return rc;
            }
            *out = db;
            return 0;
        }
    }
    pthread_mutex_unlock(&s->mu);
    ag_db *db = ag_calloc(1, sizeof *db);
    db->store = s;
    db->thread = self;
    int rc = s->ops->connect(s, db);
    if (rc < 0) {
        ag_free(db);
        return rc;
    }
    pthread_mutex_lock(&s->mu);
    if (s->ndbs == s->cap_dbs) {
        s->cap_dbs = s->cap_dbs ? s->cap_dbs * 2 : 8;
        s->dbs = ag_realloc(s->dbs, s->cap_dbs * sizeof *s->dbs);
    }
    s->dbs[s->ndbs++] = db;
    pthread_mutex_unlock(&s->mu);
    *out = db;
    return 0;
}

/* ---- Statements ------------------------------------------------------------------ */

static int check_rows_closed(ag_db *db)
{
    if (db->open_rows) {
        ag__db_set_error(db, "a previous result is still open on this connection");
        return AG_ESTATE;
    }
    return 0;
}

int ag_db_exec(ag_db *db, const char *sql, const ag_val *params, int nparams, int64_t *changes)
{
    int rc = check_rows_closed(db);
    if (rc < 0) return rc;
    int64_t dummy;
    return db->store->ops->exec(db, sql, params, nparams, changes ? changes : &dummy);
}

int ag_db_exec_changed(ag_db *db, const char *sql, const ag_val *params, int nparams, int none)
{
    int64_t changes = 0;
    int rc = ag_db_exec(db, sql, params, nparams, &changes);
    if (rc < 0) return rc;
    return changes > 0 ? 0 : none;
}

int ag_db_query_texts(ag_db *db, const char *sql, const ag_val *params, int nparams, json_t *arr)
{
    ag_rows *r;
    int rc = ag_db_query(db, sql, params, nparams, &r);
    if (rc < 0) return rc;
    while ((rc = ag_rows_next(r)) == 1) {
        const char *s = ag_rows_text(r, 0);
        json_array_append_new(arr, s ? json_string(s) : json_null());
    }
    ag_rows_free(r);
    return rc < 0 ? rc : 0;
}

int ag_db_query(ag_db *db, const char *sql, const ag_val *params, int nparams, ag_rows **out)
{
    int rc = check_rows_closed(db);
    if (rc < 0) return rc;
    rc = db->store->ops->query(db, sql, params, nparams, out);
    if (rc == 0) db->open_rows = *out;
    return rc;
}

int ag_db_query_int(ag_db *db, const char *sql, const ag_val *params, int nparams, int64_t *out)
{
    ag_rows *r;
    int rc = ag_db_query(db, sql, params, nparams, &r);
    if (rc < 0) return rc;
    rc = ag_rows_next(r);
    if (rc == 1 && !ag_rows_is_null(r, 0)) {
        *out = ag_rows_int(r, 0);
        rc = 0;
    } else if (rc >= 0) {
        rc = AG_ENOTFOUND;
    }
    ag_rows_free(r);
    return rc;
}

int ag_db_query_one(ag_db *db, const char *sql, const ag_val *params, int nparams, ag_row_fill fill,
                    void *out)
{
    ag_rows *r;
    int rc = ag_db_query(db, sql, params, nparams, &r);
    if (rc < 0) return rc;
    rc = ag_rows_next(r);
    if (rc == 1) fill(r, out);
    ag_rows_free(r);
    return rc == 1 ? 0 : rc == 0 ? AG_ENOTFOUND : rc;
}

int ag_db_query_text(ag_db *db, const char *sql, const ag_val *params, int nparams, char *buf,
                     size_t n)
{
    ag_rows *r;
    int rc = ag_db_query(db, sql, params, nparams, &r);
    if (rc < 0) return rc;
    rc = ag_rows_next(r);
    if (rc == 1 && !ag_rows_is_null(r, 0)) {
        snprintf(buf, n, "%s", ag_rows_text(r, 0));
        rc = 0;
    } else if (rc >= 0) {
        rc = AG_ENOTFOUND;
    }
    ag_rows_free(r);
    return rc;
}

const char *ag_db_error(const ag_db *db)
{
    return db->error;
}

ag_store *ag_db_store(ag_db *db)
{
    return db->store;
}

bool ag_db_in_tx(const ag_db *db)
{
    return db->in_tx;
}

int ag_rows_next(ag_rows *r)
{
    return r->ops->next(r);
}

int ag_rows_ncols(const ag_rows *r)
{
    return r->ops->ncols(r);
}

const char *ag_rows_name(const ag_rows *r, int col)
{
    return r->ops->name(r, col);
}

bool ag_rows_is_null(const ag_rows *r, int col)
{
    return r->ops->is_null(r, col);
}

const char *ag_rows_text(const ag_rows *r, int col)
{
    return r->ops->text(r, col);
}

void ag_rows_copy(const ag_rows *r, int col, char *buf, size_t n)
{
    const char *s = r->ops->text(r, col);
    snprintf(buf, n, "%s", s ? s : "");
}

int64_t ag_rows_int(const ag_rows *r, int col)
{
    return r->ops->int64(r, col);
}

double ag_rows_real(const ag_rows *r, int col)
{
    return r->ops->real(r, col);
}

bool ag_rows_bool(const ag_rows *r, int col)
{
    const char *t = r->ops->text(r, col);
    if (!t) return false;
    /* SQLite stores 0/1, PostgreSQL answers t/f. */
    return t[0] == 't' || t[0] == 'T' || (t[0] >= '1' && t[0] <= '9');
}

const void *ag_rows_blob(ag_rows *r, int col, size_t *len)
{
    return r->ops->blob(r, col, len);
}

void ag_rows_free(ag_rows *r)
{
    if (!r) return;
    if (r->db && r->db->open_rows == r) r->db->open_rows = NULL;
    r->ops->free(r);
}

/* ---- Transactions ------------------------------------------------------------------ */

void ag_db_after_commit(ag_db *db, void (*fn)(void *), void *ud)
{
    if (!db->in_tx) {
        fn(ud); /* not in a transaction: the change is already committed */
        return;
    }
    if (db->nhooks == db->cap_hooks) {
        db->cap_hooks = db->cap_hooks ? db->cap_hooks * 2 : 4;
        db->hooks = ag_realloc(db->hooks, db->cap_hooks * sizeof *db->hooks);
    }
    db->hooks[db->nhooks++] = (ag__after_commit){fn, ud};
}

static void backoff(int attempt)
{
    /* 2, 4, 8 ... ms up to 200 ms, with full jitter. */
    unsigned base = 2u << (attempt < 7 ? attempt : 7);
    if (base > 200) base = 200;
    unsigned r;
    ag_random_bytes(&r, sizeof r);
    unsigned ms = 1 + r % base;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)ms * 1000000L};
    nanosleep(&ts, NULL);
}

static void rollback(ag_db *db)
{
    if (db->open_rows) ag_rows_free(db->open_rows);
    char saved[sizeof db->error];
    memcpy(saved, db->error, sizeof saved);
    db->store->ops->exec_script(db, "ROLLBACK");
    memcpy(db->error, saved, sizeof saved); /* keep the message that mattered */
    db->in_tx = false;
    db->nhooks = 0;
}

void ag_store_instrument(ag_store *s, ag_metrics *m, const char *service)
{
    const char *lk[] = {"service", "outcome"};
    ag_metric *f = ag_metrics_family(
        m ? m : ag_metrics_default(), AG_HISTOGRAM, "agora_store_tx_duration_seconds",
        "Store transactions, from BEGIN to COMMIT or the last rollback, retries included.", 2, lk,
        NULL, 0);
    s->m_tx_ok = ag_metric_series(f, (const char *[]){service, "committed"});
    s->m_tx_failed = ag_metric_series(f, (const char *[]){service, "failed"});
}

static int run_tx(ag_store *s, ag_db *db, ag_tx_fn fn, void *ud);

int ag_store_tx(ag_store *s, ag_tx_fn fn, void *ud)
{
    ag_db *db;
    int rc = ag_store_db(s, &db);
    if (rc < 0) return rc;
    if (db->in_tx) return fn(db, ud); /* already inside one: join it */
    /* A span when a request or event is traced (agora/trace.h): the
     * statements and the after-commit hooks run inside it. */
    uint64_t t0 = ag_now_ns();
    ag_span span;
    ag_span_begin(&span,
                  s->engine == AG_STORE_SQLITE ? "sqlite transaction" : "postgresql transaction",
                  AG_SPAN_INTERNAL, NULL);
    ag_span_attr_str(&span, "db.system.name",
                     s->engine == AG_STORE_SQLITE ? "sqlite" : "postgresql");
    ag_span_enter(&span);
    rc = run_tx(s, db, fn, ud);
    if (rc < 0) ag_span_error(&span, db->error[0] ? db->error : ag_strerror(rc));
    ag_span_end(&span);
    ag_series *m = rc < 0 ? s->m_tx_failed : s->m_tx_ok;
    if (m) ag_series_observe(m, (double)(ag_now_ns() - t0) / 1e9);
    return rc;
}

static int run_tx(ag_store *s, ag_db *db, ag_tx_fn fn, void *ud)
{
    int rc;
    for (int attempt = 0;; attempt++) {
        rc = s->ops->exec_script(db, s->ops->begin_sql);
        if (rc < 0) {
            if (rc == AG_ERETRY && attempt < s->tx_retries) {
                backoff(attempt);
                continue;
            }
            return rc;
        }
        db->in_tx = true;
        db->nhooks = 0;
        rc = fn(db, ud);
        if (rc >= 0) {
            if (db->open_rows) ag_rows_free(db->open_rows);
            int crc = s->ops->exec_script(db, "COMMIT");
            if (crc == 0) {
                db->in_tx = false;
                size_t n = db->nhooks;
                db->nhooks = 0;
                for (size_t i = 0; i < n; i++)
                    db->hooks[i].fn(db->hooks[i].ud);
                return rc;
            }
            rc = crc;
        }
        rollback(db);
        if (rc != AG_ERETRY || attempt >= s->tx_retries) {
            if (rc == AG_ERETRY)
                ag_warn("transaction gave up after retries", AG_FI("attempts", attempt + 1),
                        AG_FS("error", db->error));
            return rc;
        }
        backoff(attempt);
    }
}

/* ---- Migrations -------------------------------------------------------------------- */

typedef struct migration {
    int64_t version;
    char *name;
    char *path;
    int specific; /* 1 when engine-specific */
} migration;

static int cmp_migration(const void *a, const void *b)
{
    const migration *x = a, *y = b;
    return x->version < y->version ? -1 : x->version > y->version;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    ag_buf b;
    ag_buf_init(&b, 16u << 20);
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (ag_buf_append(&b, chunk, n) < 0) {
            fclose(f);
            ag_buf_release(&b);
            return NULL;
        }
    }
    fclose(f);
    return ag_buf_detach(&b, NULL);
}

/* Lists the migrations in `dir` for the store's engine, sorted. */
static int list_migrations(ag_store *s, const char *dir, migration **out, size_t *count)
{
    DIR *d = opendir(dir);
    if (!d) {
        ag_error("cannot read the migrations directory", AG_FS("dir", dir),
                 AG_FS("error", strerror(errno)));
        return AG_ENOTFOUND;
    }
    const char *mine = s->engine == AG_STORE_SQLITE ? ".sqlite.sql" : ".postgres.sql";
    const char *other = s->engine == AG_STORE_SQLITE ? ".postgres.sql" : ".sqlite.sql";
    migration *list = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *fn = e->d_name;
        size_t len = strlen(fn);
        if (!isdigit((unsigned char)fn[0]) || len < 5 || strcmp(fn + len - 4, ".sql") != 0)
            continue;
        size_t ml = strlen(mine), ol = strlen(other);
        if (len > ol && strcmp(fn + len - ol, other) == 0) continue;
        int specific = len > ml && strcmp(fn + len - ml, mine) == 0;
        char *end;
        long long v = strtoll(fn, &end, 10);
        if (*end != '_' || v <= 0) {
            ag_error("migration file name must be NNN_name.sql", AG_FS("file", fn));
            rc = AG_EINVAL;
            break;
        }
        bool replaced = false;
        for (size_t i = 0; i < n; i++) {
            if (list[i].version != v) continue;
            if (list[i].specific == specific) {
                ag_error("two migrations with one number", AG_FS("file", fn),
                         AG_FS("other", list[i].name));
                rc = AG_EEXISTS;
            } else if (specific) { /* the engine's own file wins */
                ag_free(list[i].name);
                ag_free(list[i].path);
                size_t pl = strlen(dir) + len + 2;
                list[i].name = ag_strdup(fn);
                list[i].path = ag_malloc(pl);
                snprintf(list[i].path, pl, "%s/%s", dir, fn);
                list[i].specific = 1;
            }
            replaced = true;
        }
        if (rc < 0) break;
        if (replaced) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            list = ag_realloc(list, cap * sizeof *list);
        }
        size_t pl = strlen(dir) + len + 2;
        list[n].version = v;
        list[n].name = ag_strdup(fn);
        list[n].path = ag_malloc(pl);
        snprintf(list[n].path, pl, "%s/%s", dir, fn);
        list[n].specific = specific;
        n++;
    }
    closedir(d);
    if (rc < 0) {
        for (size_t i = 0; i < n; i++) {
            ag_free(list[i].name);
            ag_free(list[i].path);
        }
        ag_free(list);
        return rc;
    }
    qsort(list, n, sizeof *list, cmp_migration);
    *out = list;
    *count = n;
    return 0;
}

static const char create_table_sql[] = "CREATE TABLE IF NOT EXISTS agora_migrations ("
                                       " version BIGINT PRIMARY KEY,"
                                       " name TEXT NOT NULL,"
                                       " applied_at TEXT NOT NULL)";

typedef struct apply_ctx {
    const migration *m;
    const char *sql;
    bool skipped;
} apply_ctx;

static int apply_one(ag_db *db, void *ud)
{
    apply_ctx *a = ud;
    ag_store *s = db->store;
    if (s->engine == AG_STORE_POSTGRES) {
        /* Instances starting together take turns here. */
        int rc = s->ops->exec_script(db, "SELECT pg_advisory_xact_lock(7368207)");
        if (rc < 0) return rc;
    }
    int64_t have = 0;
    ag_val v = AG_VINT(a->m->version);
    int rc = ag_db_query_int(db, "SELECT COUNT(*) FROM agora_migrations WHERE version = $1", &v, 1,
                             &have);
    if (rc < 0) return rc;
    if (have > 0) {
        a->skipped = true; /* another instance applied it meanwhile */
        return 0;
    }
    rc = s->ops->exec_script(db, a->sql);
    if (rc < 0) return rc;
    char ts[32];
    ag_time_rfc3339(ts, sizeof ts, ag_wall_ms());
    ag_val p[3] = {AG_VINT(a->m->version), AG_VTEXT(a->m->name), AG_VTEXT(ts)};
    return ag_db_exec(
        db, "INSERT INTO agora_migrations (version, name, applied_at) VALUES ($1, $2, $3)", p, 3,
        NULL);
}

int ag_store_version(ag_store *s, int64_t *version)
{
    ag_db *db;
    int rc = ag_store_db(s, &db);
    if (rc < 0) return rc;
    rc = s->ops->exec_script(db, create_table_sql);
    if (rc < 0) return rc;
    *version = 0;
    rc = ag_db_query_int(db, "SELECT MAX(version) FROM agora_migrations", NULL, 0, version);
    return rc == AG_ENOTFOUND ? 0 : rc;
}

int ag_store_migrate(ag_store *s, const char *dir, int *applied)
{
    if (applied) *applied = 0;
    int64_t current;
    int rc = ag_store_version(s, &current);
    if (rc < 0) {
        ag_db *db;
        ag_store_db(s, &db);
        ag_error("cannot read the migration state", AG_FERR(rc), AG_FS("detail", db->error));
        return rc;
    }
    migration *list;
    size_t n;
    rc = list_migrations(s, dir, &list, &n);
    if (rc < 0) return rc;
    int64_t newest = n ? list[n - 1].version : 0;
    if (current > newest) {
        ag_error("the database is newer than this service", AG_FI("databaseVersion", current),
                 AG_FI("newestKnown", newest), AG_FS("store", s->url_safe));
        rc = AG_ESTATE;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (list[i].version <= current) continue;
        char *sql = read_file(list[i].path);
        if (!sql) {
            ag_error("cannot read a migration", AG_FS("file", list[i].path));
            rc = AG_EIO;
            break;
        }
        apply_ctx a = {.m = &list[i], .sql = sql};
        rc = ag_store_tx(s, apply_one, &a);
        ag_free(sql);
        if (rc < 0) {
            ag_db *db;
            ag_store_db(s, &db);
            ag_error("migration failed; nothing of it was applied", AG_FS("file", list[i].name),
                     AG_FERR(rc), AG_FS("detail", db->error));
            break;
        }
        if (!a.skipped) {
            ag_info("migration applied", AG_FS("file", list[i].name));
            if (applied) (*applied)++;
        }
    }
    for (size_t i = 0; i < n; i++) {
        ag_free(list[i].name);
        ag_free(list[i].path);
    }
    ag_free(list);
    return rc;
}

int ag_store_ping(void *store, char *why, size_t why_len)
{
    ag_store *s = store;
    ag_db *db;
    int rc = ag_store_db(s, &db);
    if (rc < 0) {
        snprintf(why, why_len, "store: cannot connect");
        return rc;
    }
    int64_t one;
    rc = ag_db_query_int(db, "SELECT 1", NULL, 0, &one);
    if (rc < 0) snprintf(why, why_len, "store: %s", db->error);
    return rc;
}
