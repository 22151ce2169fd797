"""Shared helpers for tests: fixture sysfs/procfs trees, a real `wattprint serve` process, and a
real Prometheus (Debian package `prometheus`) scraping it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SIM = ROOT / "tests" / "fixtures" / "sim"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- fixture trees -------------------------------------------------------------------------

def make_powercap(root: Path, zones: dict[str, dict]) -> Path:
    """Build ``<root>/class/powercap/<zone>/{name,energy_uj,max_energy_range_uj}``.

    ``zones`` maps a directory name (``intel-rapl:0``) to {name, energy_uj, max_energy_range_uj}.
    """
    base = root / "class" / "powercap"
    for zone, z in zones.items():
        d = base / zone
        d.mkdir(parents=True, exist_ok=True)
        (d / "name").write_text(z["name"] + "\n")
        (d / "max_energy_range_uj").write_text(f"{z.get('max_energy_range_uj', 262143328850)}\n")
        (d / "energy_uj").write_text(f"{z.get('energy_uj', 0)}\n")
    return root


def set_energy(root: Path, zone: str, uj: int) -> None:
    path = root / "class" / "powercap" / zone / "energy_uj"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{uj}\n")
    os.replace(tmp, path)  # atomic, like a sysfs read never sees half a number


def stat_line(pid: int, comm: str, ppid: int, ticks: int, start: int = 100) -> str:
    """A /proc/<pid>/stat line with utime=ticks, stime=0 and the given starttime."""
    fields = ["S", str(ppid)] + ["0"] * 9 + [str(ticks), "0"] + ["0"] * 6 + [str(start)] + ["0"] * 30
    return f"{pid} ({comm}) " + " ".join(fields) + "\n"


def make_procfs(root: Path, procs: dict[int, dict], cpu_busy: int, cpu_idle: int, ncpu: int = 4) -> Path:
    """A procfs tree: ``stat`` (aggregate and per-CPU lines) and per-pid stat/cmdline/cgroup.

    ``procs``: pid -> {comm, ppid, ticks, cmdline: list, cgroup: str, start}.
    """
    root.mkdir(parents=True, exist_ok=True)
    per = [f"cpu{i} 0 0 0 0 0 0 0 0 0 0" for i in range(ncpu)]
    (root / "stat").write_text(f"cpu  {cpu_busy} 0 0 {cpu_idle} 0 0 0 0 0 0\n" + "\n".join(per) + "\n")
    for pid, p in procs.items():
        d = root / str(pid)
        d.mkdir(exist_ok=True)
        (d / "stat").write_text(stat_line(pid, p.get("comm", "proc"), p.get("ppid", 1), p.get("ticks", 0),
                                          p.get("start", 100)))
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in p.get("cmdline", [])) + b"\0")
        (d / "cgroup").write_text(p.get("cgroup", "0::/user.slice\n"))
    return root


def write_scenario(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# --- a real wattprint serve ------------------------------------------------------------------

@dataclass
class Daemon:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str = "/metrics", timeout: float = 5) -> str:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return r.read().decode()

    def stop(self) -> str:
        """Stop the daemon and return its log. The last exposition first goes through
        ``promtool check metrics`` (the linter Prometheus ships): every scenario a test drives
        must expose lint-clean metrics (raised unless the test is already failing)."""
        problems = ""
        if self.proc.poll() is None and PROMTOOL is not None and sys.exc_info()[0] is None:
            try:
                problems = promtool_lint(self.get())
            except OSError:
                problems = ""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if problems:
            raise AssertionError(f"promtool check metrics: {problems}")
        return self.log.read_text()


def promtool_lint(text: str) -> str:
    """promtool's complaints about an exposition ("" when clean)."""
    out = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    return "" if out.returncode == 0 else (out.stdout + out.stderr).strip()


def start_daemon(tmp: Path, *args: str, env: dict | None = None, ready_timeout: float = 20,
                 nofile: tuple[int, int] | None = None, command: str = "serve") -> Daemon:
    """A real `wattprint serve` (or another ``command``: `wattprint intensity`) on a free port,
    once ready; ``nofile``: its (soft, hard) RLIMIT_NOFILE."""
    port = free_port()
    log = tmp / f"wattprint-{port}.log"
    cmd = [sys.executable, "-m", "exporter", command, f"--web.listen-address=127.0.0.1:{port}", *args]
    fh = open(log, "w")

    def limits() -> None:
        if nofile is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, **(env or {})}, preexec_fn=limits)
    d = Daemon(proc, port, log)
    deadline = time.time() + ready_timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"wattprint exited with {proc.returncode}:\n{log.read_text()}")
        try:
            d.get("/readyz", timeout=1)
            return d
        except OSError:
            time.sleep(0.1)
    d.stop()
    raise RuntimeError(f"wattprint not ready in {ready_timeout}s:\n{log.read_text()}")


def parse_metrics(text: str) -> dict[str, dict[frozenset, float]]:
    """Exposition text → {name: {frozenset(labels): value}} with prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[frozenset, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
    return out


def value(metrics: dict, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for k, v in metrics.get(name, {}).items() if want <= k)


# --- a real Prometheus -----------------------------------------------------------------------

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


@dataclass
class Prometheus:
    proc: subprocess.Popen
    port: int
    dir: Path

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        q = {"query": expr}
        if at is not None:
            q["time"] = f"{at:.3f}"
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(q)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_for(self, expr: str, timeout: float = 60, min_results: int = 1) -> list[dict]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            res = self.query(expr)
            if len(res) >= min_results:
                return res
            time.sleep(0.5)
        raise AssertionError(f"Prometheus: no result for {expr!r} in {timeout}s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_prometheus(tmp: Path, targets: list[str], scrape_interval: str = "1s",
                     rule_files: list[str] | None = None, alertmanagers: list[str] | None = None,
                     args: list[str] | None = None, tsdb: Path | None = None, *,
                     external_labels: dict[str, str] | None = None, remote_write: list[str] | None = None,
                     agent: bool = False, target_labels: dict[str, str] | None = None,
                     scrape_configs: list[dict] | None = None) -> Prometheus:
    """A real Prometheus scraping ``targets`` (job "wattprint") on 127.0.0.1, on a free port, once
    ready. ``tsdb``: an existing storage directory (e.g. blocks written by ``promtool tsdb
    create-blocks-from``) instead of a new one. ``agent``: agent mode (no local queries; it
    remote-writes to ``remote_write`` URLs, with ``external_labels``). ``target_labels``: labels every
    scraped series gets (as a Kubernetes scrape config's relabelling adds ``node``).
    ``scrape_configs``: these jobs instead of the one static "wattprint" job."""
    assert PROMETHEUS, "Debian package 'prometheus' is not installed (scripts/test.sh installs it)"
    port = free_port()
    d = tmp / f"prom-{port}"
    d.mkdir()
    cfg: dict = {"global": {"scrape_interval": scrape_interval},
                 "scrape_configs": scrape_configs or [{"job_name": "wattprint", "static_configs": [
                     {"targets": targets, **({"labels": target_labels} if target_labels else {})}]}]}
    if not agent:
        cfg["global"]["evaluation_interval"] = scrape_interval
    if external_labels:
        cfg["global"]["external_labels"] = external_labels
    if remote_write:
        cfg["remote_write"] = [{"url": u, "queue_config": {"batch_send_deadline": "1s"}} for u in remote_write]
    if rule_files:
        cfg["rule_files"] = rule_files
    if alertmanagers:
        cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": alertmanagers}]}]}
    (d / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    check = subprocess.run([PROMTOOL, "check", "config", *(["--agent"] if agent else []), str(d / "prometheus.yml")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    log = open(d / "prometheus.log", "w")
    storage = ["--enable-feature=agent", f"--storage.agent.path={d / 'wal'}"] if agent else \
        [f"--storage.tsdb.path={tsdb or d / 'tsdb'}"]
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={d / 'prometheus.yml'}", *storage,
                             f"--web.listen-address=127.0.0.1:{port}", *(args or [])],
                            stdout=log, stderr=subprocess.STDOUT)
    p = Prometheus(proc, port, d)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1)
            return p
        except OSError:
            time.sleep(0.2)
    p.stop()
    raise RuntimeError("Prometheus did not become ready:\n" + (d / "prometheus.log").read_text())


# Test-only rewrite of the rules' windows: a series younger than its rate() window reads low
# (rate over 5m of 75 s of data ≈ a quarter of the power), so the previews would show a ramp.
WINDOWS = {"[5m]": "[20s]", "[1h]": "[60s]"}


def fast_rules(tmp: Path, windows: dict[str, str] | None = None) -> Path:
    """The project's rules file with group intervals of 1 s, alert `for:` of 2 s and the rate
    windows of the recording rules shortened (``windows``, default WINDOWS; {}: as they are);
    names and expressions otherwise as is."""
    windows = WINDOWS if windows is None else windows
    rules = yaml.safe_load((ROOT / "rules" / "wattprint.rules.yaml").read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for r in group["rules"]:
            if "for" in r:
                r["for"] = "2s"
            if "record" in r:
                for old, new in windows.items():
                    r["expr"] = r["expr"].replace(old, new)
    out = tmp / "rules.yaml"
    out.write_text(yaml.safe_dump(rules, sort_keys=False))
    return out


def process_tree(pids: set[int]) -> set[int]:
    """``pids`` and all their descendants, from /proc."""
    out, found = set(pids), True
    while found:
        found = False
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) not in out:
                try:
                    ppid = int(open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid in out:
                    out.add(int(name))
                    found = True
    return out


def still_alive(started: dict[int, tuple[float, str]]) -> list[str]:
    """Of the processes seen (pid → (create time, command line)), the very ones (same create
    time: not a reused pid) still running, zombies aside: ``"PID COMMAND"`` each."""
    import psutil

    out = []
    for pid, (created, cmd) in started.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{pid} {cmd}")
        except psutil.NoSuchProcess:
            pass
    return out


def procfs_view(root: Path, pids: set[int]) -> Path:
    """A procfs tree holding the node's /proc/stat and only ``pids`` and their descendants
    (symlinks into /proc): a daemon reading it sees only those processes, as a node would see
    only its own. Their CPU time still counts in the node's busy time."""
    root.mkdir()
    (root / "stat").symlink_to("/proc/stat")
    for pid in process_tree(pids):
        (root / str(pid)).symlink_to(f"/proc/{pid}")
    return root


def stop_all(procs: list[subprocess.Popen], timeout: float = 5) -> None:
    """Terminate child processes and make sure they are gone (kill after ``timeout``)."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout)


def drive_completions(url: str, stop: "threading.Event", prompt: str = "hello world", max_tokens: int = 8) -> None:
    """A request generator for the vLLM-format stand-in: POST completions until ``stop`` is set."""
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens}).encode()
    while not stop.is_set():
        try:
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=10).read()
        except OSError:
            time.sleep(0.2)


def cpu_meter(sysfs: Path | None, model):
    """The CPU meter the daemon's auto choice would give: RAPL over ``sysfs`` when usable, else
    the estimate over ``model`` (exporter.sensors.registry.open_cpu does the same from a config)."""
    from exporter.sensors.cpu_estimate import EstimateMeter
    from exporter.sensors.rapl import RaplMeter

    if sysfs is not None:
        meter = RaplMeter(str(sysfs))
        if meter.usable:
            return meter
    return EstimateMeter(model)


# --- a simulated node under simulated inference traffic --------------------------------------

TRAFFIC_ENGINE = ROOT / "tests" / "fixtures" / "engines" / "traffic_engine.py"


def traffic_spec(a: float, b: float, seed: int, **extra: float) -> dict:
    """A GPU's ``traffic:`` block (exporter/sensors/simtraffic.py): known prefill and decode costs,
    rates redrawn every second, 10 % quiet seconds, 3 % power noise."""
    return {"seed": seed, "prefill_j_per_token": a, "decode_j_per_token": b, "segment_s": 1.0,
            "prompt_tokens_per_s": [0, 6000], "generation_tokens_per_s": [0, 1200], "quiet_share": 0.1,
            "noise": 0.03, **extra}


def start_traffic_node(tmp: Path, specs: list[dict], restart_at: dict[int, float] | None = None,
                       lead_s: float = 1.0, other_gpus: list[dict] | None = None,
                       start_unix: float | None = None, model_prefix: str = "sim/model-",
                       host: str = "", port: int | None = None, **scenario: Any) -> tuple[Path, list[subprocess.Popen], float]:
    """One simulated H100 per traffic spec, each held by a vLLM-shaped server started as
    ``vllm serve <model_prefix><i> --port N`` (tests/fixtures/engines/traffic_engine.py) serving the
    counters of the same schedule, after ``other_gpus`` (scenario GPUs of the caller's own).
    Returns (scenario file, server processes, the schedule's time 0 as a Unix time).
    ``restart_at``: spec index → seconds at which that server's counters restart. ``host`` and
    ``port``: the servers' ``--host`` (one loopback address per simulated node lets replicas on
    several "nodes" share a port, as on real hosts) and ``--port`` (default: a free one each)."""
    (tmp / "bin").mkdir(exist_ok=True)
    vllm = tmp / "bin" / "vllm"
    vllm.write_text(f"#!{sys.executable}\nimport runpy, sys; sys.argv[0] = {str(TRAFFIC_ENGINE)!r}; "
                    f"runpy.run_path({str(TRAFFIC_ENGINE)!r}, run_name='__main__')\n")
    vllm.chmod(0o755)
    start = start_unix if start_unix is not None else time.time() + lead_s
    before = list(other_gpus or [])
    scenario_file = write_scenario(tmp / "sim.yaml", {**scenario, "start_unix": start, "gpus": before + [
        {"name": "NVIDIA H100 80GB HBM3", "idle_w": 70, "max_w": 700, "traffic": t,
         "processes": [{"pid_file": str(tmp / f"pid{i}"), "memory_gib": 20, "sm_util": 50}]}
        for i, t in enumerate(specs)]})
    procs: list[subprocess.Popen] = []
    try:
        for i in range(len(specs)):
            env = {"SIM_TRAFFIC": f"{scenario_file}:{len(before) + i}", "SIM_PID_FILE": str(tmp / f"pid{i}"),
                   "PATH": "/usr/bin:/bin"}
            if restart_at and i in restart_at:
                env["SIM_RESTART_AT_S"] = str(restart_at[i])
            listen = ["--port", str(port or free_port())] + (["--host", host] if host else [])
            procs.append(subprocess.Popen([str(vllm), "serve", f"{model_prefix}{i}", *listen],
                                          env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / f"e{i}.log", "w")))
        deadline = time.time() + 20
        while not all((tmp / f"pid{i}").exists() for i in range(len(specs))):
            if time.time() > deadline:
                raise RuntimeError("traffic engines did not start: " +
                                   " | ".join((tmp / f"e{i}.log").read_text() for i in range(len(specs))))
            time.sleep(0.1)
    except BaseException:
        stop_all(procs)
        raise
    return scenario_file, procs, start


# 10× faster than production, every setting alike: samples 1 s → 0.1 s, engine scrapes 5 s → 0.5 s,
# windows 10 s → 1 s (traffic changes every 1 s: 10 s)
FAST_MARGINAL_ARGS = ("--sample.interval=100ms", "--engines.interval=500ms", "--marginal.window=1s")
