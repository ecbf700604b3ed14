"""A real OTLP/HTTP trace receiver for tests: tests/otlp/receiver.mjs (node),
which decodes what it is sent with OpenTelemetry's own generated OTLP
protobuf code (@opentelemetry/otlp-transformer), JSON and protobuf bodies
alike, and writes one JSON line per span it accepted and one per body it
refused (tests/otlp/README.md).

    rx = otlp.Receiver().start()      # node from PATH; npm ci on first use
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = rx.endpoint   # http://127.0.0.1:PORT
    ...
    rx.spans()    # [{traceId, spanId, parentSpanId, name, kind, service,
                  #   startTimeUnixNano, endTimeUnixNano, attributes, status, ...}]
    rx.errors()   # [{error, encoding, contentType, bytes, body}]
    rx.stop()

Receiver(respond=503) answers every export with 503 after recording it (a
collector in trouble). The packages are installed with `npm ci` from
tests/otlp/package-lock.json into AGORA_OTLP_NODE_DIR, or else
<build>/tests/otlp/npm when the test runs inside a CMake build directory
(ctest does), or else tests/otlp/ itself; only when that node_modules was
installed from another lock file. Missing node or npm is an error, not a
skip.
"""

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
OTLP_DIR = os.path.join(ROOT, "tests", "otlp")
RECEIVER = os.path.join(OTLP_DIR, "receiver.mjs")
STAMP = ".agora-otlp-lock"


class ReceiverError(RuntimeError):
    pass


def _build_dir():
    d = os.getcwd()
    while True:
        if os.path.exists(os.path.join(d, "CMakeCache.txt")):
            return d
        up = os.path.dirname(d)
        if up == d:
            return None
        d = up


def node_dir():
    """Where the receiver's packages are (or go)."""
    if os.environ.get("AGORA_OTLP_NODE_DIR"):
        return os.environ["AGORA_OTLP_NODE_DIR"]
    build = _build_dir()
    if build and not os.path.realpath(build).startswith(os.path.realpath(OTLP_DIR)):
        return os.path.join(build, "tests", "otlp", "npm")
    return OTLP_DIR


def install(where=None):
    """npm ci of tests/otlp/package-lock.json into `where` unless it holds
    exactly that lock's packages already; one installer at a time."""
    where = where or node_dir()
    os.makedirs(where, exist_ok=True)
    want = {}
    for name in ("package.json", "package-lock.json"):
        with open(os.path.join(OTLP_DIR, name), "rb") as f:
            want[name] = f.read()
    stamp = os.path.join(where, "node_modules", STAMP)
    with open(os.path.join(where, ".agora-otlp-install.lock"), "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        if os.path.exists(stamp):
            with open(stamp, "rb") as f:
                if f.read() == want["package-lock.json"]:
                    return where
        npm = shutil.which("npm")
        if not npm:
            raise ReceiverError("npm is not installed: the OTLP receiver needs it "
                                "(scripts/install-deps installs nodejs and npm)")
        if os.path.realpath(where) != os.path.realpath(OTLP_DIR):
            for name, data in want.items():
                with open(os.path.join(where, name), "wb") as f:
                    f.write(data)
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefer-offline",
                            "--loglevel=error"], cwd=where, capture_output=True, text=True,
                           timeout=600)
        if r.returncode != 0:
            raise ReceiverError("npm ci in %s failed (status %d):\n%s%s"
                                % (where, r.returncode, r.stdout, r.stderr))
        with open(stamp, "wb") as f:
            f.write(want["package-lock.json"])
    return where


class Receiver:
    def __init__(self, respond=None, out=None):
        self.respond = respond
        self.tmp = None
        self.out = out
        self.proc = None
        self.port = None

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, timeout=30):
        node = shutil.which("node")
        if not node:
            raise ReceiverError("node is not on PATH: the OTLP receiver (tests/otlp) needs it "
                                "(scripts/install-deps installs nodejs)")
        modules = install()
        if self.out is None:
            self.tmp = tempfile.mkdtemp(prefix="agora-otlp-")
            self.out = os.path.join(self.tmp, "spans.jsonl")
        argv = [node, RECEIVER, "--port", "0", "--out", self.out, "--modules", modules]
        if self.respond:
            argv += ["--respond", str(self.respond)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        # The first stdout line is {"listening": PORT} once it accepts.
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.time() + timeout
        line = ""
        while time.time() < deadline and not line:
            if self.proc.poll() is not None:
                break
            if sel.select(timeout=0.2):
                line = self.proc.stdout.readline()
        sel.close()
        if not line:
            err = ""
            if self.proc.poll() is not None:
                err = self.proc.stderr.read()
            self.stop()
            raise ReceiverError("the OTLP receiver did not start: %s" % (err or "no answer"))
        self.port = json.loads(line)["listening"]
        return self

    def _lines(self):
        out = []
        try:
            with open(self.out) as f:
                for line in f:
                    if line.strip():
                        out.append(json.loads(line))
        except FileNotFoundError:
            pass
        return out

    def spans(self):
        """Every span accepted so far, in arrival order."""
        return [r for r in self._lines() if "error" not in r]

    def errors(self):
        """Every body refused so far (or a receiver bug), with the reason."""
        return [r for r in self._lines() if "error" in r]

    def wait_spans(self, pred=lambda spans: bool(spans), timeout=30, what="spans"):
        """Polls spans() until pred(spans) holds; returns them, or raises with
        what arrived."""
        deadline = time.time() + timeout
        spans = []
        while time.time() < deadline:
            spans = self.spans()
            if pred(spans):
                return spans
            time.sleep(0.1)
        raise AssertionError("timed out waiting for %s at the OTLP receiver; it has %d spans "
                             "(%s) and %d refused bodies %s"
                             % (what, len(spans), ", ".join(sorted({"%s %s" % (s["service"], s["name"])
                                                                    for s in spans}))[:2000],
                                len(self.errors()), [e["error"] for e in self.errors()][:5]))

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            for s in (self.proc.stdout, self.proc.stderr):
                if s:
                    s.close()
            self.proc = None
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
