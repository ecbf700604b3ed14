/*
 * auth.c — who calls a gRPC method (agora/grpc.h): the bearer token of the
 * authorization metadata, verified as ag_auth_middleware verifies HTTP
 * requests (the service's keys, or agora-users' JWKS).
 */
#include <string.h>

#include "agora/agora.h"
#include "agora/auth.h"
#include "agora/grpc.h"

int ag_grpc_auth(ag_grpc_call *c, const ag_auth *auth, ag_claims *out)
{
    const char *token = ag_grpc_bearer(c);
    if (!token) return 0;
    char why[128] = "";
    int rc = auth->keys ? ag_jwt_verify(auth->keys, token, &auth->policy, out, why, sizeof why)
                        : ag_jwks_verify(auth->jwks, token, &auth->policy, out, why, sizeof why);
    if (rc < 0) {
        ag_grpc_fail(c, AG_GRPC_UNAUTHENTICATED, "the bearer token is not valid: %s",
                     why[0] ? why : ag_strerror(rc));
        return -1;
    }
    return 1;
}

bool ag_grpc_require_role(ag_grpc_call *c, const ag_auth *auth, const char *role, ag_claims *out)
{
    int who = ag_grpc_auth(c, auth, out);
    if (who < 0) return false;
    if (who == 0) {
        ag_grpc_fail(c, AG_GRPC_UNAUTHENTICATED, "a bearer token is required");
        return false;
    }
    if (strcmp(out->role, role) != 0 && strcmp(out->role, "admin") != 0) {
        ag_grpc_fail(c, AG_GRPC_PERMISSION_DENIED, "only a caller with role %s may do this", role);
        return false;
    }
    return true;
}
