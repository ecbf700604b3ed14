#!/usr/bin/python3
"""Small probes used by tests/harness/with-servers (stdlib only).

  probe.py ports N              print N distinct free loopback TCP ports
  probe.py nats PORT [TIMEOUT [PID]]  ready when INFO arrives and the JetStream API answers
  probe.py amqp PORT [TIMEOUT [PID]]  ready when guest/guest can open vhost "/" over AMQP 0-9-1
  probe.py tcp PORT [TIMEOUT [PID]]   ready when something accepts a TCP connection
  probe.py free PORT                  exit 0 when PORT can be bound on 127.0.0.1 now

Each readiness probe retries until TIMEOUT seconds (default 60) have passed,
exits 0 when ready and 1 (with the last error on stderr) otherwise; with PID
it gives up (exit 3) as soon as that process is gone.
"""
import json
import os
import random
import socket
import struct
import sys
import time

HOST = "127.0.0.1"


def can_bind(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def ports(n):
    # Prefer ports below the kernel's ephemeral range: outgoing connections
    # never take those, so a server restarted later gets its port back.
    lo = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    chosen = []
    rnd = random.SystemRandom()
    if lo > 11000:
        tries = 0
        while len(chosen) < n and tries < 2000:
            tries += 1
            p = rnd.randrange(10000, lo)
            if p not in chosen and can_bind(p):
                chosen.append(p)
    while len(chosen) < n:  # fall back to whatever the kernel hands out
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((HOST, 0))
        p = s.getsockname()[1]
        s.close()
        if p not in chosen:
            chosen.append(p)
    print(" ".join(str(p) for p in chosen))
    return 0


def connect(port, timeout=2.0):
    s = socket.create_connection((HOST, port), timeout=timeout)
    s.settimeout(timeout)
    return s


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by server")
        buf += chunk
    return buf


def recv_line(s, buf):
    while b"\r\n" not in buf[0]:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by server")
        buf[0] += chunk
    line, buf[0] = buf[0].split(b"\r\n", 1)
    return line


def nats_once(port):
    s = connect(port)
    try:
        buf = [b""]
        line = recv_line(s, buf)
        if not line.startswith(b"INFO "):
            raise RuntimeError("expected INFO, got %r" % line[:80])
        info = json.loads(line[5:])
        if not info.get("jetstream"):
            raise RuntimeError("server runs without JetStream")
        s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n'
                  b"SUB _INBOX.agora_probe 1\r\n"
                  b"PUB $JS.API.INFO _INBOX.agora_probe 0\r\n\r\n"
                  b"PING\r\n")
        while True:
            line = recv_line(s, buf)
            if line.startswith(b"-ERR"):
                raise RuntimeError(line.decode(errors="replace"))
            if line.startswith(b"MSG ") or line.startswith(b"HMSG "):
                parts = line.split()
                size = int(parts[-1])
                while len(buf[0]) < size + 2:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ConnectionError("connection closed by server")
                    buf[0] += chunk
                payload, buf[0] = buf[0][:size], buf[0][size + 2:]
                if line.startswith(b"HMSG "):
                    hdr = int(parts[-2])
                    payload = payload[hdr:]
                if not payload:
                    raise RuntimeError("JetStream API gave an empty answer")
                ans = json.loads(payload)
                if "error" in ans:
                    raise RuntimeError("JetStream: %s" % ans["error"])
                return
            # PONG, +OK, PING: keep reading until the API answer arrives
            if line == b"PING":
                s.sendall(b"PONG\r\n")
    finally:
        s.close()


# --- AMQP 0-9-1, only as much as a handshake needs -------------------------

def shortstr(b):
    return struct.pack("B", len(b)) + b


def longstr(b):
    return struct.pack(">I", len(b)) + b


def amqp_frame(channel, payload, ftype=1):
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + b"\xce"


def amqp_read_method(s):
    while True:
        ftype, channel, size = struct.unpack(">BHI", recv_exact(s, 7))
        payload = recv_exact(s, size)
        if recv_exact(s, 1) != b"\xce":
            raise RuntimeError("bad AMQP frame end")
        if ftype == 8:  # heartbeat
            continue
        if ftype != 1:
            raise RuntimeError("unexpected AMQP frame type %d" % ftype)
        cls, meth = struct.unpack(">HH", payload[:4])
        return cls, meth, payload[4:]


def amqp_once(port):
    s = connect(port, timeout=5.0)
    try:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        first = s.recv(1)
        if first == b"A":
            raise RuntimeError("server refused protocol version")
        if not first:
            raise ConnectionError("connection closed by server (still booting?)")
        # the first byte belongs to a frame header: read the rest of it
        hdr = first + recv_exact(s, 6)
        ftype, channel, size = struct.unpack(">BHI", hdr)
        payload = recv_exact(s, size)
        recv_exact(s, 1)
        cls, meth = struct.unpack(">HH", payload[:4])
        if (cls, meth) != (10, 10):
            raise RuntimeError("expected Connection.Start, got %d.%d" % (cls, meth))
        # Connection.Start-Ok: client-properties, mechanism, response, locale
        start_ok = (struct.pack(">HH", 10, 11) + longstr(b"") + shortstr(b"PLAIN")
                    + longstr(b"\x00guest\x00guest") + shortstr(b"en_US"))
        s.sendall(amqp_frame(0, start_ok))
        cls, meth, args = amqp_read_method(s)
        if (cls, meth) == (10, 50):
            code = struct.unpack(">H", args[:2])[0]
            raise RuntimeError("connection closed: %d %s" % (code, args[3:3 + args[2]].decode(errors="replace")))
        if (cls, meth) != (10, 30):
            raise RuntimeError("expected Connection.Tune, got %d.%d" % (cls, meth))
        channel_max, frame_max, _hb = struct.unpack(">HIH", args[:8])
        s.sendall(amqp_frame(0, struct.pack(">HHHIH", 10, 31, channel_max, frame_max, 0)))
        s.sendall(amqp_frame(0, struct.pack(">HH", 10, 40) + shortstr(b"/") + shortstr(b"") + b"\x00"))
        cls, meth, args = amqp_read_method(s)
        if (cls, meth) != (10, 41):
            raise RuntimeError("expected Connection.Open-Ok, got %d.%d" % (cls, meth))
        s.sendall(amqp_frame(0, struct.pack(">HHH", 10, 50, 200) + shortstr(b"bye") + struct.pack(">HH", 0, 0)))
        try:
            amqp_read_method(s)  # Close-Ok
        except (OSError, ConnectionError, RuntimeError):
            pass
    finally:
        s.close()


def tcp_once(port):
    connect(port).close()


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True


def wait_ready(fn, port, timeout, pid=None):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        if pid is not None and not alive(pid):
            sys.stderr.write("probe: process %d exited before 127.0.0.1:%d was ready\n" % (pid, port))
            return 3
        try:
            fn(port)
            return 0
        except (OSError, ValueError, RuntimeError, ConnectionError) as e:
            last = e
        if time.monotonic() >= deadline:
            sys.stderr.write("probe: 127.0.0.1:%d not ready after %gs: %s\n" % (port, timeout, last))
            return 1
        time.sleep(0.1)


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    cmd = argv[1]
    if cmd == "ports":
        return ports(int(argv[2]))
    if cmd == "free":
        return 0 if can_bind(int(argv[2])) else 1
    probes = {"nats": nats_once, "amqp": amqp_once, "tcp": tcp_once}
    if cmd in probes:
        timeout = float(argv[3]) if len(argv) > 3 else 60.0
        pid = int(argv[4]) if len(argv) > 4 else None
        return wait_ready(probes[cmd], int(argv[2]), timeout, pid)
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
