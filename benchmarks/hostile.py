#!/usr/bin/env python3
"""Hostile neighbours against a real `wattprint serve` (issue 14): each attack runs for at most
--seconds (default 20, at most 60) on a simulated 8-GPU node at 1 s sampling, while a legitimate
scraper reads /metrics every 50 ms. Printed per attack, beside the same figures for an idle run
(the reference, measured in the same invocation): the scraper's p50/p99 latency and failures,
the daemon's peak RSS, its CPU (% of one core), its peak open descriptors, the /metrics size,
whether `promtool check metrics` passed, and whether any 8-character piece of a secret appeared
in the daemon's log or /metrics.

    .venv/bin/python benchmarks/hostile.py [--seconds 20] [--only NAME ...]

Targets (issue 14): scraper p99 ≤ 10 ms and RSS ≤ 2× idle under every attack; no secret fragment
anywhere; promtool clean.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support import free_port, write_scenario  # noqa: E402

TOKEN = "em_tok_5f3c9a1e7b2d4c6e8a0b1c2d3e4f5a6b7c"  # a provider token the fake API echoes back
PASSWORD = "scraper-password-9d2f"


def fragments(secret: str, n: int = 8) -> set[str]:
    return {secret[i:i + n] for i in range(len(secret) - n + 1)}


# --- the daemon and the legitimate scraper --------------------------------------------------------

class Daemon:
    def __init__(self, tmp: Path, args: list[str], nofile: int | None = None,
                 auth: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log = tmp / f"wattprint-{self.port}.log"
        scenario = write_scenario(tmp / "sim.yaml", {"driver_version": "550.54.15", "gpus": [
            {"name": "NVIDIA H100 80GB HBM3", "idle_w": 70, "max_w": 700, "processes": []} for _ in range(8)]})

        def limits() -> None:
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "serve", f"--web.listen-address=127.0.0.1:{self.port}",
             "--sample.interval=1s", "--engines.interval=1s", "--gpu.backend=simulated",
             f"--gpu.simulation-file={scenario}", "--carbon.region=FR", *args],
            cwd=ROOT, stdout=open(self.log, "w"), stderr=subprocess.STDOUT, preexec_fn=limits)
        self.auth: dict[str, str] = auth or {}
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                self.get("/readyz", timeout=1)
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(self.log.read_text()) from None
                time.sleep(0.1)
        raise RuntimeError("not ready: " + self.log.read_text()[-2000:])

    def get(self, path: str = "/metrics", timeout: float = 10) -> bytes:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=self.auth)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read()

    def stats(self) -> tuple[float, float, int]:
        """(RSS bytes, CPU seconds, open descriptors) now."""
        pid = self.proc.pid
        rss = 0.0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = float(line.split()[1]) * 1024
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        return rss, cpu, len(os.listdir(f"/proc/{pid}/fd"))

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return self.log.read_text()


def measure(d: Daemon, seconds: float, attack_running: threading.Event) -> dict:
    lat, fails, peak = [], 0, [0.0, 0.0, 0]
    _, cpu0, _ = d.stats()
    t0 = time.time()
    while time.time() - t0 < seconds:
        s = time.perf_counter()
        try:
            d.get(timeout=10)
            lat.append((time.perf_counter() - s) * 1000)
        except OSError:
            fails += 1
        rss, _, fds = d.stats()
        peak = [max(peak[0], rss), 0.0, max(peak[2], fds)]
        time.sleep(0.05)
    _, cpu1, _ = d.stats()
    text = d.get(timeout=10).decode()
    lat.sort()
    return {"p50": statistics.median(lat) if lat else float("nan"),
            "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan"),
            "answered": len(lat), "failed": fails, "rss": peak[0], "cpu": 100 * (cpu1 - cpu0) / (time.time() - t0),
            "fds": peak[2], "size": len(text), "promtool": promtool(text), "text": text}


def promtool(text: str) -> str:
    tool = shutil.which("promtool")
    if tool is None:
        return "n/a"
    out = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True)
    return "ok" if out.returncode == 0 else "FAIL: " + (out.stdout + out.stderr).strip().split("\n")[0][:60]


# --- attackers ------------------------------------------------------------------------------------

def fake_vllm(bin_dir: Path) -> Path:
    """An executable named vllm: `vllm serve <model> --port P` serving BODY_FILE's bytes."""
    path = bin_dir / "vllm"
    path.write_text(f"""#!{sys.executable}
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
body = open(os.environ["BODY_FILE"], "rb").read() if os.environ.get("BODY_FILE") else b""
port = int(sys.argv[sys.argv.index("--port") + 1])
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
if body:
    ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
else:
    import time
    time.sleep(3600)
""")
    path.chmod(0o755)
    return path


def hostile_body(models: int) -> bytes:
    lines = ["# TYPE vllm:request_success_total counter"]
    lines += [f'vllm:request_success_total{{engine="0",finished_reason="stop",model_name="hostile-{i:06d}"}} {i}'
              for i in range(models)]
    return ("\n".join(lines) + "\n").encode()


class Attack:
    """Starts its processes or clients in start(), undoes them in stop()."""

    args: list[str] = []
    nofile: int | None = None
    auth: dict[str, str] | None = None

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, d: Daemon) -> None:
        pass

    def stop(self) -> None:
        self.stop_event.set()
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        for t in self.threads:
            t.join(5)


class Idle(Attack):
    name = "idle (reference)"


class HostileEngine(Attack):
    name = "engine: 19 MB, 250,000 model names"

    def start(self, d: Daemon) -> None:
        bin_dir = self.tmp / "bin"
        bin_dir.mkdir(exist_ok=True)
        exe = fake_vllm(bin_dir)
        body = self.tmp / "hostile.prom"
        body.write_bytes(hostile_body(250_000))
        self.procs.append(subprocess.Popen([str(exe), "serve", "hostile", "--port", str(free_port())],
                                           env={**os.environ, "BODY_FILE": str(body)}))


class ManyEngines(Attack):
    name = "engines: 40 servers of 15 MB, 300 more ports"
    args = ["--attribution.max-series=100"]

    def start(self, d: Daemon) -> None:
        bin_dir = self.tmp / "bin"
        bin_dir.mkdir(exist_ok=True)
        exe = fake_vllm(bin_dir)
        body = self.tmp / "big.prom"
        body.write_bytes(hostile_body(4000) + b"# " + b"x" * 15_000_000 + b"\n")
        for _ in range(40):
            self.procs.append(subprocess.Popen([str(exe), "serve", "m", "--port", str(free_port())],
                                               env={**os.environ, "BODY_FILE": str(body)}))
        for i in range(300):  # processes posing as servers on ports where nothing listens
            self.procs.append(subprocess.Popen([str(exe), "serve", f"m{i}", "--port", str(20000 + i)],
                                               env={k: v for k, v in os.environ.items() if k != "BODY_FILE"}))


class HalfOpen(Attack):
    name = "1,100 half-open connections, RLIMIT_NOFILE 1024"
    nofile = 1024

    def start(self, d: Daemon) -> None:
        self.socks = []
        raise_nofile(4096)
        for _ in range(1100):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", d.port))
            except BlockingIOError:
                pass
            except OSError:
                break
            self.socks.append(s)

    def stop(self) -> None:
        for s in self.socks:
            s.close()
        super().stop()


class LongCmdlines(Attack):
    name = "60 short-lived processes, 120 KB model names"

    def start(self, d: Daemon) -> None:
        bin_dir = self.tmp / "bin"
        bin_dir.mkdir(exist_ok=True)
        exe = fake_vllm(bin_dir)

        def cycle() -> None:
            for i in range(60):
                if self.stop_event.is_set():
                    return
                p = subprocess.Popen([str(exe), "serve", f"m{i}-" + "x" * 120_000, "--port", str(30000 + i)],
                                     env={k: v for k, v in os.environ.items() if k != "BODY_FILE"})
                time.sleep(0.25)
                p.terminate()
                p.wait()
        t = threading.Thread(target=cycle, daemon=True)
        t.start()
        self.threads.append(t)


class WrongPasswords(Attack):
    name = "50 clients with wrong passwords (bcrypt cost 12)"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        import bcrypt

        cfg = tmp / "web.yml"
        cfg.write_text("basic_auth_users:\n  prometheus: "
                       + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(12)).decode() + "\n")
        self.args = [f"--web.config.file={cfg}"]
        self.auth = {"Authorization": "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()}

    def start(self, d: Daemon) -> None:
        bad = {"Authorization": "Basic " + base64.b64encode(b"prometheus:guess").decode()}

        def hammer() -> None:
            while not self.stop_event.is_set():
                try:
                    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{d.port}/metrics",
                                                                  headers=bad), timeout=10).read()
                except OSError:
                    pass
        for _ in range(50):
            t = threading.Thread(target=hammer, daemon=True)
            t.start()
            self.threads.append(t)


class LeakyProvider(Attack):
    name = "provider echoing its token in errors, SIGHUP every 2 s"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                body = json.dumps({"message": "x" * 140 + f" invalid token {TOKEN} / {TOKEN[:20]}"}).encode()
                self.send_response(401)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        self.api = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.api.serve_forever, daemon=True).start()
        (tmp / "token").write_text(TOKEN + "\n")
        cfg = tmp / "wattprint.yaml"
        cfg.write_text(json.dumps({"carbon": {"providers": [{
            "type": "electricitymaps", "zone": "FR", "token_file": str(tmp / "token"),
            "base_url": f"http://127.0.0.1:{self.api.server_address[1]}", "poll_interval_s": 1}]}}))
        self.args = [f"--config.file={cfg}"]

    def start(self, d: Daemon) -> None:
        def hup() -> None:
            while not self.stop_event.wait(2.0):
                d.proc.send_signal(signal.SIGHUP)
        t = threading.Thread(target=hup, daemon=True)
        t.start()
        self.threads.append(t)

    def stop(self) -> None:
        super().stop()
        self.api.shutdown()


def raise_nofile(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


ATTACKS = [Idle, HostileEngine, ManyEngines, HalfOpen, LongCmdlines, WrongPasswords, LeakyProvider]


def run(attack_cls: type, seconds: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="wp-hostile-"))
    attack = attack_cls(tmp)
    d = Daemon(tmp, attack.args, attack.nofile, attack.auth)
    running = threading.Event()
    try:
        time.sleep(2.0)  # a few samples first
        attack.start(d)
        running.set()
        out = measure(d, seconds, running)
    finally:
        attack.stop()
        out_log = d.stop() if d.proc.poll() is None else d.log.read_text()
    seen = out_log + out.pop("text")
    out["secret"] = "LEAK" if any(f in seen for f in fragments(TOKEN) | fragments(PASSWORD)) else "none"
    out["log_lines"] = out_log.count("\n")
    out["alive"] = d.proc.returncode in (0, None, -15)
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="per attack, at most 60 (default 20)")
    ap.add_argument("--only", nargs="*", help="attack class names to run (the idle reference always runs)")
    a = ap.parse_args()
    seconds = min(60.0, a.seconds)
    raise_nofile(8192)
    chosen = [c for c in ATTACKS if c is Idle or not a.only or c.__name__ in a.only]
    rows = []
    for cls in chosen:
        print(f"… {cls.name}", file=sys.stderr, flush=True)
        rows.append((cls.name, run(cls, seconds)))
    idle_rss = rows[0][1]["rss"]
    head = f"{'attack':<52} {'p50 ms':>7} {'p99 ms':>7} {'ok/fail':>9} {'RSS MB':>7} {'×idle':>6} " \
           f"{'CPU %':>6} {'fds':>5} {'/metrics':>9} {'log':>5} promtool  secret"
    print(head)
    print("-" * len(head))
    for name, r in rows:
        print(f"{name:<52} {r['p50']:7.2f} {r['p99']:7.2f} {r['answered']:>5}/{r['failed']:<3} "
              f"{r['rss'] / 1e6:7.1f} {r['rss'] / idle_rss:6.2f} {r['cpu']:6.1f} {r['fds']:>5} "
              f"{r['size'] / 1024:8.1f}K {r['log_lines']:>5} {r['promtool']:<9} {r['secret']}"
              + ("" if r["alive"] else "  DAEMON DIED"))
    print(f"\ntargets: p99 ≤ 10 ms, RSS ≤ 2× idle ({2 * idle_rss / 1e6:.1f} MB), promtool ok, no secret; "
          f"{seconds:g} s per attack, simulated 8-GPU node, 1 s sampling")
    return 0


if __name__ == "__main__":
    sys.exit(main())
