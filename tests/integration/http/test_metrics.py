"""/metrics passes promtool and counts what was served; /health and /ready
answer."""

import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


class Metrics(harness.SharedServerTestCase):
    def scrape(self):
        with harness.Conn(self.srv.port) as c:
            r = c.request("GET", "/metrics", {"Connection": "close"})
        self.assertEqual(r.status, 200, r)
        return r

    def requests_total(self, metrics, route, method, status):
        vals = harness.metric_values(metrics, "agora_http_requests_total",
                                     route=route, method=method, status=status)
        return sum(vals)

    def test_promtool_accepts_metrics(self):
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool is missing: scripts/install-deps installs it "
                                       "(Debian package prometheus)")
        c = self.connect(self.srv)
        c.get("/hello")
        c.get("/v1/items/1")
        c.get("/nope")
        c.request("DELETE", "/v1/items/1")
        r = self.scrape()
        p = subprocess.run([promtool, "check", "metrics"], input=r.body, capture_output=True,
                           timeout=30)
        self.assertEqual(p.returncode, 0, "promtool check metrics failed:\n%s%s\n--- metrics:\n%s"
                         % (p.stdout.decode(), p.stderr.decode(), r.body.decode()[:5000]))

    def test_content_type(self):
        r = self.scrape()
        ctype = r.header("Content-Type", "")
        self.assertTrue(ctype.startswith("text/plain"), ctype)
        self.assertIn("version=0.0.4", ctype)

    def test_requests_counted_by_route_method_status(self):
        c = self.connect(self.srv)
        self.assertEqual(c.get("/hello").status, 200)
        self.assertEqual(c.get("/v1/items/42").status, 200)
        self.assertEqual(c.request("PUT", "/v1/items/42").status, 200)
        self.assertEqual(c.request("POST", "/v1/validate", {"Content-Type": "application/json"},
                                   b"{}").status, 422)
        m = harness.parse_metrics(self.scrape().body.decode())
        self.assertGreaterEqual(self.requests_total(m, "/hello", "GET", "200"), 1, self.dump(m))
        self.assertGreaterEqual(self.requests_total(m, "/v1/items/:id", "GET", "200"), 1,
                                self.dump(m))
        self.assertGreaterEqual(self.requests_total(m, "/v1/items/:id", "PUT", "200"), 1,
                                self.dump(m))
        self.assertGreaterEqual(self.requests_total(m, "/v1/validate", "POST", "422"), 1,
                                self.dump(m))

    def test_counter_counts_exactly(self):
        c = self.connect(self.srv)
        target = "/v1/items/:id"
        base = self.requests_total(harness.parse_metrics(self.scrape().body.decode()),
                                   target, "GET", "200")
        for i in range(7):
            self.assertEqual(c.get("/v1/items/%d" % i).status, 200)
        # The count may be updated just after the response is written.
        deadline = time.monotonic() + harness.scaled(2)
        while True:
            now = self.requests_total(harness.parse_metrics(self.scrape().body.decode()),
                                      target, "GET", "200")
            if now >= base + 7 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(now - base, 7)

    def test_latency_histogram(self):
        c = self.connect(self.srv)
        for _ in range(3):
            self.assertEqual(c.get("/v1/slow?ms=20").status, 200)
        text = self.scrape().body.decode()
        self.assertIn("# TYPE agora_http_request_duration_seconds histogram", text)
        m = harness.parse_metrics(text)
        buckets = [(dict(ls), v) for (n, ls), v in m.items()
                   if n == "agora_http_request_duration_seconds_bucket"
                   and dict(ls).get("route") == "/v1/slow"]
        self.assertTrue(buckets, "no latency buckets for /v1/slow:\n" + self.dump(m))
        inf = [v for ls, v in buckets if ls.get("le") == "+Inf"]
        self.assertTrue(inf and sum(inf) >= 3, buckets)
        counts = harness.metric_values(m, "agora_http_request_duration_seconds_count",
                                       route="/v1/slow")
        sums = harness.metric_values(m, "agora_http_request_duration_seconds_sum",
                                     route="/v1/slow")
        self.assertEqual(sum(counts), sum(inf))
        # Three sleeps of 20 ms each.
        self.assertGreaterEqual(sum(sums), 0.06)
        self.assertLess(sum(sums), harness.scaled(5))
        # Buckets below 20 ms hold none of them.
        small = [v for ls, v in buckets if ls.get("le") not in ("+Inf",)
                 and float(ls["le"]) < 0.02]
        self.assertTrue(all(v == 0 for v in small), buckets)

    def test_process_and_connection_gauges(self):
        m = harness.parse_metrics(self.scrape().body.decode())
        rss = harness.metric_values(m, "process_resident_memory_bytes")
        self.assertTrue(rss, "no process_resident_memory_bytes")
        self.assertGreater(rss[0], 1024 * 1024)
        self.assertLess(abs(rss[0] - self.srv.rss_bytes()), 64 * 1024 * 1024)
        held = [self.connect(self.srv) for _ in range(3)]
        for h in held:
            self.assertEqual(h.get("/hello").status, 200)
        m = harness.parse_metrics(self.scrape().body.decode())
        conns = harness.metric_values(m, "agora_http_open_connections")
        self.assertTrue(conns, "no agora_http_open_connections")
        self.assertGreaterEqual(sum(conns), 4, "3 held + the scrape")

    def test_health(self):
        c = self.connect(self.srv)
        r = c.get("/health")
        self.assertEqual(r.status, 200, r)
        self.assertRequestId(r)
        r = c.request("HEAD", "/health")
        self.assertEqual(r.status, 200, r)

    def test_ready(self):
        c = self.connect(self.srv)
        r = c.get("/ready")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("Content-Type", "").startswith("application/json"), r)
        body = r.json()
        self.assertIsInstance(body, dict)
        if "success" in body:
            self.assertIs(body["success"], True, body)

    def dump(self, m):
        return "\n".join("%s%s %s" % (n, dict(ls), v) for (n, ls), v in sorted(
            m.items(), key=lambda x: x[0][0]) if n.startswith("agora_http_requests_total"))


if __name__ == "__main__":
    harness.main()
