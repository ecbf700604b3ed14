"""Chunked transfer coding: request bodies decoded, streamed responses
encoded, and HTTP/1.0 clients given an unchunked, close-delimited body."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

BINARY = bytes(range(256)) * 4


class ChunkedRequests(harness.SharedServerTestCase):
    def post_chunked(self, c, target, chunks, ctype="application/octet-stream",
                     trailers=None, per_write=False):
        head = harness.build_request("POST", target, {"Content-Type": ctype,
                                                      "Transfer-Encoding": "chunked"})
        body = harness.chunked_body(chunks, trailers)
        if per_write:
            c.send(head)
            # One write per chunk, with pauses, so the server parses
            # incrementally.
            rest = body
            for ch in chunks:
                n = len(b"%x\r\n" % len(ch)) + len(ch) + 2
                c.send(rest[:n])
                rest = rest[n:]
                time.sleep(0.01)
            c.send(rest)
        else:
            c.send(head + body)
        return c.read_response(method="POST")

    def test_raw_body_decoded(self):
        c = self.connect(self.srv)
        chunks = [b"hello ", b"chunked ", BINARY, b"x" * 5000, b"!"]
        r = self.post_chunked(c, "/v1/raw", chunks, per_write=True)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"".join(chunks))
        self.assertTrue(r.header("Content-Type", "").startswith("application/octet-stream"), r)
        # The connection is still in sync.
        self.assertEqual(c.get("/hello").body, b"hello\n")

    def test_raw_body_in_one_write_with_extension_and_trailer(self):
        c = self.connect(self.srv)
        head = harness.build_request("POST", "/v1/raw", {"Transfer-Encoding": "chunked"})
        body = b"5;name=value\r\nabcde\r\n3\r\nfgh\r\n0\r\nX-Trailer: t\r\n\r\n"
        c.send(head + body)
        r = c.read_response(method="POST")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"abcdefgh")
        self.assertEqual(c.get("/hello").body, b"hello\n")

    def test_raw_content_length_body(self):
        c = self.connect(self.srv)
        r = c.request("POST", "/v1/raw", body=BINARY)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, BINARY)
        r = c.request("POST", "/v1/raw", body=b"")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"")

    def test_echo_chunked_json(self):
        c = self.connect(self.srv)
        obj = {"name": "chunky", "list": list(range(50)), "nested": {"k": "v" * 300}}
        text = json.dumps(obj).encode()
        chunks = [text[i:i + 17] for i in range(0, len(text), 17)]
        r = self.post_chunked(c, "/v1/echo", chunks, ctype="application/json")
        self.assertEqual(self.assertOk(r), obj)

    def test_many_tiny_chunks(self):
        c = self.connect(self.srv)
        chunks = [bytes([65 + i % 26]) for i in range(2000)]
        r = self.post_chunked(c, "/v1/raw", chunks)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"".join(chunks))


class ChunkedResponses(harness.SharedServerTestCase):
    def test_stream_is_chunked(self):
        c = self.connect(self.srv)
        for n, size in ((10, 1000), (3, 5), (200, 4096), (0, 10)):
            r = c.get("/v1/stream?n=%d&size=%d" % (n, size))
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.chunked, "stream answered without chunked encoding: %r" % r)
            self.assertEqual(r.header("Transfer-Encoding"), "chunked", r)
            self.assertIsNone(r.header("Content-Length"), r)
            self.assertRequestId(r)
            self.assertEqual(len(r.body), n * size, "n=%d size=%d" % (n, size))
            self.assertEqual(r.body.strip(b"x"), b"")
        # Keep-alive survives streamed responses.
        self.assertEqual(c.get("/hello").body, b"hello\n")

    def test_stream_default_size(self):
        c = self.connect(self.srv)
        r = c.get("/v1/stream")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.body), 10 * 1000)

    def test_http10_stream_is_unchunked_and_closed(self):
        c = self.connect(self.srv)
        c.send(b"GET /v1/stream?n=20&size=500 HTTP/1.0\r\n\r\n")
        raw = c.read_until_close(10)
        head, sep, body = raw.partition(b"\r\n\r\n")
        self.assertTrue(sep, "no complete response head: %r" % raw[:300])
        self.assertRegex(head.split(b"\r\n")[0], rb"^HTTP/1\.[01] 200 ")
        self.assertNotIn(b"transfer-encoding", head.lower(),
                         "HTTP/1.0 client got Transfer-Encoding: %r" % head)
        self.assertEqual(len(body), 20 * 500, "body of %d bytes, head %r" % (len(body), head))
        self.assertEqual(body.strip(b"x"), b"")

    def test_http10_stream_with_keepalive_still_closes(self):
        """An unchunked stream can only be delimited by closing, whatever the
        client asked."""
        c = self.connect(self.srv)
        c.send(b"GET /v1/stream?n=4&size=100 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        raw = c.read_until_close(10)
        head, _, body = raw.partition(b"\r\n\r\n")
        self.assertNotIn(b"transfer-encoding", head.lower(), head)
        self.assertEqual(body, b"x" * 400)

    def test_head_of_stream(self):
        c = self.connect(self.srv)
        r = c.request("HEAD", "/v1/stream?n=5&size=10")
        self.assertEqual(r.status, 200, r)
        # No body may follow a HEAD response, and a connection the response
        # did not announce as closing must serve the next request.
        c.send(harness.build_request("GET", "/hello"))
        if r.has_token("Connection", "close"):
            rest = c.read_until_close(3)
            self.assertEqual(rest, b"", "bytes after a HEAD response: %r" % rest[:100])
            return
        try:
            r2 = c.read_response()
        except harness.ConnectionClosed as e:
            self.fail("the server closed the connection after HEAD of a stream without "
                      "sending Connection: close (%s); HEAD head: %r" % (e, r.raw_head))
        self.assertEqual(r2.status, 200, "HEAD of a stream left bytes on the connection: %r"
                         % r2)
        self.assertEqual(r2.body, b"hello\n")


if __name__ == "__main__":
    harness.main()
