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
/* Made by ag_service_main from main.c's declaration. */
ag_peer *g_ord_peers[PEER_COUNT];

const char *peer_name(ord_peer p)
{
    return k_names[p];
}

void peer_reply_clear(peer_reply *rep)
{
    ag_peer_reply_clear(rep);
}

int peer_call(ord_peer peer, const char *method, const char *path, json_t *body, const char *auth,
              ag_deadline deadline, const char *request_id, peer_reply *rep)
{
    return ag_peer_call(g_ord_peers[peer], method, path, body, auth, deadline, request_id, rep);
}
