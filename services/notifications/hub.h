/*
 * hub.h — the push hub of agora-notifications: which connections are open
 * on which loop for which user, and how a notification committed on the
 * bus thread reaches them.
 *
 * A push connection (ws.c, sse.c) embeds a hub_sub. Everything about a
 * hub_sub happens on the loop thread it was made on; the only calls from
 * other threads are hub_publish (the bus thread, after a commit) and
 * hub_drain (the main thread, at stop), which reach the loops with
 * ag_loop_post, in posting order.
 *
 * Resume without gap or duplicate. Notification ids only grow and are
 * committed in id order (one consumer thread writes them), and each commit
 * is posted to the loops in commit order. A connection that resumes from
 * `since`:
 *
 *   hub_attach ─► CATCHUP: registered first, so every later commit reaches
 *        │        it (held in `pending`); then a pool task reads id > since
 *        │        from the store and the rows come back to the loop
 *        ▼
 *   rows sent in id order (last_sent follows); a full page reads again;
 *        │  sending pauses while the client's queue is high (wait_drain)
 *        ▼
 *   pending sent, skipping ids <= last_sent ─► LIVE: each commit for the
 *                                              user, id > last_sent, is sent
 *
 * A commit lands in the rows, in pending, or in both (skipped once sent): it
 * cannot land in neither, because the connection was registered before the
 * read began. When pending overflows its bound the hub reads the store
 * again instead of holding more.
 *
 * Each hub_sub is counted against its user's cap (every loop together)
 * from hub_attach to hub_detach. The count going 0 -> 1 and 1 -> 0 is the
 * user's presence (nt_presence_changed), numbered under the same lock so
 * that the changes keep their order wherever they are published from.
 *
 * Ephemeral items (id 0: typing, presence) go only to LIVE connections and
 * are neither held during a catch-up nor replayed.
 */
#ifndef AGORA_NOTIFICATIONS_HUB_H
#define AGORA_NOTIFICATIONS_HUB_H

#include "notifications.h"

typedef struct hub_sub hub_sub;
typedef struct hub_loop hub_loop;

typedef struct hub_sub_ops {
    /* Sends one notification (its JSON object as text). Returns 0; < 0
     * when the connection is going away (the hub sends it nothing more); or,
     * for a catch-up item (`catchup`), AG_EBUSY when it was sent but enough
     * is queued to the client that the hub should wait: it then calls
     * wait_drain. A live item that finds too much queued is the slow-client
     * case: the owner drops the connection. */
    int (*deliver)(hub_sub *s, const nt_item *it, bool catchup);
    /* Call hub_sub_drained(s) once the client has read most of its queue. */
    void (*wait_drain)(hub_sub *s);
    /* The catch-up could not be done (pool full, store failing): the owner
     * closes the connection, saying so. */
    void (*fail)(hub_sub *s, const char *why);
    /* The service is stopping: the owner closes the connection. */
    void (*shutdown)(hub_sub *s);
    /* The last reference went: the owner frees itself. */
    void (*release)(hub_sub *s);
} hub_sub_ops;

typedef enum hub_state { HS_NEW, HS_CATCHUP, HS_LIVE, HS_DEAD } hub_state;

struct hub_sub {
    const hub_sub_ops *ops;
    hub_loop *hl;
    hub_sub *prev, *next;   /* every connection of the loop */
    hub_sub *uprev, *unext; /* the user's bucket chain, while attached */
    char user[NT_USER_MAX];
    int refs;
    hub_state state;
    bool attached;
    int64_t last_sent;
    unsigned gen;     /* catch-up generation: a resume outdates older reads */
    nt_item *pending; /* commits held during CATCHUP */
    size_t npending, cap_pending;
    bool overflow; /* pending was full: read the store again */
    nt_item *q;    /* CATCHUP: what is being sent (rows read, then pending) */
    size_t qn, qpos;
    bool q_full_page;  /* q is a full page of rows: read again after it */
    bool q_is_pending; /* q is the held commits: LIVE after it */
    bool paused;       /* waiting for hub_sub_drained */
};

/* Loop thread. Sets up `s` on the calling loop with one reference (the
 * owner's). */
void hub_sub_init(hub_sub *s, const hub_sub_ops *ops);
void hub_sub_ref(hub_sub *s);
/* Drops a reference; the last one unlinks `s` and calls ops->release. */
void hub_sub_unref(hub_sub *s);

/* Counts `s` for `user` and starts pushing: from `since` (everything with
 * a greater id first) when `resume`, else live only. AG_EBUSY when the user
 * has max_conns_per_user connections already (nothing changed). */
int hub_attach(hub_sub *s, const char *user, bool resume, int64_t since);
/* Starts again from `since` (a WebSocket resume message). */
void hub_resume(hub_sub *s, int64_t since);
/* The client read most of its queue: a paused catch-up goes on. */
void hub_sub_drained(hub_sub *s);
/* The answer of ops->deliver for a send that left `queued` bytes waiting
 * (or failed, < 0): a catch-up goes at the client's pace, AG_EBUSY above
 * half of max_queue. */
int hub_paced(long long queued, bool catchup);
/* For ops->wait_drain: calls hub_sub_drained(s) once `res` (the owner's
 * response) has under a quarter of max_queue waiting. */
void hub_drain_on(hub_sub *s, ag_http_res *res);
/* Uncounts and unregisters `s`; nothing more is delivered. Idempotent. */
void hub_detach(hub_sub *s);

/* Any thread: hands committed notifications to every loop. `users[i]` is
 * the recipient of items[i]; both are copied. */
void hub_publish(const nt_item *items, const char *const *users, size_t n);
/* Any thread: asks every connection to close (the service drains). */
void hub_drain(void);
/* Whether the user has a connection open now (any loop). */
bool hub_user_online(const char *user);
/* Open connections right now (every loop), for /metrics. */
double hub_connections(void *ud);
/* After the loops stopped: frees the hub's state. */
void hub_free(void);

#endif
