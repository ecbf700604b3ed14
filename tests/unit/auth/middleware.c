/* Unit tests of src/lib/auth/middleware.c through in-process HTTP servers:
 * one verifying with the issuer's keyset, one with a JWKS client fetching
 * from the first (as every other service does), one whose JWKS cannot be
 * had. Anonymous requests go on, good tokens give the handler its caller,
 * bad ones get the 401 envelope with WWW-Authenticate, and role checks
 * answer 403 (admin passing every role). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>
#include <unistd.h>

#include "agora/agora.h"
#include "agora/auth.h"

static ag_loopset *g_loops;
static ag_pool *g_pool;
static ag_metrics *g_metrics;
static ag_http_client *g_http;
static ag_keyset *g_issuer;

typedef struct srv {
    ag_router *router;
    ag_http_server *server;
    ag_auth auth;
    char base[64];
} srv;

static srv g_keys_srv, g_jwks_srv, g_dead_srv;

/* {"caller":null} or {"caller":{"id","email","role","exp"}} */
static void r_whoami(ag_http_req *req, ag_http_res *res, void *ud)
{
    (void)ud;
    const ag_caller *c = ag_auth_caller(req);
    json_t *data = json_object();
    json_object_set_new(data, "caller",
                        c ? json_pack("{s:s, s:s, s:s, s:I}", "id", c->id, "email", c->email,
                                      "role", c->role, "exp", (json_int_t)c->exp)
                          : json_null());
    ag_res_ok(res, 200, data);
}

static void r_me(ag_http_req *req, ag_http_res *res, void *ud)
{
    (void)ud;
    const ag_caller *c = ag_auth_caller_required(req, res);
    if (c) ag_res_ok(res, 200, json_string(c->id));
}

/* The role to require is the route's user data. */
static void r_role(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *c = ag_auth_caller_role(req, res, ud);
    if (c) ag_res_ok(res, 200, json_string(c->role));
}

static void r_jwks(ag_http_req *req, ag_http_res *res, void *ud)
{
    (void)req, (void)ud;
    ag_res_json(res, 200, ag_keyset_jwks(g_issuer));
}

static int srv_up(srv *s)
{
    s->router = ag_router_new();
    if (ag_router_use(s->router, ag_auth_middleware, &s->auth) < 0 ||
        ag_router_add(s->router, "GET", "/whoami", r_whoami, NULL, 0) < 0 ||
        ag_router_add(s->router, "GET", "/me", r_me, NULL, 0) < 0 ||
        ag_router_add(s->router, "GET", "/admin", r_role, "admin", 0) < 0 ||
        ag_router_add(s->router, "GET", "/orders", r_role, "customer", 0) < 0 ||
        ag_router_add(s->router, "GET", "/jwks", r_jwks, NULL, 0) < 0)
        return -1;
    ag_http_server_opts o = {
        .host = "127.0.0.1",
        .router = s->router,
        .loops = g_loops,
        .pool = g_pool,
        .metrics = g_metrics,
    };
    ag_http_limits_default(&o.limits);
    if (ag_http_server_new(&o, &s->server) < 0 || ag_http_server_start(s->server) < 0) return -1;
    snprintf(s->base, sizeof s->base, "http://127.0.0.1:%d", ag_http_server_port(s->server));
    return 0;
}

static int srv_down(srv *s)
{
    int forced = ag_http_server_drain(s->server, 2000);
    ag_http_server_free(s->server);
    ag_router_free(s->router);
    ag_jwks_client_free(s->auth.jwks);
    return forced;
}

static int setup(void **state)
{
    (void)state;
    ag_log_setup("authtest", AG_LOG_OFF);
    if (ag_loopset_new(1, &g_loops) < 0 || ag_loopset_start(g_loops) < 0) return -1;
    if (ag_pool_new(4, 64, &g_pool) < 0) return -1;
    g_metrics = ag_metrics_new();
    if (ag_http_client_new(NULL, &g_http) < 0) return -1;
    if (ag_keyset_new(&g_issuer) < 0 || ag_keyset_generate(g_issuer, NULL) < 0) return -1;
    ag_jwt_policy policy = {.iss = "agora-users", .aud = "agora", .leeway_s = 5};

    g_keys_srv.auth = (ag_auth){.keys = g_issuer, .policy = policy};
    if (srv_up(&g_keys_srv) < 0) return -1;

    char url[128];
    snprintf(url, sizeof url, "%s/jwks", g_keys_srv.base);
    g_jwks_srv.auth.policy = policy;
    if (ag_jwks_client_new(url, g_http, 0, &g_jwks_srv.auth.jwks) < 0) return -1;
    if (srv_up(&g_jwks_srv) < 0) return -1;

    int fd = ag_listen_socket("127.0.0.1", 0, 1);
    if (fd < 0) return -1;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/jwks", ag_socket_port(fd));
    close(fd);
    g_dead_srv.auth.policy = policy;
    if (ag_jwks_client_new(url, g_http, 0, &g_dead_srv.auth.jwks) < 0) return -1;
    return srv_up(&g_dead_srv);
}

static int teardown(void **state)
{
    (void)state;
    int forced = srv_down(&g_jwks_srv) + srv_down(&g_dead_srv) + srv_down(&g_keys_srv);
    ag_http_client_free(g_http);
    ag_pool_free(g_pool);
    ag_loopset_free(g_loops);
    ag_metrics_free(g_metrics);
    ag_keyset_free(g_issuer);
    return forced ? -1 : 0;
}

/* ---- Helpers -------------------------------------------------------------- */

static char *token_for(const char *role, int64_t exp_in)
{
    ag_claims c;
    memset(&c, 0, sizeof c);
    snprintf(c.sub, sizeof c.sub, "user-%s", role);
    snprintf(c.email, sizeof c.email, "%s@example.com", role);
    snprintf(c.role, sizeof c.role, "%s", role);
    snprintf(c.iss, sizeof c.iss, "agora-users");
    snprintf(c.aud, sizeof c.aud, "agora");
    c.exp = (int64_t)(ag_wall_ms() / 1000) + exp_in;
    char *t = NULL;
    assert_int_equal(ag_jwt_sign(g_issuer, &c, &t), 0);
    return t;
}

typedef struct answer {
    int status;
    json_t *body;
    char www_auth[128];
} answer;

/* GETs `path` with an Authorization header (NULL: none) and optional extra
 * header. */
static answer get(const srv *s, const char *path, const char *authz, const char *extra)
{
    char url[160], h1[9000];
    snprintf(url, sizeof url, "%s%s", s->base, path);
    const char *headers[3] = {NULL, NULL, NULL};
    int n = 0;
    if (authz) {
        snprintf(h1, sizeof h1, "Authorization: %s", authz);
        headers[n++] = h1;
    }
    if (extra) headers[n++] = extra;
    ag_http_call call = {.url = url, .headers = headers};
    ag_http_reply rep;
    assert_int_equal(ag_http_client_do(g_http, &call, &rep), 0);
    answer a = {.status = rep.status};
    a.body = json_loadb(rep.body.data ? rep.body.data : "", rep.body.len, 0, NULL);
    if (ag_http_reply_header(&rep, "WWW-Authenticate", a.www_auth, sizeof a.www_auth) < 0)
        a.www_auth[0] = '\0';
    ag_http_reply_release(&rep);
    assert_non_null(a.body);
    return a;
}

static const char *error_code(const answer *a)
{
    return json_string_value(json_object_get(json_object_get(a->body, "error"), "code"));
}

static void assert_401(const srv *s, const char *path, const char *authz)
{
    answer a = get(s, path, authz, NULL);
    assert_int_equal(a.status, 401);
    assert_true(json_is_false(json_object_get(a.body, "success")));
    assert_string_equal(error_code(&a), "UNAUTHENTICATED");
    assert_true(json_is_string(json_object_get(a.body, "requestId")));
    assert_true(strncmp(a.www_auth, "Bearer", 6) == 0);
    json_decref(a.body);
}

static char *bearer(const char *tok)
{
    static char h[8500];
    snprintf(h, sizeof h, "Bearer %s", tok);
    return h;
}

/* ---- Tests --------------------------------------------------------------------- */

static void test_anonymous(void **state)
{
    (void)state;
    answer a = get(&g_keys_srv, "/whoami", NULL, NULL);
    assert_int_equal(a.status, 200);
    assert_true(json_is_null(json_object_get(json_object_get(a.body, "data"), "caller")));
    json_decref(a.body);
    /* Identity is never taken from another header. */
    a = get(&g_keys_srv, "/whoami", NULL, "X-User-Id: user-admin");
    assert_int_equal(a.status, 200);
    assert_true(json_is_null(json_object_get(json_object_get(a.body, "data"), "caller")));
    json_decref(a.body);
    a = get(&g_keys_srv, "/me", NULL, "X-Role: admin");
    assert_int_equal(a.status, 401);
    assert_string_equal(error_code(&a), "UNAUTHENTICATED");
    assert_string_equal(a.www_auth, "Bearer");
    json_decref(a.body);
    assert_401(&g_keys_srv, "/admin", NULL);
}

static void check_caller(const srv *s, const char *authz)
{
    answer a = get(s, "/whoami", authz, NULL);
    assert_int_equal(a.status, 200);
    json_t *c = json_object_get(json_object_get(a.body, "data"), "caller");
    assert_true(json_is_object(c));
    assert_string_equal(json_string_value(json_object_get(c, "id")), "user-customer");
    assert_string_equal(json_string_value(json_object_get(c, "email")), "customer@example.com");
    assert_string_equal(json_string_value(json_object_get(c, "role")), "customer");
    json_int_t exp = json_integer_value(json_object_get(c, "exp"));
    assert_true(exp > (json_int_t)(ag_wall_ms() / 1000) + 500);
    json_decref(a.body);
}

static void test_good_token(void **state)
{
    (void)state;
    char *t = token_for("customer", 600);
    check_caller(&g_keys_srv, bearer(t));
    /* The scheme is case-insensitive; extra spaces are tolerated. */
    char h[8600];
    snprintf(h, sizeof h, "bearer %s", t);
    check_caller(&g_keys_srv, h);
    snprintf(h, sizeof h, "BEARER   %s  ", t);
    check_caller(&g_keys_srv, h);
    answer a = get(&g_keys_srv, "/me", bearer(t), NULL);
    assert_int_equal(a.status, 200);
    assert_string_equal(json_string_value(json_object_get(a.body, "data")), "user-customer");
    json_decref(a.body);
    ag_free(t);
}

static void test_bad_tokens(void **state)
{
    (void)state;
    char *t = token_for("customer", 600);
    char *tampered = ag_strdup(t);
    char *s = strrchr(tampered, '.') + 1;
    s[0] = s[0] == 'A' ? 'B' : 'A';
    assert_401(&g_keys_srv, "/whoami", bearer(tampered));
    answer a = get(&g_keys_srv, "/whoami", bearer(tampered), NULL);
    assert_string_equal(a.www_auth, "Bearer error=\"invalid_token\"");
    /* The token is not echoed back. */
    char *text = json_dumps(a.body, 0);
    assert_null(strstr(text, tampered));
    free(text);
    json_decref(a.body);

    char *expired = token_for("customer", -60);
    assert_401(&g_keys_srv, "/whoami", bearer(expired));
    ag_keyset *other;
    assert_int_equal(ag_keyset_new(&other), 0);
    assert_int_equal(ag_keyset_generate(other, NULL), 0);
    ag_claims c;
    memset(&c, 0, sizeof c);
    snprintf(c.iss, sizeof c.iss, "agora-users");
    snprintf(c.aud, sizeof c.aud, "agora");
    c.exp = (int64_t)(ag_wall_ms() / 1000) + 60;
    char *foreign;
    assert_int_equal(ag_jwt_sign(other, &c, &foreign), 0);
    assert_401(&g_keys_srv, "/whoami", bearer(foreign));

    /* Headers that are not "Bearer <token>". */
    const char *malformed[] = {"Basic dXNlcjpwYXNz", "Bearer",    "Bearer ",        "Bearer a b",
                               "Bearertoken",        "Token abc", "Bearer \"abc\"", "Bearer a,b"};
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++)
        assert_401(&g_keys_srv, "/whoami", malformed[i]);
    char basic[128];
    snprintf(basic, sizeof basic, "Basic %s", "dXNlcjpwYXNz");
    a = get(&g_keys_srv, "/whoami", basic, NULL);
    assert_string_equal(a.www_auth, "Bearer error=\"invalid_request\"");
    json_decref(a.body);

    ag_keyset_free(other);
    ag_free(foreign);
    ag_free(expired);
    ag_free(tampered);
    ag_free(t);
}

static void test_roles(void **state)
{
    (void)state;
    char *customer = token_for("customer", 600), *admin = token_for("admin", 600),
         *service = token_for("service", 600);
    answer a = get(&g_keys_srv, "/admin", bearer(customer), NULL);
    assert_int_equal(a.status, 403);
    assert_string_equal(error_code(&a), "FORBIDDEN");
    assert_true(json_is_false(json_object_get(a.body, "success")));
    json_decref(a.body);

    struct {
        const char *path, *tok;
        int status;
    } cases[] = {
        {"/admin", admin, 200},    {"/orders", customer, 200}, {"/orders", admin, 200},
        {"/orders", service, 403}, {"/admin", service, 403},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        a = get(&g_keys_srv, cases[i].path, bearer(cases[i].tok), NULL);
        assert_int_equal(a.status, cases[i].status);
        json_decref(a.body);
    }
    ag_free(customer);
    ag_free(admin);
    ag_free(service);
}

/* The same through a service that knows the issuer only by its JWKS URL. */
static void test_via_jwks(void **state)
{
    (void)state;
    char *t = token_for("customer", 600);
    check_caller(&g_jwks_srv, bearer(t));
    char *tampered = ag_strdup(t);
    char *s = strrchr(tampered, '.') + 1;
    s[0] = s[0] == 'A' ? 'B' : 'A';
    assert_401(&g_jwks_srv, "/whoami", bearer(tampered));
    answer a = get(&g_jwks_srv, "/admin", bearer(t), NULL);
    assert_int_equal(a.status, 403);
    json_decref(a.body);

    /* An issuer that cannot be reached is not the client's fault: 503. */
    a = get(&g_dead_srv, "/whoami", bearer(t), NULL);
    assert_int_equal(a.status, 503);
    assert_true(json_is_false(json_object_get(a.body, "success")));
    json_decref(a.body);
    /* ...while anonymous requests there still go on. */
    a = get(&g_dead_srv, "/whoami", NULL, NULL);
    assert_int_equal(a.status, 200);
    json_decref(a.body);
    ag_free(tampered);
    ag_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_anonymous),  cmocka_unit_test(test_good_token),
        cmocka_unit_test(test_bad_tokens), cmocka_unit_test(test_roles),
        cmocka_unit_test(test_via_jwks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
