"""Helpers for the tests of one service over HTTP (cart, catalog,
inventory, payments, notifications): the service under test, talked to
directly, with a real agora-users beside it for tokens (verified through its
JWKS), on the broker and store the test run names. stack.py is the other
shape: the whole system behind the gateway.

  SigningKey        an Ed25519 key the test makes and gives agora-users
                    (AGORA_JWT_KEYS), so that the test can mint tokens users
                    would sign (a service's token) and forge ones it would not
  claims            the claims agora-users puts in a token
  require, binary   the binaries ctest names in AGORA_<NAME>D
  start, start_users  a started harness.Server (agora-users with the admin
                    account, and the test key when given)
  db_url            SQLite in the test's directory, or a database of its own
                    on PostgreSQL with AGORA_TEST_<NAME>_STORE=postgres
  send, raw         one HTTP request on a kept connection, or to a
                    harness.Server on a connection of its own
  login, register   a session of agora-users: {"token", "id", "email"}
  cloud_event, uid  an event as a service publishes it; a fresh id
  ServiceTestCase   the base class: owns the temporary directory, the broker
                    clients and the servers, and stops them all at the end,
                    reporting every problem (a crash, a sanitizer's report)
"""

import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "http"))
import harness  # noqa: E402
from amqp_client import bus_client  # noqa: E402

ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "admin-password-1"
PASSWORD = "password-123"  # of every user register() makes


# ---- Tokens -------------------------------------------------------------------------


def b64(data):
    """base64url without padding, as in a JWT and a JWK."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SigningKey:
    """An Ed25519 key of the test's own, under key id `kid`. Needs
    python3-cryptography (scripts/install-deps): without it the test fails
    rather than skip."""

    def __init__(self, kid):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives import serialization as ser
        self.kid = kid
        self.private = Ed25519PrivateKey.generate()
        self.seed = self.private.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw,
                                               ser.NoEncryption())
        self.public_raw = self.private.public_key().public_bytes(ser.Encoding.Raw,
                                                                 ser.PublicFormat.Raw)

    def write_keys(self, path):
        """Writes the private JWKS agora-users reads from AGORA_JWT_KEYS;
        returns `path`."""
        with open(path, "w") as f:
            json.dump({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "alg": "EdDSA",
                                 "use": "sig", "x": b64(self.public_raw), "d": b64(self.seed)}]}, f)
        return path

    def jwt(self, claims, alg="EdDSA", key=None, kid=None):
        """A compact JWS of `claims`: signed with this key (EdDSA), with HMAC
        over `key` (HS256, a forgery), or unsigned (any other alg); the
        header names `kid` (this key's by default)."""
        head = b64(json.dumps({"alg": alg, "typ": "JWT", "kid": kid or self.kid},
                              separators=(",", ":")).encode())
        body = b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = (head + "." + body).encode()
        if alg == "EdDSA":
            sig = self.private.sign(signing_input)
        elif alg == "HS256":
            sig = hmac.new(key, signing_input, hashlib.sha256).digest()
        else:
            sig = b""
        return head + "." + body + "." + b64(sig)


def claims(sub, email=None, role="customer", ttl=3600, **over):
    """What agora-users signs for `sub` (email by default sub@example.com),
    valid from now for `ttl` s; `over` replaces or adds claims."""
    now = int(time.time())
    c = {"sub": sub, "email": email or sub + "@example.com", "role": role,
         "iss": "agora-users", "aud": "agora", "iat": now, "exp": now + ttl}
    c.update(over)
    return c


# ---- Processes ----------------------------------------------------------------------


def binary(name):
    """The path ctest gives in AGORA_<NAME>D, or None."""
    return os.environ.get("AGORA_%sD" % name.upper())


def require(*names):
    """Raises unless the test run names a binary for each of `names` (as
    ctest does): a failure, not a skip, since the build made them."""
    missing = ["AGORA_%sD" % n.upper() for n in names if not binary(n)]
    if missing:
        raise RuntimeError("set %s (run through ctest)" % " and ".join(missing))


def start(name, env, timeout=20):
    """agora-<name> started with `env`, once it listens."""
    return harness.Server(env, name=name, binary=binary(name)).start(
        timeout=harness.scaled(timeout))


def start_users(tmp, bus, key=None, **env):
    """agora-users on SQLite in `tmp`, on broker `bus`, with the admin
    account ADMIN_EMAIL; signing with `key` (a SigningKey) when given, its
    keys file written to tmp/keys.json. `env` adds variables."""
    env = dict({"AGORA_DB": "sqlite:%s/users.db" % tmp, "AGORA_BUS": bus,
                "AGORA_ADMIN_EMAIL": ADMIN_EMAIL, "AGORA_ADMIN_PASSWORD": ADMIN_PASSWORD},
               **env)
    if key is not None:
        env["AGORA_JWT_KEYS"] = key.write_keys(os.path.join(tmp, "keys.json"))
    return start("users", env)


def jwks_url(users):
    """Where the services find the keys of `users` (AGORA_JWKS_URL)."""
    return "http://127.0.0.1:%d/.well-known/jwks.json" % users.port


def db_url(tmp, name):
    """The AGORA_DB of service `name`: sqlite:tmp/<name>.db, or with
    AGORA_TEST_<NAME>_STORE=postgres a new database on the server of
    AGORA_TEST_POSTGRES_URL (the service creates it)."""
    if os.environ.get("AGORA_TEST_%s_STORE" % name.upper()) != "postgres":
        return "sqlite:%s/%s.db" % (tmp, name)
    u = urllib.parse.urlparse(os.environ["AGORA_TEST_POSTGRES_URL"])
    return urllib.parse.urlunparse(
        u._replace(path="/agora_%s_test_%s" % (name, uuid.uuid4().hex[:8])))


_HANDED_OUT = set()


def free_port():
    """A loopback port free right now, for a server that must keep its port
    across restarts; never one this process handed out before. (The kernel
    may give a port just released to the next bind to port 0, and Agora's
    servers bind with SO_REUSEPORT, so two servers told the same port would
    both listen and share its connections.)"""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


# ---- Calls --------------------------------------------------------------------------


def send(c, method, path, token=None, body=None, headers=None):
    """One request on harness connection `c` (kept open for the next): a
    bearer `token` if given; `body` as JSON unless str or bytes, with
    Content-Type application/json unless `headers` has one. A
    harness.Response."""
    h = list(headers or [])
    if token:
        h.append(("Authorization", "Bearer " + token))
    if body is not None and not isinstance(body, (str, bytes)):
        body = json.dumps(body)
    if body is not None and not any(k.lower() == "content-type" for k, _ in h):
        h.append(("Content-Type", "application/json"))
    return c.request(method, path, h, body)


def raw(srv, method, path, token=None, body=None, headers=None, timeout=20):
    """send() on a connection of its own to harness.Server `srv`."""
    with srv.connect(timeout=timeout) as c:
        return send(c, method, path, token, body, headers)


def _session(reply, status, email):
    assert reply.status == status, reply.body
    d = reply.json()["data"]
    return {"token": d["token"], "id": d["user"]["id"], "email": email}


def login(users, email, password):
    """A session of `email` at agora-users `users`."""
    return _session(raw(users, "POST", "/v1/auth/login",
                        body={"email": email, "password": password}), 200, email)


def register(users, name):
    """A new customer, named `name` and a random suffix, and its session."""
    name = "%s%s" % (name, uuid.uuid4().hex[:6])
    email = name + "@example.com"
    return _session(raw(users, "POST", "/v1/auth/register",
                        body={"username": name, "email": email, "password": PASSWORD}),
                    201, email)


# ---- Events -------------------------------------------------------------------------


def cloud_event(type_, subject, data, source="agora/orders", id_=None):
    """A CloudEvent as agora-<source> publishes it."""
    return {"specversion": "1.0", "id": id_ or str(uuid.uuid4()), "source": source,
            "type": type_, "time": "2026-11-21T00:00:00.000Z", "subject": subject,
            "datacontenttype": "application/json", "data": data}


def uid(prefix):
    """A fresh id: prefix-<12 hex digits>."""
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


# ---- The base class -----------------------------------------------------------------


class ServiceTestCase(harness.ServerTestCase):
    """A test class's setUpClass makes its directory (make_tmp), opens its
    broker clients (open_bus) and starts its servers into class attributes;
    `servers` names those attributes, in the order to stop them (a test that
    restarts a server assigns the new one to the same attribute), and
    `under_test` the one call() talks to. tearDownClass closes the broker
    clients, stops every server that is set (SIGTERM, exit 0, no sanitizer
    report) and removes the directory, then fails with every problem."""

    servers = ()
    under_test = None
    stop_timeout = 10
    signing_key = None  # a SigningKey, for mint() and forge()
    tmp = None

    @classmethod
    def make_tmp(cls, tag):
        cls.tmp = tempfile.mkdtemp(prefix="agora-%s-" % tag)
        return cls.tmp

    @classmethod
    def open_bus(cls, url, subject=None):
        """A client of the broker at `url`, subscribed to `subject` (sid 1)
        if given; closed by tearDownClass."""
        bus = bus_client(url)
        if "_buses" not in cls.__dict__:
            cls._buses = []
        cls._buses.append(bus)
        if subject:
            bus.sub(subject, 1)
        return bus

    @classmethod
    def tearDownClass(cls):
        for bus in cls.__dict__.get("_buses", []):
            bus.close()
        problems = []
        for attr in cls.servers:
            srv = getattr(cls, attr, None)
            if srv is None:
                continue
            try:
                srv.stop(timeout=cls.stop_timeout)
            except harness.ServerError as e:
                problems.append(str(e))
        if cls.tmp:
            shutil.rmtree(cls.tmp, ignore_errors=True)
        if problems:
            raise AssertionError("\n".join(problems))

    # -- calls ---------------------------------------------------------------------------

    @classmethod
    def raw(cls, srv, method, path, token=None, body=None, headers=None, timeout=20):
        return raw(srv, method, path, token, body, headers, timeout)

    def call(self, method, path, token=None, body=None, headers=None):
        """A request to the service under test."""
        return raw(getattr(self, self.under_test), method, path, token, body, headers)

    @classmethod
    def login(cls, email, password):
        return login(cls.users, email, password)

    @classmethod
    def register(cls, name):
        return register(cls.users, name)

    @classmethod
    def mint(cls, sub, role="customer", email=None, **over):
        """A token for `sub` signed with the test's key, as agora-users
        would sign it."""
        return cls.signing_key.jwt(claims(sub, email, role, **over))

    def wait_until(self, fn, timeout=10.0, what="condition"):
        """fn()'s first true value, polling for `timeout` s (scaled), or a
        failure."""
        deadline = time.monotonic() + harness.scaled(timeout)
        while True:
            v = fn()
            if v:
                return v
            if time.monotonic() > deadline:
                self.fail("timed out waiting for " + what)
            time.sleep(0.1)
