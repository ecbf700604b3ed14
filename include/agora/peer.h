/*
 * peer.h — what a service needs to verify its callers and to call the
 * services it depends on, declared once instead of in every main.c.
 *
 *   ag_auth *auth;
 *   ag_peer *rooms;
 *   if (ag_service_use_auth(svc, 0, &auth) < 0 ||
 *       ag_service_peer(svc, "rooms", "http://127.0.0.1:7011", &rooms) < 0) return 2;
 *   ...
 *   ag_peer_reply rep;
 *   if (ag_peer_call(rooms, "GET", "/v1/rooms/r1/members/u1", NULL,
 *                    ag_req_header(req, "Authorization"), ag_req_deadline(req),
 *                    ag_req_id(req), &rep) == 0 && rep.status == 200) ...
 *   ag_peer_reply_clear(&rep);
 *
 * ag_service_use_auth reads AGORA_JWKS_URL (default agora-users' JWKS at
 * http://127.0.0.1:7001/.well-known/jwks.json), AGORA_JWT_ISSUER
 * (agora-users), AGORA_JWT_AUDIENCE (agora) and AGORA_JWT_LEEWAY (30s),
 * makes the JWKS client (cached keys, one refresh on an unknown kid) and,
 * unless AG_AUTH_NO_MIDDLEWARE, installs ag_auth_middleware on the
 * service's router. The service owns both.
 *
 * ag_service_peer makes a peer: its base URL from AGORA_<NAME>_URL (default
 * `default_url`), its instances from the registry when AGORA_REGISTRY is a
 * URL (watched; balanced and ejected by agora/discovery.h), a circuit
 * breaker named after it from ag_breaker_opts_from_env. Every call carries
 * the caller's deadline (X-Agora-Deadline-Ms) and request id. A 5xx, a
 * timeout or a connection error counts against the breaker and the
 * instance; any other answer is the peer working.
 *
 * Identity on a call: `auth` is an Authorization value to pass on (the
 * customer's own "Bearer ..."); NULL sends this service's own token, a
 * "service" role token from agora-users' client credentials
 * (POST /v1/auth/token with AGORA_CLIENT_ID, default the service's name,
 * and AGORA_CLIENT_SECRET), fetched on first use, renewed a minute before it
 * expires and once when a peer answers 401; "" sends none.
 */
#ifndef AGORA_PEER_H
#define AGORA_PEER_H

#include "agora/auth.h"
#include "agora/clock.h"
#include "agora/http_client.h"
#include "agora/resilience.h"
#include "agora/service.h"

enum { AG_AUTH_NO_MIDDLEWARE = 1 };

/* The JWKS verifier from the environment (see above); *out is borrowed for
 * the service's life. AG_ECONFIG on a bad variable (logged). */
int ag_service_use_auth(ag_service *svc, unsigned flags, ag_auth **out);

/* The service's HTTP client (agora/http_client.h), made on first use and
 * freed with the service. Thread-safe. */
ag_http_client *ag_service_http(ag_service *svc);

/* Breaker settings from AGORA_BREAKER_OPEN (first open wait, 5s),
 * AGORA_BREAKER_MAX_OPEN (60s), AGORA_BREAKER_WINDOW (20 calls),
 * AGORA_BREAKER_MIN_CALLS (5), AGORA_BREAKER_PROBES (3); each may be given
 * per service (AGORA_CART_BREAKER_OPEN). AG_ECONFIG on a bad value. */
int ag_breaker_opts_from_env(ag_breaker_opts *o, ag_metrics *m);
/* The same with another default for AGORA_BREAKER_MIN_CALLS. */
int ag_breaker_opts_from_env_min(ag_breaker_opts *o, ag_metrics *m, int min_calls_default);

typedef struct ag_peer ag_peer;

/* A peer named `name` (lower case: "rooms"); see above. The service owns
 * it and frees it after its pool stopped. */
int ag_service_peer(ag_service *svc, const char *name, const char *default_url, ag_peer **out);
/* The same with the breaker's settings given (`o` NULL: from the
 * environment): a service whose peers want other defaults reads them with
 * ag_breaker_opts_from_env and changes what it must. */
int ag_service_peer_with(ag_service *svc, const char *name, const char *default_url,
                         const ag_breaker_opts *o, ag_peer **out);
const char *ag_peer_name(const ag_peer *p);
ag_breaker *ag_peer_breaker(ag_peer *p);

typedef struct ag_peer_reply {
    int status;    /* the HTTP status */
    json_t *doc;   /* the parsed body, or NULL (not JSON, empty) */
    char code[64]; /* error.code of an error envelope, or "" */
} ag_peer_reply;

/* Calls the peer (blocking: worker threads and the bus thread only). 0 with
 * *rep filled (any status); AG_EUNAVAIL when its breaker is open,
 * AG_ETIMEDOUT past the deadline, another negative AG_E* code when no answer
 * came (nothing to clear then). `body` is borrowed (NULL: none). */
int ag_peer_call(ag_peer *p, const char *method, const char *path, json_t *body, const char *auth,
                 ag_deadline deadline, const char *request_id, ag_peer_reply *rep);
void ag_peer_reply_clear(ag_peer_reply *rep);

/* A unary gRPC call to the peer (agora/grpc.h), blocking like
 * ag_peer_call, with the same breaker, identity (`auth` a full
 * "Bearer ..." value; NULL: this service's token, renewed once on
 * UNAUTHENTICATED) and deadline. Where: AGORA_<NAME>_GRPC_URL, or the
 * picked instance's (or AGORA_<NAME>_URL's) host with its port + 100;
 * "off" never calls. 0 with *rep (any grpc-status: clear it); AG_EDEADLINE
 * past the deadline; AG_EUNAVAIL when the breaker is open, gRPC is off,
 * no gRPC answer came or the peer answered UNIMPLEMENTED (it does not serve
 * the method): the caller then uses the peer's HTTP API, and no
 * gRPC call is tried for 5 s after a missing answer. UNAVAILABLE,
 * INTERNAL, UNKNOWN and DEADLINE_EXCEEDED answers count against the
 * breaker. */
int ag_peer_grpc(ag_peer *p, const char *path, const void *req, size_t len, const char *auth,
                 ag_deadline deadline, ag_grpc_answer *rep);

#endif
