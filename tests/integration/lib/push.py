"""Push clients for tests: a WebSocket client (RFC 6455, on the socket
module: masks its frames, answers pings unless told not to) and a
Server-Sent Events client, for agora-notifications' /v1/ws and /v1/stream
or the gateway's /api/v1/ws and /api/v1/stream (path=). Shared by the
notifications, chat and cli tests."""

import base64
import hashlib
import json
import os
import socket
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "http"))
import harness  # noqa: E402

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WsClosed(Exception):
    def __init__(self, code, reason):
        super().__init__("closed %s %r" % (code, reason))
        self.code, self.reason = code, reason


class WS:
    """A client of RFC 6455: masks its frames, answers pings (unless told
    not to), and hands over text messages and the server's close."""

    def __init__(self, port, token=None, query="", headers=None, rcvbuf=None, timeout=10,
                 path="/v1/ws"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(harness.scaled(timeout))
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.auto_pong = True
        self.pings = 0
        key = base64.b64encode(os.urandom(16)).decode()
        h = ["GET %s%s HTTP/1.1" % (path, query), "Host: x", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: 13"]
        if token:
            h.append("Authorization: Bearer " + token)
        h += list(headers or [])
        self.sock.sendall(("\r\n".join(h) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake: %r" % self.buf)
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:]}
        self.body = b""
        if self.status != 101:
            n = int(self.headers.get("content-length", "0"))
            while len(self.buf) < n:
                self.buf += self.sock.recv(65536)
            self.body = self.buf[:n]
            return
        self.accept_ok = self.headers.get("sec-websocket-accept") == base64.b64encode(
            hashlib.sha1((key + GUID).encode()).digest()).decode()

    def json(self):
        return json.loads(self.body)

    def send_frame(self, op, payload, fin=True, mask=True, rsv=0):
        if isinstance(payload, str):
            payload = payload.encode()
        head = bytes([(0x80 if fin else 0) | rsv | op])
        m = 0x80 if mask else 0
        n = len(payload)
        if n < 126:
            head += bytes([m | n])
        elif n < 65536:
            head += bytes([m | 126]) + struct.pack("!H", n)
        else:
            head += bytes([m | 127]) + struct.pack("!Q", n)
        if mask:
            key = os.urandom(4)
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            head += key
        self.sock.sendall(head + payload)

    def send_json(self, obj):
        self.send_frame(1, json.dumps(obj))

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk

    def frame(self):
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        if b1 & 0x80:
            raise AssertionError("the server masked a frame")
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(off + n)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return b0 & 0x0F, payload

    def recv(self, timeout=10):
        """The next text message, parsed. Pings are answered on the way;
        the server's close raises WsClosed."""
        self.sock.settimeout(harness.scaled(timeout))
        while True:
            op, payload = self.frame()
            if op == 9:
                self.pings += 1
                if self.auto_pong:
                    self.send_frame(10, payload)
                continue
            if op == 10:
                continue
            if op == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                raise WsClosed(code, payload[2:].decode())
            if op == 1:
                return json.loads(payload)
            raise AssertionError("unexpected opcode %d" % op)

    def expect_close(self, timeout=10):
        try:
            while True:
                msg = self.recv(timeout)
                if msg.get("type") != "notification":
                    raise AssertionError("message before the close: %r" % msg)
        except WsClosed as e:
            return e.code, e.reason

    def notifications(self, n, timeout=10):
        return [m["data"] for m in self.messages(n, ("notification",), timeout)]

    def messages(self, n, types, timeout=10):
        """The next n messages whose type is in `types` (others skipped)."""
        out = []
        while len(out) < n:
            msg = self.recv(timeout)
            if msg["type"] in types:
                out.append(msg)
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class SSE:
    """A client of text/event-stream over a raw socket (chunked)."""

    def __init__(self, port, token=None, query="", last_id=None, timeout=10, path="/v1/stream"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=harness.scaled(timeout))
        h = ["GET %s%s HTTP/1.1" % (path, query), "Host: x", "Accept: text/event-stream"]
        if token:
            h.append("Authorization: Bearer " + token)
        if last_id is not None:
            h.append("Last-Event-ID: %s" % last_id)
        self.sock.sendall(("\r\n".join(h) + "\r\n\r\n").encode())
        self.raw = b""
        while b"\r\n\r\n" not in self.raw:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the head")
            self.raw += chunk
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:]}
        self.text = ""
        self.comments = 0
        self.body = b""
        if self.status != 200:
            n = int(self.headers.get("content-length", "0"))
            while len(self.raw) < n:
                self.raw += self.sock.recv(65536)
            self.body = self.raw[:n]

    def _dechunk(self):
        while True:
            if b"\r\n" not in self.raw:
                return
            size_line, rest = self.raw.split(b"\r\n", 1)
            size = int(size_line, 16)
            if len(rest) < size + 2:
                return
            if size == 0:
                raise ConnectionError("stream ended")
            self.text += rest[:size].decode()
            self.raw = rest[size + 2:]

    def event(self, timeout=10):
        """The next event as (event, id, data); comments are counted."""
        self.sock.settimeout(harness.scaled(timeout))
        while True:
            self._dechunk()
            while "\n\n" in self.text:
                block, self.text = self.text.split("\n\n", 1)
                ev = {"event": "message", "id": None, "data": []}
                only_comments = True
                for line in block.split("\n"):
                    if line.startswith(":"):
                        self.comments += 1
                        continue
                    only_comments = False
                    k, _, v = line.partition(":")
                    v = v[1:] if v.startswith(" ") else v
                    if k == "data":
                        ev["data"].append(v)
                    elif k in ("event", "id"):
                        ev[k] = v
                if not only_comments and ev["data"]:
                    return ev["event"], ev["id"], json.loads("\n".join(ev["data"]))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.raw += chunk

    def notifications(self, n, timeout=10):
        out = []
        while len(out) < n:
            kind, id_, data = self.event(timeout)
            if kind == "notification":
                assert id_ == data["id"], (id_, data)
                out.append(data)
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
