"""GPU meter over the simulated NVML: units, methods, errors mid-run, resets, no library, MIG."""

import pynvml
import pytest

from exporter.sensors.nvml import GpuMeter, error_kind
from exporter.sensors.simnvml import ScenarioError, SimulatedNVML
from support import write_scenario


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def sim(tmp_path, data, clock):
    return SimulatedNVML.from_file(str(write_scenario(tmp_path / "s.yaml", data)), clock)


GPU = {"name": "NVIDIA H100 80GB HBM3", "idle_w": 100, "max_w": 700,
       "processes": [{"pid": 11, "memory_gib": 10, "sm_util": 50}]}


def test_units_and_processes(tmp_path):
    clock = Clock()
    meter = GpuMeter(sim(tmp_path, {"gpus": [GPU]}, clock), backend="simulated")
    assert meter.open().state == "ok"
    r0 = meter.read()[0]
    clock.t += 10
    r1 = meter.read()[0]
    assert r1.power_mw == 400_000                          # 100 + 600 × 0.5 W, in mW
    assert r1.energy_mj - r0.energy_mj == 4_000_000        # 400 W × 10 s, in mJ
    assert r1.processes == {11: 10 * 1024**3}
    assert r1.sm_util == {11: 50.0} and r1.util_available   # NVML returns each pid's newest sample
    d = meter.devices[0]
    assert (d.energy_method, d.mig_mode, d.name) == ("counter", "disabled", "NVIDIA H100 80GB HBM3")


def test_power_integration_when_counter_unsupported(tmp_path):
    meter = GpuMeter(sim(tmp_path, {"gpus": [{**GPU, "energy_counter": False}]}, Clock()))
    meter.open()
    assert meter.devices[0].energy_method == "power_integration"
    assert meter.read()[0].energy_mj is None


def test_one_gpu_lost_others_go_on(tmp_path):
    clock = Clock()
    lost = {**GPU, "faults": [{"call": "energy", "error": "GPU_IS_LOST", "after_s": 5, "for_s": 10}]}
    meter = GpuMeter(sim(tmp_path, {"gpus": [GPU, lost]}, clock))
    meter.open()
    clock.t += 6
    a, b = meter.read()
    assert a.error is None and b.error == "gpu_is_lost"
    clock.t += 10
    assert [r.error for r in meter.read()] == [None, None]


@pytest.mark.parametrize("library,state", [("missing", "no_library"), ("driver_not_loaded", "driver_not_loaded")])
def test_no_nvml_is_a_state_not_an_error(tmp_path, library, state):
    meter = GpuMeter(sim(tmp_path, {"library": library, "gpus": [GPU]}, Clock()))
    st = meter.open()
    assert st.state == state and meter.read() == []
    assert "driver" in st.detail


def test_real_pynvml_without_library_reports_no_library():
    meter = GpuMeter()  # the real pynvml: no libnvidia-ml on CI machines
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("this host has NVML")
    except pynvml.NVMLError_LibraryNotFound:
        pass
    assert meter.open().state == "no_library"


def test_mig_detected(tmp_path):
    meter = GpuMeter(sim(tmp_path, {"gpus": [{**GPU, "mig": True}, {**GPU, "name": "Tesla T4"}]}, Clock()))
    meter.open()
    assert [d.mig_mode for d in meter.devices] == ["enabled", "unsupported"]


def test_error_kind_names():
    assert error_kind(pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)) == "gpu_is_lost"
    assert error_kind(pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)) == "timeout"


def test_bad_scenario_names_the_key(tmp_path):
    with pytest.raises(ScenarioError, match=r"gpus\[0\]\.faults\[0\]\.error: unknown NVML error 'EXPLODED'"):
        sim(tmp_path, {"gpus": [{**GPU, "faults": [{"error": "EXPLODED"}]}]}, Clock())
    with pytest.raises(ScenarioError, match=r"gpus\[0\]: max_w"):
        sim(tmp_path, {"gpus": [{**GPU, "max_w": 10}]}, Clock())


def test_util_samples_of_every_process_counted_once(tmp_path):
    """Each process is sampled at its own moment (every 200 ms, newest only); polling between
    reads collects every sample once, whatever the read times."""
    clock = Clock()
    gpu = {**GPU, "processes": [{"pid": 11, "sm_util": 60}, {"pid": 12, "sm_util": 20}, {"pid": 13, "sm_util": 5}]}
    meter = GpuMeter(sim(tmp_path, {"gpus": [gpu]}, clock))
    meter.open()
    totals: dict[int, float] = {}
    start = clock.t
    for i in range(400):                       # 40 s in 100 ms polls, reads at irregular times
        clock.t = start + 0.1 * (i + 1)
        if i % 7 == 3 or i % 11 == 0:
            for pid, u in meter.read()[0].sm_util.items():
                totals[pid] = totals.get(pid, 0.0) + u
        else:
            meter.poll_util()
    for pid, util in ((11, 60), (12, 20), (13, 5)):
        assert totals[pid] == pytest.approx(util * 40 / 0.2, rel=0.02), pid
