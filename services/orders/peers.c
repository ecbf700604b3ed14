/*
 * peers.c — agora-orders' calls to the services it depends on.
 *
 * One function, peer_call, for every call: an instance from the registry
 * when there is one (balanced and ejected by libagora's discovery), else the
 * configured AGORA_<PEER>_URL; the peer's circuit breaker around it; the
 * deadline sent along (X-Agora-Deadline-Ms, by the HTTP client); the request
 * id. A 5xx, a timeout or a connection error counts against the breaker;
 * any other answer is the peer working.
 *
 * Identity: calls made for a customer (catalog prices, the cart) carry the
 * customer's own bearer token; the saga's calls to inventory and payments
 * carry this service's token, a "service" role token obtained from
 * agora-users with client credentials (POST /v1/auth/token;
 * AGORA_CLIENT_ID / AGORA_CLIENT_SECRET) and renewed a minute before it
 * expires or when a peer answers 401.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "orders.h"

static const char *const k_names[PEER_COUNT] = {"catalog", "cart", "inventory", "payments",
                                                "users"};

const char *peer_name(ord_peer p)
{
    return k_names[p];
}

void peer_reply_clear(peer_reply *rep)
{
    json_decref(rep->doc);
    memset(rep, 0, sizeof *rep);
}

/* ---- The service token --------------------------------------------------------------------- */

static pthread_mutex_t g_tok_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_token[4096];
static uint64_t g_token_until_ms; /* wall clock; 0: none */

static int raw_call(ord_peer peer, const char *method, const char *path, const char *body,
                    const char *auth, ag_deadline deadline, const char *request_id,
                    peer_reply *rep);

static int fetch_token(void)
{
    if (!g_ord.client_secret || !*g_ord.client_secret) {
        ag_error("no service credentials: set AGORA_CLIENT_SECRET (and agora-users' "
                 "AGORA_SERVICE_CLIENTS)");
        return AG_ECONFIG;
    }
    json_t *req = json_pack("{s:s, s:s}", "clientId", g_ord.client_id, "clientSecret",
                            g_ord.client_secret);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    peer_reply rep;
    int rc = raw_call(PEER_USERS, "POST", "/v1/auth/token", body, "", ag_deadline_in(5000), NULL,
                      &rep);
    sodium_memzero(body, strlen(body));
    free(body);
    if (rc < 0) return rc;
    json_t *d = json_object_get(rep.doc, "data");
    const char *tok = json_string_value(json_object_get(d, "token"));
    json_int_t ttl = json_integer_value(json_object_get(d, "expiresIn"));
    if (rep.status != 200 || !tok || strlen(tok) >= sizeof g_token - 8) {
        ag_error("agora-users refused this service's credentials", AG_FI("status", rep.status),
                 AG_FS("code", rep.code));
        int status = rep.status;
        peer_reply_clear(&rep);
        return status >= 500 ? AG_EUNAVAIL : AG_EAUTH;
    }
    snprintf(g_token, sizeof g_token, "Bearer %.4080s", tok);
    uint64_t life = ttl > 120 ? (uint64_t)(ttl - 60) * 1000 : (uint64_t)(ttl > 0 ? ttl : 1) * 500;
    g_token_until_ms = ag_wall_ms() + life;
    peer_reply_clear(&rep);
    return 0;
}

/* Copies the current service token ("Bearer ...") into out. */
static int service_token(char *out, size_t n, bool renew)
{
    pthread_mutex_lock(&g_tok_mu);
    int rc = 0;
    if (renew || g_token_until_ms == 0 || ag_wall_ms() >= g_token_until_ms) rc = fetch_token();
    if (rc == 0) snprintf(out, n, "%s", g_token);
    pthread_mutex_unlock(&g_tok_mu);
    return rc;
}

/* ---- Calls ------------------------------------------------------------------------------------ */

static int raw_call(ord_peer peer, const char *method, const char *path, const char *body,
                    const char *auth, ag_deadline deadline, const char *request_id,
                    peer_reply *rep)
{
    memset(rep, 0, sizeof *rep);
    ag_instance inst;
    bool picked = g_ord.disc && ag_discovery_pick(g_ord.disc, k_names[peer], &inst) == 0;
    char base[160], url[512], auth_h[4200];
    if (picked)
        ag_instance_url(&inst, base, sizeof base);
    else
        snprintf(base, sizeof base, "%s", g_ord.peer_url[peer]);
    snprintf(url, sizeof url, "%s%s", base, path);
    const char *headers[2] = {NULL, NULL};
    if (auth && *auth) {
        snprintf(auth_h, sizeof auth_h, "Authorization: %s", auth);
        headers[0] = auth_h;
    }
    ag_http_call call = {
        .method = method,
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = body ? strlen(body) : 0,
        .deadline = deadline,
        .request_id = request_id,
    };
    ag_http_reply hr;
    memset(&hr, 0, sizeof hr);
    int rc = ag_http_client_do(g_ord.http, &call, &hr);
    if (picked)
        ag_discovery_release(g_ord.disc, &inst,
                             rc < 0 || hr.status >= 502 ? AG_CALL_FAILED : AG_CALL_OK);
    if (rc < 0) return rc;
    rep->status = hr.status;
    if (hr.body.len) rep->doc = json_loadb(hr.body.data, hr.body.len, 0, NULL);
    const char *code = json_string_value(json_object_get(json_object_get(rep->doc, "error"), "code"));
    if (code) snprintf(rep->code, sizeof rep->code, "%s", code);
    ag_http_reply_release(&hr);
    return 0;
}

int peer_call(ord_peer peer, const char *method, const char *path, json_t *body,
              const char *auth, ag_deadline deadline, const char *request_id, peer_reply *rep)
{
    memset(rep, 0, sizeof *rep);
    ag_breaker_ticket t;
    int rc = ag_breaker_acquire(g_ord.breaker[peer], &t);
    if (rc < 0) return AG_EUNAVAIL;
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    char token[4200];
    bool own = !auth;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (own && (rc = service_token(token, sizeof token, attempt > 0)) < 0) break;
        rc = raw_call(peer, method, path, text, own ? token : auth, deadline, request_id, rep);
        if (rc < 0 || rep->status != 401 || !own || attempt > 0) break;
        peer_reply_clear(rep); /* our token expired or the keys rotated: renew once */
    }
    if (text) {
        sodium_memzero(text, strlen(text)); /* it may hold a card number */
        free(text);
    }
    bool ok = rc == 0 && rep->status < 500;
    ag_breaker_release(g_ord.breaker[peer], &t, ok);
    if (rc < 0)
        ag_warn("call failed", AG_FS("peer", k_names[peer]), AG_FS("path", path), AG_FERR(rc));
    return rc;
}
