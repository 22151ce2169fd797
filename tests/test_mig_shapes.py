"""MIG over NVML against shapes of a real driver that the scenario tests do not play: GPM
values that are not a percentage, instances destroyed and created while the exporter runs, a
gap in the MIG device indices, one MIG handle failing, the MIG mode changing under a running
exporter (a pending mode applied by a GPU reset), MIG on a GPU without an energy counter.

Shapes read from NVIDIA/go-nvml ``gen/nvml/nvml.h`` (NVML API 13, commit 2f9e261f):
``nvmlDeviceGetMigDeviceHandleByIndex`` answers NOT_FOUND "if no valid MIG device was found at
index" (a destroyed instance leaves its index empty); ``nvmlDeviceGetMigMode`` gives the current
and the pending mode ("Changing MIG modes may require device unbind or reset. The 'pending' MIG
mode refers to the target mode following the next activation trigger"): the current one rules;
``nvmlDeviceGetMaxMigDeviceCount`` "Returns zero if MIG is not supported or enabled";
``nvmlGpmMetricsGet``'s ``metrics[i].value`` is a C double (pynvml ``c_nvmlGpmMetric_t``)."""

from __future__ import annotations

import math

import pynvml
import pytest
from pynvml import NVMLError

from exporter.sensors.nvml import GpuMeter
from support import value
from test_mig import Clock, mig_gpus, run_node, sim


def gpm_meter(tmp_path, gpus=None):
    clock = Clock()
    lib = sim(tmp_path, gpus or mig_gpus(), clock)
    meter = GpuMeter(lib, backend="simulated")
    meter.open()
    return meter, lib, clock


# --- GPM values that are not a percentage -----------------------------------------------------------

def gpm_value_of_3g(monkeypatch, lib, value):
    """nvmlGpmMetricsGet answering ``value`` for the 3g instance (80 % in the scenario)."""
    real = lib.nvmlGpmMetricsGet

    def metrics(mg):
        out = real(mg)
        if mg.metrics[0].value == 80.0:
            mg.metrics[0].value = value
        return out
    monkeypatch.setattr(lib, "nvmlGpmMetricsGet", metrics)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_gpm_value_not_finite_falls_back_counted(tmp_path, monkeypatch, bad):
    meter, lib, clock = gpm_meter(tmp_path)
    gpm_value_of_3g(monkeypatch, lib, bad)
    meter.read()
    clock.t += 5
    r = meter.read()[0]
    assert [m.sm_util for m in r.mig] == [None, 50.0, 0.0, 0.0]   # that interval: the slice-share fallback
    assert r.field_errors == {"gpm": "not_finite"}


@pytest.mark.parametrize("raw,util", [(100.4, 100.0), (-0.2, 0.0), (37.5, 37.5)])
def test_gpm_value_slightly_out_of_range_is_clamped(tmp_path, monkeypatch, raw, util):
    meter, lib, clock = gpm_meter(tmp_path)
    gpm_value_of_3g(monkeypatch, lib, raw)
    meter.read()
    clock.t += 5
    r = meter.read()[0]
    assert r.mig[0].sm_util == util and not r.field_errors


# --- the instance set changing while the exporter runs ------------------------------------------------

MIG_SERIES = "wattprint_gpu_mig_instance_energy_joules_total"


def mig_series(m: dict) -> dict:
    return dict(m.get(MIG_SERIES, {}))


def assert_mig_books_the_gpu(m: dict) -> None:
    """Σ of every MIG series (destroyed instances' included, the free slices') = the GPU's energy."""
    assert math.fsum(mig_series(m).values()) == pytest.approx(value(m, "wattprint_gpu_energy_joules_total"),
                                                             rel=1e-12)


def assert_monotonic(before: dict, after: dict) -> None:
    for name, series in before.items():
        if name.endswith("_total"):
            for labels, v in series.items():
                assert after.get(name, {}).get(labels, -1) >= v, (name, labels)


def test_instances_destroyed_and_created_between_samples(tmp_path):
    """GPU instance 5 (2g) is destroyed and a 2g GPU instance 6 created in its place: its series
    keep their value, the new one starts, every counter stays monotonic, and the GPU's energy is
    booked in exactly one MIG series each interval."""
    node, _, m1, _ = run_node(tmp_path, mig_gpus())
    insts = node.sim._gpus[0].mig_state.instances
    gone = next(i for i in insts if i.gpu_instance == 5)
    old = {k: v for k, v in mig_series(m1).items() if dict(k)["gpu_instance"] == "5"}
    assert len(old) == 2 and all(v > 0 for v in old.values())
    insts.remove(gone)                      # nvidia-smi mig -dci -gi 5; -dgi -gi 5 (its process gone too)
    # the simulated power is one constant over the whole run (its energy integrates it from the
    # start): the 1g GPU instance 10 takes up the 2g's work (100 % × 1 slice = 50 % × 2), so the
    # truth stays exact
    next(i for i in insts if i.gpu_instance == 10).sm_util = 100.0
    m2 = node.step()
    assert_monotonic(m1, m2)
    assert_mig_books_the_gpu(m2)
    assert {k: mig_series(m2)[k] for k in old} == old                       # kept, not dropped, not grown
    assert value(m2, MIG_SERIES, gpu_instance="free") > value(m1, MIG_SERIES, gpu_instance="free")
    new = type(gone)("MIG-0000-new-2g", 6, 0, 2, 2, gone.memory_mb, 0.0, [])
    insts.append(new)                       # nvidia-smi mig -cgi 2g.20gb -C
    m3 = node.step()
    m4 = node.step()
    assert_monotonic(m2, m3), assert_monotonic(m3, m4)
    assert_mig_books_the_gpu(m4)
    assert value(m4, MIG_SERIES, gpu_instance="6", mode="idle") > 0
    assert value(m4, MIG_SERIES, gpu_instance="10", mode="active") > value(m2, MIG_SERIES, gpu_instance="10", mode="active")
    assert {k: mig_series(m4)[k] for k in old} == old
    assert value(m4, "wattprint_gpu_energy_joules_total") == pytest.approx(node.gpu_truth(0), rel=1e-9)
    assert len(node.sim.gpm_buffers) <= 8   # the destroyed GI's sample buffer is reused, not leaked


class GapAt:
    """The real driver's index space after an instance in the middle was destroyed: index 1 is
    empty (NOT_FOUND), the devices after it keep their indices."""

    def __init__(self, lib, index, error=pynvml.NVML_ERROR_NOT_FOUND):
        self._lib, self._index, self._error = lib, index, error

    def __getattr__(self, name):
        return getattr(self._lib, name)

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h, i):
        if i == self._index:
            raise NVMLError(self._error)
        return self._lib.nvmlDeviceGetMigDeviceHandleByIndex(h, i - (i > self._index))


@pytest.mark.parametrize("error,kind", [(pynvml.NVML_ERROR_NOT_FOUND, None), (pynvml.NVML_ERROR_UNKNOWN, "unknown"),
                                        (pynvml.NVML_ERROR_GPU_IS_LOST, "gpu_is_lost")])
def test_a_gap_or_a_failing_mig_handle_keeps_the_others_and_the_gpus_energy(tmp_path, error, kind):
    clock = Clock()
    lib = sim(tmp_path, mig_gpus(), clock)
    meter = GpuMeter(GapAt(lib, 1, error), backend="simulated")
    meter.open()
    meter.read()
    clock.t += 2
    r = meter.read()[0]
    assert r.error is None and r.energy_mj is not None
    assert [m.gpu_instance for m in r.mig] == [1, 5, 9, 10]   # the 4 devices, at indices 0, 2, 3, 4
    assert r.field_errors == ({} if kind is None else {"mig": kind})


def test_max_mig_device_count_raising_books_the_gpu_as_free(tmp_path):
    node, before, m, _ = run_node(tmp_path, mig_gpus(faults=[{"call": "mig_count", "error": "UNKNOWN",
                                                              "after_s": 0, "for_s": 1e9}]))
    assert_mig_books_the_gpu(m)
    assert value(m, MIG_SERIES, gpu_instance="free") == pytest.approx(value(m, "wattprint_gpu_energy_joules_total"))
    assert value(m, "wattprint_collector_errors_total", collector="gpu", kind="mig_unknown") > 0


def test_mig_on_a_gpu_without_an_energy_counter_is_still_split(tmp_path):
    node, before, m, _ = run_node(tmp_path, mig_gpus(energy_counter=False))
    assert dict(next(iter(m["wattprint_gpu_info"])))["energy_method"] == "power_integration"
    assert_mig_books_the_gpu(m)
    assert value(m, MIG_SERIES, gpu_instance="1", mode="active") > value(m, MIG_SERIES, gpu_instance="5", mode="active") > 0


# --- the MIG mode: current rules, and it can change under a running exporter -------------------------

class Pending:
    """nvmlDeviceGetMigMode answering (current, pending) = ``modes``: `nvidia-smi -mig 0` done,
    the reset that applies it not yet."""

    def __init__(self, lib, modes):
        self._lib, self.modes = lib, modes

    def __getattr__(self, name):
        return getattr(self._lib, name)

    def nvmlDeviceGetMigMode(self, h):
        self._lib.nvmlDeviceGetMigMode(h)
        return list(self.modes)


def test_the_current_mig_mode_rules_not_the_pending_one(tmp_path):
    clock = Clock()
    lib = sim(tmp_path, mig_gpus(), clock)
    meter = GpuMeter(Pending(lib, (pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_DISABLE)), backend="simulated")
    meter.open()
    assert meter.devices[0].mig_mode == "enabled"
    r = meter.read()[0]
    assert len(r.mig) == 4 and not r.field_errors


def switch_to_whole_gpu(node, tmp_path, util):
    """The pending mode applied by a GPU reset: MIG off, the vLLM process on the whole GPU at
    ``util`` % (the simulated power stays the constant it was, so the truth stays exact)."""
    whole = sim(tmp_path / "whole", [{"name": "NVIDIA H100 80GB HBM3", "idle_w": 70, "max_w": 700,
                                      "processes": [{"pid": 1001, "memory_gib": 30, "sm_util": util}]}], Clock())
    gpu = node.sim._gpus[0]
    gpu.mig, gpu.mig_state, gpu.phases = False, None, whole._gpus[0].phases


def test_mig_disabled_under_a_running_exporter_books_the_whole_gpu_to_its_processes(tmp_path):
    """Before: the GPU was still read as a MIG GPU, MaxMigDeviceCount 0 ("zero if MIG is not ...
    enabled"): no instance, every joule to the free slices, unallocated, though vLLM ran on it."""
    node, _, m1, _ = run_node(tmp_path, mig_gpus())
    (tmp_path / "whole").mkdir()
    switch_to_whole_gpu(node, tmp_path, 340 / 7)   # Σ util × slices / 7 of the MIG layout
    for _ in range(3):
        m2 = node.step()
    assert_monotonic(m1, m2)
    info = dict(next(iter(m2["wattprint_gpu_info"])))
    assert info["mig_mode"] == "disabled"
    assert value(m2, MIG_SERIES, gpu_instance="free") == value(m1, MIG_SERIES, gpu_instance="free")
    gpu_delta = value(m2, "wattprint_gpu_energy_joules_total") - value(m1, "wattprint_gpu_energy_joules_total")
    got = [value(m, "wattprint_endpoint_energy_joules_total", endpoint="vllm-8001", component="gpu") for m in (m1, m2)]
    assert got[1] - got[0] == pytest.approx(gpu_delta, rel=1e-9) and gpu_delta > 0
    assert value(m2, "wattprint_gpu_energy_joules_total") == pytest.approx(node.gpu_truth(0), rel=1e-9)
    assert value(m2, "wattprint_collector_errors_total", collector="gpu", kind="mig_mode_changed") == 1


def test_mig_enabled_under_a_running_exporter_is_split_by_instances(tmp_path):
    """The other way: a GPU discovered without MIG, MIG enabled by a reset, instances created."""
    whole = [{"name": "NVIDIA H100 80GB HBM3", "idle_w": 70, "max_w": 700,
              "processes": [{"pid": 1001, "memory_gib": 30, "sm_util": 340 / 7}]}]
    node, _, m1, _ = run_node(tmp_path, whole)
    assert dict(next(iter(m1["wattprint_gpu_info"])))["mig_mode"] == "disabled"
    (tmp_path / "mig").mkdir()
    mig = sim(tmp_path / "mig", mig_gpus(), Clock())
    gpu = node.sim._gpus[0]
    gpu.mig, gpu.mig_state = True, mig._gpus[0].mig_state
    for _ in range(3):
        m2 = node.step()
    assert dict(next(iter(m2["wattprint_gpu_info"])))["mig_mode"] == "enabled"
    assert len(m2["wattprint_gpu_mig_instance_info"]) == 4
    assert_monotonic(m1, m2)
    assert value(m2, "wattprint_gpu_energy_joules_total") == pytest.approx(node.gpu_truth(0), rel=1e-9)
    assert value(m2, "wattprint_collector_errors_total", collector="gpu", kind="mig_mode_changed") == 1
    assert value(m2, MIG_SERIES, gpu_instance="1", mode="idle") > 0


def test_mig_mode_query_failing_keeps_the_known_mode_counted(tmp_path):
    clock = Clock()
    lib = sim(tmp_path, mig_gpus(faults=[{"call": "mig_mode", "error": "UNKNOWN", "after_s": 1, "for_s": 1e9}]), clock)
    meter = GpuMeter(lib, backend="simulated")
    meter.open()
    clock.t += 2
    r = meter.read()[0]
    assert meter.devices[0].mig_mode == "enabled" and len(r.mig) == 4 and r.field_errors == {"mig_mode": "unknown"}


# --- a MIG GPU that does not have 7 slices --------------------------------------------------------

def test_a30_has_four_slices_and_no_phantom_free_ones(tmp_path):
    """An A30 (24 GB): MIG profiles 1g.6gb, 2g.12gb, 4g.24gb; its whole-GPU profile is the 4-slice
    one (NVML_GPU_INSTANCE_PROFILE_7_SLICE and _8_SLICE answer NOT_SUPPORTED). Two 2g instances
    hold the whole GPU: nothing is free. Assuming 7 slices gave 3 phantom free slices 3/7 of the idle."""
    a30 = [{"name": "NVIDIA A30", "idle_w": 30, "max_w": 165, "memory_total_gib": 24, "mig": True, "mig_slices": 4,
            "mig_instances": [{"profile": "2g.12gb", "gpu_instance": 1, "sm_util": 60,
                               "processes": [{"pid": 1001, "memory_gib": 8}]},
                              {"profile": "2g.12gb", "gpu_instance": 2, "sm_util": 20,
                               "processes": [{"pid": 1002, "memory_gib": 8}]}]}]
    node, before, m, _ = run_node(tmp_path, a30)
    assert node.sampler.gpu.devices[0].mig_slices == 4
    assert value(m, MIG_SERIES, gpu_instance="free") == 0
    assert_mig_books_the_gpu(m)
    held = [value(m, MIG_SERIES, gpu_instance=gi) for gi in ("1", "2")]   # no GPM on an A30: by slices
    assert held[0] == pytest.approx(held[1]) and held[0] > 0


# --- nvmlInit works, the device count does not (yet) ------------------------------------------------

class CountFails:
    def __init__(self, lib, times):
        self._lib, self.times = lib, times

    def __getattr__(self, name):
        return getattr(self._lib, name)

    def nvmlDeviceGetCount(self):
        if self.times > 0:
            self.times -= 1
            raise NVMLError(pynvml.NVML_ERROR_UNKNOWN)
        return self._lib.nvmlDeviceGetCount()


def test_device_count_failing_at_open_is_a_failed_open_retried_not_a_crash(tmp_path):
    """The first open (the daemon's start, `wattprint check`) reports it; read() opens again
    after the backoff and the GPU is there."""
    from exporter.sensors.session import REOPEN_MIN_S
    clock = Clock()
    lib = sim(tmp_path, mig_gpus(), clock)
    meter = GpuMeter(CountFails(lib, 1), backend="simulated", clock=clock)
    st = meter.open()
    assert st.state == "error" and meter.read() == []
    clock.t += REOPEN_MIN_S + 1
    assert [r.error for r in meter.read()] == [None] and meter.status.state == "ok"


def test_a_gpu_instance_id_made_again_starts_its_gpm_anew(tmp_path):
    """GPU instance 5 destroyed and a new one created between two reads: NVML hands out the
    lowest free id, 5 again. Its previous GPM sample is the old instance's: not paired with the
    new one's (that interval falls back), the next interval has GPM again."""
    meter, lib, clock = gpm_meter(tmp_path)
    meter.read()
    clock.t += 2
    assert [m.sm_util for m in meter.read()[0].mig] == [80.0, 50.0, 0.0, 0.0]
    insts = lib._gpus[0].mig_state.instances
    k = next(j for j, i in enumerate(insts) if i.gpu_instance == 5)
    insts[k] = type(insts[k])("MIG-0000-remade-5", 5, 0, 2, 2, insts[k].memory_mb, 50.0, [])
    clock.t += 2
    r = meter.read()[0]
    assert [m.sm_util for m in r.mig] == [80.0, None, 0.0, 0.0] and not r.field_errors
    clock.t += 2
    assert [m.sm_util for m in meter.read()[0].mig] == [80.0, 50.0, 0.0, 0.0]
    meter.close()
    assert not lib.gpm_buffers


def test_mig_pids_this_host_cannot_see_keep_their_energy(tmp_path):
    """A container without hostPID: the MIG handles list host pids that /proc here does not have.
    Their instances' energy is still booked, to the instance's pod where the kubelet says whose it
    is, else to an endpoint of its own: Σ endpoints = the GPU's energy."""
    from exporter.identity.resolver import Workload
    from test_faults import assert_conserved
    gpus = mig_gpus()
    for inst in gpus[0]["mig_instances"]:
        for p in inst.get("processes", []):
            p["pid"] += 50000            # not in the fake /proc
    (tmp_path / "ids").mkdir()
    lib = sim(tmp_path / "ids", gpus, Clock())
    lib.nvmlInit()
    uuid0 = lib.nvmlDeviceGetUUID(lib.nvmlDeviceGetMigDeviceHandleByIndex(lib.nvmlDeviceGetHandleByIndex(0), 0))
    pod = Workload("models", "llama", "llama-3", "llama-0")
    node, before, m, _ = run_node(tmp_path, gpus, owners={uuid0: pod})
    assert_conserved(m)
    gpu_delta = value(m, "wattprint_gpu_energy_joules_total") - value(before, "wattprint_gpu_energy_joules_total")
    ep = [value(x, "wattprint_endpoint_energy_joules_total", component="gpu") for x in (before, m)]
    assert ep[1] - ep[0] == pytest.approx(gpu_delta, rel=1e-9)
    got = value(m, "wattprint_endpoint_energy_joules_total", endpoint="llama", component="gpu") - \
        value(before, "wattprint_endpoint_energy_joules_total", endpoint="llama", component="gpu")
    inst1 = math.fsum(v for k, v in mig_series(m).items() if dict(k)["gpu_instance"] == "1") - \
        math.fsum(v for k, v in mig_series(before).items() if dict(k)["gpu_instance"] == "1")
    assert got == pytest.approx(inst1, rel=1e-9) and got > 0   # the 3g's invisible process: its pod's


class OddAttributes(GapAt):
    """nvmlDeviceGetAttributes of MIG device 1 answering ``slices`` (gpuInstanceSliceCount,
    computeInstanceSliceCount), or index 2 answering index 0's device again."""

    def __init__(self, lib, slices=None, repeat=False):
        super().__init__(lib, -1)
        self.slices, self.repeat = slices, repeat

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h, i):
        return self._lib.nvmlDeviceGetMigDeviceHandleByIndex(h, 0 if self.repeat and i == 2 else i)

    def nvmlDeviceGetAttributes(self, mh):
        a = self._lib.nvmlDeviceGetAttributes(mh)
        if self.slices is not None and self._lib.nvmlDeviceGetGpuInstanceId(mh) == 5:
            a.gpuInstanceSliceCount, a.computeInstanceSliceCount = self.slices
        return a


@pytest.mark.parametrize("odd", [{"slices": (0, 0)}, {"slices": (2, 0)}, {"slices": (1, 2)}, {"repeat": True}])
def test_a_mig_device_with_senseless_attributes_is_left_out_alone(tmp_path, odd):
    """Before: computeInstanceSliceCount 0 divided by zero (every read of the GPU failed, its
    energy booked nowhere); a device listed twice held its slices twice (the split invalid)."""
    clock = Clock()
    meter = GpuMeter(OddAttributes(sim(tmp_path, mig_gpus(), clock), **odd), backend="simulated")
    meter.open()
    r = meter.read()[0]
    assert r.error is None and r.field_errors == {"mig": "unexpected_data"}
    assert len(r.mig) == 3 and len({m.uuid for m in r.mig}) == 3
    assert sum(m.slices for m in r.mig) <= 7
