"""Read timeouts: a head that does not arrive in time gets 408 and a close,
slowloris clients are cut off by the same deadline without slowing anyone
else, a stalled body gets 408, and idle keep-alive connections are closed."""

import os
import select
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


class HeaderTimeout(harness.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = harness.Server({"AGORA_HTTP_HEADER_TIMEOUT": "1s",
                                  "AGORA_HTTP_BODY_TIMEOUT": "1s"}).start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def test_half_request_line_gets_408(self):
        c = self.connect(self.srv)
        t0 = time.monotonic()
        c.send(b"GET /hel")
        r = c.read_response(timeout=5)
        elapsed = time.monotonic() - t0
        self.assertEqual(r.status, 408, r)
        self.assertEnvelopeError(r, 408)
        self.assertGreater(elapsed, 0.8, "408 after %.2f s with a 1 s timeout" % elapsed)
        self.assertLess(elapsed, harness.scaled(3.0), "408 only after %.2f s" % elapsed)
        self.assertTrue(c.closed_within(2), "connection left open after 408")

    def test_half_headers_gets_408(self):
        c = self.connect(self.srv)
        t0 = time.monotonic()
        c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Partial: ab")
        r = c.read_response(timeout=5)
        self.assertEqual(r.status, 408, r)
        self.assertLess(time.monotonic() - t0, harness.scaled(3.0))
        self.assertTrue(c.closed_within(2), "connection left open after 408")

    def test_second_request_head_also_timed(self):
        """The deadline applies to every request on a connection, not only
        the first."""
        c = self.connect(self.srv)
        self.assertEqual(c.get("/hello").body, b"hello\n")
        t0 = time.monotonic()
        c.send(b"GET /hello HTTP/1.1\r\nHo")
        try:
            r = c.read_response(timeout=5)
            self.assertEqual(r.status, 408, r)
        except harness.ConnectionClosed:
            pass  # a close without 408 is allowed once a request was served
        self.assertLess(time.monotonic() - t0, harness.scaled(3.0))
        self.assertTrue(c.closed_within(2), "connection left open after the timeout")

    def test_slowloris_cut_off_while_others_are_served(self):
        stop = threading.Event()
        results = {}

        def loris(k):
            c = harness.Conn(self.srv.port)
            t0 = time.monotonic()
            try:
                c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
                payload = b"X-Slow-%d: " % k + b"a" * 10000
                i = 0
                answered = False
                while not stop.is_set() and time.monotonic() - t0 < 15:
                    c.send(payload[i:i + 1])
                    i = (i + 1) % len(payload)
                    r, _, _ = select.select([c.sock], [], [], 0.2)  # a byte per 200 ms
                    if r:
                        answered = True
                        break
                if not answered:
                    results[k] = ("still open", time.monotonic() - t0, b"")
                    return
                elapsed = time.monotonic() - t0
                data = c.read_until_close(3)
                results[k] = ("closed", elapsed, data[:64])
            except (BrokenPipeError, ConnectionResetError):
                results[k] = ("closed", time.monotonic() - t0, b"")
            except (OSError, socket.timeout) as e:
                results[k] = ("error %r" % e, time.monotonic() - t0, b"")
            finally:
                c.close()

        loris_threads = [threading.Thread(target=loris, args=(k,)) for k in range(5)]
        for t in loris_threads:
            t.start()
        try:
            time.sleep(0.3)
            # While they dribble, a normal client is served promptly.
            worst = 0.0
            c = self.connect(self.srv)
            for i in range(10):
                t0 = time.monotonic()
                r = c.get("/hello" if i % 2 else "/v1/items/%d" % i)
                worst = max(worst, time.monotonic() - t0)
                self.assertEqual(r.status, 200, r)
                time.sleep(0.05)
            self.assertLess(worst, harness.scaled(0.5),
                            "a request took %.2f s while slowloris clients were connected"
                            % worst)
        finally:
            for t in loris_threads:
                t.join(timeout=harness.scaled(10))
            stop.set()
            for t in loris_threads:
                t.join()
        self.assertEqual(len(results), 5, results)
        for k, (state, elapsed, first) in results.items():
            self.assertEqual(state, "closed", "slowloris %d: %s after %.2f s" % (k, state, elapsed))
            self.assertLess(elapsed, harness.scaled(3.0),
                            "slowloris %d lasted %.2f s with a 1 s header timeout" % (k, elapsed))
            if first:
                self.assertTrue(first.startswith(b"HTTP/1.1 408"),
                                "slowloris %d was answered %r" % (k, first))

    def test_stalled_body_gets_408(self):
        c = self.connect(self.srv)
        t0 = time.monotonic()
        c.send(harness.build_request("POST", "/v1/raw", {"Content-Length": "100"}) + b"x" * 10)
        try:
            r = c.read_response(timeout=5)
            self.assertEqual(r.status, 408, r)
        except harness.ConnectionClosed:
            self.fail("stalled body: closed without a 408")
        elapsed = time.monotonic() - t0
        self.assertGreater(elapsed, 0.8, "408 after %.2f s with a 1 s body timeout" % elapsed)
        self.assertLess(elapsed, harness.scaled(3.0), "408 only after %.2f s" % elapsed)
        self.assertTrue(c.closed_within(2), "connection left open after 408")

    def test_slow_but_steady_body_is_fine(self):
        """The body timeout is for silence: a body whose bytes keep coming
        within it is read, even if the whole takes longer than the timeout."""
        c = self.connect(self.srv)
        body = b"0123456789" * 6
        c.send(harness.build_request("POST", "/v1/raw", {"Content-Length": str(len(body))}))
        for i in range(0, len(body), 10):
            c.send(body[i:i + 10])
            time.sleep(0.3)
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, body)


class IdleTimeout(harness.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = harness.Server({"AGORA_HTTP_IDLE_TIMEOUT": "1s"}).start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def test_idle_connection_closed(self):
        c = self.connect(self.srv)
        self.assertEqual(c.get("/hello").body, b"hello\n")
        time.sleep(0.5)
        # Activity before the timeout keeps the connection.
        self.assertEqual(c.get("/v1/items/1").status, 200)
        t0 = time.monotonic()
        closed = c.closed_within(5)
        elapsed = time.monotonic() - t0
        self.assertTrue(closed, "idle connection still open after 5 s with a 1 s idle timeout")
        self.assertGreater(elapsed, 0.7, "closed %.2f s after the last response" % elapsed)
        self.assertLess(elapsed, harness.scaled(3.0), "closed only after %.2f s" % elapsed)

    def test_idle_close_sends_no_response(self):
        c = self.connect(self.srv)
        self.assertEqual(c.get("/hello").status, 200)
        rest = c.read_until_close(5)
        self.assertEqual(rest, b"", "server sent bytes on an idle connection: %r" % rest[:200])

    def test_many_idle_connections_all_closed(self):
        conns = [self.connect(self.srv) for _ in range(20)]
        for c in conns:
            self.assertEqual(c.get("/hello").status, 200)
        for i, c in enumerate(conns):
            self.assertTrue(c.closed_within(5), "idle connection %d still open" % i)
        # And the server keeps serving.
        self.assertEqual(self.connect(self.srv).get("/hello").body, b"hello\n")


if __name__ == "__main__":
    harness.main()
