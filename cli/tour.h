/*
 * tour.h — what `agora demo`'s two tours share (tour.c the shop,
 * chat_tour.c the chat): a customer's session against the gateway's public
 * API, calls printed with their status and time, steps, failures in words.
 */
#ifndef AGORA_CLI_TOUR_H
#define AGORA_CLI_TOUR_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "agora/websocket.h"
#include "cli.h"

#define TOUR_WAIT_S 8          /* Prefer: wait; the gateway allows orders 10 s */
#define TOUR_FINAL_S 60        /* how long an order may take to end */
#define TOUR_NOTIFY_S 10       /* how long to wait for the order's notification */
#define TOUR_RETRY_BUDGET_S 60 /* Retry-After waits, in all, per call */

typedef struct tour {
    char api[512];    /* "http://127.0.0.1:8080/api/v1" */
    char token[4096]; /* the customer's, once registered */
    char user[96];    /* the customer's id */
} tour;

/* What one call brought back. */
typedef struct answer {
    int status;  /* the HTTP status, or a negative AG_E* code */
    json_t *doc; /* the parsed body, or NULL */
    double ms;
} answer;

double tour_now_s(void);
void tour_pause_ms(long ms);
void tour_answer_release(answer *a);
/* obj[k] as a string ("" when missing) and as an integer (0). */
const char *tour_str(json_t *o, const char *k);
long long tour_num(json_t *o, const char *k);
json_t *tour_data(const answer *a);
/* "$12.99" for USD, "12.99 EUR" for anything else. */
const char *tour_money(char *out, size_t n, long long cents, const char *currency);
/* "429 RATE_LIMITED: too many requests" or "no answer (connection refused)". */
const char *tour_why(const answer *a, char *out, size_t n);
/* One call to <api><path>, with t's token once there is one; printed
 * unless `quiet`; a 429 waits its Retry-After and tries again. `extra`
 * headers are "Name: value" strings, NULL-terminated (may be NULL). */
void tour_call(tour *t, const char *method, const char *path, json_t *body,
               const char *const *extra, bool quiet, answer *a);
/* The same with a raw body of `content_type` (an upload). */
void tour_call_raw(tour *t, const char *method, const char *path, const void *body, size_t len,
                   const char *content_type, bool quiet, answer *a);
void tour_step(int n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints why the step failed; returns 1 (the tour's exit status). */
int tour_failed(const char *what, const answer *a);
/* Registers a new person named <prefix><random>; fills t's token and user
 * (and `name` when not NULL). 0, or 1 after printing why. */
int tour_register(tour *t, const char *prefix, char *name, size_t name_len);

/* A blocking WebSocket client (wsclient.c), enough for the tour. */
typedef struct cli_ws {
    int fd;
    int status; /* the handshake's answer */
    bool parsing;
    bool ended; /* the connection ended (cli_ws_next's NULL was not a timeout) */
    ag_ws_parser parser;
    json_t *msg;   /* the message the parser just completed */
    char *pending; /* bytes read, not yet fed */
    size_t npending, pos;
} cli_ws;
/* Opens <base_url><path> (ws over http://host:port) with the bearer token.
 * 0 once upgraded (101); a negative AG_E* code otherwise (w->status says
 * what the server answered). */
int cli_ws_open(cli_ws *w, const char *base_url, const char *path, const char *token);
/* The next text message whose "type" is `type` (NULL: any), parsed (the
 * caller's), or NULL after timeout_ms or when the connection ends (then
 * `ended` is set). Others
 * are skipped; pings are answered. */
json_t *cli_ws_next(cli_ws *w, const char *type, int timeout_ms);
int cli_ws_send_json(cli_ws *w, json_t *msg);
void cli_ws_close(cli_ws *w);

/* The chat's tour (chat_tour.c), after the shop's: steps from `first`. */
int cli_chat_tour(cli_config *cfg, int first);

#endif
