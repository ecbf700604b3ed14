"""A service wired with its store, migrations and the event bus, driven over
HTTP against a real broker: what it accepts is stored and its events are
consumed exactly once; restarts keep the data and do not re-apply
migrations; readiness follows the broker; SIGTERM flushes and exits 0."""

import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "http"))
import harness  # noqa: E402

NOTESD = os.environ.get("AGORA_NOTESD")


def post(c, text):
    body = json.dumps({"text": text})
    return c.request("POST", "/v1/notes", [("Content-Type", "application/json")], body)


class Notes(harness.ServerTestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="agora-notes-")
        self.env = {
            "AGORA_DB": "sqlite:%s/notes.db" % self.tmp,
            "AGORA_BUS": os.environ["AGORA_TEST_NATS_URL"],
            "NOTES_SCHEMA": os.path.join(HERE, "schema"),
            "AGORA_BUS_SWEEP": "200ms",
        }

    def tearDown(self):
        subprocess.run(["rm", "-rf", self.tmp], check=False)

    def start(self, **extra):
        env = dict(self.env, **extra)
        srv = harness.Server(env, name="notesd", binary=NOTESD).start()
        self.addCleanup(self._finish_server, srv)
        return srv

    def stats(self, srv):
        with harness.Conn(srv.port) as c:
            return self.assertOk(c.get("/v1/stats"))

    def wait_seen(self, srv, want, timeout=15):
        deadline = time.monotonic() + harness.scaled(timeout)
        while True:
            s = self.stats(srv)
            if s["seen"] >= want or time.monotonic() > deadline:
                return s
            time.sleep(0.1)

    def test_notes_are_stored_published_and_consumed_once(self):
        srv = self.start()
        c = self.connect(srv)
        ids = []
        for i in range(20):
            r = post(c, "note %d" % i)
            ids.append(self.assertOk(r, 201)["id"])
        evil = "'); DROP TABLE notes; --"
        ids.append(self.assertOk(post(c, evil), 201)["id"])
        s = self.wait_seen(srv, 21)
        self.assertEqual(s, {"notes": 21, "seen": 21})
        got = self.assertOk(c.get("/v1/notes/%s" % ids[-1]))
        self.assertEqual(got["text"], evil)
        time.sleep(0.5)
        self.assertEqual(self.stats(srv)["seen"], 21)  # no late duplicate

    def test_bad_input_changes_nothing(self):
        srv = self.start()
        c = self.connect(srv)
        self.assertEnvelopeError(post(c, ""), 422, "VALIDATION_FAILED")
        self.assertEnvelopeError(post(c, "x" * 201), 422, "VALIDATION_FAILED")
        r = c.request("POST", "/v1/notes", [("Content-Type", "application/json")], "{nope")
        self.assertEnvelopeError(r, 400)
        self.assertEnvelopeError(c.get("/v1/notes/none"), 404, "NOT_FOUND")
        self.assertEqual(self.stats(srv), {"notes": 0, "seen": 0})

    def test_restart_keeps_data_and_does_not_reapply_migrations(self):
        srv = self.start()
        c = self.connect(srv)
        self.assertOk(post(c, "before restart"), 201)
        self.wait_seen(srv, 1)
        c.close()
        self.assertTrue(any(r.get("msg") == "migration applied" for r in srv.log_records()))
        srv.stop()
        srv2 = self.start()
        self.assertEqual(self.stats(srv2), {"notes": 1, "seen": 1})
        self.assertFalse(any(r.get("msg") == "migration applied" for r in srv2.log_records()))

    def test_readiness_follows_the_broker(self):
        ctl = os.environ["AGORA_TEST_HARNESS_CTL"]
        srv = self.start()
        c = self.connect(srv)
        r = c.get("/ready")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["checks"], {"store": "ok", "bus": "ok"})
        subprocess.run([ctl, "stop", "nats"], check=True)
        try:
            deadline = time.monotonic() + harness.scaled(10)
            while True:
                r = c.get("/ready")
                if r.status == 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            self.assertEqual(r.status, 503, r)
            self.assertNotEqual(r.json()["checks"]["bus"], "ok")
            # Writes are still accepted: the events wait in the outbox.
            self.assertOk(post(c, "while the broker is down"), 201)
        finally:
            subprocess.run([ctl, "start", "nats"], check=True)
        s = self.wait_seen(srv, 1, timeout=20)
        self.assertEqual(s["seen"], 1)
        deadline = time.monotonic() + harness.scaled(10)
        while c.get("/ready").status != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        self.assertEqual(c.get("/ready").status, 200)


if __name__ == "__main__":
    harness.main()
