"""amqp_client.py — a minimal AMQP 0-9-1 client (stdlib only) with the same
small interface as nats_client.Nats, so that the tests that watch or publish
events on the broker run on RabbitMQ too:

    bus = Amqp(url)                      # amqp://user:pass@host:port/
    bus.sub("agora.events.>", 1)         # everything published on agora.events
    bus.pub("agora.events.order.confirmed", {...CloudEvent...})
    bus.wait_for(lambda event: ...)

It speaks just enough of the protocol: the connection handshake (PLAIN),
one channel, an exclusive server-named queue bound to the topic exchange,
basic.consume without acks, basic.publish. Written here because Debian ships
no Python AMQP client for the system python3 that the tests use without
extra packages (python3-amqp would do; this keeps the test dependencies to
the standard library).
"""

import json
import socket
import struct
import threading
import time
import urllib.parse

import harness

FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = b"\xce"
PREFIX = "agora.events."


def _shortstr(s):
    b = s.encode()
    return struct.pack("!B", len(b)) + b


def _longstr(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack("!I", len(b)) + b


def _table(d):
    out = b""
    for k, v in d.items():
        out += _shortstr(k) + b"S" + _longstr(v)
    return struct.pack("!I", len(out)) + out


class Amqp(harness.BusCollector):
    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port or 5672),
                                             timeout=harness.scaled(10))
        self.buf = b""
        self.msgs = []
        self.cond = threading.Condition()
        self.lock = threading.Lock()
        self.pending = None  # [routing_key, size, body] while a delivery arrives
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self._expect(10, 10)  # connection.start
        user = urllib.parse.unquote(u.username or "guest")
        password = urllib.parse.unquote(u.password or "guest")
        self._method(0, 10, 11, _table({"product": "agora-tests"}) + _shortstr("PLAIN") +
                     _longstr(b"\x00" + user.encode() + b"\x00" + password.encode()) +
                     _shortstr("en_US"))
        args = self._expect(10, 30)  # connection.tune
        channel_max, frame_max, _ = struct.unpack("!HIH", args[:8])
        self.frame_max = frame_max or 131072
        self._method(0, 10, 31, struct.pack("!HIH", channel_max, self.frame_max, 0))
        vhost = urllib.parse.unquote(u.path[1:]) if u.path and u.path != "/" else "/"
        self._method(0, 10, 40, _shortstr(vhost) + _shortstr("") + b"\x00")
        self._expect(10, 41)
        self._method(1, 20, 10, _shortstr(""))
        self._expect(20, 11)
        # The exchange the services publish to (declared as they declare it).
        self._method(1, 40, 10, struct.pack("!H", 0) + _shortstr(PREFIX[:-1]) + _shortstr("topic") +
                     bytes([0b00000010]) + struct.pack("!I", 0))
        self._expect(40, 11)
        self.queue = None
        self.reader = None

    # -- frames ------------------------------------------------------------

    def _send_frame(self, ftype, channel, payload):
        with self.lock:
            self.sock.sendall(struct.pack("!BHI", ftype, channel, len(payload)) + payload + FRAME_END)

    def _method(self, channel, cls, meth, args):
        self._send_frame(FRAME_METHOD, channel, struct.pack("!HH", cls, meth) + args)

    def _recv_exact(self, n):
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("RabbitMQ closed the connection")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _frame(self):
        ftype, channel, size = struct.unpack("!BHI", self._recv_exact(7))
        payload = self._recv_exact(size)
        if self._recv_exact(1) != FRAME_END:
            raise ConnectionError("bad AMQP frame end")
        return ftype, channel, payload

    def _expect(self, cls, meth):
        while True:
            ftype, _, payload = self._frame()
            if ftype != FRAME_METHOD:
                continue
            c, m = struct.unpack("!HH", payload[:4])
            if (c, m) == (cls, meth):
                return payload[4:]
            if (c, m) in ((10, 50), (20, 40)):
                code = struct.unpack("!H", payload[4:6])[0]
                text = payload[7:7 + payload[6]].decode(errors="replace")
                raise ConnectionError("RabbitMQ closed: %d %s" % (code, text))

    # -- the interface the tests use ------------------------------------------

    def sub(self, subject, sid):
        """Binds a private queue to agora.events with the pattern of a NATS
        subject under agora.events. ('>' becomes '#'), then consumes it."""
        pattern = subject[len(PREFIX):] if subject.startswith(PREFIX) else subject
        pattern = pattern.replace(">", "#")
        # queue.declare: server-named, exclusive, auto-delete.
        self._method(1, 50, 10, struct.pack("!H", 0) + _shortstr("") + bytes([0b00001100]) +
                     struct.pack("!I", 0))
        args = self._expect(50, 11)
        self.queue = args[1:1 + args[0]].decode()
        self._method(1, 50, 20, struct.pack("!H", 0) + _shortstr(self.queue) +
                     _shortstr(PREFIX[:-1]) + _shortstr(pattern) + b"\x00" + struct.pack("!I", 0))
        self._expect(50, 21)
        # basic.consume with no-ack.
        self._method(1, 60, 20, struct.pack("!H", 0) + _shortstr(self.queue) + _shortstr("") +
                     bytes([0b00000010]) + struct.pack("!I", 0))
        self._expect(60, 21)
        self.sock.settimeout(None)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        try:
            while True:
                ftype, _, payload = self._frame()
                if ftype == FRAME_METHOD:
                    c, m = struct.unpack("!HH", payload[:4])
                    if (c, m) == (60, 60):  # basic.deliver
                        p = payload[4:]
                        tag_len = p[0]
                        p = p[1 + tag_len + 8 + 1:]  # consumer tag, delivery tag, redelivered
                        ex_len = p[0]
                        p = p[1 + ex_len:]
                        rk = p[1:1 + p[0]].decode()
                        self.pending = [rk, None, b""]
                elif ftype == FRAME_HEADER and self.pending is not None:
                    self.pending[1] = struct.unpack("!Q", payload[4:12])[0]
                    if self.pending[1] == 0:
                        self._deliver()
                elif ftype == FRAME_BODY and self.pending is not None:
                    self.pending[2] += payload
                    if len(self.pending[2]) >= self.pending[1]:
                        self._deliver()
        except (OSError, ConnectionError):
            pass

    def _deliver(self):
        rk, _, body = self.pending
        self.pending = None
        try:
            obj = json.loads(body)
        except ValueError:
            obj = {"raw": body.decode(errors="replace")}
        with self.cond:
            self.msgs.append((PREFIX + rk, obj))
            self.cond.notify_all()

    def pub(self, subject, obj):
        """Publishes a JSON body to agora.events with the routing key of the
        subject (agora.events.<type> → <type>), persistent."""
        body = json.dumps(obj).encode()
        rk = subject[len(PREFIX):] if subject.startswith(PREFIX) else subject
        self._method(1, 60, 40, struct.pack("!H", 0) + _shortstr(PREFIX[:-1]) + _shortstr(rk) +
                     b"\x00")
        # content header: class 60, weight 0, body size, flags: content-type, delivery-mode
        flags = (1 << 15) | (1 << 12)
        props = _shortstr("application/cloudevents+json") + struct.pack("!B", 2)
        self._send_frame(FRAME_HEADER, 1, struct.pack("!HHQH", 60, 0, len(body), flags) + props)
        for i in range(0, len(body), self.frame_max - 8):
            self._send_frame(FRAME_BODY, 1, body[i:i + self.frame_max - 8])



def bus_url():
    """The broker of this run for the services' AGORA_BUS: RabbitMQ when
    AGORA_TEST_BUS=amqp, else NATS."""
    import os
    if os.environ.get("AGORA_TEST_BUS") == "amqp":
        return os.environ["AGORA_TEST_AMQP_URL"]
    return os.environ["AGORA_TEST_NATS_URL"]


def bus_client(url):
    """A test client of the broker at `url` (nats:// or amqp://)."""
    if url.startswith("amqp"):
        return Amqp(url)
    from nats_client import Nats
    return Nats(url)
