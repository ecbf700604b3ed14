"""agora-cart over HTTP, with a real agora-users (tokens, verified through its
JWKS; user.deleted), a real agora-catalog (products, prices) and a real NATS:
adding, changing, removing and clearing lines; limits; persistence across a
restart of the cart; catalog's current prices; unknown and soft-deleted
products; catalog stopped or hung (stale reads from the stored snapshot, 503
with Retry-After for writes, the "catalog" breaker opening, answering fast
and closing again); order.confirmed with fromCart and user.deleted from the
bus; bad input and forged tokens; /openapi.json.

Environment: AGORA_USERSD, AGORA_CATALOGD, AGORA_CARTD (the binaries),
AGORA_TEST_NATS_URL (tests/harness/with-servers nats). With
AGORA_TEST_CART_STORE=postgres (and with-servers postgres nats) the cart runs
on PostgreSQL in a database of its own.

agora-users signs with a key the test made (AGORA_JWT_KEYS), so that the test
can also forge what an attacker cannot: expired tokens and tokens with other
algorithms. That part needs python3-cryptography (installed by
scripts/install-deps); without it the test fails rather than skip.
"""

import os
import signal
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import service  # noqa: E402
from service import ADMIN_EMAIL, ADMIN_PASSWORD, b64, cloud_event  # noqa: E402
import harness  # noqa: E402
from amqp_client import bus_url  # noqa: E402

BREAKER_OPEN_S = 0.5


class Cart(service.ServiceTestCase):
    servers = ("cart", "catalog", "users")
    under_test = "cart"

    @classmethod
    def setUpClass(cls):
        service.require("users", "catalog", "cart")
        cls.make_tmp("cart")
        nats = bus_url()  # NATS, or RabbitMQ with AGORA_TEST_BUS=amqp
        # Our own key: the forged-token cases need it.
        cls.signing_key = service.SigningKey("cart-test-key-1")
        cls.users = service.start_users(cls.tmp, nats, cls.signing_key)
        jwks = service.jwks_url(cls.users)
        # The catalog keeps its port across restarts: the cart is configured with it.
        cls.catalog_port = service.free_port()
        cls.catalog_env = {
            "AGORA_DB": "sqlite:%s/catalog.db" % cls.tmp, "AGORA_BUS": nats,
            "AGORA_JWKS_URL": jwks, "PORT": str(cls.catalog_port),
        }
        cls.catalog = cls.start_catalog()
        cls.cart_env = {
            "AGORA_DB": service.db_url(cls.tmp, "cart"), "AGORA_BUS": nats, "AGORA_JWKS_URL": jwks,
            "AGORA_CATALOG_URL": "http://127.0.0.1:%d" % cls.catalog_port,
            "AGORA_CART_CATALOG_TIMEOUT": "1s",
            "AGORA_CART_BREAKER_OPEN": "%dms" % int(BREAKER_OPEN_S * 1000),
            "AGORA_CART_BREAKER_MAX_OPEN": "2s",
            "AGORA_JWT_LEEWAY": "0s",
            "AGORA_BUS_BACKOFF": "200ms",
        }
        cls.cart = service.start("cart", cls.cart_env)
        cls.nats = cls.open_bus(nats)
        cls.admin = cls.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        cls.alice = cls.register("alice")
        cls.bob = cls.register("bob")
        r = cls.raw(cls.catalog, "POST", "/v1/categories", cls.admin["token"],
                    {"name": "Things", "slug": "things"})
        assert r.status == 201, r.body

    @classmethod
    def start_catalog(cls):
        deadline = time.monotonic() + harness.scaled(10)
        while True:  # the port may linger for a moment after a stop
            try:
                return service.start("catalog", cls.catalog_env)
            except harness.ServerError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def setUp(self):
        # A test that stopped or froze catalog brings it back for the next one.
        if not self.catalog.alive() or self.catalog.stopped:
            type(self).catalog = self.start_catalog()

    # -- clients -------------------------------------------------------------

    def product(self, name, price, currency=None):
        spec = {"name": name, "category": "things", "priceCents": price, "stock": 10}
        if currency:
            spec["currency"] = currency
        return self.assertOk(self.raw(self.catalog, "POST", "/v1/products", self.admin["token"],
                                      spec), 201)["id"]

    def set_price(self, pid, price):
        self.assertOk(self.raw(self.catalog, "PUT", "/v1/products/" + pid, self.admin["token"],
                               {"priceCents": price}))

    def get_cart(self, user):
        return self.assertOk(self.call("GET", "/v1/cart", user["token"]))

    def add(self, user, pid, qty=None, status=201):
        body = {"productId": pid}
        if qty is not None:
            body["quantity"] = qty
        return self.assertOk(self.call("POST", "/v1/cart/items", user["token"], body), status)

    def lines(self, user):
        return {l["productId"]: l["quantity"] for l in self.get_cart(user)["items"]}

    def breaker(self):
        d = self.assertOk(self.call("GET", "/v1/admin/breakers", self.admin["token"]))
        return {b["name"]: b for b in d}["catalog"]

    def claims(self, user, **over):
        return service.claims(user["id"], user["email"], ttl=600, **over)

    def forge(self, claims, **kw):
        return self.signing_key.jwt(claims, **kw)

    # -- tests ---------------------------------------------------------------

    def test_add_update_remove_clear(self):
        u = self.register("shopper")
        mug = self.product("Mug", 1200)
        lamp = self.product("Lamp", 4500)
        book = self.product("Livre", 990, "EUR")
        self.assertEqual(self.get_cart(u), {"items": [], "subtotals": [], "itemCount": 0,
                                            "pricesMayBeStale": False})
        line = self.add(u, mug, 2)
        self.assertEqual(line, {"productId": mug, "name": "Mug", "priceCents": 1200,
                                "currency": "USD", "quantity": 2, "lineTotalCents": 2400,
                                "available": True})
        # Adding again adds to the line (200: no new line).
        self.assertEqual(self.add(u, mug, 3, status=200)["quantity"], 5)
        self.assertEqual(self.add(u, lamp)["quantity"], 1)  # quantity defaults to 1
        self.add(u, book, 2)
        cart = self.get_cart(u)
        self.assertEqual([l["productId"] for l in cart["items"]], [mug, lamp, book])
        self.assertEqual(cart["itemCount"], 8)
        self.assertFalse(cart["pricesMayBeStale"])
        self.assertEqual(cart["subtotals"], [{"currency": "USD", "subtotalCents": 5 * 1200 + 4500},
                                             {"currency": "EUR", "subtotalCents": 1980}])
        # Set a quantity.
        line = self.assertOk(self.call("PUT", "/v1/cart/items/" + mug, u["token"], {"quantity": 1}))
        self.assertEqual((line["quantity"], line["lineTotalCents"]), (1, 1200))
        # Per-line limit: 99; going past it changes nothing.
        self.assertOk(self.call("PUT", "/v1/cart/items/" + lamp, u["token"], {"quantity": 99}))
        body = self.assertEnvelopeError(self.call("POST", "/v1/cart/items", u["token"],
                                                  {"productId": lamp, "quantity": 1}),
                                        422, "VALIDATION_FAILED")
        self.assertEqual([d["field"] for d in body["error"]["details"]], ["quantity"])
        self.assertEqual(self.lines(u)[lamp], 99)
        # Remove a line; removing it again is 404.
        self.assertEqual(self.call("DELETE", "/v1/cart/items/" + book, u["token"]).status, 204)
        self.assertEnvelopeError(self.call("DELETE", "/v1/cart/items/" + book, u["token"]),
                                 404, "NOT_FOUND")
        self.assertEnvelopeError(self.call("PUT", "/v1/cart/items/" + book, u["token"],
                                           {"quantity": 2}), 404, "NOT_FOUND")
        self.assertEqual(self.lines(u), {mug: 1, lamp: 99})
        # Clear (twice: it is idempotent).
        for _ in range(2):
            self.assertEqual(self.call("DELETE", "/v1/cart", u["token"]).status, 204)
        self.assertEqual(self.get_cart(u)["items"], [])

    def test_line_limit(self):
        u = self.register("hoarder")
        ids = [self.product("Bulk %d" % i, 100 + i) for i in range(101)]
        for pid in ids[:100]:
            self.add(u, pid)
        self.assertEnvelopeError(self.call("POST", "/v1/cart/items", u["token"],
                                           {"productId": ids[100]}), 409, "CART_FULL")
        cart = self.get_cart(u)
        self.assertEqual(len(cart["items"]), 100)
        self.assertNotIn(ids[100], [l["productId"] for l in cart["items"]])
        # An existing line can still grow.
        self.assertEqual(self.add(u, ids[0], 2, status=200)["quantity"], 3)

    def test_carts_are_private(self):
        a, b = self.register("ann"), self.register("ben")
        pid = self.product("Private Thing", 700)
        self.add(a, pid, 4)
        self.assertEqual(self.get_cart(b)["items"], [])
        # b names a's line: it is not in b's cart, whatever the id.
        self.assertEnvelopeError(self.call("PUT", "/v1/cart/items/" + pid, b["token"],
                                           {"quantity": 1}), 404)
        self.assertEnvelopeError(self.call("DELETE", "/v1/cart/items/" + pid, b["token"]), 404)
        self.assertEqual(self.call("DELETE", "/v1/cart", b["token"]).status, 204)
        # A user id in the body or the query is no way in.
        self.assertEnvelopeError(self.call("POST", "/v1/cart/items", b["token"],
                                           {"productId": pid, "userId": a["id"]}), 422)
        self.assertEqual(self.assertOk(self.call("GET", "/v1/cart?userId=" + a["id"],
                                                 b["token"]))["items"], [])
        self.assertEqual(self.lines(a), {pid: 4})
        # b's own line does not show up in a's cart.
        self.add(b, pid, 1)
        self.assertEqual(self.lines(a), {pid: 4})
        self.assertEqual(self.lines(b), {pid: 1})

    def test_prices_are_catalogs_current_ones(self):
        u = self.register("pricey")
        pid = self.product("Kettle", 3000)
        self.add(u, pid, 2)
        self.set_price(pid, 3500)
        self.assertOk(self.raw(self.catalog, "PUT", "/v1/products/" + pid, self.admin["token"],
                               {"name": "Kettle Pro"}))
        cart = self.get_cart(u)
        self.assertEqual((cart["items"][0]["name"], cart["items"][0]["priceCents"],
                          cart["items"][0]["lineTotalCents"]), ("Kettle Pro", 3500, 7000))
        self.assertEqual(cart["subtotals"], [{"currency": "USD", "subtotalCents": 7000}])
        # A client cannot give a price.
        for body in ({"productId": pid, "quantity": 1, "priceCents": 1},
                     {"productId": pid, "price": 1}, {"productId": pid, "lineTotalCents": 0}):
            self.assertEnvelopeError(self.call("POST", "/v1/cart/items", u["token"], body),
                                     422, "VALIDATION_FAILED")
        self.assertEnvelopeError(self.call("PUT", "/v1/cart/items/" + pid, u["token"],
                                           {"quantity": 1, "priceCents": 1}), 422)
        self.assertEqual(self.lines(u), {pid: 2})

    def test_unknown_and_inactive_products(self):
        u = self.register("picky")
        for pid in ("no-such-product", str(uuid.uuid4())):
            self.assertEnvelopeError(self.call("POST", "/v1/cart/items", u["token"],
                                               {"productId": pid, "quantity": 1}),
                                     404, "PRODUCT_NOT_FOUND")
        pid = self.product("Soon Gone", 500)
        keep = self.product("Stays", 250)
        self.add(u, pid, 2)
        self.add(u, keep, 1)
        r = self.raw(self.catalog, "DELETE", "/v1/products/" + pid, self.admin["token"])
        self.assertEqual(r.status, 204)
        # catalog hides a soft-deleted product from customers: unknown to them.
        self.assertEnvelopeError(self.call("POST", "/v1/cart/items", u["token"],
                                           {"productId": pid}), 404, "PRODUCT_NOT_FOUND")
        self.assertEnvelopeError(self.call("PUT", "/v1/cart/items/" + pid, u["token"],
                                           {"quantity": 1}), 404, "PRODUCT_NOT_FOUND")
        # An admin's lookup sees it inactive.
        self.assertEnvelopeError(self.call("POST", "/v1/cart/items", self.admin["token"],
                                           {"productId": pid}), 409, "PRODUCT_UNAVAILABLE")
        # The line stays, unavailable and out of the subtotal, until removed.
        cart = self.get_cart(u)
        by = {l["productId"]: l for l in cart["items"]}
        self.assertFalse(by[pid]["available"])
        self.assertTrue(by[keep]["available"])
        self.assertEqual(cart["subtotals"], [{"currency": "USD", "subtotalCents": 250}])
        self.assertEqual(cart["itemCount"], 1)
        self.assertEqual(self.lines(u), {pid: 2, keep: 1})
        self.assertEqual(self.call("DELETE", "/v1/cart/items/" + pid, u["token"]).status, 204)

    def test_bad_input_changes_nothing(self):
        u = self.register("mallory")
        pid = self.product("Target", 100)
        self.add(u, pid, 3)
        before = self.get_cart(u)
        t = u["token"]
        cases = [
            ({}, {"productId"}),
            ({"quantity": 1}, {"productId"}),
            ({"productId": 12, "quantity": 1}, {"productId"}),
            ({"productId": None}, {"productId"}),
            ({"productId": ["x"]}, {"productId"}),
            ({"productId": ""}, {"productId"}),
            ({"productId": "x" * 65}, {"productId"}),
            ({"productId": "x" * 100000}, {"productId"}),
            ({"productId": "../../v1/categories"}, {"productId"}),
            ({"productId": pid + "?x=1"}, {"productId"}),
            ({"productId": pid, "quantity": 0}, {"quantity"}),
            ({"productId": pid, "quantity": -1}, {"quantity"}),
            ({"productId": pid, "quantity": 100}, {"quantity"}),
            ({"productId": pid, "quantity": 2 ** 62}, {"quantity"}),
            ({"productId": pid, "quantity": 1.5}, {"quantity"}),
            ({"productId": pid, "quantity": "2"}, {"quantity"}),
            ({"productId": pid, "quantity": True}, {"quantity"}),
            ({"productId": pid, "extra": 1}, {"extra"}),
        ]
        for body, fields in cases:
            r = self.assertEnvelopeError(self.call("POST", "/v1/cart/items", t, body), 422,
                                         "VALIDATION_FAILED")
            self.assertEqual({d["field"] for d in r["error"]["details"]}, fields, body)
        # A number past 64 bits is refused by the JSON parser itself (400).
        self.assertEnvelopeError(self.call("POST", "/v1/cart/items", t,
                                           '{"productId": "%s", "quantity": %d}' % (pid, 10 ** 30)),
                                 400)
        for body in ({}, {"quantity": 0}, {"quantity": -5}, {"quantity": 100},
                     {"quantity": "1"}, {"quantity": None}, {"quantity": 1, "productId": pid}):
            self.assertEnvelopeError(self.call("PUT", "/v1/cart/items/" + pid, t, body), 422,
                                     "VALIDATION_FAILED")
        for path in ("/v1/cart/items", "/v1/cart/items/" + pid):
            method = "POST" if path.endswith("items") else "PUT"
            self.assertEnvelopeError(self.call(method, path, t, '{"productId": '), 400)
            self.assertEnvelopeError(self.call(method, path, t, "[1, 2]"), 422)
            self.assertEnvelopeError(self.call(method, path, t, "null"), 400)  # not a document
            self.assertEnvelopeError(self.call(method, path, t, ""), 400)
            self.assertEnvelopeError(
                self.call(method, path, t, "productId=x",
                          [("Content-Type", "application/x-www-form-urlencoded")]), 415)
        # Path ids that cannot be lines.
        for bad in ("%FF%FE", "x" * 65, "a%2Fb"):
            self.assertEnvelopeError(self.call("PUT", "/v1/cart/items/" + bad, t,
                                               {"quantity": 1}), 404)
            self.assertEnvelopeError(self.call("DELETE", "/v1/cart/items/" + bad, t), 404)
        # a NUL is refused by the server before any route
        self.assertEnvelopeError(self.call("DELETE", "/v1/cart/items/%00", t), 400)
        self.assertEqual(self.call("PATCH", "/v1/cart", t).status, 405)
        self.assertEqual(self.get_cart(u), before)

    def test_tokens(self):
        u = self.register("tokens")
        pid = self.product("Guarded", 100)
        self.add(u, pid, 1)
        routes = [("GET", "/v1/cart", None), ("DELETE", "/v1/cart", None),
                  ("POST", "/v1/cart/items", {"productId": pid}),
                  ("PUT", "/v1/cart/items/" + pid, {"quantity": 5}),
                  ("DELETE", "/v1/cart/items/" + pid, None),
                  ("GET", "/v1/admin/breakers", None)]
        t = u["token"]
        tampered = t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB")
        none_head = b64(b'{"alg":"none","typ":"JWT"}')
        forged_none = none_head + "." + t.split(".")[1] + "."
        bad_tokens = [None, "", "garbage", "a.b.c", tampered, forged_none,
                      t.split(".")[0] + "." + t.split(".")[1]]
        # The key really signs (the same construction is accepted)...
        good = self.forge(self.claims(u))
        self.assertOk(self.call("GET", "/v1/cart", good))
        pub = self.signing_key.public_raw
        jwks_text = self.raw(self.users, "GET", "/.well-known/jwks.json").body
        bad_tokens += [
            self.forge(self.claims(u, exp=int(time.time()) - 60)),          # expired
            self.forge(self.claims(u, nbf=int(time.time()) + 3600)),        # not yet
            self.forge(self.claims(u, aud="elsewhere")),
            self.forge(self.claims(u, iss="mallory")),
            self.forge(self.claims(u), alg="HS256", key=pub),               # HMAC over the key
            self.forge(self.claims(u), alg="HS256", key=b64(pub).encode()),
            self.forge(self.claims(u), alg="HS256", key=jwks_text),
            self.forge(self.claims(u), alg="none"),
            self.forge(self.claims(u), kid="unknown-kid"),
        ]
        for tok in bad_tokens:
            for method, path, body in routes:
                r = self.call(method, path, tok, body)
                self.assertEnvelopeError(r, 401, "UNAUTHENTICATED")
        # A customer is no admin.
        self.assertEnvelopeError(self.call("GET", "/v1/admin/breakers", t), 403, "FORBIDDEN")
        admin_claim = self.forge(self.claims(u, role="admin"), alg="HS256",
                                 key=self.signing_key.public_raw)
        self.assertEnvelopeError(self.call("GET", "/v1/admin/breakers", admin_claim), 401)
        self.assertEqual(self.lines(u), {pid: 1})

    def test_persists_across_restart(self):
        u = self.register("keeper")
        a, b = self.product("Keep A", 100), self.product("Keep B", 200)
        self.add(u, a, 2)
        self.add(u, b, 5)
        self.cart.stop(timeout=10)
        type(self).cart = service.start("cart", self.cart_env)
        self.assertEqual(self.lines(u), {a: 2, b: 5})
        self.assertEqual(self.get_cart(u)["subtotals"],
                         [{"currency": "USD", "subtotalCents": 1200}])

    def test_catalog_down_breaker_and_recovery(self):
        u = self.register("outage")
        a, b = self.product("Outage A", 1000), self.product("Outage B", 2000)
        late = self.product("Outage Late", 300)
        self.add(u, a, 1)
        self.add(u, b, 2)
        self.set_price(a, 1100)
        self.assertEqual(self.get_cart(u)["items"][0]["priceCents"], 1100)  # snapshot refreshed
        self.catalog.stop(timeout=10)

        # Reads go on from the stored snapshot, marked stale.
        cart = self.get_cart(u)
        self.assertTrue(cart["pricesMayBeStale"])
        self.assertEqual([(l["productId"], l["name"], l["priceCents"], l["quantity"])
                          for l in cart["items"]],
                         [(a, "Outage A", 1100, 1), (b, "Outage B", 2000, 2)])
        self.assertEqual(cart["subtotals"], [{"currency": "USD", "subtotalCents": 5100}])
        # Writes that need catalog answer 503 with Retry-After and change nothing.
        # The breaker's window (20 calls) still holds earlier successes, so
        # it takes a few more failures than min_calls to open.
        for _ in range(30):
            r = self.call("POST", "/v1/cart/items", u["token"], {"productId": late})
            self.assertEnvelopeError(r, 503, "CATALOG_UNAVAILABLE")
            self.assertGreaterEqual(int(r.header("Retry-After")), 1)
            if self.breaker()["state"] == "open":
                break
        self.assertEqual(self.breaker()["state"], "open")
        r = self.call("PUT", "/v1/cart/items/" + a, u["token"], {"quantity": 3})
        self.assertEnvelopeError(r, 503, "CATALOG_UNAVAILABLE")
        self.assertIsNotNone(r.header("Retry-After"))
        # Removing needs no catalog.
        self.assertEqual(self.lines(u), {a: 1, b: 2})
        self.assertTrue(self.get_cart(u)["pricesMayBeStale"])

        # Catalog comes back: after the open time, adds work again and the
        # breaker closes.
        type(self).catalog = self.start_catalog()

        def added():
            r = self.call("POST", "/v1/cart/items", u["token"], {"productId": late})
            return r.status == 201
        self.wait_until(added, timeout=15, what="adds to work again")
        self.wait_until(lambda: not self.get_cart(u)["pricesMayBeStale"] and
                        self.breaker()["state"] == "closed", what="the breaker to close")
        self.assertEqual(self.lines(u), {a: 1, b: 2, late: 1})

    def test_catalog_hung_breaker_answers_fast(self):
        u = self.register("hung")
        pid = self.product("Hung", 100)
        self.add(u, pid, 1)
        self.catalog.signal(signal.SIGSTOP)
        try:
            slow = 0
            for _ in range(30):
                t0 = time.monotonic()
                r = self.call("POST", "/v1/cart/items", u["token"], {"productId": pid})
                took = time.monotonic() - t0
                self.assertEnvelopeError(r, 503, "CATALOG_UNAVAILABLE")
                if took >= 0.9:
                    slow += 1  # waited for the 1 s lookup limit
                if self.breaker()["state"] == "open":
                    break
            self.assertGreaterEqual(slow, 1)
            self.assertEqual(self.breaker()["state"], "open")
            # Open: refused at once, without waiting for catalog.
            t0 = time.monotonic()
            r = self.call("POST", "/v1/cart/items", u["token"], {"productId": pid})
            self.assertEnvelopeError(r, 503, "CATALOG_UNAVAILABLE")
            self.assertLess(time.monotonic() - t0, harness.scaled(0.5))
            t0 = time.monotonic()
            cart = self.get_cart(u)
            self.assertLess(time.monotonic() - t0, harness.scaled(0.5))
            self.assertTrue(cart["pricesMayBeStale"])
            self.assertEqual(self.lines(u), {pid: 1})
        finally:
            self.catalog.signal(signal.SIGCONT)

        def added():
            return self.call("POST", "/v1/cart/items", u["token"],
                             {"productId": pid}).status == 200
        self.wait_until(added, timeout=15, what="adds to work again")
        self.assertEqual(self.lines(u), {pid: 2})

    def test_order_confirmed_from_cart_clears_it(self):
        a, b = self.register("buyer"), self.register("other")
        pid = self.product("Bought", 100)
        self.add(a, pid, 2)
        self.add(b, pid, 1)
        # Not from the cart: nothing changes. Then from a's cart: a's cart empties.
        self.nats.pub("agora.events.order.confirmed", cloud_event(
            "order.confirmed", "order-b1",
            {"orderId": "order-b1", "userId": b["id"], "fromCart": False,
             "items": [{"productId": pid, "quantity": 1}]}))
        self.nats.pub("agora.events.order.confirmed", cloud_event(
            "order.confirmed", "order-a1",
            {"orderId": "order-a1", "userId": a["id"], "fromCart": True,
             "items": [{"productId": pid, "quantity": 2}]}))
        self.wait_until(lambda: self.get_cart(a)["items"] == [],
                        what="order.confirmed to clear the cart")
        self.assertEqual(self.lines(b), {pid: 1})
        # The cart goes on working for a.
        self.add(a, pid, 1)
        self.assertEqual(self.lines(a), {pid: 1})

    def test_user_deleted_removes_cart(self):
        d = self.register("leaving")
        pid = self.product("Left Behind", 100)
        self.add(d, pid, 3)
        r = self.raw(self.users, "DELETE", "/v1/users/" + d["id"], d["token"])
        self.assertEqual(r.status, 204, r.body)
        # Its token still verifies until it expires: the cart is gone.
        self.wait_until(lambda: self.get_cart(d)["items"] == [],
                        what="user.deleted to remove the cart")

    def test_openapi_health_and_metrics(self):
        r = self.call("GET", "/openapi.json")
        self.assertEqual(r.status, 200)
        doc = r.json()
        self.assertTrue(doc["openapi"].startswith("3."))
        for path, methods in {"/v1/cart": ("get", "delete"), "/v1/cart/items": ("post",),
                              "/v1/cart/items/{productId}": ("put", "delete"),
                              "/v1/admin/breakers": ("get",)}.items():
            for m in methods:
                self.assertIn(m, doc["paths"][path], (path, m))
        applied = [r.get("file") for r in self.cart.log_records()
                   if r.get("msg") == "migration applied"]
        self.assertIn(applied, ([], ["001_cart.sql"]))  # [] after the restart test
        self.assertEqual(self.call("GET", "/health").status, 200)
        self.assertEqual(self.call("GET", "/ready").status, 200)
        self.assertEqual(self.call("GET", "/metrics").status, 200)
        b = self.breaker()
        for k in ("name", "state", "calls", "failures", "inFlight", "openedCount", "retryAfterMs"):
            self.assertIn(k, b)


if __name__ == "__main__":
    harness.main()
