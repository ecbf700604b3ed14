/*
 * workload.h — the traffic `agora chaos` and `agora soak` drive through the
 * gateway, and the invariants checked once it stops (workload.c).
 *
 * The traffic is what people do with the system: customers check out (a
 * wallet, a good card, an empty wallet, a declined card; low stock, so
 * that some orders are cancelled for want of it), chat members write in a
 * private room, one more member watches the room on a WebSocket and
 * resumes from the last push id it saw whenever the connection drops, and
 * (for the soak) shoppers browse, search and fill carts. Every answer is
 * written down: the orders that were accepted (201), the messages that were
 * acknowledged (201) and those sent without an answer, the pushes received.
 *
 * A request that got no answer or a 5xx is sent again as a real client
 * would: an order with the same Idempotency-Key (it is accepted once), a
 * read as it was. A message is not sent again (messages take no key; one
 * sent twice would be two messages, which is the client's doing), so it is
 * counted as unanswered, and the check allows it to be stored once or not
 * at all.
 *
 * The invariants (DESIGN.md §7), each printed "ok" or "FAIL" with what was
 * seen:
 *   1. every accepted order reaches CONFIRMED or CANCELLED;
 *   2. no unit is oversold: per product, the units that left stock are the
 *      units of its CONFIRMED orders, never more than it had, none reserved;
 *   3. no charge without confirmation or refund: a CONFIRMED order has one
 *      successful, unrefunded payment of its total; a CANCELLED order's
 *      successful payments are refunded in full;
 *   4. each order's outcome reaches its customer's notifications once;
 *   5. each acknowledged message is in the room's history once, nothing is
 *      there that was not sent, nothing twice;
 *   6. each acknowledged message reaches the watcher's WebSocket once,
 *      across its reconnections.
 */
#ifndef AGORA_CLI_WORKLOAD_H
#define AGORA_CLI_WORKLOAD_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cli.h"

typedef struct wl_opts {
    int shoppers;   /* customers checking out, each a thread */
    int chatters;   /* members writing in the room, each a thread */
    int browsers;   /* people browsing and filling carts (soak), each a thread */
    int stock;      /* units of each of the three products; small for chaos */
    double pause_s; /* each worker's pause between two actions (jittered) */
    uint64_t seed;  /* for every random choice; printed, so a run can be replayed */
} wl_opts;

/* What happened so far, for progress lines. */
typedef struct wl_counts {
    long orders_accepted, orders_refused, orders_given_up;
    long messages_acked, messages_unanswered;
    long pushes, reconnects;
    long browses, errors; /* errors: answers the workload did not expect (a 4xx) */
} wl_counts;

typedef struct workload workload;

/* Signs in as the administrator (AGORA_ADMIN_EMAIL/PASSWORD of the config),
 * makes the products, the customers, the room and its members through the
 * gateway. Prints why and returns a negative AG_E* code when the system is
 * not there to take it; *out is the caller's (wl_free). */
int wl_setup(workload **out, cli_config *cfg, const wl_opts *o);
/* Starts every worker thread. */
int wl_start(workload *w);
/* Asks every worker to stop and joins them. */
void wl_stop(workload *w);
void wl_counts_get(workload *w, wl_counts *c);
/* Waits (up to `settle_s`) for the outcomes, then checks and prints each
 * invariant to `out`. 0 when all hold, 1 otherwise. */
int wl_check(workload *w, FILE *out, double settle_s);
void wl_free(workload *w);

#endif
