"""The docs against the code: every component describes itself
(AGORA_DESCRIBE=1, agora/service.h: its routes as the router holds them,
its OpenAPI document's operations, the event types it may publish and the
patterns it consumes), and

  - its /openapi.json describes exactly the routes it serves;
  - docs/api.md names every route in the component's section (built-in
    endpoints in "Built-in endpoints"), and no route there that it lacks;
  - docs/api.md's operation tables are what tests/docs/apigen.py makes of
    the OpenAPI documents (`make docs`);
  - docs/events.md names the component as the one producer of each type it
    publishes, every documented type has that producer, and each type's
    consumers cell names exactly the components that subscribe to it;
  - every route of config/gateway.json forwards to paths its service serves;
  - every name of the code a doc gives in backticks (ag_*, AG_*, AGORA_*
    identifiers, repository paths) is still in the code: a renamed
    function or variable, a moved file, fails here, not in a reader's hands;
  - every keyword of a request schema (services/*/openapi.json) is one the
    framework's body check enforces (agora/json.h: ag_schema_check).

The binaries come from ctest (AGORA_<NAME>D); each describes itself on a
scratch SQLite database in a temporary directory.
"""

import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration", "lib"))
sys.path.insert(0, HERE)
import stack  # noqa: E402

COMPONENTS = ["gateway", "registry", "hello", "users", "catalog", "inventory", "payments", "cart", "analytics",
              "orders", "notifications", "rooms", "messages", "files", "traces"]
# The gateway's proxy: every path it has no route of its own for (docs/api.md
# says what it forwards where, and `GET /` and other paths: static files).
CATCH_ALL = {"/", "/:path"}
BUILTIN = {("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics"),
           ("GET", "/openapi.json"), ("GET", "/admin/dead-letters")}


def describe(name, tmp):
    binary = os.environ.get("AGORA_%sD" % name.upper())
    if not binary:
        raise RuntimeError("set AGORA_%sD (run through ctest)" % name.upper())
    d = os.path.join(tmp, name)
    os.makedirs(d)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGORA_", "OTEL_"))}
    env.update({"AGORA_DESCRIBE": "1", "AGORA_DB": "sqlite:" + os.path.join(d, "db"),
                "AGORA_LOG": "error", "AGORA_MAIL_DIR": os.path.join(d, "mail"),
                "AGORA_FILES_DIR": os.path.join(d, "files"), "OTEL_TRACES_EXPORTER": "none",
                "AGORA_SCHEMA_DIR": os.path.join(ROOT, schema_dir(name))})
    if name in ("hello", "traces", "gateway"):
        env.pop("AGORA_SCHEMA_DIR")
    if name == "gateway":
        env["AGORA_GATEWAY_CONFIG"] = os.path.join(ROOT, "config", "gateway.json")
    p = subprocess.run([binary], env=env, cwd=d, capture_output=True, timeout=30)
    if p.returncode != 0:
        raise AssertionError("agora-%s with AGORA_DESCRIBE=1 exited %d:\n%s"
                             % (name, p.returncode, p.stderr.decode(errors="replace")))
    return json.loads(p.stdout)


def schema_dir(name):
    return "registry/schema" if name == "registry" else "services/%s/schema" % name


def norm(path):
    """/v1/rooms/{id} and /v1/rooms/:id alike."""
    return re.sub(r"\{([A-Za-z_*]+)\}", r":\1", path)


def api_sections():
    """{"agora-users": set of (METHOD, path)} and the built-in section's
    ("builtin"), from each ## section of docs/api.md: every `METHOD /path`
    in backticks (a line break inside the backticks counts as a space)."""
    out = {}
    with open(os.path.join(ROOT, "docs", "api.md")) as f:
        text = f.read()
    for sec in re.split(r"\n(?=## )", text):
        head = sec.split("\n", 1)[0]
        m = re.match(r"## (agora-[a-z]+)", head)
        name = m.group(1) if m else ("builtin" if "Built-in" in head else head)
        flat = re.sub(r"\s*\n\s*", " ", sec)
        found = out.setdefault(name, set())
        for code in re.findall(r"`([^`]+)`", flat):
            for meth, path in re.findall(r"\b(GET|PUT|POST|DELETE|PATCH) (/[^\s?\[]*)", code):
                found.add((meth, norm(path.rstrip("/") or "/")))
    return out


def event_rows():
    """[(types, producer, consumers cell)] of docs/events.md's type tables;
    a consumers cell "the same ..." is the row above's."""
    rows, last = [], ""
    with open(os.path.join(ROOT, "docs", "events.md")) as f:
        for line in f:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)]
            if not line.startswith("| `") or len(cells) < 6:
                continue
            types = re.findall(r"`([a-z_]+\.[a-z_]+)`", cells[1])
            m = re.match(r"agora-([a-z]+)", cells[2])
            consumers = cells[5]
            if consumers.startswith("the same"):
                consumers = last
            last = consumers
            rows.append((types, m.group(1) if m else None, consumers))
    return rows


def consumers_named(cell):
    """The agora-<name>s a consumers cell names as consumers (not the ones
    mentioned inside a parenthesis, which explain)."""
    flat = re.sub(r"\([^()]*\)", "", cell)
    return set(re.findall(r"agora-([a-z]+)", flat))


class Docs(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="agora-docs-")
        cls.desc = {n: describe(n, cls.tmp.name) for n in COMPONENTS}

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_openapi_describes_exactly_the_routes(self):
        for name, d in self.desc.items():
            routes = {(r["method"], norm(r["path"])) for r in d["routes"]}
            doc = {(r["method"], norm(r["path"])) for r in d["openapi"]}
            with self.subTest(component=name):
                self.assertEqual(sorted(routes - doc), [], "served, not in /openapi.json")
                self.assertEqual(sorted(doc - routes), [], "in /openapi.json, not served")

    def test_api_md_names_every_route(self):
        sections = api_sections()
        for name, d in self.desc.items():
            served = {(r["method"], norm(r["path"])) for r in d["routes"]}
            routes = {r for r in served if name != "gateway" or r[1] not in CATCH_ALL}
            own = sections.get("agora-" + name)
            with self.subTest(component=name):
                self.assertIsNotNone(own, "docs/api.md has no section ## agora-%s" % name)
                missing = sorted(r for r in routes - own if r not in BUILTIN)
                self.assertEqual(missing, [], "routes of agora-%s not in docs/api.md" % name)
                gone = sorted(own - served)
                self.assertEqual(gone, [], "docs/api.md's agora-%s names routes it lacks" % name)
        builtins = sections["builtin"]
        self.assertEqual(sorted(BUILTIN - builtins), [])

    def test_api_md_tables_are_generated(self):
        """docs/api.md's operation tables are what tests/docs/apigen.py makes
        of the OpenAPI documents now (`make docs` rewrites them)."""
        import apigen
        with open(apigen.API_MD) as f:
            text = f.read()
        self.assertEqual(apigen.generate(text), text,
                         "docs/api.md's operation tables are stale: run `make docs`")

    def test_events_md_producers(self):
        documented = stack.documented_producers()
        published = {}
        for name, d in self.desc.items():
            for t in d["publishes"]:
                published.setdefault(t, []).append(name)
        for t, names in sorted(published.items()):
            with self.subTest(type=t):
                self.assertEqual(len(names), 1, "%s declared by %s: one producer a type"
                                 % (t, names))
                self.assertEqual(documented.get(t), names[0],
                                 "docs/events.md's producer of %s" % t)
        for t, p in sorted(documented.items()):
            with self.subTest(type=t):
                self.assertIn(t, published, "docs/events.md has %s (from agora-%s); nothing "
                              "declares it" % (t, p))

    def test_events_md_consumers(self):
        def matches(pattern, t):
            return pattern == t or (pattern.endswith(".*") and t.startswith(pattern[:-1])
                                    and "." not in t[len(pattern) - 1:])
        documented = [t for types, _, _ in event_rows() for t in types]
        for name, d in self.desc.items():
            for pat in d["consumes"]:
                with self.subTest(component=name, pattern=pat):
                    self.assertTrue(any(matches(pat, t) for t in documented),
                                    "agora-%s consumes %s: no documented type" % (name, pat))
        for types, _, cell in event_rows():
            named = consumers_named(cell)
            for t in types:
                real = {n for n, d in self.desc.items()
                        if any(matches(p, t) for p in d["consumes"])}
                with self.subTest(type=t):
                    self.assertEqual(sorted(named), sorted(real),
                                     "docs/events.md's consumers of %s" % t)

    def test_gateway_routes_lead_to_routes(self):
        """Each route of config/gateway.json forwards to paths its service
        serves (the rewritten prefix starts at least one of its routes)."""
        with open(os.path.join(ROOT, "config", "gateway.json")) as f:
            cfg = json.load(f)
        for r in cfg["routes"]:
            target = r.get("rewrite") or r["prefix"]
            served = [norm(x["path"]) for x in self.desc[r["service"]]["routes"]]
            with self.subTest(prefix=r["prefix"]):
                self.assertTrue(any(p == target or p.startswith(target.rstrip("/") + "/")
                                    for p in served),
                                "gateway route %s -> agora-%s %s: it serves nothing there"
                                % (r["prefix"], r["service"], target))
    def test_docs_name_only_what_exists(self):
        docs = (glob.glob(os.path.join(ROOT, "docs", "*.md"))
                + glob.glob(os.path.join(ROOT, "docs", "internals", "*.md"))
                + glob.glob(os.path.join(ROOT, "services", "*", "README.md"))
                + glob.glob(os.path.join(ROOT, "bench", "*", "README.md"))
                + [os.path.join(ROOT, "README.md")])
        tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.split()
        code = []
        for f in tracked:
            full = os.path.join(ROOT, f)
            if f.endswith(".md") or not os.path.isfile(full):
                continue
            with open(full, errors="replace") as fh:
                code.append(fh.read())
        code = "\n".join(code)
        roots = ("src/", "include/", "services/", "gateway/", "registry/", "cli/", "tests/",
                 "scripts/", "web/", "bench/", "docs/", "config/", "deploy/", "cmake/")
        for doc in sorted(docs):
            with open(doc) as f:
                quoted = re.findall(r"`([^`\n]+)`", f.read())
            rel = os.path.relpath(doc, ROOT)
            for q in quoted:
                for ident in re.findall(r"\b(?:ag|AG|AGORA)_[A-Za-z0-9_]+\b(?!\*)", q):
                    with self.subTest(doc=rel, name=ident):
                        self.assertTrue(ident in code, "%s names %s: not in the code" % (rel, ident))
                q = q.strip()
                if q.startswith(roots) and re.fullmatch(r"[\w./-]+", q):
                    with self.subTest(doc=rel, path=q):
                        self.assertTrue(os.path.exists(os.path.join(ROOT, q.rstrip("/"))),
                                        "%s names %s: no such file" % (rel, q))

    def test_request_schemas_use_what_is_enforced(self):
        """Every keyword in a request schema is one ag_schema_check reads (or
        a note for readers): a keyword it would ignore would be a rule the
        document states and nothing enforces."""
        read = {"type", "nullable", "enum", "minLength", "maxLength", "pattern", "format",
                "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "properties",
                "required", "additionalProperties", "minItems", "maxItems", "items", "oneOf",
                "anyOf", "allOf", "not", "minProperties", "maxProperties", "$ref"}
        notes = {"description", "example", "examples", "title", "default", "deprecated"}
        formats = {"email", "date-time", "uri", "uuid", "int64", "byte"}

        def walk(doc, s, where, seen):
            s_ref = s.get("$ref") if isinstance(s, dict) else None
            if s_ref:
                if s_ref in seen:
                    return
                seen = seen | {s_ref}
                target = doc
                for part in s_ref[2:].split("/"):
                    target = target.get(part, {})
                self.assertTrue(target, "%s: %s leads nowhere" % (where, s_ref))
                walk(doc, target, where + " -> " + s_ref, seen)
            if not isinstance(s, dict):
                return
            for k in s:
                self.assertIn(k, read | notes, "%s: keyword %s is not enforced" % (where, k))
            if s.get("format"):
                self.assertIn(s["format"], formats, where)
            for p, sub in s.get("properties", {}).items():
                walk(doc, sub, where + "." + p, seen)
            for key in ("items", "additionalProperties", "not"):
                if isinstance(s.get(key), dict):
                    walk(doc, s[key], where + "[" + key + "]", seen)
            for key in ("oneOf", "anyOf", "allOf"):
                for i, sub in enumerate(s.get(key, [])):
                    walk(doc, sub, "%s.%s[%d]" % (where, key, i), seen)

        for name in COMPONENTS:
            path = os.path.join(ROOT, "services", name, "openapi.json")
            if not os.path.exists(path):
                continue
            with open(path) as f:
                doc = json.load(f)
            for route, item in doc["paths"].items():
                for method, op in item.items():
                    schema = (op.get("requestBody", {}).get("content", {})
                              .get("application/json", {}).get("schema")
                              if isinstance(op, dict) else None)
                    if schema:
                        with self.subTest(component=name, route=route, method=method):
                            walk(doc, schema, "%s %s %s" % (name, method.upper(), route),
                                 frozenset())


if __name__ == "__main__":
    unittest.main(verbosity=2)
