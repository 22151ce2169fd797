"""Load: a real ``wattprint serve`` under 100 concurrent scrapers, on a simulated 8-GPU node.

1. ``test_100_concurrent_scrapers``: the benchmark node of benchmarks/scrape_latency.py (8 simulated
   GPUs, 3 processes each) and 100 scrapers, each scraping every ``WATTPRINT_LOAD_PERIOD`` seconds
   (default 0.1: ~1,000 scrapes/s offered, 10× 100 Prometheus servers at a 1 s interval) with
   ``Accept-Encoding: gzip`` as Prometheus sends it: no errors; p50/p99 latency reported.
2. ``test_churning_node_under_load``: 8 simulated GPUs, 200 processes in a fixture procfs
   (``--path.procfs``), 32 vLLM endpoints (an API server and its ``VLLM::EngineCore`` GPU worker
   each, whose metrics are served by real HTTP servers here, so engine scraping runs too) and
   churn every ``WATTPRINT_LOAD_CHURN`` seconds (2 endpoints restart with new pids — the GPU
   scenario follows through ``pid_file`` entries — and 10 other processes exit while 10 new
   ones appear), under the same 100 scrapers: no errors, sample-interval jitter p99 < 10 % of
   the interval (from ``wattprint_last_sample_timestamp_seconds`` of successive samples), and
   RSS growth after warm-up < 10 MB.

Duration: ``WATTPRINT_LOAD_SECONDS`` (default 20 here; 60 in benchmarks/soak.py, which reuses
the machinery below for long runs).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import random
import re
import shutil
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import aiohttp
import pytest
from aiohttp import web

from support import make_powercap, parse_metrics, start_daemon, value, write_scenario

pytestmark = pytest.mark.integration

LOAD_SECONDS = float(os.environ.get("WATTPRINT_LOAD_SECONDS", "20"))
SCRAPE_PERIOD = float(os.environ.get("WATTPRINT_LOAD_PERIOD", "0.1"))
CHURN_S = float(os.environ.get("WATTPRINT_LOAD_CHURN", "3"))
SCRAPERS = 100
INTERVAL_S = 1.0
_TS = re.compile(rb"^wattprint_last_sample_timestamp_seconds (\S+)$", re.M)
_SAMPLES = re.compile(rb"^wattprint_samples_total (\S+)$", re.M)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float:
    """The q-quantile (0..1), nearest rank: p99 of 20 values is the largest."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


# --- the load: N scrapers, a monitor for sample timestamps and RSS ---------------------------------

@dataclass
class LoadResult:
    seconds: float
    scrapers: int
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    bytes: int = 0
    sample_ts: list[float] = field(default_factory=list)     # distinct last-sample timestamps, in order
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, RSS kB)
    warmup_s: float = 5.0
    daemon_cpu_s: float = 0.0  # CPU the daemon used during the run

    @property
    def scrapes(self) -> int:
        return len(self.latencies_s)

    def jitter_s(self, interval: float) -> list[float]:
        """|gap between successive samples − interval|; a missed sample shows as a full interval."""
        return [abs((b - a) - interval) for a, b in zip(self.sample_ts, self.sample_ts[1:])]

    def rss_growth_kb(self) -> int:
        after = [kb for t, kb in self.rss if t >= self.warmup_s]
        return (after[-1] - after[0]) if len(after) >= 2 else 0

    def summary(self, interval: float) -> dict:
        lat = self.latencies_s
        jit = self.jitter_s(interval)
        after = [kb for t, kb in self.rss if t >= self.warmup_s]
        return {
            "seconds": round(self.seconds, 1), "scrapers": self.scrapers, "scrapes": self.scrapes,
            "scrapes_per_s": round(self.scrapes / self.seconds, 1) if self.seconds else 0,
            "errors": len(self.errors), "mean_bytes": self.bytes // max(1, self.scrapes),
            "latency_p50_ms": round(1000 * statistics.median(lat), 3) if lat else None,
            "latency_p99_ms": round(1000 * pct(lat, 0.99), 3) if lat else None,
            "latency_max_ms": round(1000 * max(lat), 3) if lat else None,
            "samples_seen": len(self.sample_ts), "interval_s": interval,
            "jitter_p50_ms": round(1000 * statistics.median(jit), 2) if jit else None,
            "jitter_p99_ms": round(1000 * pct(jit, 0.99), 2) if jit else None,
            "jitter_max_ms": round(1000 * max(jit), 2) if jit else None,
            "rss_after_warmup_mb": round(after[0] / 1024, 1) if after else None,
            "rss_end_mb": round(after[-1] / 1024, 1) if after else None,
            "rss_max_mb": round(max(after) / 1024, 1) if after else None,
            "rss_growth_mb": round(self.rss_growth_kb() / 1024, 2),
            "daemon_cpu_percent": round(100 * self.daemon_cpu_s / self.seconds, 1) if self.seconds else None,
        }


async def _scraper(session: aiohttp.ClientSession, url: str, stop_at: float, period: float,
                   res: LoadResult, rng: random.Random) -> None:
    await asyncio.sleep(rng.uniform(0, period))  # random phase, like independent Prometheus servers
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        try:
            async with session.get(url, headers={"Accept-Encoding": "gzip"}) as resp:
                body = await resp.read()
                dt = time.perf_counter() - t0
                if resp.status != 200 or resp.headers.get("Content-Encoding") != "gzip" or len(body) < 100:
                    res.errors.append(f"HTTP {resp.status}, {len(body)} bytes")
                else:
                    res.latencies_s.append(dt)
                    res.bytes += len(body)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            res.errors.append(type(e).__name__)
        next_at = t0 + period
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))


async def _monitor(session: aiohttp.ClientSession, url: str, pid: int, t_start: float, stop_at: float,
                   res: LoadResult, report: Callable[[LoadResult, float], None] | None,
                   report_every: float) -> None:
    """Every 50 ms: the last sample's timestamp (plain text, as a person would curl it); every 1 s
    the daemon's RSS."""
    last_ts: float | None = None
    next_rss = t_start
    next_report = t_start + report_every
    while (now := time.monotonic()) < stop_at:
        try:
            async with session.get(url, headers={"Accept-Encoding": "identity"}) as resp:
                body = await resp.read()
            m = _TS.search(body)
            if m is None:
                res.errors.append("monitor: no wattprint_last_sample_timestamp_seconds")
            else:
                ts = float(m.group(1))
                if ts != last_ts:
                    res.sample_ts.append(ts)
                    last_ts = ts
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            res.errors.append("monitor: " + type(e).__name__)
        if now >= next_rss:
            res.rss.append((now - t_start, rss_kb(pid)))
            next_rss += 1.0
        if report is not None and now >= next_report:
            report(res, now - t_start)
            next_report += report_every
        await asyncio.sleep(0.05)


def _load_main(base_url: str, pid: int, seconds: float, scrapers: int, period: float, warmup_s: float,
               report, report_every: float, seed: int) -> LoadResult:
    res = LoadResult(seconds=seconds, scrapers=scrapers, warmup_s=warmup_s)

    async def main() -> None:
        rng = random.Random(seed)
        conn = aiohttp.TCPConnector(limit=scrapers + 1, force_close=False)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout, auto_decompress=False,
                                         trust_env=False) as session:
            c0 = cpu_s(pid)
            t0 = time.monotonic()
            stop_at = t0 + seconds
            url = base_url + "/metrics"
            await asyncio.gather(_monitor(session, url, pid, t0, stop_at, res, report, report_every),
                                 *(_scraper(session, url, stop_at, period, res, rng) for _ in range(scrapers)))
            res.seconds = time.monotonic() - t0
            res.daemon_cpu_s = cpu_s(pid) - c0

    asyncio.run(main())
    return res


def _load_child(conn, args: tuple) -> None:
    try:
        conn.send(_load_main(*args))
    except BaseException as e:  # surfaced in the parent
        conn.send(e)
    finally:
        conn.close()


def run_load(base_url: str, pid: int, seconds: float, *, scrapers: int = SCRAPERS, period: float = SCRAPE_PERIOD,
             warmup_s: float = 5.0, report: Callable[[LoadResult, float], None] | None = None,
             report_every: float = 30.0, seed: int = 1) -> LoadResult:
    """``scrapers`` concurrent clients on /metrics for ``seconds``, one keep-alive connection each
    (as Prometheus), each scraping every ``period`` s from a random phase, plus the monitor. Runs
    in a process of its own (forked), so the load generator shares no interpreter lock with the
    caller's threads (the churning node, the engine servers). Returns every latency, every
    error, the sample timestamps and the RSS series."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_load_child, name="wattprint-load", daemon=True,
                       args=(child, (base_url, pid, seconds, scrapers, period, warmup_s, report, report_every, seed)))
    proc.start()
    child.close()
    try:
        if not parent.poll(seconds + 120):
            raise RuntimeError("the load generator did not finish")
        out = parent.recv()
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    if isinstance(out, BaseException):
        raise out
    return out


# --- a churning node: fixture procfs, simulated GPUs through pid files, vLLM metrics servers ----------

OTHER_COMMS = [("python3", ["python3", "batch_worker.py"]), ("sshd", ["sshd: admin"]), ("bash", ["-bash"]),
               ("containerd-shim", ["containerd-shim-runc-v2", "-id", "x"]), ("node_exporter", ["node_exporter"]),
               ("kworker/3:1", []), ("nginx", ["nginx: worker process"]), ("java", ["java", "-jar", "app.jar"])]


class EngineFarm:
    """``n`` vLLM-shaped /metrics servers on 127.0.0.1 in a thread of their own; counters grow with
    time so the exporter's normaliser has increments to hand over."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.ports: list[int] = []
        self.t0 = time.monotonic()
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine-farm", daemon=True)

    def start(self) -> "EngineFarm":
        self._thread.start()
        assert self._ready.wait(10), "engine farm did not start"
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self) -> None:
        self._runners = []
        for i in range(self.n):
            app = web.Application()
            app.router.add_get("/metrics", self._metrics(i))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.ports.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
            self._runners.append(runner)

    def _metrics(self, i: int):
        async def handler(request: web.Request) -> web.Response:
            self.requests += 1
            t = time.monotonic() - self.t0
            req, prompt, gen = int(t * (2 + i % 5)), int(t * 300), int(t * 900)
            model = f"model-{i}"
            text = (f"# TYPE vllm:request_success_total counter\n"
                    f'vllm:request_success_total{{finished_reason="stop",model_name="{model}"}} {req}.0\n'
                    f"# TYPE vllm:prompt_tokens_total counter\n"
                    f'vllm:prompt_tokens_total{{model_name="{model}"}} {prompt}.0\n'
                    f"# TYPE vllm:generation_tokens_total counter\n"
                    f'vllm:generation_tokens_total{{model_name="{model}"}} {gen}.0\n')
            return web.Response(text=text)
        return handler

    def stop(self) -> None:
        async def down() -> None:
            for r in self._runners:
                await r.cleanup()
        asyncio.run_coroutine_threadsafe(down(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class ChurningNode:
    """A node of ``n_procs`` processes in a fixture procfs: ``n_endpoints`` vLLM servers (server +
    ``VLLM::EngineCore`` GPU worker) spread over ``n_gpus`` simulated GPUs, the rest ordinary
    processes. ``tick()`` advances CPU time and RAPL energy; ``churn()`` restarts endpoints and
    replaces ordinary processes. Writes are atomic (rename), as procfs reads never see half a file."""

    def __init__(self, root: Path, ports: list[int], n_gpus: int = 8, n_procs: int = 200, seed: int = 7) -> None:
        self.root, self.proc, self.pids_dir = root, root / "proc", root / "pids"
        self.proc.mkdir(parents=True)
        self.pids_dir.mkdir()
        self.rng = random.Random(seed)
        self.ports, self.n_gpus = ports, n_gpus
        self.next_pid, self.uptime_ticks = 10_000, 1_000_000
        self.busy, self.idle = 10_000_000, 30_000_000
        self.procs: dict[int, dict] = {}            # pid -> {comm, ppid, ticks, start}
        self.endpoints: list[tuple[int, int]] = []  # endpoint -> (server pid, worker pid)
        self.restarts = self.exits = 0
        self.lock = threading.Lock()
        self.uj = 1_000_000
        make_powercap(root / "sys", {"intel-rapl:0": {"name": "package-0", "energy_uj": self.uj},
                                     "intel-rapl:0:0": {"name": "dram", "energy_uj": self.uj}})
        self._write_node_stat()
        for e in range(len(ports)):
            self.endpoints.append(self._start_endpoint(e))
        while len(self.procs) < n_procs:
            self._start_other()
        self.scenario = write_scenario(root / "sim.yaml", {"gpus": [
            {"name": "NVIDIA H100 80GB HBM3", "idle_w": 70, "max_w": 700, "memory_total_gib": 80,
             "processes": [{"pid_file": str(self._pid_file(e)), "memory_gib": 8 + 4 * (e // n_gpus),
                            "sm_util": 10 + 7 * (e // n_gpus)}
                           for e in range(len(ports)) if e % n_gpus == g]}
            for g in range(n_gpus)]})

    # --- the tree --------------------------------------------------------------------------
    def _pid_file(self, e: int) -> Path:
        return self.pids_dir / f"endpoint-{e}"

    def _atomic(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def _stat(self, pid: int) -> bytes:
        p = self.procs[pid]
        fields = ["S", str(p["ppid"])] + ["0"] * 9 + [str(p["ticks"]), "0"] + ["0"] * 6 + [str(p["start"])] + ["0"] * 30
        return f"{pid} ({p['comm']}) {' '.join(fields)}\n".encode()

    def _spawn(self, comm: str, argv: list[str], ppid: int = 1) -> int:
        pid = self.next_pid
        self.next_pid += 1
        self.uptime_ticks += 7
        self.procs[pid] = {"comm": comm, "ppid": ppid, "ticks": 0, "start": self.uptime_ticks}
        staging = self.proc / f".new-{pid}"
        staging.mkdir()
        (staging / "stat").write_bytes(self._stat(pid))
        (staging / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + (b"\0" if argv else b""))
        (staging / "cgroup").write_text("0::/system.slice/inference.service\n")
        os.rename(staging, self.proc / str(pid))  # appears whole
        return pid

    def _kill(self, pid: int) -> None:
        self.procs.pop(pid, None)
        dead = self.proc / f".dead-{pid}"
        os.rename(self.proc / str(pid), dead)  # disappears whole
        shutil.rmtree(dead)

    def _start_endpoint(self, e: int) -> tuple[int, int]:
        argv = ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", f"org/model-{e}",
                "--served-model-name", f"model-{e}", "--port", str(self.ports[e])]
        server = self._spawn("python3", argv)
        worker = self._spawn("VLLM::EngineCore", ["VLLM::EngineCore"], ppid=server)
        self._atomic(self._pid_file(e), f"{worker}\n".encode())  # now NVML reports it
        return server, worker

    def _start_other(self) -> int:
        comm, argv = self.rng.choice(OTHER_COMMS)
        return self._spawn(comm, argv)

    def _write_node_stat(self) -> None:
        per = "".join(f"cpu{i} 0 0 0 0 0 0 0 0 0 0\n" for i in range(16))
        self._atomic(self.proc / "stat", f"cpu  {self.busy} 0 0 {self.idle} 0 0 0 0 0 0\n{per}".encode())

    # --- time passes -------------------------------------------------------------------------
    def tick(self, dt: float) -> None:
        """``dt`` seconds of a 16-CPU node ~40 % busy; RAPL at ~180 W package, 20 W DRAM."""
        with self.lock:
            ticks = int(dt * 100)
            for pid, p in list(self.procs.items()):
                p["ticks"] += ticks if p["comm"] == "VLLM::EngineCore" else self.rng.randint(0, ticks // 4)
                self._atomic(self.proc / str(pid) / "stat", self._stat(pid))
            self.busy += int(16 * ticks * 0.4)
            self.idle += int(16 * ticks * 0.6)
            self._write_node_stat()
            self.uj += int(200 * dt * 1e6)
            for zone, share in (("intel-rapl:0", 0.9), ("intel-rapl:0:0", 0.1)):
                self._atomic(self.root / "sys/class/powercap" / zone / "energy_uj",
                             f"{int(self.uj * share) % 262143328850}\n".encode())

    def churn(self, endpoints: int = 2, others: int = 10) -> None:
        with self.lock:
            for e in self.rng.sample(range(len(self.endpoints)), endpoints):
                server, worker = self.endpoints[e]
                self._pid_file(e).unlink()  # NVML stops reporting the old worker
                self._kill(worker)
                self._kill(server)
                self.endpoints[e] = self._start_endpoint(e)
                self.restarts += 1
            keep = {pid for pair in self.endpoints for pid in pair}
            for pid in self.rng.sample(sorted(set(self.procs) - keep), others):
                self._kill(pid)
                self._start_other()
                self.exits += 1


class Churner:
    """A thread: tick every 0.25 s, churn every ``churn_s``."""

    def __init__(self, node: ChurningNode, churn_s: float) -> None:
        self.node, self.churn_s = node, churn_s
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, name="churner", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            last, next_churn = time.monotonic(), time.monotonic() + self.churn_s
            while not self.stop_flag.wait(0.25):
                now = time.monotonic()
                self.node.tick(now - last)
                last = now
                if now >= next_churn:
                    self.node.churn()
                    next_churn += self.churn_s
        except BaseException as e:  # surfaced by the test
            self.error = e

    def __enter__(self) -> "Churner":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        self.thread.join(10)


def start_churning_daemon(tmp: Path, n_endpoints: int = 32, extra: tuple[str, ...] = ()):
    """(daemon, node, farm): the farm serves the endpoints' metrics, the node is built, the daemon
    runs on it at a 1 s interval."""
    farm = EngineFarm(n_endpoints).start()
    node = ChurningNode(tmp / "node", farm.ports)
    d = start_daemon(tmp, f"--sample.interval={INTERVAL_S:g}s", "--gpu.backend=simulated",
                     f"--gpu.simulation-file={node.scenario}", f"--path.procfs={node.proc}",
                     f"--path.sysfs={node.root / 'sys'}", "--carbon.region=DE", "--engines.interval=2s",
                     "--log.level=warn", *extra)
    return d, node, farm


def check_daemon_clean(metrics: dict, log: str) -> list[str]:
    """What counts as an error after a load run: collector errors or down collectors, sampler
    exceptions, engine scrape errors, error lines or tracebacks in the log."""
    problems = []
    for labels, v in metrics.get("wattprint_collector_errors_total", {}).items():
        if v:
            problems.append(f"collector_errors_total{dict(labels)} = {v}")
    for labels, v in metrics.get("wattprint_collector_up", {}).items():
        if v != 1:
            problems.append(f"collector_up{dict(labels)} = {v}")
    for labels, v in metrics.get("wattprint_engine_scrape_errors_total", {}).items():
        if v:
            problems.append(f"engine_scrape_errors_total{dict(labels)} = {v}")
    for line in log.splitlines():
        if "level=error" in line or "Traceback" in line:
            problems.append(line[:300])
    return problems


def scenario_8gpu(n_gpus: int = 8, procs_per_gpu: int = 3) -> dict:
    return {"gpus": [{"name": "NVIDIA H100 80GB HBM3", "idle_w": 70, "max_w": 700,
                      "processes": [{"pid": 100000 + g * 10 + p, "memory_gib": 8, "sm_util": 10 + 5 * p}
                                    for p in range(procs_per_gpu)]} for g in range(n_gpus)]}


# --- the tests ---------------------------------------------------------------------------------------

def test_100_concurrent_scrapers(tmp_path):
    sim = write_scenario(tmp_path / "sim.yaml", scenario_8gpu())
    d = start_daemon(tmp_path, f"--sample.interval={INTERVAL_S:g}s", "--gpu.backend=simulated",
                     f"--gpu.simulation-file={sim}", "--carbon.region=DE", "--log.level=warn")
    try:
        res = run_load(d.url, d.proc.pid, LOAD_SECONDS)
        m = parse_metrics(d.get())
    finally:
        log = d.stop()
    s = res.summary(INTERVAL_S)
    print(f"\n100 concurrent scrapers, {LOAD_SECONDS:g} s: {s}")
    assert not res.errors, res.errors[:10]
    assert res.scrapes >= 0.5 * SCRAPERS * LOAD_SECONDS / SCRAPE_PERIOD  # it kept up with the offer
    assert value(m, "wattprint_samples_total") >= LOAD_SECONDS / INTERVAL_S * 0.8
    assert "Traceback" not in log and "level=error" not in log


def test_churning_node_under_load(tmp_path):
    d, node, farm = start_churning_daemon(tmp_path)
    try:
        with Churner(node, CHURN_S) as churner:
            res = run_load(d.url, d.proc.pid, LOAD_SECONDS, warmup_s=min(5.0, LOAD_SECONDS / 4))
        assert churner.error is None, churner.error
        time.sleep(2 * INTERVAL_S)
        m = parse_metrics(d.get())
    finally:
        log = d.stop()
        farm.stop()
    s = res.summary(INTERVAL_S)
    print(f"\nchurning node (8 GPUs, 200 processes, 32 endpoints, {node.restarts} restarts, "
          f"{node.exits} exits), {LOAD_SECONDS:g} s: {s}")
    assert not res.errors, res.errors[:10]
    problems = check_daemon_clean(m, log)
    assert not problems, problems
    # the node really is what it says
    assert value(m, "wattprint_processes_tracked") == 200
    endpoints = {dict(k)["endpoint"] for k in m["wattprint_endpoint_energy_joules_total"]}
    assert len({e for e in endpoints if e.startswith("vllm-")}) == 32, sorted(endpoints)
    assert len(m["wattprint_gpu_info"]) == 8 and node.restarts >= 2 * int(LOAD_SECONDS // CHURN_S) - 2
    assert value(m, "wattprint_engine_scrape_up") == 32
    assert value(m, "wattprint_endpoint_requests_total") > 0
    for comp in ("gpu", "cpu", "dram"):  # conservation holds through the churn
        assert value(m, "wattprint_endpoint_energy_joules_total", component=comp) == pytest.approx(
            value(m, "wattprint_node_energy_joules_total", component=comp), rel=1e-9)
    # timing and memory
    assert len(res.sample_ts) >= LOAD_SECONDS / INTERVAL_S * 0.8
    assert s["jitter_p99_ms"] < 0.1 * INTERVAL_S * 1000, s
    assert s["rss_growth_mb"] < 10, s
