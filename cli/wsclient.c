/*
 * wsclient.c — a small blocking WebSocket client for `agora demo`'s chat
 * tour (tour.h): it connects to the gateway's /api/v1/ws the way a browser
 * does and waits for frames, so the tour can show a message arriving live.
 *
 * Written on a plain socket with libagora's frame codec (agora/websocket.h
 * in client mode) rather than a library: Debian ships no C WebSocket client
 * library that the project allows, and the codec is ours already. Only what
 * the tour needs: ws:// on loopback, one text message at a time, pings
 * answered, a deadline per wait.
 */
#include <netdb.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agora/error.h"
#include "agora/websocket.h"
#include "tour.h"

/* Splits "http://host:port" into host and port. */
static int host_port(const char *url, char *host, size_t hn, char *port, size_t pn)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *colon = strrchr(p, ':');
    const char *slash = strchr(p, '/');
    size_t hl = colon ? (size_t)(colon - p) : (slash ? (size_t)(slash - p) : strlen(p));
    if (hl == 0 || hl >= hn) return AG_EINVAL;
    memcpy(host, p, hl);
    host[hl] = '\0';
    if (colon) {
        size_t pl = slash && slash > colon ? (size_t)(slash - colon - 1) : strlen(colon + 1);
        if (pl == 0 || pl >= pn) return AG_EINVAL;
        memcpy(port, colon + 1, pl);
        port[pl] = '\0';
    } else {
        snprintf(port, pn, "80");
    }
    return 0;
}

static int send_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0) return AG_EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Sends one masked frame, as a client must. */
static int send_frame(cli_ws *w, int opcode, const void *data, size_t len)
{
    uint8_t mask[4];
    randombytes_buf(mask, sizeof mask);
    ag_buf b;
    ag_buf_init(&b, 0);
    int rc = ag_ws_frame_append(&b, opcode, true, mask, data, len);
    if (rc == 0) rc = send_all(w->fd, b.data, b.len);
    ag_buf_release(&b);
    return rc;
}

int cli_ws_open(cli_ws *w, const char *base_url, const char *path, const char *token)
{
    memset(w, 0, sizeof w[0]);
    w->fd = -1;
    char host[256], port[16];
    if (host_port(base_url, host, sizeof host, port, sizeof port) < 0) return AG_EINVAL;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(host, port, &hints, &ai) != 0) return AG_ECONNREFUSED;
    int fd = socket(ai->ai_family, ai->ai_socktype, 0);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        if (fd >= 0) close(fd);
        freeaddrinfo(ai);
        return AG_ECONNREFUSED;
    }
    freeaddrinfo(ai);
    w->fd = fd;
    unsigned char raw[16];
    char key[32];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(key, sizeof key, raw, sizeof raw, sodium_base64_VARIANT_ORIGINAL);
    ag_buf req;
    ag_buf_init(&req, 0);
    ag_buf_printf(&req,
                  "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                  "Authorization: Bearer %s\r\n\r\n",
                  path, host, port, key, token);
    int rc = send_all(fd, req.data, req.len);
    ag_buf_release(&req);
    /* The answer's head; what follows it is the first frames. */
    char head[8192];
    size_t got = 0;
    char *end = NULL;
    while (rc == 0 && !end) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 5000) <= 0) {
            rc = AG_ETIMEDOUT;
            break;
        }
        ssize_t n = recv(fd, head + got, sizeof head - 1 - got, 0);
        if (n <= 0) {
            rc = AG_ECLOSED;
            break;
        }
        got += (size_t)n;
        head[got] = '\0';
        end = strstr(head, "\r\n\r\n");
        if (!end && got == sizeof head - 1) rc = AG_EPROTO;
    }
    if (rc == 0) {
        w->status = (int)strtol(head + 9, NULL, 10); /* "HTTP/1.1 101" */
        if (w->status != 101) rc = AG_EPROTO;
    }
    if (rc < 0) {
        cli_ws_close(w);
        return rc;
    }
    ag_ws_limits lim = {.max_message = 1u << 20, .allow_fragments = true, .client = true};
    ag_ws_parser_init(&w->parser, &lim);
    w->parsing = true;
    size_t rest = got - (size_t)(end + 4 - head);
    if (rest > 0) {
        w->pending = ag_malloc(rest);
        memcpy(w->pending, end + 4, rest);
        w->npending = rest;
    }
    return 0;
}

/* The parser's callback: keeps the first text message, answers pings. */
static int on_frame(void *ud, int opcode, const char *data, size_t len)
{
    cli_ws *w = ud;
    if (opcode == AG_WS_PING) return send_frame(w, AG_WS_PONG, data, len) < 0 ? AG_EIO : 0;
    if (opcode == AG_WS_CLOSE) return AG_ECLOSED;
    if (opcode != AG_WS_TEXT) return 0;
    w->msg = json_loadb(data, len, 0, NULL);
    return w->msg ? 1 : 0; /* 1: stop here, one message at a time */
}

json_t *cli_ws_next(cli_ws *w, const char *type, int timeout_ms)
{
    if (w->fd < 0) {
        w->ended = true;
        return NULL;
    }
    double deadline = tour_now_s() + timeout_ms / 1000.0;
    for (;;) {
        /* Bytes already read, one at a time so that none is lost after a
         * message: the tour reads a handful of small frames. */
        while (w->npending > w->pos) {
            int rc = ag_ws_parser_feed(&w->parser, w->pending + w->pos, 1, on_frame, w);
            w->pos++;
            if (rc < 0) {
                w->ended = true; /* a close frame, or bytes that are not WebSocket */
                return NULL;
            }
            if (rc == 1) {
                json_t *m = w->msg;
                w->msg = NULL;
                const char *t = json_string_value(json_object_get(m, "type"));
                if (!type || (t && strcmp(t, type) == 0)) return m;
                json_decref(m);
            }
        }
        ag_free(w->pending);
        w->pending = NULL;
        w->npending = w->pos = 0;
        int left = (int)((deadline - tour_now_s()) * 1000);
        if (left <= 0) return NULL;
        struct pollfd pfd = {.fd = w->fd, .events = POLLIN};
        if (poll(&pfd, 1, left) <= 0) return NULL;
        char buf[16384];
        ssize_t n = recv(w->fd, buf, sizeof buf, 0);
        if (n <= 0) {
            w->ended = true;
            return NULL;
        }
        w->pending = ag_malloc((size_t)n);
        memcpy(w->pending, buf, (size_t)n);
        w->npending = (size_t)n;
    }
}

int cli_ws_send_json(cli_ws *w, json_t *msg)
{
    char *s = json_dumps(msg, JSON_COMPACT);
    int rc = s ? send_frame(w, AG_WS_TEXT, s, strlen(s)) : AG_ENOMEM;
    free(s);
    return rc;
}

void cli_ws_close(cli_ws *w)
{
    if (w->fd >= 0) {
        uint8_t mask[4] = {1, 2, 3, 4};
        ag_buf b;
        ag_buf_init(&b, 0);
        unsigned char code[2] = {0x03, 0xE8}; /* 1000, normal closure */
        if (ag_ws_frame_append(&b, AG_WS_CLOSE, true, mask, code, 2) == 0)
            (void)send_all(w->fd, b.data, b.len);
        ag_buf_release(&b);
        close(w->fd);
        w->fd = -1;
    }
    if (w->parsing) ag_ws_parser_release(&w->parser);
    w->parsing = false;
    json_decref(w->msg);
    w->msg = NULL;
    ag_free(w->pending);
    w->pending = NULL;
    w->npending = w->pos = 0;
}
