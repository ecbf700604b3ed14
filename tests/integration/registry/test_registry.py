"""test_registry.py — agora-registry as a Consul client sees it (real processes).

Starts agora-registry ($AGORA_REGISTRYD) on a free loopback port with its own
SQLite file, and agora-testd ($AGORA_TESTD, built on ag_service) as the
instance being checked or registering itself. Every assertion is on what a
client observes over HTTP: status codes, Consul's JSON shapes, X-Consul-Index
and how long a blocking query takes to answer.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "http"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402
from harness import HOST, scaled  # noqa: E402
from service import free_port  # noqa: E402


def registry_path():
    path = os.environ.get("AGORA_REGISTRYD")
    if not path:
        raise RuntimeError("AGORA_REGISTRYD is not set: run through ctest")
    return path


class Client:
    def __init__(self, port):
        self.port = port

    def call(self, method, path, body=None, timeout=10):
        c = http.client.HTTPConnection(HOST, self.port, timeout=scaled(timeout))
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        c.request(method, path, body=data)
        r = c.getresponse()
        raw = r.read()
        headers = {k.lower(): v for k, v in r.getheaders()}
        c.close()
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = raw
        return r.status, headers, doc

    def register(self, body):
        st, _, doc = self.call("PUT", "/v1/agent/service/register", body)
        assert st == 200, (st, doc)

    def health(self, name, query="passing"):
        st, h, doc = self.call("GET", "/v1/health/service/%s?%s" % (name, query))
        assert st == 200, (st, doc)
        return int(h["x-consul-index"]), doc


def wait_until(fn, timeout, what):
    deadline = time.monotonic() + scaled(timeout)
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


class RegistryTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="agora-registry-test-")
        self.servers = []
        self.reg_port = free_port()
        self.registry = self.start_registry()
        self.c = Client(self.reg_port)

    def tearDown(self):
        errors = []
        for s in reversed(self.servers):
            if s.proc.poll() is None or not s.stopped:
                try:
                    s.stop(timeout=15)
                except AssertionError as e:
                    errors.append(str(e))
        shutil.rmtree(self.dir, ignore_errors=True)
        if errors:
            raise AssertionError("\n".join(errors))

    def start_registry(self):
        s = harness.Server(env={"PORT": self.reg_port, "AGORA_DB": "sqlite:%s/registry.db" % self.dir,
                                "AGORA_ACCESS_LOG": "false"},
                           name="registry", binary=registry_path())
        s.start(timeout=scaled(10))
        self.servers.append(s)
        return s

    def start_testd(self, **env):
        s = harness.Server(env=env, name="testd")
        s.start(timeout=scaled(10))
        self.servers.append(s)
        return s

    # ---- Registration and shapes ------------------------------------------------

    def test_register_deregister_and_shapes(self):
        c = self.c
        c.register({"ID": "web-1", "Name": "web", "Address": "127.0.0.1", "Port": 9001,
                    "Tags": ["blue", "v1"], "Meta": {"version": "1.2.3"},
                    "Check": {"TTL": "30s"}})
        c.register({"ID": "web-2", "Name": "web", "Address": "127.0.0.2", "Port": 9002,
                    "Tags": ["green"]})
        st, _, svc = c.call("GET", "/v1/agent/service/web-1")
        self.assertEqual(st, 200)
        self.assertEqual((svc["ID"], svc["Service"], svc["Address"], svc["Port"]),
                         ("web-1", "web", "127.0.0.1", 9001))
        self.assertEqual(svc["Tags"], ["blue", "v1"])
        self.assertEqual(svc["Meta"], {"version": "1.2.3"})
        st, _, all_ = c.call("GET", "/v1/agent/services")
        self.assertEqual(set(all_), {"web-1", "web-2"})
        self.assertEqual(all_["web-2"]["Service"], "web")

        st, h, cat = c.call("GET", "/v1/catalog/services")
        self.assertEqual(st, 200)
        self.assertGreater(int(h["x-consul-index"]), 0)
        self.assertEqual(sorted(cat["web"]), ["blue", "green", "v1"])
        st, h, inst = c.call("GET", "/v1/catalog/service/web")
        self.assertGreater(int(h["x-consul-index"]), 0)
        by_id = {e["ServiceID"]: e for e in inst}
        self.assertEqual(set(by_id), {"web-1", "web-2"})
        e = by_id["web-2"]
        for k in ("Node", "Address", "ServiceName", "ServiceAddress", "ServicePort",
                  "ServiceTags", "ServiceMeta"):
            self.assertIn(k, e)
        self.assertEqual((e["ServiceName"], e["ServiceAddress"], e["ServicePort"]),
                         ("web", "127.0.0.2", 9002))

        # The TTL check starts critical (Consul's default): only web-2
        # (no checks) passes.
        idx, all_h = c.health("web", "")
        self.assertEqual(len(all_h), 2)
        entry = [x for x in all_h if x["Service"]["ID"] == "web-1"][0]
        self.assertEqual(set(entry), {"Node", "Service", "Checks"})
        for k in ("ID", "Service", "Tags", "Address", "Port", "Meta"):
            self.assertIn(k, entry["Service"])
        chk = entry["Checks"][0]
        self.assertEqual(chk["CheckID"], "service:web-1")
        self.assertEqual(chk["Status"], "critical")
        self.assertEqual((chk["ServiceID"], chk["ServiceName"]), ("web-1", "web"))
        for k in ("Name", "Output", "Node"):
            self.assertIn(k, chk)
        _, passing = c.health("web", "passing")
        self.assertEqual([x["Service"]["ID"] for x in passing], ["web-2"])
        _, passing = c.health("web", "passing=true")
        self.assertEqual([x["Service"]["ID"] for x in passing], ["web-2"])

        # Re-registering the same ID replaces it.
        c.register({"ID": "web-2", "Name": "web", "Address": "127.0.0.3", "Port": 9003})
        _, _, svc = c.call("GET", "/v1/agent/service/web-2")
        self.assertEqual((svc["Address"], svc["Port"], svc["Tags"]), ("127.0.0.3", 9003, []))

        st, _, _ = c.call("PUT", "/v1/agent/service/deregister/web-2")
        self.assertEqual(st, 200)
        st, _, doc = c.call("GET", "/v1/agent/service/web-2")
        self.assertEqual(st, 404)
        self.assertFalse(doc["success"])
        st, _, _ = c.call("PUT", "/v1/agent/service/deregister/web-2")
        self.assertEqual(st, 404)
        _, rest = c.health("web", "")
        self.assertEqual([x["Service"]["ID"] for x in rest], ["web-1"])

    def test_bad_input_is_refused(self):
        c = self.c
        for body, word in ((b"{not json", "JSON"),
                           ({"ID": "x"}, "Name"),
                           ({"Name": "x", "Port": "80"}, "Port"),
                           ({"Name": "x", "Check": {"HTTP": "http://h/", "Interval": "ten"}}, "Interval"),
                           ({"Name": "x", "Check": {"TTL": "5 parsecs"}}, "TTL"),
                           ({"Name": "x", "Check": {"Interval": "1s"}}, "HTTP"),
                           ({"Name": "x", "Tags": "a"}, "Tags")):
            st, _, doc = c.call("PUT", "/v1/agent/service/register", body)
            self.assertEqual(st, 400, body)
            self.assertIn(word, doc["error"]["message"], body)
        st, _, _ = c.call("GET", "/v1/health/service/x?wait=soon&index=1")
        self.assertEqual(st, 400)
        st, _, doc = c.call("GET", "/v1/agent/services")
        self.assertEqual(doc, {})  # nothing was half-registered

    # ---- Blocking queries ---------------------------------------------------------

    def test_blocking_queries(self):
        c = self.c
        c.register({"ID": "a-1", "Name": "alpha", "Port": 1})
        idx1, _ = c.health("alpha", "")
        self.assertGreater(idx1, 0)
        # An old index answers at once.
        t0 = time.monotonic()
        st, h, _ = c.call("GET", "/v1/health/service/alpha?index=%d&wait=5s" % (idx1 - 1))
        self.assertLess(time.monotonic() - t0, scaled(1.0))
        self.assertEqual(int(h["x-consul-index"]), idx1)
        # The current index waits for `wait` (plus at most wait/16) and
        # answers with the same index when nothing changed.
        t0 = time.monotonic()
        st, h, _ = c.call("GET", "/v1/health/service/alpha?index=%d&wait=1s" % idx1)
        took = time.monotonic() - t0
        self.assertEqual(st, 200)
        self.assertGreaterEqual(took, 0.95)
        self.assertLess(took, scaled(1.0 + 1 / 16 + 1.0))
        self.assertEqual(int(h["x-consul-index"]), idx1)
        # A change to another service does not wake it; one to it does.
        result = {}

        def waiter():
            t = time.monotonic()
            result["r"] = c.call("GET", "/v1/health/service/alpha?index=%d&wait=20s" % idx1,
                                 timeout=40)
            result["took"] = time.monotonic() - t

        th = threading.Thread(target=waiter)
        th.start()
        time.sleep(0.5)
        c.register({"ID": "b-1", "Name": "beta", "Port": 2})
        time.sleep(0.5)
        self.assertNotIn("r", result, "a change to beta woke a query on alpha")
        c.register({"ID": "a-2", "Name": "alpha", "Port": 3})
        th.join(scaled(10))
        self.assertIn("r", result)
        st, h, doc = result["r"]
        self.assertGreater(int(h["x-consul-index"]), idx1)
        self.assertEqual(sorted(x["Service"]["ID"] for x in doc), ["a-1", "a-2"])
        self.assertGreater(result["took"], 0.9)
        self.assertLess(result["took"], scaled(5))
        # Catalog queries block too.
        _, h, _ = c.call("GET", "/v1/catalog/services")
        ci = int(h["x-consul-index"])
        t0 = time.monotonic()
        _, h2, _ = c.call("GET", "/v1/catalog/services?index=%d&wait=600ms" % ci)
        self.assertGreaterEqual(time.monotonic() - t0, 0.55)
        self.assertEqual(int(h2["x-consul-index"]), ci)

    def test_blocking_query_does_not_hold_a_thread(self):
        # More waiting queries than the registry has workers (AGORA_WORKERS
        # defaults to 16): ordinary requests still answer at once.
        c = self.c
        c.register({"ID": "g-1", "Name": "gamma", "Port": 1})
        idx, _ = c.health("gamma", "")
        socks = []
        for _ in range(40):
            s = socket.create_connection((HOST, self.reg_port))
            s.sendall(("GET /v1/health/service/gamma?index=%d&wait=30s HTTP/1.1\r\n"
                       "Host: x\r\n\r\n" % idx).encode())
            socks.append(s)

        def waiting():
            _, _, text = c.call("GET", "/metrics")
            text = text.decode() if isinstance(text, bytes) else str(text)
            for line in text.splitlines():
                if line.startswith("agora_registry_blocking_queries "):
                    return float(line.split()[1])
            return None

        wait_until(lambda: waiting() == 40, 5, "40 blocking queries waiting")
        self.addCleanup(lambda: [x.close() for x in socks])
        t0 = time.monotonic()
        st, _, _ = c.call("GET", "/v1/agent/services")
        self.assertEqual(st, 200)
        self.assertLess(time.monotonic() - t0, scaled(1.0))
        # A change answers the rest; after the answer the same connection
        # serves the next request (keep-alive after an async answer).
        c.register({"ID": "g-2", "Name": "gamma", "Port": 2})
        for s in socks:
            s.settimeout(scaled(5))
            data = b""
            while b"\r\n\r\n" not in data:
                data += s.recv(65536)
            self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:100])
        s = socks[-1]
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int([l.split(b":")[1] for l in head.split(b"\r\n")
                      if l.lower().startswith(b"content-length")][0])
        while len(rest) < length:
            rest += s.recv(65536)
        s.sendall(b"GET /v1/agent/service/g-2 HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:100])
        self.assertEqual(waiting(), 0)

    # A blocking query whose client left must not hold its waiter for the
    # whole wait (up to 10 min): the server keeps reading an AG_ROUTE_ASYNC
    # connection, sees the close and runs the abort callback.
    def test_client_gone_is_forgotten(self):
        c = self.c
        c.register({"ID": "z-1", "Name": "zeta", "Port": 1})
        idx, _ = c.health("zeta", "")
        socks = []
        for _ in range(4):
            s = socket.create_connection((HOST, self.reg_port))
            s.sendall(("GET /v1/health/service/zeta?index=%d&wait=60s HTTP/1.1\r\n"
                       "Host: x\r\n\r\n" % idx).encode())
            socks.append(s)

        def waiting():
            _, _, text = c.call("GET", "/metrics")
            for line in text.decode().splitlines():
                if line.startswith("agora_registry_blocking_queries "):
                    return float(line.split()[1])
            return None

        wait_until(lambda: waiting() == 4, 5, "4 blocking queries waiting")
        for s in socks:
            s.close()
        # The abort callback forgets them.
        wait_until(lambda: waiting() == 0, 3, "the closed ones to be forgotten")

    def test_stop_answers_waiting_queries(self):
        c = self.c
        c.register({"ID": "d-1", "Name": "delta", "Port": 1})
        idx, _ = c.health("delta", "")
        result = {}

        def waiter():
            result["r"] = c.call("GET", "/v1/health/service/delta?index=%d&wait=5m" % idx, timeout=60)

        th = threading.Thread(target=waiter)
        th.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        self.registry.stop(timeout=10)
        self.assertLess(time.monotonic() - t0, scaled(5))
        th.join(scaled(5))
        self.assertEqual(result["r"][0], 200)

    # ---- Checks -----------------------------------------------------------------------

    def status_of(self, sid, name):
        _, doc = self.c.health(name, "")
        for e in doc:
            if e["Service"]["ID"] == sid:
                return e["Checks"][0]["Status"]
        return "absent"

    def test_http_check_critical_and_back(self):
        t = self.start_testd()
        self.c.register({"ID": "t-1", "Name": "tee", "Address": HOST, "Port": t.port,
                         "Check": {"HTTP": "http://%s:%d/health" % (HOST, t.port),
                                   "Interval": "200ms", "Timeout": "300ms"}})
        wait_until(lambda: self.status_of("t-1", "tee") == "passing", 5, "passing")
        _, passing = self.c.health("tee")
        self.assertEqual(len(passing), 1)
        self.assertIn("200", passing[0]["Checks"][0]["Output"])
        # The instance stops answering (frozen): its check times out.
        os.kill(t.proc.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: self.status_of("t-1", "tee") == "critical", 5, "critical")
            _, passing = self.c.health("tee")
            self.assertEqual(passing, [])
        finally:
            os.kill(t.proc.pid, signal.SIGCONT)
        wait_until(lambda: self.status_of("t-1", "tee") == "passing", 5, "passing again")
        # Gone entirely: connection refused is critical too.
        t.stop()
        wait_until(lambda: self.status_of("t-1", "tee") == "critical", 5, "critical after exit")

    def test_ttl_check(self):
        c = self.c
        c.register({"ID": "w-1", "Name": "worker", "Port": 1, "Check": {"TTL": "1s"}})
        self.assertEqual(self.status_of("w-1", "worker"), "critical")
        st, _, _ = c.call("PUT", "/v1/agent/check/pass/service:w-1?note=alive")
        self.assertEqual(st, 200)
        self.assertEqual(self.status_of("w-1", "worker"), "passing")
        _, doc = c.health("worker")
        self.assertEqual(doc[0]["Checks"][0]["Output"], "alive")
        st, _, _ = c.call("PUT", "/v1/agent/check/warn/service:w-1")
        self.assertEqual(self.status_of("w-1", "worker"), "warning")
        _, doc = c.health("worker")
        self.assertEqual(doc, [])  # warning is not passing
        c.call("PUT", "/v1/agent/check/pass/service:w-1")
        wait_until(lambda: self.status_of("w-1", "worker") == "critical", 4, "TTL expiry")
        _, doc = c.health("worker", "")
        self.assertEqual(doc[0]["Checks"][0]["Output"], "TTL expired")
        st, _, _ = c.call("PUT", "/v1/agent/check/pass/no-such-check")
        self.assertEqual(st, 404)

    def test_deregister_after_critical(self):
        c = self.c
        c.register({"ID": "e-1", "Name": "eph", "Port": 1,
                    "Checks": [{"TTL": "300ms", "DeregisterCriticalServiceAfter": "1s"}]})
        c.register({"ID": "e-2", "Name": "eph", "Port": 2, "Check": {"TTL": "300ms"}})
        t0 = time.monotonic()
        wait_until(lambda: self.status_of("e-1", "eph") == "absent", 6, "e-1 removed")
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        st, _, _ = c.call("GET", "/v1/agent/service/e-1")
        self.assertEqual(st, 404)
        # Without DeregisterCriticalServiceAfter it stays, critical.
        self.assertEqual(self.status_of("e-2", "eph"), "critical")

    # ---- Persistence --------------------------------------------------------------------

    def test_state_survives_restart(self):
        c = self.c
        c.register({"ID": "p-1", "Name": "pers", "Port": 7, "Tags": ["x"], "Meta": {"version": "9"},
                    "Check": {"TTL": "60s"}})
        c.call("PUT", "/v1/agent/check/pass/service:p-1?note=fine")
        idx, _ = c.health("pers", "")
        _, h, _ = c.call("GET", "/v1/catalog/services")
        gidx = int(h["x-consul-index"])
        self.registry.stop(timeout=10)
        self.registry = self.start_registry()
        st, _, svc = c.call("GET", "/v1/agent/service/p-1")
        self.assertEqual(st, 200)
        self.assertEqual((svc["Port"], svc["Tags"], svc["Meta"]), (7, ["x"], {"version": "9"}))
        idx2, doc = c.health("pers")
        self.assertEqual(len(doc), 1)  # still passing: the status was kept
        self.assertEqual(doc[0]["Checks"][0]["Output"], "fine")
        self.assertGreaterEqual(idx2, idx)
        _, h, _ = c.call("GET", "/v1/catalog/services")
        self.assertGreater(int(h["x-consul-index"]), gidx)  # never goes back

    # ---- A real service ---------------------------------------------------------------

    def test_service_registers_itself(self):
        url = "http://%s:%d" % (HOST, self.reg_port)
        t = self.start_testd(AGORA_REGISTRY=url, AGORA_REGISTRY_RESYNC="300ms",
                             AGORA_VERSION="1.4.0")
        sid = "testd-%s-%d" % (HOST, t.port)

        def passing():
            _, doc = self.c.health("testd")
            return doc
        doc = wait_until(passing, 8, "testd passing in the registry")
        self.assertEqual(doc[0]["Service"]["ID"], sid)
        self.assertEqual(doc[0]["Service"]["Port"], t.port)
        self.assertEqual(doc[0]["Service"]["Meta"]["version"], "1.4.0")
        self.assertIn("/health", doc[0]["Checks"][0]["Output"] + "/health")
        # SIGTERM: it deregisters before it drains, so it is gone by the
        # time it has exited.
        t.stop(timeout=10)
        st, _, _ = self.c.call("GET", "/v1/agent/service/%s" % sid)
        self.assertEqual(st, 404)
        # It re-registers with a registry that lost its store.
        t2 = self.start_testd(AGORA_REGISTRY=url, AGORA_REGISTRY_RESYNC="300ms")
        sid2 = "testd-%s-%d" % (HOST, t2.port)
        wait_until(lambda: self.c.call("GET", "/v1/agent/service/%s" % sid2)[0] == 200, 5,
                   "second testd registered")
        self.registry.stop(timeout=10)
        for f in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, f))
        time.sleep(0.5)  # the instance notices the registry is away
        self.registry = self.start_registry()
        wait_until(lambda: self.c.call("GET", "/v1/agent/service/%s" % sid2)[0] == 200, 8,
                   "testd registered again after the registry lost its store")
        wait_until(passing, 8, "testd passing again")


if __name__ == "__main__":
    unittest.main(verbosity=2)
