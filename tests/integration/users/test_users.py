"""agora-users over HTTP, with its real store and a real NATS: register,
login, tokens (EdDSA, JWKS, refresh rotation, verify, client credentials),
profiles with their permissions, password change, deletion, listing, key
rotation and restarts."""

import base64
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import service  # noqa: E402
from service import harness  # noqa: E402


def b64json(seg):
    return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))


class Users(harness.ServerTestCase):
    def setUp(self):
        service.require("users")
        self.tmp = tempfile.mkdtemp(prefix="agora-users-")
        self.env = {
            "AGORA_DB": service.db_url(self.tmp, "users"),
            "AGORA_BUS": os.environ.get("AGORA_TEST_NATS_URL") or os.environ["AGORA_TEST_AMQP_URL"],
            "AGORA_ADMIN_EMAIL": "Root@Example.com",
            "AGORA_ADMIN_PASSWORD": "admin-password-1",
            "AGORA_SERVICE_CLIENTS": "orders:orders-secret",
        }

    def tearDown(self):
        subprocess.run(["rm", "-rf", self.tmp], check=False)

    def start(self, **extra):
        srv = service.start("users", dict(self.env, **extra))
        self.addCleanup(self._finish_server, srv)
        return srv

    def post(self, c, path, body, token=None):
        return service.send(c, "POST", path, token, body)

    def call(self, c, method, path, token=None, body=None):
        return service.send(c, method, path, token, body)

    def register(self, c, name, email=None, password="password-123"):
        r = self.post(c, "/v1/auth/register",
                      {"username": name, "email": email or name + "@example.com",
                       "password": password})
        return self.assertOk(r, 201)

    def login(self, c, email, password):
        return self.assertOk(self.post(c, "/v1/auth/login", {"email": email, "password": password}))

    def test_register_login_and_tokens(self):
        srv = self.start()
        c = self.connect(srv)
        d = self.register(c, "alice")
        self.assertEqual(d["user"]["username"], "alice")
        self.assertEqual(d["user"]["email"], "alice@example.com")
        self.assertEqual(d["user"]["role"], "customer")
        self.assertNotIn("password", json.dumps(d["user"]).lower())
        head, payload, sig = d["token"].split(".")
        h, p = b64json(head), b64json(payload)
        self.assertEqual(h["alg"], "EdDSA")
        for k in ("sub", "email", "role", "iss", "aud", "iat", "exp"):
            self.assertIn(k, p)
        jwks = c.get("/.well-known/jwks.json").json()
        self.assertIn(h["kid"], [k["kid"] for k in jwks["keys"]])
        self.assertTrue(all("d" not in k for k in jwks["keys"]), "private key in the JWKS")

        # Conflicts and validation.
        self.assertEnvelopeError(self.post(c, "/v1/auth/register", {
            "username": "alice2", "email": "ALICE@example.com", "password": "password-123"}),
            409, "CONFLICT")
        self.assertEnvelopeError(self.post(c, "/v1/auth/register", {
            "username": "alice", "email": "other@example.com", "password": "password-123"}),
            409, "CONFLICT")
        r = self.post(c, "/v1/auth/register", {"username": "al", "email": "nope", "password": "short"})
        body = self.assertEnvelopeError(r, 422, "VALIDATION_FAILED")
        fields = {d["field"] for d in body["error"]["details"]}
        self.assertEqual(fields, {"username", "email", "password"})

        # Login: one answer for every bad credential.
        bad1 = self.post(c, "/v1/auth/login", {"email": "alice@example.com", "password": "wrong-pass"})
        bad2 = self.post(c, "/v1/auth/login", {"email": "nobody@example.com", "password": "wrong-pass"})
        m1 = self.assertEnvelopeError(bad1, 401)["error"]["message"]
        m2 = self.assertEnvelopeError(bad2, 401)["error"]["message"]
        self.assertEqual(m1, m2)
        s = self.login(c, "ALICE@example.com", "password-123")
        self.assertTrue(s["user"]["online"])
        me = self.assertOk(self.call(c, "GET", "/v1/users/me", s["token"]))
        self.assertEqual(me["email"], "alice@example.com")

        # No token, a tampered token, a token with alg none.
        self.assertEnvelopeError(c.get("/v1/users/me"), 401)
        tampered = s["token"][:-4] + ("AAAA" if not s["token"].endswith("AAAA") else "BBBB")
        self.assertEnvelopeError(self.call(c, "GET", "/v1/users/me", tampered), 401)
        none_head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
        forged = none_head + "." + s["token"].split(".")[1] + "."
        self.assertEnvelopeError(self.call(c, "GET", "/v1/users/me", forged), 401)

        # Verify endpoint.
        ok = self.assertOk(self.post(c, "/v1/auth/verify", {"token": s["token"]}))
        self.assertEqual(ok["user"]["email"], "alice@example.com")
        self.assertEnvelopeError(self.post(c, "/v1/auth/verify", {"token": tampered}), 401)

        # Refresh rotates: the old refresh token is spent.
        r1 = self.assertOk(self.post(c, "/v1/auth/refresh", {"refreshToken": s["refreshToken"]}))
        self.assertNotEqual(r1["refreshToken"], s["refreshToken"])
        self.assertEnvelopeError(self.post(c, "/v1/auth/refresh",
                                           {"refreshToken": s["refreshToken"]}), 401)
        # Logout revokes the refresh tokens and sets the user offline.
        r = self.call(c, "POST", "/v1/auth/logout", r1["token"])
        self.assertEqual(r.status, 204, r)
        self.assertEnvelopeError(self.post(c, "/v1/auth/refresh",
                                           {"refreshToken": r1["refreshToken"]}), 401)
        self.assertFalse(self.assertOk(self.call(c, "GET", "/v1/users/" + me["id"]))["online"])
        # Its events (registered, logged_in, logged_out) reached the broker.
        import time
        deadline = time.monotonic() + harness.scaled(15)
        while True:
            m = harness.parse_metrics(c.get("/metrics").body.decode())
            confirmed = sum(harness.metric_values(m, "agora_bus_confirmed_total"))
            depth = sum(harness.metric_values(m, "agora_bus_outbox_depth"))
            if (confirmed >= 3 and depth == 0) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertGreaterEqual(confirmed, 3)
        self.assertEqual(depth, 0)

    def test_profiles_permissions_password_and_delete(self):
        srv = self.start()
        c = self.connect(srv)
        a = self.register(c, "bob")
        b = self.register(c, "carol")
        admin = self.login(c, "root@example.com", "admin-password-1")
        self.assertEqual(admin["user"]["role"], "admin")
        aid, bid = a["user"]["id"], b["user"]["id"]
        # Public profile: no e-mail for others.
        pub = self.assertOk(self.call(c, "GET", "/v1/users/" + aid, b["token"]))
        self.assertNotIn("email", pub)
        self.assertEnvelopeError(self.call(c, "GET", "/v1/users/nope"), 404)
        # Self updates whitelisted fields; other fields are refused.
        up = self.assertOk(self.call(c, "PUT", "/v1/users/" + aid, a["token"], {"bio": "hi"}))
        self.assertEqual(up["bio"], "hi")
        r = self.call(c, "PUT", "/v1/users/" + aid, a["token"], {"role": "admin"})
        self.assertEnvelopeError(r, 422)
        self.assertEqual(self.assertOk(self.call(c, "GET", "/v1/users/me", a["token"]))["role"],
                         "customer")
        # Someone else may not; an admin may.
        self.assertEnvelopeError(self.call(c, "PUT", "/v1/users/" + aid, b["token"], {"bio": "x"}), 403)
        up = self.assertOk(self.call(c, "PUT", "/v1/users/" + aid, admin["token"], {"bio": "by admin"}))
        self.assertEqual(up["bio"], "by admin")
        # Password change needs the old one.
        self.assertEnvelopeError(self.call(c, "PUT", "/v1/users/me/password", a["token"],
                                           {"oldPassword": "wrong-one", "newPassword": "new-password-1"}), 401)
        r = self.call(c, "PUT", "/v1/users/me/password", a["token"],
                      {"oldPassword": "password-123", "newPassword": "new-password-1"})
        self.assertEqual(r.status, 204, r)
        self.assertEnvelopeError(self.post(c, "/v1/auth/login",
                                           {"email": "bob@example.com", "password": "password-123"}), 401)
        self.login(c, "bob@example.com", "new-password-1")
        # Listing, paginated.
        page = self.call(c, "GET", "/v1/users?page=1&limit=2", admin["token"]).json()
        self.assertEqual(page["pagination"], {"page": 1, "limit": 2, "total": 3, "pages": 2})
        self.assertEqual(len(page["data"]), 2)
        self.assertEnvelopeError(self.call(c, "GET", "/v1/users?limit=1000", admin["token"]), 422)
        # Delete: not others; self yes.
        self.assertEnvelopeError(self.call(c, "DELETE", "/v1/users/" + aid, b["token"]), 403)
        self.assertEqual(self.call(c, "DELETE", "/v1/users/" + bid, b["token"]).status, 204)
        self.assertEnvelopeError(self.call(c, "GET", "/v1/users/" + bid), 404)

    def test_client_credentials_rotation_and_restart(self):
        srv = self.start()
        c = self.connect(srv)
        t = self.assertOk(self.post(c, "/v1/auth/token",
                                    {"clientId": "orders", "clientSecret": "orders-secret"}))
        self.assertEqual(b64json(t["token"].split(".")[1])["role"], "service")
        self.assertEnvelopeError(self.post(c, "/v1/auth/token",
                                           {"clientId": "orders", "clientSecret": "nope"}), 401)
        u = self.register(c, "dave")
        admin = self.login(c, "root@example.com", "admin-password-1")
        self.assertEnvelopeError(self.call(c, "POST", "/v1/admin/keys/rotate", u["token"]), 403)
        rot = self.assertOk(self.call(c, "POST", "/v1/admin/keys/rotate", admin["token"]), 201)
        jwks = c.get("/.well-known/jwks.json").json()
        self.assertEqual(len(jwks["keys"]), 2)
        # The old token still verifies; new ones carry the new kid.
        self.assertOk(self.call(c, "GET", "/v1/users/me", u["token"]))
        fresh = self.login(c, "dave@example.com", "password-123")
        self.assertEqual(b64json(fresh["token"].split(".")[0])["kid"], rot["kid"])
        c.close()
        srv.stop()
        # After a restart the keys and users are still there.
        srv2 = self.start()
        c2 = self.connect(srv2)
        self.assertOk(self.call(c2, "GET", "/v1/users/me", u["token"]))
        self.assertOk(self.call(c2, "GET", "/v1/users/me", fresh["token"]))

    def test_openapi_lists_every_route(self):
        srv = self.start()
        c = self.connect(srv)
        doc = c.get("/openapi.json").json()
        self.assertEqual(doc["openapi"], "3.0.3")
        paths = doc["paths"]
        for path, method in [("/v1/auth/register", "post"), ("/v1/auth/login", "post"),
                             ("/v1/users/{id}", "get"), ("/v1/users/{id}", "put"),
                             ("/v1/users/{id}", "delete"), ("/v1/users/me/password", "put"),
                             ("/.well-known/jwks.json", "get"), ("/health", "get")]:
            self.assertIn(method, paths.get(path, {}), "%s %s missing" % (method, path))
        params = paths["/v1/users/{id}"]["get"]["parameters"]
        self.assertEqual([p["name"] for p in params], ["id"])

    def test_production_refuses_without_keys(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGORA_")}
        env.update(self.env)
        env.update({"AGORA_ENV": "production", "PORT": "0"})
        p = subprocess.run([service.binary("users")], env=env, capture_output=True, text=True,
                           timeout=harness.scaled(20))
        self.assertNotEqual(p.returncode, 0, p.stderr)
        self.assertIn("no signing key", p.stderr)


if __name__ == "__main__":
    harness.main()
