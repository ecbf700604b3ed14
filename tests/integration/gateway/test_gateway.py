#!/usr/bin/env python3
"""agora-gateway end to end: a real agora-registry, agora-users (tokens),
agora-catalog, programmable upstreams (upstream.py) registered in the
registry, and the gateway in front, driven as a client would.

Run through ctest (integration.gateway), under tests/harness/with-servers
nats: AGORA_GATEWAYD, AGORA_REGISTRYD, AGORA_USERSD, AGORA_CATALOGD and
AGORA_TEST_NATS_URL come from there.
"""
import base64
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "http"))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import harness  # noqa: E402
from service import free_port  # noqa: E402

GATEWAYD = os.environ.get("AGORA_GATEWAYD")
REGISTRYD = os.environ.get("AGORA_REGISTRYD")
USERSD = os.environ.get("AGORA_USERSD")
CATALOGD = os.environ.get("AGORA_CATALOGD")
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@test.local", "admin-password-1"
PY = sys.executable


def config(extra_routes=()):
    quick_breaker = {"window": 10, "minCalls": 4, "failureRatePct": 50, "openMs": 1000,
                     "maxOpenMs": 2000, "probes": 1}
    routes = [
        {"prefix": "/api/v1/auth", "service": "users", "rewrite": "/v1/auth"},
        {"prefix": "/api/v1/echo", "service": "echo", "rewrite": "/reflect"},
        {"prefix": "/api/v1/private", "service": "echo", "rewrite": "/reflect", "auth": "required"},
        {"prefix": "/api/v1/admin-only", "service": "echo", "rewrite": "/reflect", "role": "admin"},
        {"prefix": "/api/v1/limited", "service": "echo", "rewrite": "/reflect", "rateLimit": "tight"},
        {"prefix": "/api/v1/readonly", "service": "echo", "rewrite": "/reflect", "methods": ["GET"]},
        {"prefix": "/api/v1/status", "service": "statussvc", "rewrite": "/status"},
        {"prefix": "/api/v1/ws", "service": "echo", "rewrite": "/ws", "websocket": True},
        {"prefix": "/api/v1/pool", "service": "pool", "rewrite": "/reflect"},
        {"prefix": "/api/v1/flaky", "service": "flaky", "rewrite": "/reflect"},
        {"prefix": "/api/v1/upload", "service": "echo", "rewrite": "/reflect",
         "spoolBody": True, "maxBodyBytes": 8 * 1024 * 1024},
        {"prefix": "/api/v1/stream", "service": "echo", "rewrite": "/stream",
         "streamBody": True, "maxBodyBytes": 64 * 1024 * 1024, "timeoutMs": 30000},
    ] + list(extra_routes)
    return {
        "latestVersion": "v1",
        "dashboardTimeoutMs": 800,
        "cors": {"origins": ["http://app.example"]},
        "rateLimits": {"default": {"ip": {"rate": 100000, "burst": 100000}},
                       "tight": {"ip": {"rate": 0.5, "burst": 3}}},
        "upstreams": {
            "users": {"timeoutMs": 5000}, "catalog": {"timeoutMs": 2000},
            "orders": {}, "notifications": {},
            "echo": {"timeoutMs": 2000, "retries": 1, "retryBackoffMs": 10},
            "statussvc": {"timeoutMs": 2000, "retries": 1, "retryBackoffMs": 10,
                          "breaker": {"minCalls": 1000}},
            # a hung instance must be out within a few seconds: one failed check is enough
            "pool": {"timeoutMs": 400, "retries": 1, "retryBackoffMs": 10, "healthFails": 1},
            # no active checks: the breaker, not a health check, must see it die
            "flaky": {"timeoutMs": 1000, "retries": 1, "retryBackoffMs": 10,
                      "breaker": quick_breaker, "healthCheck": False},
            # active checks with hysteresis: down after 4 failed in a row, up after 3 passed
            "hcsvc": {"healthFails": 4, "healthPasses": 3},
        },
        "routes": routes,
    }


class Upstream:
    def __init__(self, name, port=None):
        self.name = name
        self.port = port or free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([PY, os.path.join(HERE, "upstream.py"), str(self.port), self.name],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = self.proc.stdout.readline().decode()
        self.proc.stdout.close()
        assert line.startswith("ready"), line
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


class Gateway(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for v in ("GATEWAYD", "REGISTRYD", "USERSD", "CATALOGD"):
            if not globals()[v]:
                raise RuntimeError("set AGORA_%s (run through ctest)" % v)
        cls.tmp = tempfile.mkdtemp(prefix="agora-gw-")
        nats = os.environ["AGORA_TEST_NATS_URL"]
        cls.registry = harness.Server({"AGORA_DB": "sqlite:%s/registry.db" % cls.tmp},
                                      name="registry", binary=REGISTRYD).start(harness.scaled(20))
        cls.reg_url = "http://127.0.0.1:%d" % cls.registry.port
        common = {"AGORA_REGISTRY": cls.reg_url, "AGORA_BUS": nats,
                  "AGORA_REGISTRY_RESYNC": "1s"}
        cls.users = harness.Server(dict(common, AGORA_DB="sqlite:%s/users.db" % cls.tmp,
                                        AGORA_ADMIN_EMAIL=ADMIN_EMAIL,
                                        AGORA_ADMIN_PASSWORD=ADMIN_PASSWORD),
                                   name="users", binary=USERSD).start(harness.scaled(20))
        cls.jwks = "http://127.0.0.1:%d/.well-known/jwks.json" % cls.users.port
        cls.catalog_env = dict(common, AGORA_DB="sqlite:%s/catalog.db" % cls.tmp,
                               AGORA_JWKS_URL=cls.jwks)
        cls.catalog = harness.Server(cls.catalog_env, name="catalog",
                                     binary=CATALOGD).start(harness.scaled(20))
        cls.ups = {}
        for name in ("echo", "pool-1", "pool-2", "flaky", "hc"):
            cls.ups[name] = Upstream(name).start()
        cls.register("echo-1", "echo", cls.ups["echo"].port)
        cls.register("status-1", "statussvc", cls.ups["echo"].port)
        cls.register("pool-1", "pool", cls.ups["pool-1"].port)
        cls.register("pool-2", "pool", cls.ups["pool-2"].port)
        cls.register_nocheck("hc-1", "hcsvc", cls.ups["hc"].port)
        # flaky: the registry checks it rarely, so that the gateway's own
        # breaker, not the registry, reacts when it dies.
        cls.register("flaky-1", "flaky", cls.ups["flaky"].port, interval="60s")
        cls.web = os.path.join(cls.tmp, "web")
        os.makedirs(cls.web)
        with open(os.path.join(cls.web, "index.html"), "w") as f:
            f.write("<!doctype html><title>test shop</title>")
        cls.config_path = os.path.join(cls.tmp, "gateway.json")
        cls.write_config(config())
        gw_env = {"AGORA_REGISTRY": cls.reg_url, "AGORA_JWKS_URL": cls.jwks,
                  "AGORA_GATEWAY_CONFIG": cls.config_path,
                  "AGORA_WEB_DIR": cls.web,
                  "AGORA_GATEWAY_HEALTH_INTERVAL": "300ms",
                  "AGORA_GATEWAY_EJECT_TIME": "1s",
                  "AGORA_REGISTRY_RESYNC": "1s"}
        if harness.SANITIZED:
            # ASan's quarantine keeps freed memory and would grow RSS without
            # any leak (test_streamed_upload_route measures it), as in
            # files/test_files.py.
            opts = os.environ.get("ASAN_OPTIONS", "")
            gw_env["ASAN_OPTIONS"] = ":".join(
                x for x in (opts, "quarantine_size_mb=0", "thread_local_quarantine_size_kb=0")
                if x)
        cls.gw = harness.Server(gw_env, name="gateway", binary=GATEWAYD).start(harness.scaled(20))
        cls.port = cls.gw.port
        for svc in ("echo", "pool", "flaky", "users", "statussvc", "catalog", "hcsvc"):
            cls.wait_instances(svc, 2 if svc == "pool" else 1)
        cls.admin = cls.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        cls.alice = cls.register_user("alice")

    @classmethod
    def tearDownClass(cls):
        for u in getattr(cls, "ups", {}).values():
            u.stop()
        problems = []
        for s in ("gw", "catalog", "users", "registry"):
            srv = getattr(cls, s, None)
            if srv:
                srv.stop()
                srv.check_sanitizers(problems)
        shutil.rmtree(cls.tmp, ignore_errors=True)
        if problems:
            raise AssertionError("\n".join(problems))

    # -- helpers ----------------------------------------------------------

    @classmethod
    def write_config(cls, doc):
        tmp = cls.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(doc if isinstance(doc, str) else json.dumps(doc))
        os.replace(tmp, cls.config_path)

    @classmethod
    def register(cls, sid, name, port, interval="1s"):
        body = {"ID": sid, "Name": name, "Address": "127.0.0.1", "Port": port,
                "Check": {"HTTP": "http://127.0.0.1:%d/health" % port, "Interval": interval,
                          "Timeout": "500ms"}}
        req = urllib.request.Request(cls.reg_url + "/v1/agent/service/register", method="PUT",
                                     data=json.dumps(body).encode())
        urllib.request.urlopen(req, timeout=5).read()

    @classmethod
    def register_nocheck(cls, sid, name, port):
        body = {"ID": sid, "Name": name, "Address": "127.0.0.1", "Port": port}
        req = urllib.request.Request(cls.reg_url + "/v1/agent/service/register", method="PUT",
                                     data=json.dumps(body).encode())
        urllib.request.urlopen(req, timeout=5).read()

    @classmethod
    def wait_instances(cls, service, n, timeout=15):
        deadline = time.monotonic() + harness.scaled(timeout)
        while time.monotonic() < deadline:
            st, body, _ = cls.call("GET", "/admin/upstreams")
            svc = body.get("data", {}).get("services", {}).get(service, {}) if st == 200 else {}
            up = [i for i in svc.get("instances", []) if i.get("healthy", True) and not i.get("ejected")]
            if len(up) >= n:
                return
            time.sleep(0.1)
        raise AssertionError("the gateway does not see %d instance(s) of %s: %s" % (n, service, body))

    @classmethod
    def call(cls, method, path, headers=None, body=None, conn=None):
        own = conn is None
        c = conn or http.client.HTTPConnection("127.0.0.1", cls.port, timeout=harness.scaled(10))
        data = None
        hdrs = dict(headers or {})
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        c.request(method, path, body=data, headers=hdrs)
        r = c.getresponse()
        raw = r.read()
        if own:
            c.close()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"raw": raw.decode("utf-8", "replace")}
        return r.status, parsed, r

    @classmethod
    def login(cls, email, password):
        st, body, _ = cls.call("POST", "/api/v1/auth/login", body={"email": email, "password": password})
        assert st == 200, body
        return body["data"]

    @classmethod
    def register_user(cls, name):
        st, body, _ = cls.call("POST", "/api/v1/auth/register",
                               body={"username": name, "email": "%s@test.local" % name,
                                     "password": "password-%s-1" % name})
        assert st == 201, body
        return body["data"]

    @staticmethod
    def bearer(who):
        return {"Authorization": "Bearer " + who["token"]}

    # -- routing ------------------------------------------------------------

    def test_routing_and_rewriting(self):
        st, body, r = self.call("GET", "/api/v1/echo/a/b?x=1&y=two", {"X-Request-Id": "req-12345678"})
        self.assertEqual(st, 200, body)
        self.assertEqual(body["path"], "/reflect/a/b?x=1&y=two")
        self.assertEqual(r.getheader("X-Request-Id"), "req-12345678")
        self.assertEqual(body["headers"].get("X-Request-Id"), "req-12345678")
        self.assertIn("127.0.0.1", body["headers"].get("X-Forwarded-For", ""))
        self.assertTrue(body["headers"].get("traceparent", "").startswith("00-"))
        self.assertIn("X-Agora-Deadline-Ms", body["headers"])
        self.assertEqual(r.getheader("X-Content-Type-Options"), "nosniff")
        # unversioned and Accept-Version reach the same route
        st, body, _ = self.call("GET", "/api/echo/z")
        self.assertEqual((st, body["path"]), (200, "/reflect/z"))
        st, body, _ = self.call("GET", "/api/echo/z", {"Accept-Version": "v1"})
        self.assertEqual((st, body["path"]), (200, "/reflect/z"))
        st, body, _ = self.call("GET", "/api/echo/z", {"Accept-Version": "latest!"})
        self.assertEqual((st, body["error"]["code"]), (400, "BAD_VERSION"))
        st, body, _ = self.call("GET", "/api/v9/echo/z")
        self.assertEqual((st, body["error"]["code"]), (404, "NOT_FOUND"))
        self.assertIn("requestId", body)
        # a prefix matches at a segment boundary only
        st, body, _ = self.call("GET", "/api/v1/echoes")
        self.assertEqual(st, 404)
        # methods
        st, body, r = self.call("POST", "/api/v1/readonly/x", body={"a": 1})
        self.assertEqual(st, 405)
        self.assertIn("GET", r.getheader("Allow"))
        # bodies travel intact
        st, body, _ = self.call("PUT", "/api/v1/echo/doc", body={"name": "ü" * 1000})
        self.assertEqual(st, 200)
        self.assertEqual(json.loads(body["body"]), {"name": "ü" * 1000})
        self.assertEqual(body["method"], "PUT")

    def test_static_files_and_unknown_paths(self):
        st, body, r = self.call("GET", "/")
        self.assertEqual(st, 200)
        self.assertIn("test shop", body["raw"])
        self.assertTrue(r.getheader("Content-Type").startswith("text/html"))
        etag = r.getheader("ETag")
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request("GET", "/index.html", headers={"If-None-Match": etag})
        r = c.getresponse()
        r.read()
        c.close()
        self.assertEqual(r.status, 304)
        st, body, _ = self.call("GET", "/no-such-page.html")
        self.assertEqual((st, body["error"]["code"]), (404, "NOT_FOUND"))
        # no way out of web/
        with harness.Conn(self.port) as conn:
            conn.send(b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n")
            resp = conn.read_response()
            self.assertIn(resp.status, (400, 403, 404))
            self.assertNotIn(b"root:", resp.body)

    def test_cors(self):
        st, _, r = self.call("OPTIONS", "/api/v1/echo/x",
                             {"Origin": "http://app.example", "Access-Control-Request-Method": "PUT",
                              "Access-Control-Request-Headers": "authorization"})
        self.assertEqual(st, 204)
        self.assertEqual(r.getheader("Access-Control-Allow-Origin"), "http://app.example")
        self.assertIn("PUT", r.getheader("Access-Control-Allow-Methods"))
        st, body, _ = self.call("OPTIONS", "/api/v1/echo/x",
                                {"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"})
        self.assertEqual((st, body["error"]["code"]), (403, "CORS_FORBIDDEN"))
        st, _, r = self.call("GET", "/api/v1/echo/x", {"Origin": "http://app.example"})
        self.assertEqual(r.getheader("Access-Control-Allow-Origin"), "http://app.example")
        st, _, r = self.call("GET", "/api/v1/echo/x", {"Origin": "http://evil.example"})
        self.assertIsNone(r.getheader("Access-Control-Allow-Origin"))

    # -- identity -------------------------------------------------------------

    def test_auth_401_403_and_caller_headers(self):
        st, body, r = self.call("GET", "/api/v1/private/x")
        self.assertEqual((st, body["error"]["code"]), (401, "UNAUTHENTICATED"))
        self.assertTrue(r.getheader("WWW-Authenticate").startswith("Bearer"))
        st, body, _ = self.call("GET", "/api/v1/private/x", {"Authorization": "Bearer not.a.token"})
        self.assertEqual(st, 401)
        # a token signed by nobody we trust
        forged = self.alice["token"].rsplit(".", 1)[0] + ".AAAA"
        st, body, _ = self.call("GET", "/api/v1/private/x", {"Authorization": "Bearer " + forged})
        self.assertEqual(st, 401)
        st, body, _ = self.call("GET", "/api/v1/private/x",
                                dict(self.bearer(self.alice), **{"X-User-Role": "admin"}))
        self.assertEqual(st, 200, body)
        self.assertEqual(body["headers"]["X-User-Id"], self.alice["user"]["id"])
        self.assertEqual(body["headers"]["X-User-Role"], "customer")
        self.assertEqual(body["headers"]["X-User-Email"], "alice@test.local")
        self.assertTrue(body["headers"]["Authorization"].startswith("Bearer "))
        # identity headers from the client are never passed on
        st, body, _ = self.call("GET", "/api/v1/echo/x", {"X-User-Id": "someone-else", "X-User-Role": "admin"})
        self.assertEqual(st, 200)
        self.assertNotIn("X-User-Id", body["headers"])
        self.assertNotIn("X-User-Role", body["headers"])
        # roles
        st, body, _ = self.call("GET", "/api/v1/admin-only/x", self.bearer(self.alice))
        self.assertEqual((st, body["error"]["code"]), (403, "FORBIDDEN"))
        st, body, _ = self.call("GET", "/api/v1/admin-only/x", self.bearer(self.admin))
        self.assertEqual(st, 200, body)
        self.assertEqual(body["headers"]["X-User-Role"], "admin")

    def test_rate_limit_headers_and_429(self):
        seen = []
        for _ in range(3):
            st, body, r = self.call("GET", "/api/v1/limited/x")
            self.assertEqual(st, 200, body)
            self.assertEqual(r.getheader("RateLimit-Limit"), "3")
            seen.append(int(r.getheader("RateLimit-Remaining")))
        self.assertEqual(seen, [2, 1, 0])
        st, body, r = self.call("GET", "/api/v1/limited/x")
        self.assertEqual((st, body["error"]["code"]), (429, "RATE_LIMITED"))
        self.assertGreaterEqual(int(r.getheader("Retry-After")), 1)
        self.assertEqual(r.getheader("RateLimit-Remaining"), "0")
        # other routes keep their own budget
        st, _, _ = self.call("GET", "/api/v1/echo/x")
        self.assertEqual(st, 200)

    # -- resilience -------------------------------------------------------------

    def count(self, k):
        with urllib.request.urlopen("http://127.0.0.1:%d/count?k=%s" % (self.ups["echo"].port, k), timeout=5) as r:
            return json.loads(r.read())

    def test_retries_only_for_idempotent_requests(self):
        st, _, _ = self.call("GET", "/api/v1/status/503?k=get1")
        self.assertEqual(st, 503)  # the upstream's own answer, after one retry
        self.assertEqual(self.count("get1"), {"GET": 2})
        st, _, _ = self.call("POST", "/api/v1/status/503?k=post1", body={"x": 1})
        self.assertEqual(st, 503)
        self.assertEqual(self.count("post1"), {"POST": 1})
        st, _, _ = self.call("GET", "/api/v1/status/404?k=get404")
        self.assertEqual(st, 404)  # not a failure: no retry
        self.assertEqual(self.count("get404"), {"GET": 1})

    def test_breaker_opens_when_upstream_killed_and_closes_when_back(self):
        st, body, _ = self.call("GET", "/api/v1/flaky/x")
        self.assertEqual(st, 200, body)
        port = self.ups["flaky"].port
        self.ups["flaky"].stop()
        codes = []
        deadline = time.monotonic() + harness.scaled(10)
        while time.monotonic() < deadline:
            st, body, r = self.call("GET", "/api/v1/flaky/x")
            codes.append((st, body.get("error", {}).get("code")))
            if st == 503 and body["error"]["code"] == "CIRCUIT_OPEN":
                self.assertGreaterEqual(int(r.getheader("Retry-After")), 1)
                break
        self.assertEqual(codes[-1], (503, "CIRCUIT_OPEN"), codes)
        st, body, _ = self.call("GET", "/admin/breakers")
        flaky = [b for b in body["data"] if b["name"] == "flaky"][0]
        self.assertEqual(flaky["state"], "open", flaky)
        # back on the same port: the breaker lets a probe through and closes
        self.ups["flaky"] = Upstream("flaky", port).start()
        deadline = time.monotonic() + harness.scaled(15)
        st = None
        while time.monotonic() < deadline:
            st, body, _ = self.call("GET", "/api/v1/flaky/x")
            if st == 200:
                break
            time.sleep(0.2)
        self.assertEqual(st, 200, body)
        st, body, _ = self.call("GET", "/admin/breakers")
        flaky = [b for b in body["data"] if b["name"] == "flaky"][0]
        self.assertEqual(flaky["state"], "closed", flaky)

    def test_hanging_instance_is_ejected(self):
        hung = self.ups["pool-2"]
        hung.proc.send_signal(signal.SIGSTOP)
        try:
            failures, slow_after = [], []
            start = time.monotonic()
            while time.monotonic() - start < harness.scaled(6):
                t0 = time.monotonic()
                st, body, _ = self.call("GET", "/api/v1/pool/x")
                took = time.monotonic() - t0
                if st != 200:
                    failures.append((st, body))
                elif time.monotonic() - start > harness.scaled(3) and took > 0.35:
                    slow_after.append(took)
                if st == 200:
                    self.assertEqual(body["instance"], "pool-1" if took > 0.35 else body["instance"])
            # GETs are retried on the other instance: nobody saw an error,
            # and once the hung one is out, nobody waits for it.
            self.assertEqual(failures, [])
            self.assertEqual(slow_after, [])
            st, body, _ = self.call("GET", "/admin/upstreams")
            pool = {i["id"]: i for i in body["data"]["services"].get("pool", {}).get("instances", [])}
            p2 = pool.get("pool-2")
            self.assertTrue(p2 is None or not p2["healthy"] or p2["ejected"], pool)
        finally:
            hung.proc.send_signal(signal.SIGCONT)
        self.wait_instances("pool", 2, timeout=20)

    # -- aggregation, tunnels, reload ------------------------------------------

    def test_dashboard_partial_when_a_service_stops(self):
        st, body, _ = self.call("GET", "/api/v1/dashboard")
        self.assertEqual(st, 401)
        t0 = time.monotonic()
        st, body, _ = self.call("GET", "/api/v1/dashboard", self.bearer(self.alice))
        self.assertEqual(st, 200, body)
        self.assertLess(time.monotonic() - t0, 3)
        self.assertEqual(body["data"]["profile"]["email"], "alice@test.local")
        self.assertIsInstance(body["data"]["recommendations"], list)
        # orders and notifications do not run in this test: missing, said so
        self.assertTrue(body["partial"])
        self.assertIn("recentOrders", body["missing"])
        self.assertIn("unreadNotifications", body["missing"])
        self.assertNotIn("recommendations", body["missing"])
        self.catalog.stop()
        try:
            t0 = time.monotonic()
            st, body, _ = self.call("GET", "/api/v1/dashboard", self.bearer(self.alice))
            self.assertEqual(st, 200, body)
            self.assertLess(time.monotonic() - t0, 3)
            self.assertIn("recommendations", body["missing"])
            self.assertIsNone(body["data"]["recommendations"])
            self.assertEqual(body["data"]["profile"]["email"], "alice@test.local")
        finally:
            type(self).catalog = harness.Server(self.catalog_env, name="catalog",
                                                binary=CATALOGD).start(harness.scaled(20))

    def ws_frame(self, payload, op=1):
        mask = os.urandom(4)
        n = len(payload)
        hdr = bytes([0x80 | op])
        if n < 126:
            hdr += bytes([0x80 | n])
        elif n < 65536:
            hdr += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            hdr += bytes([0x80 | 127]) + struct.pack("!Q", n)
        return hdr + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))

    @staticmethod
    def ws_read(sock, buf):
        def need(n):
            nonlocal buf
            while len(buf) < n:
                chunk = sock.recv(65536)
                if not chunk:
                    raise AssertionError("the tunnel closed")
                buf += chunk
        need(2)
        n = buf[1] & 0x7F
        off = 2
        if n == 126:
            need(4)
            n = struct.unpack("!H", buf[2:4])[0]
            off = 4
        elif n == 127:
            need(10)
            n = struct.unpack("!Q", buf[2:10])[0]
            off = 10
        need(off + n)
        return buf[0] & 0x0F, buf[off:off + n], buf[off + n:]

    def test_websocket_echo_through_the_gateway(self):
        key = base64.b64encode(os.urandom(16)).decode()
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        try:
            s.sendall(("GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n" % key).encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                self.assertTrue(chunk, "closed before the 101")
                head += chunk
            head, rest = head.split(b"\r\n\r\n", 1)
            lines = head.decode().split("\r\n")
            self.assertIn(" 101 ", lines[0] + " ")
            hdrs = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:]}
            want = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            self.assertEqual(hdrs.get("sec-websocket-accept"), want)
            for payload in (b"hello", "é".encode() * 40000):
                s.sendall(self.ws_frame(payload))
                op, data, rest = self.ws_read(s, rest)
                self.assertEqual((op, data), (1, payload))
            s.sendall(self.ws_frame(b"", op=8))
            op, _, rest = self.ws_read(s, rest)
            self.assertEqual(op, 8)
        finally:
            s.close()
        # a route without websocket: true refuses the upgrade
        st, body, _ = self.call("GET", "/api/v1/echo/x", {"Upgrade": "websocket", "Connection": "Upgrade"})
        self.assertEqual((st, body["error"]["code"]), (400, "BAD_UPGRADE"))

    def test_reload_under_load_fails_no_request(self):
        stop = threading.Event()
        results = {"ok": 0, "bad": []}
        lock = threading.Lock()

        def load():
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            while not stop.is_set():
                try:
                    st, body, _ = self.call("GET", "/api/v1/echo/load", conn=c)
                except (OSError, http.client.HTTPException) as e:
                    st, body = -1, str(e)
                    c.close()
                    c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                with lock:
                    if st == 200:
                        results["ok"] += 1
                    else:
                        results["bad"].append((st, body))
            c.close()

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.3)
            extra = {"prefix": "/api/v1/extra", "service": "echo", "rewrite": "/reflect/extra"}
            for i in range(6):
                self.write_config(config([extra] if i % 2 == 0 else []))
                if i % 3 == 2:
                    self.gw.signal(signal.SIGHUP)
                    time.sleep(0.3)
                else:
                    st, body, _ = self.call("POST", "/admin/reload")
                    self.assertEqual(st, 200, body)
                time.sleep(0.2)
            # a broken file is refused and the running configuration stays
            self.write_config("{ not json")
            st, body, _ = self.call("POST", "/admin/reload")
            self.assertEqual((st, body["error"]["code"]), (422, "CONFIG_INVALID"))
            self.write_config(config([{"prefix": "/api/v1/bad", "service": "nope"}]))
            st, body, _ = self.call("POST", "/admin/reload")
            self.assertEqual(st, 422)
            self.assertIn("nope", body["error"]["message"])
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertEqual(results["bad"], [])
        self.assertGreater(results["ok"], 50)
        # the last good configuration (i == 5: without /extra) is in force
        st, _, _ = self.call("GET", "/api/v1/extra")
        self.assertEqual(st, 404)
        self.write_config(config([{"prefix": "/api/v1/extra", "service": "echo", "rewrite": "/reflect/extra"}]))
        st, body, _ = self.call("POST", "/admin/reload")
        self.assertEqual(st, 200)
        st, body, _ = self.call("GET", "/api/v1/extra/y")
        self.assertEqual((st, body.get("path")), (200, "/reflect/extra/y"))
        st, body, _ = self.call("GET", "/admin/routes")
        self.assertIn("/api/v1/extra", [r["prefix"] for r in body["data"]["routes"]])
        self.write_config(config())
        self.call("POST", "/admin/reload")

    def test_no_instance_is_503_with_retry_after(self):
        st, body, r = self.call("GET", "/api/v1/dashboard/../orders")  # normalised by nobody: 404
        self.assertIn(st, (404,))
        cfg = config([{"prefix": "/api/v1/ghost", "service": "orders"}])
        self.write_config(cfg)
        self.assertEqual(self.call("POST", "/admin/reload")[0], 200)
        try:
            # a declared upstream with no instance at all: not running, said plainly
            st, body, r = self.call("GET", "/api/v1/ghost")
            self.assertEqual((st, body["error"]["code"]), (503, "UPSTREAM_NOT_RUNNING"), body)
            self.assertEqual(body["error"]["message"],
                             "agora-orders is not running: no instance is registered")
            self.assertGreaterEqual(int(r.getheader("Retry-After")), 1)
        finally:
            self.write_config(config())
            self.call("POST", "/admin/reload")

    def test_registered_but_down_is_no_healthy_upstream(self):
        # an instance the registry lists (no check of its own) on a port
        # nothing listens on: the gateway's health check marks it down
        self.register_nocheck("ghost-1", "notifications", free_port())
        cfg = config([{"prefix": "/api/v1/haunted", "service": "notifications"}])
        self.write_config(cfg)
        self.assertEqual(self.call("POST", "/admin/reload")[0], 200)
        try:
            deadline = time.monotonic() + harness.scaled(10)
            seen = []
            while time.monotonic() < deadline:
                st, body, r = self.call("GET", "/api/v1/haunted")
                seen.append((st, body.get("error", {}).get("code")))
                if seen[-1] == (503, "NO_HEALTHY_UPSTREAM"):
                    break
                time.sleep(0.2)
            self.assertEqual(seen[-1], (503, "NO_HEALTHY_UPSTREAM"), seen)
            self.assertEqual(r.getheader("Retry-After"), "1")
            self.assertNotIn((503, "UPSTREAM_NOT_RUNNING"), seen)
        finally:
            req = urllib.request.Request(self.reg_url + "/v1/agent/service/deregister/ghost-1",
                                         method="PUT")
            urllib.request.urlopen(req, timeout=5).read()
            self.write_config(config())
            self.call("POST", "/admin/reload")

    def test_forwarded_for_only_from_trusted_proxies(self):
        forged = {"X-Forwarded-For": "6.6.6.6", "Forwarded": "for=6.6.6.6"}
        # no trusted proxies (the default): the client's own headers are dropped
        st, body, _ = self.call("GET", "/api/v1/echo/x", forged)
        self.assertEqual(st, 200, body)
        self.assertEqual(body["headers"].get("X-Forwarded-For"), "127.0.0.1")
        self.assertNotIn("Forwarded", body["headers"])
        # the test is now the proxy in front of the gateway
        cfg = config()
        cfg["trustedProxies"] = ["127.0.0.0/8", "::1"]
        self.write_config(cfg)
        self.assertEqual(self.call("POST", "/admin/reload")[0], 200)
        try:
            st, body, _ = self.call("GET", "/api/v1/echo/x", forged)
            self.assertEqual(body["headers"].get("X-Forwarded-For"), "6.6.6.6, 127.0.0.1")
            self.assertEqual(body["headers"].get("Forwarded"), "for=6.6.6.6")
            # the rate limit is per client now: one address's budget (3) is
            # its own, another's is whole
            a, b = ("198.51.100.%d" % (os.getpid() % 200 + i) for i in (1, 2))
            codes = [self.call("GET", "/api/v1/limited/x", {"X-Forwarded-For": a})[0]
                     for _ in range(4)]
            self.assertEqual(codes, [200, 200, 200, 429])
            st, _, r = self.call("GET", "/api/v1/limited/x", {"X-Forwarded-For": b})
            self.assertEqual((st, r.getheader("RateLimit-Remaining")), (200, "2"))
            # a bad list changes nothing
            bad = config()
            bad["trustedProxies"] = ["10.0.0.0/33"]
            self.write_config(bad)
            st, body, _ = self.call("POST", "/admin/reload")
            self.assertEqual((st, body["error"]["code"]), (422, "CONFIG_INVALID"), body)
            self.assertIn("trustedProxies[0]", body["error"]["message"])
            st, body, _ = self.call("GET", "/api/v1/echo/x", forged)
            self.assertEqual(body["headers"].get("X-Forwarded-For"), "6.6.6.6, 127.0.0.1")
        finally:
            self.write_config(config())
            self.call("POST", "/admin/reload")

    def test_health_checks_need_verdicts_in_a_row(self):
        """An instance goes down after healthFails (4) failed checks in a
        row, not after one, and comes back after healthPasses (3) passed
        ones: every view of /admin/upstreams agrees with its counts."""
        port = self.ups["hc"].port

        def set_health(status):
            req = urllib.request.Request("http://127.0.0.1:%d/control/health?status=%d"
                                         % (port, status), method="POST", data=b"")
            urllib.request.urlopen(req, timeout=5).read()

        def until(down):
            seen = []
            deadline = time.monotonic() + harness.scaled(20)
            while time.monotonic() < deadline:
                st, body, _ = self.call("GET", "/admin/upstreams")
                self.assertEqual(st, 200, body)
                d = body["data"]
                inst = {i["id"]: i for i in
                        d["services"].get("hcsvc", {}).get("instances", [])}.get("hc-1")
                chk = d.get("healthChecks", {}).get("hcsvc", {}).get("hc-1")
                if inst and chk:
                    seen.append((inst["healthy"], chk["failsInARow"], chk["passesInARow"],
                                 chk["down"]))
                    if chk["down"] == down and inst["healthy"] != down:
                        return seen
                time.sleep(0.05)
            self.fail("hc-1 never went %s: %s" % ("down" if down else "up", seen[-20:]))

        self.wait_instances("hcsvc", 1)
        set_health(503)
        try:
            seen = until(True)
            # up while fewer than 4 checks in a row had failed, and seen so
            self.assertTrue(all(h for h, f, _, _ in seen if f < 4), seen)
            self.assertTrue(any(h and 1 <= f < 4 for h, f, _, _ in seen), seen)
            self.assertGreaterEqual(seen[-1][1], 4)
        finally:
            set_health(200)
        seen = until(False)
        # down while fewer than 3 checks in a row had passed, and seen so
        self.assertTrue(all(not h for h, _, p, _ in seen if p < 3), seen)
        self.assertTrue(any(not h and 1 <= p < 3 for h, _, p, _ in seen), seen)
        self.assertGreaterEqual(seen[-1][2], 3)

    def test_spooled_upload_route(self):
        # 3 MiB: over the in-memory 1 MiB, under the route's 8 MiB
        body = (b"0123456789abcdef" * 65536) * 3
        st, got, _ = self.call("POST", "/api/v1/upload/x", body=body,
                               headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(st, 200, got)
        self.assertEqual(len(got["body"]), len(body))
        self.assertEqual(got["body"].encode(), body)
        self.assertEqual(got["headers"].get("Content-Length"), str(len(body)))
        # chunked from the client: upstream gets it with a Content-Length
        c = harness.Conn(self.port, timeout=harness.scaled(10))
        try:
            c.send(harness.build_request("POST", "/api/v1/upload/y",
                                         {"Transfer-Encoding": "chunked"})
                   + harness.chunked_body([body[:100000], body[100000:]]))
            r = c.read_response(timeout=harness.scaled(20))
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["headers"].get("Content-Length"), str(len(body)))
            self.assertEqual(r.json()["body"].encode(), body)
        finally:
            c.close()
        # over the route's limit: 413 at once, before any body byte
        c = harness.Conn(self.port, timeout=harness.scaled(10))
        try:
            c.send(harness.build_request("POST", "/api/v1/upload/z",
                                         {"Content-Length": str(9 * 1024 * 1024)}))
            r = c.read_response(timeout=harness.scaled(5))
            self.assertEqual((r.status, r.json()["error"]["code"]), (413, "BODY_TOO_LARGE"))
        finally:
            c.close()
        # a route without the flag keeps the in-memory limit
        st, got, _ = self.call("POST", "/api/v1/echo/x", body=body,
                               headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(st, 413)

    def progress(self, k):
        with urllib.request.urlopen("http://127.0.0.1:%d/progress?k=%s"
                                    % (self.ups["echo"].port, k), timeout=5) as r:
            return json.loads(r.read())

    def test_streamed_upload_route(self):
        mib = 1024 * 1024
        body = hashlib.sha256(b"seed").digest() * (6 * mib // 32)  # 6 MiB
        # The upstream has the first part while the client still holds the
        # rest: the body goes through as it arrives, not after it.
        c = harness.Conn(self.port, timeout=harness.scaled(10))
        try:
            c.send(harness.build_request("POST", "/api/v1/stream/a?k=early",
                                         {"Content-Length": str(len(body)),
                                          "Content-Type": "application/octet-stream"}))
            c.send(body[:2 * mib])
            deadline = time.time() + harness.scaled(10)
            while self.progress("early")["bytes"] < mib and time.time() < deadline:
                time.sleep(0.05)
            self.assertGreaterEqual(self.progress("early")["bytes"], mib,
                                    "the upstream got nothing while the client held 4 MiB back")
            c.send(body[2 * mib:])
            r = c.read_response(timeout=harness.scaled(20))
            self.assertEqual(r.status, 200, r)
            got = r.json()
            self.assertEqual((got["bytes"], got["sha256"]),
                             (len(body), hashlib.sha256(body).hexdigest()))
            self.assertEqual(got["contentLength"], str(len(body)))
            # keep-alive holds after a streamed body read to its end
            c.send(harness.build_request("GET", "/api/v1/echo/after"))
            self.assertEqual(c.read_response(timeout=harness.scaled(10)).status, 200)
        finally:
            c.close()
        # Chunked from the client: chunked upstream, bytes intact.
        c = harness.Conn(self.port, timeout=harness.scaled(10))
        try:
            c.send(harness.build_request("PUT", "/api/v1/stream/b?k=chunked",
                                         {"Transfer-Encoding": "chunked"})
                   + harness.chunked_body([body[:100000], body[100000:3 * mib], body[3 * mib:]]))
            r = c.read_response(timeout=harness.scaled(20))
            self.assertEqual(r.status, 200, r)
            got = r.json()
            self.assertEqual(got["transferEncoding"], "chunked")
            self.assertEqual((got["bytes"], got["sha256"]),
                             (len(body), hashlib.sha256(body).hexdigest()))
        finally:
            c.close()
        # A slow upstream (10 ms per 64 KiB): the client is held back, so the
        # gateway's memory does not take the 24 MiB the client sends.
        big = body * 4
        before = self.gw.rss_bytes()
        c = harness.Conn(self.port, timeout=harness.scaled(60))
        try:
            c.send(harness.build_request("POST", "/api/v1/stream/c?k=slow&delay_ms=10",
                                         {"Content-Length": str(len(big))}))
            c.send(big)
            r = c.read_response(timeout=harness.scaled(60))
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["sha256"], hashlib.sha256(big).hexdigest())
        finally:
            c.close()
        grew = self.gw.rss_bytes() - before
        self.assertLess(grew, 6 * mib, "the gateway's RSS grew %d bytes for a 24 MiB body" % grew)
        # Over the limit by Content-Length: 413 before any byte of the body.
        c = harness.Conn(self.port, timeout=harness.scaled(10))
        try:
            c.send(harness.build_request("POST", "/api/v1/stream/d?k=toobig",
                                         {"Content-Length": str(65 * mib)}))
            r = c.read_response(timeout=harness.scaled(5))
            self.assertEqual((r.status, r.json()["error"]["code"]), (413, "BODY_TOO_LARGE"))
        finally:
            c.close()
        self.assertEqual(self.progress("toobig")["bytes"], 0)
        # Chunked past the limit: cut off with 413; the upstream saw the body
        # break off rather than a whole request.
        c = harness.Conn(self.port, timeout=harness.scaled(30))
        try:
            c.send(harness.build_request("POST", "/api/v1/stream/e?k=cutoff",
                                         {"Transfer-Encoding": "chunked"}))
            chunk = b"x" * mib
            for _ in range(66):
                try:
                    c.send(harness.chunked_body([chunk])[:-5])  # no last chunk
                except OSError:
                    break
            r = c.read_response(timeout=harness.scaled(10))
            self.assertEqual((r.status, r.json()["error"]["code"]), (413, "BODY_TOO_LARGE"))
        finally:
            c.close()
        deadline = time.time() + harness.scaled(10)
        while not self.progress("cutoff")["cut"] and time.time() < deadline:
            time.sleep(0.05)
        self.assertTrue(self.progress("cutoff")["cut"], self.progress("cutoff"))
        self.assertLessEqual(self.progress("cutoff")["bytes"], 64 * mib)

    def test_admin_views(self):
        st, body, _ = self.call("GET", "/admin/upstreams")
        self.assertEqual(st, 200)
        self.assertIn("echo", body["data"]["services"])
        st, body, _ = self.call("GET", "/admin/breakers")
        self.assertTrue(any(b["name"] == "echo" for b in body["data"]))
        st, body, _ = self.call("GET", "/metrics")
        self.assertIn("agora_gateway_upstream_responses_total", body["raw"])
        # the gateway registers itself like any service
        with urllib.request.urlopen(self.reg_url + "/v1/health/service/gateway", timeout=5) as r:
            self.assertEqual(len(json.loads(r.read())), 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
