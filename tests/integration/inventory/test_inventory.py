"""agora-inventory over HTTP, with a real agora-users (tokens verified
through its JWKS) and a real NATS: stock adjustments and their limits;
reservations all or nothing, idempotent by order id; commit and release,
their idempotency and their 409s; 20 concurrent reservations against 5
units (never oversold); the events on the bus (inventory.reserved,
reservation_failed, released, low_stock once per crossing); product.created
and product.deleted from the bus; 401, 403 and 422; /openapi.json.

Environment: AGORA_USERSD, AGORA_INVENTORYD (the binaries),
AGORA_TEST_NATS_URL (tests/harness/with-servers nats). With
AGORA_TEST_INVENTORY_STORE=postgres (and with-servers postgres nats) the
inventory runs on PostgreSQL in a database of its own.

agora-users signs with a key the test made (AGORA_JWT_KEYS), so that the
test can mint the `service` token the orders saga would hold.
"""

import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "http"))
import harness  # noqa: E402
from amqp_client import bus_client, bus_url  # noqa: E402

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402

USERSD = os.environ.get("AGORA_USERSD")
INVENTORYD = os.environ.get("AGORA_INVENTORYD")
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "admin-password-1"
KID = "inventory-test-key-1"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def inventory_db_url(tmp):
    if os.environ.get("AGORA_TEST_INVENTORY_STORE") != "postgres":
        return "sqlite:%s/inventory.db" % tmp
    base = os.environ["AGORA_TEST_POSTGRES_URL"]
    u = urllib.parse.urlparse(base)
    return urllib.parse.urlunparse(
        u._replace(path="/agora_inventory_test_%s" % uuid.uuid4().hex[:8]))


def cloud_event(type_, subject, data):
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "agora/catalog",
            "type": type_, "time": "2026-11-21T00:00:00.000Z", "subject": subject,
            "datacontenttype": "application/json", "data": data}


def uid(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


class Inventory(harness.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        if not USERSD or not INVENTORYD:
            raise RuntimeError("set AGORA_USERSD and AGORA_INVENTORYD (run through ctest)")
        cls.tmp = tempfile.mkdtemp(prefix="agora-inventory-")
        nats = bus_url()
        cls.signing_key = Ed25519PrivateKey.generate()
        seed = cls.signing_key.private_bytes(serialization.Encoding.Raw,
                                             serialization.PrivateFormat.Raw,
                                             serialization.NoEncryption())
        pub = cls.signing_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                        serialization.PublicFormat.Raw)
        keyfile = os.path.join(cls.tmp, "keys.json")
        with open(keyfile, "w") as f:
            json.dump({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": KID, "alg": "EdDSA",
                                 "use": "sig", "x": b64(pub), "d": b64(seed)}]}, f)
        cls.users = harness.Server({
            "AGORA_DB": "sqlite:%s/users.db" % cls.tmp, "AGORA_BUS": nats,
            "AGORA_ADMIN_EMAIL": ADMIN_EMAIL, "AGORA_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "AGORA_JWT_KEYS": keyfile,
        }, name="users", binary=USERSD).start(timeout=harness.scaled(20))
        jwks = "http://127.0.0.1:%d/.well-known/jwks.json" % cls.users.port
        cls.nats = bus_client(nats)
        cls.nats.sub("agora.events.>", 1)
        cls.inv = harness.Server({
            "AGORA_DB": inventory_db_url(cls.tmp), "AGORA_BUS": nats, "AGORA_JWKS_URL": jwks,
            "AGORA_BUS_BACKOFF": "200ms",
        }, name="inventory", binary=INVENTORYD).start(timeout=harness.scaled(20))
        cls.admin = cls.login(ADMIN_EMAIL, ADMIN_PASSWORD)["token"]
        cls.customer = cls.register("carol")["token"]
        cls.service = cls.forge({"sub": "svc-orders", "email": "orders@agora.local",
                                 "role": "service"})

    @classmethod
    def tearDownClass(cls):
        cls.nats.close()
        problems = []
        for srv in (cls.inv, cls.users):
            try:
                srv.stop(timeout=10)
            except harness.ServerError as e:
                problems.append(str(e))
        subprocess.run(["rm", "-rf", cls.tmp], check=False)
        if problems:
            raise AssertionError("\n".join(problems))

    # -- clients -------------------------------------------------------------

    @classmethod
    def raw(cls, srv, method, path, token=None, body=None, headers=None, timeout=20):
        h = list(headers or [])
        if token:
            h.append(("Authorization", "Bearer " + token))
        if body is not None and not isinstance(body, (str, bytes)):
            body = json.dumps(body)
        if body is not None and not any(k.lower() == "content-type" for k, _ in h):
            h.append(("Content-Type", "application/json"))
        with srv.connect(timeout=timeout) as c:
            return c.request(method, path, h, body)

    def call(self, method, path, token=None, body=None):
        return self.raw(self.inv, method, path, token, body)

    @classmethod
    def login(cls, email, password):
        r = cls.raw(cls.users, "POST", "/v1/auth/login", body={"email": email, "password": password})
        assert r.status == 200, r.body
        return {"token": r.json()["data"]["token"]}

    @classmethod
    def register(cls, name):
        name = "%s%s" % (name, uuid.uuid4().hex[:6])
        r = cls.raw(cls.users, "POST", "/v1/auth/register",
                    body={"username": name, "email": name + "@example.com",
                          "password": "password-123"})
        assert r.status == 201, r.body
        return {"token": r.json()["data"]["token"]}

    @classmethod
    def forge(cls, claims):
        now = int(time.time())
        c = {"iss": "agora-users", "aud": "agora", "iat": now, "exp": now + 3600}
        c.update(claims)
        head = b64(json.dumps({"alg": "EdDSA", "typ": "JWT", "kid": KID}).encode())
        body = b64(json.dumps(c).encode())
        sig = cls.signing_key.sign((head + "." + body).encode())
        return head + "." + body + "." + b64(sig)

    def adjust(self, pid, delta, status=None, **extra):
        body = {"delta": delta, "reason": "test"}
        body.update(extra)
        r = self.call("POST", "/v1/inventory/%s/adjust" % pid, self.admin, body)
        if status is not None:
            self.assertEqual(r.status, status, r.body)
        return r

    def stock(self, pid):
        return self.assertOk(self.call("GET", "/v1/inventory/" + pid, self.customer))

    def reserve(self, order, items, token=None):
        return self.call("POST", "/v1/reservations", token or self.service,
                         {"orderId": order, "items": [{"productId": p, "quantity": q}
                                                      for p, q in items]})

    def events(self, type_, subject, timeout=10.0, want=1):
        deadline = time.monotonic() + harness.scaled(timeout)
        while True:
            found = self.nats.wait_for(lambda e: e.get("type") == type_ and e.get("subject") == subject,
                                       timeout=0.5)
            if len(found) >= want or time.monotonic() > deadline:
                return [m[1] for m in found]

    def wait_until(self, fn, timeout=10.0, what="condition"):
        deadline = time.monotonic() + harness.scaled(timeout)
        while not fn():
            if time.monotonic() > deadline:
                self.fail("timed out waiting for " + what)
            time.sleep(0.1)

    # -- tests ---------------------------------------------------------------

    def test_adjust_and_its_limits(self):
        pid = uid("p")
        self.assertEqual(self.call("GET", "/v1/inventory/" + pid, self.customer).status, 404)
        # A negative delta on an unknown product cannot create it.
        self.adjust(pid, -1, 409)
        created = self.assertOk(self.adjust(pid, 10), 201)
        self.assertEqual((created["quantity"], created["reserved"], created["available"],
                          created["lowStockLevel"]), (10, 0, 10, 5))
        self.assertOk(self.adjust(pid, -3))
        self.assertEqual(self.stock(pid)["quantity"], 7)
        r = self.adjust(pid, -8, 409)
        self.assertEqual(r.json()["error"]["code"], "INSUFFICIENT_STOCK")
        self.assertEqual(self.stock(pid)["quantity"], 7)
        # Never below what is reserved.
        self.assertEqual(self.reserve(uid("o"), [(pid, 4)]).status, 201)
        self.adjust(pid, -4, 409)
        s = self.assertOk(self.adjust(pid, -3))
        self.assertEqual((s["quantity"], s["reserved"], s["available"]), (4, 4, 0))
        s = self.assertOk(self.adjust(pid, 2, lowStockLevel=1, location="shelf-9"))
        self.assertEqual((s["quantity"], s["lowStockLevel"], s["location"]), (6, 1, "shelf-9"))
        # Bad bodies.
        for body in ({"delta": 0, "reason": "x"}, {"delta": 1}, {"reason": "x"},
                     {"delta": "3", "reason": "x"}, {"delta": 1.5, "reason": "x"},
                     {"delta": 1, "reason": "x", "price": 3}, [1]):
            r = self.call("POST", "/v1/inventory/%s/adjust" % pid, self.admin, body)
            self.assertEnvelopeError(r, 422, "VALIDATION_FAILED")
        self.assertEqual(self.stock(pid)["quantity"], 6)
        # The admin list sees it.
        r = self.call("GET", "/v1/inventory?limit=100", self.admin)
        self.assertEqual(r.status, 200, r.body)
        body = r.json()
        self.assertIn(pid, [s["productId"] for s in body["data"]])
        self.assertGreaterEqual(body["pagination"]["total"], 1)
        self.assertEnvelopeError(self.call("GET", "/v1/inventory?limit=0", self.admin), 422)

    def test_auth(self):
        pid = uid("p")
        self.adjust(pid, 3, 201)
        self.assertEnvelopeError(self.call("GET", "/v1/inventory/" + pid), 401)
        self.assertEnvelopeError(self.call("GET", "/v1/inventory", self.customer), 403)
        self.assertEnvelopeError(self.call("POST", "/v1/inventory/%s/adjust" % pid, self.customer,
                                           {"delta": 1, "reason": "x"}), 403)
        self.assertEnvelopeError(self.call("POST", "/v1/inventory/%s/adjust" % pid, self.service,
                                           {"delta": 1, "reason": "x"}), 403)
        self.assertEnvelopeError(self.reserve(uid("o"), [(pid, 1)], self.customer), 403)
        self.assertEnvelopeError(self.reserve(uid("o"), [(pid, 1)], "not-a-token"), 401)
        self.assertEnvelopeError(self.call("POST", "/v1/reservations/x/commit", self.customer), 403)
        self.assertEnvelopeError(self.call("POST", "/v1/reservations/x/release"), 401)
        self.assertEnvelopeError(self.call("GET", "/v1/reservations/x", self.customer), 403)
        self.assertEqual(self.stock(pid)["reserved"], 0)
        # An admin may reserve too.
        self.assertEqual(self.reserve(uid("o"), [(pid, 1)], self.admin).status, 201)

    def test_reserve_bad_bodies(self):
        pid = uid("p")
        self.adjust(pid, 3, 201)
        for body in ({}, {"orderId": "o1"}, {"orderId": "o1", "items": []},
                     {"orderId": "o1", "items": [{"productId": pid}]},
                     {"orderId": "o1", "items": [{"productId": pid, "quantity": 0}]},
                     {"orderId": "o1", "items": [{"productId": pid, "quantity": -2}]},
                     {"orderId": "o 1", "items": [{"productId": pid, "quantity": 1}]},
                     {"orderId": "o1", "items": [{"productId": pid, "quantity": 1},
                                                 {"productId": pid, "quantity": 1}]},
                     {"orderId": "o1", "items": [{"productId": pid, "quantity": 1}], "x": 1}):
            r = self.call("POST", "/v1/reservations", self.service, body)
            self.assertEnvelopeError(r, 422, "VALIDATION_FAILED")
        self.assertEqual(self.call("GET", "/v1/reservations/o1", self.service).status, 404)
        self.assertEqual(self.stock(pid)["reserved"], 0)

    def test_reserve_all_or_nothing_and_idempotency(self):
        a, b, ghost = uid("a"), uid("b"), uid("ghost")
        self.adjust(a, 10, 201)
        self.adjust(b, 2, 201)
        order = uid("o")
        r = self.reserve(order, [(a, 3), (b, 5), (ghost, 1)])
        self.assertEnvelopeError(r, 409, "INSUFFICIENT_STOCK")
        short = {d["productId"]: d for d in r.json()["error"]["details"]}
        self.assertEqual(set(short), {b, ghost})
        self.assertEqual((short[b]["requested"], short[b]["available"]), (5, 2))
        self.assertEqual(self.stock(a)["reserved"], 0)
        self.assertEqual(self.stock(b)["reserved"], 0)
        # A repeat gets the same answer, even though stock would now suffice.
        self.adjust(b, 10, 200)
        r2 = self.reserve(order, [(ghost, 1), (b, 5), (a, 3)])
        self.assertEnvelopeError(r2, 409, "INSUFFICIENT_STOCK")
        self.assertEqual(r2.json()["error"]["details"], r.json()["error"]["details"])
        failed = self.events("inventory.reservation_failed", order)
        self.assertEqual(len(failed), 1)
        self.assertEqual(failed[0]["source"], "agora/inventory")
        self.assertEqual(failed[0]["specversion"], "1.0")
        self.assertEqual(failed[0]["data"]["orderId"], order)

        ok = uid("o")
        d = self.assertOk(self.reserve(ok, [(a, 3), (b, 5)]), 201)
        self.assertEqual(d["state"], "RESERVED")
        self.assertEqual(sorted((i["productId"], i["quantity"]) for i in d["items"]),
                         sorted([(a, 3), (b, 5)]))
        d2 = self.assertOk(self.reserve(ok, [(b, 5), (a, 3)]), 201)
        self.assertEqual(d2["state"], "RESERVED")
        self.assertEqual(self.stock(a)["reserved"], 3)
        self.assertEqual(self.stock(b)["reserved"], 5)
        r = self.reserve(ok, [(a, 4), (b, 5)])
        self.assertEnvelopeError(r, 409, "IDEMPOTENCY_CONFLICT")
        self.assertEqual(self.stock(a)["reserved"], 3)
        reserved = self.events("inventory.reserved", ok)
        self.assertEqual(len(reserved), 1)
        self.assertEqual(sorted((i["productId"], i["quantity"])
                                for i in reserved[0]["data"]["items"]), sorted([(a, 3), (b, 5)]))
        self.assertEqual(self.assertOk(self.call("GET", "/v1/reservations/" + ok,
                                                 self.service))["state"], "RESERVED")

    def test_commit_and_release(self):
        pid = uid("p")
        self.adjust(pid, 20, 201)
        c, r = uid("oc"), uid("or")
        self.assertOk(self.reserve(c, [(pid, 4)]), 201)
        self.assertOk(self.reserve(r, [(pid, 6)]), 201)
        s = self.stock(pid)
        self.assertEqual((s["quantity"], s["reserved"], s["available"]), (20, 10, 10))
        d = self.assertOk(self.call("POST", "/v1/reservations/%s/commit" % c, self.service))
        self.assertEqual(d["state"], "COMMITTED")
        s = self.stock(pid)
        self.assertEqual((s["quantity"], s["reserved"], s["available"]), (16, 6, 10))
        d = self.assertOk(self.call("POST", "/v1/reservations/%s/commit" % c, self.service))
        self.assertEqual(d["state"], "COMMITTED")
        self.assertEqual(self.stock(pid)["quantity"], 16)
        self.assertEnvelopeError(self.call("POST", "/v1/reservations/%s/release" % c,
                                           self.service), 409)
        d = self.assertOk(self.call("POST", "/v1/reservations/%s/release" % r, self.service))
        self.assertEqual(d["state"], "RELEASED")
        s = self.stock(pid)
        self.assertEqual((s["quantity"], s["reserved"], s["available"]), (16, 0, 16))
        self.assertOk(self.call("POST", "/v1/reservations/%s/release" % r, self.service))
        self.assertEqual(self.stock(pid)["reserved"], 0)
        self.assertEnvelopeError(self.call("POST", "/v1/reservations/%s/commit" % r,
                                           self.service), 409)
        self.assertEqual(self.stock(pid)["quantity"], 16)
        self.assertEnvelopeError(self.call("POST", "/v1/reservations/nope/commit", self.service),
                                 404)
        self.assertEnvelopeError(self.call("POST", "/v1/reservations/nope/release", self.service),
                                 404)
        # A committed reservation is returned (an order cancelled after it
        # was confirmed): its units come back into stock, once.
        self.assertEnvelopeError(self.call("POST", "/v1/reservations/%s/return" % r,
                                           self.service), 409)
        d = self.assertOk(self.call("POST", "/v1/reservations/%s/return" % c, self.service))
        self.assertEqual(d["state"], "RETURNED")
        self.assertEqual(self.stock(pid)["quantity"], 20)
        d = self.assertOk(self.call("POST", "/v1/reservations/%s/return" % c, self.service))
        self.assertEqual(d["state"], "RETURNED")
        self.assertEqual(self.stock(pid)["quantity"], 20)
        self.assertEnvelopeError(self.call("POST", "/v1/reservations/%s/commit" % c,
                                           self.service), 409)
        self.assertEnvelopeError(self.call("POST", "/v1/reservations/%s/release" % c,
                                           self.service), 409)
        returned = self.events("inventory.released", c)
        self.assertEqual(len(returned), 1)
        self.assertTrue(returned[0]["data"]["returned"])
        released = self.events("inventory.released", r)
        self.assertEqual(len(released), 1)
        self.assertFalse(released[0]["data"]["returned"])
        self.assertEqual(released[0]["data"]["items"], [{"productId": pid, "quantity": 6}])
        # No second released event from the repeat.
        time.sleep(0.5)
        self.assertEqual(len(self.events("inventory.released", r, timeout=0.5)), 1)

    def test_concurrent_reservations_never_oversell(self):
        pid = uid("hot")
        self.adjust(pid, 5, 201, lowStockLevel=0)
        results = [None] * 20
        start = threading.Barrier(20)

        def worker(i):
            start.wait()
            try:
                results[i] = self.reserve("conc-%s-%d" % (pid, i), [(pid, 1)]).status
            except Exception as e:  # noqa: BLE001
                results[i] = repr(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(harness.scaled(30))
        self.assertEqual(sorted(results).count(201), 5, results)
        self.assertEqual(sorted(results).count(409), 15, results)
        s = self.stock(pid)
        self.assertEqual((s["quantity"], s["reserved"], s["available"]), (5, 5, 0))

    def test_low_stock_once_per_crossing(self):
        pid = uid("low")
        self.adjust(pid, 8, 201)  # level 5
        for i in range(5):  # available 7, 6, 5 (crosses), 4, 3
            self.assertOk(self.reserve(uid("o"), [(pid, 1)]), 201)
        low = self.events("inventory.low_stock", pid)
        self.assertEqual(len(low), 1)
        self.assertEqual(low[0]["data"]["available"], 5)
        self.assertEqual(low[0]["data"]["lowStockLevel"], 5)
        time.sleep(0.5)
        self.assertEqual(len(self.events("inventory.low_stock", pid, timeout=0.5)), 1)
        # Back above the level, then down again: a second alert.
        self.adjust(pid, 10, 200)  # available 13
        self.assertOk(self.reserve(uid("o"), [(pid, 8)]), 201)  # available 5
        self.assertEqual(len(self.events("inventory.low_stock", pid, want=2)), 2)

    def test_product_events_from_the_bus(self):
        p1, p2 = uid("cat"), uid("cat")
        ev = cloud_event("product.created", p1, {"productId": p1, "name": "Bus Lamp",
                                                  "stock": 12, "isActive": True})
        self.nats.pub("agora.events.product.created", ev)
        self.nats.pub("agora.events.product.created", ev)  # a redelivery changes nothing
        self.nats.pub("agora.events.product.created",
                      cloud_event("product.created", p2, {"productId": p2, "name": "No stock"}))

        def known(pid):
            return self.call("GET", "/v1/inventory/" + pid, self.customer).status == 200
        self.wait_until(lambda: known(p1) and known(p2), what="product.created to create stock")
        self.assertEqual(self.stock(p1)["quantity"], 12)
        self.assertEqual(self.stock(p2)["quantity"], 0)
        self.assertOk(self.reserve(uid("o"), [(p1, 2)]), 201)
        self.nats.pub("agora.events.product.deleted",
                      cloud_event("product.deleted", p1, {"productId": p1}))
        self.wait_until(lambda: self.stock(p1)["deleted"], what="product.deleted to mark stock")
        self.assertEqual(self.stock(p1)["reserved"], 2)
        self.assertEnvelopeError(self.reserve(uid("o"), [(p1, 1)]), 409, "INSUFFICIENT_STOCK")

    def test_openapi_describes_every_route(self):
        r = self.call("GET", "/openapi.json")
        self.assertEqual(r.status, 200, r.body)
        paths = r.json()["paths"]
        for p in ("/v1/inventory", "/v1/inventory/{productId}",
                  "/v1/inventory/{productId}/adjust", "/v1/reservations",
                  "/v1/reservations/{orderId}", "/v1/reservations/{orderId}/commit",
                  "/v1/reservations/{orderId}/return",
                  "/v1/reservations/{orderId}/release"):
            self.assertIn(p, paths)


if __name__ == "__main__":
    harness.main()
