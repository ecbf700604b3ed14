"""Persistent connections: keep-alive by default on HTTP/1.1, closed for
HTTP/1.0 without keep-alive and for Connection: close; HEAD keeps framing."""

import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


class KeepAlive(harness.SharedServerTestCase):
    def test_many_requests_on_one_connection(self):
        c = self.connect(self.srv)
        for i in range(20):
            if i % 2 == 0:
                r = c.get("/hello")
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.body, b"hello\n")
                self.assertTrue(r.header("Content-Type", "").startswith("text/plain"), r)
            else:
                r = c.get("/v1/items/k%d?q=v%d" % (i, i))
                self.assertEqual(self.assertOk(r), {"id": "k%d" % i, "q": "v%d" % i})
            self.assertEqual(r.version, "HTTP/1.1", r)
            self.assertFalse(r.has_token("Connection", "close"), r)
            self.assertRequestId(r)
        self.assertTrue(c.is_open_now(0.2), "server closed a keep-alive connection")

    def test_query_absent_is_null_and_params_decoded(self):
        c = self.connect(self.srv)
        self.assertEqual(self.assertOk(c.get("/v1/items/a%20b")), {"id": "a b", "q": None})
        self.assertEqual(self.assertOk(c.get("/v1/items/x?q=one+two%21")),
                         {"id": "x", "q": "one two!"})

    def test_http10_without_keepalive_is_closed(self):
        c = self.connect(self.srv)
        c.send(b"GET /hello HTTP/1.0\r\n\r\n")
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"hello\n")
        self.assertNotIn(r.header("Transfer-Encoding"), ("chunked",), r)
        self.assertTrue(c.closed_within(2), "HTTP/1.0 connection left open after the response")

    def test_http10_worker_route_is_closed(self):
        c = self.connect(self.srv)
        c.send(b"GET /v1/items/10 HTTP/1.0\r\n\r\n")
        r = c.read_response()
        self.assertEqual(self.assertOk(r), {"id": "10", "q": None})
        self.assertTrue(c.closed_within(2), "HTTP/1.0 connection left open after the response")

    def test_connection_close_is_honoured(self):
        c = self.connect(self.srv)
        r = c.get("/hello")
        self.assertEqual(r.status, 200, r)
        r = c.request("GET", "/v1/items/7", headers={"Connection": "close"})
        self.assertEqual(self.assertOk(r), {"id": "7", "q": None})
        self.assertTrue(r.has_token("Connection", "close"),
                        "response to Connection: close lacks Connection: close: %r" % r)
        self.assertTrue(c.closed_within(2), "connection left open after Connection: close")

    def test_connection_close_on_inline_route(self):
        c = self.connect(self.srv)
        r = c.request("GET", "/hello", headers={"Connection": "close"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"hello\n")
        self.assertTrue(c.closed_within(2), "connection left open after Connection: close")

    def test_head_has_no_body_and_keeps_the_connection(self):
        c = self.connect(self.srv)
        get = c.get("/v1/items/5")
        r = c.request("HEAD", "/v1/items/5")
        self.assertEqual(r.status, 200, r)
        # A body after HEAD would corrupt the next response on this connection.
        r2 = c.get("/hello")
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(r2.body, b"hello\n")
        cl = r.header("Content-Length")
        if cl is not None:
            self.assertEqual(int(cl), len(get.body), "HEAD Content-Length differs from GET's")

    def test_put_and_post_bodies_keep_the_connection(self):
        c = self.connect(self.srv)
        r = c.request("PUT", "/v1/items/9", headers={"Content-Type": "application/json"},
                      body=b'{"x":1}')
        self.assertEqual(self.assertOk(r), {"id": "9", "updated": True})
        r = c.request("POST", "/v1/echo", headers={"Content-Type": "application/json"},
                      body=b'{"a":[1,2,3],"b":"\\u00e9"}')
        self.assertEqual(self.assertOk(r), {"a": [1, 2, 3], "b": "\u00e9"})
        r = c.get("/hello")
        self.assertEqual(r.body, b"hello\n")

    def test_http10_keepalive_honoured(self):
        c = self.connect(self.srv)
        for i in range(3):
            c.send(b"GET /v1/items/%d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % i)
            r = c.read_response()
            self.assertEqual(self.assertOk(r), {"id": str(i), "q": None})
            self.assertTrue(r.has_token("Connection", "keep-alive"),
                            "HTTP/1.0 keep-alive answer without Connection: keep-alive: %r" % r)
            self.assertIsNotNone(r.header("Content-Length"), r)
        c.send(b"GET /hello HTTP/1.0\r\n\r\n")
        self.assertEqual(c.read_response().body, b"hello\n")
        self.assertTrue(c.closed_within(2))

    def test_half_closed_client_is_answered(self):
        """A client that sends its requests and then shuts down its sending
        side (nc -N, some proxies) still gets every answer."""
        for path in ("/hello", "/v1/items/hc"):
            with self.subTest(path=path):
                c = self.connect(self.srv)
                c.send(harness.build_request("GET", path))
                c.sock.shutdown(socket.SHUT_WR)
                r = c.read_response()
                self.assertEqual(r.status, 200, r)
                self.assertTrue(c.closed_within(2), "half-closed connection left open")
        c = self.connect(self.srv)
        c.send(b"".join(harness.build_request("GET", "/v1/items/%d" % i if i % 2 else "/hello")
                        for i in range(6)))
        c.sock.shutdown(socket.SHUT_WR)
        for i in range(6):
            try:
                r = c.read_response()
            except harness.ConnectionClosed as e:
                self.fail("pipelined request %d of 6 unanswered after the client half-closed: %s"
                          % (i, e))
            self.assertEqual(r.status, 200, r)
            if i % 2:
                self.assertEqual(self.assertOk(r)["id"], str(i))

    def test_absolute_form_target(self):
        c = self.connect(self.srv)
        r = c.get("http://127.0.0.1/v1/items/abs?q=1")
        self.assertEqual(self.assertOk(r), {"id": "abs", "q": "1"})

    def test_options_lists_methods(self):
        c = self.connect(self.srv)
        r = c.request("OPTIONS", "/v1/items/1")
        self.assertIn(r.status, (200, 204), r)
        methods = {m.strip() for m in r.header("Allow", "").split(",")}
        self.assertLessEqual({"GET", "HEAD", "PUT"}, methods, r)
        self.assertEqual(c.get("/hello").body, b"hello\n")

    def test_whoami_reports_peer(self):
        c = self.connect(self.srv)
        d = self.assertOk(c.get("/v1/whoami"))
        self.assertEqual(d["remote"], "127.0.0.1")
        self.assertTrue(d["requestId"])


if __name__ == "__main__":
    harness.main()
