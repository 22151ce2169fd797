"""Fault injection: every fault, one at a time, on the real Sampler (fake monotonic clock, fixture
procfs/sysfs trees, the simulated NVML) or on the real component that meets it (EngineScraper
against real aiohttp servers on 127.0.0.1, IntensityService, the HTTP handlers).

For each fault three things are checked:

1. the loop goes on: later samples happen and ``wattprint_samples_total`` keeps counting;
2. the fault is visible in the exporter's own metrics (``wattprint_collector_up``,
   ``wattprint_collector_errors_total{kind}``, ``wattprint_gpu_energy_resets_total``,
   ``wattprint_engine_scrape_errors_total``, ``wattprint_carbon_info``, the age gauge);
3. no joule is lost or counted twice: Σ endpoint energy == node energy per component in every
   sample, and GPU/CPU energy == the simulator's (or the fixture's) ground truth wherever the
   fault lets the truth be known.

Not here: the Kubernetes API answering 500/410/hanging (tests/test_identity_kubernetes.py), the
web server under load (tests/integration/test_load.py), hostile input text (tests/test_fuzz.py).
The bugs these tests found are listed, with their fixes, in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pynvml
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from pynvml import NVMLError

from exporter.carbon import accounting
from exporter.carbon.providers import Provider, ProviderError, Reading
from exporter.engine_scraper import EngineScraper, ScrapeState, Target
from exporter.identity.resolver import Resolver, Workload
from exporter.sampler import Sampler
from exporter.sensors.cpu_estimate import CpuPowerModel, EstimateMeter
from exporter.sensors.nvml import GpuMeter
from exporter.sensors.procfs import ProcessTable
from exporter.sensors.rapl import RaplMeter
from exporter.sensors.simnvml import SimulatedNVML
from exporter.server import make_app
from support import ROOT, cpu_meter, make_powercap, make_procfs, parse_metrics, set_energy, value, write_scenario

T0 = 500.0  # the fake monotonic clock's start; the simulated NVML counts elapsed time from it
MAX_RANGE_UJ = 262_143_328_850  # a real package zone's max_energy_range_uj
VLLM = ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "meta-llama/Llama-3.1-8B",
        "--port", "8001"]
SGLANG = ["python", "-m", "sglang.launch_server", "--model-path", "Qwen/Qwen2.5-7B", "--port", "30000"]
H100 = {"name": "NVIDIA H100 80GB HBM3", "idle_w": 100, "max_w": 700}


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FaultNode:
    """A fake node driven sample by sample: procfs and powercap trees rewritten before each sample,
    the simulated NVML (optionally behind a wrapper that injects faults), the real Sampler.

    ``advance()`` moves time and the hardware counters, ``sample()`` takes one sample and checks
    that it happened; ``step()`` does both. The RAPL counter keeps counting while its file is gone,
    like the hardware does."""

    def __init__(self, tmp: Path, gpus: list[dict], procs: dict[int, dict], *, rapl: bool = True,
                 wrap=None, carbon=None, library: str = "present", scenario: dict | None = None,
                 rapl_range_uj: int = MAX_RANGE_UJ, rapl_limit_w: float | None = None) -> None:
        self.tmp, self.clock, self.procs = tmp, Clock(), procs
        self.rapl_range_uj = rapl_range_uj
        self.busy, self.idle = 1000, 1000
        make_procfs(tmp / "proc", procs, self.busy, self.idle)
        self.uj = 5_000_000
        self.zone = tmp / "sys" / "class" / "powercap" / "intel-rapl:0"
        if rapl:
            make_powercap(tmp / "sys", {"intel-rapl:0": {"name": "package-0", "energy_uj": self.uj,
                                                         "max_energy_range_uj": rapl_range_uj}})
            if rapl_limit_w is not None:
                (self.zone / "constraint_0_power_limit_uw").write_text(f"{int(rapl_limit_w * 1e6)}\n")
        scenario = write_scenario(tmp / "sim.yaml", {"library": library, "gpus": gpus, **(scenario or {})})
        self.sim = SimulatedNVML.from_file(str(scenario), self.clock)
        self.lib = wrap(self.sim) if wrap else self.sim
        gpu = GpuMeter(self.lib, backend="simulated")
        gpu.open()
        self.sampler = Sampler(gpu=gpu, cpu=cpu_meter(tmp / "sys" if rapl else None, CpuPowerModel(4, 1.0, 5.0)),
                               procs=ProcessTable(str(tmp / "proc"), full_scan_every=1),  # every pid read each sample
                               resolver=Resolver(), interval_s=1.0, clock=self.clock, carbon=carbon)
        self.cpu_true_j = 0.0
        self.sample()  # the priming sample: energy is counted from here
        self.t_first = self.clock.t

    def advance(self, dt: float = 1.0, cpu_w: float = 40.0, ticks: dict | None = None,
                busy: int = 150, idle: int = 250) -> None:
        self.clock.t += dt
        for pid, n in (ticks or {}).items():
            if pid in self.procs:
                self.procs[pid]["ticks"] = self.procs[pid].get("ticks", 0) + n
        self.busy, self.idle = self.busy + busy, self.idle + idle
        make_procfs(self.tmp / "proc", self.procs, self.busy, self.idle)
        self.uj = (self.uj + int(cpu_w * dt * 1e6)) % self.rapl_range_uj
        self.cpu_true_j += cpu_w * dt
        if (self.zone / "energy_uj").exists() and os.access(self.zone / "energy_uj", os.W_OK):
            set_energy(self.tmp / "sys", "intel-rapl:0", self.uj)

    def sample(self) -> dict:
        before = self.sampler.samples
        self.sampler.sample()  # a fault must never make sample() raise
        assert self.sampler.samples == before + 1, "the sample did not happen"
        m = self.metrics()
        assert value(m, "wattprint_samples_total") == self.sampler.samples
        assert_conserved(m)
        return m

    def step(self, **kw) -> dict:
        self.advance(**kw)
        return self.sample()

    def metrics(self) -> dict:
        return parse_metrics(self.sampler.metrics_text())

    def gpu_truth(self, index: int) -> float:
        return self.sim.true_energy_j(index, self.t_first - T0, self.clock.t - T0)


def assert_conserved(m: dict) -> None:
    """Σ endpoint energy == node energy, per component, to floating-point precision."""
    for comp in ("gpu", "cpu", "dram"):
        node = value(m, "wattprint_node_energy_joules_total", component=comp)
        attributed = value(m, "wattprint_endpoint_energy_joules_total", component=comp)
        assert attributed == pytest.approx(node, rel=1e-9, abs=1e-6), comp
    node_g = value(m, "wattprint_node_co2e_grams_total", scope="operational")
    ep_g = value(m, "wattprint_endpoint_co2e_grams_total", scope="operational")
    assert ep_g == pytest.approx(node_g, rel=1e-9, abs=1e-9)


def up(m: dict, collector: str) -> float:
    return m["wattprint_collector_up"][frozenset({("collector", collector)})]


def errors(m: dict, collector: str, kind: str | None = None) -> float:
    return value(m, "wattprint_collector_errors_total", collector=collector,
                 **({"kind": kind} if kind else {}))


def gpu_j(m: dict, gpu: str | None = None) -> float:
    return value(m, "wattprint_gpu_energy_joules_total", **({"gpu": gpu} if gpu else {}))


# --- NVML: one GPU errors mid-run ----------------------------------------------------------------

@pytest.mark.parametrize("call", ["all", "energy", "processes"])
@pytest.mark.parametrize("error,kind", [("GPU_IS_LOST", "gpu_is_lost"), ("UNKNOWN", "unknown"),
                                        ("TIMEOUT", "timeout")])
def test_nvml_error_on_one_gpu_mid_run(tmp_path, error, kind, call):
    faulty = {**H100, "processes": [{"pid": 20, "memory_gib": 10, "sm_util": 50}],
              "faults": [{"call": call, "error": error, "after_s": 3.5, "for_s": 4}]}
    healthy = {**H100, "processes": [{"pid": 10, "memory_gib": 30, "sm_util": 80}]}
    node = FaultNode(tmp_path, [healthy, faulty], {10: {"comm": "python3", "cmdline": VLLM},
                                                  20: {"comm": "python", "cmdline": SGLANG}})
    for _ in range(3):
        node.step(ticks={10: 20, 20: 10})
    frozen = gpu_j(node.metrics(), "1")
    degrades = call == "processes"  # a secondary field degrades alone: the energy is still booked
    counted = f"processes_{kind}" if degrades else kind
    for i in range(4):  # samples at 4, 5, 6, 7 s: inside the fault window
        m = node.step(ticks={10: 20, 20: 10})
        assert up(m, "gpu") == (1 if degrades else 0)
        assert errors(m, "gpu", counted) == i + 1  # one per failing GPU per sample
        if degrades:
            assert gpu_j(m, "1") == pytest.approx(node.gpu_truth(1), rel=1e-9)
        else:
            assert gpu_j(m, "1") == frozen  # the failing GPU is skipped, nothing invented
        assert gpu_j(m, "0") == pytest.approx(node.gpu_truth(0), rel=1e-9)  # the others go on
    for _ in range(3):
        m = node.step(ticks={10: 20, 20: 10})
    assert up(m, "gpu") == 1 and errors(m, "gpu", counted) == 4
    for i in (0, 1):  # when it returns, its counter delta covers the gap: nothing lost
        assert gpu_j(m, str(i)) == pytest.approx(node.gpu_truth(i), rel=1e-9)
    assert value(m, "wattprint_endpoint_energy_joules_total", endpoint="sglang-30000", component="gpu") > 0


def test_gpu_failing_at_discovery_is_retried(tmp_path):
    """A GPU whose NVML calls fail at start-up is not dropped: the failure is counted, discovery is
    retried each sample, and the GPU is metered from its first good read on."""
    flaky = {**H100, "faults": [{"call": "energy", "error": "TIMEOUT", "after_s": 0, "for_s": 0.5}]}
    node = FaultNode(tmp_path, [H100, flaky], {})
    m = node.metrics()
    assert up(m, "gpu") == 0 and errors(m, "gpu", "timeout") >= 1
    first_good = node.clock.t + 1.0
    for _ in range(5):
        m = node.step()
    assert len(m.get("wattprint_gpu_info", {})) == 2 and up(m, "gpu") == 1
    assert value(m, "wattprint_gpu_energy_joules_total", gpu="0") == pytest.approx(node.gpu_truth(0), rel=1e-6)
    truth1 = node.sim.true_energy_j(1, first_good - T0, node.clock.t - T0)
    assert value(m, "wattprint_gpu_energy_joules_total", gpu="1") == pytest.approx(truth1, rel=1e-6)
    assert_conserved(m)


# --- NVML: the whole library disappears ----------------------------------------------------------

class Vanishing:
    """The simulated NVML behind a switch: while ``gone`` holds an NVML error code, every
    ``nvml*`` call raises it (the driver unloaded under us, libnvidia-ml unusable)."""

    def __init__(self, sim: SimulatedNVML) -> None:
        self._sim = sim
        self.gone: int | None = None

    def __getattr__(self, name: str):
        attr = getattr(self._sim, name)
        if name.startswith("nvml") and callable(attr):
            def call(*args, **kwargs):
                if self.gone is not None:
                    raise NVMLError(self.gone)
                return attr(*args, **kwargs)
            return call
        return attr


@pytest.mark.parametrize("code,kind", [(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "library_not_found"),
                                       (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "driver_not_loaded"),
                                       (pynvml.NVML_ERROR_UNINITIALIZED, "uninitialized")])
def test_nvml_library_disappears_mid_run(tmp_path, code, kind):
    gpus = [{**H100, "processes": [{"pid": 10, "memory_gib": 20, "sm_util": 60}]}, H100]
    node = FaultNode(tmp_path, gpus, {10: {"comm": "python3", "cmdline": VLLM}}, wrap=Vanishing)
    for _ in range(3):
        node.step(ticks={10: 30})
    node.lib.gone = code
    node.sampler.gpu.poll_util()  # the between-sample poll must not raise either
    cpu_before = value(node.metrics(), "wattprint_node_energy_joules_total", component="cpu")
    for i in range(4):
        m = node.step(ticks={10: 30})
        assert up(m, "gpu") == 0 and errors(m, "gpu", kind) == 2 * (i + 1)  # 2 GPUs per sample
    # CPU metering and attribution carry on without NVML
    assert value(m, "wattprint_node_energy_joules_total", component="cpu") == pytest.approx(cpu_before + 4 * 40)
    node.lib.gone = None
    for _ in range(2):
        m = node.step(ticks={10: 30})
    assert up(m, "gpu") == 1
    for i in (0, 1):
        assert gpu_j(m, str(i)) == pytest.approx(node.gpu_truth(i), rel=1e-9)
    assert value(m, "wattprint_cpu_energy_joules_total") == pytest.approx(node.cpu_true_j)


def test_no_nvml_at_start_is_a_state_not_an_error_storm(tmp_path):
    node = FaultNode(tmp_path, [H100], {}, library="missing")
    for _ in range(5):
        m = node.step()
    assert up(m, "gpu") == 0 and errors(m, "gpu") == 0
    assert value(m, "wattprint_cpu_energy_joules_total") == pytest.approx(node.cpu_true_j)


# --- NVML: the energy counter resets (driver reload) ---------------------------------------------

def test_energy_counter_reset_on_a_busy_gpu(tmp_path):
    gpu = {**H100, "processes": [{"pid": 10, "memory_gib": 20, "sm_util": 70}], "energy_resets_at_s": [4.5, 8.25]}
    node = FaultNode(tmp_path, [gpu], {10: {"comm": "python3", "cmdline": VLLM}})
    last = 0.0
    for _ in range(12):
        m = node.step(ticks={10: 30})
        assert gpu_j(m) >= last  # never backwards, though the NVML counter went backwards twice
        last = gpu_j(m)
    assert value(m, "wattprint_gpu_energy_resets_total") == 2
    # constant power: the reset intervals, integrated from power, are exact
    assert gpu_j(m) == pytest.approx(node.gpu_truth(0), rel=1e-9)
    _lint_clean(node.sampler.metrics_text())


def _lint_clean(text: str) -> None:
    """promtool check metrics (Prometheus's linter) accepts the exposition. Old: the resets
    counters were named *_counter_resets_total: "metric names should not include type
    'counter'" (issue 14 #9)."""
    from support import PROMTOOL, promtool_lint

    if PROMTOOL is None:
        pytest.skip("promtool not found (Debian package prometheus)")
    assert promtool_lint(text) == ""


def test_driver_reload_during_an_outage(tmp_path):
    """The GPU is lost for 3 s and comes back with a reset counter: counted as a reset, the whole
    gap integrated from power (exact here: constant power)."""
    gpu = {**H100, "processes": [{"pid": 10, "memory_gib": 20, "sm_util": 40}],
           "faults": [{"call": "all", "error": "GPU_IS_LOST", "after_s": 2.5, "for_s": 3}],
           "energy_resets_at_s": [4.0]}
    node = FaultNode(tmp_path, [gpu], {10: {"comm": "python3", "cmdline": VLLM}})
    for _ in range(9):
        m = node.step(ticks={10: 30})
    assert errors(m, "gpu", "gpu_is_lost") == 3 and up(m, "gpu") == 1
    assert value(m, "wattprint_gpu_energy_resets_total") == 1
    assert gpu_j(m) == pytest.approx(node.gpu_truth(0), rel=1e-9)


# --- RAPL: a zone vanishes, or becomes unreadable -------------------------------------------------

def test_rapl_zone_vanishes_and_returns(tmp_path):
    node = FaultNode(tmp_path, [H100], {})
    node.step()
    saved = tmp_path / "saved-zone"
    shutil.move(str(node.zone), saved)
    for i in range(3):
        m = node.step()
        assert up(m, "rapl") == 0 and errors(m, "rapl", "read") == i + 1
        assert gpu_j(m) == pytest.approx(node.gpu_truth(0))  # the GPU is still metered
    shutil.move(str(saved), node.zone)
    for _ in range(2):
        m = node.step()
    assert up(m, "rapl") == 1 and errors(m, "rapl") == 3
    # the counter kept counting while the zone was gone: the next good read carries the gap
    assert value(m, "wattprint_cpu_energy_joules_total") == pytest.approx(node.cpu_true_j)


def test_rapl_counter_unparseable_for_a_sample(tmp_path):
    node = FaultNode(tmp_path, [], {})
    node.step()
    node.advance()
    (node.zone / "energy_uj").write_text("")  # a torn read
    m = node.sample()
    assert up(m, "rapl") == 0 and errors(m, "rapl", "parse") == 1
    m = node.step()
    assert up(m, "rapl") == 1
    assert value(m, "wattprint_cpu_energy_joules_total") == pytest.approx(node.cpu_true_j)


def _eacces_scenario(base: str) -> dict:
    """Run as an unprivileged user: energy_uj becomes unreadable (a real EACCES from the kernel's
    permission check) for two samples, then readable again. Returns what the test asserts on."""
    tmp = Path(base)
    node = FaultNode(tmp, [], {})
    node.step()
    energy = node.zone / "energy_uj"
    energy.chmod(0o000)
    try:
        open(energy).close()
        return {"skip": "chmod 000 does not stop this user from reading"}
    except PermissionError:
        pass
    out = {"during": []}
    for _ in range(2):
        node.advance()
        energy.chmod(0o644)
        set_energy(tmp / "sys", "intel-rapl:0", node.uj)  # the hardware counter moves on
        energy.chmod(0o000)
        m = node.sample()
        out["during"].append([up(m, "rapl"), errors(m, "rapl", "permission")])
    energy.chmod(0o644)
    m = node.step()
    out.update(after_up=up(m, "rapl"), cpu_j=value(m, "wattprint_cpu_energy_joules_total"),
               cpu_true_j=node.cpu_true_j, samples=node.sampler.samples)
    return out


def test_rapl_energy_uj_permission_denied(tmp_path):
    """A real permission change (the kernel's own EACCES, as on Linux 5.10+ where energy_uj is
    0400 root): as a normal user the scenario runs here; as root, who reads anything, it runs in a
    subprocess whose capability bounding set lacks CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH."""
    if os.geteuid() != 0:
        out = _eacces_scenario(str(tmp_path))
    else:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv(1): cannot make a file unreadable")
        code = ("import json, sys; import test_faults; "
                "print(json.dumps(test_faults._eacces_scenario(sys.argv[1])))")
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.run([setpriv, "--bounding-set=-dac_override,-dac_read_search", "--",
                               sys.executable, "-c", code, str(tmp_path)],
                              capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
        if proc.returncode != 0 and "setpriv" in proc.stderr:
            pytest.skip(f"setpriv cannot drop capabilities here: {proc.stderr.strip()}")
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in out:
        pytest.skip(out["skip"])
    assert out["during"] == [[0, 1], [0, 2]]  # visible, counted as kind="permission", retried
    assert out["after_up"] == 1
    assert out["cpu_j"] == pytest.approx(out["cpu_true_j"])  # the gap is carried by the next read


# --- procfs: processes vanish between listdir and read ---------------------------------------------

def test_proc_pid_dir_without_stat_is_skipped(tmp_path):
    """``/proc/<pid>`` listed but its ``stat`` unreadable (exiting, or a torn read): never an
    error; a known process is kept for a few scans (RACE_GRACE_SCANS) so its identity and GPU
    energy stay where they were, and an unknown one is skipped."""
    procs = {10: {"comm": "python3", "cmdline": VLLM}, 20: {"comm": "python", "cmdline": SGLANG},
             30: {"comm": "sshd", "cmdline": ["sshd"]}}
    gpus = [{**H100, "processes": [{"pid": 10, "memory_gib": 30, "sm_util": 60},
                                   {"pid": 20, "memory_gib": 10, "sm_util": 20}]}]
    node = FaultNode(tmp_path, gpus, procs)
    for _ in range(2):
        node.step(ticks={10: 20, 20: 20, 30: 5})
    node.advance(ticks={10: 20, 20: 20, 30: 5})
    (tmp_path / "proc" / "20" / "stat").unlink()
    (tmp_path / "proc" / "30" / "stat").write_text("30 (sshd")  # half a line: the same race, later
    (tmp_path / "proc" / "40").mkdir()  # listed, nothing inside
    m = node.sample()
    assert up(m, "procfs") == 1 and errors(m, "procfs") == 0  # a race is normal, not an error
    assert value(m, "wattprint_processes_tracked") == 3  # 10, and 20 and 30 kept through the race
    assert node.sampler.procs.races == 3
    # pid 20 is still on the GPU per NVML: its share stays on its own endpoint
    assert value(m, "wattprint_endpoint_energy_joules_total", endpoint="sglang-30000", component="gpu") > 0
    assert value(m, "wattprint_endpoint_energy_joules_total", endpoint="unidentified") == 0
    del procs[20], procs[30]
    shutil.rmtree(tmp_path / "proc" / "20")
    shutil.rmtree(tmp_path / "proc" / "30")
    for _ in range(2):
        m = node.step(ticks={10: 20})
    assert gpu_j(m) == pytest.approx(node.gpu_truth(0))


def test_proc_stat_race_then_return_counts_only_the_gap(tmp_path):
    procs = {10: {"comm": "python3", "cmdline": VLLM, "ticks": 100_000},
             20: {"comm": "python", "cmdline": SGLANG, "ticks": 100_000}}
    node = FaultNode(tmp_path, [], procs)
    node.step(ticks={10: 50, 20: 50}, busy=150)
    node.advance(ticks={10: 50, 20: 50}, busy=150)
    (tmp_path / "proc" / "10" / "stat").unlink()
    node.sample()
    before = node.metrics()
    m = node.step(ticks={10: 50, 20: 50}, busy=150)  # pid 10 readable again

    def active(endpoint):
        return (value(m, "wattprint_endpoint_energy_joules_total", endpoint=endpoint, mode="active")
                - value(before, "wattprint_endpoint_energy_joules_total", endpoint=endpoint, mode="active"))
    # pid 10 ran 1.0 s over the two intervals, pid 20 0.5 s in the last one: 2:1, not 2000:1
    assert active("vllm-8001") / active("sglang-30000") == pytest.approx(2.0, rel=0.01)


def test_procfs_root_and_proc_stat_unreadable(tmp_path):
    node = FaultNode(tmp_path, [H100], {10: {"comm": "x", "cmdline": ["x"]}})
    node.step()
    shutil.move(str(tmp_path / "proc"), tmp_path / "proc-away")
    node.clock.t += 1
    m = node.sample()
    assert up(m, "procfs") == 0
    assert errors(m, "procfs", "filenotfounderror") == 1 and errors(m, "procfs", "stat_filenotfounderror") == 1
    shutil.move(str(tmp_path / "proc-away"), tmp_path / "proc")
    for _ in range(2):
        m = node.step()
    assert up(m, "procfs") == 1 and gpu_j(m) == pytest.approx(node.gpu_truth(0))


# --- a bug inside one sample ---------------------------------------------------------------------

def _raise_once(node: FaultNode) -> None:
    """A bug inside one sample, after the meters were read and the engine counts drained: the
    booking stage raises once. (A bug in one process's identity no longer fails a sample: it is
    isolated to that process, see test_accounting_classes.py.)"""
    real = node.sampler.booking.book
    state = {"armed": True}

    def book(*args, **kwargs):
        if state["armed"]:
            state["armed"] = False
            raise RuntimeError("injected booking bug")
        return real(*args, **kwargs)
    node.sampler.booking.book = book  # type: ignore[method-assign]


def test_exception_inside_a_sample_keeps_the_loop_and_the_ledger_whole(tmp_path):
    """The real sampling thread: one sample raises; the loop counts it and goes on, and the
    ledger took none of that sample's half-made increments (Σ endpoints == node still holds)."""
    clock = time.monotonic
    make_procfs(tmp_path / "proc", {10: {"comm": "x", "cmdline": ["x"]}}, 1000, 1000)
    scenario = write_scenario(tmp_path / "sim.yaml",
                              {"gpus": [{**H100, "processes": [{"pid": 10, "sm_util": 50}]}]})
    gpu = GpuMeter(SimulatedNVML.from_file(str(scenario), clock), backend="simulated")
    gpu.open()
    s = Sampler(gpu=gpu, cpu=EstimateMeter(CpuPowerModel(4, 1.0, 5.0)),
                procs=ProcessTable(str(tmp_path / "proc")), resolver=Resolver(), interval_s=0.05,
                util_poll_s=0.01, clock=clock)
    node = type("N", (), {"sampler": s})()
    _raise_once(node)  # type: ignore[arg-type]
    s.start()
    try:
        deadline = time.monotonic() + 10
        while s.samples < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        s.stop()
    m = parse_metrics(s.metrics_text())
    assert s.samples >= 20  # the loop went on
    assert errors(m, "sampler", "exception") == 1 and up(m, "sampler") == 0
    assert_conserved(m)


def test_exception_inside_a_sample_loses_no_energy(tmp_path):
    node = FaultNode(tmp_path, [{**H100, "processes": [{"pid": 10, "sm_util": 50}]}],
                     {10: {"comm": "x", "cmdline": ["x"]}})
    for _ in range(2):
        node.step(ticks={10: 30})
    _raise_once(node)
    node.advance(ticks={10: 30})
    with pytest.raises(RuntimeError):
        node.sampler.sample()
    for _ in range(2):
        m = node.step(ticks={10: 30})
    assert gpu_j(m) == pytest.approx(node.gpu_truth(0), rel=1e-9)
    assert value(m, "wattprint_cpu_energy_joules_total") == pytest.approx(node.cpu_true_j)


# --- engines: /metrics that hangs, is huge, or is garbage -----------------------------------------

VLLM_TEXT = (ROOT / "tests/fixtures/engines_text/vllm.prom").read_text()
MB = 1024 * 1024


def answer(**response):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(**response)
    return handler


class HostileEngines:
    """Real aiohttp servers on 127.0.0.1, one path per misbehaviour."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.huge_sent = 0  # the most bytes /huge got to send to one request
        # ~60 KB on the wire, 60 MB inflated; made before serving so no handler blocks the loop
        self.bomb = gzip.compress(b"# " + b"0" * (60 * MB) + b"\n", compresslevel=1)
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> "HostileEngines":
        app = web.Application()
        r = app.router
        r.add_get("/ok", answer(text=VLLM_TEXT))
        r.add_get("/hang", self.hang)
        r.add_get("/huge", self.huge)
        r.add_get("/gzip-bomb", self.gzip_bomb)
        r.add_get("/slow", self.slow)
        r.add_get("/garbage", answer(body=os.urandom(64 * 1024)))
        r.add_get("/html", answer(text="<html><body>502 Bad Gateway</body></html>\n"))
        r.add_get("/json", answer(text='{"error": "use /v1/metrics"}'))
        r.add_get("/truncated", answer(text=VLLM_TEXT[: len(VLLM_TEXT) // 2 + 7]))
        r.add_get("/latin1", answer(body=VLLM_TEXT.encode() + b"# \xff\xfe\n"))
        r.add_get("/500", answer(status=500, text="boom"))
        r.add_get("/reset", self.reset)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        self.release.set()
        assert self.runner is not None
        await self.runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def hang(self, request: web.Request) -> web.Response:
        await self.release.wait()
        return web.Response(text="")

    async def huge(self, request: web.Request) -> web.StreamResponse:
        """50 MB of valid-looking exposition lines, streamed."""
        resp = web.StreamResponse()
        await resp.prepare(request)
        line = b'vllm:num_requests_running{engine="0",model_name="m"} 1.0\n'
        chunk = line * (MB // len(line))
        sent = 0
        try:
            while sent < 50 * MB:
                await resp.write(chunk)
                sent += len(chunk)
                self.huge_sent = max(self.huge_sent, sent)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up, as it should
        return resp

    async def gzip_bomb(self, request: web.Request) -> web.Response:
        return web.Response(body=self.bomb, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})

    async def slow(self, request: web.Request) -> web.StreamResponse:
        """A slowloris answer: one byte every 50 ms, for ever."""
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            while not self.release.is_set():
                await resp.write(b"#")
                await asyncio.sleep(0.05)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    async def reset(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.abort()
        await asyncio.sleep(0.1)
        return web.Response(text="")


class RssPeak:
    """The highest resident set of this process above its level at start(), polled every 5 ms."""

    def __init__(self) -> None:
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def start(self) -> "RssPeak":
        self._thread.start()
        return self

    def stop(self) -> float:
        """MB above the start level at the peak."""
        self._stop.set()
        self._thread.join()
        return (self.peak - self.base) / 1024


EXPECTED_KIND = {"/hang": "timeout", "/slow": "timeout", "/huge": "too_large", "/gzip-bomb": "too_large",
                 "/html": "parse_format", "/json": "parse_format", "/truncated": "parse_truncated",
                 "/500": "http", "/reset": "connect"}


def test_hostile_engine_metrics_endpoints(tmp_path):
    """Every bad /metrics costs at most the scrape timeout, is counted by kind, and shows in the
    sampler's metrics; a good target scraped alongside still delivers; the sampling thread keeps
    sampling while scrapes hang; no energy is touched."""
    s_clock = time.monotonic
    make_procfs(tmp_path / "proc", {}, 1000, 1000)
    scenario = write_scenario(tmp_path / "sim.yaml", {"gpus": [H100]})
    gpu = GpuMeter(SimulatedNVML.from_file(str(scenario), s_clock), backend="simulated")
    gpu.open()
    sampler = Sampler(gpu=gpu, cpu=EstimateMeter(CpuPowerModel(4, 1.0, 5.0)),
                      procs=ProcessTable(str(tmp_path / "proc")), resolver=Resolver(), interval_s=0.05,
                      util_poll_s=0.01, clock=s_clock)
    timeout_s = 0.5

    async def scenario_run() -> tuple[EngineScraper, float, int, int, int]:
        servers = await HostileEngines().start()
        paths = ["/ok", "/latin1", "/garbage", *EXPECTED_KIND]
        targets = [Target(Workload("", f"ep{p.replace('/', '-')}", ""), "vllm", servers.url(p), "m")
                   for p in paths]
        # the daemon's defaults but a short timeout: max_bytes 20 MiB against the 50 MB answer
        scraper = EngineScraper(lambda: targets, interval_s=1.0, timeout_s=timeout_s)
        sampler.engines = scraper
        peak = RssPeak().start()
        sampler.start()
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s),
                                             trust_env=False) as session:
                n0 = sampler.samples
                t0 = time.monotonic()
                await scraper.scrape_all(session)  # a first pass: every target once, concurrently
                elapsed = time.monotonic() - t0
                during = sampler.samples - n0
                for _ in range(2):  # two more passes, as the daemon's loop would
                    await scraper.scrape_all(session)
        finally:
            huge_sent = servers.huge_sent
            await servers.close()
        await asyncio.sleep(0.15)  # a sample or two to render the results
        sampler.stop()
        return scraper, elapsed, during, huge_sent, peak.stop()

    scraper, elapsed, during, huge_sent, rss_growth_mb = asyncio.run(scenario_run())
    assert elapsed < timeout_s + 1.0  # concurrent, each bounded: one timeout, not the sum
    assert during >= 3  # samples kept coming while scrapes hung (sampling thread, scrape loop)
    states = {t.url.rsplit("/", 1)[1]: st for t, st in scraper.states.items()}
    assert states["ok"].up and not states["ok"].errors
    assert states["latin1"].up  # undecodable bytes in a comment line do not spoil the reading
    assert not states["garbage"].up and all(k.startswith("parse_") for k in states["garbage"].errors)
    for path, kind in EXPECTED_KIND.items():  # the third pass leaves them alone: they back off
        st = states[path[1:]]
        assert not st.up and st.errors == {kind: 2} and st.next_at > 0, (path, st.errors)
    assert huge_sent < 50 * MB  # the reader stopped at max_bytes and hung up
    # answers are read to max_bytes (8 MiB), 4 at once; neither 50 MB nor 60 MB is ever held
    assert rss_growth_mb < 100, rss_growth_mb
    m = parse_metrics(sampler.metrics_text())
    for path, kind in EXPECTED_KIND.items():
        endpoint = "ep" + path.replace("/", "-")
        assert value(m, "wattprint_engine_scrape_up", endpoint=endpoint) == 0
        assert value(m, "wattprint_engine_scrape_errors_total", endpoint=endpoint, kind=kind) == 2
    assert value(m, "wattprint_engine_scrape_up", endpoint="ep-ok") == 1
    assert value(m, "wattprint_endpoint_requests_total", endpoint="ep-ok") == 0  # cumulative: first
    assert_conserved(m)                                                          # sight adds nothing
    assert errors(m, "sampler") == 0


def test_engine_scrape_does_not_follow_redirects():
    followed = []

    async def elsewhere(request: web.Request) -> web.Response:
        followed.append(request.path)
        return web.Response(text=VLLM_TEXT)

    async def run() -> ScrapeState:
        app = web.Application()
        app.router.add_get("/metrics", answer(status=302, headers={"Location": "/elsewhere"}))
        app.router.add_get("/elsewhere", elsewhere)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        t = Target(Workload("", "redirecting", ""), "vllm", f"http://127.0.0.1:{port}/metrics", "m")
        scraper = EngineScraper(lambda: [t], timeout_s=2)
        try:
            async with aiohttp.ClientSession(trust_env=False) as session:
                await scraper.scrape_all(session)
        finally:
            await runner.cleanup()
        return scraper.states[t]
    st = asyncio.run(run())
    assert not followed and not st.up and st.errors  # not followed, and counted as a failure


# --- grid intensity: the provider is down for hours --------------------------------------------------

@dataclass(kw_only=True, eq=False)
class Switchable(Provider):
    """A live provider that answers a fixed intensity, observed ``lag_s`` before ``now``, or
    fails with ``failing`` (a ProviderError kind)."""

    key = "switchable"
    source = "test provider"
    grams: float = 200.0
    lag_s: float = 60.0
    failing: str | None = None
    now: object = field(default=time.time, repr=False)

    async def fetch(self, session) -> list[Reading]:
        if self.failing:
            raise ProviderError(self.failing, "injected")
        return [Reading(self.name, "DE", "average", self.grams, self.now() - self.lag_s)]


class WallClock:
    def __init__(self, t: float = 1_790_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _carbon(providers: list, clock, max_age_s: float = 7200.0):
    region = accounting.resolve_static("DE", "config")
    return accounting.build(region=region, pue=1.0, providers=providers, max_age_s=max_age_s,
                            counterfactual_regions=[], embodied_cfg={}, training_tonnes={}, clock=clock)


def test_intensity_provider_down_for_hours(tmp_path, monkeypatch):
    wall = WallClock()
    monkeypatch.setattr(time, "time", wall)  # the age gauge and the service read the wall clock
    live = Switchable(name="live", now=wall)
    carbon = _carbon([live], wall)
    static = carbon.region.grams_per_kwh
    node = FaultNode(tmp_path, [{**H100, "processes": [{"pid": 10, "sm_util": 30}]}],
                     {10: {"comm": "python3", "cmdline": VLLM}}, carbon=carbon)
    asyncio.run(carbon.service.poll_once())
    expected_g, prev_j = 0.0, 0.0
    seen: list[tuple[str, float]] = []
    for i in range(30):  # 10-minute samples: 5 hours
        if i == 3:
            live.failing = "http_5xx"  # down from t = 30 min for 3 hours
        if i == 21:
            live.failing = None
        wall.t += 600
        asyncio.run(carbon.service.poll_once())
        cur = carbon.current()
        node.advance(dt=600, cpu_w=40.0, ticks={10: 6000}, busy=60000, idle=180000)
        m = node.sample()
        joules = value(m, "wattprint_node_energy_joules_total")
        expected_g += (joules - prev_j) * cur.grams_per_kwh / 3.6e6
        prev_j = joules
        info = dict(next(iter(m["wattprint_carbon_info"])))
        seen.append((info["provider"], value(m, "wattprint_grid_intensity_age_seconds", provider="live")))
        assert up(m, "intensity_live") == (0 if live.failing else 1)
        # the daemon's CO2e follows the intensity in use at each sample, exactly
        assert value(m, "wattprint_node_co2e_grams_total", scope="operational") == pytest.approx(expected_g, rel=1e-9)
    # last good value until max age (2 h after the data point), then static, then live again
    providers = [p for p, _ in seen]
    # the last good point was observed at 30 min - 60 s: it ages past 2 h at sample 14 (2 h 30 min)
    assert providers[:14] == ["live"] * 14 and providers[14:21] == ["static"] * 7 and providers[21:] == ["live"] * 9
    ages = [a for _, a in seen]
    assert ages[2] == 60 and ages[12] == 60 + 600 * 10 and ages[20] == 60 + 600 * 18 and ages[21] == 60
    assert value(m, "wattprint_collector_errors_total", collector="intensity_live", kind="http_5xx") == 18
    assert gpu_j(m) == pytest.approx(node.gpu_truth(0), rel=1e-9)
    assert static != 200.0


# --- the wall clock steps (NTP) ---------------------------------------------------------------------

def test_wall_clock_step_changes_no_energy_or_co2e(tmp_path, monkeypatch):
    """Two identical nodes on the same monotonic time; on one of them time.time() jumps +1 h, then
    -1 h below true time, mid-run. Energy and CO2e must come out identical."""
    true_wall = WallClock()
    step = {"offset": 0.0}
    real_time = time.time

    def jumped() -> float:
        return true_wall.t + step["offset"]

    runs = {}
    for name in ("steady", "stepped"):
        clock = jumped if name == "stepped" else true_wall
        # the provider's data points carry the API's own time, not ours
        live = Switchable(name="live", now=true_wall, lag_s=300)
        carbon = _carbon([live], clock)
        step["offset"] = 0.0
        monkeypatch.setattr(time, "time", clock)
        node = FaultNode(tmp_path / name, [{**H100, "processes": [{"pid": 10, "sm_util": 30}]}],
                         {10: {"comm": "python3", "cmdline": VLLM}}, carbon=carbon)
        true_wall.t = 1_790_000_000.0
        for i in range(12):
            if name == "stepped" and i == 4:
                step["offset"] = 3600.0
            if name == "stepped" and i == 8:
                step["offset"] = -3600.0
            true_wall.t += 1
            asyncio.run(carbon.service.poll_once())
            node.step(ticks={10: 30})
        m = node.metrics()
        runs[name] = (gpu_j(m), value(m, "wattprint_cpu_energy_joules_total"),
                      value(m, "wattprint_node_co2e_grams_total", scope="operational"),
                      value(m, "wattprint_endpoint_co2e_grams_total"), dict(next(iter(m["wattprint_carbon_info"]))))
        monkeypatch.setattr(time, "time", real_time)
    assert runs["stepped"] == runs["steady"]
    assert runs["steady"][4]["provider"] == "live"


def test_wall_clock_step_does_not_disturb_the_loop(tmp_path, monkeypatch):
    """The real sampling thread on the real monotonic clock while time.time() jumps ±1 h: samples
    keep their cadence (no burst to 'catch up', no stall)."""
    make_procfs(tmp_path / "proc", {}, 1000, 1000)
    s = Sampler(gpu=None, cpu=EstimateMeter(CpuPowerModel(4, 1.0, 5.0)),
                procs=ProcessTable(str(tmp_path / "proc")), resolver=Resolver(), interval_s=0.05)
    offset = {"s": 0.0}
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + offset["s"])
    s.start()
    try:
        time.sleep(0.5)
        n0, t0 = s.samples, time.monotonic()
        offset["s"] = 3600.0
        time.sleep(0.5)
        offset["s"] = -3600.0
        time.sleep(0.5)
        n1, t1 = s.samples, time.monotonic()
    finally:
        s.stop()
    expected = (t1 - t0) / 0.05  # ~30 samples in 1.5 s at 50 ms, whatever the wall clock did
    assert 0.6 * expected <= n1 - n0 <= expected + 2  # no stall, and no burst to "catch up"


def test_healthz_survives_a_forward_wall_clock_step(tmp_path, monkeypatch):
    node = FaultNode(tmp_path, [], {})
    node.step()
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600.0)
    from exporter.server import healthz
    app = make_app(node.sampler)
    resp = asyncio.run(healthz(make_mocked_request("GET", "/healthz", app=app)))
    assert resp.status == 200


# --- documentation: every fault in the docs has a test here --------------------------------------

def test_reliability_doc_names_existing_tests():
    """docs/reliability.md lists faults and hostile inputs by test name: every name must exist,
    and every fault test here must be listed."""
    import re
    doc = (ROOT / "docs" / "reliability.md").read_text()
    named = re.findall(r"(tests/[\w/]+\.py)::(test_\w+)", doc)
    assert named
    for path, name in named:
        assert re.search(rf"^(async )?def {name}\(", (ROOT / path).read_text(), re.M), f"{path}::{name}"
    # (a row continuing with a bare ``::test_other`` for the same file is not checked)
    listed = {n for p, n in named if p == "tests/test_faults.py"}
    here = {n for n in globals() if n.startswith("test_") and n != "test_reliability_doc_names_existing_tests"}
    assert here <= listed, sorted(here - listed)
