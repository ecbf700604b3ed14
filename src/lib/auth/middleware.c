/*
 * middleware.c — the caller of an HTTP request, from its bearer token.
 *
 * The middleware reads only "Authorization: Bearer <token>" (RFC 6750 §2.1;
 * the scheme is case-insensitive). No header: the request goes on anonymous,
 * and handlers that need a caller say so with ag_auth_caller_required or
 * ag_auth_caller_role. A header that is there but wrong (another scheme, no
 * token, a token that fails verification) is answered 401 at once, so a
 * client never believes it was authenticated when it was not.
 *
 * The caller lives in the request's arena and is found again through
 * ag_req_local under the address of a private static, which no other
 * module can name: identity cannot be planted by other middleware by
 * accident, nor taken from any other header.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "agora/auth.h"
#include "agora/error.h"
#include "agora/log.h"
#include "agora/mem.h"
#include "auth/internal.h"

static const char g_caller_key = 0; /* its address is the ag_req_local key */

static void unauthenticated(ag_http_res *res, const char *challenge, const char *message)
{
    ag_res_header(res, "WWW-Authenticate", challenge);
    ag_res_error(res, 401, "UNAUTHENTICATED", message, NULL);
}

/* The token of a "Bearer <token>" value, or NULL. The token is one run of
 * token68 characters (RFC 7235 §2.1), optionally followed by spaces. */
static const char *bearer_token(const char *h, size_t *len)
{
    while (*h == ' ' || *h == '\t')
        h++;
    if (strncasecmp(h, "Bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\t')) return NULL;
    h += 6;
    while (*h == ' ' || *h == '\t')
        h++;
    size_t n = 0;
    while (h[n] && h[n] != ' ' && h[n] != '\t') {
        char ch = h[n];
        bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                  (ch >= '0' && ch <= '9') || strchr("-._~+/=", ch);
        if (!ok) return NULL;
        n++;
    }
    for (size_t i = n; h[i]; i++)
        if (h[i] != ' ' && h[i] != '\t') return NULL;
    if (n == 0) return NULL;
    *len = n;
    return h;
}

int ag_auth_middleware(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_auth *a = ud;
    const char *h = ag_req_header(req, "Authorization");
    if (!h) return AG_NEXT;
    size_t n = 0;
    const char *tok = bearer_token(h, &n);
    if (!tok) {
        unauthenticated(res, "Bearer error=\"invalid_request\"",
                        "the Authorization header must be \"Bearer <token>\"");
        return AG_STOP;
    }
    char *token = ag_arena_strndup(ag_req_arena(req), tok, n);
    ag_claims c;
    char why[32];
    int rc;
    if (a && a->jwks)
        rc = ag_jwks_verify(a->jwks, token, &a->policy, &c, why, sizeof why);
    else if (a && a->keys)
        rc = ag_jwt_verify(a->keys, token, &a->policy, &c, why, sizeof why);
    else
        rc = AG_ESTATE;
    if (rc == AG_EUNAVAIL) {
        /* Not the client's fault: the issuer's keys cannot be had. */
        ag_res_error(res, 503, "UNAVAILABLE", "cannot verify tokens right now", NULL);
        return AG_STOP;
    }
    if (rc == AG_ESTATE || rc == AG_EINVAL) {
        ag_error("auth middleware has neither keys nor a JWKS client",
                 AG_FS("requestId", ag_req_id(req)));
        ag_res_error(res, 500, "INTERNAL", "internal error", NULL);
        return AG_STOP;
    }
    if (rc < 0) {
        /* The reason only, never the token. */
        ag_debug("token refused", AG_FS("reason", why), AG_FS("requestId", ag_req_id(req)));
        char msg[64];
        snprintf(msg, sizeof msg, "invalid token (%s)", why[0] ? why : "refused");
        unauthenticated(res, "Bearer error=\"invalid_token\"", msg);
        return AG_STOP;
    }
    ag_caller *caller = ag_arena_calloc(ag_req_arena(req), sizeof *caller);
    _Static_assert(sizeof caller->id == sizeof c.sub, "caller id holds sub");
    _Static_assert(sizeof caller->email == sizeof c.email, "caller email holds email");
    _Static_assert(sizeof caller->role == sizeof c.role, "caller role holds role");
    memcpy(caller->id, c.sub, sizeof caller->id);
    memcpy(caller->email, c.email, sizeof caller->email);
    memcpy(caller->role, c.role, sizeof caller->role);
    caller->exp = c.exp;
    ag_req_set_local(req, &g_caller_key, caller);
    return AG_NEXT;
}

const ag_caller *ag_auth_caller(const ag_http_req *req)
{
    return req ? ag_req_local(req, &g_caller_key) : NULL;
}

const ag_caller *ag_auth_caller_required(ag_http_req *req, ag_http_res *res)
{
    const ag_caller *c = ag_auth_caller(req);
    if (!c) unauthenticated(res, "Bearer", "authentication required");
    return c;
}

const ag_caller *ag_auth_caller_role(ag_http_req *req, ag_http_res *res, const char *role)
{
    const ag_caller *c = ag_auth_caller_required(req, res);
    if (!c) return NULL;
    if (strcmp(c->role, "admin") == 0 || (role && strcmp(c->role, role) == 0)) return c;
    ag_res_error(res, 403, "FORBIDDEN", "not allowed for this role", NULL);
    return NULL;
}
