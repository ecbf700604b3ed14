"""The per-process connection cap: past it new connections get 503 with
Retry-After (or a plain close), and once some close, new ones are served."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

CAP = 8


class ConnectionCap(harness.ServerTestCase):
    def refused_or_503(self, c):
        """Sends a request on `c` and says how the server turned it away:
        "503" or "closed"; fails if it was served."""
        try:
            c.send(harness.build_request("GET", "/hello"))
        except (BrokenPipeError, ConnectionResetError):
            return "closed"
        try:
            r = c.read_response(timeout=5)
        except harness.ConnectionClosed as e:
            if e.partial:
                self.fail("connection past the cap got a truncated response: %s" % e)
            return "closed"
        except ConnectionResetError:
            return "closed"
        except socket.timeout:
            self.fail("a connection past the cap was neither answered nor closed in 5 s")
        self.assertEqual(r.status, 503, "connection past the cap of %d was served: %r" % (CAP, r))
        self.assertIsNotNone(r.header("Retry-After"), "503 without Retry-After: %r" % r)
        self.assertTrue(c.closed_within(3), "connection past the cap left open after 503")
        return "503"

    def wait_served(self, srv):
        """A new connection that was served, trying for up to 3 s; or None."""
        deadline = time.monotonic() + harness.scaled(3)
        while time.monotonic() < deadline:
            c = self.connect(srv)
            try:
                r = c.get("/hello")
                if r.status == 200:
                    return c
                self.assertEqual(r.status, 503, r)
            except harness.ConnectionClosed as e:
                if e.partial:
                    raise
            except (ConnectionResetError, BrokenPipeError):
                pass
            c.close()
            time.sleep(0.1)
        return None

    def test_cap(self):
        srv = self.start_server(AGORA_HTTP_MAX_CONNECTIONS=str(CAP))
        held = []
        for i in range(CAP):
            c = self.connect(srv)
            r = c.get("/hello")
            self.assertEqual(r.status, 200, "connection %d under the cap: %r" % (i, r))
            held.append(c)
        # The ninth, tenth, ... are turned away.
        for k in range(3):
            extra = self.connect(srv)
            self.refused_or_503(extra)
            extra.close()
        # The held connections still work.
        for i, c in enumerate(held):
            self.assertEqual(c.get("/v1/items/%d" % i).status, 200, "held connection %d" % i)
        # Free two slots: new connections are served again (the server may
        # take a moment to notice the closes).
        held.pop().close()
        held.pop().close()
        for k in range(2):
            served = self.wait_served(srv)
            self.assertIsNotNone(served, "freed slot %d of 2 not usable within %.0f s"
                                 % (k + 1, harness.scaled(3)))
            held.append(served)
        # Full again.
        extra = self.connect(srv)
        self.refused_or_503(extra)
        for c in held:
            c.close()

    def test_cap_answer_is_well_formed(self):
        """When the server answers past the cap rather than just closing, the
        answer is a complete 503 with Retry-After, the error envelope and a
        request id, like every other response."""
        srv = self.start_server(AGORA_HTTP_MAX_CONNECTIONS="2")
        held = [self.connect(srv) for _ in range(2)]
        for c in held:
            self.assertEqual(c.get("/hello").status, 200)
        extra = self.connect(srv)
        # Send nothing: whatever comes is the server's own doing.
        data = extra.read_until_close(5)
        if not data:
            return  # closed without an answer: allowed
        r = harness.parse_response_bytes(data)
        self.assertEqual(r.status, 503, r)
        self.assertIsNotNone(r.header("Retry-After"), r)
        self.assertEnvelopeError(r, 503)

    def test_many_rejections_do_not_leak_slots(self):
        """Rejected connections must not use up slots: after 50 rejections and
        closing everything, the full cap is available again."""
        srv = self.start_server(AGORA_HTTP_MAX_CONNECTIONS=str(CAP))
        held = [self.connect(srv) for _ in range(CAP)]
        for c in held:
            self.assertEqual(c.get("/hello").status, 200)
        for _ in range(50):
            extra = harness.Conn(srv.port)
            try:
                self.refused_or_503(extra)
            finally:
                extra.close()
        for c in held:
            c.close()
        deadline = time.monotonic() + harness.scaled(3)
        while True:
            fresh = [harness.Conn(srv.port) for _ in range(CAP)]
            try:
                ok = 0
                for c in fresh:
                    try:
                        ok += c.get("/hello").status == 200
                    except (harness.ConnectionClosed, ConnectionResetError, BrokenPipeError):
                        pass
            finally:
                for c in fresh:
                    c.close()
            if ok == CAP or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(ok, CAP, "only %d of %d slots usable after rejections" % (ok, CAP))


if __name__ == "__main__":
    harness.main()
