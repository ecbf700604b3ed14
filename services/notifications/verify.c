/*
 * verify.c — token checks for the push endpoints, off the loop.
 *
 * /v1/ws and /v1/stream run on the I/O loop (AG_ROUTE_ASYNC) and keep the
 * connection for hours; verifying a token may fetch agora-users' JWKS
 * (blocking), so it runs on the worker pool and the answer comes back to
 * the loop with ag_loop_post. The worker also records the caller in the
 * users projection when the service has not seen them (a user registered
 * before this service first consumed events, or on a broker that kept no
 * history), so that an admin who connected once is known as an admin.
 */
#include <string.h>
#include <strings.h>

#include "verify.h"

typedef struct verify_task {
    ag_loop *loop;
    char *token;
    nt_verify_done done;
    void *ud;
    int rc;
    ag_caller caller;
    char why[64];
} verify_task;

static void verify_back(void *arg)
{
    verify_task *t = arg;
    t->done(t->ud, t->rc, t->rc == 0 ? &t->caller : NULL, t->why);
    ag_free(t->token);
    ag_free(t);
}

static void verify_work(void *arg)
{
    verify_task *t = arg;
    ag_claims c;
    t->rc =
        ag_jwks_verify(g_nt.auth->jwks, t->token, &g_nt.auth->policy, &c, t->why, sizeof t->why);
    if (t->rc == AG_EUNAVAIL) snprintf(t->why, sizeof t->why, "cannot verify tokens right now");
    if (t->rc == 0) {
        snprintf(t->caller.id, sizeof t->caller.id, "%s", c.sub);
        snprintf(t->caller.email, sizeof t->caller.email, "%s", c.email);
        snprintf(t->caller.role, sizeof t->caller.role, "%s", c.role);
        t->caller.exp = c.exp;
        ag_db *db;
        if (ag_store_db(g_nt.store, &db) == 0) nt_user_learn(db, c.sub, c.email, c.role);
    }
    if (ag_loop_post(t->loop, verify_back, t) < 0) {
        ag_free(t->token);
        ag_free(t);
    }
}

int nt_verify_submit(ag_loop *loop, const char *token, nt_verify_done done, void *ud)
{
    verify_task *t = ag_calloc(1, sizeof *t);
    t->loop = loop;
    t->token = ag_strdup(token);
    t->done = done;
    t->ud = ud;
    int rc = ag_pool_submit(ag_service_pool(g_nt.svc), verify_work, t);
    if (rc < 0) {
        ag_free(t->token);
        ag_free(t);
    }
    return rc;
}

const char *nt_bearer(const char *header)
{
    if (!header) return NULL;
    while (*header == ' ' || *header == '\t')
        header++;
    if (strncasecmp(header, "Bearer", 6) != 0 || (header[6] != ' ' && header[6] != '\t'))
        return NULL;
    header += 6;
    while (*header == ' ' || *header == '\t')
        header++;
    return *header ? header : NULL;
}

bool nt_token_ok(const char *t)
{
    size_t n = 0;
    for (; t[n]; n++) {
        char ch = t[n];
        bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                  (ch >= '0' && ch <= '9') || strchr("-._~+/=", ch);
        if (!ok) return false;
    }
    return n > 0 && n <= 8192;
}
