"""docs/api.md's operation tables, produced from the services' OpenAPI
documents (services/<name>/openapi.json: the same files the binaries embed,
serve at /openapi.json and check request bodies against).

Each `## agora-<name>` section of docs/api.md whose service has a document
ends with a block between

    <!-- operations: generated from services/<name>/openapi.json by `make docs` -->
    ...
    <!-- end of generated operations -->

holding one row an operation: method and path, its summary, who may call it
(the operation's `security`, else the document's), the request body's fields
(`?` for optional ones) and every documented answer with its description.

    python3 tests/docs/apigen.py           rewrites the blocks in docs/api.md
    python3 tests/docs/apigen.py --check   exits 1 when a block differs

tests/docs/test_docs.py runs the check in `make check`, so a table cannot say
other than the document that is served and enforced.
"""

import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
API_MD = os.path.join(ROOT, "docs", "api.md")
BEGIN = "<!-- operations: generated from services/%s/openapi.json by `make docs` -->"
END = "<!-- end of generated operations -->"
METHODS = ("get", "post", "put", "patch", "delete")


def documents():
    """{"users": the parsed document, ...} for every service that has one."""
    out = {}
    for name in sorted(os.listdir(os.path.join(ROOT, "services"))):
        path = os.path.join(ROOT, "services", name, "openapi.json")
        if os.path.exists(path):
            with open(path) as f:
                out[name] = json.load(f)
    return out


def resolve(doc, s):
    while isinstance(s, dict) and "$ref" in s:
        target = doc
        for part in s["$ref"][2:].split("/"):
            target = target.get(part, {})
        s = target
    return s


def cell(text):
    return re.sub(r"\s+", " ", text).replace("|", "\\|").strip()


def who(doc, op):
    sec = op.get("security", doc.get("security")) or []
    needs = [req for req in sec if req]
    if not needs:
        return "anyone"
    if len(needs) < len(sec):
        return "anyone; a token if given"
    return "token"


def body(doc, op):
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        other = sorted(content)
        return "`%s`" % other[0] if other else ""
    s = resolve(doc, content["application/json"].get("schema", {}))
    if s.get("oneOf"):
        return " or ".join(body(doc, {"requestBody": {"content": {"application/json": {
            "schema": alt}}}}) for alt in s["oneOf"])
    props = s.get("properties")
    if not props:
        return "`%s`" % s.get("type", "JSON")
    required = set(s.get("required", []))
    fields = [p if p in required else p + "?" for p in props]
    return "`{%s}`" % ", ".join(fields)


def answers(doc, op):
    out = []
    for status, r in op.get("responses", {}).items():
        text = r.get("description", "") if "$ref" not in r else ""
        if text in ("OK", "Created"):
            text = ""
        out.append(("%s %s" % (status, text)).strip())
    return "; ".join(out)


def table(name, doc):
    rows = ["| operation | what | who | body | answers |", "|---|---|---|---|---|"]
    for path, item in doc.get("paths", {}).items():
        for method in METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            route = re.sub(r"\{([A-Za-z_]+)\}", r":\1", path)
            rows.append("| `%s %s` | %s | %s | %s | %s |" % (
                method.upper(), route, cell(op.get("summary", "")), who(doc, op),
                body(doc, op), cell(answers(doc, op))))
    return "\n".join([BEGIN % name] + rows + [END])


def generate(text):
    """docs/api.md's text with every block made anew; raises when a service
    with a document has no section."""
    docs = documents()
    sections = re.split(r"\n(?=## )", text)
    out = []
    for sec in sections:
        m = re.match(r"## agora-([a-z]+)", sec)
        name = m.group(1) if m else None
        if name in docs:
            sec = re.sub(r"\n*" + re.escape(BEGIN % name) + r".*?" + re.escape(END) + r"\n*",
                         "\n", sec, flags=re.S)
            sec = sec.rstrip("\n") + "\n\n" + table(name, docs.pop(name)) + "\n"
        out.append(sec)
    if docs:
        raise SystemExit("docs/api.md has no section for: %s" % ", ".join(
            "agora-" + n for n in sorted(docs)))
    return "\n".join(s.rstrip("\n") + "\n" for s in out)


def main():
    with open(API_MD) as f:
        text = f.read()
    new = generate(text)
    if "--check" in sys.argv[1:]:
        if new != text:
            sys.stderr.write("docs/api.md's operation tables differ from the OpenAPI documents:"
                             " run `make docs`\n")
            sys.exit(1)
        return
    if new != text:
        with open(API_MD, "w") as f:
            f.write(new)


if __name__ == "__main__":
    main()
