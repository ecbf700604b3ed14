/*
 * messages.h — what the files of agora-messages share: main.c wires the
 * service, routes.c is its HTTP API, store.c its SQL (messages, the per-room
 * sequence, reactions, read markers, search, the users projection),
 * events.c what it publishes and consumes, limiter.c the per-user send rate
 * limit, openapi.json the description of its routes.
 *
 * Who may read a room comes from the membership replica of agora-chat
 * (services/chat/members.h), kept in this service's own store.
 */
#ifndef AGORA_MESSAGES_H
#define AGORA_MESSAGES_H

#include "agora/agora.h"
#include "agora/auth.h"
#include "agora/bus.h"
#include "agora/peer.h"
#include "agora/store.h"
#include "members.h"

#define MSG_MAX_CHARS 4000     /* AGORA_MESSAGE_MAX_CHARS: Unicode code points of content */
#define MSG_ID_MAX CHAT_ID_MAX /* room, user, file and message ids (chat_id_ok) */
#define MSG_EMOJI_MAX 32       /* bytes of a reaction's emoji */
#define MSG_PAGE_DEFAULT 50    /* history page */
#define MSG_PAGE_MAX 100
#define MSG_SEARCH_DEFAULT 20
#define MSG_SEARCH_MAX 100
#define MSG_SEARCH_WORDS 16
#define MSG_USERNAME_MAX 64

typedef struct msg_ctx {
    ag_store *store;
    ag_bus *bus;
    ag_peer *rooms, *files, *users;
    size_t max_chars;
} msg_ctx;

extern msg_ctx g_msg;

/* A file attached to a message, as agora-files described it at send time. */
typedef struct msg_attachment {
    char file_id[MSG_ID_MAX + 1];
    char *name;         /* owned (ag_free) */
    char *content_type; /* owned */
    int64_t size;
} msg_attachment;

/* One message as stored. */
typedef struct msg_row {
    char id[MSG_ID_MAX + 1];
    char room_id[MSG_ID_MAX + 1];
    char user_id[MSG_ID_MAX + 1];
    char username[MSG_USERNAME_MAX * 4 + 1];
    char reply_to[MSG_ID_MAX + 1]; /* "" for none */
    char *content;                 /* owned; NULL once deleted or for a bare attachment */
    bool has_file;
    msg_attachment file;
    int64_t seq;
    bool edited, deleted;
    char edited_at[32]; /* "" when never edited */
    char created_at[32], updated_at[32];
} msg_row;

void msg_row_release(msg_row *m);

/* store.c. Functions return 0 or a negative AG_E* code; AG_ENOTFOUND for a
 * missing row. */
int msg_get(ag_db *db, const char *id, msg_row *out);
/* The next position in `room` (1, 2, ...): the room's counter row, created or
 * incremented in the caller's transaction, so two sends never share one. */
int msg_next_seq(ag_db *db, const char *room, int64_t *seq);
int msg_insert(ag_db *db, const msg_row *m);
int msg_set_content(ag_db *db, const char *id, const char *content, const char *ts);
/* Makes the message a tombstone: content and attachment gone, reactions gone. */
int msg_mark_deleted(ag_db *db, const char *id, const char *by, const char *ts);
int msg_touch(ag_db *db, const char *id, const char *ts);
/* Adds (or removes) the user's reaction; *changed says whether anything did. */
int msg_reaction_add(ag_db *db, const char *id, const char *emoji, const char *user, const char *ts,
                     bool *changed);
int msg_reaction_remove(ag_db *db, const char *id, const char *emoji, const char *user,
                        bool *changed);
/* [{emoji, count, userIds}] of one message, emoji in the order first used. */
json_t *msg_reactions_json(ag_db *db, const char *id);
/* The message's JSON (DESIGN.md §4 camelCase); reactions come from the
 * caller (a new reference is stolen; NULL gives []). */
json_t *msg_json(const msg_row *m, json_t *reactions);
/* The room's page of history: messages with seq < before_seq (INT64_MAX for
 * the newest), newest first, at most `limit` (JSON appended to `arr`);
 * *more says whether older ones remain. Tombstones are included. */
int msg_history(ag_db *db, const char *room, int64_t before_seq, int64_t limit, json_t *arr,
                bool *more);
/* Full-text search among the rooms `user` belongs to (the replica), or only
 * in `room` when not NULL; newest first. The words of `q` are matched as
 * prefixes, all required; *words gets their number (0: nothing searched). */
int msg_search(ag_db *db, const char *user, const char *room, const char *q, int64_t limit,
               json_t *arr, int *words);
/* Adds each message's reactions to the message objects of `arr`. */
int msg_attach_reactions(ag_db *db, json_t *arr);

/* Read markers. *last_id is "" when the user has none in the room. */
int msg_marker_advance(ag_db *db, const char *room, const char *user, int64_t seq, const char *id,
                       const char *ts);
int msg_marker_get(ag_db *db, const char *room, const char *user, char *last_id, size_t n,
                   int64_t *seq);
/* Messages of others after `seq`, not deleted. */
int msg_unread_count(ag_db *db, const char *room, const char *user, int64_t seq, int64_t *count);
/* [{roomId, unread, lastReadId}] for every room the user is in. */
int msg_unread_all(ag_db *db, const char *user, json_t *arr);

/* The users projection (user.registered, user.updated). */
int msg_username_get(ag_db *db, const char *user, char *out, size_t n);
int msg_username_put(ag_db *db, const char *user, const char *name, bool overwrite);

/* events.c */
int msg_publish_sent(ag_db *db, const msg_row *m);
int msg_publish_updated(ag_db *db, const msg_row *m, json_t *reactions);
int msg_publish_deleted(ag_db *db, const msg_row *m, const char *by);
int messages_subscribe(ag_bus *bus);

/* limiter.c: a token bucket per user, in this process's memory. */
int msg_limiter_init(double rate, double burst);
void msg_limiter_free(void);
/* True when the user may send now (one token taken); otherwise false and
 * *retry_after_s the whole seconds until a token is there. */
bool msg_limiter_take(const char *user, int *retry_after_s);

/* routes.c */
void messages_routes(ag_router *r);

/* openapi.json, embedded by cmake/embed.cmake */
extern const char messages_openapi_json[];

#endif
