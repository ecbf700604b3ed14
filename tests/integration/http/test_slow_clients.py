"""Clients that read slowly, read nothing, or half-close: a steady reader gets
its whole answer however long it takes (the idle and write timeouts count
silence, not transfer time); a client that reads nothing cannot make the
server buffer without bound, on worker routes too; a half-closed client still
gets all of its answer."""

import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

MiB = 1 << 20


def slow_read(sock, want, seconds):
    """Reads until `want` bytes of body arrived after the head (or EOF),
    spreading the reading over about `seconds`. Returns body bytes read."""
    sock.settimeout(harness.scaled(10))
    data = bytearray()
    head_end = -1
    step = 64 * 1024
    delay = seconds / max(1, want // step)
    while True:
        chunk = sock.recv(step)
        if not chunk:
            break
        data += chunk
        if head_end < 0:
            head_end = data.find(b"\r\n\r\n")
        if head_end >= 0 and len(data) - head_end - 4 >= want:
            break
        time.sleep(delay)
    return (len(data) - head_end - 4) if head_end >= 0 else 0


class SlowClients(harness.ServerTestCase):
    def test_steady_slow_download_outlives_idle_and_write_timeouts(self):
        srv = self.start_server(AGORA_HTTP_IDLE_TIMEOUT="1s", AGORA_HTTP_WRITE_TIMEOUT="1s")
        size = 16 * MiB
        with harness.Conn(srv.port) as c:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            c.send(harness.build_request("GET", "/v1/big?bytes=%d" % size))
            got = slow_read(c.sock, size, 3.0)
        self.assertEqual(got, size, "a steadily read 16 MiB answer was cut at %d bytes" % got)

    def test_steady_slow_stream_outlives_write_timeout(self):
        srv = self.start_server(AGORA_HTTP_WRITE_TIMEOUT="1s")
        n, size = 8, 1000000
        with harness.Conn(srv.port) as c:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            c.send(harness.build_request("GET", "/v1/stream?n=%d&size=%d" % (n, size),
                                         {"Connection": "close"}))
            raw = bytearray()
            c.sock.settimeout(harness.scaled(10))
            while True:
                chunk = c.sock.recv(64 * 1024)
                if not chunk:
                    break
                raw += chunk
                time.sleep(0.01)
        body = raw[raw.find(b"\r\n\r\n") + 4:]
        # The chunked framing ends with the last chunk: the stream was complete.
        self.assertTrue(body.endswith(b"0\r\n\r\n"), "stream cut short (%d bytes)" % len(body))
        self.assertGreater(len(body), n * size)

    def test_half_closed_client_gets_the_whole_answer(self):
        srv = self.start_server()
        size = 20 * MiB
        with harness.Conn(srv.port) as c:
            c.send(harness.build_request("GET", "/v1/big?bytes=%d" % size))
            c.sock.shutdown(socket.SHUT_WR)
            got = slow_read(c.sock, size, 0.5)
        self.assertEqual(got, size, "half-closed client got %d of %d bytes" % (got, size))

    def test_pipelining_client_that_reads_nothing_is_bounded_on_worker_routes(self):
        srv = self.start_server(AGORA_HTTP_WRITE_TIMEOUT="20s")
        base = srv.rss_bytes()
        c = harness.Conn(srv.port)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        req = harness.build_request("GET", "/v1/big?bytes=100000")
        stop = threading.Event()

        def flood():
            # Sends until the server stops reading (sendall then blocks).
            c.sock.settimeout(0.5)
            try:
                while not stop.is_set():
                    c.sock.sendall(req * 16)
            except OSError:
                pass

        t = threading.Thread(target=flood, daemon=True)
        t.start()
        time.sleep(harness.scaled(3))
        grown = srv.rss_bytes() - base
        stop.set()
        t.join(harness.scaled(5))
        c.reset()
        self.assertLess(grown, 48 * MiB,
                        "server grew %d MiB for a client that reads nothing" % (grown // MiB))
        with harness.Conn(srv.port) as n:
            self.assertEqual(n.get("/hello").status, 200)


if __name__ == "__main__":
    harness.main()
