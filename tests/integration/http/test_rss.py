"""Memory stays flat under steady load: 10,000 sequential requests on one
keep-alive connection, and the server's RSS after the second half has not
grown past a small margin over the first half (after a warm-up)."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

MIB = 1024 * 1024
MARGIN = 2 * MIB
HALF = 5000


def server_env():
    env = {"AGORA_ACCESS_LOG": "false"}
    if harness.SANITIZED:
        # ASan keeps freed memory in a quarantine (256 MiB by default) that
        # would grow RSS without any leak; turn it off so that growth still
        # means memory the server holds on to.
        opts = os.environ.get("ASAN_OPTIONS", "")
        env["ASAN_OPTIONS"] = ":".join(
            x for x in (opts, "quarantine_size_mb=0", "thread_local_quarantine_size_kb=0") if x)
    return env


class Rss(harness.ServerTestCase):
    def run_batch(self, c, start, n, pipeline=1):
        """n GETs /v1/items/<k> in order, `pipeline` at a time, each checked."""
        k = start
        end = start + n
        while k < end:
            m = min(pipeline, end - k)
            c.send(b"".join(b"GET /v1/items/%d HTTP/1.1\r\nHost: x\r\n\r\n" % (k + j)
                            for j in range(m)))
            for j in range(m):
                r = c.read_response()
                if r.status != 200:
                    self.fail("request %d: %r" % (k + j, r))
                want = b'"id":"%d"' % (k + j)
                if want not in r.body:
                    self.fail("request %d got %r" % (k + j, r.body[:200]))
            k += m

    def measure(self, srv, c, pipeline):
        # Warm up: arenas, caches and the metrics series reach steady state.
        self.run_batch(c, 0, 2000, pipeline)
        time.sleep(0.2)
        self.run_batch(c, 2000, HALF, pipeline)
        time.sleep(0.2)
        first = srv.rss_bytes()
        self.run_batch(c, 2000 + HALF, HALF, pipeline)
        time.sleep(0.2)
        second = srv.rss_bytes()
        return first, second

    def test_sequential_requests_do_not_grow_rss(self):
        srv = self.start_server(**server_env())
        c = self.connect(srv, timeout=30)
        first, second = self.measure(srv, c, 1)
        self.assertLessEqual(second - first, MARGIN,
                             "RSS grew by %.2f MiB over %d requests (%.1f → %.1f MiB)"
                             % ((second - first) / MIB, HALF, first / MIB, second / MIB))

    def test_pipelined_requests_do_not_grow_rss(self):
        srv = self.start_server(**server_env())
        c = self.connect(srv, timeout=30)
        first, second = self.measure(srv, c, 16)
        self.assertLessEqual(second - first, MARGIN,
                             "RSS grew by %.2f MiB over %d pipelined requests "
                             "(%.1f → %.1f MiB)"
                             % ((second - first) / MIB, HALF, first / MIB, second / MIB))

    def test_new_connection_per_request_does_not_grow_rss(self):
        srv = self.start_server(**server_env())
        n = 1500 if harness.SANITIZED else 3000

        def batch(start):
            for k in range(start, start + n):
                with harness.Conn(srv.port) as c:
                    r = c.request("GET", "/v1/items/%d" % k, {"Connection": "close"})
                    if r.status != 200:
                        self.fail("request %d: %r" % (k, r))
        batch(0)
        time.sleep(0.3)
        batch(n)
        time.sleep(0.3)
        first = srv.rss_bytes()
        batch(2 * n)
        time.sleep(0.3)
        second = srv.rss_bytes()
        self.assertLessEqual(second - first, MARGIN,
                             "RSS grew by %.2f MiB over %d connections (%.1f → %.1f MiB)"
                             % ((second - first) / MIB, n, first / MIB, second / MIB))


if __name__ == "__main__":
    harness.main()
