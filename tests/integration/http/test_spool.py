"""Spooled request bodies (AG_ROUTE_SPOOL): the body goes to an anonymous
file in the spool directory as it arrives, never whole into memory; the
route's own limit holds for Content-Length (413 before any body byte is
read) and for chunked bodies (413 as the limit passes); other routes keep
the server's in-memory limit. agora-testd's POST /v1/spool answers what the
handler found in the file: its size, its sha256, how much was in memory."""

import hashlib
import os
import select
import shutil
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

MIB = 1024 * 1024
LIMIT = 64 * MIB


def server_env(spool_dir):
    env = {"AGORA_ACCESS_LOG": "false", "TESTD_SPOOL_MAX": str(LIMIT),
           "AGORA_HTTP_SPOOL_DIR": spool_dir}
    if harness.SANITIZED:
        opts = os.environ.get("ASAN_OPTIONS", "")
        env["ASAN_OPTIONS"] = ":".join(
            x for x in (opts, "quarantine_size_mb=0", "thread_local_quarantine_size_kb=0") if x)
    return env


def pattern(n):
    block = bytes(range(256)) * 256  # 64 KiB
    out = bytearray()
    while len(out) < n:
        out += block
    return bytes(out[:n])


class Spool(harness.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="agora-spool-")
        cls.srv = harness.Server(server_env(cls.dir)).start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def post(self, c, body, headers=None):
        h = {"Content-Length": str(len(body))}
        h.update(headers or {})
        c.send(harness.build_request("POST", "/v1/spool", h) + body)
        return c.read_response(timeout=harness.scaled(60))

    def test_body_lands_in_a_file_not_in_memory(self):
        body = pattern(5 * MIB + 123)
        c = self.connect(self.srv)
        r = self.post(c, body)
        self.assertEqual(r.status, 200, r)
        d = r.json()["data"]
        self.assertEqual(d["size"], len(body))
        self.assertEqual(d["read"], len(body))
        self.assertEqual(d["sha256"], hashlib.sha256(body).hexdigest())
        self.assertEqual(d["inMemory"], 0)
        # in the spool directory, nameless (O_TMPFILE or unlinked at once)
        self.assertTrue(d["file"].startswith(self.dir), d["file"])
        self.assertIn("(deleted)", d["file"])
        self.assertEqual(os.listdir(self.dir), [])
        # the connection stays usable: a second spooled request on it
        r = self.post(c, b"second")
        self.assertEqual(r.json()["data"]["sha256"], hashlib.sha256(b"second").hexdigest())

    def test_chunked_body_is_decoded_into_the_file(self):
        chunks = [pattern(70000), b"x" * 10, pattern(300000)]
        c = self.connect(self.srv)
        c.send(harness.build_request("POST", "/v1/spool", {"Transfer-Encoding": "chunked"})
               + harness.chunked_body(chunks))
        r = c.read_response(timeout=harness.scaled(30))
        self.assertEqual(r.status, 200, r)
        whole = b"".join(chunks)
        self.assertEqual(r.json()["data"]["size"], len(whole))
        self.assertEqual(r.json()["data"]["sha256"], hashlib.sha256(whole).hexdigest())

    def test_no_body_has_no_file(self):
        c = self.connect(self.srv)
        r = self.post(c, b"")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["data"]["size"], 0)
        self.assertIsNone(r.json()["data"]["sha256"])

    def test_content_length_over_the_route_limit_is_413_before_the_body(self):
        c = self.connect(self.srv)
        c.send(harness.build_request("POST", "/v1/spool",
                                     {"Content-Length": str(LIMIT + 1)}))
        t0 = time.monotonic()
        r = c.read_response(timeout=harness.scaled(5))  # no body byte was sent
        self.assertEqual(r.status, 413, r)
        self.assertEqual(r.json()["error"]["code"], "BODY_TOO_LARGE")
        self.assertLess(time.monotonic() - t0, harness.scaled(2))
        self.assertTrue(c.closed_within(3))

    def test_route_limit_is_the_routes_own(self):
        # 2 MiB: over the server's in-memory 1 MiB, under the route's 64 MiB
        body = pattern(2 * MIB)
        c = self.connect(self.srv)
        self.assertEqual(self.post(c, body).status, 200)
        c2 = self.connect(self.srv)
        c2.send(harness.build_request("POST", "/v1/raw", {"Content-Length": str(2 * MIB)}))
        self.assertEqual(c2.read_response().status, 413)

    def test_chunked_over_the_limit_is_cut_off(self):
        c = self.connect(self.srv)
        c.send(harness.build_request("POST", "/v1/spool", {"Transfer-Encoding": "chunked"}))
        chunk = b"%x\r\n%s\r\n" % (MIB, b"z" * MIB)
        sent = 0
        status = None
        try:
            while sent < 2 * LIMIT:
                c.send(chunk)
                sent += MIB
                # the answer arrives while the client is still sending
                if select.select([c.sock], [], [], 0)[0]:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            status = c.read_response(timeout=harness.scaled(10)).status
        except (harness.ConnectionClosed, ConnectionResetError, socket.timeout):
            status = None
        self.assertEqual(status, 413)
        self.assertLess(sent, LIMIT + 8 * MIB, "the 413 came only after %d bytes" % sent)
        self.assertEqual(os.listdir(self.dir), [])

    def test_50_mib_upload_does_not_grow_rss(self):
        body = pattern(50 * MIB)
        c = self.connect(self.srv)
        self.assertEqual(self.post(c, b"warm-up").status, 200)
        before = self.srv.rss_bytes()
        peak = before
        c.send(harness.build_request("POST", "/v1/spool",
                                     {"Content-Length": str(len(body))}))
        view = memoryview(body)
        for off in range(0, len(body), MIB):
            c.send(view[off:off + MIB])
            peak = max(peak, self.srv.rss_bytes())
        r = c.read_response(timeout=harness.scaled(60))
        peak = max(peak, self.srv.rss_bytes())
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["data"]["sha256"], hashlib.sha256(body).hexdigest())
        growth = peak - before
        sys.stderr.write("testd RSS growth over a 50 MiB spooled upload: %.2f MiB\n"
                         % (growth / MIB))
        self.assertLess(growth, 8 * MIB)


class SpoolDirMissing(harness.ServerTestCase):
    def test_unusable_spool_dir_is_500_not_a_crash(self):
        srv = self.start_server(**server_env("/nonexistent/agora-spool"))
        c = self.connect(srv)
        c.send(harness.build_request("POST", "/v1/spool", {"Content-Length": "5"}) + b"hello")
        r = c.read_response()
        self.assertEqual(r.status, 500, r)
        self.assertEqual(r.json()["error"]["code"], "BODY_NOT_STORED")
        # other routes are unaffected
        c2 = self.connect(srv)
        self.assertEqual(c2.get("/hello").status, 200)


if __name__ == "__main__":
    import unittest
    unittest.main(verbosity=2)
