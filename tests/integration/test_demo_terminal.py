"""`wattprint demo`'s view wherever it runs: piped (not a terminal), on a real terminal (a pty),
on a dumb one (TERM=dumb: no cursor movement, so no live redraw), and narrow (60 columns, where
the ten-column table cannot fit: one block an endpoint instead). Each renders every endpoint's
numbers readably, without a traceback, and ends with the summary."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from support import ROOT

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
SGR = re.compile(r"\x1b\[[0-9;]*m|\x1b\][^\x07]*\x07")  # colours, links
MOVES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")  # cursor movements, erasures


def run_on_pty(env: dict, cols: int, timeout: float = 60) -> tuple[int, str]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, cols, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "demo", "--duration", "3s", "--without-prometheus"],
                            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, start_new_session=True)
    os.close(slave)
    out = b""
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(10), out.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_piped(env: dict) -> tuple[int, str]:
    r = subprocess.run([sys.executable, "-m", "exporter", "demo", "--duration", "3s", "--without-prometheus"],
                       capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    return r.returncode, r.stdout + r.stderr


def every_endpoint_readable(out: str, cols: int | None) -> None:
    text = MOVES.sub("\n", SGR.sub("", out))  # a redraw's cursor movements: line breaks
    assert "Traceback" not in text, text[-3000:]
    assert "stopped all 4 processes it started" in re.sub(r"\s+", " ", text), text[-3000:]
    for server in ("vllm", "triton", "sglang"):  # its row (table) or block (narrow), with its power in watts
        assert re.search(rf"{server}-\d+ +│[^\n]*│ +\d+ W │", text) or \
            re.search(rf"{server}-\d+ · [^\n]+\n+ +power \d+ W · energy \d+ J", text), (server, text[-3000:])
    if cols is not None:  # the view (after the URLs, printed whole so that they can be copied) fits
        view = text[text.rindex("sglang: http"):].split("\n", 1)[1]
        assert max(len(line) for line in view.splitlines()) <= cols, view[-3000:]


@pytest.mark.integration
@pytest.mark.parametrize("how, term, cols", [
    ("pipe", None, 60),      # COLUMNS=60, piped
    ("pty", "dumb", None),   # a dumb terminal (rich: 80 columns): the last view at the end, no live redraw
    ("pty", "xterm-256color", 60),  # a narrow real terminal, live
])
def test_the_view_renders_readably(how, term, cols):
    env = {k: v for k, v in ENV.items() if k not in ("COLUMNS", "LINES", "TERM")}
    if term:
        env["TERM"] = term
    if how == "pipe":
        env["COLUMNS"] = str(cols)
        rc, out = run_piped(env)
    else:
        rc, out = run_on_pty(env, cols or 160)
    assert rc == 0, out[-3000:]
    every_endpoint_readable(out, cols)


def test_a_narrow_console_gets_blocks_a_wide_one_the_table():
    """exporter/demo/view.render: the table where every cell fits on a line, else one block an
    endpoint; markup in a model name stays text in both."""
    from rich.console import Console

    from exporter import endpoint_table
    from exporter.demo import view

    row = endpoint_table.Row(namespace="", endpoint="vllm-8000", model="[bold]m[/]", power_w=130.0, energy_j=1300.0,
                             idle_j=130.0, co2e_g=0.5, operational_g=0.4, requests=10.0,
                             best_region="gcp:europe-north1", best_region_g=0.05)
    for width in (60, 200):
        console = Console(file=io.StringIO(), width=width, record=True)
        console.print(view.render([row], "title", "caption", console))
        text = console.export_text()
        assert max(len(line) for line in text.splitlines()) <= width
        cells = endpoint_table.cells(row)
        for cell in cells:  # every number shown, whole (a line never breaks a block's pair)
            assert cell in text, (width, cell, text)
        assert ("┃ endpoint" in text) == (width >= view.width_needed([row]))


@pytest.mark.integration
def test_its_terminal_hanging_up_stops_everything_and_leaves_nothing(tmp_path):
    """The terminal closes (the pty's other end gone: every write fails with EIO) and SIGHUP
    comes: every process it started stops, its working directory goes, no traceback."""
    import psutil

    from support import still_alive

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    env = {**{k: v for k, v in ENV.items() if k not in ("COLUMNS", "LINES")}, "TERM": "xterm-256color"}
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "demo", "--without-prometheus"],
                            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=tmp_path, start_new_session=True)
    os.close(slave)
    out, started = b"", {}
    try:
        end = time.monotonic() + 60
        while b"sglang: " not in out:
            assert proc.poll() is None and time.monotonic() < end, out.decode(errors="replace")[-3000:]
            if select.select([master], [], [], 0.5)[0]:
                out += os.read(master, 65536)
        time.sleep(2)  # the live view drawing
        for c in psutil.Process(proc.pid).children(recursive=True):
            started[c.pid] = (c.create_time(), " ".join(c.cmdline()))
        workdir = Path(re.search(rb"Working directory (\S+)", SGR.sub("", out.decode(errors="replace")).encode())
                       .group(1).decode())
        os.close(master)  # hung up
        master = None
        os.kill(proc.pid, signal.SIGHUP)
        assert proc.wait(40) == 0
        assert not still_alive(started)
        assert not workdir.exists()
    finally:
        if master is not None:
            os.close(master)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
