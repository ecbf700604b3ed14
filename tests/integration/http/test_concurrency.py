"""Concurrent clients get correct answers; a full worker pool (the
bulkhead) answers 503 with Retry-After at once instead of queueing."""

import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

THREADS = 32
PER_THREAD = 100


class Concurrency(harness.ServerTestCase):
    def test_many_clients_mixed_routes(self):
        # The queue is made large so that this test is about correctness under
        # concurrency; the bulkhead has its own test below.
        srv = self.start_server(AGORA_WORKERS="4", AGORA_QUEUE="256")
        errors = []
        done = [0] * THREADS

        def client(t):
            try:
                with harness.Conn(srv.port, timeout=30) as c:
                    for i in range(PER_THREAD):
                        kind = (t + i) % 3
                        if kind == 0:
                            r = c.get("/hello")
                            ok = r.status == 200 and r.body == b"hello\n"
                        elif kind == 1:
                            r = c.get("/v1/items/t%d-%d?q=%d" % (t, i, i * t))
                            ok = (r.status == 200 and r.json() ==
                                  {"success": True,
                                   "data": {"id": "t%d-%d" % (t, i), "q": str(i * t)}})
                        else:
                            obj = {"t": t, "i": i, "s": "z" * (i * 7)}
                            r = c.request("POST", "/v1/echo",
                                          {"Content-Type": "application/json"},
                                          json.dumps(obj))
                            ok = r.status == 200 and r.json() == {"success": True,
                                                                  "data": obj}
                        if not ok:
                            errors.append("thread %d request %d: %r %r"
                                          % (t, i, r, r.body[:200]))
                            return
                        done[t] += 1
            except Exception as e:  # noqa: BLE001 — reported below
                errors.append("thread %d: %r" % (t, e))

        threads = [threading.Thread(target=client, args=(t,)) for t in range(THREADS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=harness.scaled(120))
        self.assertFalse(any(t.is_alive() for t in threads), "client threads hung")
        self.assertEqual(errors, [])
        self.assertEqual(sum(done), THREADS * PER_THREAD)
        # A rough sanity bound only; this is not a benchmark.
        self.assertLess(time.monotonic() - t0, harness.scaled(60))

    def test_many_short_connections_in_parallel(self):
        srv = self.start_server(AGORA_WORKERS="4", AGORA_QUEUE="256")
        errors = []

        def client(t):
            for i in range(30):
                try:
                    with harness.Conn(srv.port, timeout=30) as c:
                        r = c.request("GET", "/v1/items/%d-%d" % (t, i), {"Connection": "close"})
                        if r.status != 200 or b'"%d-%d"' % (t, i) not in r.body:
                            errors.append("thread %d: %r" % (t, r))
                            return
                except Exception as e:  # noqa: BLE001
                    errors.append("thread %d: %r" % (t, e))
                    return

        threads = [threading.Thread(target=client, args=(t,)) for t in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=harness.scaled(60))
        self.assertFalse(any(t.is_alive() for t in threads), "client threads hung")
        self.assertEqual(errors, [])

    def test_full_pool_answers_503(self):
        workers, queue, clients, ms = 2, 2, 12, 1000
        srv = self.start_server(AGORA_WORKERS=str(workers), AGORA_QUEUE=str(queue))
        results = [None] * clients
        start = threading.Barrier(clients)

        def client(k):
            try:
                with harness.Conn(srv.port, timeout=30) as c:
                    start.wait()
                    t0 = time.monotonic()
                    r = c.get("/v1/slow?ms=%d" % ms)
                    results[k] = (r, time.monotonic() - t0)
            except Exception as e:  # noqa: BLE001
                results[k] = (e, None)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=harness.scaled(15))
        total = time.monotonic() - t0
        self.assertFalse(any(t.is_alive() for t in threads),
                         "requests hung with the pool full")
        ok, busy = [], []
        for k, (r, dt) in enumerate(results):
            self.assertIsInstance(r, harness.Response, "client %d: %r" % (k, r))
            if r.status == 200:
                self.assertEqual(self.assertOk(r), {"sleptMs": ms})
                ok.append(dt)
            else:
                self.assertEnvelopeError(r, 503)
                self.assertIsNotNone(r.header("Retry-After"), "503 without Retry-After: %r" % r)
                busy.append(dt)
        # Two run and two wait; the rest are turned away.
        self.assertGreaterEqual(len(ok), workers, "only %d served" % len(ok))
        self.assertLessEqual(len(ok), workers + queue,
                             "%d slow requests served with %d workers and a queue of %d: "
                             "the pool queued past its bound" % (len(ok), workers, queue))
        self.assertEqual(len(ok) + len(busy), clients)
        # The refusals come at once, not after waiting for a worker.
        self.assertLess(max(busy), harness.scaled(0.5),
                        "a 503 took %.2f s" % max(busy))
        # Two rounds of the workers at most.
        self.assertLess(total, harness.scaled(2 * ms / 1000 + 2),
                        "the flood took %.2f s" % total)
        # The server recovers.
        c = self.connect(srv)
        self.assertEqual(self.assertOk(c.get("/v1/slow?ms=1")), {"sleptMs": 1})

    def test_inline_routes_answer_while_pool_is_full(self):
        """Inline routes run on the loop: a pool full of slow handlers does not
        delay them."""
        srv = self.start_server(AGORA_WORKERS="2", AGORA_QUEUE="2")
        slow = []
        for k in range(4):
            c = self.connect(srv)
            c.send(harness.build_request("GET", "/v1/slow?ms=1500"))
            slow.append(c)
        time.sleep(0.2)
        c = self.connect(srv)
        worst = 0.0
        for i in range(20):
            t0 = time.monotonic()
            r = c.get("/hello")
            worst = max(worst, time.monotonic() - t0)
            self.assertEqual(r.status, 200, r)
        self.assertLess(worst, harness.scaled(0.3), "/hello took %.2f s with the pool full"
                        % worst)
        for s in slow:
            try:
                r = s.read_response()
                self.assertIn(r.status, (200, 503), r)
            except (socket.timeout, harness.ConnectionClosed) as e:
                self.fail("slow request not answered: %r" % e)


if __name__ == "__main__":
    harness.main()
