#!/usr/bin/env python3
"""Benchmark: the daemon's own cost against CodeCarbon's tracker, sampling the same host at 1 s.

Starts, side by side on this host and for the same window:

* `wattprint serve --sample.interval=1s` on a simulated 8-GPU node (--gpu.backend=simulated, 3
  processes per GPU, as benchmarks/scrape_latency.py), reading the real /proc;
* CodeCarbon's `OfflineEmissionsTracker(country_iso_code=…, measure_power_secs=1,
  save_to_file=False, log_level="error")`, started in a subprocess of its own (a separate venv,
  .venv-codecarbon, because of its dependencies) that does nothing else.

After a warm-up, both processes are measured the same way, subtracting nothing: CPU as the
growth of utime+stime+cutime+cstime in /proc/<pid>/stat over the window (% of one core), RSS as
VmRSS from /proc/<pid>/status sampled every second (mean, max) and VmHWM (peak) at the end.
Neither is scraped during the window. The load average and the host's CPU busy share are
recorded at both ends, since other jobs may share the machine. Prints a table; writes JSON to
benchmarks/results/overhead-<date>.json (or --json PATH).

    python3 -m venv .venv-codecarbon && .venv-codecarbon/bin/pip install codecarbon==3.3.2
    .venv/bin/python benchmarks/overhead.py [--window 120] [--warmup 10] [--country GBR] [--processes 200]

``--processes N`` starts N extra idle processes (``sleep``) on the host for the whole run, as a
busy inference node has (workers, sidecars, shells): both tools see them in /proc.

What each side does in that second is not the same work: Wattprint reads 8 (simulated) GPUs,
every process in /proc, attributes energy per endpoint and renders /metrics; CodeCarbon reads
what it finds on this host (here: no GPU, no RAPL, so its CPU-load/TDP model and RAM model) and
keeps one total. The comparison is of what each costs a host to run at 1 s, as shipped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from support import parse_metrics, start_daemon, value, write_scenario  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
CODECARBON_PY = ROOT / ".venv-codecarbon" / "bin" / "python"

# Runs in .venv-codecarbon: start the tracker, say "ready <version>", track until stdin closes.
CODECARBON_CHILD = r"""
import sys
import codecarbon
from codecarbon import OfflineEmissionsTracker
t = OfflineEmissionsTracker(country_iso_code=sys.argv[1], measure_power_secs=float(sys.argv[2]),
                            save_to_file=False, log_level="error")
t.start()
print("ready", codecarbon.__version__, flush=True)
sys.stdin.read()
print("emissions_kg", t.stop(), flush=True)
"""

# Flags that keep the daemon on this machine and off anything that is not 127.0.0.1: no cloud
# metadata lookup, no Kubernetes API, no engine scraping.
SAFE_FLAGS = ("--carbon.region=FR", "--carbon.detect-region=off", "--kubernetes.enabled=off",
              "--engines.enabled=false", "--log.level=warn")


# issue 11's targets: with 200 extra processes, at 1 s sampling, no kubelet socket
TARGETS = {"cpu_percent_of_one_core": 0.5, "cpu_ratio_to_codecarbon": 1.0, "rss_mb": 50.0}


# --- measuring a process the same way, whatever it is -------------------------------------------

def cpu_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime of ``pid`` (its threads and its reaped children)."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def n_threads(pid: int) -> int:
    return status_kb(pid, "Threads")


def host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole host from /proc/stat."""
    v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return sum(v) - v[3] - v[4], sum(v)


class Watch:
    """CPU and RSS of a set of processes over one window, all sampled together."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.rss: dict[str, list[int]] = {k: [] for k in pids}

    def run(self, window_s: float, tick=None) -> dict:
        load0, host0 = os.getloadavg(), host_cpu()
        c0 = {k: cpu_ticks(p) for k, p in self.pids.items()}
        t0 = time.monotonic()
        nxt = t0
        while True:
            for k, p in self.pids.items():
                self.rss[k].append(status_kb(p, "VmRSS"))
            if tick:
                tick()
            nxt += 1.0
            if nxt > t0 + window_s:
                break
            time.sleep(max(0.0, nxt - time.monotonic()))
        time.sleep(max(0.0, t0 + window_s - time.monotonic()))
        t1 = time.monotonic()
        c1 = {k: cpu_ticks(p) for k, p in self.pids.items()}
        load1, host1 = os.getloadavg(), host_cpu()
        span = t1 - t0
        out = {"window_s": span,
               "loadavg_start": list(load0), "loadavg_end": list(load1),
               "host_cpu_busy_percent": 100 * (host1[0] - host0[0]) / max(1, host1[1] - host0[1]),
               "host_cpus": os.cpu_count(), "procs": {}}
        for k, p in self.pids.items():
            rss = self.rss[k]
            out["procs"][k] = {
                "pid": p,
                "cpu_seconds": (c1[k] - c0[k]) / CLK_TCK,
                "cpu_percent_of_one_core": 100 * (c1[k] - c0[k]) / CLK_TCK / span,
                "rss_mb_mean": sum(rss) / len(rss) / 1024, "rss_mb_max": max(rss) / 1024,
                "rss_mb_end": status_kb(p, "VmRSS") / 1024, "hwm_mb": status_kb(p, "VmHWM") / 1024,
                "threads": n_threads(p),
            }
        return out


def source_digest() -> str:
    """sha256 of exporter/**/*.py (paths and contents): which code a result file measured."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted((ROOT / "exporter").rglob("*.py")):
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def fmt_load(w: dict) -> str:
    a, b = w["loadavg_start"], w["loadavg_end"]
    return (f"load average {a[0]:.2f} {a[1]:.2f} {a[2]:.2f} → {b[0]:.2f} {b[1]:.2f} {b[2]:.2f} "
            f"on {w['host_cpus']} CPUs; host CPU busy {w['host_cpu_busy_percent']:.1f} % over the window")


def scenario(n_gpus: int, procs_per_gpu: int) -> dict:
    """The node of benchmarks/scrape_latency.py: H100s, 3 processes each at 10/15/20 % SM."""
    return {"gpus": [{"name": "NVIDIA H100 80GB HBM3", "idle_w": 70, "max_w": 700,
                      "processes": [{"pid": 100000 + g * 10 + p, "memory_gib": 8, "sm_util": 10 + 5 * p}
                                    for p in range(procs_per_gpu)]} for g in range(n_gpus)]}


def start_codecarbon(country: str, interval: float, cwd: Path) -> tuple[subprocess.Popen, str]:
    if not CODECARBON_PY.exists():
        raise SystemExit(f"{CODECARBON_PY} missing: python3 -m venv .venv-codecarbon && "
                         ".venv-codecarbon/bin/pip install codecarbon==3.3.2")
    p = subprocess.Popen([str(CODECARBON_PY), "-c", CODECARBON_CHILD, country, str(interval)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True, cwd=cwd, env={**os.environ, "CODECARBON_LOG_LEVEL": "error"})
    line = p.stdout.readline().split()
    if not line or line[0] != "ready":
        p.kill()
        raise SystemExit("CodeCarbon tracker did not start")
    return p, line[1]


def stop_codecarbon(p: subprocess.Popen) -> None:
    try:
        p.stdin.close()
        p.wait(15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--window", type=float, default=120, help="measurement window, s (default 120)")
    ap.add_argument("--warmup", type=float, default=10, help="seconds after start-up before the window")
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--country", default="GBR", help="CodeCarbon's country_iso_code (default GBR)")
    ap.add_argument("--processes", type=int, default=0,
                    help="extra idle processes to start on the host for the run (default 0)")
    ap.add_argument("--json", help="write here instead of benchmarks/results/overhead-<date>.json")
    args = ap.parse_args()
    out = Path(args.json) if args.json else ROOT / "benchmarks" / "results" / f"overhead-{dt.date.today()}.json"

    idle = [subprocess.Popen(["sleep", str(int(args.window + args.warmup + 120))],
                             stdin=subprocess.DEVNULL) for _ in range(args.processes)]
    try:
        return measure(args, out)
    finally:
        for p in idle:
            p.kill()
        for p in idle:
            p.wait()


def measure(args: argparse.Namespace, out: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        sim = write_scenario(tmpd / "sim.yaml", scenario(args.gpus, 3))
        d = start_daemon(tmpd, "--sample.interval=1s", "--gpu.backend=simulated",
                         f"--gpu.simulation-file={sim}", *SAFE_FLAGS)
        cc, cc_version = None, ""
        try:
            (tmpd / "cc").mkdir()
            cc, cc_version = start_codecarbon(args.country, 1.0, tmpd / "cc")
            print(f"warm-up {args.warmup:g} s, then measuring both for {args.window:g} s …", file=sys.stderr)
            time.sleep(args.warmup)
            m0 = parse_metrics(d.get())
            w = Watch({"wattprint": d.proc.pid, "codecarbon": cc.pid}).run(args.window)
            m1 = parse_metrics(d.get())
        finally:
            d.stop()
            if cc is not None:
                stop_codecarbon(cc)

    samples = value(m1, "wattprint_samples_total") - value(m0, "wattprint_samples_total")
    res = {
        "date": str(dt.date.today()), "benchmark": "overhead", "sample_interval_s": 1.0,
        "gpus_simulated": args.gpus, "processes_per_gpu": 3, "extra_idle_processes": args.processes, "country_iso_code": args.country,
        "codecarbon_version": cc_version, "python": platform.python_version(),
        "exporter_sha256": source_digest(),
        "kernel": platform.release(), "node_exporter_installed": bool(shutil.which("prometheus-node-exporter")),
        "wattprint_samples_in_window": samples,
        "wattprint_last_sample_duration_s": value(m1, "wattprint_sample_duration_seconds"),
        "wattprint_processes_tracked": value(m1, "wattprint_processes_tracked"),
        **w,
        "targets": TARGETS,
    }
    wp, cb = res["procs"]["wattprint"], res["procs"]["codecarbon"]
    print(f"\nOwn cost at 1 s sampling, {w['window_s']:.1f} s window, measured identically "
          f"(/proc/<pid>/stat and /status)")
    print(f"{'':<44}{'CPU % of 1 core':>16}{'RSS mean MB':>13}{'RSS max MB':>12}{'peak (HWM) MB':>15}{'threads':>9}")
    for name, r in (("wattprint serve (8 simulated GPUs, /proc)", wp),
                    (f"CodeCarbon {cc_version} OfflineEmissionsTracker", cb)):
        print(f"{name:<44}{r['cpu_percent_of_one_core']:>16.2f}{r['rss_mb_mean']:>13.1f}{r['rss_mb_max']:>12.1f}"
              f"{r['hwm_mb']:>15.1f}{r['threads']:>9}")
    print(f"ratio wattprint/codecarbon: CPU {wp['cpu_percent_of_one_core'] / max(1e-9, cb['cpu_percent_of_one_core']):.2f}, "
          f"RSS {wp['rss_mb_mean'] / cb['rss_mb_mean']:.2f}")
    print(f"host: {args.processes} extra idle processes; "
          f"wattprint: {samples:g} samples in the window, {res['wattprint_processes_tracked']:g} processes "
          f"tracked, last sample took {1000 * res['wattprint_last_sample_duration_s']:.2f} ms")
    print(fmt_load(w))
    ratio = wp["cpu_percent_of_one_core"] / max(1e-9, cb["cpu_percent_of_one_core"])
    met = {"cpu": wp["cpu_percent_of_one_core"] <= TARGETS["cpu_percent_of_one_core"],
           "ratio": ratio <= TARGETS["cpu_ratio_to_codecarbon"], "rss": wp["rss_mb_max"] <= TARGETS["rss_mb"]}
    res["targets_met"] = met
    print(f"targets: ≤ {TARGETS['cpu_percent_of_one_core']:g} % of one core ({'met' if met['cpu'] else 'NOT met'}), "
          f"CPU ≤ {TARGETS['cpu_ratio_to_codecarbon']:g}× CodeCarbon's ({'met' if met['ratio'] else 'NOT met'}), "
          f"≤ {TARGETS['rss_mb']:g} MB RSS ({'met' if met['rss'] else 'NOT met'})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
