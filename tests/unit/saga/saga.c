/*
 * saga.c — tests of src/lib/saga on SQLite in a temporary file: the happy
 * path, permanent and transient failures and their compensations,
 * compensations retried until they succeed, a crash in the middle of a step
 * (a forked child that dies inside an action) and recovery by a new engine
 * on the same file, and the JSON shape of ag_saga_get_json. Backoffs are a
 * few milliseconds (engine options) so the tests are fast; they wait for
 * outcomes, never for a wall-clock moment.
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agora/mem.h"
#include "agora/saga.h"
#include "agora/store.h"

#define NSTEPS 3

enum mode { OK = 0, PERMANENT, TRANSIENT };

/* What each step does, set by each test before the engine starts. */
static struct {
    enum mode mode[NSTEPS];
    int transient_times[NSTEPS]; /* TRANSIENT: fail this many times then succeed; 0: always */
    int comp_fail_times[NSTEPS]; /* the compensation fails this many times first */
    bool crash_in_step1;         /* the forked child dies inside step 1's action */
} g_cfg;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_action_calls[NSTEPS], g_comp_calls[NSTEPS], g_step_done_hooks;
static char g_log[4096]; /* "a0:<id> a1:<id> c0:<id> ..." */

static char g_dir[256], g_url[512];
static ag_store *g_store;
static ag_saga_engine *g_engine;

static void log_call(const char *what, int step, const char *id)
{
    pthread_mutex_lock(&g_mu);
    size_t n = strlen(g_log);
    snprintf(g_log + n, sizeof g_log - n, "%s%s%d:%s", n ? " " : "", what, step, id);
    pthread_mutex_unlock(&g_mu);
}

static int action(ag_saga_ctx *ctx, void *ud)
{
    (void)ud;
    int i = ag_saga_ctx_step(ctx);
    if (i == 1 && g_cfg.crash_in_step1) _exit(0); /* a crash while the step runs */
    pthread_mutex_lock(&g_mu);
    g_action_calls[i]++;
    pthread_mutex_unlock(&g_mu);
    log_call("a", i, ag_saga_ctx_id(ctx));
    if (g_cfg.mode[i] == PERMANENT) {
        ag_saga_ctx_fail(ctx, "card declined");
        return AG_SAGA_FAILED;
    }
    if (g_cfg.mode[i] == TRANSIENT &&
        (g_cfg.transient_times[i] == 0 || ag_saga_ctx_attempt(ctx) <= g_cfg.transient_times[i]))
        return AG_EUNAVAIL;
    char key[16];
    snprintf(key, sizeof key, "step%d", i);
    json_object_set_new(ag_saga_ctx_data(ctx), key, json_string(ag_saga_ctx_id(ctx)));
    return 0;
}

static int compensate(ag_saga_ctx *ctx, void *ud)
{
    (void)ud;
    int i = ag_saga_ctx_step(ctx);
    assert_true(ag_saga_ctx_compensating(ctx));
    pthread_mutex_lock(&g_mu);
    int n = ++g_comp_calls[i];
    pthread_mutex_unlock(&g_mu);
    log_call("c", i, ag_saga_ctx_id(ctx));
    if (n <= g_cfg.comp_fail_times[i]) {
        ag_saga_ctx_fail(ctx, "refund service down");
        return AG_EUNAVAIL;
    }
    return 0;
}

static int set_order(ag_db *db, const char *id, const char *status, const char *reason)
{
    ag_val p[] = {AG_VTEXT(id), AG_VTEXT(status), AG_VTEXT(reason)};
    return ag_db_exec(db, "UPDATE orders SET status = $2, reason = $3 WHERE id = $1", p, 3, NULL);
}

static int on_step_done(ag_saga_ctx *ctx, ag_db *db, void *ud)
{
    (void)ctx, (void)db, (void)ud;
    pthread_mutex_lock(&g_mu);
    g_step_done_hooks++;
    pthread_mutex_unlock(&g_mu);
    return 0;
}

static int on_completed(ag_saga_ctx *ctx, ag_db *db, void *ud)
{
    (void)ud;
    return set_order(db, ag_saga_ctx_id(ctx), "CONFIRMED", NULL);
}

static int on_compensated(ag_saga_ctx *ctx, ag_db *db, void *ud)
{
    (void)ud;
    return set_order(db, ag_saga_ctx_id(ctx), "CANCELLED", ag_saga_ctx_reason(ctx));
}

static const ag_saga_step g_steps[NSTEPS] = {
    {.name = "reserve", .action = action, .compensate = compensate, .max_attempts = 3},
    {.name = "charge", .action = action, .compensate = compensate, .max_attempts = 3,
     .deadline_ms = 5000},
    {.name = "confirm", .action = action, .max_attempts = 3},
};

static const ag_saga_def g_def = {
    .name = "checkout",
    .steps = g_steps,
    .nsteps = NSTEPS,
    .on_step_done = on_step_done,
    .on_completed = on_completed,
    .on_compensated = on_compensated,
};

static void open_all(void)
{
    assert_int_equal(ag_store_open(g_url, &g_store), 0);
    ag_saga_opts o = {.store = g_store, .workers = 2, .backoff_ms = 1, .backoff_max_ms = 4,
                      .poll_ms = 20};
    assert_int_equal(ag_saga_engine_new(&o, &g_engine), 0);
    assert_int_equal(ag_saga_register(g_engine, &g_def), 0);
}

static void close_all(void)
{
    ag_saga_engine_free(g_engine);
    g_engine = NULL;
    ag_store_close(g_store);
    g_store = NULL;
}

static int setup(void **state)
{
    (void)state;
    static int n;
    memset(&g_cfg, 0, sizeof g_cfg);
    memset(g_action_calls, 0, sizeof g_action_calls);
    memset(g_comp_calls, 0, sizeof g_comp_calls);
    g_step_done_hooks = 0;
    g_log[0] = '\0';
    snprintf(g_dir, sizeof g_dir, "/tmp/agora-saga-test-%d-%d", (int)getpid(), n++);
    mkdir(g_dir, 0700);
    snprintf(g_url, sizeof g_url, "sqlite:%s/orders.db", g_dir);
    ag_store *s;
    if (ag_store_open(g_url, &s) != 0) return -1;
    ag_db *db;
    int rc = ag_store_db(s, &db);
    if (rc == 0)
        rc = ag_db_exec(db, "CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT, reason TEXT)",
                        NULL, 0, NULL);
    ag_store_close(s);
    return rc == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    if (g_engine || g_store) close_all();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* The caller's transaction: its order row and the saga commit together. */
typedef struct create_ctx {
    const char *id;
    int rc;
} create_ctx;

static int create_tx(ag_db *db, void *ud)
{
    create_ctx *c = ud;
    ag_val p[] = {AG_VTEXT(c->id)};
    int rc = ag_db_exec(db, "INSERT INTO orders (id, status) VALUES ($1, 'PENDING')", p, 1, NULL);
    if (rc < 0) return rc;
    c->rc = ag_saga_create(g_engine, db, "checkout", c->id, json_pack("{s:i}", "total", 42));
    return c->rc;
}

static void create(const char *id)
{
    create_ctx c = {id, 0};
    assert_int_equal(ag_store_tx(g_store, create_tx, &c), 0);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits (up to 5 s) for a terminal state; returns the saga's JSON. */
static json_t *wait_terminal(const char *id)
{
    for (int i = 0; i < 2500; i++) {
        json_t *o;
        assert_int_equal(ag_saga_get_json(g_engine, id, &o), 0);
        const char *st = json_string_value(json_object_get(o, "state"));
        if (strcmp(st, "COMPLETED") == 0 || strcmp(st, "COMPENSATED") == 0) return o;
        json_decref(o);
        sleep_ms(2);
    }
    fail_msg("saga %s did not finish", id);
    return NULL;
}

static const char *str_at(json_t *o, const char *path_step, int i, const char *key)
{
    json_t *steps = json_object_get(o, path_step);
    return json_string_value(json_object_get(json_array_get(steps, (size_t)i), key));
}

static int int_at(json_t *o, int i, const char *key)
{
    json_t *steps = json_object_get(o, "steps");
    return (int)json_integer_value(json_object_get(json_array_get(steps, (size_t)i), key));
}

static void order_is(const char *id, const char *status, const char *reason_part)
{
    ag_db *db;
    assert_int_equal(ag_store_db(g_store, &db), 0);
    ag_rows *r;
    ag_val p[] = {AG_VTEXT(id)};
    assert_int_equal(ag_db_query(db, "SELECT status, reason FROM orders WHERE id = $1", p, 1, &r),
                     0);
    assert_int_equal(ag_rows_next(r), 1);
    assert_string_equal(ag_rows_text(r, 0), status);
    if (reason_part) {
        assert_non_null(ag_rows_text(r, 1));
        assert_non_null(strstr(ag_rows_text(r, 1), reason_part));
    }
    ag_rows_free(r);
}

static void test_happy_path_and_json_shape(void **state)
{
    (void)state;
    open_all();
    create("o1");
    assert_int_equal(ag_saga_engine_start(g_engine), 0);
    json_t *o = wait_terminal("o1");
    assert_string_equal(g_log, "a0:o1 a1:o1 a2:o1");
    assert_int_equal(g_step_done_hooks, 3);
    order_is("o1", "CONFIRMED", NULL);

    assert_string_equal(json_string_value(json_object_get(o, "id")), "o1");
    assert_string_equal(json_string_value(json_object_get(o, "definition")), "checkout");
    assert_string_equal(json_string_value(json_object_get(o, "state")), "COMPLETED");
    assert_true(json_is_null(json_object_get(o, "reason")));
    assert_true(json_is_null(json_object_get(o, "next_attempt_at")));
    assert_true(json_is_string(json_object_get(o, "created_at")));
    assert_true(json_is_string(json_object_get(o, "updated_at")));
    json_t *data = json_object_get(o, "data");
    assert_int_equal(json_integer_value(json_object_get(data, "total")), 42);
    for (int i = 0; i < NSTEPS; i++) {
        char key[16];
        snprintf(key, sizeof key, "step%d", i);
        assert_string_equal(json_string_value(json_object_get(data, key)), "o1");
        assert_string_equal(str_at(o, "steps", i, "name"), g_steps[i].name);
        assert_string_equal(str_at(o, "steps", i, "status"), "done");
        assert_int_equal(int_at(o, i, "attempts"), 1);
        assert_int_equal(int_at(o, i, "compensations"), 0);
        assert_null(json_object_get(json_array_get(json_object_get(o, "steps"), (size_t)i),
                                    "undo"));
    }
    assert_int_equal(json_array_size(json_object_get(o, "steps")), NSTEPS);
    json_decref(o);
    close_all();
}

static void test_permanent_failure_compensates_in_reverse(void **state)
{
    (void)state;
    g_cfg.mode[2] = PERMANENT;
    open_all();
    create("o2");
    assert_int_equal(ag_saga_engine_start(g_engine), 0);
    json_t *o = wait_terminal("o2");
    /* No retry of a permanent failure; the failed step had no effect. */
    assert_string_equal(g_log, "a0:o2 a1:o2 a2:o2 c1:o2 c0:o2");
    assert_string_equal(json_string_value(json_object_get(o, "state")), "COMPENSATED");
    assert_string_equal(json_string_value(json_object_get(o, "reason")),
                        "confirm: card declined");
    assert_string_equal(str_at(o, "steps", 0, "status"), "compensated");
    assert_string_equal(str_at(o, "steps", 1, "status"), "compensated");
    assert_string_equal(str_at(o, "steps", 2, "status"), "failed");
    assert_string_equal(str_at(o, "steps", 2, "error"), "card declined");
    assert_int_equal(int_at(o, 2, "attempts"), 1);
    order_is("o2", "CANCELLED", "card declined");
    json_decref(o);
    close_all();
}

static void test_permanent_failure_at_first_step_compensates_nothing(void **state)
{
    (void)state;
    g_cfg.mode[0] = PERMANENT;
    open_all();
    create("o3");
    assert_int_equal(ag_saga_engine_start(g_engine), 0);
    json_t *o = wait_terminal("o3");
    assert_string_equal(g_log, "a0:o3");
    assert_string_equal(json_string_value(json_object_get(o, "state")), "COMPENSATED");
    order_is("o3", "CANCELLED", "reserve: card declined");
    json_decref(o);
    close_all();
}

static void test_transient_failures_retried_then_compensated(void **state)
{
    (void)state;
    g_cfg.mode[1] = TRANSIENT; /* always */
    open_all();
    create("o4");
    assert_int_equal(ag_saga_engine_start(g_engine), 0);
    json_t *o = wait_terminal("o4");
    /* max_attempts 3, then the uncertain step itself is undone first. */
    assert_string_equal(g_log, "a0:o4 a1:o4 a1:o4 a1:o4 c1:o4 c0:o4");
    assert_string_equal(json_string_value(json_object_get(o, "state")), "COMPENSATED");
    assert_int_equal(int_at(o, 1, "attempts"), 3);
    assert_string_equal(str_at(o, "steps", 1, "status"), "compensated");
    assert_string_equal(str_at(o, "steps", 2, "status"), "pending");
    assert_string_equal(json_string_value(json_object_get(o, "reason")),
                        "charge: service unavailable");
    order_is("o4", "CANCELLED", "charge");
    json_decref(o);
    close_all();
}

static void test_transient_failures_then_success_completes(void **state)
{
    (void)state;
    g_cfg.mode[1] = TRANSIENT;
    g_cfg.transient_times[1] = 2;
    open_all();
    create("o5");
    assert_int_equal(ag_saga_engine_start(g_engine), 0);
    json_t *o = wait_terminal("o5");
    assert_string_equal(g_log, "a0:o5 a1:o5 a1:o5 a1:o5 a2:o5");
    assert_string_equal(json_string_value(json_object_get(o, "state")), "COMPLETED");
    assert_int_equal(int_at(o, 1, "attempts"), 3);
    assert_null(str_at(o, "steps", 1, "error"));
    order_is("o5", "CONFIRMED", NULL);
    json_decref(o);
    close_all();
}

static void test_compensation_retried_until_it_succeeds(void **state)
{
    (void)state;
    g_cfg.mode[2] = PERMANENT;
    g_cfg.comp_fail_times[1] = 4;
    open_all();
    create("o6");
    assert_int_equal(ag_saga_engine_start(g_engine), 0);
    json_t *o = wait_terminal("o6");
    assert_string_equal(g_log, "a0:o6 a1:o6 a2:o6 c1:o6 c1:o6 c1:o6 c1:o6 c1:o6 c0:o6");
    assert_string_equal(json_string_value(json_object_get(o, "state")), "COMPENSATED");
    assert_int_equal(int_at(o, 1, "compensations"), 5);
    assert_int_equal(int_at(o, 0, "compensations"), 1);
    assert_string_equal(str_at(o, "steps", 1, "status"), "compensated");
    order_is("o6", "CANCELLED", "card declined");
    json_decref(o);
    close_all();
}

static void test_create_errors(void **state)
{
    (void)state;
    open_all();
    ag_db *db;
    assert_int_equal(ag_store_db(g_store, &db), 0);
    /* Outside a transaction. */
    assert_int_equal(ag_saga_create(g_engine, db, "checkout", "x", NULL), AG_ESTATE);
    create("o7");
    create_ctx c = {"o7", 0};
    /* The order insert fails first (same id): nothing commits. */
    assert_int_equal(ag_store_tx(g_store, create_tx, &c), AG_EEXISTS);
    json_t *o;
    assert_int_equal(ag_saga_get_json(g_engine, "nope", &o), AG_ENOTFOUND);
    assert_int_equal(ag_saga_register(g_engine, &g_def), AG_EEXISTS);
    close_all();
}

static int create_dup_tx(ag_db *db, void *ud)
{
    int *rc = ud;
    rc[0] = ag_saga_create(g_engine, db, "checkout", "d1", NULL);
    rc[1] = ag_saga_create(g_engine, db, "checkout", "d1", NULL);
    rc[2] = ag_saga_create(g_engine, db, "nosuch", "d2", NULL);
    rc[3] = ag_saga_create(g_engine, db, "checkout", "d3", json_array());
    return 0;
}

static void test_create_duplicate_and_unknown(void **state)
{
    (void)state;
    open_all();
    int rc[4];
    assert_int_equal(ag_store_tx(g_store, create_dup_tx, rc), 0);
    assert_int_equal(rc[0], 0);
    assert_int_equal(rc[1], AG_EEXISTS);
    assert_int_equal(rc[2], AG_ENOTFOUND);
    assert_int_equal(rc[3], AG_EINVAL);
    close_all();
}

/* A child process runs the sagas and dies inside the first step-1 action it
 * reaches; a new engine on the same file must finish every saga without
 * running again a step whose result was recorded. */
static void test_crash_mid_step_then_recovery(void **state)
{
    (void)state;
    const char *ids[] = {"c1", "c2", "c3"};
    open_all();
    for (int i = 0; i < 3; i++) create(ids[i]);
    close_all(); /* no thread and no connection cross the fork */

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(10);
        g_cfg.crash_in_step1 = true;
        open_all();
        ag_saga_engine_start(g_engine);
        for (;;) pause();
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    open_all();
    bool recorded0[3];
    int nrecorded = 0;
    for (int i = 0; i < 3; i++) {
        json_t *o;
        assert_int_equal(ag_saga_get_json(g_engine, ids[i], &o), 0);
        assert_string_equal(json_string_value(json_object_get(o, "state")), "RUNNING");
        recorded0[i] = strcmp(str_at(o, "steps", 0, "status"), "done") == 0;
        assert_string_equal(str_at(o, "steps", 1, "status"), "pending");
        assert_int_equal(int_at(o, 1, "attempts"), 0);
        nrecorded += recorded0[i];
        json_decref(o);
    }
    assert_true(nrecorded >= 1); /* the child got as far as a step 1 */

    assert_int_equal(ag_saga_engine_start(g_engine), 0);
    for (int i = 0; i < 3; i++) {
        json_t *o = wait_terminal(ids[i]);
        assert_string_equal(json_string_value(json_object_get(o, "state")), "COMPLETED");
        /* Step 0's data survived the crash where it was recorded. */
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(o, "data"), "step0")), ids[i]);
        assert_int_equal(int_at(o, 0, "attempts"), 1);
        json_decref(o);
        order_is(ids[i], "CONFIRMED", NULL);
    }
    assert_int_equal(g_action_calls[0], 3 - nrecorded);
    assert_int_equal(g_action_calls[1], 3);
    assert_int_equal(g_action_calls[2], 3);
    for (int i = 0; i < 3; i++) {
        char needle[16];
        snprintf(needle, sizeof needle, "a0:%s", ids[i]);
        assert_true((strstr(g_log, needle) != NULL) == !recorded0[i]);
    }
    close_all();
}

/* Stop lets an in-flight step finish and record; a new start resumes. */
static void test_stop_and_restart_resumes(void **state)
{
    (void)state;
    g_cfg.mode[1] = TRANSIENT; /* always: keeps the saga RUNNING with retries */
    open_all();
    create("s1");
    assert_int_equal(ag_saga_engine_start(g_engine), 0);
    for (int i = 0; i < 2500; i++) {
        pthread_mutex_lock(&g_mu);
        int n = g_action_calls[1];
        pthread_mutex_unlock(&g_mu);
        if (n >= 1) break;
        sleep_ms(2);
    }
    ag_saga_engine_stop(g_engine);
    json_t *o;
    assert_int_equal(ag_saga_get_json(g_engine, "s1", &o), 0);
    int attempts = int_at(o, 1, "attempts");
    assert_int_equal(attempts, g_action_calls[1]); /* every call was recorded */
    json_decref(o);
    g_cfg.mode[1] = OK;
    assert_int_equal(ag_saga_engine_start(g_engine), 0);
    o = wait_terminal("s1");
    const char *st = json_string_value(json_object_get(o, "state"));
    /* Either it had used all 3 attempts before the stop, or it completes. */
    assert_string_equal(st, attempts >= 3 ? "COMPENSATED" : "COMPLETED");
    json_decref(o);
    close_all();
}

/* A row of a definition this engine does not know (an older or newer
 * service) is set aside, not retried in a loop, and others still run. */
static void test_unknown_definition_is_parked(void **state)
{
    (void)state;
    open_all();
    ag_db *db;
    assert_int_equal(ag_store_db(g_store, &db), 0);
    assert_int_equal(ag_db_exec(db,
                                "INSERT INTO agora_sagas (id, definition, state, step, steps,"
                                " data, next_attempt_at, created_at, updated_at)"
                                " VALUES ('g1', 'gone', 'RUNNING', 0, '[]', '{}', 0, 0, 0)",
                                NULL, 0, NULL),
                     0);
    create("o8");
    assert_int_equal(ag_saga_engine_start(g_engine), 0);
    json_t *o = wait_terminal("o8");
    json_decref(o);
    ag_saga_engine_stop(g_engine);
    int64_t at = 0;
    assert_int_equal(ag_db_query_int(db, "SELECT next_attempt_at FROM agora_sagas WHERE id = 'g1'",
                                     NULL, 0, &at),
                     0);
    assert_true(at > 0); /* pushed into the future */
    assert_int_equal(ag_saga_get_json(g_engine, "g1", &o), 0);
    assert_string_equal(json_string_value(json_object_get(o, "state")), "RUNNING");
    json_decref(o);
    close_all();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_happy_path_and_json_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_permanent_failure_compensates_in_reverse, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_permanent_failure_at_first_step_compensates_nothing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_transient_failures_retried_then_compensated, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_transient_failures_then_success_completes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_compensation_retried_until_it_succeeds, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_create_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_duplicate_and_unknown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_mid_step_then_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_and_restart_resumes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_definition_is_parked, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
