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

import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import service  # noqa: E402
from service import ADMIN_EMAIL, ADMIN_PASSWORD, uid  # noqa: E402
import harness  # noqa: E402
from amqp_client import bus_url  # noqa: E402


def cloud_event(type_, subject, data):
    return service.cloud_event(type_, subject, data, source="agora/catalog")


class Inventory(service.ServiceTestCase):
    servers = ("inv", "users")
    under_test = "inv"

    @classmethod
    def setUpClass(cls):
        service.require("users", "inventory")
        cls.make_tmp("inventory")
        nats = bus_url()
        cls.signing_key = service.SigningKey("inventory-test-key-1")
        cls.users = service.start_users(cls.tmp, nats, cls.signing_key)
        cls.nats = cls.open_bus(nats, "agora.events.>")
        cls.inv = service.start("inventory", {
            "AGORA_DB": service.db_url(cls.tmp, "inventory"), "AGORA_BUS": nats,
            "AGORA_JWKS_URL": service.jwks_url(cls.users),
            "AGORA_BUS_BACKOFF": "200ms",
        })
        cls.admin = cls.login(ADMIN_EMAIL, ADMIN_PASSWORD)["token"]
        cls.customer = cls.register("carol")["token"]
        cls.service = cls.mint("svc-orders", "service", "orders@agora.local")

    # -- clients -------------------------------------------------------------

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
