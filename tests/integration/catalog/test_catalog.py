"""agora-catalog over HTTP, with a real agora-users for tokens (verified
through its JWKS), each with its own store, and a real NATS: categories and
products with their admin-only writes, search (full text, filters, sorting,
pagination, hostile queries), soft delete, the product.* events on the
broker, reviews and ratings, verified purchases and recommendations from
order.confirmed, bad input, the demo loader and /openapi.json.

Environment: AGORA_USERSD, AGORA_CATALOGD (the binaries), AGORA_TEST_NATS_URL
(tests/harness/with-servers nats). With AGORA_TEST_CATALOG_STORE=postgres
(and with-servers postgres nats) the catalog runs on PostgreSQL in a
database of its own, which proves the PostgreSQL migrations and search.
"""

import base64
import json
import os
import subprocess
import sys
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import service  # noqa: E402
from service import ADMIN_EMAIL, ADMIN_PASSWORD  # noqa: E402
import harness  # noqa: E402
from amqp_client import bus_url  # noqa: E402

LOAD_DEMO = os.path.join(ROOT, "services", "catalog", "demo", "load-demo")


def order_confirmed(order_id, user_id, product_ids):
    """A CloudEvent as agora-orders will publish it."""
    return service.cloud_event("order.confirmed", order_id,
                               {"orderId": order_id, "userId": user_id,
                                "items": [{"productId": p, "quantity": 1} for p in product_ids]})


class Catalog(service.ServiceTestCase):
    servers = ("catalog", "users")
    under_test = "catalog"

    @classmethod
    def setUpClass(cls):
        service.require("users", "catalog")
        cls.make_tmp("catalog")
        nats = bus_url()  # NATS, or RabbitMQ with AGORA_TEST_BUS=amqp
        cls.users = service.start_users(cls.tmp, nats)
        cls.catalog_env = {
            "AGORA_DB": service.db_url(cls.tmp, "catalog"), "AGORA_BUS": nats,
            "AGORA_JWKS_URL": service.jwks_url(cls.users),
            "AGORA_BUS_BACKOFF": "200ms",
        }
        cls.catalog = service.start("catalog", cls.catalog_env)
        cls.nats = cls.open_bus(nats, "agora.events.>")
        cls.admin = cls.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        cls.alice = cls.register("alice")
        cls.bob = cls.register("bob")
        cls.carol = cls.register("carol")

    # -- clients -------------------------------------------------------------

    def make_category(self, slug, name=None):
        return self.assertOk(self.call("POST", "/v1/categories", self.admin["token"],
                                       {"name": name or slug.title(), "slug": slug}), 201)

    def make_product(self, **fields):
        return self.assertOk(self.call("POST", "/v1/products", self.admin["token"], fields), 201)

    def list(self, query="", token=None):
        r = self.call("GET", "/v1/products" + ("?" + query if query else ""), token)
        self.assertEqual(r.status, 200, r.body)
        return r.json()

    def ids(self, query, token=None):
        return [p["id"] for p in self.list(query, token)["data"]]

    def total_products(self):
        return self.list("includeInactive=true&limit=1", self.admin["token"])["pagination"]["total"]

    def metric(self, name):
        r = self.call("GET", "/metrics")
        m = harness.parse_metrics(r.body.decode())
        return sum(harness.metric_values(m, name))

    # -- tests ---------------------------------------------------------------

    def test_categories_and_products_admin_only(self):
        cat = self.make_category("garden", "Garden")
        self.assertEqual(cat["slug"], "garden")
        self.assertEnvelopeError(self.call("POST", "/v1/categories", self.alice["token"],
                                           {"name": "Tools", "slug": "tools"}), 403, "FORBIDDEN")
        self.assertEnvelopeError(self.call("POST", "/v1/categories", None,
                                           {"name": "Tools", "slug": "tools"}), 401)
        self.assertEnvelopeError(self.call("POST", "/v1/categories", self.admin["token"],
                                           {"name": "Garden 2", "slug": "garden"}), 409, "CONFLICT")
        body = self.assertEnvelopeError(self.call("POST", "/v1/categories", self.admin["token"],
                                                  {"name": "", "slug": "Bad Slug"}), 422)
        self.assertEqual({d["field"] for d in body["error"]["details"]}, {"name", "slug"})
        cats = self.assertOk(self.call("GET", "/v1/categories"))
        self.assertIn("garden", [c["slug"] for c in cats])
        self.assertNotIn("tools", [c["slug"] for c in cats])

        before = self.total_products()
        spec = {"name": "Rake", "category": "garden", "priceCents": 1500}
        self.assertEnvelopeError(self.call("POST", "/v1/products", self.alice["token"], spec), 403)
        self.assertEnvelopeError(self.call("POST", "/v1/products", None, spec), 401)
        p = self.make_product(stock=3, **spec)
        self.assertEqual((p["name"], p["category"], p["priceCents"], p["currency"], p["stock"],
                          p["rating"], p["reviewCount"], p["isActive"]),
                         ("Rake", "garden", 1500, "USD", 3, 0, 0, True))
        for k in ("id", "description", "createdAt", "updatedAt"):
            self.assertIn(k, p)
        self.assertEqual(self.total_products(), before + 1)
        got = self.assertOk(self.call("GET", "/v1/products/" + p["id"]))
        self.assertEqual(got, p)
        # Customers cannot change or delete it.
        self.assertEnvelopeError(self.call("PUT", "/v1/products/" + p["id"], self.alice["token"],
                                           {"priceCents": 1}), 403)
        self.assertEnvelopeError(self.call("DELETE", "/v1/products/" + p["id"], self.bob["token"]), 403)
        self.assertEqual(self.assertOk(self.call("GET", "/v1/products/" + p["id"]))["priceCents"], 1500)
        cats = {c["slug"]: c for c in self.assertOk(self.call("GET", "/v1/categories"))}
        self.assertEqual(cats["garden"]["productCount"], 1)

    def test_bad_input_changes_nothing(self):
        self.make_category("bad-input")
        good = self.make_product(name="Solid", category="bad-input", priceCents=100, stock=1)
        before = self.total_products()
        token = self.admin["token"]
        cases = [
            ({}, {"name", "category", "priceCents"}),
            ({"name": "x", "category": "bad-input", "priceCents": 19.99}, {"priceCents"}),
            ({"name": "x", "category": "bad-input", "priceCents": -1}, {"priceCents"}),
            ({"name": "x", "category": "bad-input", "priceCents": "100"}, {"priceCents"}),
            ({"name": "x" * 201, "category": "bad-input", "priceCents": 1}, {"name"}),
            ({"name": "   ", "category": "bad-input", "priceCents": 1}, {"name"}),
            ({"name": "x", "category": "bad-input", "priceCents": 1, "currency": "usd"}, {"currency"}),
            ({"name": "x", "category": "bad-input", "priceCents": 1, "currency": "EURO"}, {"currency"}),
            ({"name": "x", "category": "bad-input", "priceCents": 1, "stock": -5}, {"stock"}),
            ({"name": "x", "category": "bad-input", "priceCents": 1, "rating": 5}, {"rating"}),
            ({"name": "x", "category": "no-such-category", "priceCents": 1}, {"category"}),
            ({"name": "x", "category": "bad-input", "priceCents": 1, "description": "d" * 5001},
             {"description"}),
        ]
        for spec, fields in cases:
            body = self.assertEnvelopeError(self.call("POST", "/v1/products", token, spec), 422,
                                            "VALIDATION_FAILED")
            self.assertEqual({d["field"] for d in body["error"]["details"]}, fields, spec)
        self.assertEnvelopeError(self.call("POST", "/v1/products", token, '{"name": "x",'), 400)
        self.assertEnvelopeError(self.call("POST", "/v1/products", token, "[1, 2]"), 422)
        self.assertEnvelopeError(self.call("POST", "/v1/products", token, "name=x",
                                           [("Content-Type", "application/x-www-form-urlencoded")]), 415)
        # Updates: nothing, unknown fields, bad values; unknown ids.
        pid = good["id"]
        for spec in ({}, {"id": "other"}, {"priceCents": -3}, {"category": "nope"},
                     {"isActive": "yes"}, {"createdAt": "2020-01-01T00:00:00Z"}):
            self.assertEnvelopeError(self.call("PUT", "/v1/products/" + pid, token, spec), 422)
        self.assertEnvelopeError(self.call("PUT", "/v1/products/" + pid, token, "{oops"), 400)
        self.assertEqual(self.assertOk(self.call("GET", "/v1/products/" + pid)), good)
        self.assertEqual(self.total_products(), before)
        for method, path, body in (("GET", "/v1/products/nope", None),
                                   ("PUT", "/v1/products/nope", {"priceCents": 1}),
                                   ("DELETE", "/v1/products/nope", None),
                                   ("GET", "/v1/products/nope/reviews", None)):
            self.assertEnvelopeError(self.call(method, path, token, body), 404, "NOT_FOUND")
        self.assertEnvelopeError(self.call("POST", "/v1/products/nope/reviews",
                                           self.alice["token"], {"rating": 3}), 404)
        # An id with more after it, or bytes that are not UTF-8, is no product of ours.
        for path in ("/v1/products/" + pid + "x", "/v1/products/%FF%FE"):
            self.assertEnvelopeError(self.call("PUT", path, token, {"priceCents": 7}), 404)
            self.assertEnvelopeError(self.call("DELETE", path, token), 404)
            self.assertEnvelopeError(self.call("GET", path), 404)
            self.assertEnvelopeError(self.call("POST", path + "/reviews", self.alice["token"],
                                               {"rating": 3}), 404)
        self.assertEqual(self.assertOk(self.call("GET", "/v1/products/" + pid)), good)
        # Query parameters.
        for q in ("limit=0", "limit=101", "page=0", "page=x", "minPrice=-1", "maxPrice=abc",
                  "minPrice=10&maxPrice=5", "inStock=maybe", "sort=cheapest", "q=" + "a" * 201, "q=%FF", "q=caf%C3",
                  "category=%C0%AF"):
            self.assertEnvelopeError(self.call("GET", "/v1/products?" + q), 422, "VALIDATION_FAILED")
        # Tokens: tampered, alg none.
        t = self.alice["token"]
        tampered = t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB")
        self.assertEnvelopeError(self.call("GET", "/v1/products", tampered), 401)
        none_head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
        forged = none_head + "." + self.admin["token"].split(".")[1] + "."
        self.assertEnvelopeError(self.call("POST", "/v1/products", forged,
                                           {"name": "x", "category": "bad-input", "priceCents": 1}), 401)
        self.assertEqual(self.total_products(), before)

    def test_search_filters_sort_and_pagination(self):
        self.make_category("search-lab")
        mk = lambda name, desc, price, stock: self.make_product(
            name=name, description=desc, category="search-lab", priceCents=price, stock=stock)["id"]
        lamp = mk("Brass Desk Lamp", "A warm reading light", 4500, 4)
        kettle = mk("Electric Kettle", "Boils water fast; brushed steel", 3000, 0)
        mug = mk("Ceramic Mug", "Holds hot tea or coffee", 1200, 50)
        chair = mk("Reading Chair", "Deep armchair for long evenings", 25000, 2)
        evil = mk("Robert'); DROP TABLE products;--", "' OR '1'='1 \" NEAR( * : ^", 999, 1)
        cat = "category=search-lab"

        self.assertEqual(self.ids(cat + "&q=kettle"), [kettle])
        self.assertEqual(self.ids(cat + "&q=KETTLE"), [kettle])
        self.assertEqual(self.ids(cat + "&q=tea"), [mug])               # description
        self.assertEqual(self.ids(cat + "&q=kett"), [kettle])            # prefix
        self.assertEqual(sorted(self.ids(cat + "&q=reading")), sorted([lamp, chair]))
        self.assertEqual(self.ids(cat + "&q=reading+light"), [lamp])     # every word
        self.assertEqual(self.ids(cat + "&q=nothing-like-this"), [])
        # Hostile queries are words to look for, never syntax.
        for q in ("' OR 1=1 --", "\" OR \"\"=\"", "*", "NEAR(", "kettle OR mug", "zz:yy",
                  "'; DROP TABLE products; --", "%", "\\", "^kettle", "(((", "\u00e9t\u00e9"):
            r = self.call("GET", "/v1/products?" + cat + "&" + urllib.parse.urlencode({"q": q}))
            self.assertEqual(r.status, 200, (q, r.body))
            got = [p["id"] for p in r.json()["data"]]
            self.assertNotIn(lamp, got, q)
            self.assertNotIn(chair, got, q)
        self.assertEqual(self.ids(cat + "&" + urllib.parse.urlencode({"q": "DROP TABLE"})), [evil])
        stored = self.assertOk(self.call("GET", "/v1/products/" + evil))
        self.assertEqual(stored["name"], "Robert'); DROP TABLE products;--")
        self.assertEqual(self.list(cat)["pagination"]["total"], 5)

        # Filters.
        self.assertEqual(sorted(self.ids(cat + "&minPrice=1200&maxPrice=4500")),
                         sorted([lamp, kettle, mug]))
        self.assertEqual(self.ids(cat + "&inStock=false"), [kettle])
        self.assertNotIn(kettle, self.ids(cat + "&inStock=true"))
        self.assertEqual(len(self.ids(cat + "&inStock=true")), 4)
        # Sorting.
        self.assertEqual(self.ids(cat + "&sort=price"), [evil, mug, kettle, lamp, chair])
        self.assertEqual(self.ids(cat + "&sort=-price"), [chair, lamp, kettle, mug, evil])
        self.assertEqual(self.ids(cat + "&sort=newest"), [evil, chair, mug, kettle, lamp])
        self.assertEqual(self.ids(cat), [evil, chair, mug, kettle, lamp])
        # Pagination.
        page = self.list(cat + "&sort=price&page=2&limit=2")
        self.assertEqual([p["id"] for p in page["data"]], [kettle, lamp])
        self.assertEqual(page["pagination"], {"page": 2, "limit": 2, "total": 5, "pages": 3})
        page = self.list(cat + "&sort=price&page=3&limit=2")
        self.assertEqual([p["id"] for p in page["data"]], [chair])
        self.assertEqual(self.list(cat + "&page=9&limit=2")["data"], [])
        # Rating sort: reviews move the products.
        self.assertOk(self.call("POST", "/v1/products/%s/reviews" % mug, self.alice["token"],
                                {"rating": 5}), 201)
        self.assertOk(self.call("POST", "/v1/products/%s/reviews" % kettle, self.alice["token"],
                                {"rating": 3}), 201)
        self.assertEqual(self.ids(cat + "&sort=rating")[:2], [mug, kettle])

    def test_update_soft_delete_and_events(self):
        self.make_category("events")
        nats = self.nats
        p = self.make_product(name="Event Widget", category="events", priceCents=1000, stock=5)
        pid = p["id"]
        created = nats.wait_for(lambda e: e["type"] == "product.created" and e["subject"] == pid)
        self.assertTrue(created, "no product.created on the broker")
        ev = created[0][1]
        self.assertEqual(ev["source"], "agora/catalog")
        self.assertEqual(ev["data"]["productId"], pid)
        self.assertEqual(ev["data"]["priceCents"], 1000)

        # A name change is product.updated only; a price change adds price_updated.
        up = self.assertOk(self.call("PUT", "/v1/products/" + pid, self.admin["token"],
                                     {"name": "Event Widget Pro"}))
        self.assertEqual(up["name"], "Event Widget Pro")
        self.assertEqual(up["priceCents"], 1000)
        up = self.assertOk(self.call("PUT", "/v1/products/" + pid, self.admin["token"],
                                     {"priceCents": 1250, "stock": 0}))
        self.assertEqual((up["priceCents"], up["stock"], up["inStock"]), (1250, 0, False))
        price = nats.wait_for(lambda e: e["type"] == "product.price_updated" and e["subject"] == pid)
        self.assertEqual(len(price), 1, price)
        self.assertEqual(price[0][1]["data"], {"productId": pid, "oldPriceCents": 1000,
                                               "newPriceCents": 1250, "currency": "USD"})
        updated = nats.wait_for(lambda e: e["type"] == "product.updated" and e["subject"] == pid
                                and e["data"]["priceCents"] == 1250)
        self.assertTrue(updated)
        self.assertEqual(self.ids("category=events&q=pro"), [pid])  # search follows renames
        self.assertEqual(self.ids("category=events&q=widget+pro"), [pid])

        # Soft delete.
        r = self.call("DELETE", "/v1/products/" + pid, self.admin["token"])
        self.assertEqual(r.status, 204, r.body)
        self.assertTrue(nats.wait_for(lambda e: e["type"] == "product.deleted" and e["subject"] == pid))
        self.assertEnvelopeError(self.call("GET", "/v1/products/" + pid), 404)
        self.assertEnvelopeError(self.call("GET", "/v1/products/" + pid, self.alice["token"]), 404)
        self.assertEnvelopeError(self.call("GET", "/v1/products/%s/reviews" % pid), 404)
        self.assertEnvelopeError(self.call("POST", "/v1/products/%s/reviews" % pid,
                                           self.alice["token"], {"rating": 4}), 404)
        seen = self.assertOk(self.call("GET", "/v1/products/" + pid, self.admin["token"]))
        self.assertFalse(seen["isActive"])
        self.assertEqual(self.ids("category=events"), [])
        self.assertEqual(self.ids("q=widget"), [])
        self.assertEqual(self.ids("category=events&includeInactive=true", self.admin["token"]), [pid])
        self.assertEnvelopeError(self.call("GET", "/v1/products?includeInactive=true",
                                           self.alice["token"]), 403)
        self.assertEqual(self.call("DELETE", "/v1/products/" + pid, self.admin["token"]).status, 204)
        # An admin may bring it back.
        back = self.assertOk(self.call("PUT", "/v1/products/" + pid, self.admin["token"],
                                       {"isActive": True}))
        self.assertTrue(back["isActive"])
        self.assertEqual(self.ids("category=events"), [pid])

        # The outbox drains: every event written was confirmed by the broker.
        def drained():
            pub = self.metric("agora_bus_published_total")
            return pub > 0 and self.metric("agora_bus_confirmed_total") == pub and \
                self.metric("agora_bus_outbox_depth") == 0
        self.wait_until(drained, what="the outbox to drain")

    def test_reviews_ratings_and_verified_purchases(self):
        self.make_category("reviews")
        p = self.make_product(name="Review Target", category="reviews", priceCents=500, stock=9)
        pid = p["id"]
        path = "/v1/products/%s/reviews" % pid
        self.assertEnvelopeError(self.call("POST", path, None, {"rating": 5}), 401)
        a = self.assertOk(self.call("POST", path, self.alice["token"],
                                    {"rating": 5, "text": "Great"}), 201)
        self.assertEqual((a["rating"], a["text"], a["userId"], a["verifiedPurchase"]),
                         (5, "Great", self.alice["id"], False))
        self.assertEnvelopeError(self.call("POST", path, self.alice["token"], {"rating": 1}),
                                 409, "CONFLICT")
        self.assertOk(self.call("POST", path, self.bob["token"], {"rating": 4}), 201)
        got = self.assertOk(self.call("GET", "/v1/products/" + pid))
        self.assertEqual((got["rating"], got["reviewCount"]), (4.5, 2))
        # Bad reviews change nothing.
        for body in ({}, {"rating": 0}, {"rating": 6}, {"rating": "5"}, {"rating": 4.5},
                     {"rating": 3, "text": "x" * 2001}, {"rating": 3, "userId": "someone"}):
            self.assertEnvelopeError(self.call("POST", path, self.carol["token"], body), 422)
        self.assertEnvelopeError(self.call("POST", path, self.carol["token"], "{"), 400)
        got = self.assertOk(self.call("GET", "/v1/products/" + pid))
        self.assertEqual((got["rating"], got["reviewCount"]), (4.5, 2))
        self.assertTrue(nats_review(self.nats, pid), "no review.created on the broker")

        # carol buys it (order.confirmed on the bus), then her review is verified;
        # alice's earlier review becomes verified when her order is confirmed.
        self.nats.pub("agora.events.order.confirmed",
                      order_confirmed("order-c1", self.carol["id"], [pid]))
        self.nats.pub("agora.events.order.confirmed",
                      order_confirmed("order-a1", self.alice["id"], [pid]))

        def alice_verified():
            lst = self.call("GET", path + "?limit=100").json()["data"]
            return any(r["userId"] == self.alice["id"] and r["verifiedPurchase"] for r in lst)
        self.wait_until(alice_verified, what="order.confirmed to be consumed")
        c = self.assertOk(self.call("POST", path, self.carol["token"],
                                    {"rating": 2, "text": "meh"}), 201)
        self.assertTrue(c["verifiedPurchase"])
        got = self.assertOk(self.call("GET", "/v1/products/" + pid))
        self.assertEqual((got["rating"], got["reviewCount"]), (3.7, 3))  # 11/3 = 3.67

        # Listing: newest first, paginated.
        page = self.call("GET", path + "?limit=2").json()
        self.assertEqual(page["pagination"], {"page": 1, "limit": 2, "total": 3, "pages": 2})
        self.assertEqual([r["userId"] for r in page["data"]], [self.carol["id"], self.bob["id"]])
        page2 = self.call("GET", path + "?limit=2&page=2").json()
        self.assertEqual([r["userId"] for r in page2["data"]], [self.alice["id"]])
        self.assertEnvelopeError(self.call("GET", path + "?limit=500"), 422)

    def test_recommendations(self):
        self.make_category("recs")
        mk = lambda n: self.make_product(name=n, category="recs", priceCents=100, stock=1)["id"]
        a, b, c = mk("Rec A"), mk("Rec B"), mk("Rec C")
        user_x, user_y = self.register("xavier"), self.register("yolanda")
        # x bought A and B together; y bought A and C.
        self.nats.pub("agora.events.order.confirmed", order_confirmed("order-x", user_x["id"], [a, b]))
        self.nats.pub("agora.events.order.confirmed", order_confirmed("order-y", user_y["id"], [a, c]))
        path = "/v1/products/recommendations?userId=" + user_y["id"]

        def recs():
            d = self.assertOk(self.call("GET", path, user_y["token"]))
            # B is top rated too (nothing is rated): wait for the reason as
            # well, which only changes once both orders were consumed.
            return d if d and d[0]["id"] == b and d[0]["reason"] == "boughtTogether" else None
        d = self.wait_until(recs, what="bought-together recommendations")
        self.assertEqual(d[0]["reason"], "boughtTogether")
        got = [p["id"] for p in d]
        self.assertNotIn(a, got)
        self.assertNotIn(c, got)
        self.assertLessEqual(len(d), 10)
        self.assertTrue(all(p["reason"] == "topRated" for p in d[1:]), d)
        self.assertEqual(len(set(got)), len(got))
        # Someone else's purchases are theirs.
        self.assertEnvelopeError(self.call("GET", path, user_x["token"]), 403)
        self.assertEnvelopeError(self.call("GET", path), 401)
        self.assertEnvelopeError(self.call("GET", "/v1/products/recommendations?userId=%FF",
                                           self.admin["token"]), 422)
        self.assertOk(self.call("GET", path, self.admin["token"]))
        # Without a user: the top-rated active products.
        top = self.assertOk(self.call("GET", "/v1/products/recommendations"))
        self.assertLessEqual(len(top), 10)
        ratings = [p["rating"] for p in top]
        self.assertEqual(ratings, sorted(ratings, reverse=True))
        self.assertTrue(all(p["isActive"] for p in top))

    def test_demo_loader(self):
        url = "http://127.0.0.1:%d" % self.catalog.port
        run = lambda: subprocess.run([sys.executable, LOAD_DEMO, "--catalog", url,
                                      "--token", self.admin["token"]],
                                     capture_output=True, text=True, timeout=harness.scaled(120))
        p = run()
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        with open(os.path.join(ROOT, "services", "catalog", "demo", "catalog.json")) as f:
            doc = json.load(f)
        self.assertGreaterEqual(len(doc["products"]), 30)
        self.assertGreaterEqual(len(doc["categories"]), 4)
        cats = {c["slug"]: c for c in self.assertOk(self.call("GET", "/v1/categories"))}
        total = 0
        for c in doc["categories"]:
            n = self.list("category=%s&limit=1" % c["slug"])["pagination"]["total"]
            self.assertEqual(n, sum(1 for x in doc["products"] if x["category"] == c["slug"]))
            self.assertEqual(cats[c["slug"]]["productCount"], n)
            total += n
        self.assertEqual(total, len(doc["products"]))
        self.assertTrue(self.ids("q=espresso"))
        self.assertTrue(self.ids("category=books&inStock=false"))
        # Again: nothing new.
        p = run()
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("0 products created", p.stdout)
        # A customer's token cannot load it.
        p = subprocess.run([sys.executable, LOAD_DEMO, "--catalog", url,
                            "--token", self.alice["token"]],
                           capture_output=True, text=True, timeout=harness.scaled(60))
        self.assertNotEqual(p.returncode, 0)

    def test_openapi_and_health(self):
        r = self.call("GET", "/openapi.json")
        self.assertEqual(r.status, 200)
        doc = r.json()
        self.assertTrue(doc["openapi"].startswith("3."))
        for path, methods in {"/v1/products": ("get", "post"),
                              "/v1/products/{id}": ("get", "put", "delete"),
                              "/v1/products/{id}/reviews": ("get", "post"),
                              "/v1/products/recommendations": ("get",),
                              "/v1/categories": ("get", "post")}.items():
            for m in methods:
                self.assertIn(m, doc["paths"][path], (path, m))
        # The engine's own search migration ran (the PostgreSQL run proves 002_search.postgres.sql).
        engine = "postgres" if os.environ.get("AGORA_TEST_CATALOG_STORE") == "postgres" else "sqlite"
        applied = [r.get("file") for r in self.catalog.log_records()
                   if r.get("msg") == "migration applied"]
        self.assertEqual(applied, ["001_catalog.sql", "002_search.%s.sql" % engine])
        self.assertEqual(self.call("GET", "/health").status, 200)
        self.assertEqual(self.call("GET", "/ready").status, 200)
        r = self.call("PATCH", "/v1/products")
        self.assertEqual(r.status, 405)


def nats_review(nats, pid):
    return nats.wait_for(lambda e: e["type"] == "review.created" and e["subject"] == pid)


if __name__ == "__main__":
    harness.main()
