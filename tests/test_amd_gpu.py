"""The AMD backend (exporter/sensors/amdgpu.py) driven through the simulated amdsmi module
(exporter/sensors/simamdsmi.py), which has the real binding's functions, dict keys, units and
status codes: an 8-GPU MI300X node through the whole Sampler, per-field degradation, the 32-bit
counter wrap, counter resets, a driver reload, the library's states and `wattprint check`."""

from __future__ import annotations

import json

import pytest

from exporter import check, config
from exporter.identity.resolver import Resolver, Workload
from exporter.sampler import Sampler
from exporter.sensors import MeterError, amdgpu, registry
from exporter.sensors.amdgpu import STATUS, WRAP_COUNTS, Accumulator, AmdGpuMeter, error_kind
from exporter.sensors.cpu_estimate import CpuPowerModel
from exporter.sensors.procfs import ProcessTable
from exporter.sensors.simamdsmi import RESOLUTION_UJ, AmdSmiLibraryException, ScenarioError, SimulatedAmdSmi
from support import cpu_meter, make_procfs, parse_metrics, value, write_scenario
from test_sampler import Clock, assert_conserved  # the same fake clock (t = 500) and conservation check

VLLM = ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "meta-llama/Llama-3.1-70B", "--port", "8001"]
SGLANG = ["python", "-m", "sglang.launch_server", "--model-path", "Qwen/Qwen2.5-7B", "--port", "30000"]
MIB = 1024**2


def sim(tmp_path, data, clock):
    return SimulatedAmdSmi.from_file(str(write_scenario(tmp_path / "amd.yaml", data)), clock)


def meter_of(s: SimulatedAmdSmi, clock) -> AmdGpuMeter:
    return AmdGpuMeter(s.import_module, "simulated-amd", clock)


MI300X = {"name": "AMD Instinct MI300X", "idle_w": 140, "max_w": 750}


# --- the backend over the simulated library ------------------------------------------------------

@pytest.mark.parametrize("process_api", ["dicts", "handles"])
def test_units_shapes_and_gfx_weights(tmp_path, process_api):
    clock = Clock()
    gpu = {**MI300X, "process_api": process_api, "processes": [{"pid": 11, "memory_gib": 40, "sm_util": 60}, {"pid": 12, "memory_gib": 8, "sm_util": 20}]}
    m = meter_of(sim(tmp_path, {"gpus": [gpu]}, clock), clock)
    assert m.open().state == "ok" and m.status.driver == "6.8.5"
    d = m.devices[0]
    assert (d.name, d.energy_method, d.mig_mode, d.pci_bus_id) == ("AMD Instinct MI300X", "counter", "unsupported",
                                                                  "0000:05:00.0")
    assert d.power_limit_w == 750.0 and d.memory_total == 192 * 1024**3   # power_cap µW, vram_total MiB
    r0 = m.read()[0]
    assert r0.sm_util == {} and r0.util_available      # first sight of each pid: no engine-time delta yet
    clock.t += 10
    r1 = m.read()[0]
    watts = 140 + (750 - 140) * 0.8
    assert r1.power_mw == round(watts) * 1000          # current_socket_power: whole W
    assert (r1.energy_mj - r0.energy_mj) / 1000 == pytest.approx(watts * 10, abs=2 * RESOLUTION_UJ / 1e6 + 1e-3)
    assert r1.processes == {11: 40 * 1024**3, 12: 8 * 1024**3}
    assert r1.memory_used == (300 * MIB + 48 * 1024**3) // MIB * MIB
    assert r1.sm_util == pytest.approx({11: 60.0, 12: 20.0})   # Δ engine_usage.gfx / Δt
    assert not r1.field_errors and not m.needs_polling


@pytest.mark.parametrize("energy_key", ["energy_accumulator", "power", "both"])
@pytest.mark.parametrize("socket_power", ["current", "average", "socket_power"])
def test_every_library_versions_dict_is_read(tmp_path, energy_key, socket_power):
    """ROCm 7 (energy_accumulator, socket_power), 24.7 (both keys), ROCm 6.0 (power only);
    MI300 (current_socket_power), MI200 (average_socket_power)."""
    clock = Clock()
    m = meter_of(sim(tmp_path, {"gpus": [{**MI300X, "energy_key": energy_key, "socket_power": socket_power}]}, clock),
                 clock)
    m.open()
    r0 = m.read()[0]
    clock.t += 5
    r1 = m.read()[0]
    assert m.devices[0].energy_method == "counter" and not r1.field_errors
    assert r1.power_mw == 140_000
    assert (r1.energy_mj - r0.energy_mj) / 1000 == pytest.approx(700, abs=0.01)


def test_no_counter_integrates_power(tmp_path):
    clock = Clock()
    m = meter_of(sim(tmp_path, {"gpus": [{**MI300X, "energy_counter": False}]}, clock), clock)
    m.open()
    assert m.devices[0].energy_method == "power_integration"
    assert m.read()[0].energy_mj is None and m.read()[0].power_mw == 140_000


def test_power_not_available_degrades_alone_or_fails_without_a_counter(tmp_path):
    clock = Clock()
    data = {"gpus": [{**MI300X, "socket_power": "none"}, {**MI300X, "socket_power": "none", "energy_counter": False}]}
    m = meter_of(sim(tmp_path, data, clock), clock)
    m.open()
    with_counter, without = m.read()
    assert with_counter.error is None and with_counter.energy_mj is not None
    assert with_counter.field_errors == {"power": "not_available"} and with_counter.power_mw is None
    assert without.error == "power_not_available"


def test_library_errors_are_named_by_their_status_code(tmp_path):
    clock = Clock()
    faults = [{"call": "processes", "error": "NO_PERM"}, {"call": "memory", "error": "AMDSMI_STATUS_FILE_ERROR"}]
    m = meter_of(sim(tmp_path, {"gpus": [{**MI300X, "processes": [{"pid": 7, "sm_util": 50}], "faults": faults}]},
                     clock), clock)
    m.open()
    r = m.read()[0]
    assert r.error is None and r.energy_mj is not None and r.processes == {}
    assert r.field_errors == {"processes": "no_perm", "memory": "file_error"}
    assert error_kind(AmdSmiLibraryException(STATUS["DRIVER_NOT_LOADED"])) == "driver_not_loaded"
    assert error_kind(AmdSmiLibraryException(-STATUS["NO_PERM"])) == "no_perm"     # abs(), as the real one
    assert str(AmdSmiLibraryException(10)) == "Error code:\n\t10 | AMDSMI_STATUS_NO_PERM - Permission Denied"


def test_energy_fault_fails_the_reading_and_the_others_go_on(tmp_path):
    clock = Clock()
    lost = {**MI300X, "faults": [{"call": "energy", "error": "BUSY", "after_s": 5, "for_s": 10}]}
    m = meter_of(sim(tmp_path, {"gpus": [MI300X, lost]}, clock), clock)
    m.open()
    clock.t += 6
    a, b = m.read()
    assert a.error is None and b.error == "busy"
    clock.t += 10
    assert [r.error for r in m.read()] == [None, None]


@pytest.mark.parametrize("library,state,words", [
    ("missing", "no_library", "amdsmi not installed"),
    ("no_shared_library", "no_library", "libamd_smi.so"),
    ("driver_not_loaded", "driver_not_loaded", "amdgpu kernel driver is not loaded"),
    ("no_permission", "error", "AMDSMI_STATUS_NO_PERM"),
])
def test_library_states(tmp_path, library, state, words):
    clock = Clock()
    m = meter_of(sim(tmp_path, {"library": library, "gpus": [MI300X]}, clock), clock)
    st = m.open()
    assert st.state == state and words in st.detail and m.read() == []


def test_real_amdsmi_absent_here_is_no_library():
    try:
        import amdsmi  # noqa: F401
        pytest.skip("this host has amdsmi")
    except Exception:  # noqa: BLE001 - ImportError, or the wrapper's KeyError without libamd_smi.so
        pass
    st = AmdGpuMeter().open()
    assert st.state == "no_library" and "amdsmi" in st.detail


def test_bad_scenario_names_the_key(tmp_path):
    with pytest.raises(ScenarioError, match=r"gpus\[0\]\.faults\[0\]\.error: unknown amdsmi status 'EXPLODED'"):
        sim(tmp_path, {"gpus": [{**MI300X, "faults": [{"error": "EXPLODED"}]}]}, Clock())
    with pytest.raises(ScenarioError, match=r"gpus\[0\]\.energy_counter_bits: 48"):
        sim(tmp_path, {"gpus": [{**MI300X, "energy_counter_bits": 48}]}, Clock())
    with pytest.raises(ScenarioError, match=r"library: 'gone' is not one of present, missing, no_shared_library"):
        sim(tmp_path, {"library": "gone", "gpus": [MI300X]}, Clock())


# --- the counter: wraps and restarts -------------------------------------------------------------

def test_accumulator_wrap_restart_and_ambiguous_gap():
    res = RESOLUTION_UJ
    a = Accumulator()
    assert a.extend(WRAP_COUNTS - 1000, 0.0, res, 750.0) == WRAP_COUNTS - 1000
    # 1 s later the count is small: one wrap (1000 + 500 counts = 23 mJ) fits easily in 750 W × 1 s
    assert a.extend(500, 1.0, res, 750.0) == WRAP_COUNTS + 500 and a.wraps == 1
    # a 64-bit counter that goes back is a restart: handed on as it is
    b = Accumulator()
    b.extend(WRAP_COUNTS * 10, 0.0, res, 750.0)
    assert b.extend(100, 1.0, res, 750.0) == 100 and b.wraps == 0
    # a 32-bit count that went back by more than 1.5 × 750 W × 1 s could have done: a restart
    c = Accumulator()
    c.extend(WRAP_COUNTS // 2, 0.0, res, 750.0)
    assert c.extend(1000, 1.0, res, 750.0) == 1000
    # a gap long enough for two wraps (200 s at 1.5 × 750 W > 65.7 kJ) cannot be told: a restart, bridged by power
    d = Accumulator()
    d.extend(WRAP_COUNTS - 1000, 0.0, res, 750.0)
    assert d.extend(500, 200.0, res, 750.0) == 500 and d.wraps == 0


def test_32bit_counter_wraps_without_losing_or_inventing_energy(tmp_path):
    """A 32-bit accumulator at 15.3 µJ wraps every 65.7 kJ (~94 s at 701 W): started 713 J below
    the top, over 300 s it wraps four times (at ~1, 95, 189 and 282 s); the backend's count stays
    monotonic and exact, and no reset is counted."""
    node = AmdNode(tmp_path, [{**MI300X, "energy_counter_bits": 32, "initial_energy_mj": 65_000_000,
                               "processes": [{"pid": 10, "memory_gib": 10, "sm_util": 92}]}],
                   {10: {"comm": "python3", "cmdline": VLLM}})
    for _ in range(300):
        node.step()
    m = node.metrics()
    assert node.meter._energy[node.meter.devices[0].uuid].wraps == 4
    truth = node.sim.true_energy_j(0, node.t_first - 500, node.clock.t - 500)
    assert value(m, "wattprint_gpu_energy_joules_total") == pytest.approx(truth, rel=1e-6)
    assert value(m, "wattprint_gpu_energy_resets_total") == 0
    assert_conserved(m)


def test_counter_reset_is_counted_and_bridged(tmp_path):
    node = AmdNode(tmp_path, [{**MI300X, "energy_resets_at_s": [5.5]}], {})
    for _ in range(10):
        node.step()
    m = node.metrics()
    assert value(m, "wattprint_gpu_energy_resets_total") == 1
    assert value(m, "wattprint_gpu_energy_joules_total") == pytest.approx(140 * 10, rel=1e-3)
    assert_conserved(m)


def test_driver_reload_reopens_and_bridges_the_gap(tmp_path):
    """amdgpu reloaded at 10 s for 3 s: reads fail (DRIVER_NOT_LOADED, then NOT_INIT on the stale
    handles), the library is shut down and opened again, the counter restarted from 0; the energy
    of the gap is bridged from power, so the total stays the truth."""
    gpu = {**MI300X, "processes": [{"pid": 10, "memory_gib": 10, "sm_util": 50}]}
    node = AmdNode(tmp_path, [gpu], {10: {"comm": "python3", "cmdline": VLLM}},
                   reloads=[{"at_s": 10, "down_s": 3}])
    for _ in range(40):
        node.step()
    m = node.metrics()
    assert node.meter.reinits == 1 and node.meter.status.state == "ok"
    assert value(m, "wattprint_gpu_energy_resets_total") == 1
    assert value(m, "wattprint_collector_errors_total", collector="gpu", kind="driver_not_loaded") >= 1
    truth = node.sim.true_energy_j(0, node.t_first - 500, node.clock.t - 500)
    assert value(m, "wattprint_gpu_energy_joules_total") == pytest.approx(truth, rel=2e-3)
    assert value(m, "wattprint_collector_up", collector="gpu") == 1
    assert_conserved(m)


def test_a_stuck_counter_is_caught_and_its_stalled_seconds_booked_from_power(tmp_path):
    """The count stops at 20 s (gpu_metrics no longer refreshed, ROCm/amdsmi#22) while the GPU
    draws 567 W: after STALL_S the backend hands on the count plus the power integral of the
    stall, then integrates power; the total is the truth, the stall counted once."""
    gpu = {**MI300X, "energy_stuck_after_s": 20, "processes": [{"pid": 10, "memory_gib": 10, "sm_util": 70}]}
    node = AmdNode(tmp_path, [gpu], {10: {"comm": "python3", "cmdline": VLLM}})
    for _ in range(60):
        node.step()
    m = node.metrics()
    assert node.meter.devices[0].energy_method == "power_integration"
    assert value(m, "wattprint_collector_errors_total", collector="gpu", kind="energy_counter_stuck") == 1
    truth = node.sim.true_energy_j(0, node.t_first - 500, node.clock.t - 500)
    assert value(m, "wattprint_gpu_energy_joules_total") == pytest.approx(truth, rel=1e-6)
    assert value(m, "wattprint_gpu_energy_resets_total") == 0
    assert_conserved(m)


# --- an 8-GPU MI300X node through the whole Sampler ---------------------------------------------

class AmdNode:
    """A fake node: procfs tree, the CPU estimate and the simulated amdsmi, advanced by hand."""

    def __init__(self, tmp, gpus, procs, reloads=None, owners=None):
        self.tmp, self.clock, self.procs = tmp, Clock(), procs
        self.busy, self.idle = 1000, 1000
        make_procfs(tmp / "proc", procs, self.busy, self.idle)
        data = {"gpus": gpus, **({"driver_reloads": reloads} if reloads else {})}
        self.sim = sim(tmp, data, self.clock)
        self.meter = meter_of(self.sim, self.clock)
        assert self.meter.open().state == "ok"
        self.sampler = Sampler(gpu=self.meter, cpu=cpu_meter(None, CpuPowerModel(4, 1.0, 5.0)),
                               procs=ProcessTable(str(tmp / "proc")), resolver=Resolver(), interval_s=1.0,
                               clock=self.clock, gpu_owners=(lambda: owners) if owners is not None else None)
        self.t_first: float | None = None

    def step(self, dt=1.0):
        if self.t_first is None:
            self.sampler.sample()
            self.t_first = self.clock.t
        self.clock.t += dt
        self.busy, self.idle = self.busy + 150, self.idle + 250
        make_procfs(self.tmp / "proc", self.procs, self.busy, self.idle)
        self.sampler.sample()

    def metrics(self):
        return parse_metrics(self.sampler.metrics_text())


def mi300x_node() -> tuple[list[dict], dict]:
    """GPUs 0-3: vLLM (tensor parallel, its 4 workers at 70 %); 4: vLLM 60 % + SGLang 20 %
    sharing; 5: SGLang alone at 30 %; 6-7 idle."""
    procs = {10: {"comm": "python3", "cmdline": VLLM}, 20: {"comm": "python", "cmdline": SGLANG}}
    gpus = []
    for i in range(4):
        procs[11 + i] = {"comm": "VLLM::Worker", "ppid": 10, "cmdline": ["VLLM::Worker"]}
        gpus.append({**MI300X, "processes": [{"pid": 11 + i, "memory_gib": 170, "sm_util": 70}]})
    gpus.append({**MI300X, "processes": [{"pid": 10, "memory_gib": 100, "sm_util": 60},
                                         {"pid": 20, "memory_gib": 40, "sm_util": 20}]})
    gpus.append({**MI300X, "processes": [{"pid": 20, "memory_gib": 60, "sm_util": 30}]})
    gpus += [MI300X, MI300X]
    return gpus, procs


def test_an_8_gpu_mi300x_node(tmp_path):
    gpus, procs = mi300x_node()
    node = AmdNode(tmp_path, gpus, procs)
    for _ in range(30):
        node.step()
    m = node.metrics()
    assert_conserved(m)
    total = 0.0
    for i in range(8):  # every GPU's energy is the simulator's truth (the counter is quantised at 15.3 µJ)
        truth = node.sim.true_energy_j(i, node.t_first - 500, node.clock.t - 500)
        got = value(m, "wattprint_gpu_energy_joules_total", gpu=str(i))
        assert got == pytest.approx(truth, rel=1e-6), i
        total += got
    assert value(m, "wattprint_node_energy_joules_total", component="gpu") == pytest.approx(total, rel=1e-12)
    info = m["wattprint_gpu_info"]
    assert len(info) == 8 and all(dict(k)["backend"] == "simulated-amd" and dict(k)["name"] == "AMD Instinct MI300X"
                                  and dict(k)["energy_method"] == "counter" for k in info)
    # idle/active: every GPU's idle share is its baseline (the MI300X table row: 140 W) × time
    elapsed = node.clock.t - node.t_first
    idle = value(m, "wattprint_endpoint_energy_joules_total", component="gpu", mode="idle")
    assert idle == pytest.approx(8 * 140 * elapsed, rel=1e-6)
    assert value(m, "wattprint_gpu_idle_power_watts", gpu="0") == 140
    # the shared GPU's active energy splits 3 : 1 by GFX engine time (60 % vs 20 %)
    vllm = value(m, "wattprint_endpoint_energy_joules_total", endpoint="vllm-8001", component="gpu", mode="active")
    sgl = value(m, "wattprint_endpoint_energy_joules_total", endpoint="sglang-30000", component="gpu", mode="active")
    # (the first sample books nothing and takes each pid's engine-time baseline: every booked
    # interval has a delta)
    active = lambda util: (750 - 140) * util / 100  # noqa: E731 - W of active power at util %
    assert sgl == pytest.approx(active(30) * elapsed + active(80) * elapsed / 4, rel=1e-6)
    assert vllm == pytest.approx(4 * active(70) * elapsed + active(80) * elapsed * 3 / 4, rel=1e-6)
    unalloc = value(m, "wattprint_endpoint_energy_joules_total", endpoint="unallocated", component="gpu")
    assert unalloc == pytest.approx(value(m, "wattprint_gpu_energy_joules_total", gpu="6")
                                    + value(m, "wattprint_gpu_energy_joules_total", gpu="7"), rel=1e-9)


def test_process_list_denied_books_the_gpu_to_its_kubelet_owner(tmp_path):
    """Without /proc/<pid>/fdinfo (NO_PERM: no hostPID) the processes are unknown; a GPU that
    ROCm's device plugin assigned (by PCI address) still goes to its pod, the rest to unallocated."""
    denied = [{"call": "processes", "error": "NO_PERM"}]
    gpus = [{**MI300X, "processes": [{"pid": 10, "sm_util": 50}], "faults": denied}, {**MI300X, "faults": denied}]
    owner = Workload("models", "llama-70b", "meta-llama/Llama-3.1-70B", "llama-70b-0")
    node = AmdNode(tmp_path, gpus, {10: {"comm": "python3", "cmdline": VLLM}}, owners={"0000:05:00.0": owner})
    for _ in range(10):
        node.step()
    m = node.metrics()
    assert value(m, "wattprint_collector_errors_total", collector="gpu", kind="processes_no_perm") == 2 * 11
    assert value(m, "wattprint_collector_up", collector="gpu") == 1
    assert value(m, "wattprint_endpoint_energy_joules_total", endpoint="llama-70b", component="gpu") == pytest.approx(
        value(m, "wattprint_gpu_energy_joules_total", gpu="0"), rel=1e-9)
    assert value(m, "wattprint_endpoint_energy_joules_total", endpoint="unallocated", component="gpu") == pytest.approx(
        value(m, "wattprint_gpu_energy_joules_total", gpu="1"), rel=1e-9)
    assert_conserved(m)


# --- registry and `wattprint check` ---------------------------------------------------------------

def cfg(tmp_path, **flags):
    base = {("path", "sysfs"): str(tmp_path / "sys"), ("path", "procfs"): str(tmp_path / "proc"),
            ("carbon", "region"): "FR", ("carbon", "detect_region"): "off"}
    base.update({tuple(k.split("__")): v for k, v in flags.items()})
    return config.load(None, base)


def amd_check(tmp_path, scenario):
    make_procfs(tmp_path / "proc", {}, 100, 100)
    path = write_scenario(tmp_path / "amd.yaml", scenario)
    rep = check.diagnose(cfg(tmp_path, gpu__backend="simulated-amd", gpu__simulation_file=str(path)))
    json.loads(check.render_json(rep))
    return rep, check.render_text(rep)


def test_registry_has_amdsmi_in_auto_and_its_double_only_by_name(tmp_path):
    assert registry.spec("gpu", "amdsmi").auto and not registry.spec("gpu", "simulated-amd").auto
    assert list(registry.GPU_BACKENDS).index("amdsmi") > list(registry.GPU_BACKENDS).index("nvml")
    with pytest.raises(MeterError, match="gpu.backend=amdsmi: amdsmi unavailable: amdsmi not installed"):
        registry.open_gpu(cfg(tmp_path, gpu__backend="amdsmi"))
    with pytest.raises(MeterError, match="simulated-amd needs --gpu.simulation-file"):
        registry.open_gpu(cfg(tmp_path, gpu__backend="simulated-amd"))


def test_check_ok_shows_backend_and_method_per_gpu(tmp_path):
    gpus, _ = mi300x_node()
    gpus[7] = {**MI300X, "energy_counter": False}
    rep, text = amd_check(tmp_path, {"gpus": gpus})
    assert "✔ GPU (simulated-amd): ok — 8 GPU(s), driver 6.8.5" in text
    assert "GPU 0 AMD Instinct MI300X" in text and "energy via counter, MIG unsupported, PCI 0000:05:00.0" in text
    assert "GPU 7 AMD Instinct MI300X" in text and "energy via power_integration" in text
    assert "meters in use: gpu simulated-amd, cpu estimate" in text
    assert rep["gpu"]["backend"] == "simulated-amd" and len(rep["gpu"]["gpus"]) == 8
    assert [g["energy_method"] for g in rep["gpu"]["gpus"]] == ["counter"] * 7 + ["power_integration"]
    assert rep["gpu"]["gpus"][1]["pci_bus_id"] == "0000:25:00.0"


def test_check_library_missing_says_how_to_install_it(tmp_path):
    rep, text = amd_check(tmp_path, {"library": "missing", "gpus": [MI300X]})
    assert "✘ GPU (simulated-amd): no_library — amdsmi not installed" in text
    assert "pip install amdsmi==<ROCm version>" in text and "amd-smi-lib" in text
    assert rep["gpu"]["state"] == "no_library"


def test_check_no_permission_explains_devices_and_groups(tmp_path):
    rep, text = amd_check(tmp_path, {"library": "no_permission", "gpus": [MI300X]})
    assert "✘ GPU (simulated-amd): error — permission denied opening the GPU (/dev/kfd" in text
    assert "What to do:" in text and "/dev/dri/renderD*" in text and "`render` group" in text
    assert "`video`" in text and "supplementalGroups" in text


def test_check_of_the_real_backend_lists_device_files(tmp_path, monkeypatch):
    """On a host with /dev/kfd but no amdsmi, check says both: the files are there, the library not."""
    dev = tmp_path / "dev"
    (dev / "dri").mkdir(parents=True)
    (dev / "kfd").write_text("")
    (dev / "dri" / "renderD128").write_text("")
    monkeypatch.setattr(amdgpu, "DEV_DIR", str(dev))
    probe = amdgpu._probe(cfg(tmp_path))
    assert probe.info["state"] == "no_library" and not probe.usable
    assert f"{dev}/kfd: read/write ok" in probe.lines and f"{dev}/dri/renderD128: read/write ok" in probe.lines
    assert any("pip install amdsmi" in a for a in probe.advice)
    (dev / "kfd").unlink()
    lines, denied, present = amdgpu.device_files(str(dev))
    assert not present and lines[0].startswith(f"{dev}/kfd: missing")
