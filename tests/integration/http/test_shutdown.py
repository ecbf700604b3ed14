"""Graceful shutdown: SIGTERM stops accepting, lets in-flight requests
finish, closes idle connections, and exits 0; a drain timeout bounds it."""

import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def try_connect(port):
    """"refused", or a Conn."""
    try:
        return harness.Conn(port, timeout=3)
    except ConnectionRefusedError:
        return "refused"


class Shutdown(harness.ServerTestCase):
    def test_in_flight_request_completes(self):
        srv = self.start_server(AGORA_DRAIN_TIMEOUT="10s")
        port = srv.port
        idle = self.connect(srv)
        self.assertEqual(idle.get("/hello").status, 200)
        busy = self.connect(srv)
        busy.send(harness.build_request("GET", "/v1/slow?ms=1500"))
        result = {}

        def read_busy():
            try:
                result["r"] = busy.read_response(timeout=10)
            except Exception as e:  # noqa: BLE001
                result["r"] = e
            result["t"] = time.monotonic()

        reader = threading.Thread(target=read_busy)
        reader.start()
        time.sleep(0.3)  # the request is on a worker now
        t_term = time.monotonic()
        srv.signal(signal.SIGTERM)

        # Idle keep-alive connections are closed at once.
        self.assertTrue(idle.closed_within(1.5), "idle connection not closed by the drain")

        # New connections are not served during the drain.
        time.sleep(0.2)
        c = try_connect(port)
        if c != "refused":
            try:
                c.send(harness.build_request("GET", "/hello"))
                r = c.read_response(timeout=2)
                self.assertNotEqual(r.status, 200,
                                    "a new connection was served during the drain: %r" % r)
            except (harness.ConnectionClosed, ConnectionResetError, BrokenPipeError):
                pass
            except socket.timeout:
                self.fail("a connection made during the drain hung (neither refused, "
                          "answered nor closed)")
            finally:
                c.close()

        reader.join(timeout=harness.scaled(10))
        r = result.get("r")
        self.assertIsInstance(r, harness.Response, "in-flight request during drain: %r" % r)
        self.assertEqual(self.assertOk(r), {"sleptMs": 1500})
        self.assertTrue(r.has_token("Connection", "close"),
                        "response finished during the drain lacks Connection: close: %r" % r)
        self.assertTrue(busy.closed_within(2), "connection left open after the drained response")

        status = srv.wait_exit(harness.scaled(5))
        self.assertEqual(status, 0, "exit status after SIGTERM: %r\n%s" % (status, srv.output()))
        self.assertLess(time.monotonic() - t_term, harness.scaled(5))
        srv.stopped = True
        srv.check_sanitizers()
        self.assertEqual(try_connect(port), "refused", "port still accepting after exit")

    def test_idle_server_exits_promptly(self):
        srv = self.start_server()
        c = self.connect(srv)
        self.assertEqual(c.get("/hello").status, 200)
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        status = srv.wait_exit(harness.scaled(5))
        self.assertEqual(status, 0, srv.output())
        self.assertLess(time.monotonic() - t0, harness.scaled(2),
                        "an idle server took %.2f s to stop" % (time.monotonic() - t0))
        srv.stopped = True
        srv.check_sanitizers()
        self.assertTrue(c.closed_within(1))

    def test_sigint_also_drains(self):
        srv = self.start_server()
        c = self.connect(srv)
        c.send(harness.build_request("GET", "/v1/slow?ms=800"))
        time.sleep(0.2)
        srv.signal(signal.SIGINT)
        r = c.read_response(timeout=5)
        self.assertEqual(self.assertOk(r), {"sleptMs": 800})
        self.assertEqual(srv.wait_exit(harness.scaled(5)), 0, srv.output())
        srv.stopped = True
        srv.check_sanitizers()

    def test_drain_timeout_closes_stragglers(self):
        """A request longer than AGORA_DRAIN_TIMEOUT: its connection is closed
        when the drain times out, and the process still exits 0 once the
        handler returns."""
        srv = self.start_server(AGORA_DRAIN_TIMEOUT="1s")
        c = self.connect(srv)
        c.send(harness.build_request("GET", "/v1/slow?ms=4000"))
        time.sleep(0.3)
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        data = c.read_until_close(10)
        closed_after = time.monotonic() - t0
        self.assertNotIn(b"HTTP/1.1 200", data, "the straggler was answered after the drain "
                                                "timeout: %r" % data[:200])
        self.assertLess(closed_after, harness.scaled(2.5),
                        "straggler closed %.2f s after SIGTERM with a 1 s drain timeout"
                        % closed_after)
        self.assertEqual(srv.wait_exit(harness.scaled(10)), 0, srv.output())
        srv.stopped = True
        srv.check_sanitizers()

    def test_drain_during_stream(self):
        """A streaming response in flight when SIGTERM arrives completes."""
        srv = self.start_server(AGORA_DRAIN_TIMEOUT="10s")
        c = self.connect(srv)
        c.send(harness.build_request("GET", "/v1/stream?n=20000&size=1000"))
        first = c.sock.recv(1000)
        self.assertTrue(first.startswith(b"HTTP/1.1 200"), first[:100])
        c.buf += first
        srv.signal(signal.SIGTERM)
        r = c.read_response(timeout=10)
        self.assertEqual(len(r.body), 20000 * 1000)
        self.assertEqual(srv.wait_exit(harness.scaled(5)), 0, srv.output())
        srv.stopped = True
        srv.check_sanitizers()


if __name__ == "__main__":
    harness.main()
