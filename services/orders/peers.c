/*
 * peers.c — agora-orders' calls to the services it depends on, on
 * libagora's peers (agora/peer.h): an instance from the registry when there
 * is one, else AGORA_<PEER>_URL; the peer's circuit breaker; the deadline
 * (X-Agora-Deadline-Ms) and the request id.
 *
 * Identity: calls made for a customer (catalog prices, the cart) carry the
 * customer's own bearer token; the saga's calls to inventory and payments
 * carry this service's token (auth NULL): a "service" role token from
 * agora-users' client credentials (AGORA_CLIENT_ID, default "orders", and
 * AGORA_CLIENT_SECRET), renewed before it expires or when a peer answers 401.
 */
#include <string.h>

#include "orders.h"

static const char *const k_names[PEER_COUNT] = {"catalog", "cart", "inventory", "payments",
                                                "users"};
static const int k_default_port[PEER_COUNT] = {7002, 7007, 7004, 7005, 7001};
static ag_peer *g_peers[PEER_COUNT];

const char *peer_name(ord_peer p)
{
    return k_names[p];
}

int peers_open(ag_service *svc)
{
    /* Orders' breakers judge after 10 calls (a saga retries; one slow
     * moment of a peer should not open it). */
    ag_breaker_opts o;
    if (ag_breaker_opts_from_env_min(&o, ag_service_metrics(svc), 10) < 0) return AG_ECONFIG;
    for (int p = 0; p < PEER_COUNT; p++) {
        char def[64];
        snprintf(def, sizeof def, "http://127.0.0.1:%d", k_default_port[p]);
        if (ag_service_peer_with(svc, k_names[p], def, &o, &g_peers[p]) < 0) return AG_ECONFIG;
    }
    return 0;
}

void peer_reply_clear(peer_reply *rep)
{
    ag_peer_reply_clear(rep);
}

int peer_call(ord_peer peer, const char *method, const char *path, json_t *body, const char *auth,
              ag_deadline deadline, const char *request_id, peer_reply *rep)
{
    return ag_peer_call(g_peers[peer], method, path, body, auth, deadline, request_id, rep);
}
