"""agora-notifications end to end, with a real agora-users (tokens verified
through its JWKS) and a real broker (NATS, or RabbitMQ with
AGORA_TEST_BUS=amqp). Events are published as CloudEvents straight to the
broker, as agora-users, agora-orders, agora-payments and agora-inventory
would.

Covered: a user.registered gives a welcome notification and a Maildir
message (RFC 5322 headers), and the same event delivered twice gives one of
each; order.* notifications with unreadCount, pagination, ?unread=true and
marking read by ids and all; an unparseable event dead-lettered and
listed at /admin/dead-letters for admins only; payment.failed with and without userId;
inventory.low_stock to every known admin only; user.deleted; a WebSocket
client (written here on the socket module) and an SSE client both get a
new notification live; resume after a disconnect (WS ?since=, WS resume
message, SSE Last-Event-ID) delivers what was missed exactly once, also
while events keep coming; auth failures (a bad token at the upgrade is 401,
a bad first-message token closes 1008, silence closes 1008); the per-user
cap; protocol errors and their close codes; server pings; a slow client is
dropped (and may resume); SIGTERM closes open push connections (1001, end of
stream) and exits 0; mail over SMTP (libcurl, to a sink written here) when
AGORA_SMTP_URL is set; /openapi.json.

Environment: AGORA_USERSD, AGORA_NOTIFICATIONSD (the binaries),
AGORA_TEST_NATS_URL or AGORA_TEST_AMQP_URL (tests/harness/with-servers);
AGORA_TEST_NOTIFICATIONS_STORE=postgres puts the service on PostgreSQL
(AGORA_TEST_POSTGRES_URL).
"""

import json
import os
import socket
import struct
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import service  # noqa: E402
from service import ADMIN_EMAIL, ADMIN_PASSWORD, cloud_event, uid  # noqa: E402
from push import SSE, WS, WsClosed  # noqa: E402
import harness  # noqa: E402
from amqp_client import bus_url  # noqa: E402

CAP = 3


def order_data(order, user, status, total=2599, reason=None, items=None):
    return {"orderId": order, "userId": user, "status": status, "fromCart": False,
            "totalCents": total, "currency": "USD",
            "items": items or [{"productId": "p-1", "name": "Wool socks", "quantity": 2,
                                "unitPriceCents": 1299}],
            "reason": reason}


# ---- A WebSocket client on the socket module -----------------------------------


class SmtpSink:
    """Just enough of an SMTP server (RFC 5321) to take what libcurl sends:
    EHLO, MAIL, RCPT, DATA (dot-unstuffed), QUIT."""

    def __init__(self):
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        self.messages = []  # (mail from, [rcpt], data)
        self.cond = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        f = conn.makefile("rb")
        try:
            conn.sendall(b"220 sink ESMTP\r\n")
            frm, rcpt = None, []
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.decode().strip()
                up = cmd.upper()
                if up.startswith("EHLO") or up.startswith("HELO"):
                    conn.sendall(b"250-sink\r\n250 8BITMIME\r\n")
                elif up.startswith("MAIL FROM:"):
                    frm, rcpt = cmd[10:].split()[0], []
                    conn.sendall(b"250 OK\r\n")
                elif up.startswith("RCPT TO:"):
                    rcpt.append(cmd[8:].strip())
                    conn.sendall(b"250 OK\r\n")
                elif up == "DATA":
                    conn.sendall(b"354 go on\r\n")
                    data = b""
                    while True:
                        l = f.readline()
                        if l in (b".\r\n", b""):
                            break
                        data += l[1:] if l.startswith(b"..") else l
                    with self.cond:
                        self.messages.append((frm, rcpt, data.decode()))
                        self.cond.notify_all()
                    conn.sendall(b"250 queued\r\n")
                elif up == "QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 OK\r\n")
        finally:
            conn.close()

    def wait(self, pred, timeout=10):
        deadline = time.monotonic() + harness.scaled(timeout)
        with self.cond:
            while True:
                found = [m for m in self.messages if pred(m)]
                if found or time.monotonic() > deadline:
                    return found
                self.cond.wait(0.1)

    def close(self):
        self.srv.close()


# ---- The tests ------------------------------------------------------------------


class Notifications(service.ServiceTestCase):
    servers = ("notif", "users")
    under_test = "notif"
    stop_timeout = 15

    @classmethod
    def setUpClass(cls):
        service.require("users", "notifications")
        cls.make_tmp("notifications")
        cls.maildir = os.path.join(cls.tmp, "mail")
        url = bus_url()
        cls.signing_key = service.SigningKey("notifications-test-key-1")
        cls.users = service.start_users(cls.tmp, url, cls.signing_key)
        cls.bus = cls.open_bus(url, "agora.events.>")
        cls.notif_env = {
            "AGORA_DB": service.db_url(cls.tmp, "notifications"), "AGORA_BUS": url,
            "AGORA_JWKS_URL": service.jwks_url(cls.users),
            "AGORA_BUS_BACKOFF": "200ms", "AGORA_MAIL_DIR": cls.maildir,
            "AGORA_PUSH_MAX_PER_USER": str(CAP), "AGORA_PUSH_MAX_QUEUE": "64k",
            "AGORA_WS_PING_INTERVAL": "1s", "AGORA_WS_AUTH_TIMEOUT": "2s",
            "AGORA_WS_MAX_MESSAGE": "4k", "AGORA_SSE_HEARTBEAT": "500ms",
        }
        cls.notif = cls.start_notif()
        cls.admin = cls.login(ADMIN_EMAIL, ADMIN_PASSWORD)["token"]

    @classmethod
    def start_notif(cls, **extra):
        env = dict(cls.notif_env)
        env.update(extra)
        return service.start("notifications", env)

    # -- helpers ------------------------------------------------------------------

    def publish(self, type_, subject, data, id_=None, source="agora/orders"):
        ev = cloud_event(type_, subject, data, source=source, id_=id_)
        self.bus.pub("agora.events." + type_, ev)
        return ev

    def new_user(self, role="customer", register=True):
        """A user the service knows from user.registered (unless told not
        to), and a token for them."""
        user = uid("u")
        email = user + "@example.com"
        if register:
            self.publish("user.registered", user, {"userId": user, "username": user,
                                                   "email": email, "role": role},
                         source="agora/users")
        return user, email, self.mint(user, role, email)

    def listing(self, token, query=""):
        r = self.call("GET", "/v1/notifications" + query, token)
        self.assertEqual(r.status, 200, r.body)
        return r.json()

    def wait_for(self, token, n, query="", timeout=10.0):
        deadline = time.monotonic() + harness.scaled(timeout)
        while True:
            body = self.listing(token, query)
            if body["pagination"]["total"] >= n:
                return body
            if time.monotonic() > deadline:
                self.fail("wanted %d notifications, have %r" % (n, body))
            time.sleep(0.05)

    def mails(self, to):
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir, sub)
            if not os.path.isdir(d):
                continue
            for name in sorted(os.listdir(d)):
                with open(os.path.join(d, name), "rb") as f:
                    text = f.read().decode()
                if ("To: <%s>" % to) in text:
                    out.append((name, text))
        return out

    def wait_mails(self, to, n, timeout=10.0):
        deadline = time.monotonic() + harness.scaled(timeout)
        while len(self.mails(to)) < n:
            if time.monotonic() > deadline:
                self.fail("wanted %d mails to %s, have %d" % (n, to, len(self.mails(to))))
            time.sleep(0.05)
        return self.mails(to)

    def ws(self, token=None, **kw):
        c = WS(self.notif.port, token, **kw)
        self.addCleanup(c.close)
        return c

    def ws_ready(self, token, **kw):
        c = self.ws(token, **kw)
        self.assertEqual(c.status, 101, c.body)
        msg = c.recv()
        self.assertEqual(msg["type"], "ready", msg)
        return c

    def sse(self, token=None, **kw):
        c = SSE(self.notif.port, token, **kw)
        self.addCleanup(c.close)
        return c

    def sse_ready(self, token, **kw):
        c = self.sse(token, **kw)
        self.assertEqual(c.status, 200, c.body)
        kind, _, data = c.event()
        self.assertEqual(kind, "ready")
        return c

    # -- notifications and mail ------------------------------------------------------

    def test_welcome_notification_and_mail_once(self):
        user, email = uid("u"), None
        email = user + "@example.com"
        ev = self.publish("user.registered", user, {"userId": user, "username": "Zoë " + user,
                                                   "email": email, "role": "customer"},
                          source="agora/users")
        token = self.mint(user, "customer", email)
        body = self.wait_for(token, 1)
        n = body["data"][0]
        self.assertEqual((n["type"], n["title"], n["read"]), ("user.registered", "Welcome to Agora", False))
        self.assertIn("Zoë", n["message"])
        self.assertIsInstance(n["id"], str)
        self.assertEqual(body["unreadCount"], 1)
        mails = self.wait_mails(email, 1)
        name, text = mails[0]
        head, _, msg_body = text.partition("\r\n\r\n")
        hdrs = dict(l.split(": ", 1) for l in head.split("\r\n"))
        for k in ("Date", "From", "To", "Subject", "Message-ID"):
            self.assertIn(k, hdrs, head)
        self.assertEqual(hdrs["Subject"], "Welcome to Agora")
        self.assertEqual(hdrs["To"], "<%s>" % email)
        self.assertIn(ev["id"].replace("-", "-"), hdrs["Message-ID"])
        self.assertIn("Zoë", msg_body)
        self.assertFalse(os.listdir(os.path.join(self.maildir, "tmp")))
        # The same event again (a redelivery), then a marker: once the marker
        # is in, the duplicate was consumed before it.
        self.bus.pub("agora.events.user.registered", ev)
        self.publish("order.created", "o-marker", order_data(uid("o"), user, "PENDING"))
        body = self.wait_for(token, 2)
        time.sleep(0.3)
        body = self.listing(token)
        self.assertEqual(body["pagination"]["total"], 2, body)
        self.assertEqual([n["type"] for n in body["data"]], ["order.created", "user.registered"])
        self.assertEqual(len(self.mails(email)), 1)

    def test_a_real_registration_is_welcomed(self):
        name = "reg%s" % uuid.uuid4().hex[:8]
        r = self.raw(self.users, "POST", "/v1/auth/register",
                     body={"username": name, "email": name + "@example.com",
                           "password": "password-123"})
        self.assertEqual(r.status, 201, r.body)
        token = r.json()["data"]["token"]
        body = self.wait_for(token, 1, timeout=15)
        self.assertEqual(body["data"][0]["type"], "user.registered")
        self.wait_mails(name + "@example.com", 1)

    def test_orders_unread_pagination_and_mark_read(self):
        user, email, token = self.new_user()
        other, _, other_token = self.new_user()
        for status, type_ in (("PENDING", "order.created"), ("CONFIRMED", "order.confirmed"),
                              ("SHIPPED", "order.shipped"), ("DELIVERED", "order.delivered")):
            self.publish(type_, "o-1", order_data("o-1-" + user, user, status))
        self.publish("order.cancelled", "o-2",
                     order_data("o-2-" + user, user, "CANCELLED", reason="payment declined"))
        self.publish("order.created", "o-3", order_data("o-3-" + other, other, "PENDING"))
        body = self.wait_for(token, 6)  # welcome + 5
        self.assertEqual(body["unreadCount"], 6)
        self.assertEqual(body["unread"], 6)
        types = [n["type"] for n in body["data"]]
        self.assertEqual(types, ["order.cancelled", "order.delivered", "order.shipped",
                                 "order.confirmed", "order.created", "user.registered"])
        ids = [int(n["id"]) for n in body["data"]]
        self.assertEqual(ids, sorted(ids, reverse=True))
        cancelled = body["data"][0]
        self.assertIn("payment declined", cancelled["message"])
        self.assertEqual(cancelled["data"]["orderId"], "o-2-" + user)
        self.assertEqual(cancelled["data"]["totalCents"], 2599)
        self.assertIn("25.99 USD", body["data"][3]["message"])
        # Pages.
        p = self.listing(token, "?limit=4&page=2")
        self.assertEqual(p["pagination"], {"page": 2, "limit": 4, "total": 6, "pages": 2})
        self.assertEqual([n["id"] for n in p["data"]], [n["id"] for n in body["data"][4:]])
        # Mark two read by id (one as a number), one of another user's too.
        theirs = self.wait_for(other_token, 2)["data"][0]["id"]
        r = self.call("POST", "/v1/notifications/read", token,
                      {"ids": [body["data"][0]["id"], int(body["data"][1]["id"]), theirs]})
        self.assertEqual(self.assertOk(r), {"marked": 2, "unreadCount": 4})
        r = self.call("POST", "/v1/notifications/read", token, {"ids": [body["data"][0]["id"]]})
        self.assertEqual(self.assertOk(r), {"marked": 0, "unreadCount": 4})
        self.assertEqual(self.listing(other_token)["unreadCount"], 2)
        unread = self.listing(token, "?unread=true")
        self.assertEqual(unread["pagination"]["total"], 4)
        self.assertTrue(all(not n["read"] for n in unread["data"]))
        self.assertTrue(self.listing(token)["data"][0]["read"])
        r = self.call("POST", "/v1/notifications/read", token, {"all": True})
        self.assertEqual(self.assertOk(r), {"marked": 4, "unreadCount": 0})
        self.assertEqual(self.listing(token, "?unread=true")["data"], [])
        # Mails: welcome, confirmation, shipping.
        subjects = sorted(t.split("Subject: ", 1)[1].split("\r\n", 1)[0]
                          for _, t in self.wait_mails(email, 3))
        self.assertEqual(subjects, ["Welcome to Agora", "Your Agora order has shipped",
                                    "Your Agora order is confirmed"])
        confirmation = [t for _, t in self.mails(email) if "is confirmed" in t][0]
        self.assertIn("2 x Wool socks", confirmation)
        # Bad requests.
        for bad in ({}, {"ids": []}, {"ids": ["x"]}, {"ids": [0]}, {"all": False},
                    {"ids": ["1"], "all": True}, {"ids": "1"}, {"what": 1}, [1]):
            self.assertEnvelopeError(self.call("POST", "/v1/notifications/read", token, bad), 422)
        self.assertEnvelopeError(self.call("GET", "/v1/notifications?limit=0", token), 422)
        self.assertEnvelopeError(self.call("GET", "/v1/notifications?unread=maybe", token), 422)
        self.assertEnvelopeError(self.call("GET", "/v1/notifications"), 401)
        self.assertEnvelopeError(self.call("GET", "/v1/notifications", "bad-token"), 401)
        self.assertEnvelopeError(self.call("POST", "/v1/notifications/read", None, {"all": True}), 401)

    def test_payment_failed(self):
        user, _, token = self.new_user()
        self.publish("payment.failed", "o-9", {"paymentId": "pay-1", "orderId": "o-9",
                                               "amountCents": 500, "currency": "EUR",
                                               "failureCode": "card_declined",
                                               "failureMessage": "the card was declined"},
                     source="agora/payments")
        self.publish("payment.failed", "o-10", {"paymentId": "pay-2", "orderId": "o-10",
                                                "userId": user, "amountCents": 700,
                                                "currency": "EUR", "failureCode": "card_declined",
                                                "failureMessage": "the card was declined"},
                     source="agora/payments")
        body = self.wait_for(token, 2)
        n = body["data"][0]
        self.assertEqual((n["type"], n["title"]), ("payment.failed", "Payment failed"))
        self.assertIn("7.00 EUR", n["message"])
        self.assertIn("declined", n["message"])
        time.sleep(0.2)
        self.assertEqual(self.listing(token)["pagination"]["total"], 2)

    def test_low_stock_goes_to_admins_only(self):
        admin2, _, admin2_token = self.new_user(role="admin")
        _, _, customer = self.new_user()
        # The bootstrap admin: known from its user.registered on NATS (which
        # keeps history); on RabbitMQ from its token, once it has called.
        self.listing(self.admin)
        self.wait_for(admin2_token, 1)  # its welcome: the projection has it
        product = uid("p")
        self.publish("inventory.low_stock", product,
                     {"productId": product, "quantity": 3, "reserved": 1, "available": 2,
                      "lowStockLevel": 5, "location": "A1"}, source="agora/inventory")
        for token in (self.admin, admin2_token):
            deadline = time.monotonic() + harness.scaled(10)
            while True:
                lows = [n for n in self.listing(token, "?limit=100")["data"]
                        if n["type"] == "inventory.low_stock"
                        and n["data"]["productId"] == product]
                if lows or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            self.assertEqual(len(lows), 1, lows)
            self.assertEqual(lows[0]["title"], "Low stock")
            self.assertIn("2 available", lows[0]["message"])
        time.sleep(0.3)
        self.assertEqual([n["type"] for n in self.listing(customer)["data"]], ["user.registered"])

    def test_user_deleted_drops_their_notifications(self):
        user, email, token = self.new_user()
        self.wait_for(token, 1)
        self.publish("user.deleted", user, {"userId": user, "username": user, "email": email,
                                            "role": "customer"}, source="agora/users")
        deadline = time.monotonic() + harness.scaled(10)
        while self.listing(token)["pagination"]["total"] != 0:
            self.assertLess(time.monotonic(), deadline, "notifications kept after user.deleted")
            time.sleep(0.05)
        # A late order event for them notifies nobody; a marker for someone
        # else, published after it, shows it was consumed.
        self.publish("order.confirmed", "o-x", order_data("o-x-" + user, user, "CONFIRMED"))
        _, _, marker = self.new_user()
        self.wait_for(marker, 1)
        self.assertEqual(self.listing(token)["pagination"]["total"], 0)
        self.assertEqual(len(self.mails(email)), 1)  # the welcome only

    # -- push ------------------------------------------------------------------------

    def test_websocket_live_and_resume(self):
        user, _, token = self.new_user()
        welcome = self.wait_for(token, 1)["data"][0]
        c = self.ws_ready(token)
        self.assertEqual(c.headers.get("upgrade", "").lower(), "websocket")
        self.assertIn("upgrade", c.headers.get("connection", "").lower())
        self.assertTrue(c.accept_ok)
        self.publish("order.created", "o", order_data(uid("o"), user, "PENDING"))
        live = c.notifications(1)[0]
        self.assertEqual(live["type"], "order.created")
        self.assertEqual(set(live), {"id", "type", "title", "message", "data", "read", "createdAt"})
        # Missed while away: two. Resume from the last seen id.
        c.send_frame(8, struct.pack("!H", 1000))
        with self.assertRaises(WsClosed) as cm:
            c.recv()
        self.assertEqual(cm.exception.code, 1000)
        c.close()
        for s in ("CONFIRMED", "SHIPPED"):
            self.publish("order." + s.lower(), "o", order_data(uid("o"), user, s))
        self.wait_for(token, 4)
        c2 = self.ws_ready(token, query="?since=" + live["id"])
        got = c2.notifications(2)
        self.assertEqual([n["type"] for n in got], ["order.confirmed", "order.shipped"])
        self.publish("order.delivered", "o", order_data(uid("o"), user, "DELIVERED"))
        self.assertEqual(c2.notifications(1)[0]["type"], "order.delivered")
        # A resume message replays from an earlier id, in order.
        c2.send_json({"type": "resume", "since": welcome["id"]})
        again = c2.notifications(4)
        self.assertEqual([n["type"] for n in again],
                         ["order.created", "order.confirmed", "order.shipped", "order.delivered"])
        c2.send_json({"type": "ping"})
        self.assertEqual(c2.recv()["type"], "pong")
        # First-message auth, with since in it.
        c3 = self.ws()
        self.assertEqual(c3.status, 101)
        c3.send_json({"type": "auth", "token": token, "since": live["id"]})
        self.assertEqual(c3.recv()["type"], "ready")
        self.assertEqual([n["type"] for n in c3.notifications(3)],
                         ["order.confirmed", "order.shipped", "order.delivered"])

    def test_sse_live_and_resume(self):
        user, _, token = self.new_user()
        self.wait_for(token, 1)
        c = self.sse_ready(token)
        self.assertTrue(c.headers["content-type"].startswith("text/event-stream"))
        self.publish("order.created", "o", order_data(uid("o"), user, "PENDING"))
        live = c.notifications(1)[0]
        self.assertEqual(live["type"], "order.created")
        time.sleep(1.2)
        self.publish("order.confirmed", "o", order_data(uid("o"), user, "CONFIRMED"))
        c.notifications(1)
        self.assertGreaterEqual(c.comments, 1, "no heartbeat comment in 1.2 s")
        c.close()
        for s in ("SHIPPED", "DELIVERED"):
            self.publish("order." + s.lower(), "o", order_data(uid("o"), user, s))
        self.wait_for(token, 5)
        c2 = self.sse_ready(token, last_id=int(live["id"]))
        self.assertEqual([n["type"] for n in c2.notifications(3)],
                         ["order.confirmed", "order.shipped", "order.delivered"])
        c3 = self.sse_ready(token, query="?since=" + live["id"])
        self.assertEqual(len(c3.notifications(3)), 3)
        # Without a token, or a bad one: 401.
        for t in (None, "nope", self.mint(user)[:-4] + "AAAA"):
            r = self.sse(t)
            self.assertEqual(r.status, 401, r.body)
            self.assertEqual(json.loads(r.body)["error"]["code"], "UNAUTHENTICATED")
        r = self.sse(token, query="?since=abc")
        self.assertEqual(r.status, 400)

    def test_resume_exactly_once_while_events_flow(self):
        """A client that disconnects and resumes from its last seen id,
        over and over while events keep coming, sees every notification
        exactly once and in order, on both transports."""
        user, _, token = self.new_user()
        base = int(self.wait_for(token, 1)["data"][0]["id"])
        total = 60
        stop = threading.Event()

        def produce():
            for i in range(total):
                self.publish("order.created", "o", order_data("flow-%d-%s" % (i, user), user,
                                                              "PENDING"))
                time.sleep(0.01)
            stop.set()
        th = threading.Thread(target=produce)
        th.start()
        seen = []
        last = base
        rounds = 0
        try:
            while len(seen) < total:
                rounds += 1
                transport = rounds % 2
                if transport:
                    c = self.ws_ready(token, query="?since=%d" % last)
                    take = c.notifications
                else:
                    c = self.sse_ready(token, last_id=last)
                    take = c.notifications
                for n in take(min(7, total - len(seen)), timeout=15):
                    seen.append(int(n["id"]))
                    last = int(n["id"])
                c.close()
        finally:
            th.join()
        self.assertEqual(len(seen), len(set(seen)), "duplicates: %r" % seen)
        self.assertEqual(seen, sorted(seen))
        ids = sorted(int(n["id"]) for n in self.listing(token, "?limit=100")["data"]
                     if n["type"] == "order.created")
        self.assertEqual(seen, ids)
        self.assertGreater(rounds, 5)

    def test_websocket_auth_failures(self):
        user, _, token = self.new_user(register=False)
        # A bad token at the upgrade: 401, no upgrade.
        for bad in ("nope", self.mint(user)[:-4] + "AAAA"):
            c = self.ws(bad)
            self.assertEqual(c.status, 401, c.body)
            self.assertEqual(c.json()["error"]["code"], "UNAUTHENTICATED")
        c = self.ws(headers=["Authorization: Basic Zm9vOmJhcg=="])
        self.assertEqual(c.status, 401)
        # No header: the first message must authenticate.
        c = self.ws()
        self.assertEqual(c.status, 101)
        c.send_json({"type": "auth", "token": self.mint(user)[:-4] + "AAAA"})
        code, reason = c.expect_close()
        self.assertEqual(code, 1008)
        self.assertIn("authentication failed", reason)
        c = self.ws()
        c.send_json({"type": "resume", "since": 1})
        code, reason = c.expect_close()
        self.assertEqual(code, 1008)
        c = self.ws()
        t0 = time.monotonic()
        code, reason = c.expect_close(timeout=10)
        self.assertEqual(code, 1008)
        self.assertIn("timeout", reason)
        self.assertGreater(time.monotonic() - t0, 1.5)
        # Not a WebSocket handshake at all.
        r = self.call("GET", "/v1/ws", token)
        self.assertEnvelopeError(r, 426, "UPGRADE_REQUIRED")
        self.assertEqual(r.header("Sec-WebSocket-Version"), "13")
        r = self.raw(self.notif, "GET", "/v1/ws", token,
                     headers=[("Upgrade", "websocket"), ("Connection", "Upgrade"),
                              ("Sec-WebSocket-Version", "8"),
                              ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")])
        self.assertEnvelopeError(r, 426, "UPGRADE_REQUIRED")
        r = self.raw(self.notif, "GET", "/v1/ws", token,
                     headers=[("Upgrade", "websocket"), ("Connection", "Upgrade"),
                              ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "short")])
        self.assertEnvelopeError(r, 400, "BAD_UPGRADE")

    def test_per_user_cap(self):
        user, _, token = self.new_user(register=False)
        open_ = [self.ws_ready(token) for _ in range(CAP - 1)] + [self.sse_ready(token)]
        extra = self.ws(token)
        self.assertEqual(extra.status, 101)
        code, reason = extra.expect_close()
        self.assertEqual(code, 1008)
        self.assertIn("too many connections", reason)
        r = self.sse(token)
        self.assertEqual(r.status, 429, r.body)
        self.assertEqual(json.loads(r.body)["error"]["code"], "TOO_MANY_CONNECTIONS")
        # Another user is not affected; one closing makes room.
        _, _, other = self.new_user(register=False)
        self.ws_ready(other)
        open_[0].close()
        deadline = time.monotonic() + harness.scaled(5)
        while True:
            c = self.ws(token)
            try:
                if c.recv()["type"] == "ready":
                    break
            except WsClosed:
                self.assertLess(time.monotonic(), deadline, "the cap did not free a slot")
                time.sleep(0.1)

    def test_websocket_protocol_errors_and_pings(self):
        user, _, token = self.new_user(register=False)
        cases = [
            (lambda c: c.send_frame(1, '{"type":"ping"}', mask=False), 1002),
            (lambda c: c.send_frame(1, '{"type":', fin=False), 1008),
            (lambda c: c.send_frame(1, "x" * 5000), 1009),
            (lambda c: c.send_frame(2, b"\x00\x01"), 1003),
            (lambda c: c.send_frame(1, b"\xc3\x28"), 1007),
            (lambda c: c.send_frame(1, "x", rsv=0x40), 1002),
            (lambda c: c.send_frame(3, "x"), 1002),
        ]
        for act, want in cases:
            c = self.ws_ready(token)
            act(c)
            code, _ = c.expect_close()
            self.assertEqual(code, want)
            c.close()
        # A ping gets its pong; the server pings every second.
        c = self.ws_ready(token)
        c.send_frame(9, b"hello")
        c.sock.settimeout(harness.scaled(5))
        while True:
            op, payload = c.frame()
            if op == 10:
                self.assertEqual(payload, b"hello")
                break
        c.send_json({"type": "ping"})
        self.assertEqual(c.recv(timeout=5)["type"], "pong")
        t0 = time.monotonic()
        while c.pings < 2:
            c.send_json({"type": "ping"})
            c.recv(timeout=5)
            time.sleep(0.2)
        self.assertLess(time.monotonic() - t0, harness.scaled(6))
        # A client that never answers is dropped with 1001.
        c.auto_pong = False
        code, reason = c.expect_close(timeout=10)
        self.assertEqual((code, reason), (1001, "ping timeout"))
        # The client closes: its close frame is echoed.
        c = self.ws_ready(token)
        c.send_frame(8, struct.pack("!H", 4001) + b"bye")
        with self.assertRaises(WsClosed) as cm:
            c.recv()
        self.assertEqual(cm.exception.code, 4001)

    def test_slow_client_is_dropped(self):
        user, _, token = self.new_user(register=False)
        c = self.ws_ready(token, rcvbuf=4096)
        c.auto_pong = True
        # About 30 KB per notification, 6 MB in all: more than the kernel's
        # socket buffers on loopback (4 MB at most) and the 64 KiB bound.
        items = [{"productId": "p-%d" % i, "name": "x" * 700, "quantity": 1,
                  "unitPriceCents": 100} for i in range(40)]
        n = 200
        for i in range(n):
            self.publish("order.created", "o", order_data("slow-%d-%s" % (i, user), user,
                                                          "PENDING", items=items))
        self.wait_for(token, n, timeout=60)
        deadline = time.monotonic() + harness.scaled(10)
        while not any("too slow" in l for l in self.notif.output(500).split("\n")):
            self.assertLess(time.monotonic(), deadline, "the slow client was not dropped")
            time.sleep(0.1)
        got = 0
        try:
            while True:
                msg = c.recv(timeout=10)
                got += msg["type"] == "notification"
        except WsClosed as e:
            self.assertEqual(e.code, 1008)
            self.assertIn("too slow", e.reason)
        except (ConnectionError, OSError):
            pass
        self.assertLess(got, n)
        # It may come back and resume.
        self.ws_ready(token, query="?since=0").notifications(n, timeout=30)

    def test_stop_closes_push_then_mail_over_smtp(self):
        """SIGTERM with push connections open: the WebSocket gets 1001, the
        event stream ends, the process exits 0. Then the service runs again
        on the same store with AGORA_SMTP_URL: mail goes over SMTP."""
        cls = type(self)
        user, email, token = self.new_user()
        self.wait_for(token, 1)
        ws = self.ws_ready(token)
        sse = self.sse_ready(token)
        cls.notif.stop(timeout=15)
        code, reason = ws.expect_close()
        self.assertEqual((code, reason), (1001, "server shutting down"))
        with self.assertRaises(ConnectionError):
            while True:
                sse.event(timeout=5)
        sink = SmtpSink()
        self.addCleanup(sink.close)
        try:
            cls.notif = cls.start_notif(AGORA_SMTP_URL="smtp://127.0.0.1:%d" % sink.port,
                                        AGORA_MAIL_FROM="shop@agora.test")
            user2, email2, token2 = self.new_user()
            self.publish("order.confirmed", "o", order_data(uid("o"), user2, "CONFIRMED"))
            got = sink.wait(lambda m: "<%s>" % email2 in m[1] and "is confirmed" in m[2])
            self.assertEqual(len(got), 1, sink.messages)
            frm, rcpt, data = got[0]
            self.assertTrue(frm.startswith("<shop@agora.test>"), frm)
            self.assertIn("Subject: Your Agora order is confirmed\r\n", data)
            self.assertIn("Message-ID: <", data)
            self.assertEqual(len(sink.wait(lambda m: "<%s>" % email2 in m[1]
                                           and "Welcome" in m[2])), 1)
            self.assertEqual(self.mails(email2), [])  # nothing in the Maildir
            # Push works on the new process too, resuming from before the stop.
            c = self.ws_ready(token2, query="?since=0")
            self.assertEqual([n["type"] for n in c.notifications(2)],
                             ["user.registered", "order.confirmed"])
        finally:
            cls.notif.stop(timeout=15)
            cls.notif = cls.start_notif()

    def test_dead_letters_listed_for_admins(self):
        """An event that cannot be handled goes to the broker's dead letters
        and is listed at /admin/dead-letters with its reason, for admins."""
        marker = uid("dl")
        self.bus.pub("agora.events.order.created", {"specversion": "1.0", "source": marker,
                                                   "data": {"orderId": marker}})
        found = {}

        def listed():
            r = self.call("GET", "/admin/dead-letters?limit=20", self.admin)
            self.assertEqual(r.status, 200, r.body)
            for d in r.json()["data"]:
                if d["event"].get("source") == marker:
                    found.update(d)
                    return True
            return False
        deadline = time.time() + harness.scaled(15)
        while not listed() and time.time() < deadline:
            time.sleep(0.2)
        self.assertTrue(found, "the unparseable event is not listed")
        self.assertIn("missing id or type", found["reason"])
        self.assertEqual(found["event"]["data"], {"orderId": marker})
        self.assertTrue(found["deadAt"].endswith("Z"))
        _, _, customer = self.new_user()
        self.assertEqual(self.call("GET", "/admin/dead-letters", customer).status, 403)
        self.assertEqual(self.call("GET", "/admin/dead-letters").status, 401)
        self.assertEqual(self.call("GET", "/admin/dead-letters?limit=0", self.admin).status, 422)

    def test_openapi_describes_every_route(self):
        r = self.call("GET", "/openapi.json")
        self.assertEqual(r.status, 200)
        doc = r.json()
        for path in ("/v1/notifications", "/v1/notifications/read", "/v1/ws", "/v1/stream"):
            self.assertIn(path, doc["paths"])
        self.assertIn("Error", doc["components"]["schemas"])


if __name__ == "__main__":
    harness.main()
