"""The checkout saga's calls to agora-inventory over gRPC, and HTTP when
gRPC does not answer (docs/internals/grpc.md), through agora-gateway with
real users, catalog, inventory, payments, cart and orders:

  - with inventory's gRPC server on, an order is reserved and committed
    over gRPC (inventory counts InventoryService/Reserve and Commit), a
    shortage cancels the order with the same reason as over HTTP, and the
    stock moves as it must
  - with inventory's gRPC off (AGORA_GRPC_PORT=off), the same orders end
    the same way over HTTP: orders falls back, inventory counts no gRPC call
"""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import stack as st  # noqa: E402
import harness  # noqa: E402  (tests/integration/http, on the path through stack)

SHOP = ["users", "catalog", "inventory", "payments", "cart", "orders"]


def grpc_calls(s):
    """{(method, code): count} of inventory's agora_grpc_server_requests_total."""
    m = harness.parse_metrics(s.call("GET", "/metrics", port=s.ports["inventory"]).body.decode())
    return {(dict(labels)["method"].rsplit("/", 1)[-1], dict(labels)["code"]): v
            for (name, labels), v in m.items() if name == "agora_grpc_server_requests_total"}


class Path:
    env = {}

    @classmethod
    def setUpClass(cls):
        cls.s = st.Stack("grpc-path", env=cls.env, services=SHOP).start()
        cls.admin = cls.s.login(st.ADMIN_EMAIL, st.ADMIN_PASSWORD)

    @classmethod
    def tearDownClass(cls):
        st.stop_or_raise(cls.s)

    def checkout_both_ways(self):
        s = self.s
        pid = s.product(self.admin, 700, 5)
        user = s.register("grpc")
        o = s.order(user, [(pid, 2)], wait=20).json()["data"]
        self.assertEqual(o["status"], "CONFIRMED", o)
        stock = s.stock(self.admin, pid)
        self.assertEqual((stock["quantity"], stock["reserved"]), (3, 0))
        short = s.order(user, [(pid, 4)], wait=20).json()["data"]
        self.assertEqual(short["status"], "CANCELLED")
        self.assertEqual(short["reason"],
                         "reserve: INSUFFICIENT_STOCK: %s has 3 available, 4 requested" % pid)
        stock = s.stock(self.admin, pid)
        self.assertEqual((stock["quantity"], stock["reserved"]), (3, 0))


class OverGrpc(Path, unittest.TestCase):
    def test_reserve_and_commit_go_over_grpc(self):
        before = grpc_calls(self.s)
        self.checkout_both_ways()
        after = grpc_calls(self.s)

        def grew(key):
            return after.get(key, 0) - before.get(key, 0)
        self.assertEqual(grew(("Reserve", "OK")), 1)
        self.assertEqual(grew(("Commit", "OK")), 1)
        self.assertEqual(grew(("Reserve", "FAILED_PRECONDITION")), 1)


class OverHttp(Path, unittest.TestCase):
    env = {"AGORA_INVENTORY_GRPC_PORT": "off"}

    def test_without_inventory_grpc_orders_use_http(self):
        self.checkout_both_ways()
        self.assertEqual(grpc_calls(self.s), {})
        log = self.s.servers["orders"].output(last=2000)
        self.assertIn("no gRPC answer; HTTP for the next 5 s", log)


if __name__ == "__main__":
    unittest.main(verbosity=2)
