"""Deadlines: X-Agora-Deadline-Ms shortens the request's deadline, never
lengthens it past the server's own request timeout."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


class Deadline(harness.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = harness.Server({"AGORA_HTTP_REQUEST_TIMEOUT": "2s"}).start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def remaining(self, c, value=None):
        headers = {} if value is None else {"X-Agora-Deadline-Ms": value}
        r = c.get("/v1/deadline", headers)
        return r, (self.assertOk(r)["remainingMs"] if r.status == 200 else None)

    def test_header_shortens_deadline(self):
        c = self.connect(self.srv)
        _, ms = self.remaining(c, "500")
        self.assertIsInstance(ms, int)
        self.assertLessEqual(ms, 500)
        self.assertGreater(ms, 500 - harness.scaled(200), "only %d ms left of 500" % ms)

    def test_without_header_request_timeout_applies(self):
        c = self.connect(self.srv)
        _, ms = self.remaining(c)
        self.assertIsInstance(ms, int, "no deadline without the header (want the 2 s "
                                       "request timeout)")
        self.assertLessEqual(ms, 2000)
        self.assertGreater(ms, 2000 - harness.scaled(300))

    def test_header_cannot_extend_request_timeout(self):
        c = self.connect(self.srv)
        _, ms = self.remaining(c, "60000")
        self.assertLessEqual(ms, 2000, "a caller's deadline extended the server's own")
        self.assertGreater(ms, 2000 - harness.scaled(300))

    def test_zero_budget(self):
        c = self.connect(self.srv)
        r, ms = self.remaining(c, "0")
        # Either the request is refused as already expired, or the handler
        # sees no time left; never the full timeout.
        if r.status == 200:
            self.assertEqual(ms, 0, r.body)
        else:
            self.assertIn(r.status, (503, 504), r)
            self.assertEnvelopeError(r, r.status)

    def test_invalid_values_are_ignored(self):
        """Invalid X-Agora-Deadline-Ms values are ignored: the request runs
        with the server's own timeout, as if the header were absent."""
        c = self.connect(self.srv)
        for bad in ("abc", "-5", "12.5", "1e3", "", " ", "86400001", "99999999999999999999",
                    "0x10", "500ms"):
            with self.subTest(value=bad):
                r, ms = self.remaining(c, bad)
                self.assertEqual(r.status, 200, r)
                self.assertIsInstance(ms, int)
                self.assertLessEqual(ms, 2000)
                self.assertGreater(ms, 2000 - harness.scaled(300),
                                   "invalid deadline %r was not ignored: %d ms left" % (bad, ms))


if __name__ == "__main__":
    harness.main()
