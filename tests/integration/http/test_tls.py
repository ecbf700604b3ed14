#!/usr/bin/env python3
"""TLS termination (AGORA_TLS_CERT / AGORA_TLS_KEY): the same server over
TLS, as a client that checks the certificate sees it. Any service, the
gateway included, terminates TLS this way."""
import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def make_cert(directory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agora-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


class TLS(harness.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="agora-tls-")
        cls.cert, cls.key = make_cert(cls.tmp)
        cls.ctx = ssl.create_default_context(cafile=cls.cert)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def tls_conn(self, srv):
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s = self.ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        self.addCleanup(s.close)
        return s

    @staticmethod
    def read_response(s):
        f = s.makefile("rb")
        status = f.readline().decode()
        headers = {}
        while True:
            line = f.readline().decode()
            if line in ("\r\n", ""):
                break
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        body = f.read(int(headers.get("content-length", "0")))
        return int(status.split()[1]), headers, body

    def test_requests_over_tls_with_keepalive(self):
        srv = self.start_server(AGORA_TLS_CERT=self.cert, AGORA_TLS_KEY=self.key)
        s = self.tls_conn(srv)
        self.assertIn(s.version(), ("TLSv1.2", "TLSv1.3"))
        for _ in range(3):  # one connection, several requests
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            st, h, body = self.read_response(s)
            self.assertEqual((st, body), (200, b"hello\n"))
        payload = json.dumps({"msg": "é" * 5000}).encode()
        s.sendall(b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
        st, h, body = self.read_response(s)
        self.assertEqual(st, 200)
        self.assertEqual(json.loads(body)["data"], {"msg": "é" * 5000})

    def test_large_body_over_tls(self):
        srv = self.start_server(AGORA_TLS_CERT=self.cert, AGORA_TLS_KEY=self.key)
        s = self.tls_conn(srv)
        n = 8 * 1024 * 1024
        s.sendall(b"GET /v1/big?bytes=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
        st, h, body = self.read_response(s)
        self.assertEqual(st, 200)
        self.assertEqual(len(body), n)
        self.assertEqual(body.count(b"y"), n)

    def test_plain_http_to_a_tls_port_gets_no_http(self):
        srv = self.start_server(AGORA_TLS_CERT=self.cert, AGORA_TLS_KEY=self.key)
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        self.addCleanup(raw.close)
        raw.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        try:
            while True:
                chunk = raw.recv(4096)
                if not chunk:
                    break
                got += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        self.assertFalse(got.startswith(b"HTTP/"), got[:80])
        # the server is fine afterwards
        s = self.tls_conn(srv)
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(self.read_response(s)[0], 200)

    def test_unusable_certificate_stops_the_start(self):
        env = dict(os.environ, AGORA_TLS_CERT=os.path.join(self.tmp, "missing.pem"),
                   AGORA_TLS_KEY=self.key, PORT="0")
        p = subprocess.run([harness.testd_path()], env=env, capture_output=True, text=True,
                           timeout=harness.scaled(20))
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("TLS certificate or key not usable", p.stdout + p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
