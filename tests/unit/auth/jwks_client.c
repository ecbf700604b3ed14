/* Unit tests of src/lib/auth/jwks_client.c against an in-process HTTP server
 * that publishes an issuer's JWKS: lazy first fetch and caching, one fetch
 * for many concurrent first verifications, refresh on a rotated-in kid and
 * its rate limit (this test waits out AG_JWKS_MIN_REFRESH_MS once), TTL
 * expiry dropping keys the issuer removed, and failures: stale keys kept,
 * AG_EUNAVAIL with none. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "agora/agora.h"
#include "agora/auth.h"

static ag_loopset *g_loops;
static ag_pool *g_pool;
static ag_router *g_router;
static ag_metrics *g_metrics;
static ag_http_server *g_server;
static ag_http_client *g_http;
static ag_keyset *g_issuer;
static char g_url[96];
static atomic_int g_fetches;
static atomic_int g_mode; /* 0: serve the JWKS; 1: 500; 2: not JSON; 3: not a JWKS */

static void r_jwks(ag_http_req *req, ag_http_res *res, void *ud)
{
    (void)req, (void)ud;
    atomic_fetch_add(&g_fetches, 1);
    switch (atomic_load(&g_mode)) {
    case 1:
        ag_res_error(res, 500, "INTERNAL", "down for the test", NULL);
        break;
    case 2:
        ag_res_body(res, 200, "application/json", "<html>", 6);
        break;
    case 3:
        ag_res_body(res, 200, "application/json", "[1,2]", 5);
        break;
    default:
        ag_res_json(res, 200, ag_keyset_jwks(g_issuer));
        break;
    }
}

static int server_up(void **state)
{
    (void)state;
    ag_log_setup("authtest", AG_LOG_OFF);
    if (ag_loopset_new(1, &g_loops) < 0 || ag_loopset_start(g_loops) < 0) return -1;
    if (ag_pool_new(4, 64, &g_pool) < 0) return -1;
    g_router = ag_router_new();
    g_metrics = ag_metrics_new();
    if (ag_router_add(g_router, "GET", "/.well-known/jwks.json", r_jwks, NULL, 0) < 0) return -1;
    ag_http_server_opts o = {
        .host = "127.0.0.1",
        .router = g_router,
        .loops = g_loops,
        .pool = g_pool,
        .metrics = g_metrics,
    };
    ag_http_limits_default(&o.limits);
    if (ag_http_server_new(&o, &g_server) < 0 || ag_http_server_start(g_server) < 0) return -1;
    snprintf(g_url, sizeof g_url, "http://127.0.0.1:%d/.well-known/jwks.json",
             ag_http_server_port(g_server));
    if (ag_http_client_new(NULL, &g_http) < 0) return -1;
    if (ag_keyset_new(&g_issuer) < 0 || ag_keyset_generate(g_issuer, NULL) < 0) return -1;
    return 0;
}

static int server_down(void **state)
{
    (void)state;
    int forced = ag_http_server_drain(g_server, 2000);
    ag_http_server_free(g_server);
    ag_http_client_free(g_http);
    ag_pool_free(g_pool);
    ag_loopset_free(g_loops);
    ag_router_free(g_router);
    ag_metrics_free(g_metrics);
    ag_keyset_free(g_issuer);
    return forced < 0 ? -1 : 0;
}

static int reset(void **state)
{
    (void)state;
    atomic_store(&g_fetches, 0);
    atomic_store(&g_mode, 0);
    return 0;
}

static char *token(void)
{
    ag_claims c;
    memset(&c, 0, sizeof c);
    snprintf(c.sub, sizeof c.sub, "u-7");
    snprintf(c.role, sizeof c.role, "customer");
    snprintf(c.iss, sizeof c.iss, "agora-users");
    c.exp = (int64_t)(ag_wall_ms() / 1000) + 600;
    char *t = NULL;
    assert_int_equal(ag_jwt_sign(g_issuer, &c, &t), 0);
    return t;
}

static const ag_jwt_policy POLICY = {.iss = "agora-users"};

static int verify(ag_jwks_client *c, const char *tok, char *why)
{
    ag_claims out;
    memset(&out, 0, sizeof out);
    int rc = ag_jwks_verify(c, tok, &POLICY, &out, why, 32);
    if (rc == 0) assert_string_equal(out.sub, "u-7");
    return rc;
}

static ag_jwks_client *client(uint64_t ttl_ms)
{
    ag_jwks_client *c = NULL;
    assert_int_equal(ag_jwks_client_new(g_url, g_http, ttl_ms, &c), 0);
    return c;
}

static void test_lazy_fetch_and_cache(void **state)
{
    (void)state;
    ag_jwks_client *bad;
    assert_int_equal(ag_jwks_client_new("", g_http, 0, &bad), AG_EINVAL);
    assert_int_equal(ag_jwks_client_new(g_url, NULL, 0, &bad), AG_EINVAL);

    ag_jwks_client *c = client(0);
    assert_int_equal(atomic_load(&g_fetches), 0); /* nothing until first use */
    char *t = token(), why[32];
    for (int i = 0; i < 5; i++)
        assert_int_equal(verify(c, t, why), 0);
    assert_int_equal(atomic_load(&g_fetches), 1);
    /* Refusals are the keyset's: a tampered token is a bad signature and
     * does not cause a fetch. */
    char *s = strrchr(t, '.') + 1;
    s[0] = s[0] == 'A' ? 'B' : 'A';
    assert_int_equal(verify(c, t, why), AG_EAUTH);
    assert_string_equal(why, "bad signature");
    assert_int_equal(verify(c, "garbage", why), AG_EAUTH);
    assert_string_equal(why, "malformed");
    assert_int_equal(atomic_load(&g_fetches), 1);
    ag_free(t);
    ag_jwks_client_free(c);
    ag_jwks_client_free(NULL);
}

typedef struct racer {
    ag_jwks_client *c;
    const char *tok;
    int rc;
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    char why[32];
    r->rc = ag_jwks_verify(r->c, r->tok, &POLICY, NULL, why, sizeof why);
    return NULL;
}

/* Eight threads verifying at once through a cold client cause one fetch. */
static void test_one_fetch_for_concurrent_first_use(void **state)
{
    (void)state;
    ag_jwks_client *c = client(0);
    char *t = token();
    pthread_t th[8];
    racer r[8];
    for (int i = 0; i < 8; i++) {
        r[i] = (racer){.c = c, .tok = t, .rc = -1};
        assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(r[i].rc, 0);
    }
    assert_int_equal(atomic_load(&g_fetches), 1);
    ag_free(t);
    ag_jwks_client_free(c);
}

/* After a rotation the new kid is fetched, but at most once per
 * AG_JWKS_MIN_REFRESH_MS: this test sleeps that long once. */
static void test_refresh_on_new_kid_rate_limited(void **state)
{
    (void)state;
    ag_jwks_client *c = client(0);
    char *old_tok = token(), why[32];
    assert_int_equal(verify(c, old_tok, why), 0);
    assert_int_equal(atomic_load(&g_fetches), 1);

    char kid2[AG_KID_MAX];
    assert_int_equal(ag_keyset_generate(g_issuer, kid2), 0);
    char *new_tok = token();
    /* Too soon after the first fetch: unknown, and no request made. */
    assert_int_equal(verify(c, new_tok, why), AG_ENOTFOUND);
    assert_string_equal(why, "unknown key");
    assert_int_equal(atomic_load(&g_fetches), 1);

    usleep((AG_JWKS_MIN_REFRESH_MS + 200) * 1000);
    assert_int_equal(verify(c, new_tok, why), 0);
    assert_int_equal(atomic_load(&g_fetches), 2);
    assert_int_equal(verify(c, old_tok, why), 0); /* old kid still published */

    /* Another rotation straight away, and a flood of tokens naming it:
     * still no new request within the interval. */
    assert_int_equal(ag_keyset_generate(g_issuer, NULL), 0);
    char *third = token();
    for (int i = 0; i < 20; i++)
        assert_int_equal(verify(c, third, why), AG_ENOTFOUND);
    assert_int_equal(atomic_load(&g_fetches), 2);
    assert_int_equal(verify(c, new_tok, why), 0);
    ag_free(old_tok);
    ag_free(new_tok);
    ag_free(third);
    ag_jwks_client_free(c);
}

/* Past the TTL the keys are fetched again, and keys the issuer dropped go. */
static void test_ttl_refresh_drops_removed(void **state)
{
    (void)state;
    char old_kid[AG_KID_MAX];
    /* The issuer's current signing kid: sign, then rotate and remove it. */
    assert_int_equal(ag_keyset_generate(g_issuer, old_kid), 0);
    ag_jwks_client *c = client(300);
    char *old_tok = token(), why[32];
    assert_int_equal(verify(c, old_tok, why), 0);
    assert_int_equal(atomic_load(&g_fetches), 1);
    assert_int_equal(ag_keyset_generate(g_issuer, NULL), 0);
    assert_int_equal(ag_keyset_remove(g_issuer, old_kid), 0);
    assert_int_equal(verify(c, old_tok, why), 0); /* still cached */
    usleep(400 * 1000);
    assert_int_equal(verify(c, old_tok, why), AG_ENOTFOUND);
    assert_int_equal(atomic_load(&g_fetches), 2);
    char *new_tok = token();
    assert_int_equal(verify(c, new_tok, why), 0);
    assert_int_equal(atomic_load(&g_fetches), 2);
    ag_free(old_tok);
    ag_free(new_tok);
    ag_jwks_client_free(c);
}

/* With keys cached, a failing issuer is survived; without, AG_EUNAVAIL. */
static void test_fetch_failures(void **state)
{
    (void)state;
    char why[32];
    char *t = token();
    ag_jwks_client *c = client(200);
    assert_int_equal(verify(c, t, why), 0);
    for (int mode = 1; mode <= 3; mode++) {
        atomic_store(&g_mode, mode);
        int before = atomic_load(&g_fetches);
        usleep(300 * 1000);
        assert_int_equal(verify(c, t, why), 0); /* stale keys kept */
        assert_int_equal(atomic_load(&g_fetches), before + 1);
        /* The failed attempt counts against the interval. */
        assert_int_equal(verify(c, t, why), 0);
        assert_int_equal(atomic_load(&g_fetches), before + 1);
    }
    ag_jwks_client_free(c);

    for (int mode = 1; mode <= 3; mode++) {
        atomic_store(&g_mode, mode);
        c = client(0);
        assert_int_equal(verify(c, t, why), AG_EUNAVAIL);
        /* Retried at most once a second while there are no keys. */
        int before = atomic_load(&g_fetches);
        assert_int_equal(verify(c, t, why), AG_EUNAVAIL);
        assert_int_equal(atomic_load(&g_fetches), before);
        atomic_store(&g_mode, 0);
        usleep(1100 * 1000);
        assert_int_equal(verify(c, t, why), 0);
        ag_jwks_client_free(c);
    }

    /* Nothing listening at all. */
    int fd = ag_listen_socket("127.0.0.1", 0, 1);
    assert_true(fd >= 0);
    char dead[96];
    snprintf(dead, sizeof dead, "http://127.0.0.1:%d/jwks", ag_socket_port(fd));
    close(fd);
    assert_int_equal(ag_jwks_client_new(dead, g_http, 0, &c), 0);
    assert_int_equal(ag_jwks_verify(c, t, &POLICY, NULL, why, sizeof why), AG_EUNAVAIL);
    ag_jwks_client_free(c);
    ag_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_lazy_fetch_and_cache, reset),
        cmocka_unit_test_setup(test_one_fetch_for_concurrent_first_use, reset),
        cmocka_unit_test_setup(test_refresh_on_new_kid_rate_limited, reset),
        cmocka_unit_test_setup(test_ttl_refresh_drops_removed, reset),
        cmocka_unit_test_setup(test_fetch_failures, reset),
    };
    return cmocka_run_group_tests(tests, server_up, server_down);
}
