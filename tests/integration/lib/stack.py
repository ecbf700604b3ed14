"""The system for a test, shared by every test that runs more than one
service (checkout, chat, cli): agora-users, catalog, inventory, payments,
cart, orders, notifications, rooms, messages and files (those whose binary
the test run names in AGORA_<NAME>D; a test may ask for a subset) behind
agora-gateway, on free ports,
with a private temporary directory, each service's gRPC server (if it has
one) on a free port of its own that its peers are told (AGORA_GRPC_PORT,
AGORA_<NAME>_GRPC_URL), on the store and bus the test run asks
for (AGORA_TEST_STACK_STORE=postgres, AGORA_TEST_STACK_BUS=rabbitmq; the
servers themselves come from tests/harness/with-servers).

Every call in the tests goes through the gateway, as a client's would;
admin-only reads (payments, inventory) go there too with the admin's token.

A test class that also watches the events its services publish starts with
start_with_bus (the stack and a broker client subscribed to a subject) and
ends with stop_with_bus.
"""

import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "http"))
import harness  # noqa: E402
from amqp_client import bus_client  # noqa: E402
# Shared with the single-service tests (service.py); also st.binary() etc.
from service import ADMIN_EMAIL, ADMIN_PASSWORD, binary, free_port, require  # noqa: E402,F401
CLIENT_SECRET = "orders-test-secret"
SERVICES = ["users", "catalog", "inventory", "payments", "cart", "orders", "notifications",
            "rooms", "messages", "files", "analytics"]
SHOP = SERVICES[:7]  # what a checkout needs (the default)
CHAT = ["users", "rooms", "messages", "files", "notifications"]


def start_with_bus(tag, services, subject, env=None):
    """A started Stack of `services` (their binaries and the gateway's
    required) and a client of its broker subscribed to `subject` (sid 1):
    (stack, bus). End with stop_with_bus."""
    require(*services, "gateway")
    s = Stack(tag, env=env, services=services).start()
    bus = bus_client(s.bus)
    bus.sub(subject, 1)
    return s, bus


def stop_or_raise(s):
    """Stops stack `s`; raises with what the servers reported (a crash, a
    sanitizer's finding) if anything."""
    problems = s.stop()
    if problems:
        raise AssertionError("\n".join(problems))


def stop_with_bus(s, bus):
    """Closes `bus`, then stop_or_raise(s)."""
    bus.close()
    stop_or_raise(s)


class Reply:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body) if self.body else None

    @property
    def data(self):
        return self.json()["data"]

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return "<%d %s>" % (self.status, self.body[:400])


class Stack:
    def __init__(self, tag, env=None, services=None):
        self.tmp = tempfile.mkdtemp(prefix="agora-%s-" % tag)
        self.store = os.environ.get("AGORA_TEST_STACK_STORE", "sqlite")
        self.bus_kind = os.environ.get("AGORA_TEST_STACK_BUS", "nats")
        self.bus = (os.environ["AGORA_TEST_AMQP_URL"] if self.bus_kind == "rabbitmq"
                    else os.environ["AGORA_TEST_NATS_URL"])
        self.extra = dict(env or {})
        self.names = [s for s in (services or SHOP) if binary(s)]
        self.dbs = {}
        self.servers = {}
        self.ports = {}
        self.grpc_ports = {}  # every service's AGORA_GRPC_PORT (those without gRPC ignore it)
        self.gateway = None
        self.expect_dead_letters = False  # a suite that sends bad events on purpose sets it

    def db_url(self, name):
        if name not in self.dbs:
            if self.store == "postgres":
                u = urllib.parse.urlparse(os.environ["AGORA_TEST_POSTGRES_URL"])
                self.dbs[name] = urllib.parse.urlunparse(
                    u._replace(path="/agora_%s_%s" % (name, uuid.uuid4().hex[:8])))
            else:
                self.dbs[name] = "sqlite:%s/%s.db" % (self.tmp, name)
        return self.dbs[name]

    def env_for(self, name):
        env = {
            "AGORA_DB": self.db_url(name), "AGORA_BUS": self.bus,
            "AGORA_JWKS_URL": "http://127.0.0.1:%d/.well-known/jwks.json" % self.ports["users"],
            "AGORA_JWT_LEEWAY": "0s",
        }
        for other, port in self.ports.items():
            env["AGORA_%s_URL" % other.upper()] = "http://127.0.0.1:%d" % port
        for other, port in self.grpc_ports.items():
            env["AGORA_%s_GRPC_URL" % other.upper()] = "http://127.0.0.1:%d" % port
        if name in self.grpc_ports:
            env["AGORA_GRPC_PORT"] = str(self.grpc_ports[name])
        if name == "users":
            env.update({"AGORA_ADMIN_EMAIL": ADMIN_EMAIL, "AGORA_ADMIN_PASSWORD": ADMIN_PASSWORD,
                        "AGORA_SERVICE_CLIENTS": "orders:" + CLIENT_SECRET})
        if name == "orders":
            env.update({"AGORA_CLIENT_SECRET": CLIENT_SECRET})
        if name == "notifications":
            env.update({"AGORA_MAIL_DIR": os.path.join(self.tmp, "mail")})
        if name == "files":
            env.update({"AGORA_FILES_DIR": os.path.join(self.tmp, "files")})
        if "traces" in self.ports and name != "traces":  # export spans to the trace store
            env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:%d" % self.ports["traces"],
                        "OTEL_BSP_SCHEDULE_DELAY": "100"})
        for k, v in self.extra.items():
            if k.startswith("AGORA_%s_" % name.upper()) or not any(
                    k.startswith("AGORA_%s_" % s.upper()) for s in SERVICES + ["traces"]):
                env[k] = v
        return env

    def start(self):
        # Ports first, so that every service knows every other's URL.
        for name in self.names + ["gateway"]:
            self.ports[name] = free_port()
        for name in self.names:
            self.grpc_ports[name] = free_port()
        for name in self.names:
            self.start_one(name)
        with open(os.path.join(ROOT, "config", "gateway.json")) as f:
            cfg = json.load(f)
        for lim in cfg.get("rateLimits", {}).values():  # tests are not an abuse
            for scope in lim.values():
                scope["rate"], scope["burst"] = 100000, 100000
        path = os.path.join(self.tmp, "gateway.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        env = self.env_for("gateway")
        env.update({"PORT": str(self.ports["gateway"]), "AGORA_GATEWAY_CONFIG": path,
                    "AGORA_WEB_DIR": os.path.join(ROOT, "web")})
        env.pop("AGORA_DB")
        self.gateway = harness.Server(env, name="gateway", binary=binary("gateway")).start(
            timeout=harness.scaled(20))
        return self

    def start_one(self, name):
        env = self.env_for(name)
        env["PORT"] = str(self.ports[name])
        srv = harness.Server(env, name=name, binary=binary(name))
        self.servers[name] = srv.start(timeout=harness.scaled(30))
        return srv

    def kill(self, name):
        self.servers[name].kill()

    def restart(self, name, routed=True):
        """Starts `name` again (stopping it first if it runs); with `routed`,
        returns once the gateway sends requests to it again (its health
        check may have marked the instance down while it was away)."""
        srv = self.servers[name]
        if srv.alive():
            srv.stop(timeout=10)
        srv = self.start_one(name)
        if routed and self.gateway is not None:
            wait_until(lambda: self.routed(name), "the gateway to route to %s again" % name,
                       timeout=30)
        return srv

    def routed(self, name):
        """Whether the gateway has a healthy, not ejected instance of `name`."""
        r = self.call("GET", "/admin/upstreams")
        if r.status != 200:
            return False
        svc = r.json()["data"]["services"].get(name, {})
        return any(i["healthy"] and not i["ejected"] for i in svc.get("instances", []))

    def dead_letters(self):
        """What the running services dead-lettered, as "service: type (reason)"
        lines. A suite that sends no malformed event expects none: one here
        means two services disagree on an event's contract."""
        out = []
        if not self.gateway or not self.gateway.alive() or "users" not in self.servers:
            return out
        try:
            admin = self.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        except (AssertionError, OSError):
            return out
        for name in self.names:
            srv = self.servers.get(name)
            if srv is None or not srv.alive():
                continue
            try:
                r = self.call("GET", "/admin/dead-letters?limit=100", admin["token"],
                              port=self.ports[name], timeout=10)
            except OSError:
                continue
            if r.status != 200:
                continue
            for d in r.json().get("data", []):
                out.append("%s dead-lettered %s: %s" % (name, d.get("type"), d.get("reason")))
        return out

    def event_contract(self):
        """What the running services published breaks the event rules: a type
        published by two services (one producer per type), or a type that
        docs/events.md does not describe."""
        by_type = {}
        for name in self.names:
            srv = self.servers.get(name)
            if srv is None or not srv.alive():
                continue
            try:
                r = self.call("GET", "/metrics", port=self.ports[name], timeout=10)
            except OSError:
                continue
            if r.status != 200:
                continue
            m = harness.parse_metrics(r.body.decode())
            for (n, labels), v in m.items():
                ls = dict(labels)
                if n == "agora_bus_published_total" and v > 0 and "type" in ls:
                    by_type.setdefault(ls["type"], set()).add(name)
        out = []
        documented = documented_producers()
        for t, producers in sorted(by_type.items()):
            if len(producers) > 1:
                out.append("%s is published by %s: one producer per type" %
                           (t, " and ".join(sorted(producers))))
            for p in sorted(producers):
                if documented.get(t) != p:
                    out.append("%s is published by %s; docs/events.md names %s" %
                               (t, p, documented.get(t, "no producer")))
        return out

    def stop(self):
        problems = self.event_contract()
        if not self.expect_dead_letters:
            problems += self.dead_letters()
        for srv in [self.gateway] + [self.servers[n] for n in reversed(self.names)
                                     if n in self.servers]:
            if srv is None:
                continue
            try:
                srv.stop(timeout=15)
            except harness.ServerError as e:
                problems.append(str(e))
        subprocess.run(["rm", "-rf", self.tmp], check=False)
        return problems

    # -- calls ----------------------------------------------------------------------------

    def call(self, method, path, token=None, body=None, headers=None, port=None, timeout=30):
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection("127.0.0.1", port or self.ports["gateway"],
                                          timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            return Reply(r.status, r.getheaders(), r.read())
        finally:
            conn.close()

    def ok(self, reply, status=200):
        if reply.status != status:
            raise AssertionError("expected %d, got %r" % (status, reply))
        return reply.json().get("data")

    def login(self, email, password):
        d = self.ok(self.call("POST", "/api/v1/auth/login",
                              body={"email": email, "password": password}))
        return {"token": d["token"], "id": d["user"]["id"]}

    def register(self, name):
        name = "%s%s" % (name, uuid.uuid4().hex[:6])
        d = self.ok(self.call("POST", "/api/v1/auth/register",
                              body={"username": name, "email": name + "@example.com",
                                    "password": "password-123"}), 201)
        return {"token": d["token"], "id": d["user"]["id"], "email": name + "@example.com"}

    def product(self, admin, price, stock, name=None):
        self.call("POST", "/api/v1/categories", admin["token"],
                  {"name": "Things", "slug": "things"})
        d = self.ok(self.call("POST", "/api/v1/products", admin["token"],
                              {"name": name or "Thing " + uuid.uuid4().hex[:6],
                               "category": "things", "priceCents": price, "stock": stock}), 201)
        pid = d["id"]
        wait_until(lambda: self.call("GET", "/api/v1/inventory/" + pid, admin["token"]).status
                   == 200, "stock for a new product")
        return pid

    def stock(self, admin, pid):
        return self.ok(self.call("GET", "/api/v1/inventory/" + pid, admin["token"]))

    def order(self, user, items=None, method=None, key=None, wait=None, from_cart=False,
              status=201):
        body = {"shippingAddress": address(), "paymentMethod": method or card("4242424242424242")}
        if from_cart:
            body["fromCart"] = True
        else:
            body["items"] = [{"productId": p, "quantity": q} for p, q in items]
        headers = {"Idempotency-Key": key or uuid.uuid4().hex}
        if wait:
            headers["Prefer"] = "wait=%d" % wait
        r = self.call("POST", "/api/v1/orders", user["token"], body, headers)
        if status is not None and r.status != status:
            raise AssertionError("order: expected %d, got %r" % (status, r))
        return r

    def get_order(self, user, oid):
        return self.ok(self.call("GET", "/api/v1/orders/" + oid, user["token"]))

    def wait_final(self, user, oid, timeout=60):
        final = {}

        def done():
            final["o"] = self.get_order(user, oid)
            return final["o"]["status"] in ("CONFIRMED", "CANCELLED")
        wait_until(done, "order %s to end" % oid, timeout)
        return final["o"]

    def payments_of(self, admin, oid):
        return self.ok(self.call("GET", "/api/v1/payments?orderId=" + oid, admin["token"]))


def address():
    return {"name": "Ada Lovelace", "line1": "12 St James's Square", "city": "London",
            "postalCode": "SW1Y 4JH", "country": "GB"}


def card(number):
    return {"type": "card", "number": number, "expMonth": 12,
            "expYear": time.gmtime().tm_year + 2, "cvc": "123"}


def documented_producers():
    """{type: service} from the type tables of docs/events.md (first cell:
    the types in backticks; second: the producer, agora-<service>)."""
    out = {}
    with open(os.path.join(ROOT, "docs", "events.md")) as f:
        for line in f:
            cells = line.split("|")
            if not line.startswith("| `") or len(cells) < 3:
                continue
            m = re.match(r"\s*agora-([a-z]+)", cells[2])
            for t in re.findall(r"`([a-z_]+\.[a-z_]+)`", cells[1]):
                out[t] = m.group(1) if m else None
    return out


def wait_until(fn, what, timeout=30):
    deadline = time.time() + harness.scaled(timeout)
    last = None
    while time.time() < deadline:
        try:
            if fn():
                return
        except (AssertionError, OSError, KeyError, TypeError, ValueError) as e:
            last = e
        time.sleep(0.1)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))

