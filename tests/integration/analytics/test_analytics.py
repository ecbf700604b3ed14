"""agora-analytics against the system that feeds it, through agora-gateway,
on the store and bus of the run (stack.py): what an admin observes.

  - 1,000 orders through checkout (accepted and declined cards, a product
    that runs out, orders from carts, customer cancels after confirmation,
    shipped and delivered ones), carts that never became orders and a chat
    room: once the read model has caught up, its orders by status, revenue
    by day and currency, top products by units and revenue and the
    conversion funnel equal what agora-orders' own database says, and the
    room's activity equals what was sent
  - rebuilt from its journal with one admin call, every answer is identical
  - a rebuild while orders are still flowing loses nothing: once quiet,
    the numbers equal the orders database again
  - admins only (401 without a token, 403 for a customer), 422 for bad
    query parameters
"""

import os
import random
import sqlite3
import subprocess
import sys
import threading
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import stack as st  # noqa: E402

VISA = "4242424242424242"
DECLINED = "4000000000000002"
ORDERS = 1000
KEPT = ("CONFIRMED", "SHIPPED", "DELIVERED")
QUERIES = ["/api/v1/analytics/orders", "/api/v1/analytics/revenue",
           "/api/v1/analytics/products/top?by=units&limit=100",
           "/api/v1/analytics/products/top?by=revenue&limit=100",
           "/api/v1/analytics/conversion", "/api/v1/analytics/users/active?days=7",
           "/api/v1/analytics/rooms?limit=100"]


class Analytics(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = st.Stack("analytics", services=[
            "users", "catalog", "inventory", "payments", "cart", "orders", "rooms", "messages",
            "analytics"]).start()
        cls.admin = cls.s.login(st.ADMIN_EMAIL, st.ADMIN_PASSWORD)

    @classmethod
    def tearDownClass(cls):
        st.stop_or_raise(cls.s)

    # -- the orders database, read directly ------------------------------------------------

    def orders_db(self, sql):
        url = self.s.dbs["orders"]
        if url.startswith("sqlite:"):
            con = sqlite3.connect(url[len("sqlite:"):], timeout=30)
            try:
                return [tuple(r) for r in con.execute(sql).fetchall()]
            finally:
                con.close()
        out = subprocess.run(["psql", url, "-At", "-F", "\t", "-c", sql], check=True,
                             capture_output=True, text=True, timeout=60).stdout
        return [tuple(c if not c.lstrip("-").isdigit() else int(c) for c in line.split("\t"))
                for line in out.splitlines() if line]

    def truth(self, cart_users):
        """What the orders database says, in the analytics' shapes."""
        kept = "('%s')" % "', '".join(KEPT)
        by_status = {k: 0 for k in ("PENDING", "CONFIRMED", "SHIPPED", "DELIVERED", "CANCELLED")}
        total = 0
        for status, n in self.orders_db("SELECT status, COUNT(*) FROM orders GROUP BY status"):
            by_status[status] = n
            total += n
        revenue = [{"day": d, "currency": c, "orders": n, "revenueCents": cents}
                   for d, c, n, cents in self.orders_db(
                       "SELECT substr(created_at, 1, 10), currency, COUNT(*), SUM(total_cents) "
                       "FROM orders WHERE status IN %s GROUP BY 1, 2 ORDER BY 1, 2" % kept)]
        lines = {(p, c): (u, r) for p, c, u, r in self.orders_db(
            "SELECT i.product_id, o.currency, SUM(i.quantity), "
            "SUM(i.quantity * i.unit_price_cents) FROM order_items i "
            "JOIN orders o ON o.id = i.order_id WHERE o.status IN %s GROUP BY 1, 2" % kept)}
        users = {u: set() for (u,) in self.orders_db("SELECT DISTINCT user_id FROM orders")}
        for u, status in self.orders_db("SELECT user_id, status FROM orders"):
            users[u].add(status)
        carts = len(cart_users)
        ordered = sum(1 for u in cart_users if u in users)
        confirmed = sum(1 for u in cart_users if users.get(u, set()) & set(KEPT))
        n_kept = sum(by_status[k] for k in KEPT)
        return {"orders": {"total": total, "byStatus": by_status}, "revenue": revenue,
                "lines": lines,
                "conversion": {"carts": carts, "cartsOrdered": ordered,
                               "cartsConfirmed": confirmed, "orders": total, "confirmed": n_kept}}

    # -- the analytics' answers ------------------------------------------------------------

    def get(self, path):
        return self.s.ok(self.s.call("GET", path, self.admin["token"]))

    def answers(self):
        return {q: self.get(q) for q in QUERIES}

    def caught_up(self, total):
        """The read model has every order, none of them still moving."""
        def done():
            o = self.get("/api/v1/analytics/orders")
            return o["total"] == total and o["byStatus"]["PENDING"] == 0
        st.wait_until(done, "the read model to catch up with %d orders" % total, timeout=180)

    def assert_equal_to_orders(self, cart_users):
        t = self.truth(cart_users)
        self.assertEqual(self.get("/api/v1/analytics/orders"), t["orders"])
        self.assertEqual(self.get("/api/v1/analytics/revenue"), t["revenue"])
        for by in ("units", "revenue"):
            top = self.get("/api/v1/analytics/products/top?by=%s&limit=100" % by)
            got = {(p["productId"], p["currency"]): (p["units"], p["revenueCents"]) for p in top}
            self.assertEqual(got, t["lines"], by)
            key = [p["units" if by == "units" else "revenueCents"] for p in top]
            self.assertEqual(key, sorted(key, reverse=True), "top products by %s in order" % by)
        conv = self.get("/api/v1/analytics/conversion")
        for k, v in t["conversion"].items():
            self.assertEqual(conv[k], v, "conversion %s" % k)
        self.assertAlmostEqual(conv["orderToConfirmed"],
                               t["conversion"]["confirmed"] / t["conversion"]["orders"], places=3)
        return t

    # -- the traffic -----------------------------------------------------------------------

    def place(self, user, items, number, from_cart=False):
        """POST /api/v1/orders until it is accepted (201); its id."""
        for _ in range(20):
            r = self.s.order(user, items=items, method=st.card(number), from_cart=from_cart,
                             status=None)
            if r.status == 201:
                return r.data["id"]
            if r.status not in (429, 503):
                raise AssertionError("order: %r" % r)
        raise AssertionError("order never accepted: %r" % r)

    def traffic(self, users, products, scarce, n, seed):
        """`n` orders from `users` on 4 threads; returns the ids."""
        rng = random.Random(seed)
        plan = []
        for i in range(n):
            items = [(p, rng.randint(1, 3)) for p in rng.sample(products, rng.randint(1, 3))]
            if rng.random() < 0.05:
                items.append((scarce, 1))
            plan.append((users[i % len(users)], items,
                         DECLINED if rng.random() < 0.1 else VISA))
        ids, errors, lock = [], [], threading.Lock()

        def worker(k):
            try:
                for j in range(k, n, 4):
                    oid = self.place(*plan[j])
                    with lock:
                        ids.append(oid)
            except Exception as e:  # noqa: BLE001 — reported below
                errors.append(e)
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return ids

    def test_read_model(self):
        s, admin = self.s, self.admin
        products = [s.product(admin, price, 1000000) for price in (199, 1250, 4999, 99, 15000)]
        scarce = s.product(admin, 700, 10)
        users = [s.register("buyer") for _ in range(20)]
        # Carts: some become orders, some never do.
        cart_users = set()
        for u in users[:4] + [s.register("browser") for _ in range(3)]:
            s.ok(s.call("POST", "/api/v1/cart/items", u["token"],
                        {"productId": products[0], "quantity": 2}), 201)
            cart_users.add(u["id"])
        from_cart = [self.place(u, None, VISA, from_cart=True) for u in users[:2]]
        ids = from_cart + self.traffic(users, products, scarce, ORDERS - len(from_cart), 17)
        self.assertEqual(len(ids), ORDERS)
        # Every order ends; then a few move on: cancelled after confirmation
        # (refunded), shipped, delivered.
        st.wait_until(lambda: not self.orders_db(
            "SELECT 1 FROM orders WHERE status IN ('PENDING', 'CANCELLING') LIMIT 1"),
            "every order to end", timeout=300)
        confirmed = [oid for (oid,) in self.orders_db(
            "SELECT id FROM orders WHERE status = 'CONFIRMED' ORDER BY id")]
        self.assertGreater(len(confirmed), ORDERS // 2)
        owner = {oid: u for oid, u in self.orders_db("SELECT id, user_id FROM orders")}
        tokens = {u["id"]: u for u in users}
        for oid in confirmed[:5]:
            s.ok(s.call("POST", "/api/v1/orders/%s/cancel" % oid, tokens[owner[oid]]["token"],
                        {"reason": "changed my mind"}), 202)
        for oid in confirmed[5:15]:
            s.ok(s.call("PUT", "/api/v1/orders/%s/status" % oid, admin["token"],
                        {"status": "SHIPPED"}))
        for oid in confirmed[5:10]:
            s.ok(s.call("PUT", "/api/v1/orders/%s/status" % oid, admin["token"],
                        {"status": "DELIVERED"}))
        st.wait_until(lambda: not self.orders_db(
            "SELECT 1 FROM orders WHERE status IN ('PENDING', 'CANCELLING') LIMIT 1"),
            "the cancels to end", timeout=120)
        # A chat room: 5 messages from two people, one deleted.
        alice, bob = users[0], users[1]
        room = s.ok(s.call("POST", "/api/v1/rooms", alice["token"],
                           {"name": "analytics " + uuid.uuid4().hex[:6], "isPrivate": False}), 201)
        s.ok(s.call("POST", "/api/v1/rooms/%s/join" % room["id"], bob["token"]))
        sent = []
        for i, u in enumerate([alice, bob, alice, bob, alice]):
            def send(u=u, i=i):
                r = s.call("POST", "/api/v1/messages", u["token"],
                           {"roomId": room["id"], "content": "hello %d" % i})
                if r.status == 201:
                    sent.append(r.data["id"])
                return r.status == 201
            st.wait_until(send, "message %d to be accepted" % i)
        s.ok(s.call("DELETE", "/api/v1/messages/" + sent[0], alice["token"]))

        # The read model catches up and equals the orders database.
        self.caught_up(ORDERS)
        t = self.assert_equal_to_orders(cart_users)
        self.assertGreater(t["orders"]["byStatus"]["CANCELLED"], 0)
        self.assertEqual(t["orders"]["byStatus"]["DELIVERED"], 5)
        self.assertEqual(self.get("/api/v1/analytics/conversion")["carts"], 7)

        def room_seen():
            rooms = {r["roomId"]: r for r in self.get("/api/v1/analytics/rooms?limit=100")}
            r = rooms.get(room["id"])
            return r and r["messages"] == 5 and r["messagesDeleted"] == 1
        st.wait_until(room_seen, "the room's messages in the read model")
        r = {r["roomId"]: r for r in self.get("/api/v1/analytics/rooms")}[room["id"]]
        self.assertEqual((r["name"], r["senders"], r["deleted"]), (room["name"], 2, False))
        everyone = {u["id"] for u in users} | cart_users
        # The read model follows the events: wait for every user's.
        st.wait_until(lambda: self.get("/api/v1/analytics/users/active?days=1")["activeUsers"]
                      >= len(everyone), "every buyer and browser active in the read model")
        active = self.get("/api/v1/analytics/users/active?days=1")
        # Every buyer and browser was active today; beyond them, only people
        # who registered (another test's) and the admin, who signed in.
        self.assertGreaterEqual(active["registered"], len(everyone))
        self.assertGreaterEqual(active["activeUsers"], len(everyone))
        self.assertLessEqual(active["activeUsers"], active["registered"] + 1)
        self.assertEqual(active["byDay"][-1]["users"], active["activeUsers"])
        summary = self.get("/api/v1/analytics/summary")
        self.assertEqual(summary["orders"], t["orders"])
        self.assertGreaterEqual(summary["journal"]["events"], ORDERS * 2)

        # Rebuilt from the journal: identical.
        before = self.answers()
        r = s.ok(s.call("POST", "/api/v1/admin/analytics/rebuild", admin["token"]))
        self.assertEqual(r["events"], summary["journal"]["events"])
        self.assertEqual(self.answers(), before)

        # A rebuild while orders flow loses nothing.
        more = []
        flow = threading.Thread(target=lambda: more.extend(
            self.traffic(users, products, scarce, 40, 18)))
        flow.start()
        rebuilt = s.ok(s.call("POST", "/api/v1/admin/analytics/rebuild", admin["token"]))
        flow.join()
        self.assertGreaterEqual(rebuilt["events"], summary["journal"]["events"])
        st.wait_until(lambda: not self.orders_db(
            "SELECT 1 FROM orders WHERE status IN ('PENDING', 'CANCELLING') LIMIT 1"),
            "the last orders to end", timeout=120)
        self.caught_up(ORDERS + 40)
        self.assert_equal_to_orders(cart_users)

    def test_admins_only_and_bad_parameters(self):
        s = self.s
        customer = s.register("curious")
        for path in QUERIES + ["/api/v1/analytics/summary"]:
            self.assertEqual(s.call("GET", path).status, 401, path)
            r = s.call("GET", path, customer["token"])
            self.assertEqual(r.status, 403, path)
        r = s.call("POST", "/api/v1/admin/analytics/rebuild", customer["token"])
        self.assertEqual(r.status, 403)
        for path, field in [("/api/v1/analytics/revenue?from=yesterday", "from"),
                            ("/api/v1/analytics/revenue?to=2026-1-1", "to"),
                            ("/api/v1/analytics/products/top?by=love", "by"),
                            ("/api/v1/analytics/products/top?limit=0", "limit"),
                            ("/api/v1/analytics/users/active?days=400", "days"),
                            ("/api/v1/analytics/rooms?limit=x", "limit")]:
            r = s.call("GET", path, self.admin["token"])
            self.assertEqual(r.status, 422, path)
            self.assertEqual(r.json()["error"]["code"], "VALIDATION_FAILED")
            self.assertIn(field, [d["field"] for d in r.json()["error"]["details"]], path)
        # Straight at the service's port, a customer is refused the same way.
        r = s.call("GET", "/v1/analytics/orders", customer["token"],
                   port=s.ports["analytics"])
        self.assertEqual(r.status, 403)


if __name__ == "__main__":
    unittest.main(verbosity=2)
