"""Distributed tracing end to end (issue 14): one checkout through
agora-gateway is one trace in agora-traces, from the client's traceparent
to the last consumer, on SQLite + NATS or PostgreSQL + RabbitMQ
(AGORA_TEST_STACK_STORE / AGORA_TEST_STACK_BUS).

Covered:
  - the gateway continues the client's traceparent and answers with a
    traceresponse in the same trace;
  - the trace holds server spans of the gateway, orders, inventory and
    payments, the saga's step spans, orders' client spans (whose children
    are the peers' server spans), store transactions, the order.confirmed
    producer span and agora-notifications' consumer span under it; every
    parent is in the trace; server spans carry OpenTelemetry's HTTP
    attributes (route template as the name);
  - a log line written inside a request carries its traceId and spanId;
  - tracestate reaches the peers unchanged (agora-notifications records
    it in no visible place, so it is checked on inventory's server span
    being in the trace with the same trace id while the client sent one);
  - a client that sent an unsampled traceparent gets no trace recorded, and
    its trace id is still passed on;
  - the metrics that explain a slow checkout move: saga steps and their
    durations, outbound calls per peer, store transactions, relay lag,
    exported spans;
  - with agora-traces stopped, checkouts still succeed and the spans that
    could not be exported are counted as dropped, never waited for;
  - the same checkout exported to a real OTLP receiver (tests/otlp: the
    OpenTelemetry project's own generated OTLP decoder) decodes without
    error into one trace with the same services and parent links.
"""

import os
import secrets
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "http"))
import harness  # noqa: E402
import otlp  # noqa: E402
import stack as st  # noqa: E402

KINDS = {"server", "client", "producer", "consumer", "internal"}


def traceparent(sampled=True):
    return "00-%s-%s-%s" % (secrets.token_hex(16), secrets.token_hex(8), "01" if sampled else "00")


class Tracing(unittest.TestCase):
    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        if not st.binary("traces"):  # a failure, not a skip: CMake built it
            raise AssertionError("AGORA_TRACESD is not set")
        cls.s = st.Stack("tracing", services=["traces"] + st.SHOP, env={
            "AGORA_SAGA_BACKOFF": "50ms",
            "AGORA_LOG": "info",
        }).start()
        cls.admin = cls.s.login(st.ADMIN_EMAIL, st.ADMIN_PASSWORD)
        cls.alice = cls.s.register("alice")

    @classmethod
    def tearDownClass(cls):
        st.stop_or_raise(cls.s)

    # -- helpers ------------------------------------------------------------------------------

    def trace(self, tid, want, timeout=30):
        """The trace `tid` from agora-traces through the gateway, once `want`
        (a function of the trace) holds; the last one seen otherwise."""
        deadline = time.monotonic() + harness.scaled(timeout)
        last = None
        while time.monotonic() < deadline:
            r = self.s.call("GET", "/api/v1/traces/" + tid, self.admin["token"])
            if r.status == 200:
                last = r.json()["data"]
                if want(last):
                    return last
            elif r.status != 404:
                raise AssertionError("trace query: %r" % r)
            time.sleep(0.2)
        return last

    def metrics(self, name):
        r = self.s.call("GET", "/metrics", port=self.s.ports[name])
        self.assertEqual(r.status, 200)
        return harness.parse_metrics(r.body.decode())

    def checkout(self, headers=None):
        pid = self.s.product(self.admin, 1250, 5)
        body = {"shippingAddress": st.address(), "paymentMethod": st.card("4242424242424242"),
                "items": [{"productId": pid, "quantity": 1}]}
        h = {"Idempotency-Key": secrets.token_hex(8), "Prefer": "wait=20"}
        h.update(headers or {})
        r = self.s.call("POST", "/api/v1/orders", self.alice["token"], body, h)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["data"]["status"], "CONFIRMED", r)
        return r

    # -- cases --------------------------------------------------------------------------------

    def test_one_checkout_is_one_trace(self):
        tp = traceparent()
        tid, client_span = tp[3:35], tp[36:52]
        r = self.checkout({"traceparent": tp, "tracestate": "agoratest=t61rcWkgMzE"})
        tr = r.header("traceresponse")
        self.assertIsNotNone(tr, r)
        self.assertEqual(tr[3:35], tid)  # the same trace, the gateway's span
        self.assertEqual(tr[-2:], "01")

        need = {"agora-gateway", "agora-orders", "agora-inventory", "agora-payments",
                "agora-notifications"}

        def complete(t):
            names = {(x["service"], x["name"]) for x in t["spans"]}
            return need <= set(t["services"]) and \
                ("agora-notifications", "order.confirmed process") in names
        t = self.trace(tid, complete)
        self.assertIsNotNone(t, "no trace %s in agora-traces" % tid)
        self.assertTrue(complete(t), sorted({(x["service"], x["name"]) for x in t["spans"]}))
        spans = t["spans"]
        by_id = {x["spanId"]: x for x in spans}
        for x in spans:
            self.assertIn(x["kind"], KINDS, x)
            self.assertLessEqual(int(x["startTimeUnixNano"]), int(x["endTimeUnixNano"]), x)

        def one(service, kind, name):
            got = [x for x in spans if x["service"] == service and x["kind"] == kind
                   and x["name"] == name]
            self.assertTrue(got, "no %s %s span %r among %r" % (
                service, kind, name, sorted((x["service"], x["kind"], x["name"]) for x in spans)))
            return got[0]

        def parent(x):
            self.assertIn(x["parentSpanId"], by_id, "the parent of %r is not in the trace" % x)
            return by_id[x["parentSpanId"]]

        # Every span's parent is in the trace, except the gateway's: its
        # parent is the client's span.
        gw = [x for x in spans if x["service"] == "agora-gateway" and x["kind"] == "server"]
        self.assertEqual(len(gw), 1, gw)
        self.assertEqual(gw[0]["parentSpanId"], client_span)
        self.assertEqual(gw[0]["spanId"], tr[36:52])
        for x in spans:
            if x is not gw[0]:
                parent(x)

        # orders' server span: the route template, HTTP attributes, under the gateway.
        srv = one("agora-orders", "server", "POST /v1/orders")
        self.assertEqual(parent(srv)["spanId"], gw[0]["spanId"])
        self.assertEqual(srv["attributes"].get("http.route"), "/v1/orders")
        self.assertEqual(srv["attributes"].get("http.request.method"), "POST")
        self.assertEqual(str(srv["attributes"].get("http.response.status_code")), "201")

        # The saga's steps are spans of the request's trace; each peer's
        # server span is a child of an orders client span inside a step.
        for step in ("reserve", "charge", "confirm"):
            one("agora-orders", "internal", "saga checkout.%s" % step)
        for peer in ("inventory", "payments"):
            peer_srv = [x for x in spans if x["service"] == "agora-" + peer
                        and x["kind"] == "server"]
            self.assertTrue(peer_srv, peer)
            for x in peer_srv:
                c = parent(x)
                self.assertEqual((c["service"], c["kind"]), ("agora-orders", "client"), c)
                self.assertEqual(c["attributes"].get("peer.service"), peer)
                step = parent(c)
                self.assertTrue(step["name"].startswith("saga checkout."), step)

        # Store transactions are spans (orders' own, at least).
        tx = [x for x in spans if x["service"] == "agora-orders"
              and x["attributes"].get("db.system.name")]
        self.assertTrue(tx, "no store transaction span")

        # The event: orders' producer span, notifications' consumer span under it.
        cons = one("agora-notifications", "consumer", "order.confirmed process")
        prod = parent(cons)
        self.assertEqual((prod["service"], prod["kind"], prod["name"]),
                         ("agora-orders", "producer", "order.confirmed publish"))
        self.assertEqual(cons["attributes"].get("messaging.destination.name"), "order.confirmed")

        # A log line inside orders' request carries the request's ids.
        recs = [x for x in self.s.servers["orders"].log_records()
                if x.get("msg") == "request" and x.get("traceId") == tid]
        self.assertTrue(recs, "no access log line of orders with traceId %s" % tid)
        self.assertEqual(recs[0].get("spanId"), srv["spanId"])

    def test_unsampled_request_is_passed_on_not_recorded(self):
        tp = traceparent(sampled=False)
        tid = tp[3:35]
        r = self.checkout({"traceparent": tp})
        tr = r.header("traceresponse")
        self.assertEqual((tr[3:35], tr[-2:]), (tid, "00"))
        # A sampled checkout after it: once it is in the store, the first
        # would have been too.
        tp2 = traceparent()
        self.checkout({"traceparent": tp2})
        self.assertIsNotNone(self.trace(tp2[3:35], lambda t: "agora-orders" in t["services"]))
        r = self.s.call("GET", "/api/v1/traces/" + tid, self.admin["token"])
        self.assertEqual(r.status, 404, r)

    def test_metrics_explain_a_checkout(self):
        self.checkout()

        def moved():
            m = self.metrics("orders")
            return all(sum(harness.metric_values(m, n, **labels)) > 0 for n, labels in [
                ("agora_saga_steps_total", {"saga": "checkout", "step": "reserve",
                                            "outcome": "ok"}),
                ("agora_saga_steps_total", {"saga": "checkout", "step": "charge",
                                            "outcome": "ok"}),
                ("agora_saga_step_duration_seconds_count", {"step": "confirm"}),
                ("agora_peer_call_duration_seconds_count", {"peer": "inventory",
                                                            "outcome": "ok"}),
                ("agora_peer_call_duration_seconds_count", {"peer": "payments",
                                                            "outcome": "ok"}),
                ("agora_store_tx_duration_seconds_count", {"outcome": "committed"}),
                ("agora_bus_relay_lag_seconds_count", {}),
                ("agora_trace_spans_exported_total", {}),
            ])
        st.wait_until(moved, "orders' metrics to show the checkout", timeout=harness.scaled(20))

    def test_collector_down_costs_no_request(self):
        def dropped():
            m = self.metrics("orders")
            return sum(harness.metric_values(m, "agora_trace_spans_dropped_total",
                                             reason="export_failed"))
        before = dropped()
        self.s.servers["traces"].stop(timeout=10)
        try:
            t0 = time.monotonic()
            for _ in range(3):
                self.checkout()
            took = time.monotonic() - t0
            st.wait_until(lambda: dropped() > before, "orders to count spans it could not export",
                          timeout=harness.scaled(20))
            # Not a timing assertion: a sign in the output if export ever blocks.
            print("three checkouts with the collector down: %.2f s" % took)
        finally:
            self.s.restart("traces", routed=False)
        st.wait_until(lambda: self.s.call("GET", "/api/v1/traces?limit=1",
                                          self.admin["token"]).status == 200,
                      "agora-traces to answer again", timeout=harness.scaled(30))


class RealReceiver(unittest.TestCase):
    """The shop exporting straight to tests/otlp's receiver."""

    @classmethod
    def setUpClass(cls):
        cls.rx = otlp.Receiver().start()
        try:
            cls.s = st.Stack("tracing-otlp", services=st.SHOP, env={
                "AGORA_SAGA_BACKOFF": "50ms",
                "OTEL_EXPORTER_OTLP_ENDPOINT": cls.rx.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "100",
            }).start()
        except Exception:
            cls.rx.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        problems = cls.s.stop()
        cls.rx.stop()
        if problems:
            raise AssertionError("\n".join(problems))

    def test_checkout_trace_decodes_in_a_real_receiver(self):
        admin = self.s.login(st.ADMIN_EMAIL, st.ADMIN_PASSWORD)
        alice = self.s.register("alice")
        pid = self.s.product(admin, 990, 3)
        tp = traceparent()
        tid, client_span = tp[3:35], tp[36:52]
        body = {"shippingAddress": st.address(), "paymentMethod": st.card("4242424242424242"),
                "items": [{"productId": pid, "quantity": 1}]}
        r = self.s.call("POST", "/api/v1/orders", alice["token"], body,
                        {"Idempotency-Key": secrets.token_hex(8), "Prefer": "wait=20",
                         "traceparent": tp})
        self.assertEqual(r.status, 201, r)
        need = {"agora-gateway", "agora-orders", "agora-inventory", "agora-payments",
                "agora-notifications"}

        def complete(spans):
            mine = [x for x in spans if x["traceId"] == tid]
            return need <= {x["service"] for x in mine} and any(
                x["name"] == "order.confirmed process" and x["service"] == "agora-notifications"
                for x in mine)
        spans = [x for x in self.rx.wait_spans(complete, timeout=harness.scaled(30),
                                               what="the checkout's spans")
                 if x["traceId"] == tid]
        self.assertEqual(self.rx.errors(), [])
        ids = {x["spanId"] for x in spans}
        for x in spans:
            if x["service"] == "agora-gateway" and x["parentSpanId"] == client_span:
                continue
            self.assertIn(x["parentSpanId"], ids, "parent of %r not in the trace" % x)
        roots = [x for x in spans if x["parentSpanId"] not in ids]
        self.assertEqual([(x["service"], x["parentSpanId"]) for x in roots],
                         [("agora-gateway", client_span)])


if __name__ == "__main__":
    unittest.main(verbosity=2)
