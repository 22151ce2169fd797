#!/usr/bin/env python3
"""Benchmark: how Wattprint's per-sample cost grows with GPUs, processes and endpoints.

Each configuration is a fresh `wattprint serve --sample.interval=1s` on a simulated node
(--gpu.backend=simulated) that reads a *fixture* procfs tree (--path.procfs, built with
tests/support.make_procfs), so the process count is chosen, not whatever this host runs:

* E endpoints: E vLLM API servers (`vllm serve org/model-<e> --port <8000+e>`), distinct ports,
  so each is its own endpoint (`vllm-<port>`);
* GPU processes: max(3, ceil(E/G)) per GPU, each a renamed `VLLM::EngineCore` worker whose parent
  is one of the servers (round-robin, so every endpoint holds a GPU), referenced by pid from the
  simulated GPUs' process lists (8 GiB and 10–30 % SM each);
* the rest up to N processes: half kernel threads (no command line, parent 2), half user
  processes (`python3 /opt/app/worker.py --id=<i>`), plus init and kthreadd.

A ticker process forked by this script adds one clock tick of CPU time to every process (and
the matching busy time to the tree's /proc/stat) every second, atomically (write + rename, on
/dev/shm), so every process has a CPU share in every sample — the worst case for attribution.
Reading a fixture file costs the daemon a little less than reading the kernel's /proc/<pid>/stat
(here ~16 against ~21 µs a process), so the per-process figures are a slight underestimate.
Engine scraping is off (--engines.enabled=false) and so is everything that could leave 127.0.0.1
(cloud metadata, Kubernetes).

Per configuration, after a warm-up: the daemon's CPU (utime+stime growth in /proc/<pid>/stat,
% of one core) and RSS over --window seconds while /metrics is scraped every 2 s with gzip (as a
Prometheus would; those scrapes also give the average of wattprint_sample_duration_seconds, one
value per sample they see); then 300 keep-alive scrapes without gzip, one every --scrape-gap
(33 ms: 10 s, so they meet ~10 samples at random phases, as a real scraper does; a back-to-back
burst of 0.15 s meets at most one, and its p99 is then luck) for p50/p99 latency and the
/metrics size. Debian's prometheus-node-exporter is scraped the same way once, as the
reference. Three sweeps around the base (8 GPUs, 200 processes, 4 endpoints): GPUs 1, 8, 16;
processes 50, 100, 200, 500; endpoints 4, 8, 16, 32, 64. Each sweep gets a least-squares line:
the cost per added GPU, process and endpoint.

Writes benchmarks/results/scaling-<date>.{json,md,png} (the plot needs matplotlib in .venv).

    .venv/bin/python benchmarks/scaling.py [--window 30] [--warmup 6] [--scrapes 300] [--quick]
    .venv/bin/python benchmarks/scaling.py --from-json benchmarks/results/scaling-<date>.json  # re-plot
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import http.client
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from overhead import SAFE_FLAGS, Watch, source_digest  # noqa: E402
from scrape_latency import pct, start_node_exporter  # noqa: E402
from support import free_port, make_procfs, parse_metrics, start_daemon, stat_line, value, write_scenario  # noqa: E402

BASE = {"gpus": 8, "procs": 200, "endpoints": 4}
SWEEPS = {"gpus": [1, 8, 16], "procs": [50, 100, 200, 500], "endpoints": [4, 8, 16, 32, 64]}
NCPU = 64            # CPUs in the fixture's /proc/stat (room for every process's tick)
GIB = 1024**3


@dataclass(frozen=True)
class Config:
    gpus: int
    procs: int
    endpoints: int

    @property
    def per_gpu(self) -> int:
        return max(3, math.ceil(self.endpoints / self.gpus))

    @property
    def gpu_procs(self) -> int:
        return self.per_gpu * self.gpus

    def label(self) -> str:
        return f"{self.gpus} GPUs, {self.procs} procs, {self.endpoints} endpoints"


# --- the fixture node ------------------------------------------------------------------------------

def build_node(cfg: Config, root: Path) -> tuple[dict[int, dict], dict]:
    """(procs for make_procfs, simulated-GPU scenario) of one configuration."""
    fillers = cfg.procs - cfg.endpoints - cfg.gpu_procs
    if fillers < 2:
        raise SystemExit(f"{cfg.label()}: {cfg.endpoints} servers + {cfg.gpu_procs} GPU workers "
                         f"leave no room for init and kthreadd")
    procs: dict[int, dict] = {
        1: {"comm": "systemd", "ppid": 0, "cmdline": ["/sbin/init"], "cgroup": "0::/init.scope\n"},
        2: {"comm": "kthreadd", "ppid": 0, "cmdline": []},
    }
    for i in range(fillers - 2):
        if i % 2:
            procs[3000 + i] = {"comm": "python3", "ppid": 1,
                               "cmdline": ["/usr/bin/python3", "/opt/app/worker.py", f"--id={i}"],
                               "cgroup": "0::/system.slice/app.service\n"}
        else:
            procs[3000 + i] = {"comm": f"kworker/{i % NCPU}:{i}", "ppid": 2, "cmdline": [], "cgroup": "0::/\n"}
    servers = []
    for e in range(cfg.endpoints):
        pid = 10000 + e
        servers.append(pid)
        procs[pid] = {"comm": "vllm", "ppid": 1,
                      "cmdline": ["/usr/bin/python3", "/usr/local/bin/vllm", "serve", f"org/model-{e}",
                                  "--port", str(8000 + e)],
                      "cgroup": f"0::/system.slice/vllm-{e}.service\n"}
    gpus = []
    k = 0
    for g in range(cfg.gpus):
        plist = []
        for j in range(cfg.per_gpu):
            pid = 20000 + k
            procs[pid] = {"comm": "VLLM::EngineCor", "ppid": servers[k % cfg.endpoints],
                          "cmdline": ["VLLM::EngineCore"], "cgroup": procs[servers[k % cfg.endpoints]]["cgroup"]}
            plist.append({"pid": pid, "memory_gib": 8, "sm_util": 10 + 10 * (j % 3)})
            k += 1
        gpus.append({"name": "NVIDIA H100 80GB HBM3", "idle_w": 70, "max_w": 700, "processes": plist})
    assert len(procs) == cfg.procs, (len(procs), cfg)
    for p in procs.values():
        p["ticks"] = 1000
    return procs, {"gpus": gpus}


class Ticker:
    """Every second: +1 tick of CPU time to every process, and the matching busy time to stat.

    It runs in a process of its own (forked), not a thread of this one: rewriting 500 files holds
    this interpreter's GIL for tens of milliseconds, which would delay the scrapes it times."""

    def __init__(self, root: Path, procs: dict[int, dict]) -> None:
        self.root, self.procs = root, procs
        self.busy, self.idle = 0, 0
        ctx = multiprocessing.get_context("fork")
        self._stop = ctx.Event()
        self._proc = ctx.Process(target=self.run, daemon=True)

    def start(self) -> None:
        self._proc.start()

    def close(self) -> None:
        self._stop.set()
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()

    @staticmethod
    def _put(path: Path, text: str) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)  # a reader sees the old file or the new one, never half

    def tick(self) -> None:
        for pid, p in self.procs.items():
            p["ticks"] += 1
            self._put(self.root / str(pid) / "stat",
                      stat_line(pid, p["comm"], p["ppid"], p["ticks"], p.get("start", 100)))
        self.busy += len(self.procs) + 20
        self.idle += NCPU * 100 - len(self.procs) - 20
        per = "".join(f"cpu{i} 0 0 0 0 0 0 0 0 0 0\n" for i in range(NCPU))
        self._put(self.root / "stat", f"cpu  {self.busy} 0 0 {self.idle} 0 0 0 0 0 0\n" + per)

    def run(self) -> None:
        nxt = time.monotonic()
        while not self._stop.is_set():
            self.tick()
            nxt += 1.0
            self._stop.wait(max(0.0, nxt - time.monotonic()))


# --- one configuration -------------------------------------------------------------------------------

def scrape(conn: http.client.HTTPConnection, gz: bool) -> bytes:
    conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"} if gz else {})
    body = conn.getresponse().read()
    return gzip.decompress(body) if gz else body


# The fixture lives on tmpfs where there is one: rewriting a file on ext4 costs ~1 ms of CPU (the
# journal), on tmpfs ~80 µs, and the ticker must not load the machine it measures.
FIXTURE_DIR = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


_LAST = re.compile(rb"\nwattprint_last_sample_timestamp_seconds (\S+)")
_DUR = re.compile(rb"\nwattprint_sample_duration_seconds (\S+)")


def scrape_paced(port: int, n: int, gap_s: float) -> tuple[list[float], int, list[tuple[float, float, float]]]:
    """``n`` scrapes over one keep-alive connection, one every ``gap_s`` (after 20 unmeasured).

    Returns the latencies, the body size and, per scrape of a Wattprint, (wall time it started,
    last sample's end wall time, last sample's duration) for :func:`split_by_sampling`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times, size, marks = [], 0, []
    nxt = time.monotonic()
    for i in range(n + 20):
        wall, t0 = time.time(), time.perf_counter()
        conn.request("GET", "/metrics", headers={"Accept": "text/plain"})
        body = conn.getresponse().read()
        if i >= 20:
            times.append(time.perf_counter() - t0)
            size = len(body)
            last, dur = _LAST.search(body), _DUR.search(body)
            if last and dur:
                marks.append((wall, float(last.group(1)), float(dur.group(1))))
            nxt += gap_s
            time.sleep(max(0.0, nxt - time.monotonic()))
        else:
            nxt = time.monotonic()
    conn.close()
    return times, size, marks


def split_by_sampling(times: list[float], marks: list[tuple[float, float, float]],
                      interval_s: float = 1.0, render_margin_s: float = 0.005) -> dict:
    """Which scrapes overlapped a sample? Samples start on a fixed grid (absolute deadlines every
    ``interval_s``), each at its end time minus its duration; a scrape overlapped one when it ran
    between a start and start + the median duration + ``render_margin_s`` (rendering comes after
    the duration is taken). The sampler holds the GIL for most of that time."""
    if len(marks) != len(times) or not marks:
        return {}
    starts = sorted(last - dur for _w, last, dur in marks)
    ref = starts[0]
    phase = ref + statistics.median(((s - ref + interval_s / 2) % interval_s) - interval_s / 2 for s in starts)
    busy = statistics.median(dur for *_x, dur in marks) + render_margin_s
    during, outside = [], []
    for lat, (wall, _l, _d) in zip(times, marks):
        off = (wall - phase) % interval_s
        (during if off <= busy or off + lat >= interval_s else outside).append(lat)
    return {"scrapes_during_sample": len(during),
            "scrape_p99_ms_outside_samples": 1000 * pct(outside, 0.99) if len(outside) > 1 else None,
            "scrape_max_ms_during_samples": 1000 * max(during) if during else None,
            "scrape_p50_ms_during_samples": 1000 * statistics.median(during) if during else None}


def run_config(cfg: Config, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(dir=FIXTURE_DIR) as tmp:
        tmpd = Path(tmp)
        procs, scen = build_node(cfg, tmpd / "proc")
        make_procfs(tmpd / "proc", procs, cpu_busy=0, cpu_idle=0, ncpu=NCPU)
        ticker = Ticker(tmpd / "proc", procs)
        ticker.tick()
        ticker.start()
        sim = write_scenario(tmpd / "sim.yaml", scen)
        d = start_daemon(tmpd, "--sample.interval=1s", "--gpu.backend=simulated",
                         f"--gpu.simulation-file={sim}", f"--path.procfs={tmpd / 'proc'}", *SAFE_FLAGS)
        try:
            time.sleep(args.warmup)
            conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
            durations: dict[float, float] = {}
            state = {"n": 0}

            def every_second() -> None:  # Watch calls this once a second; scrape every 2nd
                state["n"] += 1
                if state["n"] % 2 == 0:
                    m = parse_metrics(scrape(conn, gz=True).decode())
                    durations[value(m, "wattprint_samples_total")] = value(m, "wattprint_sample_duration_seconds")

            w = Watch({"wattprint": d.proc.pid}).run(args.window, tick=every_second)
            conn.close()
            times, size, marks = scrape_paced(d.port, args.scrapes, args.scrape_gap)
            text = d.get()
            m = parse_metrics(text)
            gz_size = len(gzip.compress(text.encode(), compresslevel=5))
            log = d.log.read_text()
        finally:
            d.stop()
            ticker.close()
    series = sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))
    wp = w["procs"]["wattprint"]
    endpoints = {dict(k).get("endpoint") for k in m.get("wattprint_endpoint_energy_joules_total", {})}
    dur = list(durations.values())
    return {
        "gpus": cfg.gpus, "procs": cfg.procs, "endpoints": cfg.endpoints, "gpu_procs": cfg.gpu_procs,
        "sample_duration_ms_mean": 1000 * statistics.fmean(dur) if dur else None,
        "sample_duration_ms_max": 1000 * max(dur) if dur else None, "sample_durations_seen": len(dur),
        "cpu_percent_of_one_core": wp["cpu_percent_of_one_core"],
        "rss_mb_mean": wp["rss_mb_mean"], "rss_mb_max": wp["rss_mb_max"], "hwm_mb": wp["hwm_mb"],
        "metrics_bytes": size, "metrics_gzip_bytes": gz_size, "series": series,
        "scrape_p50_ms": 1000 * statistics.median(times), "scrape_p99_ms": 1000 * pct(times, 0.99),
        "scrape_max_ms": 1000 * max(times), **split_by_sampling(times, marks),
        "processes_tracked": value(m, "wattprint_processes_tracked"),
        "endpoint_series_endpoints": sorted(e for e in endpoints if e),
        "window_s": w["window_s"], "loadavg_start": w["loadavg_start"], "loadavg_end": w["loadavg_end"],
        "host_cpu_busy_percent": w["host_cpu_busy_percent"],
        "daemon_warnings": [ln for ln in log.splitlines() if "level=warn" in ln and "SIMULATED" not in ln][:5],
    }


# --- fits, table, files ------------------------------------------------------------------------------

METRICS = [("sample_duration_ms_mean", "sample ms", "{:.2f}", 1000, "µs"),
           ("cpu_percent_of_one_core", "CPU %", "{:.2f}", 1, "% of a core"),
           ("rss_mb_mean", "RSS MB", "{:.1f}", 1024, "KB"),
           ("metrics_bytes", "/metrics B", "{:.0f}", 1, "B"),
           ("scrape_p50_ms", "p50 ms", "{:.3f}", 1000, "µs"),
           ("scrape_p99_ms", "p99 ms", "{:.3f}", 1000, "µs")]


def fit(xs: list[float], ys: list[float]) -> dict:
    slope, intercept = statistics.linear_regression(xs, ys)
    r = statistics.correlation(xs, ys) if len(set(ys)) > 1 else 1.0
    return {"slope": slope, "intercept": intercept, "r2": r * r}


def fits(rows: list[dict], sweep: str) -> dict:
    xs = [r[sweep] for r in rows]
    return {key: fit(xs, [r[key] for r in rows]) for key, *_ in METRICS if all(r[key] is not None for r in rows)}


def table(results: dict) -> str:
    head = ("| sweep | GPUs | procs | endpoints | sample ms (mean) | CPU % of 1 core | RSS MB | "
            "/metrics bytes | series | scrape p50 ms | scrape p99 ms | p99 outside samples ms | load avg (1 min) |")
    lines = [head, "|" + "---|" * 4 + "---:|" * 9]
    for sweep, rows in results["sweeps"].items():
        for r in rows:
            cpu = f"{r['cpu_percent_of_one_core']:.2f}"
            if "cpu_percent_min" in r and len(r.get("runs", [])) > 1:
                cpu += f" ({r['cpu_percent_min']:.2f}–{r['cpu_percent_max']:.2f})"
            outside = r.get("scrape_p99_ms_outside_samples")
            lines.append(f"| {sweep} | {r['gpus']} | {r['procs']} | {r['endpoints']} | "
                         f"{r['sample_duration_ms_mean']:.2f} | {cpu} | "
                         f"{r['rss_mb_mean']:.1f} | {r['metrics_bytes']:,.0f} | {r['series']:,.0f} | "
                         f"{r['scrape_p50_ms']:.3f} | {r['scrape_p99_ms']:.3f} | "
                         f"{'–' if outside is None else f'{outside:.3f}'} | "
                         f"{r['loadavg_start'][0]:.2f}→{r['loadavg_end'][0]:.2f} |")
    return "\n".join(lines)


def fit_table(results: dict) -> str:
    names = {"gpus": "per added GPU (+3 GPU processes)", "procs": "per added process",
             "endpoints": "per added endpoint"}
    lines = ["| cost | sample time | CPU % of 1 core | RSS | /metrics | scrape p50 | scrape p99 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for sweep, f in results["fits"].items():
        cells = []
        for key, _h, _fmt, scale, unit in METRICS:
            if key not in f:
                cells.append("–")
                continue
            s, r2 = f[key]["slope"] * scale, f[key]["r2"]
            cells.append(f"{s:+.3g} {unit} (r² {r2:.2f})")
        lines.append(f"| {names[sweep]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed in this venv: no plot (.venv/bin/pip install matplotlib)", file=sys.stderr)
        return False
    rows_m = [("cpu_percent_of_one_core", "CPU, % of one core", 1.0),
              ("sample_duration_ms_mean", "sample duration, ms (mean)", None),
              ("rss_mb_mean", "RSS, MB", 80.0),
              ("scrape_p99_ms", "scrape p99, ms", 5.0),
              ("metrics_bytes", "/metrics, KB", None)]
    xlabel = {"gpus": "simulated GPUs (3 GPU processes each)", "procs": "processes in procfs",
              "endpoints": "endpoints (vLLM servers)"}
    fig, axes = plt.subplots(len(rows_m), 3, figsize=(13, 14), sharex="col")
    for j, (sweep, rows) in enumerate(results["sweeps"].items()):
        xs = [r[sweep] for r in rows]
        for i, (key, title, target) in enumerate(rows_m):
            ax = axes[i][j]
            scale = 1 / 1024 if key == "metrics_bytes" else 1
            ys = [r[key] * scale for r in rows]
            ax.plot(xs, ys, "o-", color="tab:blue", label="wattprint serve")
            f = results["fits"][sweep].get(key)
            if f:
                ax.plot([xs[0], xs[-1]], [(f["intercept"] + f["slope"] * x) * scale for x in (xs[0], xs[-1])],
                        ":", color="tab:gray", label=f"fit: {f['slope'] * scale:+.3g}/unit")
            if target is not None:
                ax.axhline(target, color="tab:red", ls="--", lw=1, label=f"target {target:g}")
            if key == "scrape_p99_ms" and results.get("node_exporter"):
                ne99 = results["node_exporter"]["p99_ms"]
                ax.axhline(ne99, color="tab:orange", ls="-.", lw=1,
                           label=f"node-exporter p99 {ne99:.1f} ms" + (" (off scale)" if ne99 > 1.15 * max(ys + [5.0]) else ""))
            ax.set_ylim(0, 1.15 * max(ys + [target or 0.0]))
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel(title)
            if i == len(rows_m) - 1:
                ax.set_xlabel(xlabel[sweep])
            ax.legend(fontsize=7, loc="best")
    b = results["base"]
    fig.suptitle(f"Wattprint scaling at 1 s sampling ({results['date']}, {results['host_cpus']} vCPUs); "
                 f"base {b['gpus']} GPUs / {b['procs']} processes / {b['endpoints']} endpoints", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def measure(args: argparse.Namespace) -> dict:
    sweeps = {k: [v[0], v[-1]] for k, v in SWEEPS.items()} if args.quick else SWEEPS
    ne = None
    ne_port = free_port()
    ne_proc = start_node_exporter(ne_port)
    if ne_proc is not None:
        try:
            t, b, _ = scrape_paced(ne_port, args.scrapes, args.scrape_gap)
            ne = {"p50_ms": 1000 * statistics.median(t), "p99_ms": 1000 * pct(t, 0.99), "bytes": b}
        finally:
            ne_proc.terminate()
            ne_proc.wait()

    results: dict = {"date": str(dt.date.today()), "benchmark": "scaling", "sample_interval_s": 1.0,
                     "window_s": args.window, "warmup_s": args.warmup, "scrapes": args.scrapes,
                     "scrape_gap_s": args.scrape_gap, "repeats": args.repeat, "host_cpus": os.cpu_count(),
                     "python": platform.python_version(), "kernel": platform.release(),
                     "exporter_sha256": source_digest(), "base": BASE,
                     "node_exporter": ne, "loadavg_start": list(os.getloadavg()), "sweeps": {}, "fits": {}}
    configs = list(dict.fromkeys(Config(**{**BASE, sweep: v}) for sweep, values in sweeps.items() for v in values))
    runs: dict[Config, list[dict]] = {c: [] for c in configs}
    t_start = time.monotonic()
    for rep in range(args.repeat):  # repeats interleaved, so a busy spell on the host hits every config alike
        for cfg in configs:
            print(f"[{time.monotonic() - t_start:5.0f} s] run {rep + 1}/{args.repeat}: {cfg.label()} …", file=sys.stderr)
            r = run_config(cfg, args)
            runs[cfg].append(r)
            print(f"        sample {r['sample_duration_ms_mean']:.2f} ms, CPU {r['cpu_percent_of_one_core']:.2f} %, "
                  f"RSS {r['rss_mb_mean']:.1f} MB, {r['metrics_bytes']} B, p99 {r['scrape_p99_ms']:.3f} ms, "
                  f"load {r['loadavg_end'][0]:.2f}", file=sys.stderr)
    done = {cfg: combine(rs) for cfg, rs in runs.items()}
    for sweep, values in sweeps.items():
        results["sweeps"][sweep] = [done[Config(**{**BASE, sweep: v})] for v in values]
    results["loadavg_end"] = list(os.getloadavg())
    return results


def combine(rs: list[dict]) -> dict:
    """Median of each figure over repeated runs of one configuration; CPU's range and every run kept."""
    out = dict(rs[0])
    for k, v in rs[0].items():
        vals = [r.get(k) for r in rs]
        if (isinstance(v, (int, float)) and not isinstance(v, bool) and None not in vals
                and len(set(vals)) > 1):
            out[k] = statistics.median(vals)
    out["loadavg_start"], out["loadavg_end"] = rs[0]["loadavg_start"], rs[-1]["loadavg_end"]
    out["cpu_percent_min"] = min(r["cpu_percent_of_one_core"] for r in rs)
    out["cpu_percent_max"] = max(r["cpu_percent_of_one_core"] for r in rs)
    out["runs"] = rs
    return out


def write_outputs(results: dict, stem: Path) -> None:
    results["fits"] = {sweep: fits(rows, sweep) for sweep, rows in results["sweeps"].items()}
    ne = results.get("node_exporter")
    md = [f"# Wattprint scaling, {results['date']}",
          "",
          f"`benchmarks/scaling.py` (window {results['window_s']:g} s per configuration, warm-up "
          f"{results['warmup_s']:g} s, {results['scrapes']} scrapes {1000 * results.get('scrape_gap_s', 0):.0f} ms "
          f"apart, {results.get('repeats', 1)} interleaved run(s) per configuration, medians; CPU range in "
          f"brackets), {results['host_cpus']} vCPUs, Python {results['python']}; 1 s sampling on a "
          "simulated node reading a fixture procfs in which every process gains one tick of CPU time a second. "
          f"Base: {BASE['gpus']} GPUs, {BASE['procs']} processes, {BASE['endpoints']} endpoints. "
          f"Load average over the run: {results['loadavg_start'][0]:.2f} → {results['loadavg_end'][0]:.2f} "
          "(1 min).",
          "",
          table(results),
          "",
          "Linear fits (least squares over each sweep):",
          "",
          fit_table(results),
          ""]
    if ne:
        md += [f"Reference, same run and same pacing: prometheus-node-exporter p50 {ne['p50_ms']:.3f} ms, "
               f"p99 {ne['p99_ms']:.3f} ms, {ne['bytes']:,} bytes.", ""]
    md += ["Targets (8-GPU node): scrape p99 ≤ 5 ms and below node-exporter's; ≤ 1 % of one core; ≤ 80 MB RSS.",
           "`sample ms` is `wattprint_sample_duration_seconds` averaged over the samples seen by a scrape "
           "every 2 s; it is wall time and leaves out rendering /metrics.", ""]
    stem.parent.mkdir(parents=True, exist_ok=True)
    png = stem.with_suffix(".png")
    if plot(results, png):
        md += [f"![scaling]({png.name})", ""]
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    stem.with_suffix(".md").write_text("\n".join(md))

    print("\n" + table(results) + "\n\n" + fit_table(results))
    if ne:
        print(f"\nnode-exporter (same run): p50 {ne['p50_ms']:.3f} ms, p99 {ne['p99_ms']:.3f} ms, {ne['bytes']} B")
    print(f"load average {results['loadavg_start'][0]:.2f} → {results['loadavg_end'][0]:.2f} (1 min) "
          f"on {results['host_cpus']} CPUs")
    print(f"wrote {stem}.json, .md" + (", .png" if png.exists() else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--window", type=float, default=30, help="CPU/RSS window per configuration, s (default 30)")
    ap.add_argument("--warmup", type=float, default=6, help="seconds after start-up before the window")
    ap.add_argument("--scrapes", type=int, default=300)
    ap.add_argument("--scrape-gap", type=float, default=0.033, help="seconds between latency scrapes (default 0.033)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration, interleaved; medians reported")
    ap.add_argument("--quick", action="store_true", help="two points per sweep, 10 s windows (a smoke run)")
    ap.add_argument("--out", help="file stem instead of benchmarks/results/scaling-<date>")
    ap.add_argument("--from-json", help="redo the table, Markdown and plot from a results JSON; measure nothing")
    args = ap.parse_args()
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        stem = Path(args.out) if args.out else Path(args.from_json).with_suffix("")
    else:
        if args.quick:
            args.window = min(args.window, 10)
        stem = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"scaling-{dt.date.today()}"
        results = measure(args)
    write_outputs(results, stem)
    return 0


if __name__ == "__main__":
    sys.exit(main())
