#!/usr/bin/env python3
"""Writes deploy/grafana/agora-dashboard.json: one Grafana dashboard for the
whole system, templated by service (the Prometheus job, as
deploy/prometheus/prometheus.yml names them). Edit the panels here and run
it again; tests/integration/metrics/test_metrics.py checks that the JSON is
what this writes, that it is well-formed, and that every metric it asks
Prometheus for is exposed by the running system.

    python3 deploy/grafana/build-dashboard.py [--check]

--check only compares and exits 1 when the JSON is stale.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "agora-dashboard.json")

DS = {"type": "prometheus", "uid": "${datasource}"}
SVC = 'job=~"$service"'
RI = "[$__rate_interval]"


def rate(metric, sel=SVC, by=None):
    expr = "rate(%s{%s}%s)" % (metric, sel, RI)
    return "sum by (%s) (%s)" % (by, expr) if by else "sum(%s)" % expr


def quantile(q, metric, by, sel=SVC):
    return ("histogram_quantile(%s, sum by (le, %s) (rate(%s_bucket{%s}%s)))"
            % (q, by, metric, sel, RI))


class Board:
    def __init__(self):
        self.panels = []
        self.y = 0
        self.x = 0
        self.row_h = 0
        self.next_id = 1

    def _id(self):
        i = self.next_id
        self.next_id += 1
        return i

    def row(self, title):
        self._newline()
        self.panels.append({"type": "row", "title": title, "id": self._id(), "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def _newline(self):
        if self.x:
            self.y += self.row_h
            self.x = 0
            self.row_h = 0

    def panel(self, title, targets, unit="short", desc="", w=8, h=8, kind="timeseries",
              stack=False, legend_table=False):
        if self.x + w > 24:
            self._newline()
        tg = []
        for i, t in enumerate(targets):
            expr, legend = t
            tg.append({"datasource": DS, "expr": expr, "legendFormat": legend,
                       "refId": chr(ord("A") + i), "range": True})
        p = {"type": kind, "title": title, "id": self._id(), "datasource": DS,
             "description": desc, "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
             "targets": tg,
             "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}}
        if kind == "timeseries":
            p["fieldConfig"]["defaults"]["custom"] = {
                "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if not stack else 40,
                "showPoints": "never", "spanNulls": False,
                "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
            p["options"] = {"legend": {"displayMode": "table" if legend_table else "list",
                                       "placement": "bottom", "showLegend": True,
                                       "calcs": ["mean", "max"] if legend_table else []},
                            "tooltip": {"mode": "multi", "sort": "desc"}}
        elif kind == "stat":
            p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                              "values": False},
                            "colorMode": "value", "graphMode": "area", "textMode": "auto",
                            "justifyMode": "auto", "orientation": "auto"}
        self.panels.append(p)
        self.x += w
        self.row_h = max(self.row_h, h)


def build():
    b = Board()

    b.row("Overview: every service")
    b.panel("Up", [("up{%s}" % SVC, "{{job}}")], unit="none", kind="stat", w=6, h=5,
            desc="1 when Prometheus scraped the service's /metrics (a metric of Prometheus, "
                 "not of the service).")
    b.panel("Requests/s", [(rate("agora_http_requests_total"), "all")], unit="reqps",
            kind="stat", w=6, h=5, desc="Every HTTP request the selected services answered.")
    b.panel("5xx/s", [(rate("agora_http_request_errors_total"), "5xx")], unit="reqps",
            kind="stat", w=6, h=5, desc="Requests answered with a 5xx status.")
    b.panel("Open connections", [("sum(agora_http_open_connections{%s})" % SVC, "open")],
            unit="short", kind="stat", w=6, h=5,
            desc="HTTP connections open now (WebSockets and SSE streams included).")
    b.panel("Requests/s by service", [(rate("agora_http_requests_total", by="job"), "{{job}}")],
            unit="reqps", stack=True)
    b.panel("Error ratio by service (5xx / all)",
            [("%s / %s" % (rate("agora_http_request_errors_total", by="job"),
                           rate("agora_http_requests_total", by="job")), "{{job}}")],
            unit="percentunit")
    b.panel("p99 latency by service",
            [(quantile("0.99", "agora_http_request_duration_seconds", "job"), "{{job}}")],
            unit="s")

    b.row("RED per route ($service)")
    b.panel("Requests/s by route",
            [(rate("agora_http_requests_total", by="job, method, route"),
              "{{job}} {{method}} {{route}}")], unit="reqps", w=12, legend_table=True,
            desc="agora_http_requests_total by the matched route template.")
    b.panel("Requests/s by status",
            [(rate("agora_http_requests_total", by="job, status"), "{{job}} {{status}}")],
            unit="reqps", w=12, stack=True)
    b.panel("5xx/s by route",
            [(rate("agora_http_request_errors_total", by="job, method, route"),
              "{{job}} {{method}} {{route}}")], unit="reqps", w=12,
            desc="agora_http_request_errors_total: requests answered with a 5xx.")
    b.panel("4xx/s by route",
            [(rate("agora_http_requests_total", sel=SVC + ', status=~"4.."',
                   by="job, method, route"), "{{job}} {{method}} {{route}}")],
            unit="reqps", w=12)
    b.panel("p50 latency by route",
            [(quantile("0.5", "agora_http_request_duration_seconds", "job, method, route"),
              "{{job}} {{method}} {{route}}")], unit="s", w=12)
    b.panel("p99 latency by route",
            [(quantile("0.99", "agora_http_request_duration_seconds", "job, method, route"),
              "{{job}} {{method}} {{route}}")], unit="s", w=12)
    b.panel("Mean latency by route",
            [("%s / %s" % (rate("agora_http_request_duration_seconds_sum",
                                by="job, method, route"),
                           rate("agora_http_request_duration_seconds_count",
                                by="job, method, route")), "{{job}} {{method}} {{route}}")],
            unit="s", w=12)
    b.panel("Connections refused by reason",
            [(rate("agora_http_rejected_total", by="job, reason"), "{{job}} {{reason}}")],
            unit="reqps", w=12,
            desc="agora_http_rejected_total: requests the HTTP server refused before a "
                 "handler (limits, overload, bad requests).")

    b.row("Gateway")
    b.panel("Requests/s by route and class",
            [(rate("agora_gateway_route_requests_total", sel='job="gateway"',
                   by="route, class"), "{{route}} {{class}}")], unit="reqps",
            desc="agora_gateway_route_requests_total by route prefix and status class.")
    b.panel("p99 by route (edge to answer)",
            [(quantile("0.99", "agora_gateway_route_seconds", "route", sel='job="gateway"'),
              "{{route}}")], unit="s")
    b.panel("p99 upstream response head by service",
            [(quantile("0.99", "agora_gateway_upstream_seconds", "service",
                       sel='job="gateway"'), "{{service}}")], unit="s")
    b.panel("Upstream responses by service and code",
            [(rate("agora_gateway_upstream_responses_total", sel='job="gateway"',
                   by="service, code"), "{{service}} {{code}}")], unit="reqps")
    b.panel("Rejections by reason",
            [(rate("agora_gateway_rejections_total", sel='job="gateway"', by="reason"),
              "{{reason}}")], unit="reqps",
            desc="Requests the gateway answered itself: rate_limited, circuit_open, "
                 "no_instance, not_running, upstream_busy, retry_budget, client_gone.")
    b.panel("Retries by service and failure",
            [(rate("agora_gateway_retries_total", sel='job="gateway"', by="service, reason"),
              "{{service}} {{reason}}")], unit="reqps")
    b.panel("Rate limiting by policy and outcome",
            [(rate("agora_ratelimit_requests_total", sel='job="gateway"', by="policy, outcome"),
              "{{policy}} {{outcome}}")], unit="reqps")
    b.panel("WebSocket tunnels opened",
            [(rate("agora_gateway_websocket_tunnels_total", sel='job="gateway"',
                   by="service"), "{{service}}")], unit="ops")
    b.panel("Configuration reloads",
            [("sum by (result) (increase(agora_gateway_config_reloads_total{job=\"gateway\"}"
              "[$__range]))", "{{result}}")], unit="short", kind="stat")

    b.row("Calls between services ($service)")
    b.panel("Peer calls/s by outcome",
            [(rate("agora_peer_call_duration_seconds_count", by="job, peer, outcome"),
              "{{job}} → {{peer}} {{outcome}}")], unit="ops", w=12, legend_table=True,
            desc="agora_peer_call_duration_seconds: outcome ok, error, timeout, open "
                 "(the breaker refused).")
    b.panel("p99 peer call by peer",
            [(quantile("0.99", "agora_peer_call_duration_seconds", "job, peer"),
              "{{job}} → {{peer}}")], unit="s", w=12)
    b.panel("Breaker state (0 closed, 1 open, 2 half-open)",
            [("max by (job, breaker) (agora_breaker_state{%s})" % SVC,
              "{{job}} → {{breaker}}")], unit="none", w=12)
    b.panel("Breaker calls/s by outcome",
            [(rate("agora_breaker_calls_total", by="job, breaker, outcome"),
              "{{job}} → {{breaker}} {{outcome}}")], unit="ops", w=12)

    b.row("Sagas ($service)")
    b.panel("Saga steps/s by outcome",
            [(rate("agora_saga_steps_total", by="job, saga, step, outcome"),
              "{{saga}} {{step}} {{outcome}}")], unit="ops", w=12, legend_table=True,
            desc="agora_saga_steps_total: outcome ok, retried, failed, compensated.")
    b.panel("p99 saga step duration",
            [(quantile("0.99", "agora_saga_step_duration_seconds", "job, saga, step"),
              "{{saga}} {{step}}")], unit="s", w=12)
    b.panel("Failed and compensated steps",
            [(rate("agora_saga_steps_total", sel=SVC + ', outcome=~"failed|compensated"',
                   by="saga, step, outcome"), "{{saga}} {{step}} {{outcome}}")],
            unit="ops", w=12)
    b.panel("Mean saga step duration",
            [("%s / %s" % (rate("agora_saga_step_duration_seconds_sum", by="saga, step"),
                           rate("agora_saga_step_duration_seconds_count", by="saga, step")),
              "{{saga}} {{step}}")], unit="s", w=12)

    b.row("Event bus ($service)")
    b.panel("Published/s by type",
            [(rate("agora_bus_published_total", by="job, type"), "{{job}} {{type}}")],
            unit="ops", legend_table=True)
    b.panel("Confirmed and failed publishes/s",
            [(rate("agora_bus_confirmed_total", by="job"), "{{job}} confirmed"),
             (rate("agora_bus_publish_failures_total", by="job"), "{{job}} failed")],
            unit="ops")
    b.panel("Consumed, duplicates, retried, dead-lettered/s",
            [(rate("agora_bus_consumed_total", by="job"), "{{job}} consumed"),
             (rate("agora_bus_duplicates_total", by="job"), "{{job}} duplicate"),
             (rate("agora_bus_retried_total", by="job"), "{{job}} retried"),
             (rate("agora_bus_dead_lettered_total", by="job"), "{{job}} dead-lettered")],
            unit="ops")
    b.panel("Outbox depth",
            [("max by (job) (agora_bus_outbox_depth{%s})" % SVC, "{{job}}")], unit="short",
            desc="Events written to the outbox and not yet confirmed by the broker.")
    b.panel("Oldest outbox event age",
            [("max by (job) (agora_bus_outbox_age_seconds{%s})" % SVC, "{{job}}")], unit="s")
    b.panel("p99 relay lag (outbox write → broker confirm)",
            [(quantile("0.99", "agora_bus_relay_lag_seconds", "job"), "{{job}}")], unit="s")

    b.row("Store ($service)")
    b.panel("Transactions/s by outcome",
            [(rate("agora_store_tx_duration_seconds_count", by="job, outcome"),
              "{{job}} {{outcome}}")], unit="ops", w=12)
    b.panel("p99 transaction duration",
            [(quantile("0.99", "agora_store_tx_duration_seconds", "job"), "{{job}}")],
            unit="s", w=12)

    b.row("Tracing")
    b.panel("Spans exported/s",
            [(rate("agora_trace_spans_exported_total", by="job"), "{{job}}")], unit="ops",
            desc="Spans each service handed to the OTLP collector.")
    b.panel("Spans dropped/s by reason",
            [(rate("agora_trace_spans_dropped_total", by="job, reason"), "{{job}} {{reason}}")],
            unit="ops", desc="A full queue or a collector that is down costs spans, "
                             "never requests.")
    b.panel("Export queue",
            [("max by (job) (agora_trace_queue_spans{%s})" % SVC, "{{job}}")], unit="short")
    b.panel("Trace store: spans and traces held",
            [("sum(agora_traces_spans)", "spans"), ("sum(agora_traces_traces)", "traces")],
            unit="short")
    b.panel("Trace store: received, rejected, evicted/s",
            [("sum(rate(agora_traces_received_spans_total%s))" % RI, "received spans"),
             ("sum(rate(agora_traces_rejected_spans_total%s))" % RI, "rejected spans"),
             ("sum(rate(agora_traces_evicted_total%s))" % RI, "evicted traces")], unit="ops")
    b.panel("Trace store: bytes held",
            [("sum(agora_traces_bytes)", "bytes")], unit="bytes")

    b.row("Registry and processes")
    b.panel("Registered instances by health",
            [("sum by (status) (agora_registry_instances)", "{{status}}")], unit="short")
    b.panel("Blocking queries waiting",
            [("sum(agora_registry_blocking_queries)", "blocking")], unit="short")
    b.panel("Realtime push connections",
            [("sum(agora_notifications_push_connections)", "connections")], unit="short")
    b.panel("Resident memory",
            [("process_resident_memory_bytes{%s}" % SVC, "{{job}}")], unit="bytes")
    b.panel("CPU", [("rate(process_cpu_seconds_total{%s}%s)" % (SVC, RI), "{{job}}")],
            unit="percentunit")
    b.panel("Open file descriptors", [("process_open_fds{%s}" % SVC, "{{job}}")], unit="short")

    return {
        "title": "Agora: the whole system",
        "uid": "agora-system",
        "description": "RED per route per service, the gateway, calls between services and "
                       "their breakers, sagas, the event bus, stores, tracing, the registry "
                       "(docs/internals/observability.md). Generated by "
                       "deploy/grafana/build-dashboard.py.",
        "tags": ["agora"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "timezone": "",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": "",
             "options": []},
            {"name": "service", "label": "Service", "type": "query", "datasource": DS,
             "query": {"query": "label_values(process_start_time_seconds, job)",
                       "refId": "service"},
             "definition": "label_values(process_start_time_seconds, job)",
             "includeAll": True, "multi": True, "allValue": ".*",
             "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
             "refresh": 2, "sort": 1, "hide": 0, "regex": "", "options": []},
        ]},
        "panels": b.panels,
    }


def render():
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main():
    text = render()
    if "--check" in sys.argv[1:]:
        with open(OUT, encoding="utf-8") as f:
            if f.read() != text:
                print("%s is stale: run %s" % (OUT, sys.argv[0]), file=sys.stderr)
                return 1
        return 0
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
