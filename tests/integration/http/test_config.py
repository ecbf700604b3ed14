"""Configuration errors stop a service at start with a message that names the
variable, what was expected and what was given; a taken port is a clear
error too. Nothing listens after such a start."""

import json
import os
import socket
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def run_testd(env, timeout=10):
    full = {k: v for k, v in os.environ.items() if not k.startswith("AGORA_") and k != "PORT"}
    full.update(env)
    p = subprocess.run([harness.testd_path()], env=full, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=harness.scaled(timeout))
    return p.returncode, p.stderr


def error_lines(stderr):
    out = []
    for line in stderr.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if obj.get("level") == "error":
            out.append(obj)
    return out


class Config(unittest.TestCase):
    def assertRefused(self, env, variable, fragment):
        code, err = run_testd(env)
        self.assertNotEqual(code, 0, "started with %r:\n%s" % (env, err))
        errors = error_lines(err)
        self.assertTrue(errors, "no JSON error line:\n%s" % err)
        reasons = [e for e in errors if e.get("variable") == variable]
        self.assertTrue(reasons, "no error names %s:\n%s" % (variable, err))
        self.assertIn(fragment, reasons[0].get("reason", ""), reasons[0])

    def test_bad_port(self):
        self.assertRefused({"PORT": "80a"}, "PORT",
                           'PORT: expected an integer between 0 and 65535, got "80a"')

    def test_port_out_of_range(self):
        self.assertRefused({"PORT": "70000"}, "PORT", 'got "70000"')

    def test_bad_duration(self):
        self.assertRefused({"PORT": "0", "AGORA_HTTP_HEADER_TIMEOUT": "5x"},
                           "AGORA_HTTP_HEADER_TIMEOUT", 'got "5x"')

    def test_bad_size(self):
        self.assertRefused({"PORT": "0", "AGORA_HTTP_MAX_BODY_BYTES": "lots"},
                           "AGORA_HTTP_MAX_BODY_BYTES", 'got "lots"')

    def test_bad_bool_and_log_level(self):
        self.assertRefused({"PORT": "0", "AGORA_ACCESS_LOG": "maybe"}, "AGORA_ACCESS_LOG",
                           'got "maybe"')
        self.assertRefused({"PORT": "0", "AGORA_LOG": "loud"}, "AGORA_LOG", "expected debug")

    def test_service_specific_override_is_checked(self):
        # AGORA_TESTD_WORKERS overrides AGORA_WORKERS for the service "testd".
        self.assertRefused({"PORT": "0", "AGORA_WORKERS": "4", "AGORA_TESTD_WORKERS": "zero"},
                           "AGORA_TESTD_WORKERS", 'AGORA_TESTD_WORKERS: expected')

    def test_port_in_use(self):
        # A plain socket without SO_REUSEPORT holds the port.
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        try:
            code, err = run_testd({"PORT": str(port)})
        finally:
            s.close()
        self.assertNotEqual(code, 0, err)
        self.assertTrue(any(e.get("msg") == "cannot listen" and e.get("port") == port
                            for e in error_lines(err)), err)


if __name__ == "__main__":
    unittest.main()
