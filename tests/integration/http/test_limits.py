"""Limits and bad input: every hostile or malformed request gets a clear 4xx
(431, 413, 415, 400, 422, 404, 405) with the error envelope and a request id,
and the connection is closed whenever the stream can no longer be trusted."""

import json
import os
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

JSON = {"Content-Type": "application/json"}


class Limits(harness.SharedServerTestCase):
    """The default limits: 16 KiB of head, 100 headers, 1 MiB of body."""

    def assertClosed(self, c, what):
        self.assertTrue(c.closed_within(3), "connection left open after %s" % what)

    def test_header_block_too_large(self):
        c = self.connect(self.srv)
        c.send(harness.build_request("GET", "/hello", {"X-Big": "a" * 20000}))
        r = c.read_response()
        self.assertEqual(r.status, 431, r)
        self.assertRequestId(r)
        self.assertClosed(c, "431")

    def test_header_block_too_large_never_ending(self):
        """A head that never ends is cut at the limit, not buffered forever:
        the 431 arrives while the client is still sending."""
        c = self.connect(self.srv)
        c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
        sent = 0
        try:
            while sent < 4 * 1024 * 1024:
                c.send(b"".join(b"X-Filler-%08d: %s\r\n" % (sent + i, b"f" * 100)
                                for i in range(8)))
                sent += 8 * 123
                # Paced, so that what was sent is roughly what was read.
                r, _, _ = select.select([c.sock], [], [], 0.002)
                if r:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.read_response()
        self.assertEqual(r.status, 431, r)
        self.assertLess(sent, 1024 * 1024,
                        "the 431 came only after %d bytes of head (limit 16 KiB)" % sent)
        self.assertClosed(c, "431")

    def test_header_just_under_limit_is_accepted(self):
        c = self.connect(self.srv)
        r = c.get("/hello", {"X-Big": "a" * 12000})
        self.assertEqual(r.status, 200, r)

    def test_request_line_too_long(self):
        c = self.connect(self.srv)
        c.send(harness.build_request("GET", "/v1/items/" + "a" * 20000))
        r = c.read_response()
        self.assertIn(r.status, (414, 431), r)
        self.assertRequestId(r)
        self.assertClosed(c, "%d" % r.status)

    def read_head_raw(self, c, timeout=3):
        """The next response head, as bytes, without consuming a body."""
        deadline = time.monotonic() + harness.scaled(timeout)
        while b"\r\n\r\n" not in c.buf:
            if not c._fill(deadline):
                self.fail("connection closed before a response head: %r" % bytes(c.buf))
        i = c.buf.index(b"\r\n\r\n")
        head = bytes(c.buf[:i])
        del c.buf[:i + 4]
        return head

    def test_expect_100_continue(self):
        c = self.connect(self.srv)
        c.send(harness.build_request("POST", "/v1/raw", {"Content-Length": "5",
                                                         "Expect": "100-continue"}))
        head = self.read_head_raw(c)
        self.assertTrue(head.startswith(b"HTTP/1.1 100"), "want 100 Continue, got %r" % head)
        c.send(b"abcde")
        r = c.read_response(method="POST")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"abcde")
        self.assertEqual(c.get("/hello").body, b"hello\n")

    def test_expect_100_continue_refused_early(self):
        """With Expect: 100-continue, a body that would be refused is not
        invited: the final answer comes first, without a 100."""
        for headers, status in (({"Content-Length": str(2 * 1024 * 1024)}, 413),
                                ({"Content-Length": "7", "Content-Type": "text/plain"}, 415)):
            with self.subTest(status=status):
                c = self.connect(self.srv)
                headers = dict(headers, Expect="100-continue")
                c.send(harness.build_request("POST", "/v1/echo", headers))
                head = self.read_head_raw(c)
                self.assertTrue(head.startswith(b"HTTP/1.1 %d" % status),
                                "want %d before any body, got %r" % (status, head))

    def test_too_many_headers(self):
        c = self.connect(self.srv)
        headers = [("X-H%d" % i, "v") for i in range(150)]
        c.send(harness.build_request("GET", "/hello", headers))
        r = c.read_response()
        self.assertEqual(r.status, 431, r)
        self.assertRequestId(r)
        self.assertClosed(c, "431 (too many headers)")

    def test_ninety_headers_are_accepted(self):
        c = self.connect(self.srv)
        r = c.get("/hello", [("X-H%d" % i, "v") for i in range(90)])
        self.assertEqual(r.status, 200, r)

    def test_content_length_too_large(self):
        c = self.connect(self.srv)
        t0 = time.monotonic()
        # The body is never sent: the server must answer from the head.
        c.send(harness.build_request("POST", "/v1/raw",
                                     {"Content-Length": str(2 * 1024 * 1024)}))
        r = c.read_response(timeout=3)
        self.assertEqual(r.status, 413, r)
        self.assertLess(time.monotonic() - t0, harness.scaled(2.0),
                        "413 came only after waiting for the body")
        self.assertEnvelopeError(r, 413)
        self.assertClosed(c, "413")

    def test_content_length_too_large_json_route(self):
        c = self.connect(self.srv)
        c.send(harness.build_request("POST", "/v1/echo",
                                     {"Content-Type": "application/json",
                                      "Content-Length": "1048577"}))
        r = c.read_response(timeout=3)
        self.assertEqual(r.status, 413, r)
        self.assertClosed(c, "413")

    def test_body_at_limit_is_accepted(self):
        c = self.connect(self.srv)
        body = os.urandom(1024 * 1024)
        r = c.request("POST", "/v1/raw", body=body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, body)

    def test_chunked_body_too_large(self):
        c = self.connect(self.srv)
        c.send(harness.build_request("POST", "/v1/raw", {"Transfer-Encoding": "chunked"}))
        chunk = b"%x\r\n" % 65536 + b"z" * 65536 + b"\r\n"
        sent = 0
        got = False
        try:
            while sent < 4 * 1024 * 1024:
                c.send(chunk)
                sent += 65536
                r, _, _ = select.select([c.sock], [], [], 0.02)
                if r:
                    got = True
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            r = c.read_response(timeout=3)
        except (harness.ConnectionClosed, ConnectionResetError) as e:
            self.fail("no 413 for a chunked body past the limit (sent %d bytes, "
                      "answer seen: %s): %s" % (sent, got, e))
        self.assertEqual(r.status, 413, r)
        self.assertLessEqual(sent, 2 * 1024 * 1024,
                             "server read %d bytes of a 1 MiB-limited body" % sent)
        self.assertEnvelopeError(r, 413)
        self.assertClosed(c, "413 (chunked)")

    def test_wrong_content_type_is_415(self):
        c = self.connect(self.srv)
        r = c.request("POST", "/v1/echo", {"Content-Type": "text/plain"}, b'{"a":1}')
        self.assertEnvelopeError(r, 415)
        # A clean 4xx: the connection stays usable.
        self.assertEqual(c.get("/hello").body, b"hello\n")

    def test_missing_content_type_is_415(self):
        c = self.connect(self.srv)
        r = c.request("POST", "/v1/echo", None, b'{"a":1}')
        self.assertEnvelopeError(r, 415)

    def test_json_suffix_content_type_accepted(self):
        c = self.connect(self.srv)
        r = c.request("POST", "/v1/echo", {"Content-Type": "application/merge-patch+json"},
                      b'{"a":1}')
        self.assertEqual(self.assertOk(r), {"a": 1})
        r = c.request("POST", "/v1/echo", {"Content-Type": "application/json; charset=utf-8"},
                      b'[1]')
        self.assertEqual(self.assertOk(r), [1])

    def test_malformed_request_line(self):
        for raw in (b"GARBAGE\r\n\r\n",
                    b"GET /hello HTTP/1.1 extra\r\nHost: x\r\n\r\n",
                    b"GET /hello HTTX/1.1\r\nHost: x\r\n\r\n",
                    b"\x00\x01\x02\xff\xfe garbage \x7f\r\n\r\n"):
            with self.subTest(raw=raw):
                c = self.connect(self.srv)
                c.send(raw)
                r = c.read_response()
                self.assertEqual(r.status, 400, "%r → %r" % (raw, r))
                self.assertRequestId(r)
                self.assertClosed(c, "400 for %r" % raw)

    def test_malformed_header(self):
        for raw in (b"GET /hello HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
                    b"GET /hello HTTP/1.1\r\nHost: x\r\nBad\x01Name: v\r\n\r\n",
                    b"POST /v1/raw HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                    b"POST /v1/raw HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                    b"Content-Length: 4\r\n\r\nabcd",
                    b"POST /v1/raw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"zz\r\nabc\r\n0\r\n\r\n"):
            with self.subTest(raw=raw):
                c = self.connect(self.srv)
                c.send(raw)
                r = c.read_response()
                self.assertEqual(r.status, 400, "%r → %r" % (raw, r))
                self.assertClosed(c, "400 for %r" % raw)

    def test_garbage_after_good_request(self):
        c = self.connect(self.srv)
        c.send(harness.build_request("GET", "/hello") + b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc")
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"hello\n")
        r = c.read_response()
        self.assertEqual(r.status, 400, r)
        self.assertClosed(c, "400 after garbage")

    def test_server_survives_garbage(self):
        for i in range(20):
            c = harness.Conn(self.srv.port)
            try:
                c.send(os.urandom(500 + i * 37))
                c.read_until_close(3)
            except (OSError, socket.timeout):
                pass
            finally:
                c.close()
        c = self.connect(self.srv)
        self.assertEqual(c.get("/hello").body, b"hello\n")

    def test_invalid_json_is_400_envelope(self):
        c = self.connect(self.srv)
        for body in (b'{"a":', b"not json", b"{'single':1}", b""):
            with self.subTest(body=body):
                r = c.request("POST", "/v1/echo", JSON, body)
                self.assertEnvelopeError(r, 400)
        # Still in sync after clean 4xx answers.
        self.assertEqual(c.get("/hello").body, b"hello\n")

    def test_validation_failure_is_422_with_details(self):
        c = self.connect(self.srv)
        r = c.request("POST", "/v1/validate", JSON,
                      json.dumps({"email": "not-an-email", "name": "ab", "quantity": 500}))
        body = self.assertEnvelopeError(r, 422, "VALIDATION_FAILED")
        details = body["error"].get("details")
        self.assertIsInstance(details, list, body)
        fields = {d.get("field") for d in details}
        self.assertEqual(fields, {"email", "name", "quantity"}, body)
        for d in details:
            self.assertIsInstance(d.get("message"), str, d)
            self.assertTrue(d["message"], d)
        self.assertEqual(body["error"]["message"], details[0]["message"], body)

    def test_validation_missing_required(self):
        c = self.connect(self.srv)
        r = c.request("POST", "/v1/validate", JSON, json.dumps({"name": "alice"}))
        body = self.assertEnvelopeError(r, 422, "VALIDATION_FAILED")
        self.assertEqual([d["field"] for d in body["error"]["details"]], ["email"], body)
        self.assertIn("email", body["error"]["message"], body)

    def test_validation_wrong_types(self):
        c = self.connect(self.srv)
        r = c.request("POST", "/v1/validate", JSON,
                      json.dumps({"email": 42, "name": ["x"], "quantity": "3"}))
        body = self.assertEnvelopeError(r, 422, "VALIDATION_FAILED")
        self.assertEqual({d["field"] for d in body["error"]["details"]},
                         {"email", "name", "quantity"}, body)

    def test_validation_success_is_201(self):
        c = self.connect(self.srv)
        r = c.request("POST", "/v1/validate", JSON,
                      json.dumps({"email": "a@example.com", "name": "Ann", "quantity": 100}))
        self.assertEqual(self.assertOk(r, 201),
                         {"email": "a@example.com", "name": "Ann", "quantity": 100})
        r = c.request("POST", "/v1/validate", JSON,
                      json.dumps({"email": "b@example.org", "name": "\u00e9\u00e9\u00e9"}))
        self.assertEqual(self.assertOk(r, 201),
                         {"email": "b@example.org", "name": "\u00e9\u00e9\u00e9"})

    def test_unknown_route_is_404_envelope(self):
        c = self.connect(self.srv)
        for target in ("/nope", "/v1/items", "/v1/items/1/extra", "/v1/item/1", "/HELLO"):
            with self.subTest(target=target):
                r = c.get(target)
                self.assertEnvelopeError(r, 404)
        self.assertEqual(c.get("/hello").body, b"hello\n")

    def test_wrong_method_is_405_with_allow(self):
        c = self.connect(self.srv)
        r = c.request("DELETE", "/v1/items/1")
        self.assertEnvelopeError(r, 405)
        allow = r.header("Allow")
        self.assertIsNotNone(allow, "405 without Allow: %r" % r)
        methods = {m.strip() for m in allow.split(",")}
        # GET, HEAD and PUT are served; OPTIONS may be listed when the server
        # answers it (checked below); nothing else.
        self.assertLessEqual({"GET", "HEAD", "PUT"}, methods, allow)
        self.assertLessEqual(methods, {"GET", "HEAD", "PUT", "OPTIONS"}, allow)
        if "OPTIONS" in methods:
            o = c.request("OPTIONS", "/v1/items/1")
            self.assertIn(o.status, (200, 204), "Allow lists OPTIONS but OPTIONS got %r" % o)
            self.assertRequestId(o)
        r = c.request("POST", "/hello", body=b"")
        self.assertEnvelopeError(r, 405)
        methods = {m.strip() for m in r.header("Allow", "").split(",")}
        self.assertLessEqual({"GET", "HEAD"}, methods, r)
        self.assertLessEqual(methods, {"GET", "HEAD", "OPTIONS"}, r)
        self.assertEqual(c.get("/hello").body, b"hello\n")

    def test_request_id_generated_and_unique(self):
        c = self.connect(self.srv)
        ids = set()
        for target in ("/hello", "/v1/items/1", "/nope", "/health"):
            r = c.get(target)
            ids.add(self.assertRequestId(r))
        self.assertEqual(len(ids), 4, "request ids repeat: %r" % ids)

    def test_request_id_echoed(self):
        c = self.connect(self.srv)
        for target in ("/hello", "/v1/whoami", "/nope"):
            with self.subTest(target=target):
                r = c.get(target, {"X-Request-Id": "client-abc-123"})
                self.assertEqual(r.header("X-Request-Id"), "client-abc-123", r)
        r = c.get("/v1/whoami", {"X-Request-Id": "client-abc-123"})
        self.assertEqual(self.assertOk(r)["requestId"], "client-abc-123")
        r = c.get("/nope", {"X-Request-Id": "client-abc-123"})
        self.assertEqual(r.json()["requestId"], "client-abc-123")

    def test_insane_request_id_replaced(self):
        c = self.connect(self.srv)
        for bad in ("x" * 1000, "has space", "quote\"inside", "semi;colon<>"):
            with self.subTest(bad=bad):
                r = c.get("/v1/whoami", {"X-Request-Id": bad})
                rid = self.assertRequestId(r)
                self.assertNotEqual(rid, bad, "echoed an insane request id %r" % bad)
                self.assertEqual(self.assertOk(r)["requestId"], rid)


if __name__ == "__main__":
    harness.main()
