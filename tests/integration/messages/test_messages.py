"""agora-messages end to end, through agora-gateway, with real agora-users
and agora-rooms and agora-files on the store and
bus of the run (tests/integration/lib/stack.py): what members and outsiders
of a room observe.

  - an outsider gets 404 on every read and write of a private room's
    messages (list, get, send, edit, delete, react, search, read marker),
    the same answer as for a room that does not exist, and changes nothing
  - edit only by the author (403 NOT_AUTHOR), delete by the author or the
    room's owner (403 for another member); tombstones in the history
  - replies within the room only (422)
  - history pages exact across pages: 125 messages, 50/50/25, newest first,
    by seq, no gap, no duplicate
  - content limits (4000 characters: 422 CONTENT_TOO_LONG), an oversized
    body (413), invalid UTF-8, unknown fields, malformed JSON; nothing sent
  - the per-user send rate limit: 429 RATE_LIMITED with Retry-After
  - reactions added, idempotent, removed
  - search finds messages only in the caller's rooms
  - unread counts and the read marker that only moves forward
  - a user who just joined posts at once; a kicked user, a deleted room:
    no more access
  - SIGKILL during concurrent sends, restart: every message that got a 201
    is in the history exactly once, positions 1..N without holes
  - message.sent, message.updated (edit, reactions), message.deleted on
    the bus with the data of docs/internals/chat.md
  - /openapi.json describes every route
"""

import json
import os
import sys
import threading
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "http"))
import stack as st  # noqa: E402

RATE, BURST = 10, 30


class Messages(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        env = {"AGORA_MESSAGES_RATE": str(RATE), "AGORA_MESSAGES_BURST": str(BURST)}
        cls.s, cls.bus = st.start_with_bus("messages", ["users", "rooms", "messages", "files"],
                                           "agora.events.message.>", env=env)

    @classmethod
    def tearDownClass(cls):
        st.stop_with_bus(cls.s, cls.bus)

    def setUp(self):
        self.alice = self.s.register("alice")
        self.bob = self.s.register("bob")
        self.carol = self.s.register("carol")

    # -- helpers ---------------------------------------------------------------------------

    def room(self, owner, members=(), private=True):
        d = self.s.ok(self.s.call("POST", "/api/v1/rooms", owner["token"],
                                  {"name": "room " + uuid.uuid4().hex[:6],
                                   "isPrivate": private}), 201)
        for m in members:
            self.s.ok(self.s.call("POST", "/api/v1/rooms/%s/members" % d["id"], owner["token"],
                                  {"userId": m["id"]}), 201)
        return d["id"]

    def send(self, user, room, content="hello", status=201, **extra):
        body = {"roomId": room, "content": content}
        body.update(extra)
        r = self.s.call("POST", "/api/v1/messages", user["token"], body)
        self.assertEqual(r.status, status, r)
        return r.json()["data"] if status == 201 else r

    def history(self, user, room, **q):
        q["roomId"] = room
        r = self.s.call("GET", "/api/v1/messages?" + "&".join(
            "%s=%s" % kv for kv in q.items()), user["token"])
        self.assertEqual(r.status, 200, r)
        return r.json()

    def all_history(self, user, room):
        out, before = [], None
        while True:
            page = self.history(user, room, limit=100, **({"before": before} if before else {}))
            out += page["data"]
            if not page["cursor"]["hasMore"]:
                return out
            before = page["cursor"]["before"]

    def get(self, user, mid):
        return self.s.call("GET", "/api/v1/messages/" + mid, user["token"])

    def error(self, reply, status, code=None):
        self.assertEqual(reply.status, status, reply)
        body = reply.json()
        self.assertIs(body["success"], False, body)
        if code:
            self.assertEqual(body["error"]["code"], code, body)
        return body["error"]

    # -- who may ---------------------------------------------------------------------------

    def test_outsider_gets_404_everywhere(self):
        room = self.room(self.alice, [self.bob])
        m = self.send(self.alice, room, "the secret plan")
        self.assertEqual(m["roomId"], room)
        self.assertEqual(m["userId"], self.alice["id"])
        self.assertEqual(m["username"], self.alice["email"].split("@")[0])
        self.assertEqual(m["seq"], 1)
        self.assertEqual(self.get(self.bob, m["id"]).status, 200)
        c = self.carol["token"]
        for reply, code in [
            (self.s.call("GET", "/api/v1/messages?roomId=" + room, c), "ROOM_NOT_FOUND"),
            (self.get(self.carol, m["id"]), "MESSAGE_NOT_FOUND"),
            (self.s.call("POST", "/api/v1/messages", c, {"roomId": room, "content": "hi"}),
             "ROOM_NOT_FOUND"),
            (self.s.call("PATCH", "/api/v1/messages/" + m["id"], c, {"content": "mine"}),
             "MESSAGE_NOT_FOUND"),
            (self.s.call("DELETE", "/api/v1/messages/" + m["id"], c), "MESSAGE_NOT_FOUND"),
            (self.s.call("POST", "/api/v1/messages/%s/reactions" % m["id"], c,
                         {"emoji": "+1"}), "MESSAGE_NOT_FOUND"),
            (self.s.call("DELETE", "/api/v1/messages/%s/reactions/+1" % m["id"], c),
             "MESSAGE_NOT_FOUND"),
            (self.s.call("GET", "/api/v1/messages/search?q=secret&roomId=" + room, c),
             "ROOM_NOT_FOUND"),
            (self.s.call("POST", "/api/v1/messages/read", c,
                         {"roomId": room, "messageId": m["id"]}), "ROOM_NOT_FOUND"),
        ]:
            self.error(reply, 404, code)
        # The same answer as for a room that does not exist.
        self.error(self.s.call("GET", "/api/v1/messages?roomId=no-such-room", c), 404,
                   "ROOM_NOT_FOUND")
        self.error(self.get(self.carol, str(uuid.uuid4())), 404, "MESSAGE_NOT_FOUND")
        # Search without a room finds nothing of it either.
        found = self.s.ok(self.s.call("GET", "/api/v1/messages/search?q=secret", c))
        self.assertEqual(found, [])
        # Nothing changed.
        after = self.s.ok(self.get(self.alice, m["id"]))
        self.assertEqual(after["content"], "the secret plan")
        self.assertEqual(after["reactions"], [])
        self.assertFalse(after["edited"] or after["deleted"])
        self.assertEqual([x["id"] for x in self.history(self.alice, room)["data"]], [m["id"]])
        # No token at all: 401.
        self.assertEqual(self.s.call("GET", "/api/v1/messages?roomId=" + room).status, 401)

    def test_edit_and_delete_rules(self):
        room = self.room(self.alice, [self.bob])
        mb = self.send(self.bob, room, "bob's words")
        ma = self.send(self.alice, room, "alice's words")
        self.error(self.s.call("PATCH", "/api/v1/messages/" + mb["id"], self.alice["token"],
                               {"content": "rewritten"}), 403, "NOT_AUTHOR")
        self.error(self.s.call("DELETE", "/api/v1/messages/" + ma["id"], self.bob["token"]), 403)
        self.assertEqual(self.s.ok(self.get(self.bob, mb["id"]))["content"], "bob's words")
        self.assertFalse(self.s.ok(self.get(self.bob, ma["id"]))["deleted"])

        e = self.s.ok(self.s.call("PATCH", "/api/v1/messages/" + mb["id"], self.bob["token"],
                                  {"content": "bob's better words"}))
        self.assertEqual(e["content"], "bob's better words")
        self.assertTrue(e["edited"])
        self.assertEqual(e["seq"], mb["seq"])
        self.assertEqual(self.s.ok(self.get(self.alice, mb["id"]))["content"],
                         "bob's better words")
        self.error(self.s.call("PATCH", "/api/v1/messages/" + mb["id"], self.bob["token"],
                               {"content": "x", "roomId": room}), 422)

        # The room's owner deletes bob's message; the history keeps a tombstone.
        d = self.s.ok(self.s.call("DELETE", "/api/v1/messages/" + mb["id"], self.alice["token"]))
        self.assertTrue(d["deleted"])
        self.assertIsNone(d["content"])
        page = self.history(self.bob, room)["data"]
        self.assertEqual([(x["id"], x["deleted"], x["content"]) for x in page],
                         [(ma["id"], False, "alice's words"), (mb["id"], True, None)])
        self.error(self.s.call("PATCH", "/api/v1/messages/" + mb["id"], self.bob["token"],
                               {"content": "back"}), 409, "MESSAGE_DELETED")
        # The author deletes their own; a second delete answers the tombstone again.
        self.assertTrue(self.s.ok(self.s.call("DELETE", "/api/v1/messages/" + ma["id"],
                                              self.alice["token"]))["deleted"])
        self.assertTrue(self.s.ok(self.s.call("DELETE", "/api/v1/messages/" + ma["id"],
                                              self.alice["token"]))["deleted"])

    def test_reply_within_the_room(self):
        room = self.room(self.alice, [self.bob])
        other = self.room(self.alice)
        elsewhere = self.send(self.alice, other, "in the other room")
        first = self.send(self.alice, room, "question?")
        err = self.error(self.send(self.bob, room, "answer", 422, replyTo=elsewhere["id"]), 422)
        self.assertIn("replyTo", json.dumps(err))
        self.error(self.send(self.bob, room, "answer", 422, replyTo=str(uuid.uuid4())), 422)
        r = self.send(self.bob, room, "answer", replyTo=first["id"])
        self.assertEqual(r["replyTo"], first["id"])
        self.assertEqual([x["id"] for x in self.history(self.bob, room)["data"]],
                         [r["id"], first["id"]])

    # -- history ---------------------------------------------------------------------------

    def test_history_pages_are_exact(self):
        room = self.room(self.alice, [self.bob])
        sent = []
        for i in range(125):
            who = self.alice if i % 2 == 0 else self.bob
            while True:  # two senders keep well inside the rate limit; wait out a 429
                r = self.s.call("POST", "/api/v1/messages", who["token"],
                                {"roomId": room, "content": "message %d" % i})
                if r.status != 429:
                    break
                time.sleep(float(r.header("Retry-After")))
            self.assertEqual(r.status, 201, r)
            sent.append(r.data)
        self.assertEqual([m["seq"] for m in sent], list(range(1, 126)))
        pages, before = [], None
        while True:
            q = {"limit": 50}
            if before:
                q["before"] = before
            page = self.history(self.bob, room, **q)
            pages.append(page)
            if not page["cursor"]["hasMore"]:
                break
            before = page["cursor"]["before"]
            self.assertEqual(before, page["data"][-1]["id"])
        self.assertEqual([len(p["data"]) for p in pages], [50, 50, 25])
        got = [m for p in pages for m in p["data"]]
        self.assertEqual([m["seq"] for m in got], list(range(125, 0, -1)))
        self.assertEqual([m["id"] for m in got], [m["id"] for m in reversed(sent)])
        self.assertEqual([m["content"] for m in got],
                         ["message %d" % i for i in range(124, -1, -1)])
        self.assertEqual(pages[-1]["cursor"], {"before": got[-1]["id"], "hasMore": False})
        # The largest page; the default of 50; limit past 100 refused; a before of another room refused.
        big = self.history(self.alice, room, limit=100)
        self.assertEqual([m["seq"] for m in big["data"]], list(range(125, 25, -1)))
        self.assertTrue(big["cursor"]["hasMore"])
        self.assertEqual(len(self.history(self.alice, room)["data"]), 50)
        self.error(self.s.call("GET", "/api/v1/messages?limit=101&roomId=" + room,
                               self.alice["token"]), 422)
        other = self.room(self.alice)
        self.error(self.s.call("GET", "/api/v1/messages?roomId=%s&before=%s" % (other, got[0]["id"]),
                               self.alice["token"]), 422)
        empty = self.history(self.alice, other)
        self.assertEqual(empty["data"], [])
        self.assertEqual(empty["cursor"], {"before": None, "hasMore": False})

    # -- limits ----------------------------------------------------------------------------

    def test_content_and_body_limits(self):
        room = self.room(self.alice)
        tok = self.alice["token"]
        ok = self.send(self.alice, room, "é" * 4000)  # characters, not bytes
        self.assertEqual(len(ok["content"]), 4000)
        self.error(self.send(self.alice, room, "x" * 4001, 422), 422, "CONTENT_TOO_LONG")
        big = json.dumps({"roomId": room, "content": "y" * (2 << 20)})
        self.assertEqual(self.s.call("POST", "/api/v1/messages", tok, big).status, 413)
        bad = b'{"roomId": "%s", "content": "caf\xc3("}' % room.encode()
        self.error(self.s.call("POST", "/api/v1/messages", tok, bad), 422)
        err = self.error(self.s.call("POST", "/api/v1/messages", tok,
                                     {"roomId": room, "content": "x", "pinned": True}), 422)
        self.assertIn("pinned", json.dumps(err["details"]))
        self.error(self.s.call("POST", "/api/v1/messages", tok, {"roomId": room}), 422)
        self.error(self.s.call("POST", "/api/v1/messages", tok,
                               {"roomId": room, "content": "   "}), 422)
        self.error(self.s.call("POST", "/api/v1/messages", tok, {"content": "x"}), 422)
        self.error(self.s.call("POST", "/api/v1/messages", tok,
                               {"roomId": room, "content": 5}), 422)
        self.error(self.s.call("POST", "/api/v1/messages", tok, '{"roomId": '), 400)
        self.error(self.s.call("PATCH", "/api/v1/messages/" + ok["id"], tok,
                               {"content": "z" * 4001}), 422, "CONTENT_TOO_LONG")
        self.error(self.s.call("POST", "/api/v1/messages", tok,
                               {"roomId": room, "fileId": "nothing-here"}), 422, "FILE_NOT_FOUND")
        # Nothing of that reached the room.
        msgs = self.all_history(self.alice, room)
        self.assertEqual([m["id"] for m in msgs], [ok["id"]])
        self.assertEqual(msgs[0]["content"], "é" * 4000)

    def test_rate_limit(self):
        room = self.room(self.alice, [self.bob])
        statuses, limited = [], None
        for i in range(BURST + 20):
            r = self.s.call("POST", "/api/v1/messages", self.alice["token"],
                            {"roomId": room, "content": "spam %d" % i})
            statuses.append(r.status)
            if r.status == 429:
                limited = r
                break
        self.assertIsNotNone(limited, statuses)
        self.assertGreaterEqual(statuses.count(201), BURST - 1)
        self.error(limited, 429, "RATE_LIMITED")
        retry = int(limited.header("Retry-After"))
        self.assertGreaterEqual(retry, 1)
        # Another user is not limited by alice's sends.
        self.send(self.bob, room, "my turn")
        time.sleep(retry)
        self.send(self.alice, room, "after the wait")
        self.assertEqual(len(self.all_history(self.bob, room)), statuses.count(201) + 2)

    # -- attachments -----------------------------------------------------------------------

    def upload(self, user, room, name, data, ctype):
        r = self.s.call("POST", "/api/v1/files?roomId=%s&name=%s" % (room, name), user["token"],
                        data, {"Content-Type": ctype})
        return self.s.ok(r, 201)["id"]

    def test_attachment(self):
        room = self.room(self.alice, [self.bob])
        other = self.room(self.alice)
        fid = self.upload(self.bob, room, "plan.pdf", b"%PDF-1.4 " + b"x" * 1225,
                          "application/pdf")
        elsewhere = self.upload(self.alice, other, "x.txt", b"x", "text/plain")
        m = self.send(self.bob, room, None, fileId=fid)
        self.assertIsNone(m["content"])
        self.assertEqual(m["attachment"], {"fileId": fid, "name": "plan.pdf", "size": 1234,
                                           "contentType": "application/pdf"})
        # A file of a room Bob is not in (he cannot see it), and none at all.
        self.error(self.send(self.bob, room, "not mine", 422, fileId=elsewhere), 422,
                   "FILE_NOT_FOUND")
        self.error(self.send(self.bob, room, "nothing", 422, fileId="f-" + uuid.uuid4().hex),
                   422, "FILE_NOT_FOUND")
        self.assertEqual(self.s.ok(self.get(self.alice, m["id"]))["attachment"], m["attachment"])
        self.assertEqual(self.send(self.bob, room, "see this", fileId=fid)["content"], "see this")
        self.error(self.send(self.alice, room, "wrong room", 422, fileId=elsewhere), 422,
                   "FILE_NOT_FOUND")
        self.assertEqual(len(self.history(self.alice, room)["data"]), 2)
        # Deleting the message drops the attachment from it.
        d = self.s.ok(self.s.call("DELETE", "/api/v1/messages/" + m["id"], self.bob["token"]))
        self.assertIsNone(d["attachment"])

    # -- reactions -------------------------------------------------------------------------

    def test_reactions(self):
        room = self.room(self.alice, [self.bob])
        m = self.send(self.alice, room, "react to me")
        path = "/api/v1/messages/%s/reactions" % m["id"]
        r = self.s.ok(self.s.call("POST", path, self.alice["token"], {"emoji": "👍"}))
        self.assertEqual(r["reactions"], [{"emoji": "👍", "count": 1,
                                           "userIds": [self.alice["id"]]}])
        r = self.s.ok(self.s.call("POST", path, self.alice["token"], {"emoji": "👍"}))
        self.assertEqual(r["reactions"][0]["count"], 1)  # idempotent
        self.s.ok(self.s.call("POST", path, self.bob["token"], {"emoji": "👍"}))
        r = self.s.ok(self.s.call("POST", path, self.bob["token"], {"emoji": "🎉"}))
        self.assertEqual(r["reactions"], [
            {"emoji": "👍", "count": 2, "userIds": [self.alice["id"], self.bob["id"]]},
            {"emoji": "🎉", "count": 1, "userIds": [self.bob["id"]]}])
        quoted = "%F0%9F%91%8D"  # 👍
        r = self.s.ok(self.s.call("DELETE", path + "/" + quoted, self.alice["token"]))
        self.assertEqual(r["reactions"][0], {"emoji": "👍", "count": 1,
                                             "userIds": [self.bob["id"]]})
        r = self.s.ok(self.s.call("DELETE", path + "/" + quoted, self.alice["token"]))
        self.assertEqual(r["reactions"][0]["count"], 1)  # removing twice is harmless
        for bad in ["a b", "", "x" * 33, 7]:
            self.error(self.s.call("POST", path, self.alice["token"], {"emoji": bad}), 422)
        self.error(self.s.call("POST", path, self.alice["token"], {"emoji": "ok", "n": 1}), 422)
        # The history shows the same summary.
        h = self.history(self.alice, room)["data"][0]
        self.assertEqual([(x["emoji"], x["count"]) for x in h["reactions"]],
                         [("👍", 1), ("🎉", 1)])

    # -- search ----------------------------------------------------------------------------

    def test_search_only_in_my_rooms(self):
        word = "zebra" + uuid.uuid4().hex[:6]
        a = self.room(self.alice, [self.bob])
        b = self.room(self.alice)
        c = self.room(self.carol)
        m1 = self.send(self.alice, a, "a %s crossing" % word)
        m2 = self.send(self.alice, b, "another %s here" % word.upper())
        mc = self.send(self.carol, c, "carol's %s" % word)
        self.send(self.alice, a, "nothing to see")
        gone = self.send(self.bob, a, "deleted %s" % word)
        self.s.ok(self.s.call("DELETE", "/api/v1/messages/" + gone["id"], self.bob["token"]))

        def search(user, q, room=None):
            path = "/api/v1/messages/search?q=" + q + ("&roomId=" + room if room else "")
            return [m["id"] for m in self.s.ok(self.s.call("GET", path, user["token"]))]

        self.assertEqual(search(self.alice, word), [m2["id"], m1["id"]])  # newest first
        self.assertEqual(search(self.alice, word[:7]), [m2["id"], m1["id"]])  # a prefix
        self.assertEqual(search(self.alice, word, a), [m1["id"]])
        self.assertEqual(search(self.bob, word), [m1["id"]])
        self.assertEqual(search(self.carol, word), [mc["id"]])
        self.assertEqual(search(self.alice, word + "+crossing"), [m1["id"]])
        self.error(self.s.call("GET", "/api/v1/messages/search?q=%s&roomId=%s" % (word, c),
                               self.alice["token"]), 404, "ROOM_NOT_FOUND")
        self.error(self.s.call("GET", "/api/v1/messages/search", self.alice["token"]), 422)
        # An edit is searchable by its new words, not its old ones.
        self.s.ok(self.s.call("PATCH", "/api/v1/messages/" + m1["id"], self.alice["token"],
                              {"content": "a giraffe" + word[5:]}))
        self.assertEqual(search(self.alice, word), [m2["id"]])
        self.assertEqual(search(self.alice, "giraffe" + word[5:]), [m1["id"]])

    # -- unread ----------------------------------------------------------------------------

    def test_unread_and_read_marker(self):
        room = self.room(self.alice, [self.bob])
        quiet = self.room(self.bob)
        ms = [self.send(self.alice, room, "n%d" % i) for i in range(4)]
        self.send(self.bob, room, "bob's own")

        def unread(user):
            return {u["roomId"]: u for u in self.s.ok(
                self.s.call("GET", "/api/v1/messages/unread", user["token"]))}

        u = unread(self.bob)
        self.assertEqual(u[room], {"roomId": room, "unread": 4, "lastReadId": None})
        self.assertEqual(u[quiet]["unread"], 0)
        self.assertEqual(unread(self.alice)[room]["unread"], 1)
        self.assertNotIn(room, unread(self.carol))

        def read(user, mid, status=200):
            r = self.s.call("POST", "/api/v1/messages/read", user["token"],
                            {"roomId": room, "messageId": mid})
            self.assertEqual(r.status, status, r)
            return r.json()["data"] if status == 200 else r

        self.assertEqual(read(self.bob, ms[1]["id"]),
                         {"roomId": room, "lastReadId": ms[1]["id"], "unread": 2})
        # An older message leaves the marker where it is.
        self.assertEqual(read(self.bob, ms[0]["id"]),
                         {"roomId": room, "lastReadId": ms[1]["id"], "unread": 2})
        self.s.ok(self.s.call("DELETE", "/api/v1/messages/" + ms[3]["id"], self.alice["token"]))
        self.assertEqual(unread(self.bob)[room], {"roomId": room, "unread": 1,
                                                  "lastReadId": ms[1]["id"]})
        self.error(read(self.bob, str(uuid.uuid4()), 404), 404, "MESSAGE_NOT_FOUND")
        self.error(self.s.call("POST", "/api/v1/messages/read", self.bob["token"],
                               {"roomId": room}), 422)

    # -- membership changes ----------------------------------------------------------------

    def test_join_post_at_once_and_kick(self):
        public = self.room(self.alice, private=False)
        self.send(self.alice, public, "welcome")
        # The join's event may not have reached agora-messages: the replica
        # misses and asks agora-rooms.
        self.s.ok(self.s.call("POST", "/api/v1/rooms/%s/join" % public, self.carol["token"]))
        m = self.send(self.carol, public, "hi, I just joined")
        self.assertEqual(m["seq"], 2)
        self.assertEqual(len(self.history(self.carol, public)["data"]), 2)
        # Invited into a private room: the same.
        private = self.room(self.alice)
        self.s.ok(self.s.call("POST", "/api/v1/rooms/%s/members" % private, self.alice["token"],
                              {"userId": self.bob["id"]}), 201)
        self.send(self.bob, private, "thanks for the invite")
        # Kicked: access ends once room.user_left arrived.
        r = self.s.call("DELETE", "/api/v1/rooms/%s/members/%s" % (private, self.bob["id"]),
                        self.alice["token"])
        self.assertIn(r.status, (200, 204), r)
        st.wait_until(lambda: self.s.call("GET", "/api/v1/messages?roomId=" + private,
                                          self.bob["token"]).status == 404, "the kick to apply")
        self.error(self.s.call("POST", "/api/v1/messages", self.bob["token"],
                               {"roomId": private, "content": "still here?"}), 404,
                   "ROOM_NOT_FOUND")
        self.assertNotIn(private, [u["roomId"] for u in self.s.ok(
            self.s.call("GET", "/api/v1/messages/unread", self.bob["token"]))])
        self.assertEqual(len(self.history(self.alice, private)["data"]), 1)

    def test_deleted_room_is_unreadable(self):
        room = self.room(self.alice, [self.bob])
        m = self.send(self.bob, room, "soon gone")
        r = self.s.call("DELETE", "/api/v1/rooms/" + room, self.alice["token"])
        self.assertIn(r.status, (200, 204), r)
        for user in (self.alice, self.bob):
            st.wait_until(lambda: self.get(user, m["id"]).status == 404, "room.deleted")
            self.error(self.s.call("GET", "/api/v1/messages?roomId=" + room, user["token"]),
                       404, "ROOM_NOT_FOUND")

    # -- crash -----------------------------------------------------------------------------

    def test_sigkill_during_sends_loses_no_acknowledged_message(self):
        users = [self.alice, self.bob] + [self.s.register("u%d" % i) for i in range(2)]
        room = self.room(self.alice, users[1:])
        for u in users[1:]:  # the replica knows them before the storm
            self.send(u, room, "ready")
        acked, lock, stop = [], threading.Lock(), threading.Event()

        def sender(u):
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = self.s.call("POST", "/api/v1/messages", u["token"],
                                    {"roomId": room, "content": "%s-%d" % (u["id"], i)},
                                    timeout=10)
                except OSError:
                    continue
                if r.status == 201:
                    with lock:
                        acked.append(r.data["id"])
                elif r.status == 429:
                    time.sleep(0.2)

        threads = [threading.Thread(target=sender, args=(u,)) for u in users]
        for t in threads:
            t.start()
        try:
            st.wait_until(lambda: len(acked) >= 20, "sends before the kill")
            self.s.kill("messages")
            time.sleep(0.5)
            self.s.restart("messages")
            before = len(acked)
            st.wait_until(lambda: len(acked) >= before + 10, "sends after the restart")
        finally:
            stop.set()
            for t in threads:
                t.join()
        ids = [m["id"] for m in self.all_history(self.alice, room)]
        self.assertEqual(len(ids), len(set(ids)), "a message twice in the history")
        missing = set(acked) - set(ids)
        self.assertFalse(missing, "acknowledged messages lost: %s" % sorted(missing)[:5])
        seqs = [m["seq"] for m in self.all_history(self.bob, room)]
        self.assertEqual(seqs, list(range(len(seqs), 0, -1)))

    # -- events ----------------------------------------------------------------------------

    def events_of(self, mid, want):
        """The message.* events about `mid` in arrival order, once `want` of
        them arrived (or the wait ran out)."""
        deadline = time.time() + 15
        while True:
            got = [m[1] for m in self.bus.wait_for(lambda e: e.get("subject") == mid, 0.2)]
            if len(got) >= want or time.time() > deadline:
                return [(e["type"], e) for e in got]
            time.sleep(0.05)

    def test_events_on_the_bus(self):
        room = self.room(self.alice, [self.bob])
        q = self.send(self.bob, room, "first")
        m = self.send(self.alice, room, "hello bus", replyTo=q["id"])
        self.s.ok(self.s.call("PATCH", "/api/v1/messages/" + m["id"], self.alice["token"],
                              {"content": "hello, bus"}))
        self.s.ok(self.s.call("POST", "/api/v1/messages/%s/reactions" % m["id"],
                              self.bob["token"], {"emoji": "ok"}))
        self.s.ok(self.s.call("POST", "/api/v1/messages/%s/reactions" % m["id"],
                              self.bob["token"], {"emoji": "ok"}))  # no change, no event
        self.s.ok(self.s.call("DELETE", "/api/v1/messages/" + m["id"], self.alice["token"]))
        evs = self.events_of(m["id"], 4)
        self.assertEqual([t for t, _ in evs],
                         ["message.sent", "message.updated", "message.updated", "message.deleted"])
        for _, e in evs:
            self.assertEqual(e["source"], "agora/messages")
        sent, edit, react, gone = [e["data"] for _, e in evs]
        self.assertEqual(sent, {"messageId": m["id"], "roomId": room, "userId": self.alice["id"],
                                "username": m["username"], "content": "hello bus",
                                "replyTo": q["id"], "attachment": None, "seq": 2,
                                "createdAt": m["createdAt"]})
        self.assertEqual(edit["content"], "hello, bus")
        self.assertTrue(edit["editedAt"])
        self.assertEqual(edit["reactions"], [])
        self.assertEqual((edit["messageId"], edit["roomId"], edit["userId"], edit["seq"]),
                         (m["id"], room, self.alice["id"], 2))
        self.assertEqual(react["reactions"], [{"emoji": "ok", "count": 1,
                                               "userIds": [self.bob["id"]]}])
        self.assertEqual(gone, {"messageId": m["id"], "roomId": room, "userId": self.alice["id"],
                                "deletedBy": self.alice["id"], "seq": 2})
        # A refused change publishes nothing.
        self.s.call("PATCH", "/api/v1/messages/" + q["id"], self.alice["token"], {"content": "x"})
        time.sleep(0.5)
        self.assertEqual([t for t, _ in self.events_of(q["id"], 1)], ["message.sent"])

    # -- description -----------------------------------------------------------------------

    def test_openapi_describes_every_route(self):
        r = self.s.call("GET", "/openapi.json", port=self.s.ports["messages"])
        self.assertEqual(r.status, 200, r)
        paths = r.json()["paths"]
        for path, methods in {
            "/v1/messages": ["get", "post"], "/v1/messages/search": ["get"],
            "/v1/messages/unread": ["get"], "/v1/messages/read": ["post"],
            "/v1/messages/{id}": ["get", "patch", "delete"],
            "/v1/messages/{id}/reactions": ["post"],
            "/v1/messages/{id}/reactions/{emoji}": ["delete"],
        }.items():
            self.assertIn(path, paths)
            for m in methods:
                self.assertIn(m, paths[path], path)


if __name__ == "__main__":
    unittest.main(verbosity=2)
