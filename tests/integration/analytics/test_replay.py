"""agora-analytics started after the fact, on NATS JetStream: its first fill
replays stream AGORA from its first event (a new durable consumer delivers
everything the stream holds), so orders placed while it did not exist yet
are in its numbers, equal to agora-orders' database; the orders placed
after it started are counted once more, not twice.

(On RabbitMQ a queue receives only what is published after it is declared:
services/analytics/README.md says so, and this test runs on NATS only.)
"""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import stack as st  # noqa: E402

SHOP = ["users", "catalog", "inventory", "payments", "cart", "orders"]


class LateStart(unittest.TestCase):
    def test_history_is_replayed_from_the_stream(self):
        s = st.Stack("analytics-late", services=SHOP + ["analytics"])
        # Every port is chosen and every service but analytics started.
        s.names = SHOP
        s.start()
        try:
            admin = s.login(st.ADMIN_EMAIL, st.ADMIN_PASSWORD)
            pid = s.product(admin, 1234, 1000)
            buyer = s.register("early")
            before = [s.order(buyer, [(pid, 1)], wait=20).json()["data"] for _ in range(12)]
            self.assertTrue(all(o["status"] == "CONFIRMED" for o in before), before)
            # Now the read model comes into being.
            s.ports["analytics"] = st.free_port()
            s.grpc_ports["analytics"] = st.free_port()
            s.names = SHOP + ["analytics"]
            s.start_one("analytics")

            def orders():
                r = s.call("GET", "/v1/analytics/orders", admin["token"],
                           port=s.ports["analytics"])
                return r.json()["data"] if r.status == 200 else None
            st.wait_until(lambda: (orders() or {}).get("total") == 12,
                          "the late read model to replay the 12 earlier orders", timeout=60)
            after = [s.order(buyer, [(pid, 2)], wait=20).json()["data"] for _ in range(3)]
            self.assertTrue(all(o["status"] == "CONFIRMED" for o in after), after)
            st.wait_until(lambda: (orders() or {}).get("total") == 15,
                          "the three later orders", timeout=60)
            o = orders()
            self.assertEqual(o["byStatus"]["CONFIRMED"], 15)
            r = s.call("GET", "/v1/analytics/products/top?by=units", admin["token"],
                       port=s.ports["analytics"])
            top = {p["productId"]: p for p in r.json()["data"]}
            self.assertEqual(top[pid]["units"], 12 * 1 + 3 * 2)
            self.assertEqual(top[pid]["revenueCents"], 18 * 1234)
        finally:
            st.stop_or_raise(s)


if __name__ == "__main__":
    unittest.main(verbosity=2)
