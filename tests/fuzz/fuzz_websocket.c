/* WebSocket frames from a peer (agora/websocket.h): the server's parser fed
 * the input in two pieces split where its first byte says (frames that
 * straddle reads), then every close payload it delivers read again. A
 * message delivered is never longer than the limit, text is UTF-8, and a
 * parser that failed gives a close code of the protocol's. */
#include "fuzz.h"

#include "agora/websocket.h"

static int on_message(void *ud, int opcode, const char *data, size_t len)
{
    const ag_ws_limits *lim = ud;
    FUZZ_CHECK(len <= lim->max_message);
    FUZZ_CHECK(data[len] == '\0');
    if (opcode == AG_WS_TEXT) FUZZ_CHECK(ag_ws_utf8_valid(data, len));
    if (opcode == AG_WS_CLOSE) {
        int code;
        const char *reason;
        size_t rlen;
        FUZZ_CHECK(ag_ws_close_parse(data, len, &code, &reason, &rlen) == 0);
    }
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    /* data[0]: fragments allowed or not, and where the stream is cut */
    ag_ws_limits lim = {.max_message = 4096, .allow_fragments = data[0] & 1, .client = false};
    const uint8_t *stream = data + 1;
    size_t n = size - 1, cut = (size_t)(data[0] >> 1) % (n + 1);
    ag_ws_parser p;
    ag_ws_parser_init(&p, &lim);
    int rc = ag_ws_parser_feed(&p, stream, cut, on_message, &lim);
    if (rc == 0) rc = ag_ws_parser_feed(&p, stream + cut, n - cut, on_message, &lim);
    if (rc == AG_EPROTO)
        FUZZ_CHECK(p.close_code == 1002 || p.close_code == 1007 || p.close_code == 1008 ||
                   p.close_code == 1009);
    ag_ws_parser_release(&p);
    /* a close payload on its own */
    int code;
    const char *reason;
    size_t rlen;
    if (ag_ws_close_parse((const char *)data, size, &code, &reason, &rlen) == 0 && size >= 2)
        FUZZ_CHECK(rlen == size - 2 && ag_ws_utf8_valid(reason, rlen));
    return 0;
}
