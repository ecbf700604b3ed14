"""agora-traces end to end: OTLP/HTTP JSON exports posted straight to the
service (as an exporter does: no token), queries through agora-gateway with
a real agora-users' tokens (stack.py; the store and bus of the run only
matter to agora-users: the trace store keeps everything in memory).

  - spans of one trace posted in several requests, by two services, in
    scrambled order, come back as one trace: parent links, spans ordered
    by start, offsets, durations, kinds, statuses, services; the root is
    the earliest span until the parentless one arrives
  - every AnyValue and both spellings of 64-bit integers; unknown fields
    ignored; events and links; a repeated span kept once
  - summaries, filters (service, name, error, minDurationMs), sorts
    (recent, slowest) and pages; the services list
  - partialSuccess: invalid spans rejected and counted while the valid
    ones of the same request are kept
  - 400 (malformed JSON, a malformed request), 415 (protobuf, compressed),
    413 (over AGORA_TRACES_MAX_BODY, before the body is read), 422 (bad
    query values, bad ids), 404; 401 and 403 for queries without an admin's
    token, at the gateway and at the service itself
  - the bounds: AGORA_TRACES_MAX_SPANS and AGORA_TRACES_MAX_BYTES evict
    whole traces, least recently written first
  - spans of one trace posted from many threads at once are all kept
  - the store does not trace itself, even when told to export to itself
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "http"))
import stack as st  # noqa: E402
import harness  # noqa: E402

API = "/api/v1/traces"


def trace_id():
    return uuid.uuid4().hex


def span_id():
    return uuid.uuid4().hex[:16]


def span(tid, sid, name, start_ns, end_ns, parent=None, kind=1, status=None, attrs=None,
         **extra):
    sp = {"traceId": tid, "spanId": sid, "name": name, "kind": kind,
          "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(end_ns)}
    if parent is not None:
        sp["parentSpanId"] = parent
    if status is not None:
        sp["status"] = status
    if attrs is not None:
        sp["attributes"] = attrs
    sp.update(extra)
    return sp


def export(*resources):
    """{"resourceSpans": ...} from (service, [span, ...]) pairs."""
    return {"resourceSpans": [
        {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": svc}}]},
         "scopeSpans": [{"scope": {"name": "agora"}, "spans": spans}]}
        for svc, spans in resources]}


def ms(n):
    return n * 1000000


class Base(unittest.TestCase):
    maxDiff = 6000

    def post(self, body, port=None, headers=None):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        return self.s.call("POST", "/v1/traces", body=body if isinstance(body, (str, bytes))
                           else json.dumps(body), headers=h,
                           port=port or self.s.ports["traces"])

    def post_ok(self, body, port=None):
        r = self.post(body, port)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"partialSuccess": {}}, r)
        return r

    def metrics(self, port):
        r = self.s.call("GET", "/metrics", port=port)
        self.assertEqual(r.status, 200, r)
        return harness.parse_metrics(r.body.decode())

    def metric(self, port, name):
        vals = harness.metric_values(self.metrics(port), name)
        self.assertEqual(len(vals), 1, "%s: %r" % (name, vals))
        return vals[0]

    def error(self, reply, status, code):
        self.assertEqual(reply.status, status, reply)
        body = reply.json()
        self.assertIs(body["success"], False, body)
        self.assertEqual(body["error"]["code"], code, body)
        self.assertTrue(body.get("requestId"), body)
        return body["error"]


class Traces(Base):
    @classmethod
    def setUpClass(cls):
        st.require("users", "traces", "gateway")
        # users exports nothing here: its spans would change the counts the
        # cases compare (stack.py points every service at a running store).
        cls.s = st.Stack("traces", services=["users", "traces"],
                         env={"OTEL_TRACES_EXPORTER": "none"}).start()
        cls.admin = cls.s.login(st.ADMIN_EMAIL, st.ADMIN_PASSWORD)
        cls.extra = []  # servers a test started; stopped (and checked) at the end

    @classmethod
    def tearDownClass(cls):
        problems = []
        for srv in cls.extra:
            try:
                srv.stop(timeout=15)
            except harness.ServerError as e:
                problems.append(str(e))
        problems += cls.s.stop()
        if problems:
            raise AssertionError("\n".join(problems))

    # -- helpers ----------------------------------------------------------------------------

    def q(self, path="", token=None, port=None):
        """A query through the gateway (or straight to a port) as the admin."""
        if port:
            return self.s.call("GET", "/v1/traces" + path, token or self.admin["token"],
                               port=port)
        return self.s.call("GET", API + path, token or self.admin["token"])

    def trace(self, tid, port=None):
        r = self.q("/" + tid, port=port)
        self.assertEqual(r.status, 200, r)
        return r.json()["data"]

    def listing(self, query, port=None):
        r = self.q("?" + query, port=port)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def small(self, **env):
        """Another agora-traces with its own (small) bounds, started on a free
        port with the same token settings; stopped at the end."""
        e = self.s.env_for("traces")
        port = st.free_port()
        e.update({"PORT": str(port)})
        e.update({k: str(v) for k, v in env.items()})
        srv = harness.Server(e, name="traces-small", binary=st.binary("traces"))
        srv.start(timeout=harness.scaled(20))
        self.extra.append(srv)
        return srv.port

    # -- one trace from two services -------------------------------------------------------

    def test_one_trace_from_two_services_in_scrambled_order(self):
        tid = trace_id()
        t0 = (time.time_ns() // ms(1)) * ms(1)
        a, b, c, d, e = (span_id() for _ in range(5))
        gw_root = span(tid, a, "POST /api/v1/orders", t0, t0 + ms(100), kind=2,
                       attrs=[{"key": "http.response.status_code", "value": {"intValue": "201"}}])
        gw_client = span(tid, b, "POST", t0 + ms(5), t0 + ms(95), parent=a, kind=3)
        orders_server = span(tid, c, "POST /v1/orders", t0 + ms(10), t0 + ms(90), parent=b,
                             kind=2)
        orders_step = span(tid, d, "saga reserve", t0 + ms(20), t0 + ms(40), parent=c)
        orders_call = span(tid, e, "POST", t0 + ms(50), t0 + ms(80), parent=c, kind=3,
                           status={"code": 2, "message": "payments answered 503"})
        # The children first, from agora-orders.
        self.post_ok(export(("agora-orders", [orders_call, orders_step])))
        got = self.trace(tid)
        self.assertEqual(got["spanCount"], 2)
        # No parentless span yet: the earliest span stands for the root.
        self.assertEqual((got["rootName"], got["rootService"]), ("saga reserve", "agora-orders"))
        self.assertEqual(got["durationMs"], 60)
        # Then the gateway's root on its own, then one request from both.
        self.post_ok(export(("agora-gateway", [gw_root])))
        self.post_ok(export(("agora-orders", [orders_server]), ("agora-gateway", [gw_client])))
        got = self.trace(tid)
        self.assertEqual(got["traceId"], tid)
        self.assertEqual((got["rootName"], got["rootService"]),
                         ("POST /api/v1/orders", "agora-gateway"))
        self.assertEqual(got["spanCount"], 5)
        self.assertEqual(got["errorCount"], 1)
        self.assertEqual(got["services"], ["agora-gateway", "agora-orders"])
        self.assertEqual(got["durationMs"], 100)
        self.assertEqual(got["startTime"], time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(
            t0 // 10**9)) + ".%03dZ" % (t0 // ms(1) % 1000))
        spans = got["spans"]
        self.assertEqual([x["spanId"] for x in spans], [a, b, c, d, e])  # by start
        self.assertEqual([x["parentSpanId"] for x in spans], [None, a, b, c, c])
        self.assertEqual([x["service"] for x in spans],
                         ["agora-gateway", "agora-gateway", "agora-orders", "agora-orders",
                          "agora-orders"])
        self.assertEqual([x["kind"] for x in spans],
                         ["server", "client", "server", "internal", "client"])
        self.assertEqual([x["startOffsetMs"] for x in spans], [0, 5, 10, 20, 50])
        self.assertEqual([x["durationMs"] for x in spans], [100, 90, 80, 20, 30])
        self.assertEqual(spans[0]["startTimeUnixNano"], str(t0))
        self.assertEqual(spans[4]["endTimeUnixNano"], str(t0 + ms(80)))
        self.assertEqual(spans[4]["status"], {"code": "error", "message": "payments answered 503"})
        self.assertEqual(spans[0]["status"], {"code": "unset", "message": ""})
        self.assertEqual(spans[0]["attributes"], {"http.response.status_code": 201})
        # The summary in the list says the same.
        row = [t for t in self.listing("service=agora-orders&limit=100")["data"]
               if t["traceId"] == tid]
        self.assertEqual(len(row), 1)
        self.assertEqual(row[0], {k: got[k] for k in (
            "traceId", "rootService", "rootName", "startTime", "durationMs", "spanCount",
            "services", "errorCount")})

    def test_any_values_numbers_events_links_and_unknown_fields(self):
        tid, sid, other = trace_id(), span_id(), trace_id()
        t0 = time.time_ns()
        attrs = [
            {"key": "s", "value": {"stringValue": "text"}},
            {"key": "i", "value": {"intValue": "-42"}},
            {"key": "inum", "value": {"intValue": 7}},
            {"key": "big", "value": {"intValue": "9223372036854775807"}},
            {"key": "d", "value": {"doubleValue": 0.25}},
            {"key": "dint", "value": {"doubleValue": 3}},
            {"key": "b", "value": {"boolValue": False}},
            {"key": "arr", "value": {"arrayValue": {"values": [
                {"stringValue": "x"}, {"intValue": "1"}, {"boolValue": True}]}}},
            {"key": "kv", "value": {"kvlistValue": {"values": [
                {"key": "inner", "value": {"doubleValue": 1.5}},
                {"key": "deep", "value": {"kvlistValue": {"values": [
                    {"key": "z", "value": {"stringValue": "zz"}}]}}}]}}},
            {"key": "bytes", "value": {"bytesValue": "aGVsbG8="}},
            {"key": "empty", "value": {}},
            {"key": "s", "value": {"stringValue": "last wins"}},
        ]
        sp = {
            "traceId": tid.upper(), "spanId": sid, "parentSpanId": "",
            "name": "GET /v1/things/:id", "kind": 5,
            "startTimeUnixNano": t0, "endTimeUnixNano": t0 + 1500000,  # numbers, not strings
            "attributes": attrs, "droppedAttributesCount": 0, "someFutureField": {"x": [1]},
            "traceState": "k=v", "flags": 1,
            "status": {"code": 1},
            "events": [{"timeUnixNano": str(t0 + 500000), "name": "exception",
                        "attributes": [{"key": "exception.message",
                                        "value": {"stringValue": "boom"}}]},
                       {"name": "no time"}],
            "links": [{"traceId": other, "spanId": "00f067aa0ba902b7",
                       "attributes": [{"key": "why", "value": {"stringValue": "follows"}}]}],
        }
        body = export(("agora-catalog", [sp]))
        body["somethingNew"] = True
        body["resourceSpans"][0]["schemaUrl"] = "https://opentelemetry.io/schemas/1.24.0"
        self.post_ok(body)
        # The same span again (an exporter's retry) is kept once.
        self.post_ok(body)
        got = self.trace(tid)
        self.assertEqual(got["spanCount"], 1)
        s = got["spans"][0]
        self.assertEqual(s["spanId"], sid)
        self.assertIsNone(s["parentSpanId"])  # "" is a root
        self.assertEqual(s["kind"], "consumer")
        self.assertEqual(s["status"], {"code": "ok", "message": ""})
        self.assertEqual(s["durationMs"], 1.5)
        self.assertEqual(s["startTimeUnixNano"], str(t0))
        self.assertEqual(s["attributes"], {
            "s": "last wins", "i": -42, "inum": 7, "big": 9223372036854775807, "d": 0.25,
            "dint": 3.0, "b": False, "arr": ["x", 1, True],
            "kv": {"inner": 1.5, "deep": {"z": "zz"}}, "bytes": "aGVsbG8=", "empty": None})
        self.assertEqual(s["events"], [
            {"name": "exception", "timeUnixNano": str(t0 + 500000), "offsetMs": 0.5,
             "attributes": {"exception.message": "boom"}},
            {"name": "no time", "timeUnixNano": "0", "offsetMs": None, "attributes": {}}])
        self.assertEqual(s["links"], [{"traceId": other, "spanId": "00f067aa0ba902b7",
                                       "attributes": {"why": "follows"}}])
        # Ids are looked up in either case; answers are lower case.
        self.assertEqual(self.trace(tid.upper())["traceId"], tid)

    def test_root_is_the_parentless_span_despite_clock_skew(self):
        # Another host's clock runs 3 ms early: its child span starts before
        # the root. The root is still the span without a parent.
        tid, root, child = trace_id(), span_id(), span_id()
        t0 = time.time_ns()
        self.post_ok(export(("agora-skewed", [span(tid, child, "early child", t0 - ms(3),
                                                   t0 + ms(1), parent=root)])))
        self.assertEqual(self.trace(tid)["rootName"], "early child")
        self.post_ok(export(("agora-gateway", [span(tid, root, "GET /", t0, t0 + ms(2),
                                                    kind=2)])))
        got = self.trace(tid)
        self.assertEqual((got["rootName"], got["rootService"]), ("GET /", "agora-gateway"))
        self.assertEqual(got["durationMs"], 5)  # from the earliest start to the latest end
        self.assertEqual([s["spanId"] for s in got["spans"]], [child, root])
        self.assertEqual(got["spans"][0]["startOffsetMs"], 0)

    def test_enum_names_and_a_resource_without_service_name(self):
        tid = trace_id()
        t0 = time.time_ns()
        body = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [
            span(tid, span_id(), "job", t0, t0 + ms(2), kind="SPAN_KIND_PRODUCER",
                 status={"code": "STATUS_CODE_ERROR", "message": "x"})]}]}]}
        self.post_ok(body)
        got = self.trace(tid)
        self.assertEqual(got["services"], ["unknown_service"])
        self.assertEqual(got["spans"][0]["kind"], "producer")
        self.assertEqual(got["spans"][0]["status"]["code"], "error")
        self.assertEqual(got["errorCount"], 1)

    # -- summaries, filters, sorts, pages -------------------------------------------------

    def test_list_filters_sorts_and_pages(self):
        svc = "agora-t" + uuid.uuid4().hex[:6]
        other = "agora-u" + uuid.uuid4().hex[:6]
        base = time.time_ns()
        # (start offset ms, duration ms, error, root name)
        shapes = [(0, 30, False, "GET /a"), (10, 120, True, "GET /b"), (20, 5, False, "GET /a"),
                  (30, 60, False, "POST /c"), (40, 250, True, "GET /b")]
        ids = []
        for off, dur, err, name in shapes:
            tid = trace_id()
            ids.append(tid)
            root = span_id()
            spans = [span(tid, root, name, base + ms(off), base + ms(off + dur), kind=2,
                          status={"code": 2} if err else None),
                     span(tid, span_id(), "child", base + ms(off + 1), base + ms(off + 2),
                          parent=root)]
            self.post_ok(export((svc, spans)))
        # A trace that only touches `other` does not match service=svc...
        lone = trace_id()
        self.post_ok(export((other, [span(lone, span_id(), "GET /a", base, base + ms(1))])))
        # ...and one that touches both matches both.
        both = trace_id()
        r1 = span_id()
        self.post_ok(export((other, [span(both, r1, "edge", base + ms(50), base + ms(51))]),
                            (svc, [span(both, span_id(), "inner", base + ms(50), base + ms(51),
                                        parent=r1)])))

        recent = self.listing("service=%s&limit=100" % svc)
        self.assertEqual([t["traceId"] for t in recent["data"]], [both] + ids[::-1])
        self.assertEqual(recent["pagination"], {"page": 1, "limit": 100, "total": 6, "pages": 1})
        self.assertTrue(recent["success"])
        first = recent["data"][-1]
        self.assertEqual((first["rootService"], first["rootName"], first["spanCount"],
                          first["services"], first["errorCount"], first["durationMs"]),
                         (svc, "GET /a", 2, [svc], 0, 30))
        self.assertEqual(recent["data"][0]["services"], sorted([svc, other]))
        self.assertEqual(recent["data"][0]["rootService"], other)

        slow = self.listing("service=%s&sort=slowest&limit=100" % svc)["data"]
        self.assertEqual([t["traceId"] for t in slow],
                         [ids[4], ids[1], ids[3], ids[0], ids[2], both])
        self.assertEqual([t["durationMs"] for t in slow], [250, 120, 60, 30, 5, 1])

        errs = self.listing("service=%s&error=true" % svc)["data"]
        self.assertEqual([t["traceId"] for t in errs], [ids[4], ids[1]])
        self.assertTrue(all(t["errorCount"] == 1 for t in errs))
        fine = self.listing("service=%s&error=false&limit=100" % svc)["data"]
        self.assertEqual({t["traceId"] for t in fine}, {ids[0], ids[2], ids[3], both})

        longer = self.listing("service=%s&minDurationMs=60&sort=slowest" % svc)["data"]
        self.assertEqual([t["traceId"] for t in longer], [ids[4], ids[1], ids[3]])

        named = self.listing("service=%s&name=%s" % (svc, "GET%20/a"))["data"]
        self.assertEqual([t["traceId"] for t in named], [ids[2], ids[0]])
        # name= alone finds `lone` too (its span is of another service)...
        anyname = [t["traceId"] for t in self.listing("name=GET%20/a&limit=100")["data"]]
        self.assertIn(lone, anyname)
        self.assertIn(ids[0], anyname)
        # ...but with service= the named span must be that service's.
        self.assertEqual(self.listing("service=%s&name=edge" % svc)["data"], [])
        self.assertEqual([t["traceId"] for t in
                          self.listing("service=%s&name=edge" % other)["data"]], [both])

        page2 = self.listing("service=%s&limit=2&page=2" % svc)
        self.assertEqual([t["traceId"] for t in page2["data"]], [ids[3], ids[2]])
        self.assertEqual(page2["pagination"], {"page": 2, "limit": 2, "total": 6, "pages": 3})
        past = self.listing("service=%s&limit=2&page=9" % svc)
        self.assertEqual((past["data"], past["pagination"]["total"]), ([], 6))
        self.assertEqual(self.listing("service=agora-nobody")["data"], [])
        # The default page size is 20, at most.
        self.assertEqual(self.listing("")["pagination"]["limit"], 20)

        services = self.s.ok(self.q("/services"))
        mine = [x for x in services if x["service"] in (svc, other)]
        self.assertEqual(mine, [{"service": svc, "spanCount": 11, "traceCount": 6},
                                {"service": other, "spanCount": 2, "traceCount": 2}])
        self.assertEqual([x["service"] for x in services],
                         sorted(x["service"] for x in services))

    # -- partial success and bad input ----------------------------------------------------

    def test_partial_success_keeps_the_valid_spans(self):
        port = self.s.ports["traces"]
        before = self.metrics(port)
        rec0 = harness.metric_values(before, "agora_traces_received_spans_total")[0]
        rej0 = harness.metric_values(before, "agora_traces_rejected_spans_total")[0]
        tid, good = trace_id(), span_id()
        t0 = time.time_ns()
        spans = [
            span(tid, good, "kept", t0, t0 + ms(1)),
            span("abc", span_id(), "short trace id", t0, t0 + 1),
            span(tid, "zz" + span_id()[2:], "not hex", t0, t0 + 1),
            span(tid, span_id(), "backwards", t0 + ms(5), t0),
            span(tid, span_id(), "no start", 0, t0),
            span(tid, span_id(), "bad parent", t0, t0 + 1, parent="1234"),
            span("0" * 32, span_id(), "zero trace id", t0, t0 + 1),
            "not an object",
        ]
        r = self.post(export(("agora-orders", spans)))
        self.assertEqual(r.status, 200, r)
        ps = r.json()["partialSuccess"]
        self.assertEqual(ps["rejectedSpans"], "7")
        for words in ("spans[1]: traceId", "spans[2]: spanId", "spans[3]: endTimeUnixNano",
                      "spans[4]: startTimeUnixNano", "spans[5]: parentSpanId", "and 2 more"):
            self.assertIn(words, ps["errorMessage"])
        got = self.trace(tid)
        self.assertEqual([s["spanId"] for s in got["spans"]], [good])
        after = self.metrics(port)
        self.assertEqual(harness.metric_values(after, "agora_traces_received_spans_total")[0],
                         rec0 + 8)
        self.assertEqual(harness.metric_values(after, "agora_traces_rejected_spans_total")[0],
                         rej0 + 7)

    def test_bad_requests_change_nothing(self):
        port = self.s.ports["traces"]
        spans0 = self.metric(port, "agora_traces_spans")
        tid = trace_id()
        t0 = time.time_ns()
        good = json.dumps(export(("agora-x", [span(tid, span_id(), "n", t0, t0 + 1)])))
        e = self.error(self.post(good, headers={"Content-Type": "application/x-protobuf"}),
                       415, "UNSUPPORTED_MEDIA_TYPE")
        self.assertIn("JSON", e["message"])
        self.assertIn("application/json", e["message"])
        self.error(self.post(good, headers={"Content-Type": "text/plain"}), 415,
                   "UNSUPPORTED_MEDIA_TYPE")
        e = self.error(self.post(good, headers={"Content-Encoding": "gzip"}), 415,
                       "UNSUPPORTED_MEDIA_TYPE")
        self.assertIn("Content-Encoding", e["message"])
        e = self.error(self.post('{"resourceSpans": [', port), 400, "MALFORMED_JSON")
        self.assertIn("line 1", e["message"])
        self.error(self.post(""), 400, "MALFORMED_JSON")
        self.error(self.post("[1, 2]"), 400, "MALFORMED_EXPORT")
        e = self.error(self.post({"resourceSpans": {"not": "an array"}}), 400,
                       "MALFORMED_EXPORT")
        self.assertIn("resourceSpans", e["message"])
        self.error(self.post({"resourceSpans": [{"scopeSpans": [{"spans": 3}]}]}), 400,
                   "MALFORMED_EXPORT")
        self.error(self.post({"resourceSpans": ["x"]}), 400, "MALFORMED_EXPORT")
        self.assertEqual(self.metric(port, "agora_traces_spans"), spans0)
        self.error(self.q("/" + tid), 404, "TRACE_NOT_FOUND")
        # An empty request is a valid one: nothing to keep.
        self.post_ok({})
        self.post_ok({"resourceSpans": []})

    def test_query_validation(self):
        for query in ("limit=0", "limit=101", "limit=x", "page=0", "sort=oldest",
                      "error=maybe", "error=1", "minDurationMs=-1", "minDurationMs=soon",
                      "service=" + "s" * 300):
            r = self.q("?" + query)
            e = self.error(r, 422, "VALIDATION_FAILED")
            field = query.split("=")[0]
            self.assertEqual(e["details"][0]["field"], field, (query, e))
        # Several problems are reported together.
        e = self.error(self.q("?limit=0&sort=up"), 422, "VALIDATION_FAILED")
        self.assertEqual({d["field"] for d in e["details"]}, {"limit", "sort"})
        for bad in ("abc", "0" * 32, "g" * 32, trace_id() + "00"):
            e = self.error(self.q("/" + bad), 422, "VALIDATION_FAILED")
            self.assertEqual(e["details"][0]["field"], "traceId")
        self.error(self.q("/" + trace_id()), 404, "TRACE_NOT_FOUND")

    def test_only_admins_query(self):
        customer = self.s.register("cust")
        port = self.s.ports["traces"]
        tid = trace_id()
        t0 = time.time_ns()
        self.post_ok(export(("agora-x", [span(tid, span_id(), "n", t0, t0 + 1)])))
        for path in ("", "/services", "/" + tid):
            # At the gateway...
            self.error(self.s.call("GET", API + path), 401, "UNAUTHENTICATED")
            self.error(self.s.call("GET", API + path, customer["token"]), 403, "FORBIDDEN")
            # ...and at the service itself, which checks on its own.
            self.error(self.s.call("GET", "/v1/traces" + path, port=port), 401,
                       "UNAUTHENTICATED")
            self.error(self.s.call("GET", "/v1/traces" + path, customer["token"], port=port),
                       403, "FORBIDDEN")
            self.error(self.s.call("GET", "/v1/traces" + path, "not-a-token", port=port), 401,
                       "UNAUTHENTICATED")
            self.assertEqual(self.q(path).status, 200)
            self.assertEqual(self.q(path, port=port).status, 200)
        # Exports need no token, and another Authorization header does not
        # get in their way; the gateway does not take exports at all.
        self.post_ok(export(("agora-x", [span(tid, span_id(), "m", t0, t0 + 1)])))
        r = self.post(export(("agora-x", [span(tid, span_id(), "o", t0, t0 + 1)])),
                      headers={"Authorization": "Basic dXNlcjpwYXNz"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.trace(tid)["spanCount"], 3)
        r = self.s.call("POST", API, self.admin["token"],
                        body=export(("agora-x", [span(tid, span_id(), "p", t0, t0 + 1)])))
        self.assertIn(r.status, (404, 405), r)
        self.assertEqual(self.trace(tid)["spanCount"], 3)

    def test_openapi_describes_every_route(self):
        r = self.s.call("GET", "/openapi.json", port=self.s.ports["traces"])
        self.assertEqual(r.status, 200, r)
        paths = json.loads(r.body)["paths"]
        want = {"/v1/traces": {"get", "post"}, "/v1/traces/services": {"get"},
                "/v1/traces/{traceId}": {"get"}}
        for p, methods in want.items():
            self.assertIn(p, paths)
            self.assertEqual(set(paths[p]) & {"get", "post", "put", "patch", "delete"}, methods)

    # -- bounds ---------------------------------------------------------------------------

    def test_span_bound_evicts_least_recently_written_traces_whole(self):
        port = self.small(AGORA_TRACES_MAX_SPANS=20)
        t0 = time.time_ns()
        ids = [trace_id() for _ in range(6)]

        def five(i):
            tid = ids[i]
            root = span_id()
            return [span(tid, root, "t%d" % i, t0 + ms(i), t0 + ms(i + 1))] + [
                span(tid, span_id(), "c", t0 + ms(i), t0 + ms(i + 1), parent=root)
                for _ in range(4)]

        for i in range(5):  # 25 spans: the first trace goes
            self.post_ok(export(("agora-a", five(i))), port=port)
        self.assertEqual(self.metric(port, "agora_traces_spans"), 20)
        self.error(self.q("/" + ids[0], port=port), 404, "TRACE_NOT_FOUND")
        # A late span makes trace 1 the most recently written: trace 2 goes
        # next, although trace 1 started earlier.
        late = span_id()
        self.post_ok(export(("agora-b", [span(ids[1], late, "late", t0 + ms(9), t0 + ms(10))])),
                     port=port)
        self.error(self.q("/" + ids[2], port=port), 404, "TRACE_NOT_FOUND")
        self.post_ok(export(("agora-a", five(5))), port=port)
        self.error(self.q("/" + ids[3], port=port), 404, "TRACE_NOT_FOUND")
        kept = self.trace(ids[1], port=port)
        self.assertEqual(kept["spanCount"], 6)  # whole, with its late span
        self.assertIn(late, [s["spanId"] for s in kept["spans"]])
        for i in (4, 5):
            self.assertEqual(self.trace(ids[i], port=port)["spanCount"], 5)
        listed = self.listing("limit=100", port=port)
        self.assertEqual({t["traceId"] for t in listed["data"]}, {ids[1], ids[4], ids[5]})
        self.assertEqual(self.metric(port, "agora_traces_spans"), 16)
        self.assertEqual(self.metric(port, "agora_traces_traces"), 3)
        self.assertEqual(self.metric(port, "agora_traces_evicted_total"), 3)
        # The evicted traces' services are forgotten with them.
        services = self.s.ok(self.q("/services", port=port))
        self.assertEqual(services, [{"service": "agora-a", "spanCount": 15, "traceCount": 3},
                                    {"service": "agora-b", "spanCount": 1, "traceCount": 1}])

    def test_byte_bound(self):
        limit = 256 * 1024
        port = self.small(AGORA_TRACES_MAX_BYTES=limit)
        t0 = time.time_ns()
        blob = "x" * 4000
        ids = []
        for i in range(40):  # about 40 × 4 × 4 KB = 640 KB offered
            tid = trace_id()
            ids.append(tid)
            spans = [span(tid, span_id(), "s%d" % k, t0 + ms(i), t0 + ms(i) + 10,
                          attrs=[{"key": "blob", "value": {"stringValue": blob}}])
                     for k in range(4)]
            self.post_ok(export(("agora-big", spans)), port=port)
            held = self.metric(port, "agora_traces_bytes")
            self.assertLessEqual(held, limit)
        evicted = self.metric(port, "agora_traces_evicted_total")
        self.assertGreater(evicted, 0)
        kept = {t["traceId"] for t in self.listing("limit=100", port=port)["data"]}
        # The newest are there, whole; the oldest are gone; no trace is cut.
        self.assertEqual(kept, set(ids[int(evicted):]))
        for tid in ids[-3:]:
            self.assertEqual(self.trace(tid, port=port)["spanCount"], 4)
        self.error(self.q("/" + ids[0], port=port), 404, "TRACE_NOT_FOUND")
        # The estimate is honest: 4 KB strings in ~160 spans need at least
        # that many bytes, and the store did not hold far fewer traces than
        # the bound allows.
        self.assertGreater(self.metric(port, "agora_traces_bytes"), len(kept) * 4 * 4000)
        self.assertGreater(len(kept) * 4 * 4000, limit // 2)

    def test_body_limit_answers_413_before_reading(self):
        port = self.small(AGORA_TRACES_MAX_BODY="16KiB")
        tid = trace_id()
        t0 = time.time_ns()
        big = export(("agora-a", [span(tid, span_id(), "n", t0, t0 + 1,
                                       attrs=[{"key": "pad", "value": {"stringValue": "p" * 20000}}])]))
        self.error(self.post(big, port=port), 413, "BODY_TOO_LARGE")
        # Only the head: the answer comes without the body being sent.
        with harness.Conn(port) as c:
            c.send(harness.build_request("POST", "/v1/traces", [
                ("Content-Type", "application/json"), ("Content-Length", str(10 << 20))]))
            r = c.read_response(method="POST", timeout=5)
            self.assertEqual(r.status, 413)
            self.assertEqual(r.json()["error"]["code"], "BODY_TOO_LARGE")
        # Chunked, past the limit as it arrives.
        with harness.Conn(port) as c:
            c.send(harness.build_request("POST", "/v1/traces", [
                ("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")]))
            try:
                for _ in range(10):
                    c.send(b"%x\r\n%s\r\n" % (4096, b" " * 4096))
            except OSError:
                pass  # the server may close once it has answered
            r = c.read_response(method="POST", timeout=5)
            self.assertEqual(r.status, 413)
        self.error(self.q("/" + tid, port=port), 404, "TRACE_NOT_FOUND")
        # Under the limit it is taken.
        small = export(("agora-a", [span(tid, span_id(), "n", t0, t0 + 1,
                                         attrs=[{"key": "pad", "value": {"stringValue": "p" * 10000}}])]))
        self.post_ok(small, port=port)
        self.assertEqual(self.trace(tid, port=port)["spanCount"], 1)

    # -- concurrency ----------------------------------------------------------------------

    def test_concurrent_exports_to_one_trace(self):
        tid = trace_id()
        t0 = time.time_ns()
        root = span_id()
        self.post_ok(export(("agora-gateway", [span(tid, root, "root", t0, t0 + ms(500))])))
        errors = []

        def worker(n):
            try:
                for k in range(25):
                    sp = span(tid, span_id(), "w%d-%d" % (n, k), t0 + ms(n) + k, t0 + ms(n) + k + 1,
                              parent=root)
                    r = self.post(export(("agora-w%d" % (n % 2), [sp])))
                    if r.status != 200 or r.json() != {"partialSuccess": {}}:
                        errors.append(r)
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        got = self.trace(tid)
        self.assertEqual(got["spanCount"], 201)
        self.assertEqual(len({s["spanId"] for s in got["spans"]}), 201)
        self.assertEqual(got["services"], ["agora-gateway", "agora-w0", "agora-w1"])
        starts = [int(s["startTimeUnixNano"]) for s in got["spans"]]
        self.assertEqual(starts, sorted(starts))

    # -- configuration --------------------------------------------------------------------

    def test_does_not_trace_itself(self):
        # Told to export to itself (as `agora up` tells every component), it
        # must not: its own server spans would come back as exports, each
        # making more. The tracer's batch delay is 500 ms: wait past it.
        port = st.free_port()
        e = self.s.env_for("traces")
        e.update({"PORT": str(port), "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:%d" % port,
                  "OTEL_TRACES_SAMPLER": "always_on", "OTEL_BSP_SCHEDULE_DELAY": "100"})
        srv = harness.Server(e, name="traces-self", binary=st.binary("traces")).start(
            timeout=harness.scaled(20))
        self.extra.append(srv)
        t0 = time.time_ns()
        tid = trace_id()
        self.post_ok(export(("agora-a", [span(tid, span_id(), "n", t0, t0 + 1)])), port=port)
        for _ in range(3):
            self.q("", port=port)
        time.sleep(harness.scaled(1.5))
        services = [x["service"] for x in self.s.ok(self.q("/services", port=port))]
        self.assertEqual(services, ["agora-a"])
        self.assertEqual(self.metric(port, "agora_traces_received_spans_total"), 1)

    def test_bad_configuration_is_refused(self):
        for var, value in (("AGORA_TRACES_MAX_SPANS", "0"), ("AGORA_TRACES_MAX_BYTES", "lots"),
                           ("AGORA_TRACES_MAX_BODY", "10"), ("AGORA_TRACES_MAX_BYTES", "1k")):
            env = dict(os.environ)
            env.update(self.s.env_for("traces"))
            env.update({"PORT": "0", var: value})
            p = subprocess.run([st.binary("traces")], env=env, capture_output=True, text=True,
                               timeout=harness.scaled(20))
            self.assertEqual(p.returncode, 2, (var, value, p.stderr[-500:]))
            self.assertIn(var, p.stderr + p.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
