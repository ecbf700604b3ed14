/* Unit tests of src/lib/http/websocket.c: the accept key of RFC 6455 §1.3,
 * frame encoding (lengths 7/16/64 bit, masking), the parser fed whole and
 * byte by byte, fragments with interleaved pings, and every refusal with
 * its close code: unmasked client frames, reserved bits, unknown opcodes,
 * fragmented or long control frames, fragments when refused, oversize
 * messages (refused at the header), bad UTF-8, bad close payloads. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "agora/error.h"
#include "agora/websocket.h"

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

typedef struct got {
    int n;
    int op[16];
    size_t len[16];
    char *data[16];
    int stop_at; /* return 1 from this message (1-based); 0: never */
} got;

static int collect(void *ud, int opcode, const char *data, size_t len)
{
    got *g = ud;
    assert_true(g->n < 16);
    assert_int_equal(data[len], '\0');
    g->op[g->n] = opcode;
    g->len[g->n] = len;
    g->data[g->n] = malloc(len + 1);
    memcpy(g->data[g->n], data, len + 1);
    g->n++;
    return g->stop_at && g->n == g->stop_at ? 1 : 0;
}

static void got_free(got *g)
{
    for (int i = 0; i < g->n; i++)
        free(g->data[i]);
    memset(g, 0, sizeof *g);
}

static ag_ws_parser server_parser(size_t max, bool fragments)
{
    ag_ws_limits l = {.max_message = max, .allow_fragments = fragments, .client = false};
    ag_ws_parser p;
    ag_ws_parser_init(&p, &l);
    return p;
}

/* A masked client frame. */
static void frame(ag_buf *b, int op, bool fin, const void *data, size_t len)
{
    assert_int_equal(ag_ws_frame_append(b, op, fin, MASK, data, len), 0);
}

static void test_accept_key(void **state)
{
    (void)state;
    char out[AG_WS_ACCEPT_LEN + 1];
    /* The example of RFC 6455 §1.3. */
    assert_int_equal(ag_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out), 0);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_int_equal(ag_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ", out), AG_EINVAL);
    assert_int_equal(ag_ws_accept_key("dGhlIHNhbXBsZSBub25j====", out), AG_EINVAL);
    assert_int_equal(ag_ws_accept_key("!!!!!!!!!!!!!!!!!!!!!!==", out), AG_EINVAL);
    assert_int_equal(ag_ws_accept_key("", out), AG_EINVAL);
    assert_int_equal(ag_ws_accept_key(NULL, out), AG_EINVAL);
}

static void test_encode_lengths(void **state)
{
    (void)state;
    size_t sizes[] = {0, 5, 125, 126, 65535, 65536, 200000};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        size_t n = sizes[k];
        char *payload = malloc(n + 1);
        for (size_t i = 0; i < n; i++)
            payload[i] = (char)('a' + i % 26);
        ag_buf b;
        ag_buf_init(&b, 0);
        assert_int_equal(ag_ws_frame_append(&b, AG_WS_TEXT, true, NULL, payload, n), 0);
        size_t hl = n < 126 ? 2 : n <= 65535 ? 4 : 10;
        assert_int_equal(b.len, hl + n);
        assert_int_equal((uint8_t)b.data[0], 0x81);
        assert_int_equal((uint8_t)b.data[1] & 0x80, 0); /* a server does not mask */
        if (n) assert_memory_equal(b.data + hl, payload, n);
        /* And a client parser reads it back. */
        ag_ws_limits l = {.max_message = 1 << 20, .client = true};
        ag_ws_parser p;
        ag_ws_parser_init(&p, &l);
        got g = {0};
        assert_int_equal(ag_ws_parser_feed(&p, b.data, b.len, collect, &g), 0);
        assert_int_equal(g.n, 1);
        assert_int_equal(g.op[0], AG_WS_TEXT);
        assert_int_equal(g.len[0], n);
        if (n) assert_memory_equal(g.data[0], payload, n);
        got_free(&g);
        ag_ws_parser_release(&p);
        ag_buf_release(&b);
        free(payload);
    }
}

static void test_encode_refusals(void **state)
{
    (void)state;
    ag_buf b;
    ag_buf_init(&b, 0);
    char big[126] = {0};
    assert_int_equal(ag_ws_frame_append(&b, AG_WS_PING, true, NULL, big, 126), AG_EINVAL);
    assert_int_equal(ag_ws_frame_append(&b, AG_WS_PING, false, NULL, big, 1), AG_EINVAL);
    assert_int_equal(ag_ws_frame_append(&b, 3, true, NULL, big, 1), AG_EINVAL);
    assert_int_equal(b.len, 0);
    ag_buf_release(&b);
    ag_buf_init(&b, 10);
    assert_int_equal(ag_ws_frame_append(&b, AG_WS_TEXT, true, NULL, big, 20), AG_ETOOBIG);
    assert_int_equal(b.len, 0);
    ag_buf_release(&b);
}

static void test_masked_roundtrip_byte_by_byte(void **state)
{
    (void)state;
    ag_buf b;
    ag_buf_init(&b, 0);
    frame(&b, AG_WS_TEXT, true, "{\"type\":\"auth\"}", 15);
    frame(&b, AG_WS_PING, true, "hi", 2);
    frame(&b, AG_WS_BINARY, true, "\x00\x01\x02", 3);
    frame(&b, AG_WS_TEXT, true, "", 0);
    /* The payload on the wire is masked. */
    assert_memory_not_equal(b.data + 6, "{\"type\"", 7);
    ag_ws_parser p = server_parser(1024, false);
    got g = {0};
    for (size_t i = 0; i < b.len; i++)
        assert_int_equal(ag_ws_parser_feed(&p, b.data + i, 1, collect, &g), 0);
    assert_int_equal(g.n, 4);
    assert_int_equal(g.op[0], AG_WS_TEXT);
    assert_string_equal(g.data[0], "{\"type\":\"auth\"}");
    assert_int_equal(g.op[1], AG_WS_PING);
    assert_string_equal(g.data[1], "hi");
    assert_int_equal(g.op[2], AG_WS_BINARY);
    assert_int_equal(g.len[2], 3);
    assert_memory_equal(g.data[2], "\x00\x01\x02", 3);
    assert_int_equal(g.op[3], AG_WS_TEXT);
    assert_int_equal(g.len[3], 0);
    got_free(&g);
    ag_ws_parser_release(&p);
    ag_buf_release(&b);
}

static void test_fragments_with_ping_between(void **state)
{
    (void)state;
    ag_buf b;
    ag_buf_init(&b, 0);
    frame(&b, AG_WS_TEXT, false, "Hel", 3);
    frame(&b, AG_WS_PING, true, "p", 1);
    frame(&b, AG_WS_CONT, false, "lo, ", 4);
    frame(&b, AG_WS_CONT, true, "w\xc3\xb6rld", 7);
    ag_ws_parser p = server_parser(1024, true);
    got g = {0};
    assert_int_equal(ag_ws_parser_feed(&p, b.data, b.len, collect, &g), 0);
    assert_int_equal(g.n, 2);
    assert_int_equal(g.op[0], AG_WS_PING);
    assert_int_equal(g.op[1], AG_WS_TEXT);
    assert_string_equal(g.data[1], "Hello, w\xc3\xb6rld");
    got_free(&g);
    ag_ws_parser_release(&p);
    ag_buf_release(&b);
}

static void test_stop_from_callback(void **state)
{
    (void)state;
    ag_buf b;
    ag_buf_init(&b, 0);
    frame(&b, AG_WS_TEXT, true, "one", 3);
    frame(&b, AG_WS_TEXT, true, "two", 3);
    ag_ws_parser p = server_parser(1024, false);
    got g = {.stop_at = 1};
    assert_int_equal(ag_ws_parser_feed(&p, b.data, b.len, collect, &g), 1);
    assert_int_equal(g.n, 1);
    got_free(&g);
    ag_ws_parser_release(&p);
    ag_buf_release(&b);
}

/* Feeds `wire` to a fresh server parser and expects AG_EPROTO with `code`. */
static void expect_refusal(const void *wire, size_t len, size_t max, bool fragments, int code)
{
    ag_ws_parser p = server_parser(max, fragments);
    got g = {0};
    assert_int_equal(ag_ws_parser_feed(&p, wire, len, collect, &g), AG_EPROTO);
    assert_int_equal(p.close_code, code);
    assert_non_null(p.why);
    /* Once failed, always failed. */
    assert_int_equal(ag_ws_parser_feed(&p, "x", 1, collect, &g), AG_EPROTO);
    got_free(&g);
    ag_ws_parser_release(&p);
}

static void test_refusals(void **state)
{
    (void)state;
    ag_buf b;
    /* Unmasked client frame. */
    ag_buf_init(&b, 0);
    ag_ws_frame_append(&b, AG_WS_TEXT, true, NULL, "hi", 2);
    expect_refusal(b.data, b.len, 1024, false, AG_WS_PROTOCOL_ERROR);
    ag_buf_release(&b);
    /* Reserved bit (RSV1: a compressed frame nobody negotiated). */
    ag_buf_init(&b, 0);
    frame(&b, AG_WS_TEXT, true, "hi", 2);
    b.data[0] = (char)(b.data[0] | 0x40);
    expect_refusal(b.data, b.len, 1024, false, AG_WS_PROTOCOL_ERROR);
    ag_buf_release(&b);
    /* Unknown opcode 3. */
    uint8_t op3[] = {0x83, 0x80, 1, 2, 3, 4};
    expect_refusal(op3, sizeof op3, 1024, false, AG_WS_PROTOCOL_ERROR);
    /* A fragmented ping. */
    uint8_t ping[] = {0x09, 0x80, 1, 2, 3, 4};
    expect_refusal(ping, sizeof ping, 1024, false, AG_WS_PROTOCOL_ERROR);
    /* A ping announcing 126 bytes. */
    uint8_t longping[] = {0x89, 0xFE, 0x00, 0x7E, 1, 2, 3, 4};
    expect_refusal(longping, sizeof longping, 1024, false, AG_WS_PROTOCOL_ERROR);
    /* A continuation with no message, and a new message inside one. */
    ag_buf_init(&b, 0);
    frame(&b, AG_WS_CONT, true, "x", 1);
    expect_refusal(b.data, b.len, 1024, true, AG_WS_PROTOCOL_ERROR);
    ag_buf_release(&b);
    ag_buf_init(&b, 0);
    frame(&b, AG_WS_TEXT, false, "x", 1);
    frame(&b, AG_WS_TEXT, true, "y", 1);
    expect_refusal(b.data, b.len, 1024, true, AG_WS_PROTOCOL_ERROR);
    ag_buf_release(&b);
    /* Fragments refused by policy. */
    ag_buf_init(&b, 0);
    frame(&b, AG_WS_TEXT, false, "x", 1);
    expect_refusal(b.data, b.len, 1024, false, AG_WS_POLICY);
    ag_buf_release(&b);
    /* Too big: refused at the header, before any payload arrives. */
    uint8_t huge[] = {0x81, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4};
    expect_refusal(huge, sizeof huge, 1024, false, AG_WS_TOO_BIG);
    uint8_t top[] = {0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
    expect_refusal(top, sizeof top, 1024, false, AG_WS_PROTOCOL_ERROR);
    /* Too big across fragments. */
    char kb[600];
    memset(kb, 'a', sizeof kb);
    ag_buf_init(&b, 0);
    frame(&b, AG_WS_TEXT, false, kb, sizeof kb);
    frame(&b, AG_WS_CONT, true, kb, sizeof kb);
    expect_refusal(b.data, b.len, 1024, true, AG_WS_TOO_BIG);
    ag_buf_release(&b);
    /* Not UTF-8. */
    ag_buf_init(&b, 0);
    frame(&b, AG_WS_TEXT, true, "\xc3\x28", 2);
    expect_refusal(b.data, b.len, 1024, false, AG_WS_BAD_DATA);
    ag_buf_release(&b);
    /* Close frames: one byte, a forbidden code, a bad reason. */
    ag_buf_init(&b, 0);
    frame(&b, AG_WS_CLOSE, true, "\x03", 1);
    expect_refusal(b.data, b.len, 1024, false, AG_WS_PROTOCOL_ERROR);
    ag_buf_release(&b);
    ag_buf_init(&b, 0);
    frame(&b, AG_WS_CLOSE, true, "\x03\xed", 2); /* 1005 may not be sent */
    expect_refusal(b.data, b.len, 1024, false, AG_WS_PROTOCOL_ERROR);
    ag_buf_release(&b);
    ag_buf_init(&b, 0);
    frame(&b, AG_WS_CLOSE, true, "\x03\xe8\xff", 3);
    expect_refusal(b.data, b.len, 1024, false, AG_WS_PROTOCOL_ERROR);
    ag_buf_release(&b);
}

static void test_close_frames(void **state)
{
    (void)state;
    ag_buf b;
    ag_buf_init(&b, 0);
    assert_int_equal(ag_ws_close_append(&b, AG_WS_POLICY, "authentication failed"), 0);
    assert_int_equal((uint8_t)b.data[0], 0x88);
    assert_int_equal(b.data[1], 2 + 21);
    int code;
    const char *reason;
    size_t rl;
    assert_int_equal(ag_ws_close_parse(b.data + 2, (size_t)b.data[1], &code, &reason, &rl), 0);
    assert_int_equal(code, 1008);
    assert_int_equal(rl, 21);
    assert_memory_equal(reason, "authentication failed", 21);
    ag_buf_release(&b);
    /* A long reason is cut to fit, at a character boundary. */
    char longr[300];
    for (int i = 0; i < 299; i += 2) {
        longr[i] = (char)0xc3;
        longr[i + 1] = (char)0xa9;
    }
    longr[298] = '\0';
    ag_buf_init(&b, 0);
    assert_int_equal(ag_ws_close_append(&b, 1000, longr), 0);
    size_t n = (uint8_t)b.data[1];
    assert_true(n <= 125);
    assert_int_equal(ag_ws_close_parse(b.data + 2, n, &code, &reason, &rl), 0);
    ag_buf_release(&b);
    /* Empty: no status. Application codes pass. */
    assert_int_equal(ag_ws_close_parse("", 0, &code, &reason, &rl), 0);
    assert_int_equal(code, AG_WS_NO_STATUS);
    assert_int_equal(ag_ws_close_parse("\x0f\xa0", 2, &code, &reason, &rl), 0);
    assert_int_equal(code, 4000);
    assert_int_equal(ag_ws_close_parse("\x03\xe7", 2, &code, &reason, &rl), AG_EPROTO); /* 999 */
    assert_int_equal(ag_ws_close_parse("\x13\x88", 2, &code, &reason, &rl), AG_EPROTO); /* 5000 */
    /* The parser hands a good close frame over. */
    ag_buf_init(&b, 0);
    frame(&b, AG_WS_CLOSE, true,
          "\x03\xe8"
          "bye",
          5);
    ag_ws_parser p = server_parser(1024, false);
    got g = {0};
    assert_int_equal(ag_ws_parser_feed(&p, b.data, b.len, collect, &g), 0);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.op[0], AG_WS_CLOSE);
    assert_int_equal(g.len[0], 5);
    got_free(&g);
    ag_ws_parser_release(&p);
    ag_buf_release(&b);
}

static void test_utf8(void **state)
{
    (void)state;
    assert_true(ag_ws_utf8_valid("", 0));
    assert_true(ag_ws_utf8_valid("plain", 5));
    assert_true(ag_ws_utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9));
    assert_false(ag_ws_utf8_valid("\xc0\xaf", 2));         /* overlong */
    assert_false(ag_ws_utf8_valid("\xe0\x80\xaf", 3));     /* overlong */
    assert_false(ag_ws_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(ag_ws_utf8_valid("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
    assert_false(ag_ws_utf8_valid("\xe2\x82", 2));         /* truncated */
    assert_false(ag_ws_utf8_valid("\x80", 1));             /* stray continuation */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_key),
        cmocka_unit_test(test_encode_lengths),
        cmocka_unit_test(test_encode_refusals),
        cmocka_unit_test(test_masked_roundtrip_byte_by_byte),
        cmocka_unit_test(test_fragments_with_ping_between),
        cmocka_unit_test(test_stop_from_callback),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_close_frames),
        cmocka_unit_test(test_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
