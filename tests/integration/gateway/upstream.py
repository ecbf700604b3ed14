#!/usr/bin/env python3
"""A programmable upstream for the gateway tests (stdlib only).

    upstream.py PORT NAME

  GET  /health            200 "ok" (or the status set below)
  POST /control/health?status=CODE   what /health answers from now on
  ANY  /reflect/...       200 {"instance","method","path","headers","body"}
  ANY  /status/CODE?k=K   answers CODE; counts hits per (method, K)
  GET  /count?k=K         {"GET": n, "POST": m, ...} for K
  GET  /ws                a WebSocket echo server (RFC 6455, unfragmented frames)
  ANY  /stream/...?k=K[&delay_ms=D]  reads the body as it comes (Content-Length
                          or chunked; D ms after each 64 KiB), keeping how many
                          bytes have arrived so far under K; then 200
                          {"bytes", "sha256", "transferEncoding", "contentLength"}
  GET  /progress?k=K      {"bytes": so far, "cut": true when the body broke off}

Prints "ready PORT" once listening. HTTP/1.1 with keep-alive.
"""
import base64
import hashlib
import json
import socketserver
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

NAME = "upstream"
COUNTS = {}
HEALTH = [200]
PROGRESS = {}  # k -> [bytes so far, cut]
LOCK = threading.Lock()
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def read_exact(f, n):
    out = b""
    while len(out) < n:
        chunk = f.read(n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def answer(self, status, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Upstream", NAME)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def stream(self, u):
        q = urllib.parse.parse_qs(u.query)
        k = q.get("k", [""])[0]
        delay = int(q.get("delay_ms", ["0"])[0]) / 1000.0
        h = hashlib.sha256()
        with LOCK:
            PROGRESS[k] = [0, False]

        def got(data):
            h.update(data)
            with LOCK:
                PROGRESS[k][0] += len(data)
            if delay:
                time.sleep(delay)

        def take(n):
            while n > 0:
                data = self.rfile.read(min(65536, n))
                if not data:
                    raise EOFError
                got(data)
                n -= len(data)

        te = self.headers.get("Transfer-Encoding", "")
        try:
            if te.lower() == "chunked":
                while True:
                    line = self.rfile.readline()
                    if not line:
                        raise EOFError
                    size = int(line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    take(size)
                    self.rfile.readline()
            else:
                take(int(self.headers.get("Content-Length") or 0))
        except (EOFError, ValueError, ConnectionError):
            with LOCK:
                PROGRESS[k][1] = True
            self.close_connection = True
            return
        with LOCK:
            total = PROGRESS[k][0]
        return self.answer(200, {"bytes": total, "sha256": h.hexdigest(),
                                 "transferEncoding": te,
                                 "contentLength": self.headers.get("Content-Length")})

    def handle_any(self):
        u = urllib.parse.urlsplit(self.path)
        if u.path.startswith("/stream"):
            return self.stream(u)
        if u.path == "/progress":
            k = urllib.parse.parse_qs(u.query).get("k", [""])[0]
            with LOCK:
                b, cut = PROGRESS.get(k, [0, False])
            return self.answer(200, {"bytes": b, "cut": cut})
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if u.path == "/health":
            return self.answer(HEALTH[0], b"ok" if HEALTH[0] == 200 else b"failing", "text/plain")
        if u.path == "/control/health":
            HEALTH[0] = int(urllib.parse.parse_qs(u.query)["status"][0])
            return self.answer(200, {"health": HEALTH[0]})
        if u.path.startswith("/reflect"):
            return self.answer(200, {"instance": NAME, "method": self.command, "path": self.path,
                                     "headers": {k: v for k, v in self.headers.items()},
                                     "body": body.decode("utf-8", "replace")})
        if u.path.startswith("/status/"):
            code = int(u.path.split("/")[2])
            k = urllib.parse.parse_qs(u.query).get("k", [""])[0]
            with LOCK:
                COUNTS.setdefault(k, {}).setdefault(self.command, 0)
                COUNTS[k][self.command] += 1
            return self.answer(code, {"status": code})
        if u.path == "/count":
            k = urllib.parse.parse_qs(u.query).get("k", [""])[0]
            with LOCK:
                return self.answer(200, dict(COUNTS.get(k, {})))
        if u.path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        return self.answer(404, {"error": "no such path", "path": self.path})

    def websocket(self):
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        try:
            while True:
                b1, b2 = read_exact(self.rfile, 2)
                op = b1 & 0x0F
                n = b2 & 0x7F
                if n == 126:
                    n = struct.unpack("!H", read_exact(self.rfile, 2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", read_exact(self.rfile, 8))[0]
                mask = read_exact(self.rfile, 4) if b2 & 0x80 else b"\0\0\0\0"
                data = bytes(c ^ mask[i % 4] for i, c in enumerate(read_exact(self.rfile, n)))
                if op == 8:
                    self.wfile.write(b"\x88\x00")
                    self.wfile.flush()
                    break
                hdr = bytes([0x80 | op])
                if len(data) < 126:
                    hdr += bytes([len(data)])
                elif len(data) < 65536:
                    hdr += bytes([126]) + struct.pack("!H", len(data))
                else:
                    hdr += bytes([127]) + struct.pack("!Q", len(data))
                self.wfile.write(hdr + data)
                self.wfile.flush()
        except (EOFError, ConnectionError, ValueError):
            pass
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any


class Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    global NAME
    port, NAME = int(sys.argv[1]), sys.argv[2]
    srv = Server(("127.0.0.1", port), Handler)
    print("ready %d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
