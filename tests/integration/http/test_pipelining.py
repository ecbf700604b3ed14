"""Pipelining: many requests in one write get complete responses, in order."""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def batch(n, start=0):
    """n requests: inline /hello, worker /v1/items/N and POST /v1/echo mixed.
    Returns (bytes, [expected]) where expected is ("hello",) / ("item", id) /
    ("echo", obj)."""
    out, want = [], []
    for i in range(start, start + n):
        if i % 5 == 4:
            obj = {"i": i, "pad": "p" * (i % 37)}
            out.append(harness.build_request("POST", "/v1/echo",
                                             {"Content-Type": "application/json"},
                                             json.dumps(obj)))
            want.append(("echo", obj))
        elif i % 2 == 0:
            out.append(harness.build_request("GET", "/hello"))
            want.append(("hello",))
        else:
            out.append(harness.build_request("GET", "/v1/items/%d?q=n%d" % (i, i)))
            want.append(("item", str(i)))
    return b"".join(out), want


class Pipelining(harness.SharedServerTestCase):
    def check(self, c, want):
        for k, w in enumerate(want):
            r = c.read_response()
            self.assertEqual(r.status, 200, "response %d: %r" % (k, r))
            if w[0] == "hello":
                self.assertEqual(r.body, b"hello\n", "response %d" % k)
            elif w[0] == "item":
                self.assertEqual(self.assertOk(r), {"id": w[1], "q": "n" + w[1]},
                                 "response %d out of order or wrong" % k)
            else:
                self.assertEqual(self.assertOk(r), w[1], "response %d" % k)

    def test_fifty_in_one_write(self):
        c = self.connect(self.srv)
        data, want = batch(50)
        c.send(data)
        self.check(c, want)
        # Nothing more arrives, and the connection still works.
        self.assertEqual(bytes(c.buf), b"")
        r = c.get("/hello")
        self.assertEqual(r.body, b"hello\n")

    def test_pipeline_split_at_odd_places(self):
        c = self.connect(self.srv)
        data, want = batch(30, start=100)
        # Split so that request lines, headers and bodies straddle writes.
        i, step = 0, 1
        while i < len(data):
            c.send(data[i:i + step])
            i += step
            step = step * 3 % 97 + 1
            if i % 5 == 0:
                time.sleep(0.001)
        self.check(c, want)

    def test_several_pipelined_rounds(self):
        c = self.connect(self.srv)
        for rnd in range(5):
            data, want = batch(20, start=rnd * 20)
            c.send(data)
            self.check(c, want)

    def test_large_pipeline(self):
        """More pipelined input than one read (64 KiB): the rest waits while
        handlers run, and nothing is lost or reordered."""
        c = self.connect(self.srv, timeout=30)
        data, want = batch(3000)
        self.assertGreater(len(data), 128 * 1024)
        sender = threading.Thread(target=c.send, args=(data,))
        sender.start()
        try:
            self.check(c, want)
        finally:
            sender.join()
        self.assertEqual(c.get("/hello").body, b"hello\n")

    def test_pipelined_close_ends_after_its_response(self):
        """Requests after a Connection: close one are not answered."""
        c = self.connect(self.srv)
        data = (harness.build_request("GET", "/v1/items/1?q=n1")
                + harness.build_request("GET", "/v1/items/3?q=n3", {"Connection": "close"})
                + harness.build_request("GET", "/v1/items/5?q=n5"))
        c.send(data)
        self.check(c, [("item", "1"), ("item", "3")])
        rest = c.read_until_close(3)
        self.assertNotIn(b"HTTP/1.1", rest, "answered a request sent after Connection: close")


if __name__ == "__main__":
    harness.main()
