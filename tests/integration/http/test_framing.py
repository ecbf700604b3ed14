"""Framing corner cases: chunked trailers, Upgrade and CONNECT, bodies that
try to be endless, 100-continue for HTTP/1.0."""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


class Framing(harness.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = harness.Server({"AGORA_HTTP_MAX_BODY_BYTES": "64k",
                                  "AGORA_HTTP_BODY_TIMEOUT": "2s"}).start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def test_large_trailers_do_not_disturb_the_request(self):
        c = self.connect(self.srv)
        body = harness.chunked_body([b"abc"], trailers=[("X-T", "t" * 3000),
                                                        ("X-U", "u" * 3000)])
        c.send(harness.build_request("POST", "/v1/raw",
                                     [("Transfer-Encoding", "chunked"),
                                      ("X-Request-Id", "trailer-test")]) + body)
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"abc")
        self.assertEqual(r.header("X-Request-Id"), "trailer-test")
        self.assertEqual(c.get("/hello").status, 200)

    def test_trailers_beyond_the_header_limit_are_431(self):
        c = self.connect(self.srv)
        body = harness.chunked_body([b"abc"], trailers=[("X-T%d" % i, "v" * 1000)
                                                        for i in range(40)])
        c.send(harness.build_request("POST", "/v1/raw", [("Transfer-Encoding", "chunked")]) + body)
        r = c.read_response()
        self.assertEqual(r.status, 431, r)

    def test_upgrade_request_is_served_and_the_connection_goes_on(self):
        c = self.connect(self.srv)
        up = [("Connection", "Upgrade"), ("Upgrade", "websocket")]
        c.send(harness.build_request("GET", "/hello", up) +
               harness.build_request("GET", "/v1/items/2", up) +
               harness.build_request("GET", "/v1/items/3"))
        self.assertEqual(c.read_response().body, b"hello\n")
        self.assertEqual(self.assertOk(c.read_response())["id"], "2")
        self.assertEqual(self.assertOk(c.read_response())["id"], "3")

    def test_connect_is_refused(self):
        c = self.connect(self.srv)
        c.send(b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n")
        r = c.read_response()
        self.assertEqual(r.status, 405, r)
        self.assertTrue(c.closed_within(harness.scaled(3)))

    def endless(self, target, head_extra, unit):
        """Streams a body that never ends; the server must answer (and close)
        while the client is still sending, not wait for an end."""
        c = self.connect(self.srv)
        c.send(harness.build_request("POST", target, [("Transfer-Encoding", "chunked")] +
                                     head_extra))
        stop = threading.Event()

        def sender():
            c.sock.settimeout(0.5)
            deadline = time.monotonic() + harness.scaled(20)
            try:
                while not stop.is_set() and time.monotonic() < deadline:
                    c.sock.sendall(unit * 64)
            except OSError:
                pass  # the server closed

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        try:
            # The sender goes on for 20 s; the answer must come well before.
            r = c.read_response(timeout=5)
            self.assertIn(r.status, (400, 413), r)
        finally:
            stop.set()
            t.join(harness.scaled(5))

    def test_endless_chunked_body_to_unknown_route_is_cut(self):
        self.endless("/nowhere", [], b"400\r\n" + b"z" * 1024 + b"\r\n")

    def test_endless_chunk_extension_is_cut(self):
        self.endless("/v1/raw", [], b"1;" + b"e" * 1024)

    def test_endless_chunk_size_padding_is_cut(self):
        self.endless("/v1/raw", [], b"0" * 1024)

    def test_http10_gets_no_100_continue(self):
        c = self.connect(self.srv)
        c.send(harness.build_request("POST", "/v1/raw", [("Expect", "100-continue"),
                                                         ("Content-Length", "3")],
                                     version="HTTP/1.0"))
        time.sleep(0.2)
        c.send(b"abc")
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"abc")


if __name__ == "__main__":
    harness.main()
