"""Checkout end to end, through agora-gateway, with real agora-users, catalog,
inventory, payments, cart and orders on the store and bus of the run
(stack.py): what a customer and an admin observe.

  - a happy checkout: CONFIRMED, stock committed, one charge, the history's
    events, the saga's three steps, order.* on the bus
  - a declined card: CANCELLED with CARD_DECLINED, stock released
  - insufficient stock: CANCELLED, nothing charged
  - a payment timeout: the charge step is tried again, then compensated
  - a cancel after confirmation: refunded in full, the stock comes back
  - the same Idempotency-Key twice: one order, one charge; with another
    body: 409
  - from the cart: priced by catalog, the cart emptied after confirmation
  - admin status moves; no cancel once shipped; customers cannot move it
  - user.deleted cancels that user's pending order
  - the projection rebuilt from the events matches (and repairs a row
    changed behind its back, on SQLite)
  - validation, authentication and ownership errors
"""

import os
import sqlite3
import sys
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import stack as st  # noqa: E402

VISA = "4242424242424242"
DECLINED = "4000000000000002"
NO_FUNDS = "4000000000009995"
TIMEOUT = "4000000000000119"


class Checkout(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = st.Stack("checkout", env={
            "AGORA_STEP_DEADLINE": "1500ms",
            "AGORA_SAGA_BACKOFF": "50ms",
            "AGORA_SAGA_BACKOFF_MAX": "400ms",
            "AGORA_PAYMENTS_PROVIDER_TIMEOUT": "700ms",
        }, services=["users", "catalog", "inventory", "payments", "cart", "orders"]).start()
        cls.admin = cls.s.login(st.ADMIN_EMAIL, st.ADMIN_PASSWORD)

    @classmethod
    def tearDownClass(cls):
        st.stop_or_raise(cls.s)

    def setUp(self):
        self.alice = self.s.register("alice")

    def history(self, user, oid):
        return [e["type"] for e in
                self.s.ok(self.s.call("GET", "/api/v1/orders/%s/history" % oid,
                                      user["token"]))["events"]]

    def saga(self, oid):
        return self.s.ok(self.s.call("GET", "/api/v1/sagas/" + oid, self.admin["token"]))

    def test_happy_checkout(self):
        pid = self.s.product(self.admin, 1999, 10)
        r = self.s.order(self.alice, [(pid, 2)], wait=20)
        o = r.json()["data"]
        self.assertEqual(r.header("Preference-Applied"), "wait=20")
        self.assertTrue(r.header("Location").endswith(o["id"]))
        self.assertEqual(o["status"], "CONFIRMED", o)
        self.assertEqual(o["totalCents"], 3998)
        self.assertEqual(o["currency"], "USD")
        self.assertEqual(o["items"][0]["unitPriceCents"], 1999)
        self.assertEqual(o["paymentMethod"], {"type": "card", "brand": "visa", "last4": "4242",
                                              "expMonth": 12,
                                              "expYear": time.gmtime().tm_year + 2})
        self.assertNotIn(VISA, r.body.decode())
        stock = self.s.stock(self.admin, pid)
        self.assertEqual((stock["quantity"], stock["reserved"]), (8, 0))
        pays = self.s.payments_of(self.admin, o["id"])
        self.assertEqual([(p["status"], p["amountCents"]) for p in pays], [("SUCCEEDED", 3998)])
        self.assertEqual(o["paymentId"], pays[0]["id"])
        self.assertEqual(self.history(self.alice, o["id"]),
                         ["OrderPlaced", "StockReserved", "PaymentCharged", "OrderConfirmed"])
        sg = self.saga(o["id"])
        self.assertEqual(sg["state"], "COMPLETED")
        self.assertEqual([x["name"] for x in sg["steps"]], ["reserve", "charge", "confirm"])
        self.assertIsNone(sg["cancellation"])
        # Listed for its owner, not for another customer.
        mine = self.s.ok(self.s.call("GET", "/api/v1/orders", self.alice["token"]))
        self.assertEqual([x["id"] for x in mine], [o["id"]])
        bob = self.s.register("bob")
        self.assertEqual(self.s.ok(self.s.call("GET", "/api/v1/orders", bob["token"])), [])
        self.assertEqual(self.s.call("GET", "/api/v1/orders/" + o["id"], bob["token"]).status,
                         404)

    def test_pending_answer_then_confirmed(self):
        pid = self.s.product(self.admin, 500, 5)
        o = self.s.order(self.alice, [(pid, 1)]).json()["data"]
        self.assertEqual(o["status"], "PENDING")
        self.assertEqual(self.s.wait_final(self.alice, o["id"])["status"], "CONFIRMED")

    def test_declined_card_cancels_and_releases(self):
        pid = self.s.product(self.admin, 1000, 4)
        for number, code in ((DECLINED, "CARD_DECLINED"), (NO_FUNDS, "INSUFFICIENT_FUNDS")):
            o = self.s.order(self.alice, [(pid, 3)], st.card(number), wait=20).json()["data"]
            self.assertEqual(o["status"], "CANCELLED", o)
            self.assertIn(code, o["reason"])
            stock = self.s.stock(self.admin, pid)
            self.assertEqual((stock["quantity"], stock["reserved"]), (4, 0))
            pays = self.s.payments_of(self.admin, o["id"])
            self.assertEqual([p["status"] for p in pays], ["FAILED"])
            self.assertEqual(self.history(self.alice, o["id"]),
                             ["OrderPlaced", "StockReserved", "OrderCancelled"])

    def test_insufficient_stock_charges_nothing(self):
        pid = self.s.product(self.admin, 700, 1)
        o = self.s.order(self.alice, [(pid, 2)], wait=20).json()["data"]
        self.assertEqual(o["status"], "CANCELLED")
        self.assertIn("INSUFFICIENT_STOCK", o["reason"])
        self.assertEqual(self.s.payments_of(self.admin, o["id"]), [])
        self.assertEqual(self.s.stock(self.admin, pid)["reserved"], 0)

    def test_payment_timeout_retries_then_compensates(self):
        pid = self.s.product(self.admin, 900, 3)
        o = self.s.order(self.alice, [(pid, 1)], st.card(TIMEOUT)).json()["data"]
        final = self.s.wait_final(self.alice, o["id"], timeout=60)
        self.assertEqual(final["status"], "CANCELLED")
        self.assertIn("PROVIDER_TIMEOUT", final["reason"])
        sg = self.saga(o["id"])
        charge = [x for x in sg["steps"] if x["name"] == "charge"][0]
        self.assertEqual(charge["attempts"], 4)
        self.assertEqual(sg["state"], "COMPENSATED")
        self.assertEqual(self.s.payments_of(self.admin, o["id"]), [])
        stock = self.s.stock(self.admin, pid)
        self.assertEqual((stock["quantity"], stock["reserved"]), (3, 0))

    def test_cancel_after_confirmation_refunds_and_restocks(self):
        pid = self.s.product(self.admin, 2500, 6)
        o = self.s.order(self.alice, [(pid, 2)], wait=20).json()["data"]
        self.assertEqual(o["status"], "CONFIRMED")
        self.assertEqual(self.s.stock(self.admin, pid)["quantity"], 4)
        r = self.s.call("POST", "/api/v1/orders/%s/cancel" % o["id"], self.alice["token"],
                        headers={"Prefer": "wait=20"})
        self.assertEqual(r.status, 202, r)
        self.assertEqual(r.json()["data"]["status"], "CANCELLED")
        self.assertEqual(r.json()["data"]["reason"], "cancelled by the customer")
        pays = self.s.payments_of(self.admin, o["id"])
        self.assertEqual([(p["status"], p["refundedCents"]) for p in pays], [("SUCCEEDED", 5000)])
        self.assertEqual(self.s.stock(self.admin, pid)["quantity"], 6)
        self.assertEqual(self.history(self.alice, o["id"])[-2:],
                         ["CancellationStarted", "OrderCancelled"])
        self.assertEqual(self.saga(o["id"])["cancellation"]["state"], "COMPLETED")
        # Again: nothing more happens.
        r = self.s.call("POST", "/api/v1/orders/%s/cancel" % o["id"], self.alice["token"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.s.payments_of(self.admin, o["id"])[0]["refundedCents"], 5000)

    def test_idempotency_key(self):
        pid = self.s.product(self.admin, 300, 10)
        key = uuid.uuid4().hex
        first = self.s.order(self.alice, [(pid, 1)], key=key, wait=20)
        second = self.s.order(self.alice, [(pid, 1)], key=key, wait=20)
        self.assertEqual(first.json()["data"]["id"], second.json()["data"]["id"])
        self.assertEqual(second.header("Idempotent-Replayed"), "true")
        self.assertEqual(len(self.s.payments_of(self.admin, first.json()["data"]["id"])), 1)
        self.assertEqual(self.s.stock(self.admin, pid)["quantity"], 9)
        r = self.s.order(self.alice, [(pid, 2)], key=key, status=409)
        self.assertEqual(r.json()["error"]["code"], "IDEMPOTENCY_CONFLICT")
        # Another customer's same key is theirs alone.
        bob = self.s.register("bob")
        other = self.s.order(bob, [(pid, 1)], key=key, wait=20).json()["data"]
        self.assertNotEqual(other["id"], first.json()["data"]["id"])

    def test_from_cart(self):
        a = self.s.product(self.admin, 1200, 5)
        b = self.s.product(self.admin, 800, 5)
        for pid, q in ((a, 1), (b, 3)):
            self.s.ok(self.s.call("POST", "/api/v1/cart/items", self.alice["token"],
                                  {"productId": pid, "quantity": q}), 201)
        o = self.s.order(self.alice, from_cart=True, wait=20).json()["data"]
        self.assertEqual(o["status"], "CONFIRMED", o)
        self.assertTrue(o["fromCart"])
        self.assertEqual(o["totalCents"], 1200 + 3 * 800)
        st.wait_until(lambda: self.s.ok(self.s.call("GET", "/api/v1/cart",
                                                    self.alice["token"]))["items"] == [],
                      "the cart to be cleared by order.confirmed")
        r = self.s.order(self.alice, from_cart=True, status=409)
        self.assertEqual(r.json()["error"]["code"], "CART_EMPTY")

    def test_admin_status_moves(self):
        pid = self.s.product(self.admin, 100, 5)
        o = self.s.order(self.alice, [(pid, 1)], wait=20).json()["data"]
        path = "/api/v1/orders/%s/status" % o["id"]
        self.assertEqual(self.s.call("PUT", path, self.alice["token"],
                                     {"status": "SHIPPED"}).status, 403)
        r = self.s.call("PUT", path, self.admin["token"], {"status": "DELIVERED"})
        self.assertEqual((r.status, r.json()["error"]["code"]), (409, "INVALID_STATE"))
        self.assertEqual(self.s.call("PUT", path, self.admin["token"],
                                     {"status": "LOST"}).status, 422)
        d = self.s.ok(self.s.call("PUT", path, self.admin["token"], {"status": "SHIPPED"}))
        self.assertEqual(d["status"], "SHIPPED")
        r = self.s.call("POST", "/api/v1/orders/%s/cancel" % o["id"], self.alice["token"])
        self.assertEqual((r.status, r.json()["error"]["code"]), (409, "INVALID_STATE"))
        d = self.s.ok(self.s.call("PUT", path, self.admin["token"], {"status": "DELIVERED"}))
        self.assertEqual(d["status"], "DELIVERED")
        self.assertEqual(self.history(self.alice, o["id"])[-2:], ["OrderShipped", "OrderDelivered"])
        listed = self.s.ok(self.s.call("GET", "/api/v1/orders?status=DELIVERED&userId=%s"
                                       % self.alice["id"], self.admin["token"]))
        self.assertEqual([x["id"] for x in listed], [o["id"]])

    def test_user_deleted_cancels_pending_orders(self):
        pid = self.s.product(self.admin, 100, 5)
        # A timing-out card keeps the order PENDING for a few seconds.
        o = self.s.order(self.alice, [(pid, 1)], st.card(TIMEOUT)).json()["data"]
        r = self.s.call("DELETE", "/api/v1/users/" + self.alice["id"], self.admin["token"])
        self.assertIn(r.status, (200, 204), r)
        final = {}

        def cancelled():
            final["o"] = self.s.ok(self.s.call("GET", "/api/v1/orders/" + o["id"],
                                               self.admin["token"]))
            return final["o"]["status"] == "CANCELLED"
        st.wait_until(cancelled, "the deleted user's order to be cancelled", 60)
        self.assertIn("account was deleted", final["o"]["reason"])
        self.assertEqual(self.s.stock(self.admin, pid)["reserved"], 0)

    def test_rebuild_matches_history(self):
        pid = self.s.product(self.admin, 100, 5)
        o = self.s.order(self.alice, [(pid, 1)], wait=20).json()["data"]
        d = self.s.ok(self.s.call("POST", "/api/v1/admin/orders/rebuild", self.admin["token"]))
        self.assertGreaterEqual(d["checked"], 1)
        self.assertEqual(d["changed"], 0)
        if self.s.store == "sqlite":  # change the row behind the service's back
            db = sqlite3.connect(self.s.db_url("orders")[len("sqlite:"):])
            db.execute("UPDATE orders SET status = 'PENDING' WHERE id = ?", (o["id"],))
            db.commit()
            db.close()
            self.assertEqual(self.s.get_order(self.alice, o["id"])["status"], "PENDING")
            d = self.s.ok(self.s.call("POST", "/api/v1/admin/orders/rebuild?orderId=" + o["id"],
                                      self.admin["token"]))
            self.assertEqual((d["checked"], d["changed"]), (1, 1))
        self.assertEqual(self.s.get_order(self.alice, o["id"]), o)
        self.assertEqual(self.s.call("POST", "/api/v1/admin/orders/rebuild",
                                     self.alice["token"]).status, 403)

    def test_bad_requests_change_nothing(self):
        pid = self.s.product(self.admin, 100, 5)
        tok = self.alice["token"]
        body = {"items": [{"productId": pid, "quantity": 1}], "shippingAddress": st.address(),
                "paymentMethod": st.card(VISA)}
        r = self.s.call("POST", "/api/v1/orders", tok, body)
        self.assertEqual((r.status, r.json()["error"]["code"]), (400, "IDEMPOTENCY_KEY_REQUIRED"))
        self.assertEqual(self.s.call("POST", "/api/v1/orders", None, body,
                                     {"Idempotency-Key": "k"}).status, 401)

        def bad(change, status=422):
            b = dict(body)
            b.update(change)
            r = self.s.call("POST", "/api/v1/orders", tok, b,
                            {"Idempotency-Key": uuid.uuid4().hex})
            self.assertEqual(r.status, status, (change, r))
            self.assertNotIn("4242424242424241", r.body.decode())
            return r
        bad({"paymentMethod": dict(st.card("4242424242424241"))})  # Luhn
        bad({"paymentMethod": {"type": "cash"}})
        bad({"items": []})
        bad({"items": [{"productId": pid, "quantity": 100}]})
        bad({"items": [{"productId": pid, "quantity": 1}, {"productId": pid, "quantity": 2}]})
        bad({"items": [{"productId": pid, "quantity": 1, "priceCents": 1}]})
        bad({"shippingAddress": {"name": "x"}})
        bad({"fromCart": True})
        r = bad({"items": [{"productId": "no-such-product", "quantity": 1}]}, 404)
        self.assertEqual(r.json()["error"]["code"], "PRODUCT_NOT_FOUND")
        self.assertEqual(self.s.ok(self.s.call("GET", "/api/v1/orders", tok)), [])
        self.assertEqual(self.s.stock(self.admin, pid)["reserved"], 0)
        self.assertEqual(self.s.call("GET", "/api/v1/orders/nope", tok).status, 404)
        self.assertEqual(self.s.call("GET", "/api/v1/sagas/nope", tok).status, 403)

    def test_openapi_describes_every_route(self):
        r = self.s.call("GET", "/openapi.json", port=self.s.ports["orders"])
        paths = r.json()["paths"]
        for p in ("/v1/orders", "/v1/orders/{id}", "/v1/orders/{id}/cancel",
                  "/v1/orders/{id}/status", "/v1/orders/{id}/history", "/v1/sagas/{orderId}",
                  "/v1/admin/orders/rebuild"):
            self.assertIn(p, paths)


if __name__ == "__main__":
    unittest.main(verbosity=2)
