#!/usr/bin/env python3
"""Validate Wattprint on a real NVIDIA GPU (or, with --simulated, rehearse on the simulated one).

One run (≈ 2–3 minutes) that anyone with a GPU can repeat:
  1. `wattprint check --output json`: the GPU, driver and the energy method NVML supports;
  2. `wattprint serve` at 1 s sampling; an idle phase with no workload (idle power measured
     directly through NVML, and what Wattprint learned);
  3. two workloads as separate processes whose command lines identify two endpoints: a
     vLLM-format server (`benchmarks/workloads/vllm serve tiny-llm`, a tiny random transformer in a
     renamed `VLLM::EngineCore` worker) driven by a request generator, and a bf16 matmul loop at
     25 % duty matched by a config rule (endpoint `batch-matmul`);
  4. a steady-state window (≥ 60 s) bracketed on Wattprint's own sample boundaries: NVML's
     total-energy counter read directly at both ends, Wattprint scraped at both ends, each
     process's SM utilisation sampled directly through NVML throughout;
  5. a JSON and a Markdown report: Wattprint GPU energy vs the NVML delta, Σ attributed vs GPU
     energy (conservation), each endpoint's share vs its SM-utilisation share, idle learned vs
     measured, J/request and J/token of the served endpoint, and the daemon's CPU and RSS.

    python3 benchmarks/gpu_validation.py [--window 60] [--out benchmarks/results]
    python3 benchmarks/gpu_validation.py --simulated   # dry run, no GPU needed

With ``--sweep`` (≈ 6 minutes) it checks the marginal-cost fit instead: the same vLLM-format
workload (which prefills each batch's prompts, then decodes) under a load sweep — an idle phase, a
prefill-only phase (long prompts, ``max_tokens`` 1), a decode-only phase (one-word prompts, 128
tokens), then mixed load redrawn every 5 s (concurrency 2–16, prompts 16–1024 words, 4–256
tokens) — and reports the exported ``wattprint_endpoint_marginal_joules_per_token`` (prefill and
decode, with stderr) against a direct measurement: NVML's energy above the measured idle power over
the prefill-only and decode-only phases, solved for J per prompt token and J per generated token
from those two phases' token counts. Batch size moves J/token several-fold, so the two figures
describe different operating points; the report prints both with the phases' concurrency.

    python3 benchmarks/gpu_validation.py --sweep [--simulated]

With ``--mig`` it checks MIG attribution on a GPU **already in MIG mode with instances** (it never
changes a GPU's MIG mode, clocks or power limit; on a GPU without MIG it reports why and stops):
a bf16 matmul loop at 50 % duty on the first MIG instance and at 20 % on the second (each
process pinned with ``CUDA_VISIBLE_DEVICES=MIG-…``), the others left idle, then a window bracketed
on Wattprint's samples with the physical GPU's NVML energy counter read at both ends. The report
gives each instance's idle and active energy (``wattprint_gpu_mig_instance_energy_joules_total``)
and method (``gpm`` or ``slice_share``), and Σ instances vs Wattprint's GPU energy vs the counter.

    python3 benchmarks/gpu_validation.py --mig [--window 60] [--simulated]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ROOT / "benchmarks" / "workloads"
sys.path.insert(0, str(ROOT))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_all(procs: list[subprocess.Popen]) -> None:
    """Terminate the workloads, then kill any that has not exited 10 s later."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def http_get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def parse(text: str) -> dict[str, list[tuple[dict, float]]]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict, float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def total(m: dict, name: str, **want: str) -> float:
    return sum(v for labels, v in m.get(name, []) if all(labels.get(k) == x for k, x in want.items()))


def by_label(m: dict, name: str, key: str, **want: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, v in m.get(name, []):
        if all(labels.get(k) == x for k, x in want.items()):
            out[labels[key]] = out.get(labels[key], 0.0) + v
    return out


class Nvml:
    """Direct NVML reads (the reference), real or simulated with the daemon's timebase."""

    def __init__(self, scenario: str | None) -> None:
        if scenario:
            from exporter.sensors.simnvml import SimulatedNVML

            self.lib = SimulatedNVML.from_file(scenario)
        else:
            import pynvml

            self.lib = pynvml
        self.lib.nvmlInit()
        self.h = self.lib.nvmlDeviceGetHandleByIndex(0)
        self._ts: dict[int, int] = {}
        self.raw: list[list[tuple[int, int, int]]] = []  # the first calls' raw samples, for the report

    def energy_mj(self) -> int:
        return int(self.lib.nvmlDeviceGetTotalEnergyConsumption(self.h))

    def power_w(self) -> float:
        return self.lib.nvmlDeviceGetPowerUsage(self.h) / 1000

    def median_power_w(self, seconds: float) -> float:
        """The median of power readings every 250 ms for ``seconds`` (an idle phase)."""
        watts = []
        t_end = time.time() + seconds
        while time.time() < t_end:
            watts.append(self.power_w())
            time.sleep(0.25)
        return sorted(watts)[len(watts) // 2]

    def util_samples(self) -> dict[int, list[float]]:
        """New samples per pid since the last call (the whole buffer, de-duplicated per pid)."""
        try:
            samples = self.lib.nvmlDeviceGetProcessUtilization(self.h, 0)
        except Exception:  # NVML_ERROR_NOT_FOUND: no sample
            return {}
        if len(self.raw) < 5:
            self.raw.append([(int(s.pid), int(s.timeStamp), int(s.smUtil)) for s in samples])
        out: dict[int, list[float]] = {}
        for s in samples:
            pid, ts = int(s.pid), int(s.timeStamp)
            if ts > self._ts.get(pid, 0):
                out.setdefault(pid, []).append(float(s.smUtil))
        for s in samples:
            self._ts[int(s.pid)] = max(self._ts.get(int(s.pid), 0), int(s.timeStamp))
        return out


class Daemon:
    def __init__(self, args: list[str], workdir: Path) -> None:
        self.port = free_port()
        self.log = workdir / "wattprint.log"
        env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
        self.proc = subprocess.Popen([sys.executable, "-m", "exporter", "serve",
                                      f"--web.listen-address=127.0.0.1:{self.port}", "--sample.interval=1s",
                                      "--gpu.util-poll-interval=200ms",  # every NVML sample, as in runs 1-5
                                      *args], stdout=open(self.log, "w"), stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("wattprint serve exited:\n" + self.log.read_text())
            try:
                http_get(f"http://127.0.0.1:{self.port}/readyz", 1)
                return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("wattprint serve not ready:\n" + self.log.read_text())

    def metrics(self) -> dict:
        return parse(http_get(f"http://127.0.0.1:{self.port}/metrics"))

    def next_sample(self) -> dict:
        """Wait for a new sample and return its metrics right away (≈ 20 ms after it was taken)."""
        n = total(self.metrics(), "wattprint_samples_total")
        while True:
            m = self.metrics()
            if total(m, "wattprint_samples_total") > n:
                return m
            time.sleep(0.02)

    def cpu_s(self) -> float:
        f = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / CLK_TCK

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def drive(url: str, stop_at: float, concurrency: int) -> int:
    """The validation run's load: 64-word prompts, 32 tokens, until ``stop_at``."""
    return await drive_phase(url, stop_at - time.time(), concurrency, (64, 64), (32, 32), 0)


async def drive_phase(url: str, seconds: float, concurrency: int, prompt_words: tuple[int, int],
                      max_tokens: tuple[int, int], seed: int) -> int:
    """Requests with prompts of ``prompt_words`` words and ``max_tokens`` (uniform in the ranges)."""
    import random

    import aiohttp

    rng, done, stop_at = random.Random(seed), 0, time.time() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.time() < stop_at:
            body = {"prompt": "tok " * rng.randint(*prompt_words), "max_tokens": rng.randint(*max_tokens)}
            try:
                async with session.post(url, json=body) as r:
                    await r.read()
                    done += r.status == 200
            except aiohttp.ClientError:
                await asyncio.sleep(0.2)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return done


def counters_of(url: str) -> tuple[float, float]:
    v = parse(http_get(url))
    return total(v, "vllm:prompt_tokens_total"), total(v, "vllm:generation_tokens_total")


def sweep(args) -> int:
    """The marginal-cost fit against a direct two-phase measurement (see the module)."""
    import random

    work = Path(tempfile.mkdtemp(prefix="wattprint-sweep-"))
    pid_llm = work / "llm.pid"
    device = "cpu" if args.simulated else "cuda"
    daemon_args = ["--engines.interval=2s", "--marginal.window=6s"]
    scenario = None
    if args.simulated:  # a dry run of the plumbing: the simulated GPU does not feel the workload
        import yaml

        scenario = str(work / "sim.yaml")
        Path(scenario).write_text(yaml.safe_dump({"start_unix": time.time(), "gpus": [{
            "name": "NVIDIA H100 80GB HBM3", "idle_w": 72, "max_w": 700,
            "processes": [{"pid_file": str(pid_llm), "memory_gib": 20, "sm_util": 50}]}]}))
        daemon_args += ["--gpu.backend=simulated", f"--gpu.simulation-file={scenario}"]
    else:
        daemon_args.append("--gpu.backend=nvml")
    log("1/4 wattprint serve + idle phase (no workload)")
    daemon = Daemon(daemon_args, work)
    nvml = Nvml(scenario)
    idle_w = nvml.median_power_w(args.idle)
    port = free_port()
    llm = subprocess.Popen([sys.executable, str(WORKLOADS / "vllm"), "serve", "tiny-llm", "--port", str(port),
                            "--device", device, "--pid-file", str(pid_llm)], env={**os.environ, "PYTHONUNBUFFERED": "1"},
                           stdout=open(work / "llm.log", "w"), stderr=subprocess.STDOUT)
    url, murl = f"http://127.0.0.1:{port}/v1/completions", f"http://127.0.0.1:{port}/metrics"
    phases: dict[str, dict] = {}
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                http_get(murl, 1)
                break
            except OSError:
                time.sleep(0.5)
        asyncio.run(drive_phase(url, args.warmup, 8, (64, 64), (16, 16), 0))  # warm-up (CUDA kernels, caches)

        def phase(name: str, seconds: float, conc: int, words: tuple[int, int], toks: tuple[int, int]) -> None:
            log(f"    {name}: {seconds:g} s, concurrency {conc}, prompts {words} words, {toks} tokens")
            e0, t0, (p0, g0) = nvml.energy_mj(), time.time(), counters_of(murl)
            asyncio.run(drive_phase(url, seconds, conc, words, toks, hash(name) & 0xFFFF))
            e1, t1, (p1, g1) = nvml.energy_mj(), time.time(), counters_of(murl)
            phases[name] = {"seconds": t1 - t0, "concurrency": conc, "prompt_tokens": p1 - p0,
                            "generation_tokens": g1 - g0, "active_j": (e1 - e0) / 1000 - idle_w * (t1 - t0)}

        log("2/4 prefill-only and decode-only phases")
        phase("prefill_only", args.phase, 8, (1024, 1024), (1, 1))
        phase("decode_only", args.phase, 8, (1, 1), (128, 128))
        log(f"3/4 mixed load, {args.mixed:g} s, redrawn every 5 s")
        rng, end = random.Random(7), time.time() + args.mixed
        while time.time() < end:
            asyncio.run(drive_phase(url, 5, rng.randint(2, 16), (rng.randint(16, 1024),) * 2,
                                    (rng.randint(4, 256),) * 2, rng.randint(0, 1 << 16)))
        time.sleep(8)  # the last window closes and is fitted
        m = daemon.metrics()
    finally:
        llm.terminate()
        try:
            llm.wait(10)
        except subprocess.TimeoutExpired:
            llm.kill()
        daemon.stop()
    # direct: solve  active = a × prompt + b × generation  over the two pure phases
    pf, dc = phases["prefill_only"], phases["decode_only"]
    det = pf["prompt_tokens"] * dc["generation_tokens"] - pf["generation_tokens"] * dc["prompt_tokens"]
    direct = {"prefill": None, "decode": None}
    if det:
        direct["prefill"] = (pf["active_j"] * dc["generation_tokens"] - pf["generation_tokens"] * dc["active_j"]) / det
        direct["decode"] = (pf["prompt_tokens"] * dc["active_j"] - pf["active_j"] * dc["prompt_tokens"]) / det
    fitted = {ph: {"estimate": (by_label(m, "wattprint_endpoint_marginal_joules_per_token", "phase") or {}).get(ph),
                   "stderr": (by_label(m, "wattprint_endpoint_marginal_joules_per_token_stderr", "phase") or {}).get(ph)}
              for ph in ("prefill", "decode")}
    states = by_label(m, "wattprint_endpoint_energy_model_state", "state")
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "simulated": args.simulated,
              "idle_w": idle_w, "phases": phases, "direct": direct, "fitted": fitted,
              "state": [k for k, v in states.items() if v == 1],
              "windows": total(m, "wattprint_endpoint_energy_model_windows")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu-sweep-{report['date'][:10]}" + ("-simulated" if args.simulated else "")
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    log("4/4 fitted against direct (J per token)")
    for ph in ("prefill", "decode"):
        fe, d = fitted[ph], direct[ph]
        est = "not published" if fe["estimate"] is None else f"{fe['estimate']:.5f} ± {fe['stderr']:.5f}"
        print(f"  {ph:8} fitted {est:>24}   direct {('n/a' if d is None else f'{d:.5f}'):>10}")
    print(f"  fit state {report['state']}, {report['windows']:.0f} windows; report {out / stem}.json")
    return 0


def run_check(extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-m", "exporter", "check", "--output", "json", *extra],
                         capture_output=True, text=True, env=env, timeout=60)
    if out.returncode != 0:
        raise SystemExit("wattprint check failed:\n" + out.stderr)
    return json.loads(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--window", type=float, default=60, help="steady-state window in seconds (default 60)")
    ap.add_argument("--idle", type=float, default=12, help="idle phase in seconds (default 12)")
    ap.add_argument("--warmup", type=float, default=15, help="workload warm-up in seconds (default 15)")
    ap.add_argument("--concurrency", type=int, default=8, help="request generator concurrency")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="report folder")
    ap.add_argument("--simulated", action="store_true", help="dry run on the simulated GPU (no GPU needed)")
    ap.add_argument("--sweep", action="store_true", help="check the marginal-cost fit under a load sweep instead")
    ap.add_argument("--mixed", type=float, default=180, help="--sweep: seconds of mixed load (default 180)")
    ap.add_argument("--phase", type=float, default=45, help="--sweep: seconds of each pure phase (default 45)")
    ap.add_argument("--mig", action="store_true", help="check MIG attribution (the GPU must already be in MIG mode)")
    args = ap.parse_args()
    if args.sweep:
        return sweep(args)
    if args.mig:
        return mig(args)
    work = Path(tempfile.mkdtemp(prefix="wattprint-validation-"))
    pid_llm, pid_mm = work / "llm.pid", work / "matmul.pid"
    device = "cpu" if args.simulated else "cuda"
    scenario = None
    daemon_args = []
    sim_t0 = time.time()
    t_load = args.idle + 15  # simulated load starts after check + daemon start (≤ 15 s) + idle phase
    if args.simulated:
        scenario = str(work / "sim.yaml")
        import yaml

        Path(scenario).write_text(yaml.safe_dump({"start_unix": sim_t0, "gpus": [{
            "name": "NVIDIA H100 80GB HBM3", "idle_w": 72, "max_w": 700, "phases": [
                {"at_s": 0, "processes": []},
                {"at_s": t_load, "processes": [
                    {"pid_file": str(pid_llm), "memory_gib": 20, "sm_util": 45},
                    {"pid_file": str(pid_mm), "memory_gib": 4, "sm_util": 15}]}]}]}))
        daemon_args = ["--gpu.backend=simulated", f"--gpu.simulation-file={scenario}"]
    else:
        daemon_args = ["--gpu.backend=nvml"]
    cfg = work / "wattprint.yaml"
    cfg.write_text("attribution:\n  rules:\n    - {name: batch-matmul, cmdline: 'matmul_burn\\.py', model: matmul-bf16}\n")
    daemon_args.append(f"--config.file={cfg}")

    log("1/5 wattprint check")
    check = run_check(daemon_args)
    gpu0 = (check["gpu"].get("gpus") or [{}])[0]
    log(f"    {gpu0.get('name')} driver {check['gpu'].get('driver')} energy via {gpu0.get('energy_method')}")

    log("2/5 wattprint serve + idle phase")
    daemon = Daemon(daemon_args, work)
    nvml = Nvml(scenario)
    idle_measured = nvml.median_power_w(args.idle)
    learned = daemon.metrics()
    if args.simulated:  # the simulated load begins at t_load: start the workloads then
        time.sleep(max(0.0, sim_t0 + t_load - time.time()))

    log("3/5 starting workloads")
    llm_port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    llm = subprocess.Popen([sys.executable, str(WORKLOADS / "vllm"), "serve", "tiny-llm", "--port", str(llm_port),
                            "--device", device, "--pid-file", str(pid_llm)], env=env,
                           stdout=open(work / "llm.log", "w"), stderr=subprocess.STDOUT)
    mm = subprocess.Popen([sys.executable, str(WORKLOADS / "matmul_burn.py"), "--duty", "0.25", "--device", device,
                           "--pid-file", str(pid_mm)], env=env, stdout=open(work / "mm.log", "w"),
                          stderr=subprocess.STDOUT)
    procs = [llm, mm]
    report: dict = {}
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                http_get(f"http://127.0.0.1:{llm_port}/metrics", 1)
                break
            except OSError:
                time.sleep(0.5)
        stop_at = time.time() + args.warmup + args.window + 5
        gen = subprocess.Popen([sys.executable, __file__, "--_drive", f"http://127.0.0.1:{llm_port}/v1/completions",
                                str(stop_at), str(args.concurrency)], env=env)
        procs.append(gen)
        time.sleep(args.warmup)

        log(f"4/5 steady-state window of {args.window:g} s")
        m0 = daemon.next_sample()
        e0 = nvml.energy_mj()
        t0, c0 = time.time(), daemon.cpu_s()
        v0 = parse(http_get(f"http://127.0.0.1:{llm_port}/metrics"))
        util: dict[int, float] = {}      # Σ SM % per pid over every sample (time share)
        weighted: dict[int, float] = {}  # ∫ (P − P_idle) × util_pid / Σutil dt at 100 ms (energy share)
        latest: dict[int, float] = {}
        fresh_at: dict[int, float] = {}
        pmon: list[str] = []  # nvidia-smi's own per-process view, three times in the window
        last_t = time.time()
        while last_t - t0 < args.window:
            time.sleep(0.1)
            now = time.time()
            for pid, xs in nvml.util_samples().items():
                util[pid] = util.get(pid, 0.0) + sum(xs)
                latest[pid] = xs[-1]
                fresh_at[pid] = now
            latest = {pid: u for pid, u in latest.items() if now - fresh_at[pid] < 0.6}  # no new sample: idle
            active_w = max(0.0, nvml.power_w() - idle_measured)
            if len(pmon) < 3 and now - t0 > 20 * (len(pmon) + 1) and shutil.which("nvidia-smi"):
                pmon.append(subprocess.run(["nvidia-smi", "pmon", "-c", "1", "-s", "u"], capture_output=True,
                                           text=True, timeout=10).stdout)
            norm = sum(latest.values())
            for pid, u in latest.items():
                if norm > 0:
                    weighted[pid] = weighted.get(pid, 0.0) + active_w * (now - last_t) * u / norm
            last_t = now
        m1 = daemon.next_sample()
        e1 = nvml.energy_mj()
        t1, c1 = time.time(), daemon.cpu_s()
        v1 = parse(http_get(f"http://127.0.0.1:{llm_port}/metrics"))
        rss = daemon.rss_mb()
        pids = {"tiny-llm": int(pid_llm.read_text()), "batch-matmul": int(pid_mm.read_text())}
        report = build_report(args, check, idle_measured, learned, m0, m1, e0, e1, t0, t1, c1 - c0, rss,
                              v0, v1, util, pids)
        wsum = sum(weighted.values()) or 1.0
        report["shares"]["energy_weighted_sm_util"] = {name: weighted.get(pid, 0.0) / wsum for name, pid in pids.items()}
        report["shares"]["raw_first_samples"] = nvml.raw
        report["shares"]["nvidia_smi_pmon"] = pmon
    finally:
        stop_all(procs)
        daemon.stop()
        logs = Path(args.out) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for f in work.glob("*.log"):
            (logs / f.name).write_text(f.read_text()[-200_000:])
    if not report:
        raise SystemExit(f"no report: see the logs in {logs}")
    report["check"] = check
    log("5/5 writing the report")
    write_report(report, Path(args.out), args.simulated)
    return 0


MIG_DUTIES = (0.5, 0.2)  # the matmul loops on the first two MIG instances; the others stay idle


def mig(args) -> int:
    """``--mig``: per-instance energy against the physical GPU's counter (see the module docstring)."""
    work = Path(tempfile.mkdtemp(prefix="wattprint-mig-"))
    pid_files = [work / f"mig{i}.pid" for i in range(len(MIG_DUTIES))]
    scenario = None
    if args.simulated:  # a 7-slice H100: 3g and 2g busy (the two loops), 1g idle and empty
        import yaml

        scenario = str(work / "sim.yaml")
        insts = [{"profile": "3g.40gb", "gpu_instance": 1, "sm_util": 50,
                  "processes": [{"pid_file": str(pid_files[0]), "memory_gib": 2}]},
                 {"profile": "2g.20gb", "gpu_instance": 5, "sm_util": 20,
                  "processes": [{"pid_file": str(pid_files[1]), "memory_gib": 2}]},
                 {"profile": "1g.10gb", "gpu_instance": 9, "sm_util": 0, "processes": []}]
        Path(scenario).write_text(yaml.safe_dump({"start_unix": time.time(), "gpus": [{
            "name": "NVIDIA H100 80GB HBM3", "idle_w": 72, "max_w": 700, "mig": True, "mig_instances": insts}]}))
        daemon_args = ["--gpu.backend=simulated", f"--gpu.simulation-file={scenario}"]
    else:
        daemon_args = ["--gpu.backend=nvml"]
    log("1/4 wattprint check")
    check = run_check(daemon_args)
    gpu0 = (check["gpu"].get("gpus") or [{}])[0]
    instances = (gpu0.get("mig") or {}).get("instances") or []
    base = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "simulated": args.simulated,
            "gpu": {"name": gpu0.get("name"), "uuid": gpu0.get("uuid"), "driver": check["gpu"].get("driver"),
                    "mig_mode": gpu0.get("mig_mode"), "mig": gpu0.get("mig"), "backend": check["gpu"].get("backend")}}
    if gpu0.get("mig_mode") != "enabled" or not instances:
        why = (f"no GPU ({check['gpu'].get('state')}: {check['gpu'].get('detail')})" if not gpu0
               else f"GPU 0 is not in MIG mode (mig_mode={gpu0.get('mig_mode')})" if gpu0.get("mig_mode") != "enabled"
               else "GPU 0 is in MIG mode but has no MIG instance")
        log(f"    {why}: nothing to validate. This script never changes a GPU's MIG mode; an operator "
            "enables it (nvidia-smi -i 0 -mig 1, then nvidia-smi mig -cgi … -C) and runs it again.")
        _write_mig_report({**base, "skipped": why}, Path(args.out))
        return 0
    log(f"    {gpu0.get('name')}: {len(instances)} MIG instance(s), active split by "
        f"{gpu0['mig']['activity_method']} {gpu0['mig']['activity_detail']}")
    log("2/4 workloads on the first MIG instances")
    device = "cpu" if args.simulated else "cuda"
    procs = []
    for inst, duty, pid_file in zip(instances, MIG_DUTIES, pid_files):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": inst["uuid"]}
        procs.append(subprocess.Popen([sys.executable, str(WORKLOADS / "matmul_burn.py"), "--duty", str(duty),
                                       "--device", device, "--pid-file", str(pid_file)], env=env,
                                      stdout=open(work / f"mig-{inst['gpu_instance']}.log", "w"),
                                      stderr=subprocess.STDOUT))
    daemon = Daemon(daemon_args, work)
    nvml = Nvml(scenario)
    try:
        time.sleep(args.warmup)
        log(f"3/4 window of {args.window:g} s")
        m0, e0, t0 = daemon.next_sample(), nvml.energy_mj(), time.time()
        time.sleep(args.window)
        m1, e1, t1 = daemon.next_sample(), nvml.energy_mj(), time.time()
    finally:
        stop_all(procs)
        daemon.stop()
    log("4/4 report")
    name = "wattprint_gpu_mig_instance_energy_joules_total"
    rows = []
    for inst in instances + [{"uuid": "", "gpu_instance": "free", "compute_instance": "free", "profile": "free"}]:
        want = {"gpu": "0", "gpu_instance": str(inst["gpu_instance"]), "compute_instance": str(inst["compute_instance"])}
        idle = total(m1, name, mode="idle", **want) - total(m0, name, mode="idle", **want)
        active = total(m1, name, mode="active", **want) - total(m0, name, mode="active", **want)
        method = next((labels.get("method") for labels, _ in m1.get("wattprint_gpu_mig_instance_info", [])
                       if labels.get("mig_uuid") == inst["uuid"] and inst["uuid"]), "")
        rows.append({**{k: inst.get(k) for k in ("uuid", "gpu_instance", "compute_instance", "profile", "slices")},
                     "idle_j": idle, "active_j": active, "method": method,
                     "duty": MIG_DUTIES[instances.index(inst)] if inst in instances[:len(MIG_DUTIES)] else 0.0})
    gpu_j = total(m1, "wattprint_gpu_energy_joules_total", gpu="0") - total(m0, "wattprint_gpu_energy_joules_total", gpu="0")
    nvml_j = (e1 - e0) / 1000
    sum_j = sum(r["idle_j"] + r["active_j"] for r in rows)
    report = {**base, "window_s": t1 - t0, "instances": rows,
              "energy": {"nvml_delta_j": nvml_j, "wattprint_gpu_j": gpu_j, "sum_instances_j": sum_j,
                         "gpu_vs_nvml_error_pct": 100 * (gpu_j - nvml_j) / nvml_j if nvml_j else None,
                         "instances_vs_gpu_error_pct": 100 * (sum_j - gpu_j) / gpu_j if gpu_j else None}}
    _write_mig_report(report, Path(args.out))
    return 0


def _write_mig_report(r: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", r["gpu"]["name"] or "gpu").strip("-").lower()
    stem = f"mig-validation-{r['date'][:10]}-{gpu}" + ("-simulated" if r["simulated"] else "")
    (out / f"{stem}.json").write_text(json.dumps(r, indent=2) + "\n")
    md = [f"# MIG validation: {r['gpu']['name']} ({'SIMULATED' if r['simulated'] else 'real GPU'})", "",
          f"- Date: {r['date']}; driver {r['gpu']['driver']}; MIG: {r['gpu']['mig_mode']}; reproduce with "
          "`python3 benchmarks/gpu_validation.py --mig`", ""]
    if "skipped" in r:
        md.append(f"Skipped: {r['skipped']} (validation never changes a GPU's MIG mode).")
    else:
        e = r["energy"]
        md += [f"- Window: {r['window_s']:.1f} s; Σ instances {e['sum_instances_j']:.3f} J vs Wattprint GPU "
               f"{e['wattprint_gpu_j']:.3f} J (error {e['instances_vs_gpu_error_pct']:.2e} %) vs the physical GPU's "
               f"NVML counter {e['nvml_delta_j']:.3f} J (error {e['gpu_vs_nvml_error_pct']:.3f} %)", "",
               "| GI | CI | profile | slices | workload duty | idle J | active J | method |",
               "|---|---|---|---|---|---|---|---|"]
        md += [f"| {x['gpu_instance']} | {x['compute_instance']} | {x['profile']} | {x['slices'] or ''} | "
               f"{x['duty']:.0%} | {x['idle_j']:.1f} | {x['active_j']:.1f} | {x['method']} |" for x in r["instances"]]
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    log(f"report: {out / stem}.json and .md")


def build_report(args, check, idle_measured, learned, m0, m1, e0, e1, t0, t1, cpu_s, rss, v0, v1, util, pids) -> dict:
    nvml_j = (e1 - e0) / 1000
    gpu_j = total(m1, "wattprint_gpu_energy_joules_total", gpu="0") - total(m0, "wattprint_gpu_energy_joules_total", gpu="0")

    def endpoint_delta(**want: str) -> dict[str, float]:
        a = by_label(m0, "wattprint_endpoint_energy_joules_total", "endpoint", **want)
        b = by_label(m1, "wattprint_endpoint_energy_joules_total", "endpoint", **want)
        return {k: b.get(k, 0.0) - a.get(k, 0.0) for k in b}

    gpu_by_ep = endpoint_delta(component="gpu")
    active_by_ep = endpoint_delta(component="gpu", mode="active")
    all_by_ep = endpoint_delta()
    llm_ep = next((k for k in gpu_by_ep if k.startswith("vllm-")), None)
    mm_ep = "batch-matmul"
    util_total = sum(util.values()) or 1.0
    util_share = {"tiny-llm": util.get(pids["tiny-llm"], 0.0) / util_total,
                  "batch-matmul": util.get(pids["batch-matmul"], 0.0) / util_total}
    active_total = sum(active_by_ep.get(k, 0.0) for k in (llm_ep, mm_ep) if k) or 1.0
    share = {"tiny-llm": active_by_ep.get(llm_ep, 0.0) / active_total if llm_ep else 0.0,
             "batch-matmul": active_by_ep.get(mm_ep, 0.0) / active_total}
    reqs = total(v1, "vllm:request_success_total") - total(v0, "vllm:request_success_total")
    toks = total(v1, "vllm:generation_tokens_total") - total(v0, "vllm:generation_tokens_total")
    llm_j = all_by_ep.get(llm_ep, 0.0) if llm_ep else 0.0
    idle_rows = [(labels.get("source"), v) for labels, v in learned.get("wattprint_gpu_idle_power_watts", [])]
    gpu0 = (check["gpu"].get("gpus") or [{}])[0]
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "simulated": args.simulated,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
        "gpu": {"name": gpu0.get("name"), "uuid": gpu0.get("uuid"), "driver": check["gpu"].get("driver"),
                "energy_method": gpu0.get("energy_method"), "mig_mode": gpu0.get("mig_mode"),
                "backend": check["gpu"].get("backend")},
        "window_s": t1 - t0,
        "energy": {"nvml_delta_j": nvml_j, "wattprint_gpu_j": gpu_j,
                   "error_pct": 100 * (gpu_j - nvml_j) / nvml_j if nvml_j else None,
                   "mean_power_w": nvml_j / (t1 - t0)},
        "conservation": {"sum_attributed_gpu_j": sum(gpu_by_ep.values()), "gpu_j": gpu_j,
                         "error_pct": 100 * (sum(gpu_by_ep.values()) - gpu_j) / gpu_j if gpu_j else None,
                         "by_endpoint_j": gpu_by_ep},
        "shares": {"attributed_active": share, "sm_util_measured": util_share,
                   "sm_util_pids": {str(k): v for k, v in util.items()}, "workload_pids": pids,
                   "llm_endpoint": llm_ep},
        "idle": {"measured_w": idle_measured, "wattprint": dict(idle_rows)},
        "served": {"endpoint": llm_ep, "requests": reqs, "generation_tokens": toks, "energy_j": llm_j,
                   "j_per_request": llm_j / reqs if reqs else None, "j_per_token": llm_j / toks if toks else None},
        "daemon": {"cpu_percent_of_one_core": 100 * cpu_s / (t1 - t0), "rss_mb": rss, "sample_interval_s": 1.0},
    }


def write_report(r: dict, out: Path, simulated: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", r["gpu"]["name"] or "gpu").strip("-").lower()
    stem = f"gpu-validation-{r['date'][:10]}-{gpu}" + ("-simulated" if simulated else "")
    (out / f"{stem}.json").write_text(json.dumps(r, indent=2) + "\n")
    e, c, s, i, sv, d = r["energy"], r["conservation"], r["shares"], r["idle"], r["served"], r["daemon"]

    def f(x, nd=2):
        return "n/a" if x is None else f"{x:.{nd}f}"

    md = [f"# GPU validation: {r['gpu']['name']} ({'SIMULATED' if simulated else 'real GPU'})", "",
          f"- Date: {r['date']}; driver {r['gpu']['driver']}; NVML energy method: {r['gpu']['energy_method']}; "
          f"MIG: {r['gpu']['mig_mode']}",
          f"- Host: {r['host']['cpus']} CPUs, Python {r['host']['python']}, kernel {r['host']['kernel']}",
          f"- Window: {r['window_s']:.1f} s of steady state, 1 s sampling; reproduce with "
          "`python3 benchmarks/gpu_validation.py`", "",
          "| check | figure |", "|---|---|",
          f"| Wattprint GPU energy vs NVML total-energy delta | {e['wattprint_gpu_j']:.1f} J vs {e['nvml_delta_j']:.1f} J "
          f"(error {f(e['error_pct'], 3)} %, target ±1 %); mean power {e['mean_power_w']:.1f} W |",
          f"| Σ attributed endpoint GPU energy vs GPU energy | {c['sum_attributed_gpu_j']:.3f} J vs {c['gpu_j']:.3f} J "
          f"(error {f(c['error_pct'], 6)} %) |"]
    ew = s.get("energy_weighted_sm_util", {})
    for name in ("tiny-llm", "batch-matmul"):
        md.append(f"| {name}: attributed active-GPU share vs SM-util share (time average; energy-weighted at "
                  f"100 ms) | {100 * s['attributed_active'][name]:.1f} % vs {100 * s['sm_util_measured'][name]:.1f} % "
                  f"({100 * ew.get(name, 0.0):.1f} % energy-weighted) |")
    md += [f"| Idle power: learned by Wattprint vs measured (no workload) | "
           + ", ".join(f"{v:.1f} W ({k})" for k, v in i["wattprint"].items()) + f" vs {i['measured_w']:.1f} W |",
           f"| Served endpoint `{sv['endpoint']}` | {sv['requests']:.0f} requests, {sv['generation_tokens']:.0f} tokens: "
           f"{f(sv['j_per_request'])} J/request, {f(sv['j_per_token'], 3)} J/token |",
           f"| Daemon overhead | {d['cpu_percent_of_one_core']:.2f} % of one core, RSS {d['rss_mb']:.1f} MB |", "",
           "The attributed share splits each 1 s interval's active energy by that interval's SM-utilisation "
           "samples, so it is energy-weighted: it follows the energy-weighted reference (power above idle × each "
           "process's latest SM share, integrated every 100 ms by this script) more than the plain time average "
           "when power and the process mix move together.", "",
           "Energy by endpoint in the window (GPU, J): "
           + ", ".join(f"`{k}` {v:.1f}" for k, v in sorted(c["by_endpoint_j"].items(), key=lambda kv: -kv[1]))]
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    log(f"report: {out / stem}.json and .md")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--_drive":  # the request generator, as its own process
        n = asyncio.run(drive(sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
        sys.exit(0)
    sys.exit(main())
