"""Hostile input against the running system: every service behind the
gateway (tests/integration/lib/stack.py), attacked through the gateway and
at each service's own port, as someone who is not a well-behaved client.

  - malformed and oversized requests, header floods, smuggling attempts
    (Content-Length with Transfer-Encoding, two Content-Lengths, an
    obfuscated Transfer-Encoding, a space before the colon, bare LF), bodies
    announced as 2 GB: each answered with its status and the connection
    closed, at every port;
  - slowloris: a head that trickles in is cut off by the header timeout;
  - path traversal at the gateway's static files, in every encoding;
  - SQL-shaped and Unicode input: refused where a rule says so, otherwise
    stored and returned as it was sent, and nothing else changes;
  - IDOR: another customer's order, payment, notifications, private room,
    its messages and files, profile: 404 or 403, and nothing changes;
  - token abuse: alg none, HS256 signed with the public key, expired, wrong
    audience, wrong issuer, unknown key, a revoked or spent refresh token;
  - a replayed Idempotency-Key with another body.

After each attack the state it could have changed is read again and must be
the same; at the end every server must have stopped cleanly (no crash, no
sanitizer report: stack.stop_or_raise).
"""

import json
import os
import shutil
import socket
import sys
import tempfile
import time
import unittest
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import service  # noqa: E402
import stack as st  # noqa: E402
from service import harness  # noqa: E402

SERVICES = [s for s in st.SERVICES if st.binary(s)]


def send_raw(port, data, timeout=10, half_close=True):
    """`data` on a new connection; (status line, whether the server closed
    the connection within `timeout` s)."""
    c = socket.create_connection(("127.0.0.1", port), timeout=harness.scaled(timeout))
    try:
        c.sendall(data)
        if half_close:
            c.shutdown(socket.SHUT_WR)
        out, closed = b"", False
        try:
            while True:
                b = c.recv(65536)
                if not b:
                    closed = True
                    break
                out += b
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            pass
        return out.split(b"\r\n", 1)[0].decode("latin-1"), closed
    finally:
        c.close()


class Hostile(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        st.require(*SERVICES, "gateway")
        cls.key = service.SigningKey("hostile-key")
        tmp = tempfile.mkdtemp(prefix="agora-hostile-keys-")
        cls.keydir = tmp
        cls.s = st.Stack("hostile", services=SERVICES, env={
            "AGORA_JWT_KEYS": cls.key.write_keys(os.path.join(tmp, "keys.json")),
            "AGORA_HTTP_HEADER_TIMEOUT": "1s",
        }).start()
        s = cls.s
        cls.admin = s.login(st.ADMIN_EMAIL, st.ADMIN_PASSWORD)
        cls.alice = s.register("alice")
        cls.bob = s.register("bob")
        cls.pid = s.product(cls.admin, 1500, 50)
        r = s.order(cls.alice, [(cls.pid, 2)], wait=20)
        cls.order = r.json()["data"]
        cls.order = s.wait_final(cls.alice, cls.order["id"])
        cls.room = s.ok(s.call("POST", "/api/v1/rooms", cls.alice["token"],
                               {"name": "alice's", "isPrivate": True}), 201)["id"]
        cls.msg = s.ok(s.call("POST", "/api/v1/messages", cls.alice["token"],
                              {"roomId": cls.room, "content": "only for alice"}), 201)["id"]
        cls.file = s.ok(s.call("POST", "/api/v1/files?roomId=%s&name=a.txt" % cls.room,
                               cls.alice["token"], b"secret\n",
                               {"Content-Type": "text/plain"}), 201)["id"]

    @classmethod
    def tearDownClass(cls):
        st.stop_or_raise(cls.s)
        shutil.rmtree(cls.keydir, ignore_errors=True)

    # -- what must not change -------------------------------------------------------------

    def snapshot(self):
        """What an attack must leave as it was."""
        s, a = self.s, self.alice
        return {
            "order": s.get_order(a, self.order["id"])["status"],
            "stock": s.stock(self.admin, self.pid)["quantity"],
            "users": s.call("GET", "/api/v1/users?limit=1",
                            self.admin["token"]).json()["pagination"]["total"],
            "messages": [m["content"] for m in s.ok(s.call(
                "GET", "/api/v1/messages?roomId=" + self.room, a["token"]))],
            "file": s.call("GET", "/api/v1/files/%s/content" % self.file, a["token"]).body,
            "me": s.ok(s.call("GET", "/api/v1/users/me", a["token"]))["username"],
        }

    def ports(self):
        """The gateway's and every service's own port."""
        return dict(self.s.ports)

    # -- the wire -------------------------------------------------------------------------

    def test_malformed_and_oversized_requests_everywhere(self):
        before = self.snapshot()
        login = b"/v1/auth/login"
        cases = [
            ("garbage", b"GARBAGE\r\n\r\n", "400"),
            ("header of 20 KB", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000
             + b"\r\n\r\n", "431"),
            ("150 headers", b"GET /health HTTP/1.1\r\nHost: x\r\n"
             + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n", "431"),
            ("2 GB announced", b"POST PATH HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
             b"\r\nContent-Length: 2000000000\r\n\r\n{", "413"),
            ("Content-Length and chunked", b"POST PATH HTTP/1.1\r\nHost: x\r\nContent-Length: 4"
             b"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
            ("two Content-Lengths", b"POST PATH HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
             b"Content-Length: 3\r\n\r\n{}x", "400"),
            ("obfuscated Transfer-Encoding", b"POST PATH HTTP/1.1\r\nHost: x\r\n"
             b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", "400"),
            ("space before the colon", b"POST PATH HTTP/1.1\r\nHost: x\r\n"
             b"Transfer-Encoding : chunked\r\nContent-Length: 2\r\n\r\n{}", "400"),
            ("bad chunk size", b"POST PATH HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
             b"\r\n\r\nzz\r\n", "400"),
            ("NUL in a header", b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", "400"),
            ("bare LF", b"GET /health HTTP/1.1\nHost: x\n\n", "400"),
            ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "400"),
        ]
        for name, port in self.ports().items():
            path = b"/api/v1/auth/login" if name == "gateway" else login
            for what, data, status in cases:
                with self.subTest(port=name, attack=what):
                    line, closed = send_raw(port, data.replace(b"PATH", path))
                    self.assertTrue(line.startswith("HTTP/1.1 " + status), line)
                    self.assertTrue(closed, "the connection stayed open")
        self.assertEqual(self.snapshot(), before)

    def test_slowloris_is_cut_off(self):
        for name, port in self.ports().items():
            with self.subTest(port=name):
                c = socket.create_connection(("127.0.0.1", port), timeout=harness.scaled(15))
                try:
                    c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                    start, closed, got = time.monotonic(), False, b""
                    # one byte of a header every 200 ms, for at most 10 s
                    while time.monotonic() - start < harness.scaled(10):
                        try:
                            c.sendall(b"X")
                        except (BrokenPipeError, ConnectionResetError):
                            closed = True
                            break
                        c.settimeout(0.2)
                        try:
                            b = c.recv(4096)
                            if not b:
                                closed = True
                                break
                            got += b
                        except socket.timeout:
                            pass
                        except ConnectionResetError:
                            closed = True
                            break
                    self.assertTrue(closed, "a trickling head kept the connection for 10 s")
                    if got:
                        self.assertTrue(got.startswith(b"HTTP/1.1 408"), got[:80])
                finally:
                    c.close()

    def test_path_traversal_at_the_static_files(self):
        for path in ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fetc%2fpasswd",
                     "//etc/passwd", "/index.html%00.js", "/css/..%2f..%2f..%2fetc/passwd",
                     "/%c0%ae%c0%ae/etc/passwd", "/..\\..\\etc\\passwd", "/%252e%252e/etc/passwd",
                     "/.git/config", "/../config/gateway.json"]:
            with self.subTest(path=path):
                r = self.s.call("GET", path)
                self.assertIn(r.status, (400, 404), r)
                self.assertNotIn(b"root:", r.body)
                self.assertNotIn(b"upstreams", r.body)

    # -- what the services store ----------------------------------------------------------

    def test_sql_shaped_and_unicode_input(self):
        s, a = self.s, self.alice
        before = self.snapshot()
        sqlish = ["' OR '1'='1", "'; DROP TABLE users; --", "\" OR \"\"=\"", "1; SELECT pg_sleep(5)",
                  "%' OR 1=1 --", "\\'; --"]
        for q in sqlish + ["\u202e\u0301", "\U0001F600"]:
            with self.subTest(search=q):
                r = s.call("GET", "/api/v1/products?q=" + urllib.parse.quote(q))
                self.assertIn(r.status, (200, 422), r)
                if r.status == 200:
                    self.assertEqual(r.json()["data"], [], "a search matched everything")
        # a NUL would cut the value short ("q=%00" is q=""): refused, at every port
        for name, port in self.ports().items():
            for path in ("/api/v1/products?q=%00", "/v1/products?q=a%00b", "/health%00.html"):
                with self.subTest(port=name, nul=path):
                    r = s.call("GET", path, port=port)
                    self.assertEqual(r.status, 400, r)
        # a username that is SQL is refused by its rule, and makes no user
        for name in sqlish[:2]:
            r = s.call("POST", "/api/v1/auth/register",
                       body={"username": name, "email": "x%s@example.com" % uuid.uuid4().hex[:6],
                             "password": "password-123"})
            self.assertEqual(r.status, 422, r)
        self.assertEqual(self.snapshot(), before)
        # text that looks like SQL, or is hard Unicode, is stored as it came
        for text in sqlish + ["\u202eevil\u202c", "e\u0301\u0301\u0301", "\U0001F9D1\u200d\U0001F680",
                              "\ufeff zero\u200bwidth"]:
            with self.subTest(content=text):
                m = s.ok(s.call("POST", "/api/v1/messages", a["token"],
                                {"roomId": self.room, "content": text}), 201)
                got = s.ok(s.call("GET", "/api/v1/messages/" + m["id"], a["token"]))
                self.assertEqual(got["content"], text)
                s.ok(s.call("DELETE", "/api/v1/messages/" + m["id"], a["token"]))
        # invalid UTF-8 in a JSON body is refused
        r = s.call("POST", "/api/v1/messages", a["token"],
                   b'{"roomId": "%s", "content": "\xff\xfe"}' % self.room.encode())
        self.assertIn(r.status, (400, 422), r)
        self.assertEqual(self.snapshot()["order"], before["order"])

    def test_another_customers_things(self):
        s, a, b = self.s, self.alice, self.bob
        before = self.snapshot()
        oid, room, msg, fid = self.order["id"], self.room, self.msg, self.file
        attempts = [
            ("GET", "/api/v1/orders/" + oid, None, (404,)),
            ("POST", "/api/v1/orders/%s/cancel" % oid, {"reason": "mine now"}, (404,)),
            ("GET", "/api/v1/orders/%s/history" % oid, None, (404,)),
            ("GET", "/api/v1/payments?orderId=" + oid, None, (403,)),
            ("GET", "/api/v1/rooms/" + room, None, (404,)),
            ("PATCH", "/api/v1/rooms/" + room, {"name": "bob's"}, (404,)),
            ("DELETE", "/api/v1/rooms/" + room, None, (404,)),
            ("GET", "/api/v1/rooms/%s/members" % room, None, (404,)),
            ("GET", "/api/v1/messages?roomId=" + room, None, (404,)),
            ("POST", "/api/v1/messages", {"roomId": room, "content": "in"}, (404,)),
            ("GET", "/api/v1/messages/" + msg, None, (404,)),
            ("PATCH", "/api/v1/messages/" + msg, {"content": "changed"}, (404,)),
            ("DELETE", "/api/v1/messages/" + msg, None, (404,)),
            ("GET", "/api/v1/files/" + fid, None, (404,)),
            ("GET", "/api/v1/files/%s/content" % fid, None, (404,)),
            ("DELETE", "/api/v1/files/" + fid, None, (404,)),
            ("PUT", "/api/v1/users/" + a["id"], {"bio": "owned"}, (403,)),
            ("DELETE", "/api/v1/users/" + a["id"], None, (403,)),
        ]
        for method, path, body, statuses in attempts:
            with self.subTest(method=method, path=path):
                r = s.call(method, path, b["token"], body)
                self.assertIn(r.status, statuses, r)
                self.assertNotIn(b"only for alice", r.body)
                self.assertNotIn(b"secret", r.body)
        # alice's notifications: bob sees none, and cannot mark them read
        mine = s.call("GET", "/api/v1/notifications", a["token"]).json()
        ids = [n["id"] for n in mine["data"]]
        self.assertTrue(ids, "alice has notifications of her order")
        theirs = s.call("GET", "/api/v1/notifications", b["token"]).json()
        self.assertFalse(set(ids) & {n["id"] for n in theirs["data"]})
        r = s.call("POST", "/api/v1/notifications/read", b["token"], {"ids": ids})
        self.assertEqual(r.status, 200, r)
        after = s.call("GET", "/api/v1/notifications", a["token"]).json()
        self.assertEqual(after["unreadCount"], mine["unreadCount"])
        self.assertEqual(self.snapshot(), before)

    # -- tokens ---------------------------------------------------------------------------

    def test_token_abuse(self):
        s, a = self.s, self.alice
        claims = service.claims(a["id"], a["email"])
        good = self.key.jwt(claims)
        # the harness's key signs what users would: the refusals below are the token's
        self.assertEqual(s.call("GET", "/api/v1/users/me", good).status, 200)
        jwks = json.loads(s.call("GET", "/.well-known/jwks.json",
                                 port=s.ports["users"]).body)
        x = jwks["keys"][0]["x"].encode()
        bad = {
            "alg none": self.key.jwt(claims, alg="none"),
            "HS256 with the public key": self.key.jwt(claims, alg="HS256", key=x),
            "expired": self.key.jwt(service.claims(a["id"], a["email"], ttl=-120)),
            "not yet valid": self.key.jwt(dict(claims, nbf=int(time.time()) + 3600)),
            "wrong audience": self.key.jwt(dict(claims, aud="someone-else")),
            "wrong issuer": self.key.jwt(dict(claims, iss="evil")),
            "unknown key": self.key.jwt(claims, kid="no-such-kid"),
            "admin by its own say": good.rsplit(".", 1)[0][:-2] + "xx." + good.rsplit(".", 1)[1],
            "garbage": "a.b.c",
        }
        targets = [("GET", "/api/v1/users/me", None), ("GET", "/api/v1/orders", None),
                   ("GET", "/v1/users/me", s.ports["users"]),
                   ("GET", "/v1/orders", s.ports.get("orders"))]
        for what, token in bad.items():
            for method, path, port in targets:
                if port is None and not path.startswith("/api/"):
                    continue
                with self.subTest(token=what, path=path):
                    r = s.call(method, path, token, port=port)
                    self.assertEqual(r.status, 401, r)
                    self.assertTrue(r.header("WWW-Authenticate"), r)
        # refresh tokens: spent once, and revoked at logout
        d = s.ok(s.call("POST", "/api/v1/auth/login",
                        body={"email": a["email"], "password": "password-123"}))
        r1 = s.ok(s.call("POST", "/api/v1/auth/refresh", body={"refreshToken": d["refreshToken"]}))
        r = s.call("POST", "/api/v1/auth/refresh", body={"refreshToken": d["refreshToken"]})
        self.assertEqual((r.status, r.json()["error"]["code"]), (401, "INVALID_REFRESH_TOKEN"))
        self.assertEqual(s.call("POST", "/api/v1/auth/logout", r1["token"]).status, 204)
        r = s.call("POST", "/api/v1/auth/refresh", body={"refreshToken": r1["refreshToken"]})
        self.assertEqual(r.status, 401, r)
        # sign in again for the other tests (logout ended alice's sessions)
        self.__class__.alice = dict(a, **s.login(a["email"], "password-123"))

    def test_replayed_idempotency_key_with_another_body(self):
        s, a = self.s, self.alice
        before = self.snapshot()
        key = uuid.uuid4().hex
        first = s.order(a, [(self.pid, 1)], key=key, wait=20).json()["data"]
        s.wait_final(a, first["id"])
        stock = s.stock(self.admin, self.pid)["quantity"]
        again = s.order(a, [(self.pid, 1)], key=key, status=None)
        self.assertIn(again.status, (200, 201), again)
        self.assertEqual(again.json()["data"]["id"], first["id"])
        other = s.order(a, [(self.pid, 3)], key=key, status=None)
        self.assertEqual((other.status, other.json()["error"]["code"]), (409, "IDEMPOTENCY_CONFLICT"))
        self.assertEqual(s.stock(self.admin, self.pid)["quantity"], stock)
        after = self.snapshot()
        self.assertEqual(after["order"], before["order"])


if __name__ == "__main__":
    harness.main()
