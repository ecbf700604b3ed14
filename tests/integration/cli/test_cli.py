#!/usr/bin/env python3
"""The agora command, driven as a developer would: a private config on free
ports and a temporary var directory, so that a developer's instance on the
default ports is never touched.

  - a port already in use: `agora up -d` names the pid holding it, exits
    non-zero and starts nothing
  - a missing executable: "agora-x not found at ...: run make build"
  - a component exiting during start: its status and last log lines; what
    was started is stopped; the environment it got (PORT, {service},
    per-service overrides, URLs, AGORA_REGISTRY)
  - `agora up -d` prints the table, returns, and everything answers /ready;
    the demo data is there and `agora demo --load-only` again adds nothing
  - with orders, inventory and payments built: `agora demo`'s tour through
    the gateway prints each step, an order CONFIRMED with its total and
    history, the notification (or that notifications are not running), and
    a declined card's order CANCELLED with its reason
  - with rooms, messages and files built: the chat's tour after the shop's
    (two people, a private room, a message arriving live on a WebSocket, a
    reply and a reaction, a file and a ranged download, presence)
  - `agora status` shows each component with its pid and "ready"
  - SIGKILL on a service: it is restarted (new pid, ready again) and the
    supervisor's log says so
  - `agora logs <svc>` shows its lines; `agora logs` interleaves them all
  - `agora chaos` refuses a bad option (its runs are in
    tests/integration/checkout/test_chaos.py)
  - `agora down` stops every process; no pid file is left
  - foreground `agora up`: prefixed output, SIGINT stops everything in
    reverse order and exits 0

Environment: AGORA_CLI, AGORA_USERSD, AGORA_CATALOGD, AGORA_CARTD,
AGORA_HELLOD (executables), optionally AGORA_REGISTRYD, AGORA_GATEWAYD,
AGORA_INVENTORYD + AGORA_PAYMENTSD + AGORA_ORDERSD, AGORA_NOTIFICATIONSD;
nats-server on PATH.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

CLI = os.environ["AGORA_CLI"]
SANITIZED = os.environ.get("AGORA_TEST_SANITIZED") == "1"
SCALE = 3 if SANITIZED else 1
FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, flush=True)
    return cond


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def get(url, timeout=2):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def send(method, url, body, token=None, timeout=5):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers,
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
    except OSError as e:
        return None, {"error": str(e)}


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def read_pid(var, name):
    try:
        with open(os.path.join(var, "run", name + ".pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def main():
    nats_server = subprocess.run(["sh", "-c", "command -v nats-server"],
                                 capture_output=True, text=True).stdout.strip()
    if not nats_server:
        sys.exit("nats-server is not on PATH: run scripts/install-deps")
    tmp = tempfile.mkdtemp(prefix="agora-cli-test-")
    var = os.path.join(tmp, "var")
    names = ["nats", "users", "catalog", "cart", "hello"]
    execs = {"users": os.environ["AGORA_USERSD"], "catalog": os.environ["AGORA_CATALOGD"],
             "cart": os.environ["AGORA_CARTD"], "hello": os.environ["AGORA_HELLOD"]}
    if os.environ.get("AGORA_REGISTRYD"):
        names.insert(1, "registry")
        execs["registry"] = os.environ["AGORA_REGISTRYD"]
    # The checkout services, in config/agora.json's order: inventory,
    # payments and notifications after catalog, orders after cart.
    shop = all(os.environ.get("AGORA_%sD" % n.upper()) for n in ("inventory", "payments",
                                                                 "orders"))
    if shop:
        for n, after in (("inventory", "catalog"), ("payments", "inventory"), ("orders", "cart")):
            names.insert(names.index(after) + 1, n)
            execs[n] = os.environ["AGORA_%sD" % n.upper()]
        # A partial build may have the target without the file.
        if os.access(os.environ.get("AGORA_NOTIFICATIONSD", ""), os.X_OK):
            names.insert(names.index("payments") + 1, "notifications")
            execs["notifications"] = os.environ["AGORA_NOTIFICATIONSD"]
    # The chat, after cart as in config/agora.json, when its services are built.
    chat = shop and all(os.access(os.environ.get("AGORA_%sD" % n.upper(), ""), os.X_OK)
                        for n in ("rooms", "messages", "files")) and "notifications" in names
    if chat:
        for n, after in (("rooms", "cart"), ("messages", "rooms"), ("files", "messages")):
            names.insert(names.index(after) + 1, n)
            execs[n] = os.environ["AGORA_%sD" % n.upper()]
    if os.environ.get("AGORA_GATEWAYD"):
        names.append("gateway")  # last, as in config/agora.json
        execs["gateway"] = os.environ["AGORA_GATEWAYD"]
    got = free_ports(len(names) + 2)
    ports = dict(zip(names, got))
    grpc_ports = {"users": got[-2], "inventory": got[-1]}  # not a guessed port + 100
    comps = []
    for n in names:
        if n == "nats":
            comps.append({"name": "nats", "exec": "nats-server", "port": ports[n],
                          "args": ["-a", "127.0.0.1", "-p", "{port}", "-js", "-sd", "{var}/nats"],
                          "ready": "tcp", "url": "nats://127.0.0.1:{port}"})
        elif n == "notifications":
            comps.append({"name": n, "exec": execs[n], "port": ports[n],
                          "env": {"AGORA_MAIL_DIR": "{var}/mail"}})
        elif n == "files":
            comps.append({"name": n, "exec": execs[n], "port": ports[n],
                          "env": {"AGORA_FILES_DIR": "{var}/files"}})
        else:
            comps.append({"name": n, "exec": execs[n], "port": ports[n]})
    cfg = {"readyTimeout": "%ds" % (30 * SCALE), "drainTimeout": "10s",
           "env": {"AGORA_USERS_GRPC_PORT": str(grpc_ports["users"]),
                   "AGORA_INVENTORY_GRPC_PORT": str(grpc_ports["inventory"]),
                   "AGORA_USERS_GRPC_URL": "http://127.0.0.1:%d" % grpc_ports["users"],
                   "AGORA_INVENTORY_GRPC_URL": "http://127.0.0.1:%d" % grpc_ports["inventory"],
                   "AGORA_BUS": "nats://127.0.0.1:{nats.port}",
                   "AGORA_DB": "sqlite:{var}/{service}.db",
                   "AGORA_ADMIN_EMAIL": "admin@agora.local",
                   "AGORA_ADMIN_PASSWORD": "agora-admin-dev",
                   "AGORA_JWKS_URL": "{users.url}/.well-known/jwks.json",
                   # orders' service account at users (config/agora.json)
                   "AGORA_SERVICE_CLIENTS": "orders:cli-test-orders-secret",
                   "AGORA_ORDERS_CLIENT_SECRET": "cli-test-orders-secret"},
           "demo": "services/catalog/demo/load-demo",
           "components": comps}
    cfg_path = os.path.join(tmp, "agora.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    env = dict(os.environ, NO_COLOR="1")
    # Nothing of the caller's AGORA_* may leak into the private instance.
    for k in list(env):
        if k.startswith("AGORA_") and k not in ("AGORA_TEST_SANITIZED",):
            del env[k]

    def agora(*args, timeout=120 * SCALE):
        r = subprocess.run([CLI, "--config", cfg_path, "--var", var] + list(args),
                           capture_output=True, text=True, timeout=timeout, env=env)
        check("Sanitizer" not in r.stderr, "agora %s: no sanitizer report: %s" %
              (" ".join(args), r.stderr[-2000:]))
        return r

    try:
        # 1. A port in use: the error names the holder; nothing starts.
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", ports["catalog"]))
        holder.listen()
        r = agora("up", "-d")
        holder.close()
        check(r.returncode != 0, "up with a port in use exits non-zero (got %d)" % r.returncode)
        want = "port %d is in use by pid %d (python" % (ports["catalog"], os.getpid())
        check(want in r.stderr, "the error names the holder: %r in %r" % (want, r.stderr))
        check(not listening(ports["nats"]) and not listening(ports["users"]),
              "nothing was started when a port was in use")
        check(not os.path.exists(os.path.join(var, "run", "agora.pid")), "no supervisor pid file")

        # 2. A missing executable is named, with what to do.
        bad = dict(cfg, components=comps + [{"name": "edge", "port": free_ports(1)[0],
                                              "exec": os.path.join(tmp, "gateway/agora-gateway")}])
        bad_path = os.path.join(tmp, "bad.json")
        with open(bad_path, "w") as f:
            json.dump(bad, f)
        r = subprocess.run([CLI, "--config", bad_path, "--var", var, "up", "-d"],
                           capture_output=True, text=True, timeout=60, env=env)
        check(r.returncode != 0, "up with a missing executable exits non-zero")
        check("agora-gateway not found at %s/gateway/agora-gateway: run make build" % tmp
              in r.stderr, "missing executable message: %r" % r.stderr)
        check(not listening(ports["nats"]), "nothing started with a missing executable")

        # 3. A component that exits during start: its status and last lines,
        # what was started is stopped. It also shows the environment given.
        probe = {"name": "probe", "exec": "/bin/sh", "port": free_ports(1)[0],
                 "args": ["-c", "env > {var}/probe.env; echo boom-from-probe >&2; exit 3"]}
        crash = dict(cfg, components=[comps[0], probe] + comps[1:])
        crash_path = os.path.join(tmp, "crash.json")
        with open(crash_path, "w") as f:
            json.dump(crash, f)
        crash_env = dict(env, AGORA_FOO="x-{service}", AGORA_PROBE_DB="sqlite:/tmp/probe-own.db",
                         PORT="1")
        r = subprocess.run([CLI, "--config", crash_path, "--var", var, "up", "-d"],
                           capture_output=True, text=True, timeout=120 * SCALE, env=crash_env)
        check(r.returncode != 0, "a component exiting during start fails up -d")
        check("probe (sh) exited during start (status 3); last lines of" in r.stderr and
              "boom-from-probe" in r.stderr, "exit during start names status and last lines: %r"
              % r.stderr)
        check(not listening(ports["nats"]), "what was started (nats) is stopped again")
        check(not os.path.exists(os.path.join(var, "run", "agora.pid")), "no supervisor left")
        with open(os.path.join(var, "probe.env")) as f:
            penv = dict(l.rstrip("\n").split("=", 1) for l in f if "=" in l)
        want_env = {"PORT": str(probe["port"]), "AGORA_FOO": "x-probe",
                    "AGORA_DB": "sqlite:/tmp/probe-own.db",
                    "AGORA_BUS": "nats://127.0.0.1:%d" % ports["nats"],
                    "AGORA_USERS_URL": "http://127.0.0.1:%d" % ports["users"],
                    "AGORA_JWKS_URL": "http://127.0.0.1:%d/.well-known/jwks.json" % ports["users"],
                    "AGORA_ADMIN_EMAIL": "admin@agora.local",
                    "AGORA_REGISTRY": ("http://127.0.0.1:%d" % ports["registry"])
                    if "registry" in ports else "static"}
        for k, v in want_env.items():
            check(penv.get(k) == v, "environment: %s=%r (got %r)" % (k, v, penv.get(k)))

        # 4. up -d: the table, then everything ready.
        t0 = time.time()
        r = agora("up", "-d")
        print(r.stdout, r.stderr, flush=True)
        if not check(r.returncode == 0, "up -d exits 0 (got %d)" % r.returncode):
            return
        print("up -d took %.1f s" % (time.time() - t0))
        for n in names:
            check(any(line.split()[:1] == [n] and str(ports[n]) in line
                      for line in r.stdout.splitlines()), "the table lists %s and its port" % n)
            if n == "nats":
                check(listening(ports[n]), "nats listens")
            else:
                st, _ = get("http://127.0.0.1:%d/ready" % ports[n])
                check(st == 200, "%s answers /ready 200 after up -d (got %s)" % (n, st))
        sup = read_pid(var, "agora")
        check(sup is not None and alive(sup), "the supervisor runs, pid in var/run/agora.pid")

        # The demo data came through the public API; loading it again adds nothing.
        def product_total():
            st, body = get("http://127.0.0.1:%d/v1/products?limit=1" % ports["catalog"])
            return json.loads(body)["pagination"]["total"] if st == 200 else None
        before = product_total()
        check(before and before > 0, "the demo products are there (%s)" % before)
        r = agora("demo", "--load-only")
        check(r.returncode == 0, "agora demo --load-only exits 0: %s %s" % (r.stdout, r.stderr))
        check("agora demo:" not in r.stdout, "--load-only runs no tour: %r" % r.stdout)
        check(product_total() == before, "agora demo --load-only again adds nothing")
        if "gateway" in ports and shop:
            # The tour: a new customer through the gateway, each step printed;
            # the catalogue is loaded again first (adding nothing).
            r = agora("demo")
            print(r.stdout, r.stderr, flush=True)
            out = r.stdout
            check(r.returncode == 0, "agora demo (the tour) exits 0: %s" % r.stderr[-2000:])
            check(product_total() == before, "agora demo again adds no product")
            for i, what in enumerate(["registers", "Browses the products", "Adds two products",
                                      "Looks at the cart", "Checks out from the cart",
                                      "history", "notifications", "declined test card"], 1):
                check(re.search(r"^%d\. .*%s" % (i, what), out, re.M),
                      "the tour prints step %d (%s)" % (i, what))
            check(re.search(r"POST /api/v1/orders -> 201", out), "the tour shows its order call")
            check(re.search(r"^   order \S+ is CONFIRMED: \$\d+\.\d\d", out, re.M),
                  "the first order is CONFIRMED with its total")
            check(re.search(r"OrderPlaced.*\n.*StockReserved.*\n.*PaymentCharged.*\n"
                            r".*OrderConfirmed", out),
                  "the history lists the confirmed order's events in order")
            check(re.search(r"^   order \S+ is CANCELLED: .*CARD_DECLINED", out, re.M),
                  "the declined order is CANCELLED with its reason")
            if "notifications" in ports:
                check("[order.confirmed]" in out, "the order's notification is shown")
            else:
                check("agora-notifications is not running" in out,
                      "the tour says plainly that notifications are not running")
            check("agora demo: tour done" in out, "the tour ends with its summary line")
            if chat:
                for i, what in enumerate(["Two people register", "makes a private room",
                                          "opens the realtime connection", "writes in the room",
                                          "answers and reacts", "shares a file",
                                          "sees bob\\S* online"], 9):
                    check(re.search(r"^%d\. .*%s" % (i, what), out, re.M),
                          "the chat tour prints step %d (%s)" % (i, what))
                check(re.search(r"socket: message.sent \"Hello Bob!.*\" \(push id \d+\)", out),
                      "the message arrives on Bob's WebSocket")
                check(re.search(r"\(a reply\) It did, thanks", out) and "x1]" in out,
                      "the history shows the reply and the reaction")
                check(re.search(r"socket: a message carrying tour-notes.txt \(text/plain, \d+ bytes\)",
                                out), "the file's message arrives on Bob's socket")
                check(re.search(r"got \"Agora tour \" \(bytes 0-10/\d+", out),
                      "Bob downloads the file's first bytes (206 with Content-Range)")
                check(re.search(r"bob\S* is online\n.*\n?.*bob\S* is offline", out),
                      "Bob online, then offline after closing")
                check("agora demo: chat tour done" in out, "the chat tour ends with its summary")

        # 5. status: every component, its pid, ready.
        r = agora("status")
        print(r.stdout, flush=True)
        check(r.returncode == 0, "status exits 0 when all are ready (got %d)" % r.returncode)
        if "gateway" in ports:
            check("breakers (gateway):" in r.stdout and "not available" not in r.stdout,
                  "status shows the gateway's breakers: %r" % r.stdout)
            # the demo came through the gateway's public API, which serves it back
            st, body = get("http://127.0.0.1:%d/api/v1/products?limit=1" % ports["gateway"])
            check(st == 200 and json.loads(body)["pagination"]["total"] == before,
                  "the gateway serves the catalogue (%s)" % st)
            # A shopper through the gateway: the cart finds the catalog
            # through the registry (AGORA_REGISTRY is set by agora up).
            gw = "http://127.0.0.1:%d/api/v1" % ports["gateway"]
            st, reg = send("POST", gw + "/auth/register",
                           {"username": "shopper", "email": "shopper@test.local",
                            "password": "shopper-password-1"})
            check(st == 201, "register through the gateway: %s %s" % (st, reg))
            product = json.loads(body)["data"][0]["id"]
            st, item = send("POST", gw + "/cart/items", {"productId": product, "quantity": 2},
                            token=reg.get("data", {}).get("token"))
            check(st in (200, 201) and item.get("data", {}).get("quantity") == 2,
                  "a cart line through the gateway, priced by the catalog: %s %s" % (st, item))
        for n in names:
            pid = read_pid(var, n)
            line = [l for l in r.stdout.splitlines() if l.split()[:1] == [n]]
            check(line and str(pid) in line[0] and "ready" in line[0] and str(ports[n]) in line[0],
                  "status shows %s with pid %s, port and ready: %r" % (n, pid, line))

        # 6. A crash: SIGKILL a service; it comes back with a new pid.
        old = read_pid(var, "users")
        os.kill(old, signal.SIGKILL)
        deadline = time.time() + 20 * SCALE
        new, ready = None, False
        while time.time() < deadline:
            new = read_pid(var, "users")
            if new and new != old:
                st, _ = get("http://127.0.0.1:%d/ready" % ports["users"])
                if st == 200:
                    ready = True
                    break
            time.sleep(0.2)
        check(ready and new != old, "users restarted after SIGKILL (old %s, new %s)" % (old, new))
        with open(os.path.join(var, "log", "agora.log")) as f:
            log = f.read()
        check("users exited (signal 9)" in log and "restarting in 1 s" in log,
              "the supervisor logged the restart")

        # 7. logs.
        r = agora("logs", "users", "-n", "20")
        check(r.returncode == 0 and '"service":"users"' in r.stdout,
              "agora logs users shows its lines")
        check("catalog" not in r.stdout.replace('"service":"users"', ""),
              "agora logs users shows only users")
        r = agora("logs", "-n", "200")
        check(re.search(r"^users +\| \{", r.stdout, re.M) and
              re.search(r"^catalog +\| \{", r.stdout, re.M),
              "agora logs interleaves every component with prefixes")
        r = agora("logs", "nosuch")
        check(r.returncode != 0 and "no component named nosuch" in r.stderr, "unknown log name")

        # 7b. agora chaos refuses a bad option (its runs: integration.checkout.chaos).
        r = agora("chaos", "--duration", "x")
        check(r.returncode == 2 and "--duration: expected a number" in r.stderr,
              "a bad --duration is refused: %r" % r.stderr)

        # 8. down: everything stops, no pid file left.
        pids = [read_pid(var, n) for n in names] + [sup]
        r = agora("down")
        check(r.returncode == 0, "down exits 0: %s %s" % (r.stdout, r.stderr))
        check(all(p and not alive(p) for p in pids), "no process left after down: %s" %
              [(p, alive(p)) for p in pids if p])
        left = os.listdir(os.path.join(var, "run"))
        check(left == [], "no pid file left after down: %s" % left)
        check(not any(listening(ports[n]) for n in names), "no port listening after down")
        r = agora("status")
        check(r.returncode != 0, "status exits non-zero when nothing runs")

        # 9. Foreground: prefixed output, SIGINT stops in reverse order, exit 0.
        p = subprocess.Popen([CLI, "--config", cfg_path, "--var", var, "up"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = []
        deadline = time.time() + 60 * SCALE
        while time.time() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            out.append(line)
            if "all ready" in line:
                break
        check(any(re.match(r"users +\| ", l) for l in out), "foreground prefixes users' lines")
        check(any("all ready" in l for l in out), "foreground up says all ready")
        fg_pids = [read_pid(var, n) for n in names]
        p.send_signal(signal.SIGINT)
        rest, _ = p.communicate(timeout=60 * SCALE)
        check(p.returncode == 0, "foreground up exits 0 after SIGINT (got %s)" % p.returncode)
        stopped = [l.split()[1] for l in rest.splitlines()
                   if l.startswith("agora: ") and " stopped (" in l]
        check(stopped == list(reversed(names)), "stopped in reverse order: %s" % stopped)
        check(all(pid and not alive(pid) for pid in fg_pids), "foreground: nothing left running")
        check("Sanitizer" not in rest, "foreground up: no sanitizer report")
        # The detached supervisor's stderr went to agora.log.
        with open(os.path.join(var, "log", "agora.log")) as f:
            log = f.read()
        check("Sanitizer" not in log, "the supervisor's log has no sanitizer report")
    finally:
        subprocess.run([CLI, "--config", cfg_path, "--var", var, "down"], capture_output=True,
                       timeout=120, env=env)
    if FAILURES:
        sys.exit("%d check(s) failed" % len(FAILURES))
    print("ok")


if __name__ == "__main__":
    main()
