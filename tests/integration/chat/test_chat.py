"""The chat end to end through agora-gateway, as browsers would use it:
agora-users, agora-rooms, agora-messages (and agora-files when built) and
agora-notifications' realtime hub, on SQLite + NATS or PostgreSQL +
RabbitMQ (AGORA_TEST_STACK_STORE / AGORA_TEST_STACK_BUS).

Covered: two members of a private room get each other's messages, edits,
deletions and typing live over /api/v1/ws, while a third user outside gets
none of it and 404 on every read and write; membership changes reach the
members; presence (online with the first tab, offline after the last one
closes or misses the server's ping; GET /api/v1/presence); a client that
reconnects with the last id it saw gets what it missed once, in order, then
live, on the WebSocket and on SSE; agora-messages and agora-notifications
SIGKILLed during sends lose no acknowledged message and deliver none twice.
"""

import os
import sys
import threading
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import stack as st  # noqa: E402
from push import SSE, WS, WsClosed  # noqa: E402

CHAT = st.CHAT
CHAT_TYPES = ("message.sent", "message.updated", "message.deleted", "room.user_joined",
              "room.user_left", "room.updated", "room.deleted")


class Chat(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = st.Stack("chat", services=CHAT, env={
            "AGORA_NOTIFICATIONS_PUSH_MAX_PER_USER": "20",
            "AGORA_MESSAGES_MESSAGES_RATE": "1000",
            "AGORA_MESSAGES_MESSAGES_BURST": "1000",
        })
        for name in ("rooms", "messages", "notifications"):
            if not st.binary(name):  # a failure, not a skip: CMake built them
                raise AssertionError("AGORA_%sD is not set" % name.upper())
        cls.s.start()
        cls.conns = []

    @classmethod
    def tearDownClass(cls):
        for c in cls.conns:
            c.close()
        st.stop_or_raise(cls.s)

    # -- helpers ------------------------------------------------------------------------------

    def ws(self, user, since=None):
        q = "?since=%s" % since if since is not None else ""
        c = WS(self.s.ports["gateway"], token=user["token"], path="/api/v1/ws", query=q)
        self.conns.append(c)
        self.assertEqual(c.status, 101, c.body)
        ready = c.recv()
        self.assertEqual(ready["type"], "ready", ready)
        return c

    def room(self, owner, private=True, members=()):
        r = self.s.ok(self.s.call("POST", "/api/v1/rooms", owner["token"],
                                  {"name": "room " + uuid.uuid4().hex[:6],
                                   "isPrivate": private}), 201)
        for m in members:
            self.s.ok(self.s.call("POST", "/api/v1/rooms/%s/members" % r["id"], owner["token"],
                                  {"userId": m["id"]}), 201)
        return r["id"]

    def send(self, user, room, content, status=201):
        r = self.s.call("POST", "/api/v1/messages", user["token"],
                        {"roomId": room, "content": content})
        self.assertEqual(r.status, status, r)
        return r.json().get("data") if status == 201 else r

    def quiet(self, c, seconds=1.0, types=CHAT_TYPES + ("typing", "presence")):
        """Nothing of `types` arrives on c for `seconds`."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                m = c.recv(timeout=max(0.05, deadline - time.time()))
            except (TimeoutError, OSError):
                return
            if m["type"] in types:
                raise AssertionError("unexpected frame: %r" % m)

    def history(self, user, room):
        out, before = [], None
        while True:
            q = "/api/v1/messages?roomId=%s&limit=100" % room
            if before:
                q += "&before=" + before
            r = self.s.call("GET", q, user["token"])
            self.assertEqual(r.status, 200, r)
            page = r.json()
            out += page["data"]
            if not page["cursor"]["hasMore"]:
                return out
            before = page["cursor"]["before"]

    # -- cases ---------------------------------------------------------------------------------

    def test_private_room_live_and_outsider(self):
        alice, bob, carol = (self.s.register(n) for n in ("alice", "bob", "carol"))
        room = self.room(alice, members=[bob])
        wa, wb, wc = self.ws(alice), self.ws(bob), self.ws(carol)

        m = self.send(alice, room, "hello bob")
        for c in (wa, wb):  # (bob's room.user_joined may come first: events are async)
            f = c.messages(1, ("message.sent",))[0]
            self.assertEqual(f["type"], "message.sent")
            self.assertEqual((f["data"]["messageId"], f["data"]["content"], f["data"]["userId"]),
                             (m["id"], "hello bob", alice["id"]))
            self.assertTrue(int(f["id"]) > 0)

        # Typing reaches the other member only.
        wb.send_json({"type": "typing", "roomId": room})
        t = wa.messages(1, ("typing",))[0]
        self.assertEqual(t["data"], {"roomId": room, "userId": bob["id"]})
        self.assertNotIn("id", t)

        # Edit by someone else refused; by the author delivered.
        r = self.s.call("PATCH", "/api/v1/messages/" + m["id"], bob["token"], {"content": "x"})
        self.assertEqual(r.status, 403, r)
        self.s.ok(self.s.call("PATCH", "/api/v1/messages/" + m["id"], alice["token"],
                              {"content": "hello bob!"}))
        for c in (wa, wb):
            f = c.messages(1, ("message.updated",))[0]
            self.assertEqual(f["data"]["content"], "hello bob!")
        r = self.s.call("DELETE", "/api/v1/messages/" + m["id"], bob["token"])
        self.assertEqual(r.status, 403, r)
        self.s.ok(self.s.call("DELETE", "/api/v1/messages/" + m["id"], alice["token"]))
        for c in (wa, wb):
            f = c.messages(1, ("message.deleted",))[0]
            self.assertEqual(f["data"]["messageId"], m["id"])

        # The outsider: 404 on every read and write, and nothing pushed.
        self.send(alice, room, "second")
        wb.messages(1, ("message.sent",))
        mid = self.history(alice, room)[0]["id"]
        for method, path, body in [
                ("GET", "/api/v1/rooms/" + room, None),
                ("GET", "/api/v1/rooms/%s/members" % room, None),
                ("POST", "/api/v1/rooms/%s/join" % room, None),
                ("GET", "/api/v1/messages?roomId=" + room, None),
                ("GET", "/api/v1/messages/" + mid, None),
                ("POST", "/api/v1/messages", {"roomId": room, "content": "let me in"}),
                ("PATCH", "/api/v1/messages/" + mid, {"content": "mine now"}),
                ("DELETE", "/api/v1/messages/" + mid, None),
                ("POST", "/api/v1/messages/%s/reactions" % mid, {"emoji": "+1"}),
                ("GET", "/api/v1/messages/search?q=second&roomId=" + room, None),
                ("POST", "/api/v1/messages/read", {"roomId": room, "messageId": mid})]:
            r = self.s.call(method, path, carol["token"], body)
            self.assertEqual(r.status, 404, "%s %s: %r" % (method, path, r))
        wc.send_json({"type": "typing", "roomId": room})
        self.quiet(wc)
        self.quiet(wa, 0.5, ("typing",))
        shown = [x["content"] for x in self.history(alice, room) if not x.get("deleted")]
        self.assertEqual(shown, ["second"])

    def test_membership_changes_reach_members(self):
        alice, dave = self.s.register("alice"), self.s.register("dave")
        room = self.room(alice, private=False)
        wa = self.ws(alice)
        self.s.ok(self.s.call("POST", "/api/v1/rooms/%s/join" % room, dave["token"]))
        f = wa.messages(1, ("room.user_joined",))[0]
        self.assertEqual(f["data"]["userId"], dave["id"])
        wd = self.ws(dave)
        # A member who just joined posts at once and is heard.
        self.send(dave, room, "hi all")
        for c in (wa, wd):
            f = c.messages(1, ("message.sent",))[0]
            self.assertEqual(f["data"]["content"], "hi all")
        # Kicked: told so, then no more of the room.
        self.s.ok(self.s.call("DELETE", "/api/v1/rooms/%s/members/%s" % (room, dave["id"]),
                              alice["token"]))
        f = wd.messages(1, ("room.user_left",))[0]
        self.assertEqual(f["data"]["userId"], dave["id"])
        self.assertEqual(wa.messages(1, ("room.user_left",))[0]["data"]["userId"], dave["id"])
        st.wait_until(lambda: self.s.call("POST", "/api/v1/messages", dave["token"],
                                          {"roomId": room, "content": "still here?"}).status == 404,
                      "the kicked member to lose the room")
        self.send(alice, room, "after the kick")
        wa.messages(1, ("message.sent",))
        self.quiet(wd, 0.7)

    def test_presence_tabs_and_missed_heartbeat(self):
        alice, bob = self.s.register("alice"), self.s.register("bob")
        self.room(alice, members=[bob])
        wa = self.ws(alice)

        def presence_of(user):
            r = self.s.call("GET", "/api/v1/presence?userIds=" + user["id"], alice["token"])
            return self.s.ok(r)[0]["status"]

        tab1 = self.ws(bob)
        p = wa.messages(1, ("presence",))[0]["data"]
        self.assertEqual((p["userId"], p["status"]), (bob["id"], "online"))
        tab2 = self.ws(bob)
        tab1.close()
        self.quiet(wa, 1.0, ("presence",))  # another tab is open: still online
        self.assertEqual(presence_of(bob), "online")
        tab2.close()
        p = wa.messages(1, ("presence",))[0]["data"]
        self.assertEqual((p["userId"], p["status"]), (bob["id"], "offline"))
        self.assertEqual(presence_of(bob), "offline")

        # A tab that stops answering pings goes offline by itself: the hub
        # again with a ping every second (the suite's clients read only now
        # and then, so the others run with the default 30 s).
        self.s.extra["AGORA_NOTIFICATIONS_WS_PING_INTERVAL"] = "1s"
        try:
            self.s.restart("notifications")
            wa = self.ws(alice)
            mute = self.ws(bob)
            p = wa.messages(1, ("presence",))[0]["data"]
            self.assertEqual((p["userId"], p["status"]), (bob["id"], "online"))
            mute.auto_pong = False
            p = wa.messages(1, ("presence",), timeout=15)[0]["data"]
            self.assertEqual((p["userId"], p["status"]), (bob["id"], "offline"))
            self.assertEqual(presence_of(bob), "offline")
        finally:
            del self.s.extra["AGORA_NOTIFICATIONS_WS_PING_INTERVAL"]
            self.s.restart("notifications")

    def test_reconnect_resumes_without_loss_or_duplicate(self):
        alice, bob = self.s.register("alice"), self.s.register("bob")
        room = self.room(alice, members=[bob])
        wb = self.ws(bob)
        self.send(alice, room, "m0")
        last = wb.messages(1, ("message.sent",))[0]["id"]
        wb.close()
        sent = [self.send(alice, room, "m%d" % i)["id"] for i in range(1, 6)]
        self.s.ok(self.s.call("PATCH", "/api/v1/messages/" + sent[0], alice["token"],
                              {"content": "m1 edited"}))
        for transport in ("ws", "sse"):
            if transport == "ws":
                c = self.ws(bob, since=last)
                got = c.messages(6, ("message.sent", "message.updated"))
            else:
                c = SSE(self.s.ports["gateway"], token=bob["token"], path="/api/v1/stream",
                        last_id=last)
                self.conns.append(c)
                self.assertEqual(c.status, 200, c.body)
                got = []
                while len(got) < 6:
                    kind, id_, data = c.event()
                    if kind in ("message.sent", "message.updated"):
                        got.append({"type": kind, "id": id_, "data": data})
            self.assertEqual([(g["type"], g["data"]["messageId"]) for g in got],
                             [("message.sent", x) for x in sent] + [("message.updated", sent[0])])
            ids = [int(g["id"]) for g in got]
            self.assertEqual(ids, sorted(set(ids)))
            self.assertTrue(ids[0] > int(last))
            if transport == "ws":
                live = self.send(alice, room, "live")["id"]
                f = c.messages(1, ("message.sent",))[0]
                self.assertEqual(f["data"]["messageId"], live)
                self.quiet(c, 0.7)
            c.close()

    def test_kills_mid_send_lose_nothing_acknowledged(self):
        alice, bob = self.s.register("alice"), self.s.register("bob")
        room = self.room(alice, members=[bob])
        acked, lock, stop = [], threading.Lock(), threading.Event()

        def sender(k):
            i = 0
            while not stop.is_set():
                try:
                    r = self.s.call("POST", "/api/v1/messages", alice["token"],
                                    {"roomId": room, "content": "c%d-%d" % (k, i)}, timeout=5)
                    if r.status == 201:
                        with lock:
                            acked.append(r.json()["data"]["id"])
                except OSError:
                    pass
                i += 1
        wb = self.ws(bob)
        threads = [threading.Thread(target=sender, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            self.s.kill("messages")
            time.sleep(0.5)
            self.s.restart("messages")
            time.sleep(1.0)
            self.s.kill("notifications")
            time.sleep(0.5)
            self.s.restart("notifications")
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertGreater(len(acked), 10)
        # Every acknowledged message is in the history, once.
        hist = [m["id"] for m in self.history(alice, room)]
        self.assertEqual(len(hist), len(set(hist)))
        missing = set(acked) - set(hist)
        self.assertFalse(missing, "acknowledged but lost: %r" % sorted(missing)[:5])
        # And bob, resuming from the last id he saw before the hub died,
        # gets every one of them exactly once.
        seen = {}
        last = "0"
        try:
            while True:
                f = wb.recv(timeout=2)
                if f["type"] == "message.sent":
                    seen[f["data"]["messageId"]] = seen.get(f["data"]["messageId"], 0) + 1
                    last = f["id"]
        except (OSError, WsClosed):
            pass  # quiet for 2 s, or the hub's restart closed it
        c = self.ws(bob, since=last)

        def complete():
            try:
                while True:
                    f = c.recv(timeout=1)
                    if f["type"] == "message.sent":
                        seen[f["data"]["messageId"]] = seen.get(f["data"]["messageId"], 0) + 1
            except (OSError, WsClosed):
                pass
            return set(hist) <= set(seen)
        st.wait_until(complete, "bob to have every message", timeout=60)
        twice = [k for k, n in seen.items() if n > 1]
        self.assertFalse(twice, "delivered twice: %r" % twice[:5])


if __name__ == "__main__":
    unittest.main(verbosity=2)
