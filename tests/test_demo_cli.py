"""`wattprint demo`'s bad input, refused before it starts anything: --duration, --gpus and --port
out of bounds (argparse's usage line and exit status 2, naming the argument), the exporter's
--port already taken and --with-prometheus without Prometheus (exit status 1, naming what is
wrong). Real processes: `python -m exporter demo`, as a user runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from support import ROOT

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def demo(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", "demo", *args], capture_output=True, text=True,
                          timeout=60, env=env or ENV, cwd=ROOT)


def workdirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("wattprint-demo-*"))


@pytest.mark.parametrize("args, says", [
    (["--duration", "abc"], "argument --duration: not a duration: 'abc'"),
    (["--duration=-5s"], "argument --duration: not a duration: '-5s'"),
    (["--duration", "-5s"], "argument --duration: expected one argument"),  # argparse: -5s reads as an option
    (["--duration", "0"], "argument --duration: '0': must be more than 0"),
    (["--duration", "0s"], "argument --duration: '0s': must be more than 0"),
    (["--gpus", "0"], "argument --gpus: 0: must be 3 to 16 (one GPU for each of the 3 servers)"),
    (["--gpus", "1"], "argument --gpus: 1: must be 3 to 16"),
    (["--gpus", "100"], "argument --gpus: 100: must be 3 to 16"),
    (["--gpus", "x"], "argument --gpus: not a whole number: 'x'"),
    (["--port", "70000"], "argument --port: 70000: must be 0 to 65535"),
    (["--port", "-1"], "argument --port: -1: must be 0 to 65535"),
])
def test_bad_arguments_are_usage_errors_naming_the_argument(args, says):
    before = workdirs()
    r = demo(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("usage: wattprint demo") and f"wattprint demo: error: {says}" in r.stderr, r.stderr
    assert r.stdout == "" and workdirs() <= before  # nothing started, nothing made


def test_good_durations_parse():
    from exporter.demo import _duration

    assert (_duration("30s"), _duration("1m"), _duration("30"), _duration("500ms")) == (30.0, 60.0, 30.0, 0.5)


def test_the_exporters_port_already_in_use_is_named_and_nothing_is_started():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        before = workdirs()
        r = demo("--port", str(port), "--duration", "5s", "--without-prometheus")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"wattprint demo: --port {port}: cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr
    assert "Working directory" not in r.stdout and workdirs() <= before


def test_with_prometheus_without_prometheus_installed_is_an_error_before_anything_starts():
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "prometheus").exists())
    r = demo("--with-prometheus", "--duration", "5s", env={**ENV, "PATH": path})
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "wattprint demo: --with-prometheus: no `prometheus` on PATH" in r.stderr
    assert "Working directory" not in r.stdout


def test_an_svg_path_that_cannot_be_written_is_an_error_before_anything_starts(tmp_path):
    r = demo("--svg", str(tmp_path / "no-such-dir" / "out.svg"), "--duration", "5s", "--without-prometheus")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"wattprint demo: --svg {tmp_path / 'no-such-dir' / 'out.svg'}: cannot write there" in r.stderr
    assert "Working directory" not in r.stdout
