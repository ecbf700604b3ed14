"""agora-rooms end to end, through agora-gateway, with a real agora-users
(tokens verified through its JWKS, invited users looked up there) on the
store and bus of the run (stack.py: SQLite and NATS, or PostgreSQL and
RabbitMQ): what the chat's users observe, and the room.* events on the
broker.

  - create public and private rooms; the list's visibility (outsiders do
    not see private rooms, platform admins see all), q and mine, pagination
  - a private room is 404 to outsiders on every route, like an unknown one
  - join a public room (idempotent), not a private one
  - invite; roles: a member cannot edit (403), an admin cannot remove the
    owner or add an admin, the owner cannot leave (409); kick; hand-over
  - delete: 403 for others, 200 for the owner, then 404
  - the member lookup the chat services make: self, member, admin,
    service, outsider 404
  - bad input (400, 422, unknown fields) changes nothing
  - every change increments the room's version; concurrent joins get
    distinct versions
  - user.deleted: memberships go, owned rooms pass to the longest-standing
    admin, else member, else are deleted
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
import harness  # noqa: E402

ROOMS = "/api/v1/rooms"


class Rooms(unittest.TestCase):
    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        cls.s, cls.bus = st.start_with_bus("rooms", ["users", "rooms"], "agora.events.room.>")
        cls.admin = cls.s.login(st.ADMIN_EMAIL, st.ADMIN_PASSWORD)

    @classmethod
    def tearDownClass(cls):
        st.stop_with_bus(cls.s, cls.bus)

    def setUp(self):
        self.alice = self.s.register("alice")
        self.bob = self.s.register("bob")

    # -- helpers ----------------------------------------------------------------------------

    def call(self, method, path, user=None, body=None, **kw):
        return self.s.call(method, ROOMS + path, user["token"] if user else None, body, **kw)

    def ok(self, reply, status=200):
        return self.s.ok(reply, status)

    def error(self, reply, status, code):
        self.assertEqual(reply.status, status, reply)
        body = reply.json()
        self.assertIs(body["success"], False, body)
        self.assertEqual(body["error"]["code"], code, body)
        return body["error"]

    def room(self, user, name=None, private=False, **extra):
        body = {"name": name or "room " + uuid.uuid4().hex[:8], "isPrivate": private}
        body.update(extra)
        return self.ok(self.call("POST", "", user, body), 201)

    def get(self, user, rid):
        return self.ok(self.call("GET", "/" + rid, user))

    def invite(self, owner, rid, user, role=None, status=201):
        body = {"userId": user["id"]}
        if role:
            body["role"] = role
        return self.ok(self.call("POST", "/%s/members" % rid, owner, body), status)

    def listing(self, user, query=""):
        r = self.call("GET", "?" + query, user)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def events(self, type_, subject, want=1, timeout=10.0):
        """The events of `type_` about `subject` seen so far, in arrival
        order, waiting up to `timeout` s (scaled) for `want` of them."""
        deadline = time.monotonic() + harness.scaled(timeout)
        while True:
            found = self.bus.wait_for(
                lambda e: e.get("type") == type_ and e.get("subject") == subject, timeout=0.2)
            if len(found) >= want or time.monotonic() > deadline:
                return [m[1] for m in found]
            time.sleep(0.05)

    def one_event(self, type_, subject):
        evs = self.events(type_, subject)
        self.assertEqual(len(evs), 1, "%s for %s: %r" % (type_, subject, evs))
        self.assertEqual(evs[0]["source"], "agora/rooms")
        return evs[0]["data"]

    def service_token(self):
        d = self.s.ok(self.s.call("POST", "/api/v1/auth/token",
                                  body={"clientId": "orders", "clientSecret": st.CLIENT_SECRET}))
        return {"token": d["token"]}

    # -- tests ------------------------------------------------------------------------------

    def test_create_public_and_private(self):
        pub = self.room(self.alice, name="  Lobby  ", description="hello")
        self.assertEqual(pub["name"], "Lobby")  # trimmed
        self.assertEqual((pub["description"], pub["isPrivate"], pub["ownerId"], pub["memberCount"],
                          pub["myRole"], pub["version"]),
                         ("hello", False, self.alice["id"], 1, "owner", 1))
        self.assertTrue(pub["createdAt"].endswith("Z"))
        self.assertEqual(pub["createdAt"], pub["updatedAt"])
        priv = self.room(self.alice, private=True)
        self.assertIs(priv["isPrivate"], True)
        self.assertEqual(priv["description"], "")
        self.assertEqual(self.get(self.alice, priv["id"]), priv)
        d = self.one_event("room.created", priv["id"])
        self.assertEqual(d, {"roomId": priv["id"], "name": priv["name"], "description": "",
                             "isPrivate": True, "ownerId": self.alice["id"], "version": 1,
                             "createdAt": priv["createdAt"],
                             "members": [{"userId": self.alice["id"], "role": "owner"}]})
        # A platform admin sees it; bob is just another user.
        self.assertEqual(self.get(self.admin, priv["id"])["myRole"], None)

    def test_list_visibility_search_and_pages(self):
        tag = uuid.uuid4().hex[:8]
        pub = self.room(self.alice, name="Public %s" % tag)
        priv = self.room(self.alice, name="Secret %s" % tag, private=True)
        ids = lambda j: [r["id"] for r in j["data"]]  # noqa: E731
        bob = self.listing(self.bob, "q=" + tag)
        self.assertEqual(ids(bob), [pub["id"]])
        self.assertEqual(bob["data"][0]["myRole"], None)
        self.assertEqual(bob["pagination"], {"page": 1, "limit": 20, "total": 1, "pages": 1})
        self.assertEqual(ids(self.listing(self.alice, "q=" + tag)), [priv["id"], pub["id"]])
        self.assertEqual(ids(self.listing(self.admin, "q=" + tag)), [priv["id"], pub["id"]])
        # q is a case-insensitive substring; % and _ are plain characters.
        self.assertEqual(ids(self.listing(self.alice, "q=SECRET%20" + tag.upper())), [priv["id"]])
        self.assertEqual(ids(self.listing(self.alice, "q=%25" + tag)), [])
        # mine: only the caller's rooms.
        self.assertEqual(ids(self.listing(self.bob, "mine=true&q=" + tag)), [])
        self.ok(self.call("POST", "/%s/join" % pub["id"], self.bob))
        self.assertEqual(ids(self.listing(self.bob, "mine=true&q=" + tag)), [pub["id"]])
        self.assertEqual(ids(self.listing(self.bob, "mine=true")), [pub["id"]])
        # Pages.
        for i in range(3):
            self.room(self.alice, name="Paged %s %d" % (tag, i))
        p1 = self.listing(self.alice, "q=paged%20" + tag + "&limit=2")
        p2 = self.listing(self.alice, "q=paged%20" + tag + "&limit=2&page=2")
        self.assertEqual(p1["pagination"], {"page": 1, "limit": 2, "total": 3, "pages": 2})
        self.assertEqual([r["name"] for r in p1["data"] + p2["data"]],
                         ["Paged %s %d" % (tag, i) for i in (2, 1, 0)])
        for q in ("limit=0", "limit=101", "page=0", "page=x", "mine=yes"):
            self.error(self.call("GET", "?" + q, self.alice), 422, "VALIDATION_FAILED")

    def test_private_room_is_hidden_from_outsiders(self):
        priv = self.room(self.alice, private=True)
        rid = priv["id"]
        unknown = self.error(self.call("GET", "/" + str(uuid.uuid4()), self.bob), 404,
                             "ROOM_NOT_FOUND")
        hidden = self.error(self.call("GET", "/" + rid, self.bob), 404, "ROOM_NOT_FOUND")
        self.assertEqual(unknown["message"], hidden["message"])
        self.error(self.call("POST", "/%s/join" % rid, self.bob), 404, "ROOM_NOT_FOUND")
        self.error(self.call("GET", "/%s/members" % rid, self.bob), 404, "ROOM_NOT_FOUND")
        self.error(self.call("PATCH", "/" + rid, self.bob, {"name": "mine"}), 404,
                   "ROOM_NOT_FOUND")
        self.error(self.call("DELETE", "/" + rid, self.bob), 404, "ROOM_NOT_FOUND")
        self.error(self.call("POST", "/%s/leave" % rid, self.bob), 404, "ROOM_NOT_FOUND")
        self.error(self.call("POST", "/%s/members" % rid, self.bob, {"userId": self.bob["id"]}),
                   404, "ROOM_NOT_FOUND")
        self.error(self.call("GET", "/%s/members/%s" % (rid, self.alice["id"]), self.bob), 404,
                   "ROOM_NOT_FOUND")
        # A platform admin sees it, but joins a private room only by invitation.
        self.error(self.call("POST", "/%s/join" % rid, self.admin), 403, "INVITE_ONLY")
        after = self.get(self.alice, rid)
        self.assertEqual((after["version"], after["memberCount"]), (1, 1))
        # Without a token: 401 at the gateway and at the service.
        self.assertEqual(self.call("GET", "/" + rid).status, 401)
        r = self.s.call("GET", "/v1/rooms/" + rid, port=self.s.ports["rooms"])
        self.error(r, 401, "UNAUTHENTICATED")

    def test_join_public_is_idempotent(self):
        rid = self.room(self.alice)["id"]
        joined = self.ok(self.call("POST", "/%s/join" % rid, self.bob))
        self.assertEqual((joined["myRole"], joined["memberCount"], joined["version"]),
                         ("member", 2, 2))
        again = self.ok(self.call("POST", "/%s/join" % rid, self.bob))
        self.assertEqual((again["memberCount"], again["version"]), (2, 2))
        self.assertEqual(self.ok(self.call("POST", "/%s/join" % rid, self.alice))["version"], 2)
        d = self.one_event("room.user_joined", rid)
        self.assertEqual(d, {"roomId": rid, "userId": self.bob["id"], "role": "member",
                             "version": 2, "by": self.bob["id"], "how": "joined"})
        members = self.call("GET", "/%s/members" % rid, self.bob).json()
        self.assertEqual([(m["userId"], m["role"]) for m in members["data"]],
                         [(self.alice["id"], "owner"), (self.bob["id"], "member")])
        self.assertEqual(members["pagination"]["total"], 2)
        # Leaving: once, then not a member.
        left = self.ok(self.call("POST", "/%s/leave" % rid, self.bob))
        self.assertEqual((left["myRole"], left["memberCount"], left["version"]), (None, 1, 3))
        self.error(self.call("POST", "/%s/leave" % rid, self.bob), 409, "NOT_A_MEMBER")
        self.assertEqual(self.one_event("room.user_left", rid),
                         {"roomId": rid, "userId": self.bob["id"], "version": 3,
                          "by": self.bob["id"], "how": "left"})

    def test_invite_roles_and_kick(self):
        carol, dave = self.s.register("carol"), self.s.register("dave")
        rid = self.room(self.alice, private=True)["id"]
        m = self.invite(self.alice, rid, self.bob)
        self.assertEqual((m["userId"], m["role"]), (self.bob["id"], "member"))
        self.assertEqual(self.get(self.bob, rid)["myRole"], "member")
        self.assertEqual(self.one_event("room.user_joined", rid),
                         {"roomId": rid, "userId": self.bob["id"], "role": "member",
                          "version": 2, "by": self.alice["id"], "how": "invited"})
        self.error(self.call("POST", "/%s/members" % rid, self.alice, {"userId": self.bob["id"]}),
                   409, "ALREADY_MEMBER")
        self.error(self.call("POST", "/%s/members" % rid, self.alice,
                             {"userId": str(uuid.uuid4())}), 404, "USER_NOT_FOUND")
        # A plain member edits nothing and adds nobody.
        self.error(self.call("PATCH", "/" + rid, self.bob, {"name": "bob's"}), 403, "FORBIDDEN")
        self.error(self.call("POST", "/%s/members" % rid, self.bob, {"userId": carol["id"]}),
                   403, "FORBIDDEN")
        self.error(self.call("DELETE", "/%s/members/%s" % (rid, self.alice["id"]), self.bob),
                   403, "FORBIDDEN")
        self.error(self.call("PUT", "/%s/members/%s" % (rid, self.bob["id"]), self.bob,
                             {"role": "admin"}), 403, "FORBIDDEN")
        self.assertEqual(self.get(self.alice, rid)["version"], 2)
        # An admin edits and adds members, but not admins, and removes neither
        # the owner nor another admin.
        self.assertEqual(self.invite(self.alice, rid, carol, "admin")["role"], "admin")
        patched = self.ok(self.call("PATCH", "/" + rid, carol,
                                    {"name": "Carol's", "description": "d"}))
        self.assertEqual((patched["name"], patched["description"], patched["version"],
                          patched["myRole"]), ("Carol's", "d", 4, "admin"))
        upd = self.one_event("room.updated", rid)
        self.assertEqual((upd["name"], upd["description"], upd["isPrivate"], upd["version"]),
                         ("Carol's", "d", True, 4))
        self.assertNotIn("member", upd)
        self.error(self.call("POST", "/%s/members" % rid, carol,
                             {"userId": dave["id"], "role": "admin"}), 403, "FORBIDDEN")
        self.error(self.call("DELETE", "/%s/members/%s" % (rid, self.alice["id"]), carol),
                   403, "FORBIDDEN")
        self.assertEqual(self.invite(self.alice, rid, dave, "admin")["role"], "admin")
        self.error(self.call("DELETE", "/%s/members/%s" % (rid, dave["id"]), carol), 403,
                   "FORBIDDEN")
        # The owner cannot leave, nor demote themself.
        self.error(self.call("POST", "/%s/leave" % rid, self.alice), 409, "OWNER_CANNOT_LEAVE")
        self.error(self.call("DELETE", "/%s/members/%s" % (rid, self.alice["id"]), self.alice),
                   409, "OWNER_CANNOT_LEAVE")
        self.error(self.call("PUT", "/%s/members/%s" % (rid, self.alice["id"]), self.alice,
                             {"role": "member"}), 409, "OWNER_REQUIRED")
        v = self.get(self.alice, rid)["version"]
        self.assertEqual(v, 5)
        # An admin kicks a member; the member no longer sees the private room.
        kicked = self.ok(self.call("DELETE", "/%s/members/%s" % (rid, self.bob["id"]), carol))
        self.assertEqual(kicked, {"roomId": rid, "userId": self.bob["id"], "removed": True,
                                  "version": 6})
        self.error(self.call("GET", "/" + rid, self.bob), 404, "ROOM_NOT_FOUND")
        self.error(self.call("DELETE", "/%s/members/%s" % (rid, self.bob["id"]), carol), 404,
                   "MEMBER_NOT_FOUND")
        self.assertEqual(self.one_event("room.user_left", rid),
                         {"roomId": rid, "userId": self.bob["id"], "version": 6,
                          "by": carol["id"], "how": "kicked"})
        # The owner promotes and demotes; the owner removes an admin.
        d = self.ok(self.call("PUT", "/%s/members/%s" % (rid, dave["id"]), self.alice,
                              {"role": "member"}))
        self.assertEqual(d["role"], "member")
        upd = self.events("room.updated", rid, want=2)
        self.assertEqual(upd[-1]["data"]["member"], {"userId": dave["id"], "role": "member"})
        self.assertEqual(upd[-1]["data"]["version"], 7)
        self.ok(self.call("DELETE", "/%s/members/%s" % (rid, carol["id"]), self.alice))
        # Self-removal is leaving.
        me = self.ok(self.call("DELETE", "/%s/members/%s" % (rid, dave["id"]), dave))
        self.assertEqual((me["removed"], me["version"]), (True, 9))
        final = self.get(self.alice, rid)
        self.assertEqual((final["memberCount"], final["version"]), (1, 9))

    def test_hand_over(self):
        rid = self.room(self.alice)["id"]
        self.ok(self.call("POST", "/%s/join" % rid, self.bob))
        self.error(self.call("PUT", "/%s/members/%s" % (rid, str(uuid.uuid4())), self.alice,
                             {"role": "owner"}), 404, "MEMBER_NOT_FOUND")
        m = self.ok(self.call("PUT", "/%s/members/%s" % (rid, self.bob["id"]), self.alice,
                              {"role": "owner"}))
        self.assertEqual(m["role"], "owner")
        room = self.get(self.alice, rid)
        self.assertEqual((room["ownerId"], room["myRole"], room["version"]),
                         (self.bob["id"], "admin", 3))
        d = self.one_event("room.updated", rid)
        self.assertEqual(d["member"], {"userId": self.bob["id"], "role": "owner"})
        self.assertEqual(d["members"], [{"userId": self.bob["id"], "role": "owner"},
                                        {"userId": self.alice["id"], "role": "admin"}])
        self.assertEqual(d["version"], 3)
        # The old owner has no owner's rights any more; the new one has.
        self.error(self.call("DELETE", "/" + rid, self.alice), 403, "FORBIDDEN")
        self.error(self.call("POST", "/%s/leave" % rid, self.bob), 409, "OWNER_CANNOT_LEAVE")
        self.ok(self.call("POST", "/%s/leave" % rid, self.alice))

    def test_delete(self):
        rid = self.room(self.alice)["id"]
        self.ok(self.call("POST", "/%s/join" % rid, self.bob))
        self.error(self.call("DELETE", "/" + rid, self.bob), 403, "FORBIDDEN")
        self.assertEqual(self.get(self.alice, rid)["version"], 2)
        self.assertEqual(self.ok(self.call("DELETE", "/" + rid, self.alice)),
                         {"id": rid, "deleted": True})
        self.error(self.call("GET", "/" + rid, self.alice), 404, "ROOM_NOT_FOUND")
        self.error(self.call("DELETE", "/" + rid, self.alice), 404, "ROOM_NOT_FOUND")
        d = self.one_event("room.deleted", rid)
        self.assertEqual((d["roomId"], d["version"], d["deletedBy"]), (rid, 3, self.alice["id"]))
        self.assertEqual(sorted(d["memberIds"]), sorted([self.alice["id"], self.bob["id"]]))
        # A platform admin may delete any room.
        other = self.room(self.bob, private=True)["id"]
        self.ok(self.call("DELETE", "/" + other, self.admin))
        self.error(self.call("GET", "/" + other, self.bob), 404, "ROOM_NOT_FOUND")

    def test_member_lookup(self):
        carol = self.s.register("carol")
        priv = self.room(self.alice, private=True)["id"]
        pub = self.room(self.alice)["id"]
        for rid in (priv, pub):
            self.invite(self.alice, rid, self.bob)
        path = lambda rid, u: "/%s/members/%s" % (rid, u["id"])  # noqa: E731
        own = self.ok(self.call("GET", path(priv, self.bob), self.bob))
        self.assertEqual((own["userId"], own["role"], own["version"]),
                         (self.bob["id"], "member", 2))
        self.assertTrue(own["joinedAt"].endswith("Z"))
        self.assertEqual(self.ok(self.call("GET", path(priv, self.alice), self.bob))["role"],
                         "owner")
        self.assertEqual(self.ok(self.call("GET", path(priv, self.bob), self.admin))["role"],
                         "member")
        svc = self.service_token()
        self.assertEqual(self.ok(self.call("GET", path(priv, self.bob), svc))["version"], 2)
        self.error(self.call("GET", path(priv, carol), svc), 404, "MEMBER_NOT_FOUND")
        # Outsiders: nothing of a private room, no one else's membership of a public one.
        self.error(self.call("GET", path(priv, self.alice), carol), 404, "ROOM_NOT_FOUND")
        self.error(self.call("GET", path(priv, carol), carol), 404, "ROOM_NOT_FOUND")
        self.error(self.call("GET", path(pub, self.alice), carol), 404, "MEMBER_NOT_FOUND")
        self.error(self.call("GET", path(pub, carol), carol), 404, "MEMBER_NOT_FOUND")
        # The version follows the room's changes.
        self.ok(self.call("PATCH", "/" + priv, self.alice, {"description": "now"}))
        self.assertEqual(self.ok(self.call("GET", path(priv, self.bob), self.bob))["version"], 3)
        self.ok(self.call("POST", "/%s/leave" % priv, self.bob))
        self.error(self.call("GET", path(priv, self.bob), self.bob), 404, "ROOM_NOT_FOUND")
        self.error(self.call("GET", path(priv, self.bob), self.alice), 404, "MEMBER_NOT_FOUND")

    def test_bad_input_changes_nothing(self):
        tag = uuid.uuid4().hex[:8]
        bad_creates = [
            {},
            {"name": ""},
            {"name": "   "},
            {"name": "x" * 101},
            {"name": "a\nb"},
            {"name": 5},
            {"name": "ok " + tag, "description": "d" * 1001},
            {"name": "ok " + tag, "isPrivate": "yes"},
            {"name": "ok " + tag, "owner": self.bob["id"]},
            ["name"],
        ]
        for body in bad_creates:
            e = self.error(self.call("POST", "", self.alice, body), 422, "VALIDATION_FAILED")
            self.assertTrue(e["details"], body)
        e = self.error(self.call("POST", "", self.alice, {"name": "", "colour": "red"}), 422,
                       "VALIDATION_FAILED")
        self.assertEqual(sorted(d["field"] for d in e["details"]), ["colour", "name"])
        self.error(self.call("POST", "", self.alice, '{"name": "ok'), 400, "MALFORMED_JSON")
        self.assertEqual(self.call("POST", "", self.alice, "name=ok",
                                   headers={"Content-Type": "text/plain"}).status, 415)
        self.assertEqual(self.listing(self.alice, "q=" + tag)["data"], [])
        # On a room: nothing moves.
        room = self.room(self.alice, name="Stable " + tag)
        rid = room["id"]
        for body in ({"name": ""}, {"isPrivate": 1}, {"ownerId": self.bob["id"]},
                     {"description": "d" * 1001}):
            self.error(self.call("PATCH", "/" + rid, self.alice, body), 422, "VALIDATION_FAILED")
        self.assertEqual(self.call("PATCH", "/" + rid, self.alice, "{").status, 400)
        for body in ({}, {"userId": "../../x"}, {"userId": self.bob["id"], "role": "owner"},
                     {"userId": self.bob["id"], "role": "king"},
                     {"userId": self.bob["id"], "extra": 1}):
            self.error(self.call("POST", "/%s/members" % rid, self.alice, body), 422,
                       "VALIDATION_FAILED")
        for body in ({}, {"role": "king"}, {"role": "owner", "x": 1}):
            self.error(self.call("PUT", "/%s/members/%s" % (rid, self.alice["id"]), self.alice,
                                 body), 422, "VALIDATION_FAILED")
        self.error(self.call("GET", "/bad%20id", self.alice), 404, "ROOM_NOT_FOUND")
        # An edit that changes nothing is answered and not counted.
        same = self.ok(self.call("PATCH", "/" + rid, self.alice, {"name": "Stable " + tag}))
        self.assertEqual(same["version"], 1)
        self.assertEqual(self.get(self.alice, rid), room)
        self.assertEqual(len(self.events("room.updated", rid, timeout=1.0)), 0)

    def test_concurrent_joins_get_distinct_versions(self):
        rid = self.room(self.alice)["id"]
        users = [self.s.register("j%d" % i) for i in range(6)]
        results = []

        def join(u):
            results.append(self.call("POST", "/%s/join" % rid, u).status)
        threads = [threading.Thread(target=join, args=(u,)) for u in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, [200] * len(users))
        room = self.get(self.alice, rid)
        self.assertEqual((room["memberCount"], room["version"]), (7, 7))
        evs = self.events("room.user_joined", rid, want=len(users))
        self.assertEqual(sorted(e["data"]["version"] for e in evs), list(range(2, 8)))

    def test_user_deleted(self):
        carol, dave = self.s.register("carol"), self.s.register("dave")
        # r1: bob joined before carol, but carol is an admin: she inherits.
        r1 = self.room(self.alice)["id"]
        self.ok(self.call("POST", "/%s/join" % r1, self.bob))
        self.invite(self.alice, r1, carol, "admin")
        self.ok(self.call("POST", "/%s/join" % r1, dave))
        # r2: members only: the longest-standing (bob) inherits.
        r2 = self.room(self.alice, private=True)["id"]
        self.invite(self.alice, r2, self.bob)
        self.invite(self.alice, r2, dave)
        # r3: alice alone: deleted. r4: bob's room; alice just leaves it.
        r3 = self.room(self.alice)["id"]
        r4 = self.room(self.bob)["id"]
        self.ok(self.call("POST", "/%s/join" % r4, self.alice))
        self.assertEqual(self.s.call("DELETE", "/api/v1/users/" + self.alice["id"],
                                     self.admin["token"]).status, 204)

        def owner_is(rid, who):
            return self.get(who, rid)["ownerId"] == who["id"]
        st.wait_until(lambda: owner_is(r1, carol), "carol to own r1")
        st.wait_until(lambda: owner_is(r2, self.bob), "bob to own r2")
        st.wait_until(lambda: self.call("GET", "/" + r3, self.bob).status == 404, "r3 deleted")
        st.wait_until(lambda: self.get(self.bob, r4)["memberCount"] == 1, "alice out of r4")
        room1 = self.get(carol, r1)
        self.assertEqual((room1["memberCount"], room1["myRole"]), (3, "owner"))
        roles = {m["userId"]: m["role"] for m in
                 self.call("GET", "/%s/members" % r1, carol).json()["data"]}
        self.assertEqual(roles, {self.bob["id"]: "member", carol["id"]: "owner",
                                 dave["id"]: "member"})
        self.error(self.call("GET", "/%s/members/%s" % (r2, self.alice["id"]), self.bob), 404,
                   "MEMBER_NOT_FOUND")
        # The events: the hand-over, then alice leaving; r3's deletion.
        left = self.one_event("room.user_left", r1)
        self.assertEqual((left["userId"], left["how"], left["version"]),
                         (self.alice["id"], "deleted", room1["version"]))
        upd = [e["data"] for e in self.events("room.updated", r1)]
        self.assertEqual(upd[-1]["member"], {"userId": carol["id"], "role": "owner"})
        self.assertEqual(upd[-1]["version"], room1["version"] - 1)
        gone = self.one_event("room.deleted", r3)
        self.assertEqual((gone["memberIds"], gone["deletedBy"]),
                         ([self.alice["id"]], self.alice["id"]))
        self.assertEqual(self.ok(self.call("GET", "/" + r4, self.bob))["version"], 3)

    def test_invite_while_users_is_down(self):
        rid = self.room(self.alice)["id"]
        self.s.kill("users")
        try:
            self.error(self.call("POST", "/%s/members" % rid, self.alice,
                                 {"userId": self.bob["id"]}), 503, "USERS_UNAVAILABLE")
            # Refusals the room decides need no agora-users.
            self.error(self.call("POST", "/%s/members" % rid, self.bob,
                                 {"userId": self.bob["id"]}), 403, "FORBIDDEN")
        finally:
            self.s.restart("users")
        room = self.get(self.alice, rid)
        self.assertEqual((room["memberCount"], room["version"]), (1, 1))
        st.wait_until(lambda: self.call("POST", "/%s/members" % rid, self.alice,
                                        {"userId": self.bob["id"]}).status == 201,
                      "the invite once agora-users is back")
        self.assertEqual(self.get(self.bob, rid)["myRole"], "member")

    def test_openapi_describes_every_route(self):
        r = self.s.call("GET", "/openapi.json", port=self.s.ports["rooms"])
        self.assertEqual(r.status, 200, r)
        paths = json.loads(r.body)["paths"]
        want = {"/v1/rooms": {"get", "post"}, "/v1/rooms/{id}": {"get", "patch", "delete"},
                "/v1/rooms/{id}/join": {"post"}, "/v1/rooms/{id}/leave": {"post"},
                "/v1/rooms/{id}/members": {"get", "post"},
                "/v1/rooms/{id}/members/{userId}": {"get", "put", "delete"}}
        for p, methods in want.items():
            self.assertIn(p, paths)
            self.assertEqual(set(paths[p]) & {"get", "post", "put", "patch", "delete"}, methods)


if __name__ == "__main__":
    unittest.main(verbosity=2)
