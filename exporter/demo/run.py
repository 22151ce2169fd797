"""``wattprint demo``: the whole product on one machine without a GPU.

It starts, as real local processes, each in its own process group:

- a SIMULATED GPU node: ``--gpus`` simulated H100s (``--gpu.backend=simulated``, a scenario
  written here; every GPU series names the GPU ``SIMULATED …`` and carries
  ``backend="simulated"``, and the exporter's log says so);
- three inference servers shaped like vLLM, Triton (two models) and SGLang
  (:mod:`exporter.demo.engines`), each on its own GPU under varying simulated traffic with a
  quiet period every ``QUIET_EVERY_S`` (idle cost shows), started with the upstream command lines
  so that the exporter discovers them as it discovers real ones; further GPUs hold no process;
- ``wattprint serve`` over them, with carbon accounting and candidate regions;
- with ``--with-prometheus``, or when Prometheus is installed (Debian's ``prometheus``), a
  Prometheus with the project's rules, on 127.0.0.1.

It shows a live table per endpoint (:mod:`exporter.demo.view`) refreshed every sample, until
``--duration`` ends, Ctrl-C, SIGTERM or SIGHUP; then, or when one of its processes dies, it stops
every process group it started, waits for them and checks that none of their processes remains.
Should the demo itself be killed (SIGKILL: no handler runs), each process gets SIGTERM from the
kernel (PR_SET_PDEATHSIG) and the watchdog process (:data:`WATCHDOG`) stops every group it was
told of, a server's own children included, and removes the working directory. Ports are chosen
free and chosen again when taken before a server binds one (another demo on the machine).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from . import engines, view
from .. import endpoint_table

GPU_NAME = "SIMULATED NVIDIA H100 80GB HBM3"
QUIET_EVERY_S, QUIET_FOR_S = 30.0, 8.0  # every 30 s, the last 8 without traffic
SAMPLE_S = 1.0
REGION = "aws:us-east-1"
CANDIDATES = ["gcp:europe-north1", "aws:eu-west-3", "country:POL"]
# (kind, served model names, prefill J/token, decode J/token, seed): one server a GPU
SERVERS = [
    ("vllm", ["SIMULATED/Qwen3-8B"], 0.010, 0.12, 19),
    ("triton", ["simulated-chat", "simulated-embed"], 0.006, 0.20, 23),
    ("sglang", ["SIMULATED/Llama-3.1-8B-Instruct"], 0.012, 0.10, 29),
]
STOP_TIMEOUT_S = 5.0
PORT_TRIES = 3  # a port chosen free but taken before the server binds it: a fresh one, this many times a server


class DemoError(RuntimeError):
    pass


class ChildDied(DemoError):
    def __init__(self, child: "Child") -> None:
        super().__init__(f"{child.name} exited with status {child.proc.returncode}:\n{child.tail()}")
        self.child = child


class _Stop(Exception):
    """Ctrl-C, SIGTERM or SIGHUP: stop."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
OUTPUT_GONE = (errno.EIO, errno.EPIPE)  # writing to a hung-up terminal, to a closed pipe


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def _port_taken(child: "Child") -> bool:
    """Whether ``child`` exited because its address was in use (its log says so)."""
    return child.proc.returncode == engines.ADDRESS_IN_USE or "address already in use" in child.tail().lower()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent(parent: int) -> Any:
    """A preexec_fn: the child gets SIGTERM when the demo dies (PR_SET_PDEATHSIG, kept across
    exec), and exits at once when the demo died before it was set (its parent is then another)."""
    def preexec() -> None:  # in the child, before exec: no thread has been started yet
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:
            os._exit(1)
    return preexec


# The watchdog: a process of its own (own process group, deaf to Ctrl-C and hang-ups) that learns
# each process group the demo starts ("+PGID" / "-PGID" on its stdin) and the demo's working
# directory ("dPATH"). When its stdin ends without the demo's "." (the demo was killed: SIGKILL
# included), it stops every group still there, the servers' own children (same group) too:
# SIGTERM, then SIGKILL after STOP_TIMEOUT_S; then removes the working directory.
WATCHDOG = """
import os, shutil, signal, sys, time
for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
    signal.signal(s, signal.SIG_IGN)
groups, workdir = set(), None
for line in sys.stdin:
    op, arg = line[:1], line[1:].rstrip("\\n")
    if op == ".":
        sys.exit(0)
    if op == "d":
        workdir = arg
    else:
        (groups.add if op == "+" else groups.discard)(int(arg))
def alive(g):
    try:
        os.killpg(g, 0)
        return True
    except OSError:
        return False
for sig in (signal.SIGTERM, signal.SIGKILL):
    groups = {g for g in groups if alive(g)}
    for g in groups:
        try:
            os.killpg(g, sig)
        except OSError:
            pass
    end = time.monotonic() + %r
    while time.monotonic() < end and any(alive(g) for g in groups):
        time.sleep(0.05)
if workdir:
    shutil.rmtree(workdir, ignore_errors=True)
"""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log: Path

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class Processes:
    """The processes the demo started, each the leader of its own process group."""

    children: list[Child] = field(default_factory=list)
    workdir: Path | None = None  # removed by the watchdog if the demo is killed
    watchdog: subprocess.Popen | None = None

    def _tell(self, line: str) -> None:
        if self.watchdog is None:
            self.watchdog = subprocess.Popen([sys.executable, "-c", WATCHDOG % STOP_TIMEOUT_S], stdin=subprocess.PIPE,
                                             stdout=subprocess.DEVNULL, process_group=0, text=True)
        try:
            self.watchdog.stdin.write(line + "\n")
            self.watchdog.stdin.flush()
        except OSError:  # it died: the stop below is still done by the demo itself
            pass

    def close(self) -> None:
        """After stop(): the watchdog ends (nothing left for it to stop), leaving the working
        directory to the demo."""
        if self.watchdog is not None:
            self._tell(".")
            try:
                self.watchdog.stdin.close()
            except OSError:
                pass
            try:
                self.watchdog.wait(STOP_TIMEOUT_S * 3)
            except subprocess.TimeoutExpired:
                self.watchdog.kill()
                self.watchdog.wait()

    def start(self, name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> Child:
        if self.watchdog is None:  # before the first server: none outlives the demo
            self._tell(f"d{self.workdir}" if self.workdir else "-0")
        fh = open(log, "wb")
        try:
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                    env=env, cwd=cwd, process_group=0, preexec_fn=_die_with_parent(os.getpid()))
        finally:
            fh.close()
        self._tell(f"+{proc.pid}")
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def forget(self, child: Child) -> None:
        """A child that exited at start and is replaced (it is gone: nothing to stop)."""
        child.proc.wait()
        self.children.remove(child)
        self._tell(f"-{child.proc.pid}")

    def dead(self) -> Child | None:
        return next((c for c in self.children if c.proc.poll() is not None), None)

    def stop(self) -> list[str]:
        """SIGTERM to every group (last started first), SIGKILL to what is left after
        STOP_TIMEOUT_S; wait for the leaders; returns what could not be stopped ([] when all
        are gone)."""
        for c in reversed(self.children):
            _signal_group(c.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for c in reversed(self.children):
            try:
                c.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for c in self.children:
            if _group_alive(c.proc.pid) or c.proc.poll() is None:
                _signal_group(c.proc.pid, signal.SIGKILL)
        left = []
        for c in self.children:
            try:
                c.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                left.append(f"{c.name} (pid {c.proc.pid})")
            end = time.monotonic() + STOP_TIMEOUT_S
            while _group_alive(c.proc.pid) and time.monotonic() < end:
                time.sleep(0.05)
            if _group_alive(c.proc.pid):
                left.append(f"{c.name}'s process group {c.proc.pid}")
            else:
                self._tell(f"-{c.proc.pid}")  # gone: the watchdog must not signal the group id again
        return left


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    """Whether any process (zombies aside) is still in process group ``pgid``."""
    import psutil

    for p in psutil.process_iter(["status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(p.pid) == pgid:
                return True
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return False


def scenario(gpus: int, directory: Path, start_unix: float) -> dict[str, Any]:
    """The simulated node: one traffic-driven GPU per demo server, then idle ones."""
    out = []
    for i in range(gpus):
        gpu: dict[str, Any] = {"name": GPU_NAME, "idle_w": 70, "max_w": 700, "memory_total_gib": 80}
        if i < len(SERVERS):
            kind, _, a, b, seed = SERVERS[i]
            gpu["traffic"] = {"seed": seed, "prefill_j_per_token": a, "decode_j_per_token": b, "segment_s": 1.0,
                              "prompt_tokens_per_s": [500, 6000], "generation_tokens_per_s": [100, 1200],
                              "quiet_share": 0.05, "noise": 0.03, "quiet_every_s": QUIET_EVERY_S,
                              "quiet_for_s": QUIET_FOR_S}
            gpu["processes"] = [{"pid_file": str(directory / f"{kind}.pid"), "memory_gib": 40, "sm_util": 50}]
        else:
            gpu["processes"] = []
        out.append(gpu)
    return {"driver_version": "550.54.15", "start_unix": start_unix, "gpus": out}


def _http_ok(url: str) -> bool:
    try:
        view.scrape(url, timeout=1.0)
        return True
    except OSError:
        return False


@dataclass
class Options:
    gpus: int = 4
    duration_s: float | None = None
    prometheus: bool | None = None  # None: when installed
    port: int = 0
    svg: str | None = None


def preflight(opts: Options) -> str | None:
    """What stops the demo before it starts anything, in words; None when nothing does."""
    if opts.prometheus and shutil.which("prometheus") is None:
        return "--with-prometheus: no `prometheus` on PATH (Debian: apt-get install prometheus)"
    if opts.svg is not None:
        parent = Path(opts.svg).resolve().parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            return f"--svg {opts.svg}: cannot write there (no writable directory {parent})"
    if opts.port:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the exporter binds: only a listener is in the way
            try:
                s.bind(("127.0.0.1", opts.port))
            except OSError as e:
                return f"--port {opts.port}: cannot listen on 127.0.0.1:{opts.port}: {e.strerror or e}"
    return None


class Demo:
    def __init__(self, opts: Options, console: Any) -> None:
        self.opts, self.console = opts, console
        self.dir = Path(tempfile.mkdtemp(prefix="wattprint-demo-"))
        self.procs = Processes(workdir=self.dir)
        self.urls: dict[str, str] = {}
        self.start_unix = 0.0
        self.signals: list[int] = []  # the stop signals received, by the handler of main()

    def check(self) -> None:
        """Raise _Stop once a stop signal came: signals only set a flag, so that one arriving
        while a process starts (between its fork and its record) cannot lose it."""
        if self.signals:
            raise _Stop(self.signals[0])

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            self.check()
            if (left := end - time.monotonic()) <= 0:
                return
            time.sleep(min(0.1, left))

    def _wait(self, what: str, ok: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            self.check()
            if (dead := self.procs.dead()) is not None:
                raise ChildDied(dead)
            if time.monotonic() > deadline:
                raise DemoError(f"{what} not ready in {timeout:.0f}s")
            time.sleep(0.1)

    # --- starting ---------------------------------------------------------------------------
    def _env(self, **extra: str) -> dict[str, str]:
        root = str(Path(engines.__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (extra.pop("PYTHONPATH", ""), root, os.environ.get("PYTHONPATH", "")) if p)
        return {**os.environ, "PYTHONPATH": path, **extra}

    def start_servers(self) -> None:
        self.launch = engines.launchers(self.dir)
        sim = self.dir / "scenario.yaml"
        self.start_unix = time.time() + 1.0
        sim.write_text(yaml.safe_dump(scenario(self.opts.gpus, self.dir, self.start_unix)))
        self.sim = sim
        pending = {i: self._launch_server(i) for i in range(len(SERVERS))}  # all at once, then wait
        retries = PORT_TRIES * len(SERVERS)
        while pending:
            i = min(pending)
            child, url = pending[i]
            pid_file = self.dir / f"{SERVERS[i][0]}.pid"
            try:  # up: its own pid written (after its bind) and its metrics served
                self._wait(f"the {child.name} server", lambda: _pid_in(pid_file) == child.proc.pid and _http_ok(url), 30)
            except ChildDied as e:
                died = next((k for k, (c, _) in pending.items() if c is e.child), None)
                if died is None or not _port_taken(e.child) or retries <= 0:
                    raise
                retries -= 1  # its port was taken between choosing and binding it: another one
                self.procs.forget(e.child)
                pending[died] = self._launch_server(died)
                continue
            self.urls[child.name] = url
            del pending[i]

    def _launch_server(self, i: int) -> tuple[Child, str]:
        """Start SERVERS[i] on fresh free ports: (its process, its metrics URL)."""
        kind, models, *_rest = SERVERS[i]
        launch = self.launch
        port = free_port()
        if kind == "vllm":
            argv = [*launch["vllm"], "serve", models[0], "--port", str(port)]
            url = f"http://127.0.0.1:{port}/metrics"
        elif kind == "triton":
            repo = self.dir / "models"
            for m in models:  # a model repository: one directory a model, a version directory in it
                (repo / m / "1").mkdir(parents=True, exist_ok=True)
                (repo / m / "config.pbtxt").write_text(f'name: "{m}"\nbackend: "python"\n')
            metrics = free_port()
            argv = [*launch["triton"], "--model-repository", str(repo), "--http-port", str(port),
                    "--metrics-port", str(metrics)]
            url = f"http://127.0.0.1:{metrics}/metrics"
        else:
            argv = [*launch["sglang"], "--model-path", models[0], "--port", str(port), "--enable-metrics"]
            url = f"http://127.0.0.1:{port}/metrics"
        env = self._env(SIM_TRAFFIC=f"{self.sim}:{i}", SIM_PID_FILE=str(self.dir / f"{kind}.pid"),
                        PYTHONPATH=str(self.dir / "py"))
        return self.procs.start(kind, argv, self.dir / f"{kind}.log", env=env, cwd=self.dir), url

    def procfs(self) -> Path:
        """A procfs holding the node's /proc/stat and only the demo's servers (links into /proc):
        the simulated node is theirs alone, whatever else runs on this machine (a real vLLM, another
        demo), as a GPU node runs only its own servers. Their CPU time still counts in the node's."""
        root = self.dir / "proc"
        shutil.rmtree(root, ignore_errors=True)  # made again for a restarted exporter
        root.mkdir()
        (root / "stat").symlink_to("/proc/stat")
        for c in self.procs.children:
            (root / str(c.proc.pid)).symlink_to(f"/proc/{c.proc.pid}")
        return root

    def _up(self, what: str, start: Any, timeout: float, fixed_port: bool = False) -> None:
        """``start()`` → (its process, whether it is ready), waited for; started again on a fresh
        port when the one chosen was taken before it could bind it (not a port the user chose)."""
        for attempt in range(PORT_TRIES):
            child, ready = start()
            try:
                self._wait(what, ready, timeout)
                return
            except ChildDied as e:
                if e.child is not child or fixed_port or not _port_taken(child) or attempt + 1 == PORT_TRIES:
                    raise
                self.procs.forget(child)

    def start_exporter(self) -> None:
        cfg = self.dir / "wattprint.yaml"
        cfg.write_text(yaml.safe_dump({"carbon": {"region": REGION, "counterfactual_regions": CANDIDATES}}))

        def start() -> tuple[Child, Any]:
            port = self.opts.port or free_port()
            argv = [sys.executable, "-m", "exporter", "serve", f"--web.listen-address=127.0.0.1:{port}",
                    "--gpu.backend=simulated", f"--gpu.simulation-file={self.sim}",
                    f"--sample.interval={SAMPLE_S:g}s", "--engines.interval=1s", f"--config.file={cfg}",
                    f"--path.procfs={self.procfs()}"]
            child = self.procs.start("wattprint serve", argv, self.dir / "wattprint.log", env=self._env(), cwd=self.dir)
            self.urls["exporter"] = f"http://127.0.0.1:{port}/"
            return child, lambda: _http_ok(self.urls["exporter"] + "readyz")
        self._up("wattprint serve", start, 60, fixed_port=bool(self.opts.port))
        base = self.urls["exporter"].rstrip("/")
        self.urls["metrics"] = base + "/metrics"

    def start_prometheus(self) -> None:
        binary = shutil.which("prometheus")
        if self.opts.prometheus is None and binary is None:
            self.console.print("Prometheus: not started (no `prometheus` on PATH; Debian: apt-get install prometheus)",
                               highlight=False, soft_wrap=True)
        if self.opts.prometheus is False or (self.opts.prometheus is None and binary is None):
            return
        if binary is None:
            raise DemoError("--with-prometheus: no `prometheus` on PATH (Debian: apt-get install prometheus)")
        from .. import rules

        (self.dir / "wattprint.rules.yaml").write_text(rules.generate())
        target = self.urls["metrics"].split("//", 1)[1].split("/", 1)[0]
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
            "rule_files": [str(self.dir / "wattprint.rules.yaml")],
            "scrape_configs": [{"job_name": "wattprint", "static_configs": [{"targets": [target]}]}]}))

        def start() -> tuple[Child, Any]:
            port = free_port()
            argv = [binary, f"--config.file={self.dir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.dir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"]
            child = self.procs.start("prometheus", argv, self.dir / "prometheus.log", cwd=self.dir)
            self.urls["prometheus"] = f"http://127.0.0.1:{port}/"
            return child, lambda: _http_ok(self.urls["prometheus"] + "-/ready")
        self._up("Prometheus", start, 60)

    # --- running ----------------------------------------------------------------------------
    def phase(self) -> str:
        t = time.time() - self.start_unix
        return "quiet period: no traffic, idle cost only" if t % QUIET_EVERY_S >= QUIET_EVERY_S - QUIET_FOR_S \
            else "traffic"

    def frame(self, rows: list[endpoint_table.Row], elapsed: float, console: Any = None) -> Any:
        until = f" of {self.opts.duration_s:g}s" if self.opts.duration_s else " (Ctrl-C stops)"
        title = (f"[bold]Wattprint demo[/] — [bold yellow]SIMULATED[/] node: {self.opts.gpus} × {GPU_NAME} · "
                 f"{elapsed:.0f}s{until} · {self.phase()}")
        caption = (f"exporter {self.urls.get('exporter', '')} · grid {REGION} · cleanest of "
                   f"{', '.join(CANDIDATES)}" + (f" · Prometheus {self.urls['prometheus']}" if "prometheus" in self.urls else ""))
        return view.render(rows, title, caption, console or self.console)

    def loop(self) -> list[endpoint_table.Row]:
        from rich.live import Live

        started = time.monotonic()
        prev: tuple[float, dict] | None = None
        rows: list[endpoint_table.Row] = []
        live = Live(self.frame(rows, 0.0), console=self.console, refresh_per_second=4,
                    auto_refresh=False) if self.console.is_terminal and not self.console.is_dumb_terminal else None
        next_print = started + 10.0
        if live is not None:
            live.start()
        try:
            while True:
                if (dead := self.procs.dead()) is not None:
                    raise ChildDied(dead)
                now = time.monotonic()
                elapsed = now - started
                try:
                    cur = (now, view.parse(view.scrape(self.urls["metrics"])))
                except (OSError, ValueError) as e:
                    self.console.print(f"[red]reading {self.urls['metrics']}: {e}[/]")
                else:
                    rows = endpoint_table.rows(cur[1], prev[1] if prev else None, cur[0] - prev[0] if prev else 0.0)
                    prev = cur
                if self.opts.duration_s is not None and elapsed >= self.opts.duration_s:
                    return rows
                frame = self.frame(rows, elapsed)
                if live is not None:
                    live.update(frame, refresh=True)
                elif now >= next_print:  # not a terminal (a pipe, a log): a table every 10 s
                    self.console.print(frame)
                    next_print = now + 10.0
                self.sleep(max(0.05, SAMPLE_S - (time.monotonic() - now)))
        finally:
            if live is not None:
                live.stop()
            self.last = (rows, time.monotonic() - started)
            self.last_frame = self.frame(*self.last)

    def run(self) -> int:
        con = self.console
        self.last_frame: Any = None
        status = 0
        try:
            con.print(f"[bold yellow]SIMULATED[/] GPUs: {self.opts.gpus} × {GPU_NAME} (--gpu.backend=simulated): "
                      "every number below comes from a test double, not from hardware. Working directory "
                      f"{self.dir}", soft_wrap=True)
            self.start_servers()
            self.check()
            self.start_exporter()
            self.check()
            self.start_prometheus()
            for name in ("exporter", "metrics", "prometheus"):
                if name in self.urls:
                    con.print(f"{name}: {self.urls[name]}", highlight=False, soft_wrap=True)
            if "prometheus" in self.urls:
                con.print("  with the rules (wattprint rules): try wattprint:endpoint_co2e_grams_per_request:5m, "
                          "wattprint:endpoint_idle_share:5m", highlight=False, soft_wrap=True)
            for kind, *_ in SERVERS:
                con.print(f"{kind}: {self.urls[kind]}", highlight=False, soft_wrap=True)
            self.loop()
        except (KeyboardInterrupt, _Stop) as e:
            con.print(f"stopping ({_signal_name(e)}) …", highlight=False)
        except DemoError as e:
            con.print(f"[red]wattprint demo: {e}[/]", highlight=False)
            status = 1
        except OSError as e:  # its terminal hung up: nothing left to show, stop as on SIGHUP
            if e.errno not in OUTPUT_GONE:
                raise
        finally:
            left = self.procs.stop()  # a second Ctrl-C only sets the flag again: it cannot cut this short
            self.procs.close()
            svg_error = None
            if self.opts.svg and self.last_frame is not None:
                try:
                    self._svg(*self.last)
                except OSError as e:
                    svg_error = e
            status = 1 if left or svg_error else status
            if not status:
                shutil.rmtree(self.dir, ignore_errors=True)
            try:
                self._report(left, svg_error, status)
            except OSError as e:
                if e.errno not in OUTPUT_GONE:
                    raise
        return status

    def _report(self, left: list[str], svg_error: OSError | None, status: int) -> None:
        con = self.console
        if self.last_frame is not None and (not con.is_terminal or con.is_dumb_terminal):
            con.print(self.last_frame)
        if svg_error is not None:
            con.print(f"[red]wattprint demo: --svg {self.opts.svg}: {svg_error.strerror or svg_error}[/]",
                      highlight=False)
        if left:
            con.print(f"[red]wattprint demo: could not stop {', '.join(left)}[/]")
        else:
            con.print(f"stopped all {len(self.procs.children)} processes it started "
                      f"({', '.join(c.name for c in self.procs.children)})")
        if status:
            con.print(f"logs kept in {self.dir}", highlight=False, soft_wrap=True)

    def _svg(self, rows: list[endpoint_table.Row], elapsed: float) -> None:
        from rich.console import Console

        with open(os.devnull, "w") as sink:
            rec = Console(record=True, width=160, file=sink, force_terminal=True)
            rec.print(self.frame(rows, elapsed, rec))
        rec.save_svg(self.opts.svg, title="wattprint demo")


def _signal_name(e: BaseException) -> str:
    if isinstance(e, _Stop) and e.args:
        return signal.Signals(e.args[0]).name
    return "SIGINT"


def main(opts: Options) -> int:
    from rich.console import Console

    old = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        console = Console(highlight=False)
        if not console.is_terminal and "COLUMNS" not in os.environ:
            console = Console(highlight=False, width=160)  # a pipe or a log: the whole table on a line
        signals: list[int] = []  # handled from here on: a stop before the first process is not lost
        for s in STOP_SIGNALS:
            signal.signal(s, lambda signum, frame: signals.append(signum))
        demo = Demo(opts, console)
        demo.signals = signals
        return demo.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
