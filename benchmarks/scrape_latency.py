#!/usr/bin/env python3
"""Benchmark: /metrics latency and the daemon's own cost, against Debian's node exporter.

Starts `wattprint serve` at a 1 s sample interval on a simulated 8-GPU node (--gpu.backend=
simulated, 3 processes per GPU) and `prometheus-node-exporter` on 127.0.0.1, scrapes each N times
over one keep-alive connection (as Prometheus does), then watches the daemon for --cpu-seconds
without scraping to measure its CPU (% of one core) and RSS. Prints a table; --json writes one.

    .venv/bin/python benchmarks/scrape_latency.py [--scrapes 2000] [--cpu-seconds 60]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support import free_port, start_daemon, write_scenario  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def scenario(n_gpus: int, procs_per_gpu: int) -> dict:
    return {"gpus": [{"name": "NVIDIA H100 80GB HBM3", "idle_w": 70, "max_w": 700,
                      "processes": [{"pid": 100000 + g * 10 + p, "memory_gib": 8, "sm_util": 10 + 5 * p}
                                    for p in range(procs_per_gpu)]} for g in range(n_gpus)]}


def scrape_times(port: int, path: str, n: int) -> tuple[list[float], int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times, size = [], 0
    for i in range(n + 20):
        t0 = time.perf_counter()
        conn.request("GET", path, headers={"Accept": "text/plain"})
        body = conn.getresponse().read()
        dt = time.perf_counter() - t0
        if i >= 20:  # warm-up excluded
            times.append(dt)
            size = len(body)
    conn.close()
    return times, size


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=1000)[int(q * 1000) - 1] if len(xs) > 1 else xs[0]


def cpu_ticks(pid: int) -> int:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_node_exporter(port: int) -> subprocess.Popen | None:
    exe = shutil.which("prometheus-node-exporter")
    if not exe:
        return None
    p = subprocess.Popen([exe, f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/")
            return p
        except OSError:
            time.sleep(0.05)
    return p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scrapes", type=int, default=2000, help="scrapes per target (default 2000)")
    ap.add_argument("--cpu-seconds", type=float, default=60, help="window for the CPU/RSS figure (default 60)")
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        sim = write_scenario(tmpd / "sim.yaml", scenario(args.gpus, 3))
        d = start_daemon(tmpd, "--sample.interval=1s", "--gpu.backend=simulated",
                         f"--gpu.simulation-file={sim}", "--log.level=warn")
        ne_port = free_port()
        ne = start_node_exporter(ne_port)
        try:
            time.sleep(2)
            print(f"scraping wattprint {args.scrapes}× …", file=sys.stderr)
            w_times, w_bytes = scrape_times(d.port, "/metrics", args.scrapes)
            n_times, n_bytes = ([], 0)
            if ne:
                print(f"scraping node exporter {args.scrapes}× …", file=sys.stderr)
                n_times, n_bytes = scrape_times(ne_port, "/metrics", args.scrapes)
            print(f"measuring the daemon's CPU over {args.cpu_seconds:g} s (no scrapes) …", file=sys.stderr)
            t0, c0 = time.monotonic(), cpu_ticks(d.proc.pid)
            time.sleep(args.cpu_seconds)
            t1, c1 = time.monotonic(), cpu_ticks(d.proc.pid)
            cpu_pct = 100 * (c1 - c0) / CLK_TCK / (t1 - t0)
            rss = rss_mb(d.proc.pid)
            samples = d.get().count("\n")
        finally:
            d.stop()
            if ne:
                ne.terminate()
                ne.wait()

    res = {
        "gpus": args.gpus, "scrapes": args.scrapes,
        "wattprint_p50_ms": 1000 * statistics.median(w_times), "wattprint_p99_ms": 1000 * pct(w_times, 0.99),
        "wattprint_bytes": w_bytes, "wattprint_lines": samples,
        "node_exporter_p50_ms": 1000 * statistics.median(n_times) if n_times else None,
        "node_exporter_p99_ms": 1000 * pct(n_times, 0.99) if n_times else None,
        "node_exporter_bytes": n_bytes or None,
        "daemon_cpu_percent_of_one_core": cpu_pct, "daemon_rss_mb": rss, "sample_interval_s": 1.0,
    }
    print(f"\n/metrics latency, {args.scrapes} sequential scrapes on 127.0.0.1 (keep-alive), "
          f"simulated {args.gpus}-GPU node")
    print(f"{'target':<28}{'p50 ms':>9}{'p99 ms':>9}{'bytes':>9}")
    print(f"{'wattprint serve':<28}{res['wattprint_p50_ms']:>9.3f}{res['wattprint_p99_ms']:>9.3f}{w_bytes:>9}")
    if n_times:
        print(f"{'prometheus-node-exporter':<28}{res['node_exporter_p50_ms']:>9.3f}"
              f"{res['node_exporter_p99_ms']:>9.3f}{n_bytes:>9}")
        print(f"ratio wattprint/node-exporter: p50 {res['wattprint_p50_ms'] / res['node_exporter_p50_ms']:.2f}, "
              f"p99 {res['wattprint_p99_ms'] / res['node_exporter_p99_ms']:.2f}")
    else:
        print("prometheus-node-exporter not installed: no reference figure (apt-get install prometheus-node-exporter)")
    print(f"\ndaemon at 1 s sampling, {args.cpu_seconds:g} s window: CPU {cpu_pct:.2f}% of one core, "
          f"RSS {rss:.1f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
