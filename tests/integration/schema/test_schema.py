"""Every request schema a service's /openapi.json states is what the running
service enforces: for every route of every service whose operation has an
application/json request schema, bodies that break one rule of it (a
required field left out, a field of the wrong type, a string too long or
too short, a number out of range, a value outside its enum, an unknown field
where additionalProperties is false; in nested objects and array items too)
are answered 422 VALIDATION_FAILED naming that field: the framework checks
each body against the document before the handler runs (made-up ids in the
path are never looked up).

The services run behind the gateway as tests/integration/lib/stack.py
starts them; each body goes straight to the service's port with an admin's
token, as the rules hold for any caller the route lets in.
"""

import copy
import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import stack as st  # noqa: E402

SERVICES = ["users", "catalog", "inventory", "payments", "cart", "orders", "notifications",
            "rooms", "messages", "files", "traces"]


def deref(doc, s):
    for _ in range(16):
        if not isinstance(s, dict) or "$ref" not in s:
            return s
        at = doc
        for part in s["$ref"][2:].split("/"):
            at = at.get(part, {})
        s = at
    return s


def sample(doc, s, depth=0):
    """A value the schema accepts, as far as a generator can tell."""
    s = deref(doc, s) or {}
    for key in ("oneOf", "anyOf"):
        if s.get(key):
            return sample(doc, s[key][0], depth)
    if "enum" in s:
        return s["enum"][0]
    t = s.get("type")
    if t == "object" or "properties" in s:
        out = {}
        for name in s.get("required", []):
            out[name] = sample(doc, s.get("properties", {}).get(name, {}), depth + 1)
        return out
    if t == "array":
        n = max(s.get("minItems", 0), 1 if "items" in s else 0)
        return [sample(doc, s.get("items", {}), depth + 1) for _ in range(n)]
    if t == "integer":
        lo = s.get("minimum", 1)
        return lo if lo >= 1 or s.get("maximum", 1) < 1 else 1
    if t == "number":
        return max(s.get("minimum", 1), 1)
    if t == "boolean":
        return True
    if s.get("format") == "email":
        return "schema-test@example.com"
    return "a" * max(s.get("minLength", 1), 1)


WRONG = {"string": 12345, "integer": "not-a-number", "number": "not-a-number",
         "boolean": "not-a-boolean", "object": "not-an-object", "array": "not-an-array"}


def violations(doc, s, base, path=""):
    """(body, field) pairs: `base` with one rule of `s` broken at `path`."""
    s = deref(doc, s) or {}
    if s.get("oneOf") or s.get("anyOf"):
        return []
    out = []

    def at(value):
        """`base` with the value at `path` replaced."""
        if not path:
            return value
        body = copy.deepcopy(base)
        cur, parts = body, split(path)
        for p in parts[:-1]:
            cur = cur[p]
        cur[parts[-1]] = value
        return body

    t = s.get("type")
    if t in WRONG:
        # A body must be an object or an array to be JSON here at all (a
        # bare string is 400 MALFORMED_JSON): the other one of the two.
        wrong = WRONG[t] if path else ([] if t == "object" else {})
        out.append((at(wrong), path or "the body"))
    if "enum" in s and all(isinstance(e, str) for e in s["enum"]):
        out.append((at("not-one-of-them"), path or "the body"))
    if t == "string":
        if s.get("maxLength") is not None and s["maxLength"] < 100000:
            out.append((at("a" * (s["maxLength"] + 1)), path))
        if s.get("minLength", 0) > 1:
            out.append((at("a" * (s["minLength"] - 1)), path))
    if t in ("integer", "number"):
        if "minimum" in s:
            out.append((at(s["minimum"] - 1), path))
        if "maximum" in s:
            out.append((at(s["maximum"] + 1), path))
    value = get(base, path)
    if (t == "object" or "properties" in s) and isinstance(value, dict):
        props = s.get("properties", {})
        for name in s.get("required", []):
            body = copy.deepcopy(base)
            del get(body, path)[name]
            out.append((body, join(path, name)))
        if s.get("additionalProperties") is False:
            out.append((at(dict(value, zzNotAField=1)), join(path, "zzNotAField")))
        for name, ps in props.items():
            if len(split(path)) >= 3:
                break
            full = copy.deepcopy(base)
            inner = get(full, path)
            if name not in inner:
                inner[name] = sample(doc, ps)
            out += violations(doc, ps, full, join(path, name))
    if t == "array" and isinstance(value, list) and value and "items" in s:
        out += violations(doc, s["items"], base, path + "[0]")
    return out


def split(path):
    """"a.b[0].c" -> ["a", "b", 0, "c"]."""
    parts = []
    for seg in path.split(".") if path else []:
        while "[" in seg:
            head, rest = seg.split("[", 1)
            if head:
                parts.append(head)
            idx, seg = rest.split("]", 1)
            parts.append(int(idx))
        if seg:
            parts.append(seg)
    return parts


def join(path, name):
    return "%s.%s" % (path, name) if path else name


def get(body, path):
    cur = body
    for p in split(path):
        cur = cur[p]
    return cur


def concrete(path):
    """A path template with made-up ids: the check runs before the handler
    looks anything up."""
    out = []
    for seg in path.split("/"):
        out.append("00000000-0000-7000-8000-000000000000" if seg.startswith("{") else seg)
    return "/".join(out)


class Schemas(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        st.require(*SERVICES, "gateway")
        cls.s = st.Stack("schema", services=SERVICES).start()
        cls.admin = cls.s.login(st.ADMIN_EMAIL, st.ADMIN_PASSWORD)

    @classmethod
    def tearDownClass(cls):
        st.stop_or_raise(cls.s)

    def test_every_request_schema_is_enforced(self):
        routes = 0
        cases = 0
        for name in SERVICES:
            port = self.s.ports[name]
            doc = self.s.call("GET", "/openapi.json", port=port).json()
            for path, item in doc["paths"].items():
                for method, op in item.items():
                    schema = (op.get("requestBody", {}).get("content", {})
                              .get("application/json", {}).get("schema")) if isinstance(op, dict) else None
                    if not schema:
                        continue
                    routes += 1
                    # An operation whose protocol answers bad bodies itself
                    # (OTLP: 400) says so; the problem is named in the message.
                    invalid = op.get("x-agora-invalid", {"status": 422, "code": "VALIDATION_FAILED"})
                    base = sample(doc, schema)
                    for body, field in violations(doc, schema, base):
                        cases += 1
                        with self.subTest(service=name, route="%s %s" % (method.upper(), path),
                                          field=field, body=body):
                            r = self.s.call(method.upper(), concrete(path), self.admin["token"],
                                            json.dumps(body), {"Idempotency-Key": "schema-test"},
                                            port=port)
                            self.assertEqual(r.status, invalid["status"], r)
                            e = r.json()["error"]
                            self.assertEqual(e["code"], invalid["code"], e)
                            if invalid["status"] == 422:
                                self.assertIn(field, [d["field"] for d in e["details"]], e)
                            else:
                                self.assertIn(field, e["message"], e)
        print("request schemas checked: %d routes, %d bodies" % (routes, cases), flush=True)
        # Every service with JSON bodies describes them: at least this many.
        self.assertGreaterEqual(routes, 25)


if __name__ == "__main__":
    unittest.main(verbosity=2)
