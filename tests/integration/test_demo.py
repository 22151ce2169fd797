"""`wattprint demo --duration 30s`, run as a user runs it (issue 19): a SIMULATED node, servers
shaped like vLLM, Triton (two models) and SGLang, `wattprint serve` over them and Prometheus
(installed here), all real local processes.

Must show: every process it started is gone afterwards (psutil); the three endpoints have energy
and requests on the same label sets; the terminal view rendered; and the landing page, loaded in
a real headless browser (Debian's chromium), has the endpoints' rows, with a screenshot.

With ``WATTPRINT_SCREENSHOT_DIR`` set, the screenshot and the terminal view (SVG) are copied
there (``docs/images/landing.png``, ``docs/images/demo-terminal.svg``)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from support import ROOT, parse_metrics, still_alive

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium")
DURATION_S = 30
SERVERS = ("vllm", "triton", "sglang")


def _get(url: str, timeout: float = 3) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def chromium(tmp: Path, url: str, *mode: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Debian's chromium, headless, in its own process group (killed whole on a timeout)."""
    assert CHROMIUM, "Debian package 'chromium' is not installed (scripts/setup.sh test installs it)"
    profile = tmp / f"chromium-{len(list(tmp.glob('chromium-*')))}"
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--window-size=1280,900", *mode, url]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its helper processes too
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def rows(page: str) -> dict[str, list[str]]:
    """The landing page's endpoint rows: endpoint → its cells."""
    found = re.findall(r'<tr class="endpoint" data-endpoint="([^"]+)">(.*?)</tr>', page, re.S)
    return {f"{e} {i}": re.findall(r"<td>(.*?)</td>", body) for i, (e, body) in enumerate(found)}


def ready(page: str) -> bool:
    """Each server has a row with power and requests (the engines were scraped)."""
    return all(any(k.startswith(s + "-") and re.fullmatch(r"\d+ W", c[2]) and c[5].isdigit() for k, c in rows(page).items())
               for s in SERVERS)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    assert importlib.util.find_spec("rich"), "rich is not installed: scripts/setup.sh test installs wattprint[test,demo]"
    tmp = tmp_path_factory.mktemp("demo")
    svg = tmp / "demo-terminal.svg"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "demo", "--duration", f"{DURATION_S}s", "--svg", str(svg)],
                            cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    started: dict[int, tuple[float, str]] = {}  # every process the demo started: pid → (create time, cmdline)
    out = {"metrics": "", "dom": None, "shot": None}
    browsed, up = False, None
    deadline = time.monotonic() + DURATION_S + 60
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                children = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                children = []
            for c in children:  # the last command line seen (a fork shows its parent's until it execs)
                try:
                    created, cmd = c.create_time(), " ".join(c.cmdline())
                except psutil.Error:
                    continue
                if cmd or c.pid not in started:
                    started[c.pid] = (created, cmd)
            base = next((line.split(": ", 1)[1].strip() for line in lines if line.startswith("exporter: ")), None)
            if base and up is None:
                up = time.monotonic()
            if base:
                try:
                    out["metrics"] = _get(base + "metrics")
                    page = _get(base)
                except OSError:
                    page = ""
                if not browsed and ready(page) and time.monotonic() > up + 8:  # a few samples' worth in it
                    browsed = True  # the three servers' rows with power and requests: load it in a browser
                    out["dom"] = chromium(tmp, base, "--dump-dom")
                    shot = tmp / "landing.png"
                    out["shot"] = (chromium(tmp, base, f"--screenshot={shot}"), shot)
            time.sleep(0.5)
        rc = proc.wait(max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    if target := os.environ.get("WATTPRINT_SCREENSHOT_DIR"):
        Path(target).mkdir(parents=True, exist_ok=True)
        if out["shot"] and out["shot"][1].exists():
            shutil.copy(out["shot"][1], Path(target) / "landing.png")
        if svg.exists():
            shutil.copy(svg, Path(target) / "demo-terminal.svg")
    return {"rc": rc, "stdout": "".join(lines), "started": started, "svg": svg, **out}


def test_the_demo_ends_and_every_process_it_started_is_gone(demo):
    assert demo["rc"] == 0, demo["stdout"][-3000:]
    cmdlines = [cmd for _, cmd in demo["started"].values()]
    for what in ("bin/vllm serve", "bin/tritonserver --model-repository", "-m sglang.launch_server",
                 "-m exporter serve", "prometheus --config.file"):
        assert any(what in c for c in cmdlines), (what, cmdlines, demo["stdout"][-2000:])
    left = still_alive(demo["started"])
    assert not left, (left, demo["stdout"][-2000:])
    workdir = Path(re.search(r"Working directory (\S+)", demo["stdout"]).group(1))
    assert workdir.name.startswith("wattprint-demo-") and not workdir.exists()  # nothing left behind
    assert re.search(r"stopped all 5 processes it started", demo["stdout"]), demo["stdout"][-2000:]


def test_the_three_endpoints_have_energy_and_requests_on_the_same_label_sets(demo):
    m = parse_metrics(demo["metrics"])

    def by_endpoint(name: str) -> dict[tuple[str, str, str], float]:
        out: dict[tuple[str, str, str], float] = {}
        for labels, v in m.get(name, {}).items():
            d = dict(labels)
            k = (d["namespace"], d["endpoint"], d["model"])
            out[k] = out.get(k, 0.0) + v
        return out
    energy = by_endpoint("wattprint_endpoint_energy_joules_total")
    requests = by_endpoint("wattprint_endpoint_requests_total")
    co2e = by_endpoint("wattprint_endpoint_co2e_grams_total")
    for server in SERVERS:
        with_requests = {k for k, v in requests.items() if k[1].startswith(server + "-") and v > 0}
        assert with_requests, (server, sorted(requests))
        for k in with_requests:  # the same label set carries energy and CO2e: grams per request join
            assert energy.get(k, 0) > 0 and co2e.get(k, 0) > 0, (k, sorted(energy))
    triton_models = {k[2] for k in requests if k[1].startswith("triton-")}
    assert triton_models == {"simulated-chat", "simulated-embed"}
    # SIMULATED, said by the series themselves
    info = m["wattprint_gpu_info"]
    assert len(info) == 4 and all(dict(k)["backend"] == "simulated" and "SIMULATED" in dict(k)["name"] for k in info)
    assert any(dict(k)["endpoint"] == "unallocated" for k in m["wattprint_endpoint_energy_joules_total"])  # the idle GPU
    assert m.get("wattprint_counterfactual_co2e_grams_total"), "no candidate region priced"


def test_the_terminal_view_rendered(demo):
    out = demo["stdout"]
    assert "SIMULATED" in out
    for head in ("power", "energy", "CO2e/request", "idle share", "cleanest region", "it would save"):
        assert head in out, head
    for server in SERVERS:  # a table row per endpoint: │ vllm-PORT │ model │ … W │
        assert re.search(rf"│ {server}-\d+ +│ [^│]+│ +\d+ W │", out), server
    svg = demo["svg"].read_text()
    assert svg.startswith("<svg") and all(f"{s}-" in svg for s in SERVERS)


def test_the_landing_page_in_a_headless_browser_has_the_endpoints_rows(demo):
    assert demo["dom"] is not None, "the landing page never showed the three servers' rows:\n" + demo["stdout"][-2000:]
    dom = demo["dom"].stdout
    assert "<title>Wattprint</title>" in dom, demo["dom"].stderr[-2000:]
    assert ready(dom), rows(dom)  # in the browser's DOM: each server's row, with power and requests
    assert sum(k.startswith("triton-") and c[1] != "-" for k, c in rows(dom).items()) == 2  # Triton's two models
    vllm = next(c for k, c in rows(dom).items() if k.startswith("vllm-"))
    assert vllm[6].endswith("g"), vllm  # grams per request
    result, shot = demo["shot"]
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    assert png_size(shot) == (1280, 900)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


class Running:
    """`wattprint demo` without --duration, in its own session (as a shell's foreground job)."""

    def __init__(self, tmp: Path) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen([sys.executable, "-m", "exporter", "demo", "--without-prometheus"], cwd=tmp,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()
        self.started: dict[int, tuple[float, str]] = {}
        try:
            deadline = time.monotonic() + 60
            while not any(line.startswith("sglang: ") for line in self.lines):  # every URL printed: all up
                assert self.proc.poll() is None and time.monotonic() < deadline, "".join(self.lines)[-3000:]
                time.sleep(0.2)
            for c in psutil.Process(self.proc.pid).children(recursive=True):
                self.started[c.pid] = (c.create_time(), " ".join(c.cmdline()))
            servers = [cmd for _, cmd in self.started.values() if " -c " not in cmd]  # not the watchdog
            assert len(servers) == 4, self.started  # three servers and the exporter, no Prometheus
        except BaseException:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the demo stops its own
            self.wait()
            raise

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.reader.join(10)

    def left(self) -> list[str]:
        return still_alive(self.started)


def test_ctrl_c_stops_every_process(tmp_path):
    demo = Running(tmp_path)
    os.killpg(demo.proc.pid, signal.SIGINT)  # what Ctrl-C does: SIGINT to the foreground process group
    assert demo.wait() == 0, "".join(demo.lines)[-3000:]
    assert not demo.left()
    assert "stopped all 4 processes it started" in "".join(demo.lines)
    assert not Path(re.search(r"Working directory (\S+)", "".join(demo.lines)).group(1)).exists()


def test_a_server_that_dies_stops_the_demo_and_everything_else(tmp_path):
    demo = Running(tmp_path)
    vllm = next(pid for pid, (_, cmd) in demo.started.items() if "bin/vllm serve" in cmd)
    os.kill(vllm, signal.SIGKILL)
    assert demo.wait() == 1, "".join(demo.lines)[-3000:]
    out = "".join(demo.lines)
    assert "vllm exited with status -9" in out and "stopped all 4 processes it started" in out, out[-3000:]
    assert not demo.left()
    kept = Path(re.search(r"logs kept in (\S+)", out).group(1))  # for the one who has to find out why
    assert (kept / "vllm.log").exists() and (kept / "wattprint.log").exists()
    shutil.rmtree(kept)
