"""agora-payments over HTTP, with a real agora-users (tokens, verified
through its JWKS) and a real NATS: card charges and each test card's
outcome, wallets, idempotency by order id (repeat and conflict), a provider
timeout (504, nothing recorded, the same order id charged afterwards), full
and partial refunds with their limits and Idempotency-Key, validation 422s,
401/403/404, the payment.* events on the bus, and that no full card number
reaches the service's log or its database file.

Environment: AGORA_USERSD, AGORA_PAYMENTSD (the binaries),
AGORA_TEST_NATS_URL (tests/harness/with-servers nats). With
AGORA_TEST_PAYMENTS_STORE=postgres (and with-servers postgres nats) the
service runs on PostgreSQL in a database of its own (the file check then
covers the log only).

agora-users signs with a key the test made (AGORA_JWT_KEYS), so that the
test can mint the service-role token the orders service would hold; that
needs python3-cryptography (installed by scripts/install-deps).
"""

import os
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import service  # noqa: E402
from service import ADMIN_EMAIL, ADMIN_PASSWORD, uid  # noqa: E402
import harness  # noqa: E402

PROVIDER_TIMEOUT_S = 1.0

VISA = "4242424242424242"
VISA_DECLINED = "4000000000000002"
VISA_NO_FUNDS = "4000000000009995"
VISA_TIMEOUT = "4000000000000119"
MASTERCARD = "5555555555554444"
MASTERCARD_2 = "2223003122003222"
AMEX = "378282246310005"
OTHER = "6011111111111117"
ALL_CARDS = (VISA, VISA_DECLINED, VISA_NO_FUNDS, VISA_TIMEOUT, MASTERCARD, MASTERCARD_2, AMEX,
             OTHER)


def card(number, exp_month=12, exp_year=None, cvc="123"):
    return {"type": "card", "number": number, "expMonth": exp_month,
            "expYear": exp_year or time.gmtime().tm_year + 2, "cvc": cvc}


def wallet(wid):
    return {"type": "wallet", "walletId": wid}


def order_id():
    return uid("ord")


class Payments(service.ServiceTestCase):
    servers = ("payments", "users")
    under_test = "payments"

    @classmethod
    def setUpClass(cls):
        service.require("users", "payments")
        cls.make_tmp("payments")
        nats = os.environ["AGORA_TEST_NATS_URL"]
        cls.signing_key = service.SigningKey("payments-test-key-1")
        cls.users = service.start_users(cls.tmp, nats, cls.signing_key)
        cls.nats = cls.open_bus(nats, "agora.events.payment.>")
        cls.payments = service.start("payments", {
            "AGORA_DB": service.db_url(cls.tmp, "payments"), "AGORA_BUS": nats,
            "AGORA_JWKS_URL": service.jwks_url(cls.users),
            "AGORA_JWT_LEEWAY": "0s",
            "AGORA_PAYMENTS_PROVIDER_TIMEOUT": "%dms" % int(PROVIDER_TIMEOUT_S * 1000),
            "AGORA_LOG": "debug",  # the card-number check covers every level
        })
        cls.admin = cls.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        cls.alice = cls.register("alice")
        cls.service = cls.mint("svc-orders", "service", "svc-orders@agora.internal")

    # -- clients -------------------------------------------------------------

    def pay(self, body, status=201, token=None, headers=None):
        r = self.call("POST", "/v1/payments", token or self.service, body, headers)
        if status >= 400:
            return self.assertEnvelopeError(r, status)
        return self.assertOk(r, status)

    def charge(self, method, amount=2500, currency="USD", order=None, **kw):
        return self.pay({"orderId": order or order_id(), "amountCents": amount,
                         "currency": currency, "paymentMethod": method}, **kw)

    def by_order(self, order):
        r = self.call("GET", "/v1/payments?orderId=" + order, self.service)
        return self.assertOk(r)

    def refund(self, pid, amount=None, key=None, status=201):
        headers = [("Idempotency-Key", key)] if key else None
        body = None if amount is None else {"amountCents": amount}
        r = self.call("POST", "/v1/payments/%s/refund" % pid, self.service, body, headers)
        if status >= 400:
            return self.assertEnvelopeError(r, status)
        return self.assertOk(r, status)

    def events(self, type_, order, count=1, timeout=10.0):
        found = self.nats.wait_for(lambda e: e.get("type") == type_ and e.get("subject") == order
                                   and len([m for m in self.nats.msgs
                                            if m[1].get("type") == type_
                                            and m[1].get("subject") == order]) >= count,
                                   timeout=timeout)
        self.assertTrue(found, "no %d %s event(s) for %s" % (count, type_, order))
        return [m[1] for m in found]

    # -- tests ---------------------------------------------------------------

    def test_card_success(self):
        order = order_id()
        p = self.charge(card(VISA), 2500, "USD", order)
        self.assertEqual(p["status"], "SUCCEEDED")
        self.assertEqual(p["orderId"], order)
        self.assertEqual((p["amountCents"], p["currency"], p["refundedCents"]), (2500, "USD", 0))
        self.assertEqual(p["method"], {"type": "card", "brand": "visa", "last4": "4242"})
        self.assertIsNone(p["failureCode"])
        self.assertIsNone(p["failureMessage"])
        self.assertTrue(p["createdAt"].endswith("Z"))
        got = self.assertOk(self.call("GET", "/v1/payments/" + p["id"], self.admin["token"]))
        self.assertEqual(got, p)
        lst = self.call("GET", "/v1/payments?orderId=" + order, self.service)
        self.assertEqual(self.assertOk(lst), [p])
        self.assertEqual(lst.json()["pagination"]["total"], 1)
        ev = self.events("payment.succeeded", order)[0]
        self.assertEqual(ev["source"], "agora/payments")
        self.assertEqual(ev["specversion"], "1.0")
        self.assertEqual(ev["data"]["paymentId"], p["id"])
        self.assertEqual(ev["data"]["orderId"], order)
        self.assertEqual(ev["data"]["amountCents"], 2500)
        self.assertEqual(ev["data"]["currency"], "USD")
        self.assertNotIn("failureCode", ev["data"])

    def test_brands(self):
        for number, brand in ((MASTERCARD, "mastercard"), (MASTERCARD_2, "mastercard"),
                              (AMEX, "amex"), (OTHER, "card")):
            cvc = "1234" if brand == "amex" else "123"
            p = self.charge(card(number, cvc=cvc))
            self.assertEqual(p["status"], "SUCCEEDED")
            self.assertEqual(p["method"], {"type": "card", "brand": brand, "last4": number[-4:]})

    def test_declines_are_recorded_payments(self):
        for number, code in ((VISA_DECLINED, "CARD_DECLINED"), (VISA_NO_FUNDS, "INSUFFICIENT_FUNDS")):
            order = order_id()
            p = self.charge(card(number), 990, "EUR", order)
            self.assertEqual(p["status"], "FAILED")
            self.assertEqual(p["failureCode"], code)
            self.assertTrue(p["failureMessage"])
            self.assertEqual(self.by_order(order), [p])
            ev = self.events("payment.failed", order)[0]
            self.assertEqual(ev["data"]["failureCode"], code)
            self.assertEqual(ev["data"]["paymentId"], p["id"])
            # A decline is not refundable; a repeat is the same declined answer.
            self.refund(p["id"], status=409)
            self.assertEqual(self.charge(card(number), 990, "EUR", order), p)

    def test_wallets(self):
        order = order_id()
        p = self.charge(wallet("w-alice-1"), 1500, "USD", order)
        self.assertEqual(p["status"], "SUCCEEDED")
        self.assertEqual(p["method"], {"type": "wallet", "walletId": "w-alice-1"})
        self.events("payment.succeeded", order)
        order = order_id()
        p = self.charge(wallet("empty-bob"), 1500, "USD", order)
        self.assertEqual(p["status"], "FAILED")
        self.assertEqual(p["failureCode"], "INSUFFICIENT_FUNDS")
        self.assertEqual(self.events("payment.failed", order)[0]["data"]["failureCode"],
                         "INSUFFICIENT_FUNDS")

    def test_idempotent_by_order(self):
        order = order_id()
        first = self.charge(card(VISA), 4000, "USD", order)
        again = self.charge(card(VISA), 4000, "USD", order)
        self.assertEqual(again, first)
        for method, amount, currency in ((card(VISA), 4001, "USD"), (card(VISA), 4000, "EUR"),
                                         (card(MASTERCARD), 4000, "USD"),
                                         (card(VISA, exp_month=11), 4000, "USD"),
                                         (wallet("w-1"), 4000, "USD")):
            err = self.charge(method, amount, currency, order, status=409)
            self.assertEqual(err["error"]["code"], "IDEMPOTENCY_CONFLICT")
        self.assertEqual(self.by_order(order), [first])
        self.events("payment.succeeded", order)
        time.sleep(0.5)  # a second event would have arrived by now
        self.assertEqual(len([m for m in self.nats.msgs if m[1].get("subject") == order]), 1)

    def test_timeout_records_nothing_then_retry_succeeds(self):
        order = order_id()
        # The caller's own deadline (300 ms) cuts the provider call short...
        t0 = time.monotonic()
        err = self.charge(card(VISA_TIMEOUT), 1200, "USD", order, status=504,
                          headers=[("X-Agora-Deadline-Ms", "300")])
        self.assertEqual(err["error"]["code"], "PROVIDER_TIMEOUT")
        self.assertLess(time.monotonic() - t0, harness.scaled(PROVIDER_TIMEOUT_S))
        self.assertEqual(self.by_order(order), [])
        # ...and without one, the service's own provider timeout does.
        t0 = time.monotonic()
        err = self.charge(card(VISA_TIMEOUT), 1200, "USD", order, status=504)
        self.assertEqual(err["error"]["code"], "PROVIDER_TIMEOUT")
        self.assertGreaterEqual(time.monotonic() - t0, PROVIDER_TIMEOUT_S * 0.9)
        self.assertEqual(self.by_order(order), [])
        p = self.charge(card(VISA), 1200, "USD", order)
        self.assertEqual(p["status"], "SUCCEEDED")
        self.assertEqual(self.by_order(order), [p])
        self.assertEqual(len(self.events("payment.succeeded", order)), 1)
        self.assertFalse([m for m in self.nats.msgs
                          if m[1].get("subject") == order and m[1]["type"] != "payment.succeeded"])

    def test_refunds(self):
        order = order_id()
        p = self.charge(card(VISA), 1000, "USD", order)
        r = self.refund(p["id"], 300)
        self.assertEqual((r["paymentId"], r["orderId"], r["amountCents"], r["currency"]),
                         (p["id"], order, 300, "USD"))
        self.assertEqual(r["payment"]["refundedCents"], 300)
        self.assertEqual(r["payment"]["status"], "SUCCEEDED")
        err = self.refund(p["id"], 701, status=409)
        self.assertEqual(err["error"]["code"], "REFUND_EXCEEDS_CHARGE")
        # Idempotency-Key: a repeat is the first answer; another amount is a conflict.
        k = self.refund(p["id"], 200, key="refund-k1")
        self.assertEqual(k["payment"]["refundedCents"], 500)
        self.assertEqual(self.refund(p["id"], 200, key="refund-k1"), k)
        err = self.refund(p["id"], 100, key="refund-k1", status=409)
        self.assertEqual(err["error"]["code"], "IDEMPOTENCY_CONFLICT")
        # No amount: the rest.
        rest = self.refund(p["id"])
        self.assertEqual(rest["amountCents"], 500)
        self.assertEqual(rest["payment"]["refundedCents"], 1000)
        for amount in (None, 1):
            err = self.refund(p["id"], amount, status=409)
            self.assertEqual(err["error"]["code"], "REFUND_EXCEEDS_CHARGE")
        got = self.assertOk(self.call("GET", "/v1/payments/" + p["id"], self.service))
        self.assertEqual(got["refundedCents"], 1000)
        evs = self.events("payment.refunded", order, count=3)
        evs = [e for e in self.nats.msgs if e[1].get("subject") == order
               and e[1]["type"] == "payment.refunded"]
        self.assertEqual([(e[1]["data"]["amountCents"], e[1]["data"]["refundedCents"])
                          for e in evs], [(300, 300), (200, 500), (500, 1000)])
        self.assertEqual(evs[-1][1]["data"]["paymentId"], p["id"])
        self.assertEqual(evs[-1][1]["data"]["currency"], "USD")
        # Bad refunds.
        self.assertEnvelopeError(self.call("POST", "/v1/payments/%s/refund" % uuid.uuid4(),
                                           self.service), 404)
        q = self.charge(wallet("w-2"), 50)
        for body in ({"amountCents": 0}, {"amountCents": -1}, {"amountCents": "5"},
                     {"amount": 5}, [1]):
            r = self.call("POST", "/v1/payments/%s/refund" % q["id"], self.service, body)
            self.assertEnvelopeError(r, 422, "VALIDATION_FAILED")
        self.assertEqual(self.refund(q["id"])["amountCents"], 50)

    def test_validation(self):
        def expired():
            t = time.gmtime()
            return (t.tm_mon - 1, t.tm_year) if t.tm_mon > 1 else (12, t.tm_year - 1)
        em, ey = expired()
        bad_methods = [
            card("4242424242424241"),             # Luhn
            card("42424242"),                     # too short
            card("4242-4242-4242-4242"),          # not digits
            card(VISA, exp_month=em, exp_year=ey),
            card(VISA, exp_month=13),
            card(VISA, cvc="12"),
            card(VISA, cvc="12345"),
            card(VISA, cvc="abc"),
            dict(card(VISA), cvc=123),
            dict(card(VISA), number=4242424242424242),
            {k: v for k, v in card(VISA).items() if k != "cvc"},
            dict(card(VISA), extra=1),
            {"type": "wallet"},
            {"type": "wallet", "walletId": ""},
            {"type": "bitcoin", "address": "x"},
            "card",
        ]
        for m in bad_methods:
            order = order_id()
            err = self.charge(m, 100, "USD", order, status=422)
            self.assertEqual(err["error"]["code"], "VALIDATION_FAILED", m)
            self.assertEqual(self.by_order(order), [], m)
        good = card(VISA)
        for body in ({"orderId": order_id(), "amountCents": 0, "currency": "USD", "paymentMethod": good},
                     {"orderId": order_id(), "amountCents": -5, "currency": "USD", "paymentMethod": good},
                     {"orderId": order_id(), "amountCents": 1.5, "currency": "USD", "paymentMethod": good},
                     {"orderId": order_id(), "amountCents": 100, "currency": "usd", "paymentMethod": good},
                     {"orderId": order_id(), "amountCents": 100, "currency": "US", "paymentMethod": good},
                     {"orderId": order_id(), "amountCents": 100, "paymentMethod": good},
                     {"amountCents": 100, "currency": "USD", "paymentMethod": good},
                     {"orderId": "a b", "amountCents": 100, "currency": "USD", "paymentMethod": good},
                     {"orderId": order_id(), "amountCents": 100, "currency": "USD"},
                     {"orderId": order_id(), "amountCents": 100, "currency": "USD",
                      "paymentMethod": good, "priceCents": 1},
                     [], [1]):
            r = self.call("POST", "/v1/payments", self.service, body)
            self.assertEnvelopeError(r, 422, "VALIDATION_FAILED")
        for text in ("{not json", '"x"', "5"):
            self.assertEnvelopeError(self.call("POST", "/v1/payments", self.service, text), 400)
        # The number is never echoed back.
        r = self.call("POST", "/v1/payments", self.service,
                      {"orderId": order_id(), "amountCents": 100, "currency": "USD",
                       "paymentMethod": card("4242424242424241")})
        self.assertNotIn(b"4242424242424241", r.body if isinstance(r.body, bytes) else r.body.encode())

    def test_auth(self):
        body = {"orderId": order_id(), "amountCents": 100, "currency": "USD",
                "paymentMethod": card(VISA)}
        for token in (None,):
            self.assertEnvelopeError(self.call("POST", "/v1/payments", token, body), 401)
            self.assertEnvelopeError(self.call("GET", "/v1/payments", token), 401)
        self.assertEnvelopeError(self.call("POST", "/v1/payments", "garbage", body), 401)
        forged = self.service[:-4] + ("AAAA" if not self.service.endswith("AAAA") else "BBBB")
        self.assertEnvelopeError(self.call("POST", "/v1/payments", forged, body), 401)
        cust = self.alice["token"]
        self.assertEnvelopeError(self.call("POST", "/v1/payments", cust, body), 403, "FORBIDDEN")
        self.assertEnvelopeError(self.call("GET", "/v1/payments", cust), 403)
        self.assertEqual(self.by_order(body["orderId"]), [])
        # Admin may charge; the owner named at charge time may read; others may not.
        body["userId"] = self.alice["id"]
        p = self.pay(body, token=self.admin["token"])
        self.assertEqual(self.assertOk(self.call("GET", "/v1/payments/" + p["id"], cust)), p)
        other = self.register("mallory")
        self.assertEnvelopeError(self.call("GET", "/v1/payments/" + p["id"], other["token"]), 404)
        self.assertEnvelopeError(
            self.call("POST", "/v1/payments/%s/refund" % p["id"], cust), 403)
        self.assertEnvelopeError(self.call("GET", "/v1/payments/" + p["id"]), 401)
        self.assertEnvelopeError(self.call("GET", "/v1/payments/nope", self.service), 404)

    def test_list_and_openapi(self):
        r = self.call("GET", "/v1/payments?limit=2&page=1", self.service)
        data = self.assertOk(r)
        self.assertLessEqual(len(data), 2)
        self.assertIn("pages", r.json()["pagination"])
        self.assertEnvelopeError(self.call("GET", "/v1/payments?limit=0", self.service), 422)
        doc = self.call("GET", "/openapi.json").json()
        for path, methods in {"/v1/payments": ("get", "post"), "/v1/payments/{id}": ("get",),
                              "/v1/payments/{id}/refund": ("post",)}.items():
            for m in methods:
                self.assertIn(m, doc["paths"][path], (path, m))
        for p in ("/health", "/ready", "/metrics"):
            self.assertEqual(self.call("GET", p).status, 200, p)

    def test_zz_card_numbers_nowhere(self):
        # Runs last (unittest sorts by name): every card above has been used.
        self.charge(card(VISA))
        out = self.payments.output(last=4000)
        self.assertIn("payment recorded", out)
        for number in ALL_CARDS + ("4242424242424241",):
            self.assertNotIn(number, out, "a card number in the log")
        if os.environ.get("AGORA_TEST_PAYMENTS_STORE") == "postgres":
            return
        files = [f for f in os.listdir(self.tmp) if f.startswith("payments.db")]
        self.assertIn("payments.db", files)
        seen_last4 = False
        for f in files:  # the database and its WAL
            with open(os.path.join(self.tmp, f), "rb") as fh:
                data = fh.read()
            for number in ALL_CARDS:
                self.assertFalse(number.encode() in data, "card %s in %s" % (number, f))
            seen_last4 = seen_last4 or b"4242" in data
        self.assertTrue(seen_last4, "no row visible in the files: the check would prove nothing")


if __name__ == "__main__":
    harness.main()
