#!/usr/bin/env python3
"""The browser tests of web/ (issue 13), end to end.

Run under tests/harness/with-servers nats (ctest e2e.browser does):

    tests/harness/with-servers nats -- python3 tests/e2e/run.py [--serve]

It starts the whole system the way tests/integration/lib/stack.py does
(every service whose AGORA_<NAME>D binary is set, behind agora-gateway with
AGORA_WEB_DIR=web/, on free ports, in a private temporary directory), loads
the demo catalogue (services/catalog/demo/load-demo) as the admin, installs
playwright-core with `npm ci` when tests/e2e/node_modules does not match
package-lock.json, and runs `node tests/e2e/main.mjs` against the gateway:
Debian's chromium (/usr/bin/chromium, or AGORA_E2E_CHROMIUM) driven by
playwright-core. Screenshots go to AGORA_E2E_SHOTS (build/e2e-screenshots).

--serve starts the same system and waits (Ctrl-C stops it), for working on
web/ by hand: it prints the gateway's URL and the admin's credentials.

Exit status: node's (0 only when every scenario passed); 1 when the
system or the browser could not start, with the reason.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration", "lib"))
import stack as st  # noqa: E402
import harness  # noqa: E402  (stack.py put its folder on the path)

CHROMIUM = os.environ.get("AGORA_E2E_CHROMIUM", "/usr/bin/chromium")


def log(msg):
    print("e2e: " + msg, flush=True)


def npm_ci():
    """playwright-core as package-lock.json says, in AGORA_E2E_NODE_DIR (ctest
    gives each build directory its own, so two builds never share one
    node_modules) or else here; npm ci runs only when the lock file differs
    from the one last installed there."""
    where = os.environ.get("AGORA_E2E_NODE_DIR", HERE)
    os.makedirs(where, exist_ok=True)
    want = {}
    for name in ("package.json", "package-lock.json"):
        with open(os.path.join(HERE, name), "rb") as f:
            want[name] = f.read()
    stamp = os.path.join(where, "node_modules", ".agora-e2e-lock")
    if os.path.exists(stamp) and open(stamp, "rb").read() == want["package-lock.json"]:
        return where
    npm = shutil.which("npm")
    if not npm:
        raise SystemExit("e2e: npm is not installed (scripts/install-deps installs nodejs)")
    if where != HERE:
        for name, data in want.items():
            with open(os.path.join(where, name), "wb") as f:
                f.write(data)
    log("npm ci in %s" % where)
    r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=where)
    if r.returncode != 0:
        raise SystemExit("e2e: npm ci failed (status %d)" % r.returncode)
    with open(stamp, "wb") as f:
        f.write(want["package-lock.json"])
    return where


def check_chromium():
    if not os.access(CHROMIUM, os.X_OK):
        raise SystemExit("e2e: %s is not there: the browser tests need Debian's chromium "
                         "(scripts/install-deps installs it)" % CHROMIUM)


def load_demo(s):
    tool = os.path.join(ROOT, "services", "catalog", "demo", "load-demo")
    r = subprocess.run([sys.executable, tool,
                        "--catalog", "http://127.0.0.1:%d" % s.ports["catalog"],
                        "--users", "http://127.0.0.1:%d" % s.ports["users"],
                        "--email", st.ADMIN_EMAIL, "--password", st.ADMIN_PASSWORD],
                       capture_output=True, text=True, timeout=harness.scaled(120))
    if r.returncode != 0:
        raise SystemExit("e2e: load-demo failed: %s%s" % (r.stdout, r.stderr))
    log(r.stdout.strip())


def stock_demo(s):
    """The demo's products in agora-inventory too (the checkout reserves there):
    catalog's product.created carries the stock, which inventory consumes;
    wait until every in-stock product has its row."""
    admin = s.login(st.ADMIN_EMAIL, st.ADMIN_PASSWORD)
    prods = s.ok(s.call("GET", "/api/v1/products?limit=100&inStock=true"))
    if not prods:
        raise SystemExit("e2e: the demo catalogue has no product in stock")
    if "inventory" not in s.names:
        return
    for p in prods:
        st.wait_until(lambda: s.call("GET", "/api/v1/inventory/" + p["id"],
                                     admin["token"]).status == 200,
                      "stock of %s in agora-inventory" % p["name"], timeout=60)


def export_to_traces(s):
    """Every service of `s` exports its spans to the stack's agora-traces,
    as config/agora.json has it for `agora up`. The port is chosen when the
    stack starts, so the variable is added as each process is started."""
    plain = s.env_for

    def env_for(name):
        env = plain(name)
        if "traces" in s.ports:
            env.setdefault("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:%d" % s.ports["traces"])
        return env
    s.env_for = env_for


def fixture_trace(s):
    """A trace of known shape posted straight to agora-traces (as an
    exporter would): the ops scenario opens its waterfall and checks each
    row, whatever the real services export. Returns its id, or "" without
    agora-traces."""
    if "traces" not in s.names:
        return ""
    tid = uuid.uuid4().hex
    ids = [uuid.uuid4().hex[:16] for _ in range(4)]
    t0 = time.time_ns()

    def sp(i, name, start_ms, end_ms, kind, parent=None, status=None, attrs=()):
        out = {"traceId": tid, "spanId": ids[i], "name": name, "kind": kind,
               "startTimeUnixNano": str(t0 + start_ms * 1000000),
               "endTimeUnixNano": str(t0 + end_ms * 1000000),
               "attributes": [{"key": k, "value": v} for k, v in attrs]}
        if parent is not None:
            out["parentSpanId"] = ids[parent]
        if status:
            out["status"] = status
        return out

    edge = [sp(0, "GET /api/v1/fixture", 0, 40, 2,
               attrs=[("http.response.status_code", {"intValue": "502"})]),
            sp(1, "GET", 2, 38, 3, parent=0)]
    backend = [sp(2, "GET /v1/fixture", 5, 35, 2, parent=1,
                  status={"code": 2, "message": "the fixture failed on purpose"},
                  attrs=[("http.route", {"stringValue": "/v1/fixture"})]),
               sp(3, "SELECT fixture", 10, 20, 1, parent=2,
                  attrs=[("db.system", {"stringValue": "sqlite"}),
                         ("db.rows", {"intValue": "3"})])]

    def res(svc, spans):
        return {"resource": {"attributes": [{"key": "service.name",
                                             "value": {"stringValue": svc}}]},
                "scopeSpans": [{"scope": {"name": "e2e"}, "spans": spans}]}
    r = s.call("POST", "/v1/traces", port=s.ports["traces"],
               body={"resourceSpans": [res("e2e-backend", backend), res("e2e-edge", edge)]})
    if r.status != 200 or r.json() != {"partialSuccess": {}}:
        raise SystemExit("e2e: agora-traces did not take the fixture trace: %r" % r)
    return tid


def on_signal(signum, _frame):
    # with-servers passes its SIGTERM on; ctest's timeout kills; a
    # background run ignores SIGINT: each becomes a clean stop of the stack.
    raise KeyboardInterrupt("signal %d" % signum)


def main():
    serve = "--serve" in sys.argv[1:]
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    node_dir = None
    if not serve:
        check_chromium()
        node_dir = npm_ci()
    missing = [n for n in ("users", "catalog", "inventory", "payments", "cart", "orders",
                           "notifications", "gateway") if not st.binary(n)]
    if missing:
        raise SystemExit("e2e: the shop needs AGORA_%sD" % "D, AGORA_".join(
            m.upper() for m in missing))
    # agora-traces first, so that it is up before the services export to it.
    s = st.Stack("e2e", services=["traces"] + st.SERVICES, env={
        "AGORA_MESSAGES_MESSAGES_RATE": "1000",
        "AGORA_MESSAGES_MESSAGES_BURST": "1000",
        "AGORA_NOTIFICATIONS_PUSH_MAX_PER_USER": "20",
        "AGORA_GATEWAY_HEALTH_INTERVAL": "1s",
    })
    export_to_traces(s)
    status = 1
    try:
        s.start()
        url = "http://127.0.0.1:%d" % s.ports["gateway"]
        log("system up at %s (%s)" % (url, ", ".join(s.names)))
        load_demo(s)
        stock_demo(s)
        trace_id = fixture_trace(s)
        if serve:
            log("serving %s ; admin %s / %s ; Ctrl-C stops" % (url, st.ADMIN_EMAIL,
                                                             st.ADMIN_PASSWORD))
            while True:
                time.sleep(3600)
        shots = os.environ.get("AGORA_E2E_SHOTS",
                               os.path.join(ROOT, "build", "e2e-screenshots"))
        os.makedirs(shots, exist_ok=True)
        env = dict(os.environ)
        env.update({
            "AGORA_E2E_URL": url,
            "AGORA_E2E_SHOTS": shots,
            "AGORA_E2E_CHROMIUM": CHROMIUM,
            "AGORA_E2E_ADMIN_EMAIL": st.ADMIN_EMAIL,
            "AGORA_E2E_ADMIN_PASSWORD": st.ADMIN_PASSWORD,
            "AGORA_E2E_SERVICES": ",".join(s.names),
            "AGORA_E2E_SCALE": str(harness.SCALE),
            "AGORA_E2E_NODE_DIR": node_dir,
            "AGORA_E2E_TRACE_ID": trace_id,
        })
        only = [a for a in sys.argv[1:] if not a.startswith("--")]
        want_outage = not only or "outage" in only
        if "outage" in only:
            only.remove("outage")
            if not only:
                only = ["guest"]
        r = subprocess.run(["node", os.path.join(HERE, "main.mjs")] + only, env=env, cwd=HERE)
        status = r.returncode
        if want_outage:
            # Services down: the pages must say so in words, not break.
            down = [n for n in ("catalog", "rooms", "analytics") if n in s.names]
            for n in down:
                s.kill(n)
            env["AGORA_E2E_DOWN"] = ",".join(down)
            log("stopped %s for the outage scenario" % ", ".join(down))
            r = subprocess.run(["node", os.path.join(HERE, "main.mjs"), "outage"], env=env, cwd=HERE)
            status = status or r.returncode
            for n in down:
                s.restart(n)
        log("screenshots in %s" % shots)
    except KeyboardInterrupt:
        status = 0 if serve else 130
    finally:
        problems = s.stop()
        if problems:
            log("stopping: " + "; ".join(problems))
            status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
