/*
 * websocket.h — the server side of RFC 6455: the opening handshake and a
 * frame codec (encoder, incremental parser) for connections that an
 * AG_ROUTE_ASYNC handler turned into a tunnel (http.h, ag_res_tunnel).
 *
 * It is written here rather than taken from a library because none of the
 * Debian -dev packages Agora builds against (libuv, llhttp, jansson, sqlite3,
 * libpq, libnats, librabbitmq, hiredis, libsodium, OpenSSL, libcurl, cmocka)
 * speaks WebSocket, and the part a server needs is small: SHA-1 and base64
 * for the handshake come from OpenSSL, the framing is below.
 *
 * What it does not do: extensions (permessage-deflate is not offered, so a
 * frame with a reserved bit set is a protocol error), subprotocol
 * negotiation (the handler may set Sec-WebSocket-Protocol itself), and the
 * connection's life (timers, pings, the close handshake's wait), which
 * belongs to the service that owns the connection: services/notifications/
 * ws.c is the reference user. docs/internals/websocket.md has the frame
 * layout, the parser's state machine and the close codes.
 *
 * Typical use, on the loop thread of an AG_ROUTE_ASYNC handler:
 *
 *   char accept[AG_WS_ACCEPT_LEN + 1];
 *   int status; const char *why;
 *   if (ag_ws_handshake_check(req, accept, &status, &why) < 0) { ...answer status... }
 *   ag_ws_upgrade(req, res, accept, &cbs, conn);      // 101, then raw bytes
 *   // on_data: ag_ws_parser_feed(&conn->parser, data, len, on_message, conn)
 *   // to send: ag_ws_frame_append(&buf, AG_WS_TEXT, true, NULL, json, n),
 *   //          then ag_res_loop_write(res, buf.data, buf.len, ...)
 */
#ifndef AGORA_WEBSOCKET_H
#define AGORA_WEBSOCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/http.h"
#include "agora/mem.h"

#define AG_WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define AG_WS_ACCEPT_LEN 28   /* base64 of a SHA-1 digest */
#define AG_WS_MAX_CONTROL 125 /* payload of a ping, pong or close frame */
#define AG_WS_MAX_HEADER 14   /* 2 + 8 (length) + 4 (mask) */

enum ag_ws_opcode {
    AG_WS_CONT = 0x0,
    AG_WS_TEXT = 0x1,
    AG_WS_BINARY = 0x2,
    AG_WS_CLOSE = 0x8,
    AG_WS_PING = 0x9,
    AG_WS_PONG = 0xA,
};

/* Close codes (RFC 6455 §7.4.1) that this module and its users send. */
enum ag_ws_close_code {
    AG_WS_NORMAL = 1000,
    AG_WS_GOING_AWAY = 1001,     /* server shutting down, client leaving, ping timeout */
    AG_WS_PROTOCOL_ERROR = 1002, /* bad framing: unmasked, reserved bits, bad opcode... */
    AG_WS_UNSUPPORTED = 1003,    /* a data type the endpoint does not take (binary) */
    AG_WS_NO_STATUS = 1005,      /* never sent: a close frame without a code */
    AG_WS_ABNORMAL = 1006,       /* never sent: the connection dropped */
    AG_WS_BAD_DATA = 1007,       /* a text message that is not UTF-8 */
    AG_WS_POLICY = 1008,         /* refused by policy (auth, caps, fragments) */
    AG_WS_TOO_BIG = 1009,        /* a message over the limit */
    AG_WS_INTERNAL = 1011,
    AG_WS_TRY_LATER = 1013,
};

/* ---- Handshake (RFC 6455 §4.2) --------------------------------------------------- */

/* Sec-WebSocket-Accept for a client's Sec-WebSocket-Key: base64(SHA-1(key +
 * AG_WS_GUID)) into `out` (NUL-terminated). AG_EINVAL when `key` is not the
 * base64 form of 16 bytes. */
int ag_ws_accept_key(const char *key, char out[AG_WS_ACCEPT_LEN + 1]);

/* Checks that `req` opens a WebSocket: GET, "Upgrade: websocket",
 * "Connection" listing "upgrade", "Sec-WebSocket-Version: 13" and a good
 * Sec-WebSocket-Key. 0 with the accept value in `accept`; otherwise AG_EINVAL
 * with the HTTP status to answer in *status (400, or 426 for a version
 * other than 13, which must be answered with "Sec-WebSocket-Version: 13")
 * and a static reason in *why. */
int ag_ws_handshake_check(const ag_http_req *req, char accept[AG_WS_ACCEPT_LEN + 1], int *status,
                          const char **why);

/* Answers 101 Switching Protocols with Upgrade, Connection and
 * Sec-WebSocket-Accept (plus any header set on `res` before) and hands the
 * connection over as ag_res_tunnel does: from here on `cbs` receives the
 * client's raw bytes and ag_res_loop_write sends frames. Loop thread of an
 * AG_ROUTE_ASYNC handler only; the same return values as ag_res_tunnel. */
int ag_ws_upgrade(ag_http_req *req, ag_http_res *res, const char *accept, const ag_tunnel_cbs *cbs,
                  void *ud);

/* ---- Encoding ---------------------------------------------------------------------- */

/* Appends one frame to `out`: FIN when `fin`, `opcode`, the payload length
 * in its shortest form, and `data`. `mask` NULL sends it unmasked (server
 * to client, as §5.1 requires); a 4-byte key masks it (client to server:
 * tests and clients). AG_EINVAL for an unknown opcode or a control frame
 * that is not final or longer than AG_WS_MAX_CONTROL; AG_ETOOBIG past the
 * buffer's limit. Nothing is appended on failure. */
int ag_ws_frame_append(ag_buf *out, int opcode, bool fin, const uint8_t mask[4], const void *data,
                       size_t len);

/* Appends an unmasked close frame with `code` and `reason` (cut at a UTF-8
 * boundary to fit 123 bytes). code 0 sends a close frame without a body. */
int ag_ws_close_append(ag_buf *out, int code, const char *reason);

/* ---- Parsing ----------------------------------------------------------------------- */

typedef struct ag_ws_limits {
    size_t max_message;   /* a message (all its fragments) longer: 1009. 0: 1 MiB */
    bool allow_fragments; /* false: a fragmented data message is refused with 1008 */
    bool client;          /* false (a server): frames must be masked; true: must not be */
} ag_ws_limits;

/* Called for every complete message (text and binary, fragments joined and
 * unmasked; text checked to be UTF-8) and every control frame (ping, pong,
 * close: their payload; a close payload has been checked, see
 * ag_ws_close_parse), in order. `data` is borrowed for the call and
 * NUL-terminated (not counted in `len`). Return 0 to go on; anything else
 * stops the feed, which returns that value. */
typedef int (*ag_ws_message_fn)(void *ud, int opcode, const char *data, size_t len);

/* The parser's state machine, one frame at a time:
 *
 *   HEAD ─(2 bytes)─► EXT_LEN ─(0, 2 or 8)─► MASK ─(4 or 0)─► PAYLOAD ─(len)─┐
 *    ▲  checks: RSV, opcode, control rules, mask, fragments, size            │
 *    └─────────────── frame done: control → fn; final data → fn ◄────────────┘
 *   any failed check ─► FAILED (close_code and why set; feeding refuses)
 *
 * Control frames may arrive between the fragments of a message (§5.4). */
typedef struct ag_ws_parser {
    ag_ws_limits lim;
    int state;                      /* internal */
    uint8_t head[AG_WS_MAX_HEADER]; /* the frame header being collected */
    size_t head_len, head_need;
    bool fin, masked;
    int opcode;
    uint8_t mask[4];
    uint64_t payload_len, payload_got;
    int msg_opcode;                   /* TEXT/BINARY of the message in progress, or 0 */
    ag_buf msg;                       /* the message being assembled */
    char ctrl[AG_WS_MAX_CONTROL + 1]; /* a control frame's payload */
    int close_code;                   /* after AG_EPROTO: the code to close with */
    const char *why;                  /* after AG_EPROTO: a static reason */
} ag_ws_parser;

void ag_ws_parser_init(ag_ws_parser *p, const ag_ws_limits *lim);
/* Frees the message buffer; the parser may be initialised again. */
void ag_ws_parser_release(ag_ws_parser *p);
/* Feeds `len` bytes from the peer. Returns 0 when all were consumed, the
 * first nonzero value a callback returned (parsing stopped there; the rest
 * of `data` was not consumed), or AG_EPROTO when the peer broke the protocol
 * or a limit: p->close_code (1002, 1007, 1008 or 1009) and p->why tell the
 * caller how to close. After AG_EPROTO every feed returns AG_EPROTO. */
int ag_ws_parser_feed(ag_ws_parser *p, const void *data, size_t len, ag_ws_message_fn fn, void *ud);

/* Reads a close frame's payload: *code (AG_WS_NO_STATUS when it is empty),
 * and the reason (borrowed from `data`). AG_EPROTO for a payload of one
 * byte, a code that may not be sent (§7.4: below 1000, 1004-1006, 1015,
 * 1016-2999 unassigned, 5000 and above) or a reason that is not UTF-8. */
int ag_ws_close_parse(const char *data, size_t len, int *code, const char **reason,
                      size_t *reason_len);

/* True when `s` is well-formed UTF-8 (no overlongs, no surrogates, at most
 * U+10FFFF). */
bool ag_ws_utf8_valid(const void *s, size_t n);

#endif
