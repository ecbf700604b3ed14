/*
 * store.c — tests of src/lib/store on a real engine: SQLite in a temporary
 * file by default; PostgreSQL when AGORA_TEST_STORE=postgres (ctest runs that
 * variant through tests/harness/with-servers, which starts a real server and
 * sets AGORA_TEST_POSTGRES_URL).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agora/mem.h"
#include "agora/store.h"

static char g_url[512];
static char g_dir[256];
static ag_store *g_store;

static bool is_pg(void)
{
    const char *e = getenv("AGORA_TEST_STORE");
    return e && strcmp(e, "postgres") == 0;
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/agora-store-test-%d", (int)getpid());
    mkdir(g_dir, 0700);
    if (is_pg()) {
        const char *base = getenv("AGORA_TEST_POSTGRES_URL");
        if (!base) {
            fprintf(stderr, "AGORA_TEST_POSTGRES_URL is not set (run through with-servers)\n");
            return -1;
        }
        /* A database of our own, which the store must create. */
        const char *slash = strrchr(base, '/');
        snprintf(g_url, sizeof g_url, "%.*s/agora_test_%d", (int)(slash - base), base,
                 (int)getpid());
    } else {
        snprintf(g_url, sizeof g_url, "sqlite:%s/sub/dir/test.db", g_dir);
    }
    return ag_store_open(g_url, &g_store) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    ag_store_close(g_store);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) return -1;
    return 0;
}

static ag_db *db(void)
{
    ag_db *d;
    assert_int_equal(ag_store_db(g_store, &d), 0);
    return d;
}

static void exec_ok(const char *sql)
{
    ag_db *d = db();
    int rc = ag_db_exec(d, sql, NULL, 0, NULL);
    if (rc != 0) fail_msg("%s: %s (%s)", sql, ag_strerror(rc), ag_db_error(d));
}

static void test_types_round_trip_and_injection_is_data(void **state)
{
    (void)state;
    exec_ok("CREATE TABLE kinds (id BIGINT PRIMARY KEY, t TEXT, i BIGINT, r DOUBLE PRECISION,"
            " b BOOLEAN, blob BYTEA, n TEXT)");
    if (ag_store_engine_of(g_store) == AG_STORE_SQLITE) {
        /* SQLite accepts BYTEA and DOUBLE PRECISION as type names. */
    }
    static const char evil[] = "x'); DROP TABLE kinds; --";
    static const unsigned char bytes[] = {0, 1, 2, 0xff, 0, 'z'};
    ag_val p[] = {AG_VINT(1),    AG_VTEXT(evil), AG_VINT(INT64_MAX),
                  AG_VREAL(2.5), AG_VBOOL(true), AG_VBLOB(bytes, sizeof bytes),
                  AG_VNULL};
    ag_db *d = db();
    int64_t changes = 0;
    int rc = ag_db_exec(d, "INSERT INTO kinds VALUES ($1, $2, $3, $4, $5, $6, $7)", p, 7, &changes);
    if (rc) fail_msg("insert: %s", ag_db_error(d));
    assert_int_equal(changes, 1);
    ag_rows *r;
    ag_val id = AG_VINT(1);
    assert_int_equal(
        ag_db_query(d, "SELECT t, i, r, b, blob, n FROM kinds WHERE id = $1", &id, 1, &r), 0);
    assert_int_equal(ag_rows_next(r), 1);
    assert_int_equal(ag_rows_ncols(r), 6);
    assert_string_equal(ag_rows_name(r, 0), "t");
    assert_string_equal(ag_rows_text(r, 0), evil);
    assert_true(ag_rows_int(r, 1) == INT64_MAX);
    assert_true(ag_rows_real(r, 2) == 2.5);
    assert_true(ag_rows_bool(r, 3));
    size_t len;
    const unsigned char *got = ag_rows_blob(r, 4, &len);
    assert_int_equal(len, sizeof bytes);
    assert_memory_equal(got, bytes, sizeof bytes);
    assert_true(ag_rows_is_null(r, 5));
    assert_null(ag_rows_text(r, 5));
    assert_int_equal(ag_rows_next(r), 0);
    ag_rows_free(r);
    int64_t n;
    assert_int_equal(ag_db_query_int(d, "SELECT COUNT(*) FROM kinds", NULL, 0, &n), 0);
    assert_int_equal(n, 1); /* the table survived the "injection" */
}

static void test_returning_and_errors(void **state)
{
    (void)state;
    exec_ok("CREATE TABLE users (id BIGINT PRIMARY KEY, email TEXT NOT NULL UNIQUE)");
    ag_db *d = db();
    ag_val p[] = {AG_VINT(7), AG_VTEXT("a@b.co")};
    int64_t id = 0;
    assert_int_equal(
        ag_db_query_int(d, "INSERT INTO users (id, email) VALUES ($1, $2) RETURNING id", p, 2, &id),
        0);
    assert_int_equal(id, 7);
    ag_val dup[] = {AG_VINT(8), AG_VTEXT("a@b.co")};
    assert_int_equal(ag_db_exec(d, "INSERT INTO users (id, email) VALUES ($1, $2)", dup, 2, NULL),
                     AG_EEXISTS);
    assert_true(strlen(ag_db_error(d)) > 0);
    ag_val nul[] = {AG_VINT(9), AG_VNULL};
    assert_int_equal(ag_db_exec(d, "INSERT INTO users (id, email) VALUES ($1, $2)", nul, 2, NULL),
                     AG_ECONSTRAINT);
    assert_int_equal(ag_db_exec(d, "INSERT INTO nowhere VALUES ($1)", p, 1, NULL), AG_EINVAL);
    char email[64];
    ag_val seven = AG_VINT(7);
    assert_int_equal(ag_db_query_text(d, "SELECT email FROM users WHERE id = $1", &seven, 1, email,
                                      sizeof email),
                     0);
    assert_string_equal(email, "a@b.co");
    ag_val none = AG_VINT(99);
    assert_int_equal(
        ag_db_query_text(d, "SELECT email FROM users WHERE id = $1", &none, 1, email, sizeof email),
        AG_ENOTFOUND);
}

static int insert_then(ag_db *d, void *ud)
{
    int *mode = ud;
    ag_val p[] = {AG_VINT(*mode)};
    int rc = ag_db_exec(d, "INSERT INTO txt (v) VALUES ($1)", p, 1, NULL);
    if (rc < 0) return rc;
    return *mode == 2 ? AG_EINVAL : 0; /* mode 2: fail after the insert */
}

static void hook(void *ud)
{
    (*(int *)ud)++;
}

static int with_hook(ag_db *d, void *ud)
{
    ag_db_after_commit(d, hook, ud);
    assert_true(ag_db_in_tx(d));
    return insert_then(d, &(int){1});
}

static int with_hook_fail(ag_db *d, void *ud)
{
    ag_db_after_commit(d, hook, ud);
    return insert_then(d, &(int){2});
}

static void test_transactions_commit_rollback_and_hooks(void **state)
{
    (void)state;
    exec_ok("CREATE TABLE txt (v BIGINT)");
    int mode = 1;
    assert_int_equal(ag_store_tx(g_store, insert_then, &mode), 0);
    mode = 2;
    assert_int_equal(ag_store_tx(g_store, insert_then, &mode), AG_EINVAL);
    int64_t n;
    assert_int_equal(ag_db_query_int(db(), "SELECT COUNT(*) FROM txt", NULL, 0, &n), 0);
    assert_int_equal(n, 1); /* the failed transaction left nothing */
    int hooks = 0;
    assert_int_equal(ag_store_tx(g_store, with_hook, &hooks), 0);
    assert_int_equal(hooks, 1);
    assert_int_equal(ag_store_tx(g_store, with_hook_fail, &hooks), AG_EINVAL);
    assert_int_equal(hooks, 1); /* a rolled back transaction runs no hook */
    assert_false(ag_db_in_tx(db()));
}

/* Read-modify-write from several threads: every increment must survive. */
static int increment(ag_db *d, void *ud)
{
    int64_t v;
    int rc = ag_db_query_int(d, "SELECT v FROM counter WHERE id = 1", NULL, 0, &v);
    if (rc < 0) return rc;
    ag_val p[] = {AG_VINT(v + 1)};
    return ag_db_exec(d, "UPDATE counter SET v = $1 WHERE id = 1", p, 1, NULL);
}

static void *writer(void *arg)
{
    int *fails = arg;
    for (int i = 0; i < 100; i++)
        if (ag_store_tx(g_store, increment, NULL) < 0) (*fails)++;
    return NULL;
}

static void test_concurrent_writers_lose_nothing(void **state)
{
    (void)state;
    exec_ok("CREATE TABLE counter (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)");
    exec_ok("INSERT INTO counter VALUES (1, 0)");
    pthread_t t[4];
    int fails[4] = {0};
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, writer, &fails[i]), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    int64_t v;
    assert_int_equal(ag_db_query_int(db(), "SELECT v FROM counter WHERE id = 1", NULL, 0, &v), 0);
    int failed = fails[0] + fails[1] + fails[2] + fails[3];
    /* Retries make conflicts invisible; a give-up would be reported, not lost. */
    assert_int_equal(failed, 0);
    assert_int_equal(v, 400);
}

/* Ends every other session of the test's database, as a crashed backend
 * (the postmaster resets them all), pg_terminate_backend or a restart do. */
static void *terminator(void *arg)
{
    int64_t *ended = arg;
    *ended = -1;
    (void)ag_db_query_int(db(),
                          "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()",
                          NULL, 0, ended);
    return NULL;
}

static void test_session_ended_by_the_server(void **state)
{
    (void)state;
    if (!is_pg()) skip(); /* SQLite has no server to end a session */
    int64_t one = 0;
    assert_int_equal(ag_db_query_int(db(), "SELECT 1", NULL, 0, &one), 0);
    pthread_t t;
    int64_t ended;
    assert_int_equal(pthread_create(&t, NULL, terminator, &ended), 0);
    pthread_join(t, NULL);
    assert_true(ended >= 1); /* this thread's idle session among them */
    usleep(200 * 1000);      /* the server's goodbye reaches the socket */
    /* The next statement on the ended session works: the store notices the
     * session is gone before sending, and opens a new one. */
    ag_db *d = db();
    int rc = ag_db_query_int(d, "SELECT 2", NULL, 0, &one);
    if (rc != 0) fail_msg("after the session was ended: %s (%s)", ag_strerror(rc), ag_db_error(d));
    assert_int_equal(one, 2);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_migrations(void **state)
{
    (void)state;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/migrations", g_dir);
    mkdir(dir, 0700);
    write_file(dir, "001_init.sql",
               "CREATE TABLE m1 (id BIGINT PRIMARY KEY);\n"
               "CREATE TABLE m1b (id BIGINT);");
    write_file(dir, "002_engine.sql", "CREATE TABLE m2_common (id BIGINT);");
    write_file(dir, "002_engine.sqlite.sql", "CREATE TABLE m2_sqlite (id BIGINT);");
    write_file(dir, "002_engine.postgres.sql", "CREATE TABLE m2_postgres (id BIGINT);");
    write_file(dir, "README", "not a migration");
    int applied = -1;
    assert_int_equal(ag_store_migrate(g_store, dir, &applied), 0);
    assert_int_equal(applied, 2);
    int64_t version;
    assert_int_equal(ag_store_version(g_store, &version), 0);
    assert_int_equal(version, 2);
    ag_db *d = db();
    const char *mine =
        is_pg() ? "SELECT COUNT(*) FROM m2_postgres" : "SELECT COUNT(*) FROM m2_sqlite";
    int64_t n;
    assert_int_equal(ag_db_query_int(d, mine, NULL, 0, &n), 0);
    /* The common file of number 2 was replaced by the engine's own. */
    assert_int_equal(ag_db_exec(d, "SELECT COUNT(*) FROM m2_common", NULL, 0, NULL), AG_EINVAL);

    /* Again: nothing to do. */
    assert_int_equal(ag_store_migrate(g_store, dir, &applied), 0);
    assert_int_equal(applied, 0);

    /* A failing migration leaves nothing of itself. */
    write_file(dir, "003_bad.sql", "CREATE TABLE m3 (id BIGINT); THIS IS NOT SQL;");
    assert_true(ag_store_migrate(g_store, dir, &applied) < 0);
    assert_int_equal(ag_store_version(g_store, &version), 0);
    assert_int_equal(version, 2);
    assert_int_equal(ag_db_exec(d, "SELECT COUNT(*) FROM m3", NULL, 0, NULL), AG_EINVAL);
    write_file(dir, "003_bad.sql", "CREATE TABLE m3 (id BIGINT);");
    assert_int_equal(ag_store_migrate(g_store, dir, &applied), 0);
    assert_int_equal(applied, 1);

    /* A database newer than the files: refuse. */
    assert_int_equal(ag_db_exec(d,
                                "INSERT INTO agora_migrations (version, name, applied_at) "
                                "VALUES (9, '009_future.sql', 'x')",
                                NULL, 0, NULL),
                     0);
    assert_int_equal(ag_store_migrate(g_store, dir, &applied), AG_ESTATE);
}

static void test_ping_and_bad_urls(void **state)
{
    (void)state;
    char why[128] = "";
    assert_int_equal(ag_store_ping(g_store, why, sizeof why), 0);
    ag_store *s;
    assert_int_equal(ag_store_open("mysql://x", &s), AG_EINVAL);
    assert_int_equal(ag_store_open("sqlite::memory:", &s), AG_EINVAL);
    assert_int_equal(ag_store_open("postgres://nobody@127.0.0.1:1/x?connect_timeout=2", &s),
                     AG_EIO);
}

static void test_one_open_result_at_a_time(void **state)
{
    (void)state;
    ag_db *d = db();
    ag_rows *r;
    assert_int_equal(ag_db_query(d, "SELECT 1", NULL, 0, &r), 0);
    ag_rows *r2;
    assert_int_equal(ag_db_query(d, "SELECT 2", NULL, 0, &r2), AG_ESTATE);
    ag_rows_free(r);
    assert_int_equal(ag_db_query(d, "SELECT 2", NULL, 0, &r2), 0);
    assert_int_equal(ag_rows_next(r2), 1);
    assert_int_equal(ag_rows_int(r2, 0), 2);
    ag_rows_free(r2);
}

typedef struct pet {
    char name[6]; /* short on purpose: the copy cuts to fit */
    char owner[16];
    int64_t legs;
} pet;

static void pet_fill(ag_rows *r, void *out)
{
    pet *p = out;
    ag_rows_copy(r, 0, p->name, sizeof p->name);
    ag_rows_copy(r, 1, p->owner, sizeof p->owner);
    p->legs = ag_rows_int(r, 2);
}

/* The lookup and change helpers services are written with. */
static void test_one_row_lookups_and_changes(void **state)
{
    (void)state;
    exec_ok("CREATE TABLE pets (id BIGINT PRIMARY KEY, name TEXT, owner TEXT, legs BIGINT)");
    ag_db *d = db();
    ag_val ins[] = {AG_VINT(1), AG_VTEXT("Bartholomew"), AG_VNULL, AG_VINT(4)};
    assert_int_equal(
        ag_db_exec_changed(d, "INSERT INTO pets VALUES ($1, $2, $3, $4)", ins, 4, AG_EEXISTS), 0);
    assert_int_equal(ag_db_exec_changed(d,
                                        "INSERT INTO pets VALUES ($1, $2, $3, $4)"
                                        " ON CONFLICT (id) DO NOTHING",
                                        ins, 4, AG_EEXISTS),
                     AG_EEXISTS);
    pet p;
    memset(&p, 'x', sizeof p);
    ag_val one = AG_VINT(1);
    const char *sql = "SELECT name, owner, legs FROM pets WHERE id = $1";
    assert_int_equal(ag_db_query_one(d, sql, &one, 1, pet_fill, &p), 0);
    assert_string_equal(p.name, "Barth"); /* cut to its buffer, terminated */
    assert_string_equal(p.owner, "");     /* NULL reads as empty */
    assert_int_equal(p.legs, 4);
    ag_val two = AG_VINT(2);
    memset(&p, 0, sizeof p);
    assert_int_equal(ag_db_query_one(d, sql, &two, 1, pet_fill, &p), AG_ENOTFOUND);
    assert_int_equal(p.legs, 0); /* fill never ran */
    assert_true(ag_db_query_one(d, "SELECT nope FROM pets", NULL, 0, pet_fill, &p) < 0);
    /* The connection is usable after each: no result was left open. */
    ag_val upd[] = {AG_VINT(3), AG_VINT(1)};
    assert_int_equal(
        ag_db_exec_changed(d, "UPDATE pets SET legs = $1 WHERE id = $2", upd, 2, AG_ENOTFOUND), 0);
    upd[1] = AG_VINT(9);
    assert_int_equal(
        ag_db_exec_changed(d, "UPDATE pets SET legs = $1 WHERE id = $2", upd, 2, AG_ENOTFOUND),
        AG_ENOTFOUND);
    assert_true(ag_db_exec_changed(d, "UPDATE nope SET x = 1", NULL, 0, AG_ENOTFOUND) < 0);
    assert_int_equal(ag_db_query_one(d, sql, &one, 1, pet_fill, &p), 0);
    assert_int_equal(p.legs, 3);
    json_t *arr = json_array();
    assert_int_equal(ag_db_query_texts(d,
                                       "SELECT name FROM pets UNION ALL SELECT owner FROM pets"
                                       " UNION ALL SELECT 'z'",
                                       NULL, 0, arr),
                     0);
    char *text = json_dumps(arr, JSON_COMPACT);
    assert_string_equal(text, "[\"Bartholomew\",null,\"z\"]");
    free(text);
    assert_true(ag_db_query_texts(d, "SELECT nope", NULL, 0, arr) < 0);
    assert_int_equal(json_array_size(arr), 3);
    json_decref(arr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types_round_trip_and_injection_is_data),
        cmocka_unit_test(test_returning_and_errors),
        cmocka_unit_test(test_transactions_commit_rollback_and_hooks),
        cmocka_unit_test(test_concurrent_writers_lose_nothing),
        cmocka_unit_test(test_session_ended_by_the_server),
        cmocka_unit_test(test_migrations),
        cmocka_unit_test(test_ping_and_bad_urls),
        cmocka_unit_test(test_one_open_result_at_a_time),
        cmocka_unit_test(test_one_row_lookups_and_changes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
