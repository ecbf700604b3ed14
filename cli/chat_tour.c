/*
 * chat_tour.c — `agora demo`'s tour of the chat, after the shop's, through
 * the gateway (docs/internals/chat.md):
 *
 *   1. two people register: Alice and Bob
 *   2. Alice makes a private room and invites Bob (POST /rooms, /members)
 *   3. Bob opens the realtime connection (WebSocket /ws) and is "ready"
 *   4. Alice writes; Bob's socket gets message.sent, live, in so many ms
 *   5. Bob answers (replyTo) and reacts; the room's history shows both
 *   6. Alice shares a file (POST /files, then a message carrying it) and
 *      Bob downloads its first bytes (Range) — when agora-files runs
 *   7. Alice sees Bob online (GET /presence); he closes; offline
 *
 * When the chat is not running (agora-rooms or agora-messages answer 503),
 * the tour says so in a word and ends without failing: the shop's tour
 * stands on its own.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tour.h"

#define CHAT_LIVE_MS 5000 /* how long Bob waits for a message to arrive */

static bool not_running(const answer *a)
{
    return a->status == 503 || a->status == 502 || a->status < 0;
}

/* A user of the tour: their session and name. */
typedef struct person {
    tour t;
    char name[32];
} person;

static int show_history(person *p, const char *room)
{
    char path[256];
    snprintf(path, sizeof path, "/messages?roomId=%s&limit=10", room);
    answer a;
    tour_call(&p->t, "GET", path, NULL, NULL, false, &a);
    json_t *list = tour_data(&a);
    if (a.status != 200 || !json_is_array(list)) {
        int rc = tour_failed("reading the room's history", &a);
        tour_answer_release(&a);
        return rc;
    }
    printf("   the room's history, newest first:\n");
    size_t i;
    json_t *m;
    json_array_foreach(list, i, m)
    {
        char react[128] = "";
        size_t j, off = 0;
        json_t *r;
        json_array_foreach(json_object_get(m, "reactions"), j, r)
        {
            off += (size_t)snprintf(react + off, sizeof react - off, " [%s x%lld]",
                                    tour_str(r, "emoji"), tour_num(r, "count"));
            if (off >= sizeof react) break;
        }
        json_t *att = json_object_get(m, "attachment");
        printf("   #%lld %-8s %s%s%s%s%s\n", tour_num(m, "seq"), tour_str(m, "username"),
               json_is_string(json_object_get(m, "replyTo")) ? "(a reply) " : "",
               tour_str(m, "content"), json_is_object(att) ? " [file: " : "",
               json_is_object(att) ? tour_str(att, "name") : "", json_is_object(att) ? "]" : "");
        if (*react) printf("   %11s%s\n", "", react);
    }
    tour_answer_release(&a);
    return 0;
}

/* Step 6: a file shared in the room, downloaded by Bob. */
static int share_file(person *alice, person *bob, const char *room, cli_ws *ws)
{
    static const char notes[] = "Agora tour notes: rooms, messages, files, realtime.\n";
    char path[512];
    snprintf(path, sizeof path, "/files?roomId=%s&name=tour-notes.txt", room);
    answer a;
    tour_call_raw(&alice->t, "POST", path, notes, sizeof notes - 1, "text/plain", false, &a);
    if (not_running(&a)) {
        printf("   agora-files is not running (%d): no file this time\n", a.status);
        tour_answer_release(&a);
        return 0;
    }
    if (a.status != 201) {
        int rc = tour_failed("uploading a file", &a);
        tour_answer_release(&a);
        return rc;
    }
    char file[128];
    snprintf(file, sizeof file, "%s", tour_str(tour_data(&a), "id"));
    printf("   uploaded tour-notes.txt: %lld bytes, sha256 %.16s...\n",
           tour_num(tour_data(&a), "size"), tour_str(tour_data(&a), "sha256"));
    tour_answer_release(&a);
    json_t *body = json_pack("{s:s, s:s, s:s}", "roomId", room, "content", "the notes, attached",
                             "fileId", file);
    tour_call(&alice->t, "POST", "/messages", body, NULL, false, &a);
    json_decref(body);
    if (a.status != 201) {
        int rc = tour_failed("sending the file", &a);
        tour_answer_release(&a);
        return rc;
    }
    tour_answer_release(&a);
    /* Bob's socket also carries his own messages (the reply): the one
     * with the file is the first with an attachment. */
    json_t *m, *att = NULL;
    while ((m = cli_ws_next(ws, "message.sent", CHAT_LIVE_MS)) != NULL) {
        att = json_object_get(json_object_get(m, "data"), "attachment");
        if (json_is_object(att)) break;
        json_decref(m);
    }
    if (!m) {
        fprintf(stderr, "agora demo: the message with the file did not reach %s's socket\n",
                bob->name);
        return 1;
    }
    printf("   %s's socket: a message carrying %s (%s, %lld bytes)\n", bob->name,
           tour_str(att, "name"), tour_str(att, "contentType"), tour_num(att, "size"));
    json_decref(m);

    /* Bob downloads the first bytes, as a player or a resumed download would. */
    char url[1024], auth[4200];
    snprintf(url, sizeof url, "%s/files/%s/content", bob->t.api, file);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", bob->t.token);
    const char *headers[] = {auth, "Range: bytes=0-10", NULL};
    ag_http_call c = {.method = "GET", .url = url, .headers = headers, .timeout_ms = 5000};
    ag_http_reply rep;
    int rc = cli_http_do(&c, &rep);
    if (rc < 0) {
        fprintf(stderr, "agora demo: downloading the file failed: %s\n", ag_strerror(rc));
        return 1;
    }
    char range[128] = "", type[128] = "";
    ag_http_reply_header(&rep, "Content-Range", range, sizeof range);
    ag_http_reply_header(&rep, "Content-Type", type, sizeof type);
    printf("   GET /api/v1/files/%s/content (Range: bytes=0-10) -> %d\n", file, rep.status);
    printf("   %s got \"%.*s\" (%s, %s)\n", bob->name, (int)rep.body.len, rep.body.data, range,
           type);
    rc = rep.status == 206 ? 0 : 1;
    if (rc) fprintf(stderr, "agora demo: expected 206 Partial Content\n");
    ag_http_reply_release(&rep);
    return rc;
}

static const char *presence_of(person *asker, const char *user, bool quiet)
{
    static char status[16];
    char path[256];
    snprintf(path, sizeof path, "/presence?userIds=%s", user);
    answer a;
    tour_call(&asker->t, "GET", path, NULL, NULL, quiet, &a);
    snprintf(status, sizeof status, "%s",
             a.status == 200 ? tour_str(json_array_get(tour_data(&a), 0), "status") : "unknown");
    tour_answer_release(&a);
    return status;
}

int cli_chat_tour(cli_config *cfg, int n)
{
    cli_component *gw = cli_config_find(cfg, "gateway");
    if (!gw) return 1;
    person *alice = ag_calloc(1, sizeof *alice), *bob = ag_calloc(1, sizeof *bob);
    snprintf(alice->t.api, sizeof alice->t.api, "%s/api/v1", gw->url);
    snprintf(bob->t.api, sizeof bob->t.api, "%s/api/v1", gw->url);
    cli_ws ws = {.fd = -1};
    answer a = {0};
    int rc = 1;
    char room[128] = "", first[128] = "";
    printf("\nagora demo: a tour of the chat through the gateway, %s\n", alice->t.api);

    tour_step(n++, "Two people register: Alice and Bob");
    if (tour_register(&alice->t, "alice", alice->name, sizeof alice->name) != 0 ||
        tour_register(&bob->t, "bob", bob->name, sizeof bob->name) != 0)
        goto out;

    tour_step(n++, "%s makes a private room and invites %s", alice->name, bob->name);
    json_t *body = json_pack("{s:s, s:s, s:b}", "name", "Tour room", "description",
                             "made by agora demo", "isPrivate", 1);
    tour_call(&alice->t, "POST", "/rooms", body, NULL, false, &a);
    json_decref(body);
    if (not_running(&a)) {
        char w[512];
        printf("   the chat is not running (%s): see agora status\n", tour_why(&a, w, sizeof w));
        rc = 0;
        goto out;
    }
    if (a.status != 201) {
        rc = tour_failed("making a room", &a);
        goto out;
    }
    snprintf(room, sizeof room, "%s", tour_str(tour_data(&a), "id"));
    printf("   room %s \"%s\", private, %s is its owner\n", room, tour_str(tour_data(&a), "name"),
           alice->name);
    tour_answer_release(&a);
    char path[512];
    snprintf(path, sizeof path, "/rooms/%s/members", room);
    body = json_pack("{s:s}", "userId", bob->t.user);
    tour_call(&alice->t, "POST", path, body, NULL, false, &a);
    json_decref(body);
    if (a.status != 201) {
        rc = tour_failed("inviting", &a);
        goto out;
    }
    printf("   %s is a %s of the room\n", bob->name, tour_str(tour_data(&a), "role"));
    tour_answer_release(&a);

    tour_step(n++, "%s opens the realtime connection (WebSocket /api/v1/ws)", bob->name);
    int wrc = cli_ws_open(&ws, gw->url, "/api/v1/ws", bob->t.token);
    json_t *m = wrc == 0 ? cli_ws_next(&ws, "ready", CHAT_LIVE_MS) : NULL;
    if (!m) {
        fprintf(stderr, "agora demo: the WebSocket did not open (%s, status %d)\n",
                ag_strerror(wrc), ws.status);
        goto out;
    }
    printf("   101 Switching Protocols; the server says ready for %s\n",
           tour_str(json_object_get(m, "data"), "userId")[0]
               ? tour_str(json_object_get(m, "data"), "userId")
               : tour_str(m, "userId"));
    json_decref(m);

    tour_step(n++, "%s writes in the room; %s's socket gets it live", alice->name, bob->name);
    double t0 = tour_now_s();
    body = json_pack("{s:s, s:s}", "roomId", room, "content", "Hello Bob! Did your order arrive?");
    tour_call(&alice->t, "POST", "/messages", body, NULL, false, &a);
    json_decref(body);
    if (a.status != 201) {
        rc = tour_failed("sending a message", &a);
        goto out;
    }
    snprintf(first, sizeof first, "%s", tour_str(tour_data(&a), "id"));
    tour_answer_release(&a);
    m = cli_ws_next(&ws, "message.sent", CHAT_LIVE_MS);
    if (!m) {
        fprintf(stderr, "agora demo: the message did not arrive on %s's socket within %d ms\n",
                bob->name, CHAT_LIVE_MS);
        goto out;
    }
    printf("   %s's socket: message.sent \"%s\" (push id %s), %.0f ms after the send began\n",
           bob->name, tour_str(json_object_get(m, "data"), "content"), tour_str(m, "id"),
           (tour_now_s() - t0) * 1000.0);
    json_decref(m);

    tour_step(n++, "%s answers and reacts", bob->name);
    body = json_pack("{s:s, s:s, s:s}", "roomId", room, "content", "It did, thanks! Confirmed.",
                     "replyTo", first);
    tour_call(&bob->t, "POST", "/messages", body, NULL, false, &a);
    json_decref(body);
    if (a.status != 201) {
        rc = tour_failed("replying", &a);
        goto out;
    }
    tour_answer_release(&a);
    snprintf(path, sizeof path, "/messages/%s/reactions", first);
    body = json_pack("{s:s}", "emoji", "\xF0\x9F\x91\x8D"); /* thumbs up */
    tour_call(&bob->t, "POST", path, body, NULL, false, &a);
    json_decref(body);
    if (a.status != 200 && a.status != 201) {
        rc = tour_failed("reacting", &a);
        goto out;
    }
    tour_answer_release(&a);
    if (show_history(alice, room) != 0) goto out;

    tour_step(n++, "%s shares a file; %s downloads its first bytes", alice->name, bob->name);
    if (share_file(alice, bob, room, &ws) != 0) goto out;

    tour_step(n++, "%s sees %s online; %s closes the connection", alice->name, bob->name,
              bob->name);
    printf("   %s is %s\n", bob->name, presence_of(alice, bob->t.user, false));
    cli_ws_close(&ws);
    const char *st = "online";
    for (int i = 0; i < 50 && strcmp(st, "offline") != 0; i++) {
        tour_pause_ms(100);
        st = presence_of(alice, bob->t.user, true);
    }
    printf("   %s is %s\n", bob->name, st);
    printf("\nagora demo: chat tour done: room %s, messages delivered live over the WebSocket\n",
           room);
    rc = 0;
out:
    cli_ws_close(&ws);
    tour_answer_release(&a);
    fflush(stdout);
    ag_free(alice);
    ag_free(bob);
    return rc;
}
