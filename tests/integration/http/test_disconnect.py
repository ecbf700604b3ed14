"""Clients that go away mid-response, or stop reading: the server stays up,
frees the connection (agora_http_open_connections goes back down) and the
worker that was writing to it."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def open_connections(srv):
    """agora_http_open_connections as seen on a fresh connection (which
    counts itself)."""
    with harness.Conn(srv.port) as c:
        r = c.request("GET", "/metrics", {"Connection": "close"})
        if r.status != 200:
            raise AssertionError("/metrics: %r" % r)
        vals = harness.metric_values(harness.parse_metrics(r.body.decode()),
                                     "agora_http_open_connections")
        if not vals:
            raise AssertionError("no agora_http_open_connections in /metrics")
        return sum(vals)


class Disconnect(harness.ServerTestCase):
    def wait_open_connections(self, srv, want, timeout):
        deadline = time.monotonic() + harness.scaled(timeout)
        while True:
            n = open_connections(srv)
            if n == want or time.monotonic() > deadline:
                return n
            time.sleep(0.1)

    def test_big_response_abandoned(self):
        srv = self.start_server()
        self.assertEqual(self.wait_open_connections(srv, 1, 2), 1)
        for k in range(6):
            c = harness.Conn(srv.port)
            c.send(harness.build_request("GET", "/v1/big"))
            got = 0
            while got < 65536:
                data = c.sock.recv(65536)
                self.assertTrue(data, "server closed before sending 64 KiB of /v1/big")
                got += len(data)
            if k % 2:
                c.reset()  # RST, as a crashed client
            else:
                c.close()  # FIN with unread data in flight
            # The server serves the next client at once.
            with harness.Conn(srv.port) as n:
                r = n.get("/hello")
                self.assertEqual(r.status, 200, r)
        n = self.wait_open_connections(srv, 1, 5)
        self.assertEqual(n, 1, "agora_http_open_connections stayed at %s after the "
                               "clients left (want 1: the /metrics connection)" % n)
        self.assertTrue(srv.alive())

    def test_big_response_read_fully(self):
        srv = self.start_server()
        c = self.connect(srv)
        r = c.get("/v1/big?bytes=%d" % (8 * 1024 * 1024))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.body), 8 * 1024 * 1024)
        self.assertEqual(r.body.strip(b"y"), b"")
        r = c.get("/v1/big")
        self.assertEqual(len(r.body), 50 * 1024 * 1024)
        self.assertEqual(c.get("/hello").body, b"hello\n")

    def test_abandoned_streams_free_their_workers(self):
        """Streams whose clients left must end (the writes fail) and give the
        worker back: with two workers, four abandoned endless streams, then
        worker routes still answer."""
        srv = self.start_server(AGORA_WORKERS="2", AGORA_QUEUE="8")
        for k in range(4):
            c = harness.Conn(srv.port)
            c.send(harness.build_request("GET", "/v1/stream?n=10000000&size=4096"))
            got = 0
            while got < 100000:
                data = c.sock.recv(65536)
                self.assertTrue(data, "stream closed early")
                got += len(data)
            c.reset()
        deadline = time.monotonic() + harness.scaled(5)
        c = self.connect(srv)
        while True:
            r = c.get("/v1/items/after")
            if r.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(self.assertOk(r), {"id": "after", "q": None},
                         "workers still busy with streams whose clients left")
        c.close()
        self.assertEqual(self.wait_open_connections(srv, 1, 5), 1)

    def test_client_that_stops_reading_is_closed(self):
        """AGORA_HTTP_WRITE_TIMEOUT=1s: a client that reads nothing is closed
        and its worker freed, even though the stream is endless."""
        srv = self.start_server(AGORA_HTTP_WRITE_TIMEOUT="1s", AGORA_WORKERS="2")
        stuck = self.connect(srv)
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        stuck.send(harness.build_request("GET", "/v1/stream?n=10000000&size=65536"))
        # First see the server count it (the /metrics connection could be
        # served before this one is even accepted), then see it go.
        self.assertEqual(self.wait_open_connections(srv, 2, 5), 2)
        # It reads nothing. Within a few seconds the server gives up on it.
        n = self.wait_open_connections(srv, 1, 8)
        self.assertEqual(n, 1, "a client that reads nothing is still connected "
                               "(%s open) well after the 1 s write timeout" % n)
        data = stuck.read_until_close(10)
        self.assertLess(len(data), 600 * 1024 * 1024,
                        "server kept writing to a client that did not read")
        c = self.connect(srv)
        self.assertEqual(c.get("/v1/items/1").status, 200)

    def test_big_body_to_client_that_stops_reading_is_closed(self):
        """The same for a plain (not streamed) 50 MiB body: the write timeout,
        not the 60 s idle timeout, bounds a client that reads nothing."""
        srv = self.start_server(AGORA_HTTP_WRITE_TIMEOUT="1s")
        stuck = self.connect(srv)
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        stuck.send(harness.build_request("GET", "/v1/big"))
        self.assertEqual(self.wait_open_connections(srv, 2, 5), 2)  # accepted first
        n = self.wait_open_connections(srv, 1, 8)
        self.assertEqual(n, 1, "a client that reads nothing of a 50 MiB body is still "
                               "connected (%s open) 8 s into a 1 s write timeout" % n)
        data = stuck.read_until_close(10)
        self.assertLess(len(data), 50 * 1024 * 1024, "the whole body was delivered anyway")

    def test_disconnect_while_handler_runs(self):
        """The client leaves while its request sits in a worker: nothing
        breaks, the connection is released when the handler finishes."""
        srv = self.start_server()
        for k in range(4):
            c = harness.Conn(srv.port)
            c.send(harness.build_request("GET", "/v1/slow?ms=300"))
            time.sleep(0.05)
            if k % 2:
                c.reset()
            else:
                c.close()
        time.sleep(0.5)
        self.assertEqual(self.wait_open_connections(srv, 1, 5), 1)
        c = self.connect(srv)
        self.assertEqual(c.get("/v1/slow?ms=10").status, 200)

    def test_disconnect_during_request_body(self):
        srv = self.start_server()
        for k in range(4):
            c = harness.Conn(srv.port)
            c.send(harness.build_request("POST", "/v1/raw", {"Content-Length": "100000"})
                   + b"a" * 5000)
            time.sleep(0.05)
            c.reset() if k % 2 else c.close()
        self.assertEqual(self.wait_open_connections(srv, 1, 5), 1)


if __name__ == "__main__":
    harness.main()
