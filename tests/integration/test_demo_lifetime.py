"""`wattprint demo` stopped the hard ways: killed with SIGKILL (no chance to clean up), hung up
(SIGHUP, its terminal closed), Ctrl-C twice, SIGTERM while it is still starting; and a server that
forks. Every process it started, grandchildren included, must be gone within a few seconds, and
its working directory with them; real processes, checked with psutil."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from support import ROOT, still_alive

pytestmark = pytest.mark.integration

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
GONE_WITHIN_S = 10.0


def _gone(started: dict[int, tuple[float, str]], within: float = GONE_WITHIN_S) -> list[str]:
    """What is still alive of ``started`` after ``within`` seconds ([] as soon as all are gone)."""
    end = time.monotonic() + within
    while (left := still_alive(started)) and time.monotonic() < end:
        time.sleep(0.1)
    return left


class Demo:
    """`wattprint demo` in its own session (as a shell's job), stdout read by a thread."""

    def __init__(self, tmp: Path, *args: str, env: dict | None = None) -> None:
        args = args if "--with-prometheus" in args else ("--without-prometheus", *args)
        self.proc = subprocess.Popen([sys.executable, "-m", "exporter", "demo", *args],
                                     cwd=tmp, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()
        self.started: dict[int, tuple[float, str]] = {}

    @property
    def out(self) -> str:
        return "".join(self.lines)

    def record(self) -> None:
        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return
        for c in kids:
            try:
                self.started[c.pid] = (c.create_time(), " ".join(c.cmdline()))
            except psutil.Error:
                pass

    def wait_until(self, ok, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while not ok():
            assert self.proc.poll() is None and time.monotonic() < end, self.out[-3000:]
            self.record()
            time.sleep(0.1)
        self.record()

    def up(self) -> None:
        self.wait_until(lambda: any(line.startswith("sglang: ") for line in self.lines))

    def workdir(self) -> Path:
        return Path(re.search(r"Working directory (\S+)", self.out).group(1))

    def wait(self, timeout: float = 40) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.reader.join(10)


@pytest.fixture
def demo(tmp_path):
    made: list[Demo] = []

    def make(*args: str, env: dict | None = None) -> Demo:
        made.append(Demo(tmp_path, *args, env=env))
        return made[-1]
    yield make
    for d in made:  # a failed test leaves nothing either (only the very processes it started)
        d.cleanup()
        for left in still_alive(d.started):
            try:
                os.kill(int(left.split()[0]), signal.SIGKILL)
            except OSError:
                pass


def test_sigkill_on_the_demo_leaves_no_process_and_no_working_directory(demo):
    d = demo()
    d.up()
    servers = [c for _, c in d.started.values() if "serve" in c or "tritonserver" in c or "sglang" in c]
    assert len(servers) == 4, d.started
    d.proc.kill()  # SIGKILL: no handler runs, no finally
    d.proc.wait()
    assert not _gone(d.started), d.out[-2000:]
    end = time.monotonic() + GONE_WITHIN_S
    while d.workdir().exists() and time.monotonic() < end:
        time.sleep(0.1)
    assert not d.workdir().exists()


def test_sighup_stops_everything_with_status_0(demo):
    d = demo()
    d.up()
    os.killpg(d.proc.pid, signal.SIGHUP)  # its terminal closed
    assert d.wait() == 0, d.out[-3000:]
    assert "stopping (SIGHUP)" in d.out and "stopped all 4 processes it started" in d.out, d.out[-2000:]
    assert not still_alive(d.started)
    assert not d.workdir().exists()


def test_ctrl_c_twice_quickly_still_stops_everything(demo):
    d = demo()
    d.up()
    os.killpg(d.proc.pid, signal.SIGINT)
    d.wait_until(lambda: "stopping (SIGINT)" in d.out, timeout=10)
    os.killpg(d.proc.pid, signal.SIGINT)  # the second Ctrl-C, during the stop
    os.killpg(d.proc.pid, signal.SIGINT)  # and a third
    assert d.wait() == 0, d.out[-3000:]
    assert "stopped all 4 processes it started" in d.out and "Traceback" not in d.out, d.out[-3000:]
    assert not still_alive(d.started)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_during_start_up_stops_what_was_started(demo, sig):
    d = demo()
    # the first server started, the exporter not yet ready
    d.wait_until(lambda: any("bin/vllm" in c for _, c in d.started.values()), timeout=30)
    os.killpg(d.proc.pid, sig)
    assert d.wait() == 0, d.out[-3000:]
    assert f"stopping ({sig.name})" in d.out and "Traceback" not in d.out, d.out[-3000:]
    assert re.search(r"stopped all \d processes it started", d.out), d.out[-3000:]
    assert not still_alive(d.started)
    assert not d.workdir().exists()


FORKING = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from exporter.demo.run import Processes
    procs = Processes(workdir=Path(sys.argv[1]))
    # a server that forks: its children stay in its process group
    procs.start("forking", ["sh", "-c", "sleep 300 & sleep 300 & wait"], Path(sys.argv[1]) / "forking.log")
    procs.start("plain", [sys.executable, "-c", "import time; time.sleep(300)"], Path(sys.argv[1]) / "plain.log")
    print("started", flush=True)
    time.sleep(300)
""")


def test_a_forking_servers_children_do_not_outlive_a_killed_demo(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", FORKING, str(work)], env=ENV, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        started: dict[int, tuple[float, str]] = {}
        end = time.monotonic() + 10
        while sum("sleep 300" == " ".join(c) for _, c in started.values()) < 2 and time.monotonic() < end:
            for c in psutil.Process(proc.pid).children(recursive=True):
                try:
                    started[c.pid] = (c.create_time(), c.cmdline())
                except psutil.Error:
                    pass
            time.sleep(0.1)
        grandchildren = [pid for pid, (_, c) in started.items() if c == ["sleep", "300"]]
        assert len(grandchildren) == 2, started
        proc.kill()
        proc.wait()
        assert not _gone({p: (t, " ".join(c)) for p, (t, c) in started.items()})
        assert not work.exists()  # the working directory goes too
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_port_taken_between_choosing_and_binding_it_is_replaced(monkeypatch):
    """The demo chooses its servers' and the exporter's ports free, then they bind them: another
    program (another demo) may take one in between. That server then starts again on another."""
    import io
    import socket

    from rich.console import Console

    from exporter.demo import run

    busy = [socket.socket() for _ in range(2)]
    for s in busy:
        s.bind(("127.0.0.1", 0))
        s.listen()
    taken = [s.getsockname()[1] for s in busy]
    calls = []
    real = run.free_port

    def racy_free_port() -> int:  # the 1st (vLLM's) and the 5th (the exporter's) are taken meanwhile
        calls.append(real())
        return {1: taken[0], 5: taken[1]}.get(len(calls), calls[-1])
    monkeypatch.setattr(run, "free_port", racy_free_port)
    monkeypatch.setenv("PYTHONPATH", ENV["PYTHONPATH"])
    demo = run.Demo(run.Options(prometheus=False), Console(file=io.StringIO()))
    try:
        demo.start_servers()
        demo.start_exporter()
        ports = {k: int(u.split(":")[2].split("/")[0]) for k, u in demo.urls.items()}
        assert set(ports) >= {"vllm", "triton", "sglang", "exporter"} and not set(ports.values()) & set(taken), ports
        assert len(demo.procs.children) == 4 and demo.procs.dead() is None
        assert run._http_ok(demo.urls["metrics"]) and run._http_ok(demo.urls["vllm"])
    finally:
        assert demo.procs.stop() == []
        demo.procs.close()
        shutil.rmtree(demo.dir, ignore_errors=True)
        for s in busy:
            s.close()


def _path_without_prometheus() -> str:
    return os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "prometheus").exists())


def test_prometheus_failing_to_start_stops_everything_with_a_clear_error(demo, tmp_path):
    real = "/usr/bin/prometheus"
    assert os.access(real, os.X_OK), "Debian package 'prometheus' is not installed"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # the real Prometheus, refusing to start (an unknown flag: it exits 1 saying so)
    (bin_dir / "prometheus").write_text(f'#!/bin/sh\nexec {real} --no-such-flag "$@"\n')
    (bin_dir / "prometheus").chmod(0o755)
    d = demo("--with-prometheus", "--duration", "20s",
             env={**ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    d.wait_until(lambda: d.proc.poll() is not None or any("prometheus" in c for _, c in d.started.values()))
    assert d.wait() == 1, d.out[-3000:]
    assert "wattprint demo: prometheus exited with status 1" in d.out and "no-such-flag" in d.out, d.out[-3000:]
    assert "stopped all 5 processes it started" in d.out, d.out[-3000:]
    assert not still_alive(d.started)
    kept = Path(re.search(r"logs kept in (\S+)", d.out).group(1))
    assert (kept / "prometheus.log").exists()
    shutil.rmtree(kept)


def test_without_prometheus_installed_the_demo_runs_and_says_so():
    r = subprocess.run([sys.executable, "-m", "exporter", "demo", "--duration", "1s"], capture_output=True, text=True,
                       timeout=60, env={**ENV, "PATH": _path_without_prometheus()})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Prometheus: not started (no `prometheus` on PATH" in r.stdout
    assert "stopped all 4 processes it started" in r.stdout


def test_two_demos_at_once_each_see_only_their_own_servers(demo):
    """Two demos on one machine: their own working directories, ports and servers; each exporter's
    simulated node holds only its own demo's three servers (its procfs view), not the other's."""
    import urllib.request

    from support import parse_metrics

    a, b = demo(), demo()
    a.up()
    b.up()
    assert a.workdir() != b.workdir()

    def urls(d: Demo) -> dict[str, str]:
        return dict(re.findall(r"^(\w+): (http://\S+)$", d.out, re.M))

    def endpoints(d: Demo) -> set[str]:
        with urllib.request.urlopen(urls(d)["metrics"], timeout=5) as r:
            m = parse_metrics(r.read().decode())
        return {dict(k)["endpoint"] for k in m.get("wattprint_endpoint_energy_joules_total", {})} - {"unallocated", "system"}

    def own(d: Demo) -> set[str]:  # vLLM and SGLang are named by their --port, Triton by its --http-port
        cmds = [c for _, c in d.started.values()]
        vllm = next(re.search(r"--port (\d+)", c).group(1) for c in cmds if "bin/vllm serve" in c)
        triton = next(re.search(r"--http-port (\d+)", c).group(1) for c in cmds if "tritonserver" in c)
        sglang = next(re.search(r"--port (\d+)", c).group(1) for c in cmds if "sglang.launch_server" in c)
        return {f"vllm-{vllm}", f"triton-{triton}", f"sglang-{sglang}"}

    end = time.monotonic() + 30
    while not (endpoints(a) == own(a) and endpoints(b) == own(b)) and time.monotonic() < end:
        time.sleep(0.5)
    time.sleep(3)  # a few samples more: the other demo's servers (busy on the CPU) never show up
    assert endpoints(a) == own(a) and endpoints(b) == own(b), (endpoints(a), own(a), endpoints(b), own(b))
    assert not own(a) & own(b)
    for d in (a, b):
        os.killpg(d.proc.pid, signal.SIGINT)
    assert a.wait() == 0 and b.wait() == 0, (a.out[-2000:], b.out[-2000:])
    assert not still_alive(a.started) and not still_alive(b.started)
