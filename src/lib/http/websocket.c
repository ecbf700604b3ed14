/*
 * websocket.c — RFC 6455 for servers: the opening handshake and the frame
 * codec declared in agora/websocket.h.
 *
 * Hand-written because no WebSocket library is among the Debian -dev
 * packages Agora may build against (libuv, llhttp, jansson, sqlite3, libpq,
 * libnats, librabbitmq, hiredis, libsodium, OpenSSL, libcurl, cmocka); the
 * handshake's SHA-1 and base64 come from OpenSSL. The connection around the
 * codec (timers, pings, close handshake) lives with its owner
 * (services/notifications/ws.c). docs/internals/websocket.md explains the
 * frame layout and the checks.
 *
 * The parser never trusts a length before checking it against the limits,
 * and refuses a message at its header, before reading its payload: a client
 * cannot make the server buffer more than max_message bytes plus one
 * control frame.
 */
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <string.h>
#include <strings.h>

#include "agora/error.h"
#include "agora/websocket.h"

enum { S_HEAD, S_PAYLOAD, S_FAILED };

#define DEFAULT_MAX_MESSAGE (1u << 20)

/* ---- Handshake -------------------------------------------------------------------- */

int ag_ws_accept_key(const char *key, char out[AG_WS_ACCEPT_LEN + 1])
{
    if (!key) return AG_EINVAL;
    /* The key is base64 of 16 random bytes: 24 characters ending in "==". */
    size_t n = strlen(key);
    if (n != 24 || key[22] != '=' || key[23] != '=') return AG_EINVAL;
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < 22; i++)
        if (!memchr(b64, key[i], 64)) return AG_EINVAL;
    /* The 22nd character carries the last 2 bits of byte 16 and 4 zero bits. */
    if (!strchr("AQgw", key[21])) return AG_EINVAL;
    char cat[24 + sizeof AG_WS_GUID];
    memcpy(cat, key, 24);
    memcpy(cat + 24, AG_WS_GUID, sizeof AG_WS_GUID);
    unsigned char digest[SHA_DIGEST_LENGTH];
    unsigned int dlen = 0;
    if (EVP_Digest(cat, 24 + sizeof AG_WS_GUID - 1, digest, &dlen, EVP_sha1(), NULL) != 1 ||
        dlen != SHA_DIGEST_LENGTH)
        return AG_EIO;
    EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
    out[AG_WS_ACCEPT_LEN] = '\0';
    return 0;
}

/* True when the comma-separated header value `v` lists `token`
 * (case-insensitive, spaces around items ignored). */
static bool has_token(const char *v, const char *token)
{
    size_t tl = strlen(token);
    while (v && *v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *end = v;
        while (*end && *end != ',')
            end++;
        const char *e = end;
        while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - v) == tl && strncasecmp(v, token, tl) == 0) return true;
        v = end;
    }
    return false;
}

int ag_ws_handshake_check(const ag_http_req *req, char accept[AG_WS_ACCEPT_LEN + 1], int *status,
                          const char **why)
{
    *status = 400;
    if (strcmp(ag_req_method(req), "GET") != 0) {
        *why = "a WebSocket handshake is a GET";
        return AG_EINVAL;
    }
    const char *up = ag_req_header(req, "Upgrade");
    if (!up || !has_token(up, "websocket")) {
        *why = "this endpoint speaks WebSocket: send Upgrade: websocket";
        *status = 426;
        return AG_EINVAL;
    }
    if (!has_token(ag_req_header(req, "Connection"), "upgrade")) {
        *why = "the Connection header must list upgrade";
        return AG_EINVAL;
    }
    const char *ver = ag_req_header(req, "Sec-WebSocket-Version");
    if (!ver || strcmp(ver, "13") != 0) {
        *why = "only WebSocket version 13 is spoken";
        *status = 426;
        return AG_EINVAL;
    }
    if (ag_ws_accept_key(ag_req_header(req, "Sec-WebSocket-Key"), accept) < 0) {
        *why = "Sec-WebSocket-Key must be 16 bytes in base64";
        return AG_EINVAL;
    }
    *status = 101;
    *why = NULL;
    return 0;
}

int ag_ws_upgrade(ag_http_req *req, ag_http_res *res, const char *accept, const ag_tunnel_cbs *cbs,
                  void *ud)
{
    (void)req;
    /* "Connection: Upgrade" is written by the server for every 101. */
    ag_res_header(res, "Upgrade", "websocket");
    ag_res_header(res, "Sec-WebSocket-Accept", accept);
    return ag_res_tunnel(res, 101, cbs, ud);
}

/* ---- Encoding ----------------------------------------------------------------------- */

static bool opcode_known(int op)
{
    return op == AG_WS_CONT || op == AG_WS_TEXT || op == AG_WS_BINARY || op == AG_WS_CLOSE ||
           op == AG_WS_PING || op == AG_WS_PONG;
}

int ag_ws_frame_append(ag_buf *out, int opcode, bool fin, const uint8_t mask[4], const void *data,
                       size_t len)
{
    if (!opcode_known(opcode)) return AG_EINVAL;
    if ((opcode & 0x8) && (!fin || len > AG_WS_MAX_CONTROL)) return AG_EINVAL;
    uint8_t h[AG_WS_MAX_HEADER];
    size_t hl = 0;
    h[hl++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    uint8_t m = mask ? 0x80 : 0;
    if (len < 126) {
        h[hl++] = (uint8_t)(m | len);
    } else if (len <= 0xFFFF) {
        h[hl++] = (uint8_t)(m | 126);
        h[hl++] = (uint8_t)(len >> 8);
        h[hl++] = (uint8_t)len;
    } else {
        h[hl++] = (uint8_t)(m | 127);
        for (int i = 7; i >= 0; i--)
            h[hl++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    if (mask) {
        memcpy(h + hl, mask, 4);
        hl += 4;
    }
    if (ag_buf_reserve(out, hl + len) < 0) return AG_ETOOBIG;
    ag_buf_append(out, h, hl);
    size_t at = out->len;
    if (len) ag_buf_append(out, data, len);
    if (mask)
        for (size_t i = 0; i < len; i++)
            out->data[at + i] = (char)(out->data[at + i] ^ mask[i & 3]);
    return 0;
}

int ag_ws_close_append(ag_buf *out, int code, const char *reason)
{
    if (code == 0) return ag_ws_frame_append(out, AG_WS_CLOSE, true, NULL, NULL, 0);
    char p[AG_WS_MAX_CONTROL];
    p[0] = (char)(code >> 8);
    p[1] = (char)code;
    size_t n = reason ? strlen(reason) : 0;
    if (n > AG_WS_MAX_CONTROL - 2) {
        n = AG_WS_MAX_CONTROL - 2;
        /* Back off to the start of a UTF-8 sequence so the reason stays valid. */
        while (n > 0 && ((unsigned char)reason[n] & 0xC0) == 0x80)
            n--;
    }
    if (n) memcpy(p + 2, reason, n);
    return ag_ws_frame_append(out, AG_WS_CLOSE, true, NULL, p, n + 2);
}

/* ---- UTF-8 and close payloads -------------------------------------------------------- */

bool ag_ws_utf8_valid(const void *s, size_t n)
{
    const unsigned char *p = s;
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            cp = c & 0x07;
        } else {
            return false; /* continuation byte first, overlong 2-byte lead, or > U+10FFFF */
        }
        if (n - i - 1 < need) return false;
        for (size_t k = 1; k <= need; k++) {
            if ((p[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if ((need == 2 && cp < 0x800) || (need == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += need + 1;
    }
    return true;
}

static bool close_code_ok(int code)
{
    if (code >= 3000 && code <= 4999) return true; /* libraries and applications */
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014);
}

int ag_ws_close_parse(const char *data, size_t len, int *code, const char **reason,
                      size_t *reason_len)
{
    *reason = data ? data + (len >= 2 ? 2 : len) : "";
    *reason_len = 0;
    if (len == 0) {
        *code = AG_WS_NO_STATUS;
        return 0;
    }
    if (len == 1) return AG_EPROTO;
    int c = ((unsigned char)data[0] << 8) | (unsigned char)data[1];
    if (!close_code_ok(c) || !ag_ws_utf8_valid(data + 2, len - 2)) return AG_EPROTO;
    *code = c;
    *reason_len = len - 2;
    return 0;
}

/* ---- Parsing ----------------------------------------------------------------------- */

void ag_ws_parser_init(ag_ws_parser *p, const ag_ws_limits *lim)
{
    memset(p, 0, sizeof *p);
    if (lim) p->lim = *lim;
    if (!p->lim.max_message) p->lim.max_message = DEFAULT_MAX_MESSAGE;
    p->state = S_HEAD;
    p->head_need = 2;
    /* One byte over the limit so that the terminating NUL always fits. */
    ag_buf_init(&p->msg, p->lim.max_message + 1);
}

void ag_ws_parser_release(ag_ws_parser *p)
{
    ag_buf_release(&p->msg);
}

static int fail(ag_ws_parser *p, int code, const char *why)
{
    p->state = S_FAILED;
    p->close_code = code;
    p->why = why;
    return AG_EPROTO;
}

/* The header is complete: check it against the rules and the limits. */
static int header_done(ag_ws_parser *p)
{
    const uint8_t *h = p->head;
    p->fin = h[0] & 0x80;
    p->opcode = h[0] & 0x0F;
    p->masked = h[1] & 0x80;
    if (h[0] & 0x70) return fail(p, AG_WS_PROTOCOL_ERROR, "reserved bits set without an extension");
    if (!opcode_known(p->opcode)) return fail(p, AG_WS_PROTOCOL_ERROR, "unknown opcode");
    if (p->masked == p->lim.client)
        return fail(p, AG_WS_PROTOCOL_ERROR,
                    p->lim.client ? "a server frame must not be masked"
                                  : "a client frame must be masked");
    uint64_t len = h[1] & 0x7F;
    size_t at = 2;
    if (len == 126) {
        len = ((uint64_t)h[2] << 8) | h[3];
        at = 4;
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | h[2 + i];
        at = 10;
        if (len >> 63) return fail(p, AG_WS_PROTOCOL_ERROR, "frame length has its top bit set");
    }
    if (p->masked) memcpy(p->mask, h + at, 4);
    p->payload_len = len;
    p->payload_got = 0;
    if (p->opcode & 0x8) {
        if (!p->fin) return fail(p, AG_WS_PROTOCOL_ERROR, "a control frame may not be fragmented");
        if (len > AG_WS_MAX_CONTROL)
            return fail(p, AG_WS_PROTOCOL_ERROR, "a control frame carries at most 125 bytes");
        return 0;
    }
    if (p->opcode == AG_WS_CONT) {
        if (!p->msg_opcode)
            return fail(p, AG_WS_PROTOCOL_ERROR, "a continuation without a message");
    } else {
        if (p->msg_opcode)
            return fail(p, AG_WS_PROTOCOL_ERROR, "a new message before the last one ended");
        if (!p->fin && !p->lim.allow_fragments)
            return fail(p, AG_WS_POLICY, "fragmented messages are not accepted");
        p->msg_opcode = p->opcode;
        p->msg.len = 0;
    }
    if (len > p->lim.max_message - p->msg.len) return fail(p, AG_WS_TOO_BIG, "message too big");
    return 0;
}

/* Frame complete: hand over what it completes. */
static int frame_done(ag_ws_parser *p, ag_ws_message_fn fn, void *ud)
{
    p->state = S_HEAD;
    p->head_len = 0;
    p->head_need = 2;
    if (p->opcode & 0x8) {
        size_t n = (size_t)p->payload_len;
        p->ctrl[n] = '\0';
        if (p->opcode == AG_WS_CLOSE) {
            int code;
            const char *r;
            size_t rl;
            if (ag_ws_close_parse(p->ctrl, n, &code, &r, &rl) < 0)
                return fail(p, AG_WS_PROTOCOL_ERROR, "malformed close frame");
        }
        return fn(ud, p->opcode, p->ctrl, n);
    }
    if (!p->fin) return 0;
    int op = p->msg_opcode;
    p->msg_opcode = 0;
    if (op == AG_WS_TEXT && !ag_ws_utf8_valid(p->msg.data, p->msg.len))
        return fail(p, AG_WS_BAD_DATA, "text message is not UTF-8");
    size_t n = p->msg.len;
    p->msg.len = 0;
    if (!p->msg.data) ag_buf_reserve(&p->msg, 1);
    p->msg.data[n] = '\0';
    return fn(ud, op, p->msg.data, n);
}

int ag_ws_parser_feed(ag_ws_parser *p, const void *data, size_t len, ag_ws_message_fn fn, void *ud)
{
    const uint8_t *in = data;
    size_t i = 0;
    if (p->state == S_FAILED) return AG_EPROTO;
    while (i < len || (p->state == S_PAYLOAD && p->payload_got == p->payload_len)) {
        if (p->state == S_HEAD) {
            while (p->head_len < p->head_need && i < len)
                p->head[p->head_len++] = in[i++];
            if (p->head_len < p->head_need) break;
            if (p->head_need == 2) { /* now the full header size is known */
                size_t ext = (p->head[1] & 0x7F) == 126 ? 2 : (p->head[1] & 0x7F) == 127 ? 8 : 0;
                p->head_need = 2 + ext + ((p->head[1] & 0x80) ? 4 : 0);
                if (p->head_need > 2) continue;
            }
            int rc = header_done(p);
            if (rc < 0) return rc;
            p->state = S_PAYLOAD;
            continue;
        }
        /* S_PAYLOAD */
        uint64_t left = p->payload_len - p->payload_got;
        size_t take = len - i < left ? len - i : (size_t)left;
        char *dst;
        if (p->opcode & 0x8) {
            dst = p->ctrl + p->payload_got;
        } else {
            if (ag_buf_reserve(&p->msg, take + 1) < 0)
                return fail(p, AG_WS_TOO_BIG, "message too big");
            dst = p->msg.data + p->msg.len;
            p->msg.len += take;
        }
        for (size_t k = 0; k < take; k++) {
            uint8_t b = in[i + k];
            if (p->masked) b ^= p->mask[(p->payload_got + k) & 3];
            dst[k] = (char)b;
        }
        i += take;
        p->payload_got += take;
        if (p->payload_got == p->payload_len) {
            int rc = frame_done(p, fn, ud);
            if (rc != 0) return rc;
        }
    }
    return 0;
}
