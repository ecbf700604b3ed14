#!/usr/bin/env python3
"""agora-files end to end through agora-gateway, with real agora-users and
agora-rooms (tests/integration/lib/stack.py), as a client would: uploads
(raw bytes, spooled), metadata, downloads with ranges and a non-ASCII
Content-Disposition, who may do what (outsiders get 404, only the uploader
or a room owner/admin deletes), 413 before the body, the memory a 50 MiB
upload and download cost the service and the gateway, a restart, a deleted
room's files.

Run through ctest (integration.files, integration.files.postgres) or by
hand (see services/files/README.md).
"""
import hashlib
import http.client
import os
import sys
import time
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import stack as stacklib  # noqa: E402
from stack import harness, wait_until  # noqa: E402

MIB = 1024 * 1024
BIN = {"Content-Type": "application/octet-stream"}


def blob(n, seed=b"agora"):
    out = bytearray()
    block = hashlib.sha256(seed).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])


class Files(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for name in ("users", "rooms", "files", "gateway"):
            if not stacklib.binary(name):
                raise RuntimeError("set AGORA_%sD (run through ctest)" % name.upper())
        env = {}
        if harness.SANITIZED:
            # ASan's quarantine keeps freed memory (256 MiB by default) and
            # would grow RSS without any leak; off, RSS growth still means
            # memory a process holds on to (as in http/test_rss.py).
            opts = os.environ.get("ASAN_OPTIONS", "")
            env["ASAN_OPTIONS"] = ":".join(
                x for x in (opts, "quarantine_size_mb=0", "thread_local_quarantine_size_kb=0")
                if x)
        cls.s = stacklib.Stack("files", env=env, services=["users", "rooms", "files"]).start()
        cls.owner = cls.s.register("owner")
        cls.member = cls.s.register("member")
        cls.outsider = cls.s.register("outsider")
        cls.room = cls.make_room(cls.owner, "files room")
        cls.s.ok(cls.s.call("POST", "/api/v1/rooms/%s/join" % cls.room, cls.member["token"]))

    @classmethod
    def tearDownClass(cls):
        problems = cls.s.stop()
        for srv in [cls.s.gateway] + list(cls.s.servers.values()):
            srv.check_sanitizers(problems)
        if problems:
            raise AssertionError("\n".join(problems))

    # -- helpers ------------------------------------------------------------------------

    @classmethod
    def make_room(cls, who, name, private=False):
        d = cls.s.ok(cls.s.call("POST", "/api/v1/rooms", who["token"],
                                {"name": name, "isPrivate": private}), 201)
        return d["id"]

    def upload(self, who, data, name="file.bin", room=None, ctype=None, status=201):
        q = urllib.parse.urlencode({"roomId": room or self.room, "name": name})
        h = {"Content-Type": ctype} if ctype else dict(BIN)
        r = self.s.call("POST", "/api/v1/files?" + q, who["token"], data, h)
        self.assertEqual(r.status, status, r)
        return r

    def content(self, who, fid, headers=None, method="GET"):
        return self.s.call(method, "/api/v1/files/%s/content" % fid, who["token"],
                           headers=headers)

    # -- the tests ------------------------------------------------------------------------

    def test_round_trip_and_metadata(self):
        data = blob(3 * MIB + 17)
        d = self.upload(self.member, data, "photo.png", ctype="image/png").data
        self.assertEqual(d["roomId"], self.room)
        self.assertEqual(d["name"], "photo.png")
        self.assertEqual(d["size"], len(data))
        self.assertEqual(d["contentType"], "image/png")
        self.assertEqual(d["sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual(d["ownerId"], self.member["id"])
        self.assertTrue(d["createdAt"].endswith("Z"))
        # another member reads the metadata and the bytes
        m = self.s.ok(self.s.call("GET", "/api/v1/files/" + d["id"], self.owner["token"]))
        self.assertEqual(m, d)
        r = self.content(self.owner, d["id"])
        self.assertEqual(r.status, 200)
        self.assertEqual(hashlib.sha256(r.body).hexdigest(), d["sha256"])
        self.assertEqual(r.header("Content-Type"), "image/png")
        self.assertEqual(r.header("Content-Length"), str(len(data)))
        self.assertEqual(r.header("Accept-Ranges"), "bytes")
        self.assertEqual(r.header("ETag"), '"%s"' % d["sha256"])
        self.assertTrue(r.header("Content-Disposition").startswith('attachment; filename="photo.png"'))
        # HEAD: the same head, no body
        h = self.content(self.owner, d["id"], method="HEAD")
        self.assertEqual((h.status, h.body), (200, b""))
        self.assertEqual(h.header("Content-Length"), str(len(data)))
        # no Content-Type: application/octet-stream; an empty file is a file
        r = self.s.call("POST", "/api/v1/files?roomId=%s&name=empty" % self.room,
                        self.member["token"], b"", {"Content-Type": ""})
        self.assertEqual(r.status, 201, r)
        self.assertEqual((r.data["size"], r.data["contentType"]), (0, "application/octet-stream"))
        self.assertEqual(r.data["sha256"], hashlib.sha256(b"").hexdigest())
        self.assertEqual(self.content(self.member, r.data["id"]).body, b"")

    def test_outsiders_get_404_everywhere(self):
        d = self.upload(self.member, b"secret bytes", "secret.txt", ctype="text/plain").data
        r = self.upload(self.outsider, b"x", "mine.txt", status=404)
        self.assertEqual(r.json()["error"]["code"], "ROOM_NOT_FOUND")
        self.upload(self.outsider, b"x", "mine.txt", room="no-such-room", status=404)
        for method, path in (("GET", "/api/v1/files/" + d["id"]),
                             ("GET", "/api/v1/files/%s/content" % d["id"]),
                             ("DELETE", "/api/v1/files/" + d["id"]),
                             ("GET", "/api/v1/files/no-such-file")):
            r = self.s.call(method, path, self.outsider["token"])
            self.assertEqual((r.status, r.json()["error"]["code"]), (404, "FILE_NOT_FOUND"),
                             (method, path, r))
        r = self.s.call("GET", "/api/v1/files?roomId=" + self.room, self.outsider["token"])
        self.assertEqual((r.status, r.json()["error"]["code"]), (404, "ROOM_NOT_FOUND"))
        # no token at all: 401 at the gateway
        self.assertEqual(self.s.call("GET", "/api/v1/files/" + d["id"]).status, 401)
        # and the file is untouched
        r = self.content(self.member, d["id"])
        self.assertEqual(r.body, b"secret bytes")

    def test_delete_by_uploader_or_moderator_only(self):
        d = self.upload(self.owner, b"owner's file", "o.txt").data
        r = self.s.call("DELETE", "/api/v1/files/" + d["id"], self.member["token"])
        self.assertEqual((r.status, r.json()["error"]["code"]), (403, "FORBIDDEN"))
        self.assertEqual(self.content(self.member, d["id"]).status, 200)
        r = self.s.call("DELETE", "/api/v1/files/" + d["id"], self.owner["token"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.data, {"id": d["id"], "deleted": True})
        self.assertEqual(self.s.call("GET", "/api/v1/files/" + d["id"], self.owner["token"]).status,
                         404)
        self.assertEqual(self.content(self.owner, d["id"]).status, 404)
        blobs = os.path.join(self.s.tmp, "files", "blobs")
        wait_until(lambda: d["id"] not in os.listdir(blobs), "the bytes to go")
        # the room's owner deletes a member's file
        d = self.upload(self.member, b"member's file", "m.txt").data
        self.assertEqual(self.s.call("DELETE", "/api/v1/files/" + d["id"],
                                     self.owner["token"]).status, 200)

    def test_ranges(self):
        data = blob(1000, b"ranges")
        fid = self.upload(self.member, data, "r.bin").data["id"]
        cases = [("bytes=0-99", 0, 99), ("bytes=100-199", 100, 199), ("bytes=-50", 950, 999),
                 ("bytes=990-", 990, 999), ("bytes=900-5000", 900, 999), ("bytes=-5000", 0, 999)]
        for rng, a, b in cases:
            r = self.content(self.member, fid, {"Range": rng})
            self.assertEqual(r.status, 206, (rng, r))
            self.assertEqual(r.body, data[a:b + 1], rng)
            self.assertEqual(r.header("Content-Range"), "bytes %d-%d/1000" % (a, b), rng)
            self.assertEqual(r.header("Content-Length"), str(b - a + 1), rng)
        for rng in ("bytes=1000-", "bytes=5000-6000", "bytes=-0"):
            r = self.content(self.member, fid, {"Range": rng})
            self.assertEqual(r.status, 416, (rng, r))
            self.assertEqual(r.header("Content-Range"), "bytes */1000", rng)
        # several ranges, another unit, nonsense: ignored, the whole file
        for rng in ("bytes=0-1,5-6", "items=0-1", "bytes=9-3", "bytes=x-"):
            r = self.content(self.member, fid, {"Range": rng})
            self.assertEqual((r.status, r.body), (200, data), rng)

    def test_non_ascii_name_in_content_disposition(self):
        name = "résumé 2024 ✓ \"final\".txt"
        d = self.upload(self.member, b"cv", name, ctype="text/plain").data
        self.assertEqual(d["name"], name)
        cd = self.content(self.member, d["id"]).header("Content-Disposition")
        self.assertEqual(cd, "attachment; filename=\"r_sum_ 2024 _ _final_.txt\"; "
                             "filename*=UTF-8''r%C3%A9sum%C3%A9%202024%20%E2%9C%93%20%22final%22.txt")
        self.assertEqual(urllib.parse.unquote(cd.split("''", 1)[1]), name)

    def test_bad_names_are_422(self):
        for raw in ("", "a/b", "a%01b", "tab%09", "x" * 256, "%FF%FE", "..", None):
            q = "roomId=%s" % self.room + ("" if raw is None else "&name=" + raw)
            r = self.s.call("POST", "/api/v1/files?" + q, self.member["token"], b"data", BIN)
            self.assertEqual((r.status, r.json()["error"]["code"]), (422, "VALIDATION_FAILED"),
                             (raw, r))
        # a NUL is refused before any route (it would cut the name short)
        r = self.s.call("POST", "/api/v1/files?roomId=%s&name=a%%00b" % self.room,
                        self.member["token"], b"data", BIN)
        self.assertEqual((r.status, r.json()["error"]["code"]), (400, "MALFORMED_REQUEST"), r)
        self.assertIn("%00", r.json()["error"]["message"])
        self.assertEqual(self.s.call("POST", "/api/v1/files?name=x", self.member["token"],
                                     b"data", BIN).status, 422)
        self.upload(self.member, b"ok", "y" * 255)
        r = self.s.call("GET", "/api/v1/files?roomId=%s&limit=100" % self.room,
                        self.member["token"])
        self.assertNotIn("a", [f["name"] for f in r.data])

    def test_list_is_paginated_newest_first(self):
        room = self.make_room(self.owner, "list room")
        ids = [self.upload(self.owner, b"%d" % i, "f%d" % i, room=room).data["id"]
               for i in range(5)]
        r = self.s.call("GET", "/api/v1/files?roomId=%s&limit=2&page=1" % room, self.owner["token"])
        self.assertEqual(r.status, 200)
        body = r.json()
        self.assertEqual(body["pagination"], {"page": 1, "limit": 2, "total": 5, "pages": 3})
        self.assertEqual([f["id"] for f in body["data"]], ids[::-1][:2])
        r = self.s.call("GET", "/api/v1/files?roomId=%s&limit=2&page=3" % room, self.owner["token"])
        self.assertEqual([f["id"] for f in r.json()["data"]], ids[:1])

    def test_413_before_the_body(self):
        for port, path in ((self.s.ports["gateway"], "/api/v1/files"),
                           (self.s.ports["files"], "/v1/files")):
            c = harness.Conn(port, timeout=harness.scaled(10))
            try:
                c.send(harness.build_request(
                    "POST", "%s?roomId=%s&name=huge" % (path, self.room),
                    {"Authorization": "Bearer " + self.member["token"],
                     "Content-Type": "application/octet-stream",
                     "Content-Length": str(200 * MIB)}))
                t0 = time.monotonic()
                r = c.read_response(timeout=harness.scaled(5))  # not a byte of body sent
                self.assertEqual((r.status, r.json()["error"]["code"]), (413, "BODY_TOO_LARGE"),
                                 (port, r))
                self.assertLess(time.monotonic() - t0, harness.scaled(3))
            finally:
                c.close()

    def test_50_mib_upload_and_download_stay_small(self):
        data = blob(50 * MIB, b"big")
        files, gw = self.s.servers["files"], self.s.gateway
        self.upload(self.member, b"warm", "warm.bin")
        base = {"files": files.rss_bytes(), "gateway": gw.rss_bytes()}
        peak = dict(base)

        def sample():
            for k, srv in (("files", files), ("gateway", gw)):
                peak[k] = max(peak[k], srv.rss_bytes())

        conn = http.client.HTTPConnection("127.0.0.1", self.s.ports["gateway"],
                                          timeout=harness.scaled(60))
        conn.putrequest("POST", "/api/v1/files?roomId=%s&name=big.bin" % self.room)
        conn.putheader("Authorization", "Bearer " + self.member["token"])
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders()
        view = memoryview(data)
        for off in range(0, len(data), MIB):
            conn.send(view[off:off + MIB])
            sample()
        r = conn.getresponse()
        body = stacklib.Reply(r.status, r.getheaders(), r.read())
        conn.close()
        sample()
        self.assertEqual(body.status, 201, body)
        d = body.data
        self.assertEqual(d["sha256"], hashlib.sha256(data).hexdigest())
        up = {k: peak[k] - base[k] for k in base}
        # the download, read slowly enough for backpressure to matter
        base = {"files": files.rss_bytes(), "gateway": gw.rss_bytes()}
        peak = dict(base)
        conn = http.client.HTTPConnection("127.0.0.1", self.s.ports["gateway"],
                                          timeout=harness.scaled(60))
        conn.request("GET", "/api/v1/files/%s/content" % d["id"],
                     headers={"Authorization": "Bearer " + self.member["token"]})
        r = conn.getresponse()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.getheader("Content-Length"), str(len(data)))
        h = hashlib.sha256()
        while True:
            chunk = r.read(MIB)
            if not chunk:
                break
            h.update(chunk)
            sample()
        conn.close()
        self.assertEqual(h.hexdigest(), d["sha256"])
        down = {k: peak[k] - base[k] for k in base}
        sys.stderr.write("RSS growth, 50 MiB upload: files %.2f MiB, gateway %.2f MiB; "
                         "download: files %.2f MiB, gateway %.2f MiB\n"
                         % (up["files"] / MIB, up["gateway"] / MIB,
                            down["files"] / MIB, down["gateway"] / MIB))
        for k in ("files", "gateway"):
            self.assertLess(up[k], 8 * MIB, "upload grew %s by %d bytes" % (k, up[k]))
            self.assertLess(down[k], 8 * MIB, "download grew %s by %d bytes" % (k, down[k]))
        # the spool holds nothing once the upload is stored
        self.assertEqual(os.listdir(os.path.join(self.s.tmp, "files", "spool")), [])

    def test_restart_keeps_files(self):
        data = blob(200000, b"restart")
        d = self.upload(self.member, data, "keep.bin").data
        self.s.restart("files")
        wait_until(lambda: self.content(self.member, d["id"]).status == 200,
                   "agora-files back behind the gateway")
        r = self.content(self.member, d["id"])
        self.assertEqual(r.body, data)
        self.assertEqual(self.s.ok(self.s.call("GET", "/api/v1/files/" + d["id"],
                                               self.member["token"])), d)

    def test_room_deleted_removes_its_files(self):
        room = self.make_room(self.owner, "doomed room")
        d = self.upload(self.owner, b"doomed", "d.txt", room=room).data
        self.s.ok(self.s.call("DELETE", "/api/v1/rooms/" + room, self.owner["token"]))
        wait_until(lambda: self.s.call("GET", "/api/v1/files/" + d["id"],
                                       self.owner["token"]).status == 404,
                   "the deleted room's file to go")
        self.assertEqual(self.content(self.owner, d["id"]).status, 404)
        blobs = os.path.join(self.s.tmp, "files", "blobs")
        wait_until(lambda: d["id"] not in os.listdir(blobs), "the deleted room's bytes to go")


if __name__ == "__main__":
    unittest.main(verbosity=2)
