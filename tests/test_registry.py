"""The meter registry: names are the config's choices, auto picks the first usable meter, an
explicitly asked-for meter that is unusable is a clear error, `check` lists every registered
meter, and a new meter is one module plus one registry line — shown with a meter module that
exists only in this test, driving the real Sampler unchanged."""

from __future__ import annotations

import json
import sys
import types

import pytest

from exporter import check, config
from exporter.sensors import MeterError, registry
from exporter.sensors.base import CpuReading, CpuZone, MeterSpec, Probe
from support import ROOT, make_procfs


def cfg(tmp_path, **flags):
    base = {("path", "sysfs"): str(tmp_path / "sys"), ("path", "procfs"): str(tmp_path / "proc"),
            ("carbon", "region"): "FR", ("carbon", "detect_region"): "off"}
    base.update({tuple(k.split("__")): v for k, v in flags.items()})
    return config.load(None, base)


def test_auto_cpu_falls_back_to_the_estimate_without_rapl(tmp_path):
    make_procfs(tmp_path / "proc", {}, 100, 100)
    meter = registry.open_cpu(cfg(tmp_path))
    assert meter.name == "estimate"


def test_explicit_rapl_without_rapl_is_a_clear_error(tmp_path):
    make_procfs(tmp_path / "proc", {}, 100, 100)
    with pytest.raises(MeterError, match="cpu.meter=rapl: not usable here: RAPL: not usable"):
        registry.open_cpu(cfg(tmp_path, cpu__meter="rapl"))


def test_unknown_backend_names_are_refused_by_the_config(tmp_path):
    with pytest.raises(config.ConfigError, match="gpu.backend"):
        cfg(tmp_path, gpu__backend="amdsmi-typo")


def test_check_lists_every_registered_meter_and_which_is_used(tmp_path):
    make_procfs(tmp_path / "proc", {}, 100, 100)
    sim = ROOT / "tests/fixtures/sim/two-endpoints.yaml"
    rep = check.diagnose(cfg(tmp_path, gpu__backend="simulated", gpu__simulation_file=str(sim)))
    listed = {(m["kind"], m["name"]): m for m in rep["meters"]}
    assert set(listed) == {("gpu", n) for n in registry.GPU_BACKENDS} | {("cpu", n) for n in registry.CPU_METERS}
    assert listed[("gpu", "simulated")]["selected"] and listed[("cpu", "estimate")]["selected"]
    assert not listed[("cpu", "rapl")]["usable"] and "does not exist" in listed[("cpu", "rapl")]["summary"]
    json.loads(check.render_json(rep))  # serialisable
    text = check.render_text(rep)
    assert "meters in use: gpu simulated, cpu estimate" in text


def test_auto_takes_amdsmi_where_nvml_is_absent(tmp_path, monkeypatch):
    """This host has no NVML: auto tries nvml (no_library), then amdsmi, which opens here on the
    simulated amdsmi module standing in for the real one (the hardware boundary)."""
    from exporter.sensors import amdgpu
    from exporter.sensors.simamdsmi import SimulatedAmdSmi
    from support import write_scenario

    import pynvml

    try:
        pynvml.nvmlInit()
        pytest.skip("this host has NVML: auto takes it first")
    except pynvml.NVMLError:
        pass
    sim = SimulatedAmdSmi.from_file(str(write_scenario(tmp_path / "amd.yaml", {"gpus": [{}, {}]})))
    monkeypatch.setattr(amdgpu, "import_amdsmi", sim.import_module)
    meter = registry.open_gpu(cfg(tmp_path))
    assert isinstance(meter, amdgpu.AmdGpuMeter) and meter.status.backend == "amdsmi"
    assert [d.name for d in meter.devices] == ["AMD Instinct MI300X"] * 2


# --- a new meter: one module, one registry line --------------------------------------------------

class ConstantMeter:
    """A CPU meter that says every zone drew a constant power (a stand-in for hwmon)."""
    name = "constant"

    def __init__(self, watts: float) -> None:
        self.watts = watts

    def cpu_zones(self):
        return [CpuZone("const0", "0", "package", "constant", True, True), CpuZone("const0-dram", "0", "dram",
                                                                                  "constant", True, True, "dram")]

    def measure(self, dt_s, busy_ratio):
        return CpuReading({"const0": self.watts * dt_s, "const0-dram": 1.0 * dt_s})

    def checkpoint(self):
        return None

    def restore(self, cp):
        pass


def test_a_new_meter_is_one_module_and_one_registry_line(tmp_path, monkeypatch):
    mod = types.ModuleType("wattprint_test_constant_meter")
    mod.METER = MeterSpec("constant", "cpu", "constant power (test)", auto=True,
                          open=lambda c: ConstantMeter(30.0),
                          probe=lambda c: Probe("constant", "cpu", True, "constant: 30 W"))
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setattr(registry, "CPU_METERS", {"constant": mod.__name__, **registry.CPU_METERS})
    make_procfs(tmp_path / "proc", {}, 100, 100)
    from exporter import daemon

    c = cfg(tmp_path, gpu__backend="none", kubernetes__enabled="off")
    sampler = daemon.build_sampler(c)
    assert sampler.cpu_method == "constant"
    t = [0.0]
    sampler.clock = lambda: t[0]
    sampler.sample()
    t[0] = 2.0
    make_procfs(tmp_path / "proc", {}, 200, 200)
    sampler.sample()
    text = sampler.metrics_text()
    assert 'wattprint_node_energy_joules_total{component="cpu"} 60.0' in text
    assert 'wattprint_node_energy_joules_total{component="dram"} 2.0' in text
    assert 'method="constant"' in text
    assert any(m["name"] == "constant" for m in check.diagnose(c)["meters"])
