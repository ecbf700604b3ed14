"""harness.py — shared helpers for the HTTP integration tests (stdlib only).

Server starts agora-testd (path in $AGORA_TESTD) with PORT=0 and the
environment a test asks for, drains its stderr in a thread, learns the port
from the {"msg":"listening","port":N} log line, and on stop sends SIGTERM and
requires a clean exit (status 0) with no sanitizer report in its output.

Conn is a raw-socket client: it sends exactly the bytes it is given and reads
responses itself (Content-Length, chunked and close-delimited bodies), so the
tests can be hostile in ways http.client cannot.

ServerTestCase is a unittest.TestCase that starts servers with
self.start_server(**env) and checks each one when the test ends.

In the sanitizer build (AGORA_TEST_SANITIZED=1) the code runs several times
slower: SCALE stretches the time limits, never the assertions.
"""

import collections
import json
import os
import re
import select
import signal
import socket
import subprocess
import threading
import time
import unittest

SANITIZED = os.environ.get("AGORA_TEST_SANITIZED") == "1"
# Time limits are multiplied by SCALE in the sanitizer build.
SCALE = 3.0 if SANITIZED else 1.0
HOST = "127.0.0.1"

SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "WARNING: ThreadSanitizer",
    "AddressSanitizer:DEADLYSIGNAL",
)

# Variables of the outer environment that would change the server under test.
_SCRUB = ("PORT", "AGORA_HOST", "AGORA_LOOPS", "AGORA_WORKERS", "AGORA_QUEUE",
          "AGORA_LOG", "AGORA_ACCESS_LOG", "AGORA_DRAIN_TIMEOUT", "AGORA_ENV", "AGORA_GRPC_PORT")


def scaled(seconds):
    return seconds * SCALE


def testd_path():
    path = os.environ.get("AGORA_TESTD")
    if not path:
        raise RuntimeError("AGORA_TESTD is not set: run the tests through ctest "
                           "(ctest -L integration) or set it to the agora-testd binary")
    if not os.access(path, os.X_OK):
        raise RuntimeError("AGORA_TESTD=%s is not an executable" % path)
    return path


class ServerError(AssertionError):
    pass


class Server:
    """One agora-testd process."""

    def __init__(self, env=None, name="testd", binary=None):
        self.name = name
        self.binary = binary  # default: $AGORA_TESTD
        self.extra_env = dict(env or {})
        self.proc = None
        self.port = None
        self.lines = collections.deque(maxlen=4000)  # the last lines of output
        self.sanitizer_lines = []                     # every line naming a sanitizer report
        self._cond = threading.Condition()
        self._eof = False
        self._reader = None
        self.stopped = False

    # -- lifecycle ---------------------------------------------------------

    def start(self, timeout=10.0):
        env = {k: v for k, v in os.environ.items()
               if k not in _SCRUB and not k.startswith("AGORA_HTTP_")}
        env["PORT"] = "0"
        env["AGORA_LOG"] = "info"  # the listening line is an info line
        env.update({k: str(v) for k, v in self.extra_env.items()})
        # A service with gRPC methods would listen on its port + 100, which
        # another test's server may hold: any free port unless asked.
        env.setdefault("AGORA_GRPC_PORT", "0")
        self.proc = subprocess.Popen([self.binary or testd_path()], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.port is None:
                if self._eof:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        if self.port is None:
            self.kill()
            raise ServerError("agora-testd did not log {\"msg\":\"listening\",\"port\":N} "
                              "within %.0f s (exit status %r); its output:\n%s"
                              % (timeout, self.proc.returncode, self.output()))
        return self

    def _drain(self):
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self.lines.append(line)
                if any(m in line for m in SANITIZER_MARKERS):
                    self.sanitizer_lines.append(line)
                if self.port is None and '"listening"' in line:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        rec = None
                    if (isinstance(rec, dict) and rec.get("msg") == "listening"
                            and isinstance(rec.get("port"), int) and rec["port"] > 0):
                        self.port = rec["port"]
                self._cond.notify_all()
        self.proc.stdout.close()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def output(self, last=200):
        with self._cond:
            lines = list(self.lines)[-last:]
        return "\n".join(lines)

    def log_records(self):
        """The output lines that are JSON objects, parsed."""
        out = []
        with self._cond:
            lines = list(self.lines)
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """Waits for the process to end; returns its status or None."""
        try:
            status = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        if self._reader is not None:
            self._reader.join(timeout=5)
        return status

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)

    def stop(self, timeout=5.0):
        """SIGTERM, then requires exit status 0 within `timeout` (scaled) and
        no sanitizer report. Raises ServerError otherwise."""
        if self.stopped:
            return
        self.stopped = True
        problems = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            status = self.wait_exit(scaled(timeout))
            if status is None:
                self.kill()
                problems.append("did not exit within %.0f s of SIGTERM (killed)"
                                % scaled(timeout))
            elif status != 0:
                problems.append("exited with status %d after SIGTERM (want 0)" % status)
        else:
            status = self.wait_exit(5)
            if status != 0:
                problems.append("had already exited with status %r" % status)
        self.check_sanitizers(problems)
        if problems:
            raise ServerError("agora-testd (pid %d): %s; its output:\n%s"
                              % (self.proc.pid, "; ".join(problems), self.output()))

    def check_sanitizers(self, problems=None):
        with self._cond:
            found = list(self.sanitizer_lines)
        if found:
            msg = "sanitizer report in output: %s" % found[0]
            if problems is None:
                raise ServerError(msg + "; output:\n" + self.output())
            problems.append(msg)

    def rss_bytes(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise ServerError("no VmRSS in /proc/%d/status" % self.proc.pid)

    def connect(self, timeout=10.0):
        return Conn(self.port, timeout=timeout)


# ---- HTTP over raw sockets ------------------------------------------------


class Response:
    def __init__(self, version, status, reason, headers, body, chunked, raw_head):
        self.version = version      # "HTTP/1.1"
        self.status = status        # 200
        self.reason = reason
        self.headers = headers      # [(name, value)] in order
        self.body = body            # bytes, decoded from chunked
        self.chunked = chunked      # True when the body came chunked
        self.raw_head = raw_head    # the status line and headers, as bytes

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def has_token(self, name, token):
        """True when a comma-separated header (Connection, say) has `token`."""
        for v in self.header_all(name):
            if token.lower() in [t.strip().lower() for t in v.split(",")]:
                return True
        return False

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError as e:
            raise AssertionError("response body is not JSON (%s): %r" % (e, self.body[:300]))

    def __repr__(self):
        return "<Response %d %r, %d body bytes>" % (self.status, self.raw_head[:400],
                                                   len(self.body))


class ConnectionClosed(AssertionError):
    """The server closed the connection where a response was expected.
    `partial` is True when part of a response had arrived (a truncated
    response, which is a server bug rather than a refusal)."""

    def __init__(self, msg, partial=False):
        super().__init__(msg)
        self.partial = partial


def build_request(method, target, headers=None, body=None, version="HTTP/1.1", host=True):
    """The bytes of one request. `headers` is a list of pairs or a dict.
    Adds Host (unless host=False) and, with a body and no Transfer-Encoding,
    Content-Length."""
    if isinstance(headers, dict):
        headers = list(headers.items())
    headers = list(headers or [])
    names = {k.lower() for k, _ in headers}
    if host and "host" not in names:
        headers.insert(0, ("Host", "%s" % HOST))
    if body is not None:
        if isinstance(body, str):
            body = body.encode("utf-8")
        if "content-length" not in names and "transfer-encoding" not in names:
            headers.append(("Content-Length", str(len(body))))
    head = "%s %s %s\r\n" % (method, target, version)
    head += "".join("%s: %s\r\n" % (k, v) for k, v in headers)
    head += "\r\n"
    return head.encode("latin-1") + (body or b"")


def chunked_body(chunks, trailers=None):
    out = b""
    for c in chunks:
        if isinstance(c, str):
            c = c.encode()
        if c:
            out += b"%x\r\n" % len(c) + c + b"\r\n"
    out += b"0\r\n"
    for k, v in (trailers or []):
        out += ("%s: %s\r\n" % (k, v)).encode()
    out += b"\r\n"
    return out


class Conn:
    """One client connection over a raw socket."""

    def __init__(self, port, timeout=10.0, host=HOST):
        self.port = port
        self.timeout = scaled(timeout)
        self.sock = socket.create_connection((host, port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def reset(self):
        """Closes with a TCP RST (SO_LINGER 0), like a crashed client."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def request(self, method, target, headers=None, body=None, version="HTTP/1.1"):
        """Sends one request and reads its response."""
        self.send(build_request(method, target, headers, body, version))
        return self.read_response(method=method)

    def get(self, target, headers=None):
        return self.request("GET", target, headers)

    # -- reading -----------------------------------------------------------

    def _fill(self, deadline=None):
        """Reads more bytes into buf; False at EOF. Raises socket.timeout."""
        if self.eof:
            return False
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")
            self.sock.settimeout(left)
        else:
            self.sock.settimeout(self.timeout)
        try:
            data = self.sock.recv(262144)
        finally:
            self.sock.settimeout(self.timeout)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _read_line(self, deadline, limit=65536):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > limit:
                raise AssertionError("line longer than %d bytes from the server" % limit)
            if not self._fill(deadline):
                raise ConnectionClosed("connection closed in the middle of a line "
                                       "(have %r)" % bytes(self.buf[:200]), partial=True)

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise ConnectionClosed("connection closed after %d of %d body bytes"
                                       % (len(self.buf), n), partial=True)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_response(self, method="GET", timeout=None):
        """Reads one complete response. Raises ConnectionClosed when the
        connection closes before a status line, socket.timeout when nothing
        complete arrives in time."""
        deadline = time.monotonic() + (scaled(timeout) if timeout else self.timeout)
        while True:
            # Find the end of the head.
            while b"\r\n\r\n" not in self.buf:
                if len(self.buf) > 1 << 20:
                    raise AssertionError("response head larger than 1 MiB")
                if not self._fill(deadline):
                    if self.buf:
                        raise ConnectionClosed("connection closed inside a response head: %r"
                                               % bytes(self.buf[:300]), partial=True)
                    raise ConnectionClosed("connection closed before a response")
            i = self.buf.index(b"\r\n\r\n")
            head = bytes(self.buf[:i])
            del self.buf[:i + 4]
            lines = head.split(b"\r\n")
            m = re.match(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
            if not m:
                raise AssertionError("malformed status line %r" % lines[0])
            version, status = m.group(1).decode(), int(m.group(2))
            reason = (m.group(3) or b"").decode("latin-1")
            headers = []
            for ln in lines[1:]:
                if b":" not in ln:
                    raise AssertionError("malformed header line %r" % ln)
                k, v = ln.split(b":", 1)
                if k != k.strip() or not k:
                    raise AssertionError("malformed header name %r" % k)
                headers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
            if 100 <= status < 200:
                continue  # interim response: read the final one
            resp = Response(version, status, reason, headers, b"", False, head)
            resp.body = self._read_body(resp, method, deadline)
            return resp

    def _read_body(self, resp, method, deadline):
        if method == "HEAD" or resp.status in (204, 304):
            return b""
        te = resp.header("Transfer-Encoding")
        cl_all = resp.header_all("Content-Length")
        if te is not None:
            if te.strip().lower() != "chunked":
                raise AssertionError("unexpected Transfer-Encoding %r" % te)
            if cl_all:
                raise AssertionError("both Transfer-Encoding and Content-Length sent")
            resp.chunked = True
            out = []
            while True:
                line = self._read_line(deadline)
                size_s = line.split(b";", 1)[0].strip()
                if not re.match(rb"^[0-9a-fA-F]+$", size_s):
                    raise AssertionError("bad chunk size line %r" % line)
                size = int(size_s, 16)
                if size == 0:
                    while self._read_line(deadline) != b"":
                        pass  # trailers
                    return b"".join(out)
                out.append(self._read_exact(size, deadline))
                if self._read_exact(2, deadline) != b"\r\n":
                    raise AssertionError("chunk data not followed by CRLF")
        if cl_all:
            if len(set(cl_all)) != 1 or not cl_all[0].isdigit():
                raise AssertionError("bad Content-Length %r" % cl_all)
            return self._read_exact(int(cl_all[0]), deadline)
        # Delimited by close.
        while self._fill(deadline):
            pass
        data = bytes(self.buf)
        self.buf = bytearray()
        return data

    def read_until_close(self, timeout=5.0):
        """All bytes until the server closes; raises socket.timeout if it does
        not close in time. A reset counts as a close."""
        deadline = time.monotonic() + scaled(timeout)
        try:
            while self._fill(deadline):
                pass
        except (ConnectionResetError, BrokenPipeError):
            self.eof = True
        data = bytes(self.buf)
        self.buf = bytearray()
        return data

    def closed_within(self, timeout):
        """True when the server closes (EOF or reset) within `timeout` s
        (scaled), discarding anything it sends; False when still open."""
        try:
            self.read_until_close(timeout)
            return True
        except socket.timeout:
            return False

    def is_open_now(self, wait=0.05):
        """True when the server has not closed the connection (no EOF or
        reset pending) after `wait` seconds. Does not consume data."""
        if self.eof:
            return False
        r, _, _ = select.select([self.sock], [], [], wait)
        if not r:
            return True
        try:
            data = self.sock.recv(65536, socket.MSG_PEEK)
        except (ConnectionResetError, BrokenPipeError):
            return False
        return bool(data)


def parse_response_bytes(data, method="GET"):
    """Parses `data`, everything a server sent before closing, as exactly one
    response; fails on a truncated response or bytes after it."""
    c = Conn.__new__(Conn)
    c.port, c.timeout, c.sock = None, 1.0, None
    c.buf, c.eof = bytearray(data), True
    r = c.read_response(method=method)
    if c.buf:
        raise AssertionError("%d bytes after the response: %r" % (len(c.buf), bytes(c.buf[:100])))
    return r


def parse_metrics(text):
    """Parses Prometheus text into {(name, frozenset(labels.items())): value}."""
    out = {}
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = line_re.match(line)
        if not m:
            raise AssertionError("unparseable metrics line %r" % line)
        labels = frozenset(label_re.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def metric_values(metrics, name, **labels):
    """Values of the series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return [v for (n, ls), v in metrics.items() if n == name and want <= set(ls)]


# ---- unittest glue --------------------------------------------------------


class BusCollector:
    """What the test clients of the brokers (nats_client, amqp_client) share:
    a reader thread appends (subject, event) pairs to self.msgs under
    self.cond, on socket self.sock."""

    def wait_for(self, pred, timeout=10.0):
        """The (subject, event) pairs received so far that match, waiting up
        to `timeout` s (scaled) for at least one; [] when none came."""
        deadline = time.monotonic() + scaled(timeout)
        with self.cond:
            while True:
                found = [m for m in self.msgs if pred(m[1])]
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self.cond.wait(left)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class ServerTestCase(unittest.TestCase):
    """Starts servers on demand and checks each when the test ends: still
    running (unless the test stopped it), then SIGTERM → exit 0, and no
    sanitizer report."""

    maxDiff = 4000

    def start_server(self, **env):
        srv = Server(env).start()
        self.addCleanup(self._finish_server, srv)
        return srv

    def connect(self, srv, timeout=10.0):
        c = srv.connect(timeout)
        self.addCleanup(c.close)
        return c

    def _finish_server(self, srv):
        if not srv.stopped and not srv.alive():
            srv.stopped = True
            raise ServerError("agora-testd died during the test (status %r); output:\n%s"
                              % (srv.proc.returncode, srv.output()))
        srv.stop()

    # Assertions shared by the tests.

    def assertRequestId(self, resp):
        rid = resp.header("X-Request-Id")
        self.assertTrue(rid, "response without X-Request-Id: %r" % resp)
        return rid

    def assertEnvelopeError(self, resp, status, code=None):
        """The error envelope of DESIGN.md §4, with the X-Request-Id header
        equal to the body's requestId."""
        self.assertEqual(resp.status, status, resp)
        ctype = resp.header("Content-Type", "")
        self.assertTrue(ctype.startswith("application/json"),
                        "error with Content-Type %r: %r" % (ctype, resp))
        body = resp.json()
        self.assertIs(body.get("success"), False, body)
        err = body.get("error")
        self.assertIsInstance(err, dict, body)
        self.assertIsInstance(err.get("code"), str, body)
        self.assertTrue(err["code"], body)
        self.assertIsInstance(err.get("message"), str, body)
        self.assertTrue(err["message"], body)
        if code is not None:
            self.assertEqual(err["code"], code, body)
        self.assertIsInstance(body.get("requestId"), str, body)
        self.assertEqual(body["requestId"], self.assertRequestId(resp), resp)
        return body

    def assertOk(self, resp, status=200):
        self.assertEqual(resp.status, status, resp)
        self.assertRequestId(resp)
        body = resp.json()
        self.assertIs(body.get("success"), True, body)
        self.assertIn("data", body)
        return body["data"]


class SharedServerTestCase(ServerTestCase):
    """One agora-testd for the whole class, cls.srv, started with
    `server_env` before the first test and stopped after the last."""

    server_env = None

    @classmethod
    def setUpClass(cls):
        cls.srv = Server(cls.server_env).start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()


def main():
    unittest.main(verbosity=2)
