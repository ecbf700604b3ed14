"""Middleware runs before every handler, on worker and inline routes alike: it
can answer on its own (the handler never runs) or pass values to the handler."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


class Middleware(harness.SharedServerTestCase):
    def test_value_reaches_the_handler(self):
        c = self.connect(self.srv)
        data = self.assertOk(c.get("/v1/whoami"))
        self.assertEqual(data["middleware"], "saw /v1/whoami")

    def test_middleware_answers_on_worker_route(self):
        c = self.connect(self.srv)
        r = c.get("/v1/items/1", headers={"X-Test-Block": "1"})
        self.assertEnvelopeError(r, 403, "FORBIDDEN")
        # The connection stays usable after a middleware answer.
        self.assertOk(c.get("/v1/items/2"))

    def test_middleware_answers_on_inline_route(self):
        c = self.connect(self.srv)
        r = c.get("/hello", headers={"X-Test-Block": "1"})
        self.assertEnvelopeError(r, 403, "FORBIDDEN")


if __name__ == "__main__":
    harness.main()
