/*
 * notifications.h — what the files of agora-notifications share.
 *
 *   main.c     wires the service: store, bus, JWKS auth, routes, hub, mailer
 *   routes.c   GET /v1/notifications, POST /v1/notifications/read
 *   store.c    its SQL: the users projection, notifications, the mail outbox
 *   events.c   what it consumes (user.*, order.*, payment.failed,
 *              inventory.low_stock) and how each becomes notifications
 *   hub.c      the push hub: open connections per loop and per user, the
 *              per-user cap, resume (catch-up then live), hand-over from the
 *              bus thread to the loops
 *   ws.c       /v1/ws, the WebSocket connection (agora/websocket.h frames)
 *   sse.c      /v1/stream, Server-Sent Events
 *   verify.c   token verification for ws.c and sse.c, off the loop
 *   mail.c     the mailer thread: Maildir spool or SMTP (libcurl)
 *   openapi.json  /openapi.json (embedded by cmake/embed.cmake)
 *
 * Threads: HTTP handlers on the worker pool (routes.c); ws.c, sse.c and the
 * hub's per-loop state on the I/O loops (nothing there blocks: SQL and token
 * checks go to the pool and come back with ag_loop_post); event handlers on
 * the bus's consumer thread, one at a time; the mailer on its own thread.
 */
#ifndef AGORA_NOTIFICATIONS_H
#define AGORA_NOTIFICATIONS_H

#include <stdatomic.h>

#include "agora/agora.h"
#include "agora/auth.h"
#include "agora/bus.h"
#include "agora/service.h"
#include "agora/store.h"

#define NT_USER_MAX 128 /* user ids, as in ag_caller */

typedef struct nt_config {
    int max_conns_per_user;   /* WS + SSE connections of one user (5) */
    size_t max_queue;         /* bytes queued to a slow client before it is dropped */
    uint64_t ping_ms;         /* WebSocket server ping interval */
    uint64_t heartbeat_ms;    /* SSE comment interval */
    uint64_t auth_timeout_ms; /* WebSocket: time for the first-message auth */
    size_t max_message;       /* WebSocket: largest client message */
    const char *mail_dir;     /* Maildir spool (when no SMTP) */
    const char *smtp_url;     /* smtp://host:port, or NULL */
    const char *mail_from;    /* From: address */
    int mail_max_attempts;
} nt_config;

typedef struct nt_ctx {
    ag_service *svc;
    ag_store *store;
    ag_bus *bus;
    ag_auth *auth; /* the service's verifier (ag_service_use_auth); borrowed */
    nt_config cfg;
    atomic_bool draining;
} nt_ctx;

extern nt_ctx g_nt;

/* ---- store.c ------------------------------------------------------------------------ */

/* A notification to store. */
typedef struct nt_new {
    const char *user_id, *event_id, *type, *title, *message;
    json_t *data; /* borrowed */
} nt_new;

/* Inserts the notification unless (event id, user) has one already.
 * *id gets the new id, or 0 when it existed (nothing inserted); *json
 * (may be NULL) the notification's JSON text (ag_free). */
int nt_insert(ag_db *db, const nt_new *n, int64_t *id, char **json);
/* A page of the user's notifications, newest first, appended to `arr`;
 * *total counts those matching the filter, *unread the unread ones. */
int nt_list(ag_db *db, const char *user, bool unread_only, int64_t page, int64_t limit, json_t *arr,
            int64_t *total, int64_t *unread);
int nt_unread_count(ag_db *db, const char *user, int64_t *unread);
/* Marks read: one of the user's notifications (*changed 0 or 1), or all. */
int nt_mark_read(ag_db *db, const char *user, int64_t id, int64_t *changed);
int nt_mark_all_read(ag_db *db, const char *user, int64_t *changed);

/* One item for a push: its id (0: ephemeral, never replayed: typing,
 * presence), its kind (the frame's type: "notification", "message.sent",
 * "room.user_joined", "typing", "presence") and its JSON text. */
typedef struct nt_item {
    int64_t id;
    char *json;
    size_t len;
    char kind[32];
} nt_item;
/* What a resume from `since` replays: the user's notifications and the
 * chat feed rows of their rooms (and of their own membership changes) with
 * id > since, merged in id order, at most `limit`; *out (ag_free, and each
 * json) and *n. */
int nt_since(ag_db *db, const char *user, int64_t since, int limit, nt_item **out, size_t *n);
void nt_items_free(nt_item *items, size_t n);
/* The next id of the one sequence notifications and chat feed rows share
 * (a counter row, so it commits with the transaction, in commit order). */
int nt_next_push_id(ag_db *db, int64_t *id);
/* Stores a chat feed row (an event of a room) under a fresh push id; *id 0
 * when the event had one already. `user` is the member a membership event
 * is about (may be NULL). */
int nt_feed_insert(ag_db *db, const char *room, const char *user, const char *event_id,
                   const char *type, const char *json, int64_t *id);
/* Presence: records the user's state when `seq` is newer than what is
 * known; *changed says whether it changed (online <-> offline). */
int nt_presence_put(ag_db *db, const char *user, bool online, int64_t seq, bool *changed);
/* The users with a stored state, appended to `arr` as {userId, status, changedAt}. */
int nt_presence_get(ag_db *db, json_t *ids, json_t *arr);
/* Users the store says are online (a previous run's), appended to `arr`. */
int nt_presence_online(ag_db *db, json_t *arr);

/* The users projection. */
typedef struct nt_user {
    char id[NT_USER_MAX];
    char username[128];
    char email[256];
    char role[32];
    bool deleted;
} nt_user;
/* From user.registered/updated: insert or replace, unless deleted. */
int nt_user_upsert(ag_db *db, const nt_user *u);
/* From a verified token: insert when unknown (never overwrites). */
int nt_user_learn(ag_db *db, const char *id, const char *email, const char *role);
/* From user.deleted: keep a tombstone, drop their notifications and mails. */
int nt_user_delete(ag_db *db, const char *id);
int nt_user_get(ag_db *db, const char *id, nt_user *out);
/* Every known, not deleted admin; *out (ag_free) and *n. */
int nt_admins(ag_db *db, nt_user **out, size_t *n);

/* The mail outbox. */
typedef struct nt_mail {
    int64_t id;
    char event_id[64];
    char user_id[NT_USER_MAX];
    char to[256];
    char subject[256];
    char *body; /* ag_free */
    int64_t created_ms;
    int attempts;
} nt_mail;
/* Queues a mail unless (event id, user) has one; *queued says which. */
int nt_mail_queue(ag_db *db, const char *event_id, const char *user_id, const char *to,
                  const char *subject, const char *body, bool *queued);
/* Mails due now, oldest first, at most `limit`; *out (nt_mails_free). */
int nt_mail_due(ag_db *db, int64_t now_ms, int limit, nt_mail **out, size_t *n);
void nt_mails_free(nt_mail *m, size_t n);
int nt_mail_sent(ag_db *db, int64_t id);
/* Records a failed attempt: retry at next_ms, or FAILED when `give_up`. */
int nt_mail_failed(ag_db *db, int64_t id, const char *error, int64_t next_ms, bool give_up);

/* ---- events.c ------------------------------------------------------------------------ */

int nt_subscribe(ag_bus *bus);
/* A handler starts: forgets what an attempt that rolled back had pending
 * (its ids were rolled back too and will be given again). Every handler
 * calls it first; one handler runs per event. */
void nt_push_begin(void);
/* Pushes `json` (stolen) as `kind` under `id` to `user` after the current
 * transaction commits (the pending batch of events.c). */
void nt_push_after_commit(ag_db *db, int64_t id, const char *kind, char *json, const char *user);

/* ---- chat.c: the chat's realtime (docs/internals/chat.md) ---------------------------------- */

/* Subscribes room.*, message.*, user.online and user.offline. */
int nt_chat_subscribe(ag_bus *bus);
/* The hub saw a user's first connection open or last one close (loop
 * thread; `seq` orders the changes): publishes user.online/offline. */
void nt_presence_changed(const char *user, bool online, int64_t seq);
/* At start: users a previous run left online are published offline. */
int nt_presence_reset(void);
/* A member typing in a room (loop thread): told to the room's other
 * connected members, when `user` is one of them. */
void nt_typing(const char *user, const char *room);
/* Frees what the consumer kept between events (after the bus stopped). */
void nt_events_free(void);

/* ---- hub.c: see hub.h ---------------------------------------------------------------- */

/* ---- mail.c -------------------------------------------------------------------------- */

/* Starts the mailer thread (after the store is open). */
int nt_mailer_start(void);
/* Wakes it (after a commit that queued mail). Any thread. */
void nt_mailer_wake(void);
/* Stops and joins it. Idempotent. */
void nt_mailer_stop(void);

/* ---- routes.c, openapi.json ----------------------------------------------------------------- */

void nt_routes(ag_router *r);
void nt_ws_routes(ag_router *r);  /* ws.c */
void nt_sse_routes(ag_router *r); /* sse.c */
/* The auth middleware for every route but the push endpoints, which
 * verify tokens off the loop themselves (verify.c). */
int nt_auth_middleware(ag_http_req *req, ag_http_res *res, void *ud);
extern const char nt_openapi_json[];

#endif
