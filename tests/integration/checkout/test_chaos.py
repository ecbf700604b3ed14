"""Checkout under failure: concurrent customers buy a few low-stock products
through the gateway while orders, inventory, payments and the broker are
killed with SIGKILL at random moments and started again. Afterwards the
invariants of DESIGN.md §7 must hold:

  - every accepted order (a 201) reaches CONFIRMED or CANCELLED;
  - stock is never oversold: each product's units taken out of stock equal
    the units of its CONFIRMED orders, never more than it had, and nothing
    stays reserved;
  - no order is charged without being confirmed or refunded: a CONFIRMED
    order has exactly one successful, unrefunded payment of its total; a
    CANCELLED order's successful payments are refunded in full;
  - no event is lost or duplicated where a customer sees it: each order's
    outcome appears exactly once among its owner's notifications (when
    agora-notifications is part of the run).

A client retries a request that got no answer (or a 5xx) with the same
Idempotency-Key, as a real client would; an order counts as accepted once a
201 came back. The random seed is printed so a failure can be replayed
(AGORA_CHAOS_SEED).
"""

import os
import random
import subprocess
import sys
import threading
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import stack as st  # noqa: E402

RUN_S = float(os.environ.get("AGORA_CHAOS_SECONDS", "25"))
CUSTOMERS = 6
STOCK = [6, 4, 5]


class Chaos(unittest.TestCase):
    def test_invariants_hold_under_kills(self):
        seed = int(os.environ.get("AGORA_CHAOS_SEED", str(int(time.time()))))
        print("chaos seed", seed, flush=True)
        rnd = random.Random(seed)
        s = st.Stack("chaos", env={
            "AGORA_STEP_DEADLINE": "2s",
            "AGORA_SAGA_BACKOFF": "100ms",
            "AGORA_SAGA_BACKOFF_MAX": "1s",
            "AGORA_PAYMENTS_PROVIDER_TIMEOUT": "1s",
            "AGORA_BREAKER_OPEN": "300ms",
            "AGORA_BREAKER_MAX_OPEN": "1s",
        }).start()
        problems = []
        try:
            self.run_chaos(s, rnd)
        finally:
            problems = s.stop()
            # Printed even when the run itself failed: a service that died
            # on its own (not killed by the test) is the likely cause.
            for p in problems:
                print("stack:", p, file=sys.stderr, flush=True)
        # A service killed by the test is not a problem; one that did not
        # stop cleanly at the end is.
        self.assertEqual(problems, [])

    def run_chaos(self, s, rnd):
        admin = s.login(st.ADMIN_EMAIL, st.ADMIN_PASSWORD)
        products = [s.product(admin, 1000 + 100 * i, n) for i, n in enumerate(STOCK)]
        customers = [s.register("c%d" % i) for i in range(CUSTOMERS)]
        accepted = []  # (customer, order id)
        lock = threading.Lock()
        stop = threading.Event()

        def shop(cust, seed):
            r = random.Random(seed)
            while not stop.is_set():
                pid = r.choice(products)
                kind = r.random()
                if kind < 0.6:
                    method = {"type": "wallet", "walletId": "w-" + cust["id"][:8]}
                elif kind < 0.8:
                    method = st.card("4242424242424242")
                elif kind < 0.9:
                    method = {"type": "wallet", "walletId": "empty-" + cust["id"][:8]}
                else:
                    method = st.card("4000000000000002")
                key = uuid.uuid4().hex
                body = {"items": [{"productId": pid, "quantity": r.randint(1, 2)}],
                        "shippingAddress": st.address(), "paymentMethod": method}
                give_up = time.time() + 30
                while time.time() < give_up:
                    try:
                        rep = s.call("POST", "/api/v1/orders", cust["token"], body,
                                     {"Idempotency-Key": key}, timeout=15)
                    except OSError:
                        time.sleep(0.2)
                        continue
                    if rep.status == 201:
                        with lock:
                            accepted.append((cust, rep.json()["data"]["id"]))
                        break
                    if rep.status < 500:
                        raise AssertionError("order refused: %r" % rep)
                    time.sleep(0.2)
                time.sleep(r.uniform(0.05, 0.3))

        ctl = os.environ.get("AGORA_TEST_HARNESS_CTL")
        broker = "rabbitmq" if s.bus_kind == "rabbitmq" else "nats"

        def chaos():
            while not stop.wait(rnd.uniform(1.5, 3.0)):
                victim = rnd.choice(["orders", "orders", "inventory", "payments", "broker"])
                down = rnd.uniform(0.2, 1.5)
                print("chaos: killing", victim, "for %.1fs" % down, flush=True)
                if victim == "broker":
                    subprocess.run([ctl, "kill", broker], check=True)
                    time.sleep(down)
                    subprocess.run([ctl, "start", broker], check=True)
                else:
                    s.kill(victim)
                    time.sleep(down)
                    s.restart(victim)

        shoppers = [threading.Thread(target=shop, args=(c, rnd.random())) for c in customers]
        monkey = threading.Thread(target=chaos)
        for t in shoppers + [monkey]:
            t.start()
        time.sleep(RUN_S)
        stop.set()
        for t in shoppers + [monkey]:
            t.join(timeout=120)
        print("accepted orders:", len(accepted), flush=True)
        self.assertGreater(len(accepted), 10)

        # Every accepted order ends.
        finals = {}
        for cust, oid in accepted:
            finals[oid] = (cust, s.wait_final(cust, oid, timeout=180))
        confirmed = [o for _, o in finals.values() if o["status"] == "CONFIRMED"]
        print("confirmed:", len(confirmed), "cancelled:", len(finals) - len(confirmed),
              flush=True)

        # Never oversold.
        for pid, initial in zip(products, STOCK):
            units = sum(i["quantity"] for o in confirmed for i in o["items"]
                        if i["productId"] == pid)
            stock = s.stock(admin, pid)
            self.assertEqual(stock["reserved"], 0, (pid, stock))
            self.assertEqual(initial - stock["quantity"], units, (pid, stock, units))
            self.assertLessEqual(units, initial)

        # Charged only when confirmed, else refunded.
        for oid, (_, o) in finals.items():
            pays = [p for p in s.payments_of(admin, oid) if p["status"] == "SUCCEEDED"]
            if o["status"] == "CONFIRMED":
                self.assertEqual(len(pays), 1, (o, pays))
                self.assertEqual(pays[0]["amountCents"], o["totalCents"])
                self.assertEqual(pays[0]["refundedCents"], 0, pays)
            else:
                for p in pays:
                    st.wait_until(lambda: s.ok(s.call("GET", "/api/v1/payments/" + p["id"],
                                                      admin["token"]))["refundedCents"]
                                  == p["amountCents"], "the refund of " + oid, 60)

        # Each outcome reaches its customer once.
        if "notifications" in s.names:
            self.check_notifications(s, finals)

    def check_notifications(self, s, finals):
        by_customer = {}
        for oid, (cust, o) in finals.items():
            by_customer.setdefault(cust["id"], (cust, []))[1].append(o)
        for cust, orders in by_customer.values():
            want = {(o["id"], "order." + o["status"].lower()) for o in orders}
            seen = {}

            def complete():
                seen.clear()
                page = 1
                while True:
                    # Straight to the service: this checks what it stored,
                    # not the gateway's view of its health under the load.
                    rep = s.call("GET", "/v1/notifications?limit=100&page=%d" % page,
                                 cust["token"], port=s.ports["notifications"])
                    if rep.status != 200:
                        raise AssertionError("notifications: %r" % rep)
                    d = rep.json()
                    for n in d["data"]:
                        oid = (n.get("data") or {}).get("orderId")
                        if oid and n["type"] in ("order.confirmed", "order.cancelled"):
                            seen[(oid, n["type"])] = seen.get((oid, n["type"]), 0) + 1
                    if page >= d["pagination"]["pages"]:
                        break
                    page += 1
                return want <= set(seen)
            st.wait_until(complete, "every outcome notified to " + cust["id"], 60)
            self.assertEqual({k: v for k, v in seen.items() if v != 1}, {})


if __name__ == "__main__":
    unittest.main(verbosity=2)
