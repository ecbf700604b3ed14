"""nats_client.py — a minimal NATS client (core protocol, stdlib only) for
the integration tests that watch or publish events on the broker directly:
the catalog and cart tests.
"""

import json
import socket
import threading
import time
import urllib.parse

import harness


class Nats(harness.BusCollector):
    """Publishes and subscribes on core NATS subjects. JetStream stores what
    is published on agora.events.> and also hands every stored message to
    core subscribers of its subject, so this sees what the relay publishes."""

    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=harness.scaled(10))
        self.buf = b""
        self.msgs = []
        self.cond = threading.Condition()
        self._line()  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":false}\r\nPING\r\n')
        while self._line() != b"PONG":
            pass
        self.sock.settimeout(None)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("NATS closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("NATS closed the connection")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _read(self):
        try:
            while True:
                line = self._line()
                if line.startswith(b"MSG "):
                    parts = line.split()
                    payload = self._exact(int(parts[-1]) + 2)[:-2]
                    with self.cond:
                        self.msgs.append((parts[1].decode(), json.loads(payload)))
                        self.cond.notify_all()
                elif line == b"PING":
                    self.sock.sendall(b"PONG\r\n")
        except (OSError, ConnectionError, ValueError):
            pass

    def sub(self, subject, sid):
        self.sock.sendall(("SUB %s %d\r\n" % (subject, sid)).encode())

    def pub(self, subject, obj):
        data = json.dumps(obj).encode()
        self.sock.sendall(("PUB %s %d\r\n" % (subject, len(data))).encode() + data + b"\r\n")
