"""/health says the process serves; /ready runs the service's pluggable checks
and answers 503 with Retry-After and the failing check's reason."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


class Ready(harness.ServerTestCase):
    def test_all_checks_pass(self):
        srv = self.start_server()
        c = self.connect(srv)
        r = c.get("/ready")
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertEqual(body["status"], "ready", body)
        self.assertEqual(body["checks"], {"always": "ok", "store": "ok"}, body)

    def test_failing_check_makes_ready_503(self):
        srv = self.start_server(TESTD_READY_FAIL="1")
        c = self.connect(srv)
        r = c.get("/ready")
        self.assertEqual(r.status, 503, r)
        self.assertTrue(r.header("Retry-After"), r)
        body = r.json()
        self.assertEqual(body["status"], "unavailable", body)
        self.assertEqual(body["checks"]["store"], "store unreachable (test)", body)
        self.assertEqual(body["checks"]["always"], "ok", body)
        # Alive all the same.
        h = c.get("/health")
        self.assertEqual(h.status, 200, h)
        self.assertEqual(h.json()["status"], "ok")


if __name__ == "__main__":
    harness.main()
