"""`agora chaos` on the default system (config/agora.json, every component on
free ports in a temporary var directory): SQLite + NATS, or with
AGORA_TEST_STACK_STORE=postgres PostgreSQL + RabbitMQ from the harness
(tests/harness/with-servers) in place of the SQLite files and nats-server.

agora up -d starts it; agora chaos makes faults (SIGKILL and SIGSTOP of
random components, of the broker, and of PostgreSQL when it is the store)
while customers check out and people chat through the gateway, then checks
the invariants of DESIGN.md §7 and prints each (cli/workload.h):

  - every accepted order ends CONFIRMED or CANCELLED;
  - no unit oversold; nothing left reserved;
  - no charge without confirmation or refund;
  - each order's outcome notified once to its customer;
  - each acknowledged message stored once, pushed once over WebSocket.

This test asserts what a user reads: exit status 0, every invariant "ok",
faults made (the broker and database among them), everything ready again
afterwards, and no sanitizer report in any component's log. The seed is
printed; AGORA_CHAOS_SEED replays a run.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import service  # noqa: E402

CLI = os.environ["AGORA_CLI"]
SANITIZED = os.environ.get("AGORA_TEST_SANITIZED") == "1"
SCALE = 2 if SANITIZED else 1
RUN_S = float(os.environ.get("AGORA_CHAOS_SECONDS", "20")) * SCALE
POSTGRES = os.environ.get("AGORA_TEST_STACK_STORE") == "postgres"


def private_config(tmp):
    """config/agora.json with free ports; on PostgreSQL + RabbitMQ without
    nats-server."""
    with open(os.path.join(ROOT, "config", "agora.json")) as f:
        cfg = json.load(f)
    comps = []
    for c in cfg["components"]:
        if c["name"] == "nats" and POSTGRES:
            continue
        comps.append(dict(c, port=service.free_port()))
    cfg["components"] = comps
    env = cfg["env"]
    if POSTGRES:
        env["AGORA_BUS"] = os.environ["AGORA_TEST_AMQP_URL"]
        pg = os.environ["AGORA_TEST_POSTGRES_URL"].rsplit("/", 1)[0]
        env["AGORA_DB"] = "%s/agora_{service}_%s" % (pg, uuid.uuid4().hex[:6])
    env["AGORA_FILES_DIR"] = "{var}/files"
    env["AGORA_MAIL_DIR"] = "{var}/mail"
    # The gRPC servers on free ports too (not a guessed port + 100), and
    # their callers told where.
    for name in ("users", "inventory"):
        port = service.free_port()
        env["AGORA_%s_GRPC_PORT" % name.upper()] = str(port)
        env["AGORA_%s_GRPC_URL" % name.upper()] = "http://127.0.0.1:%d" % port
    cfg["readyTimeout"] = "%ds" % (40 * SCALE)
    cfg["demo"] = None  # the workload makes its own products
    path = os.path.join(tmp, "agora.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path, comps


class Chaos(unittest.TestCase):
    def test_invariants_hold_under_faults(self):
        tmp = tempfile.mkdtemp(prefix="agora-chaos-")
        var = os.path.join(tmp, "var")
        cfg, comps = private_config(tmp)
        env = dict(os.environ, NO_COLOR="1")
        for k in list(env):  # nothing of the caller's leaks into the instance
            if k.startswith("AGORA_") and k not in ("AGORA_TEST_SANITIZED", "AGORA_CHAOS_SEED"):
                del env[k]

        def agora(*args, timeout=120 * SCALE):
            return subprocess.run([CLI, "--config", cfg, "--var", var] + list(args),
                                  capture_output=True, text=True, timeout=timeout, env=env)
        try:
            r = agora("up", "-d")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            seed = os.environ.get("AGORA_CHAOS_SEED", str(int(time.time())))
            r = agora("chaos", "--duration", str(int(RUN_S)), "--concurrency", "4",
                      "--seed", seed, timeout=600 * SCALE)
            print(r.stdout, r.stderr[-3000:], flush=True)
            out = r.stdout
            self.assertEqual(r.returncode, 0, "agora chaos --seed %s failed:\n%s" % (seed, out))
            self.assertIn("agora chaos: seed %s" % seed, out)
            faults = re.findall(r"^ +\d+\.\d s  (\S+) +(kill|pause) ", out, re.M)
            self.assertGreaterEqual(len(faults), 5, faults)
            hit = {name for name, _ in faults}
            if POSTGRES:
                self.assertTrue(any(n.startswith("postgresql:") for n in hit), faults)
                self.assertTrue(any(n.startswith("rabbitmq:") for n in hit), faults)
            else:
                self.assertIn("nats", hit)
            for what in ("every accepted order ended", "no unit oversold",
                         "no charge without confirmation or refund",
                         "each order's outcome notified once",
                         "each acknowledged message stored once",
                         "each acknowledged message pushed once"):
                self.assertRegex(out, r"(?m)^  ok    " + re.escape(what))
            self.assertNotRegex(out, r"(?m)^  FAIL")
            m = re.search(r"every accepted order ended: (\d+) of \1 \((\d+) CONFIRMED, (\d+) "
                          r"CANCELLED", out)
            self.assertTrue(m and int(m.group(2)) > 0 and int(m.group(3)) > 0, out)
            # Whatever was killed was restarted: everything answers again.
            for c in comps:
                if c["name"] == "nats":
                    continue
                with urllib.request.urlopen("http://127.0.0.1:%d/ready" % c["port"],
                                            timeout=5) as rep:
                    self.assertEqual(rep.status, 200, c["name"])
        finally:
            r = agora("down")
            logs = os.path.join(var, "log")
            reports = []
            for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
                with open(os.path.join(logs, name), errors="replace") as f:
                    text = f.read()
                if "ERROR: AddressSanitizer" in text or "runtime error:" in text:
                    reports.append("%s:\n%s" % (name, text[-4000:]))
            shutil.rmtree(tmp, ignore_errors=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(reports, [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
