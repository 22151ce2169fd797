"""The AMD backend against shapes of the real ``amdsmi`` binding that the scenario tests do not
play: its other exception classes, "N/A" and odd types in any field, a node with no GPU, a GPU
that fails mid-run while the others go on, malformed process entries, engine time going back.

Shapes read from ROCm/amdsmi ``py-interface/amdsmi_exception.py`` (commit 0d81c33):
``AmdSmiRetryException`` and ``AmdSmiTimeoutException`` derive from ``AmdSmiLibraryException``
(codes RETRY, TIMEOUT); ``AmdSmiParameterException`` (and ``AmdSmiKeyException``) derive from
the base ``AmdSmiException`` only and have no ``get_error_code``. ``amdsmi_interface.py``
(``_validate_if_max_uint``) turns a field the firmware does not fill (UINT*_MAX) into ``"N/A"``."""

from __future__ import annotations

import pytest

from exporter.sensors.amdgpu import AmdGpuMeter
from exporter.sensors.simamdsmi import (AmdSmiLibraryException, AmdSmiParameterException, AmdSmiRetryException,
                                        AmdSmiTimeoutException, SimulatedAmdSmi)
from support import value, write_scenario
from test_sampler import Clock

MI300X = {"name": "AMD Instinct MI300X", "idle_w": 140, "max_w": 750}


def sim(tmp_path, data, clock):
    return SimulatedAmdSmi.from_file(str(write_scenario(tmp_path / "amd.yaml", data)), clock)


def meter(tmp_path, gpus, clock=None):
    clock = clock or Clock()
    s = sim(tmp_path, {"gpus": gpus}, clock)
    m = AmdGpuMeter(s.import_module, "simulated-amd", clock)
    assert m.open().state == "ok"
    return m, s, clock


# --- the binding's exception classes -------------------------------------------------------------

def test_sim_raises_the_bindings_exception_classes(tmp_path):
    faults = [{"call": "power", "error": "RETRY"}, {"call": "memory", "error": "TIMEOUT"},
              {"call": "processes", "error": "PARAMETER"}]
    _, s, _ = meter(tmp_path, [{**MI300X, "faults": faults}])
    h = s.amdsmi_get_processor_handles()[0]
    with pytest.raises(AmdSmiRetryException) as retry:
        s.amdsmi_get_power_info(h)
    assert isinstance(retry.value, AmdSmiLibraryException) and retry.value.get_error_code() == 9
    with pytest.raises(AmdSmiTimeoutException):
        s.amdsmi_get_gpu_vram_usage(h)
    with pytest.raises(AmdSmiParameterException) as param:
        s.amdsmi_get_gpu_process_list(h)
    assert not isinstance(param.value, AmdSmiLibraryException)   # the base class only, no status code
    with pytest.raises(AmdSmiParameterException):                # not a processor handle
        s.amdsmi_get_energy_count("0000:05:00.0")


def test_every_exception_class_degrades_its_field(tmp_path):
    """RETRY/TIMEOUT are library exceptions with codes; PARAMETER is not one: each degrades only
    its own field, named, and the energy is still read."""
    faults = [{"call": "power", "error": "RETRY"}, {"call": "memory", "error": "TIMEOUT"},
              {"call": "processes", "error": "PARAMETER"}]
    m, _, clock = meter(tmp_path, [{**MI300X, "faults": faults, "processes": [{"pid": 7, "sm_util": 50}]}])
    r = m.read()[0]
    assert r.error is None and r.energy_mj is not None
    assert r.field_errors == {"power": "retry", "memory": "timeout", "processes": "parameter"}


def test_a_parameter_exception_on_the_energy_fails_that_gpu_only(tmp_path):
    m, _, clock = meter(tmp_path, [MI300X, {**MI300X, "faults": [{"call": "energy", "error": "PARAMETER", "after_s": 5}]}])
    clock.t += 6
    a, b = m.read()
    assert a.error is None and a.energy_mj is not None and b.error == "parameter"


def test_a_parameter_exception_at_discovery_leaves_the_gpu_undiscovered(tmp_path):
    m, _, _ = meter(tmp_path, [MI300X, {**MI300X, "faults": [{"call": "uuid", "error": "PARAMETER"}]}])
    assert [d.index for d in m.devices] == [0] and m.undiscovered == {1: "parameter"}


# --- "N/A" and odd types in the fields -----------------------------------------------------------

def patch(monkeypatch, s, name, edit):
    """Wrap one of the simulated binding's calls so that its result is edited (a shape the real
    binding can return: "N/A" from _validate_if_max_uint, another type in a newer version)."""
    real = getattr(s, name)
    monkeypatch.setattr(s, name, lambda *a: edit(real(*a)))


@pytest.mark.parametrize("resolution,method", [
    (15.3, "counter"), ("15.3", "counter"),                        # a float, a numeric string
    ("N/A", "power_integration"), ({"value": 15.3, "unit": "uJ"}, "power_integration"), (None, "power_integration"),
])
def test_counter_resolution_of_any_type_never_crashes(tmp_path, monkeypatch, resolution, method):
    m, s, clock = meter(tmp_path, [MI300X])
    patch(monkeypatch, s, "amdsmi_get_energy_count", lambda e: {**e, "counter_resolution": resolution})
    m.read()
    clock.t += 5
    r = m.read()[0]
    assert r.error is None and m.devices[0].energy_method == method
    if method == "counter":
        assert not r.field_errors
    else:  # counted, and the GPU's energy still comes, from power
        assert m.read()[0].power_mw == 140_000 and m.devices[0].energy_method == "power_integration"


def test_vram_used_not_available_is_a_degraded_field_not_zero(tmp_path, monkeypatch):
    m, s, _ = meter(tmp_path, [MI300X])
    patch(monkeypatch, s, "amdsmi_get_gpu_vram_usage", lambda v: {**v, "vram_used": "N/A"})
    r = m.read()[0]
    assert r.memory_used is None and r.field_errors == {"memory": "not_available"}


@pytest.mark.parametrize("bad", [
    {"name": "python3", "mem": 1 << 30, "engine_usage": {"gfx": 5, "enc": 0}},                 # no pid
    {"name": "python3", "pid": "N/A", "mem": 1 << 30, "engine_usage": {"gfx": 5, "enc": 0}},   # pid N/A
    {"name": "python3", "pid": 0, "mem": 1 << 30},                                             # pid 0
])
def test_a_malformed_process_entry_is_skipped_and_counted(tmp_path, monkeypatch, bad):
    clock = Clock()
    m, s, clock = meter(tmp_path, [{**MI300X, "processes": [{"pid": 11, "memory_gib": 4, "sm_util": 50}]}], clock)
    patch(monkeypatch, s, "amdsmi_get_gpu_process_list", lambda ps: [*ps, dict(bad)])
    m.read()
    clock.t += 10
    r = m.read()[0]
    assert r.error is None and r.processes == {11: 4 << 30}
    assert r.sm_util == pytest.approx({11: 50.0}) and r.field_errors == {"processes": "unexpected_data"}


@pytest.mark.parametrize("usage", ["N/A", None, {"enc": 0}, {"gfx": "N/A", "enc": 0}])
def test_engine_usage_missing_keeps_the_process_without_a_utilisation_sample(tmp_path, monkeypatch, usage):
    """A pid without GFX engine time is a resident (its memory counts) with no sample; a zero
    would claim it idle."""
    m, s, clock = meter(tmp_path, [{**MI300X, "processes": [{"pid": 11, "memory_gib": 4, "sm_util": 50},
                                                            {"pid": 12, "memory_gib": 2, "sm_util": 10}]}])

    def edit(ps):
        out = [dict(p) for p in ps]
        for p in out:
            if p["pid"] == 12:
                p["engine_usage"] = usage
        return out
    patch(monkeypatch, s, "amdsmi_get_gpu_process_list", edit)
    m.read()
    clock.t += 10
    r = m.read()[0]
    assert r.processes == {11: 4 << 30, 12: 2 << 30}
    assert r.sm_util == pytest.approx({11: 50.0}) and r.field_errors == {"processes": "unexpected_data"}


def test_a_process_gone_between_list_and_info_is_skipped_alone(tmp_path, monkeypatch):
    """amdsmi before 6.2: the list gives handles, each read with amdsmi_get_gpu_process_info; a
    process that exited in between answers NOT_FOUND (the fake's, as the real C library's)."""
    m, s, clock = meter(tmp_path, [{**MI300X, "process_api": "handles",
                                    "processes": [{"pid": 11, "memory_gib": 4}, {"pid": 12, "memory_gib": 2}]}])
    real = s.amdsmi_get_gpu_process_info

    def info(h, p):
        if p.value == 12:
            raise AmdSmiLibraryException(31)  # AMDSMI_STATUS_NOT_FOUND
        return real(h, p)
    monkeypatch.setattr(s, "amdsmi_get_gpu_process_info", info)
    r = m.read()[0]
    assert r.processes == {11: 4 << 30} and not r.field_errors


# --- one GPU's read raising something nobody expected ----------------------------------------------

def test_an_unexpected_exception_on_one_gpu_fails_that_gpu_alone_through_the_sampler(tmp_path, monkeypatch):
    """A binding that answers one GPU with a shape the meter does not know (here power info as a
    list: AttributeError) fails that GPU's reading, counted as ``unexpected_attributeerror``; the
    other GPU's energy is still booked each sample (the loop is not rolled back every time)."""
    from test_amd_gpu import AmdNode

    node = AmdNode(tmp_path, [MI300X, MI300X], {})
    s, bad = node.sim, node.meter.devices[1].handle
    real = s.amdsmi_get_power_info
    monkeypatch.setattr(s, "amdsmi_get_power_info", lambda h: ["N/A"] if h is bad else real(h))
    for _ in range(4):
        node.step()
    m = node.metrics()
    assert value(m, "wattprint_gpu_energy_joules_total", gpu="0") == pytest.approx(140 * 4, rel=1e-6)
    assert value(m, "wattprint_collector_errors_total", collector="gpu", kind="unexpected_attributeerror") == 5
    assert node.meter.reinits == 0   # one GPU failing is not a lost session


# --- shapes the design already handles, pinned ------------------------------------------------------

@pytest.mark.parametrize("cap", ["N/A", 0, None])
def test_power_cap_not_available_bounds_a_wrap_by_the_largest_device(tmp_path, monkeypatch, cap):
    from exporter.sensors.amdgpu import MAX_DEVICE_W, WRAP_COUNTS, Accumulator
    clock = Clock()
    s = sim(tmp_path, {"gpus": [MI300X]}, clock)
    monkeypatch.setattr(s, "amdsmi_get_power_cap_info", lambda h: {"power_cap": cap, "default_power_cap": cap})
    m = AmdGpuMeter(s.import_module, "simulated-amd", clock)
    m.open()
    assert m.devices[0].power_limit_w == 0.0
    a = Accumulator()
    a.extend(WRAP_COUNTS - 10, 0.0, 15.3, m.devices[0].power_limit_w)
    assert a.extend(10, 1.0, 15.3, m.devices[0].power_limit_w) == WRAP_COUNTS + 10 and a.wraps == 1
    # and the bound is MAX_DEVICE_W: a gap in which it could have wrapped twice is a restart
    gap = 2 * WRAP_COUNTS * 15.3e-6 / MAX_DEVICE_W
    assert a.extend(5, 1.0 + gap, 15.3, 0.0) == 5


def test_a_node_without_gpus_is_ok_and_books_nothing(tmp_path):
    from exporter.sensors.amdgpu import describe
    m, _, clock = meter(tmp_path, [])
    assert m.devices == [] and m.status.detail == "0 GPU(s)" and m.read() == []
    clock.t += 30
    assert m.read() == [] and m.reinits == 0      # no GPU is not "every GPU failing"
    probe = describe(m, "simulated-amd")
    assert not probe.usable and probe.info["gpus"] == []


def test_engine_time_going_back_is_a_new_process_without_a_sample(tmp_path, monkeypatch):
    """A process restarted under the same pid (a container's pid 1): its GFX engine time starts
    again below the last one; no negative sample, and the next interval has its growth again."""
    m, s, clock = meter(tmp_path, [{**MI300X, "processes": [{"pid": 11, "memory_gib": 4, "sm_util": 50}]}])
    offset = {"ns": 0}
    real = s.amdsmi_get_gpu_process_list
    monkeypatch.setattr(s, "amdsmi_get_gpu_process_list", lambda h: [
        {**p, "engine_usage": {**p["engine_usage"], "gfx": p["engine_usage"]["gfx"] - offset["ns"]}} for p in real(h)])
    m.read()
    clock.t += 10
    assert m.read()[0].sm_util == pytest.approx({11: 50.0})
    clock.t += 10
    offset["ns"] = real(m.devices[0].handle)[0]["engine_usage"]["gfx"] - 10**9   # restarted: 1 s of GFX time
    r = m.read()[0]
    assert r.sm_util == {} and not r.field_errors
    clock.t += 10
    assert m.read()[0].sm_util == pytest.approx({11: 50.0})


def test_an_unexpected_answer_at_discovery_leaves_that_gpu_undiscovered_and_retried(tmp_path, monkeypatch):
    """amdsmi_get_gpu_asic_info answering a string for GPU 1 (a shape no version documents):
    GPU 0 is read, GPU 1 stays undiscovered (counted each sample), and is found once it answers."""
    clock = Clock()
    s = sim(tmp_path, {"gpus": [MI300X, MI300X]}, clock)
    real, odd = s.amdsmi_get_gpu_asic_info, {"on": True}
    monkeypatch.setattr(s, "amdsmi_get_gpu_asic_info",
                        lambda h: "N/A" if odd["on"] and h.gpu.index == 1 else real(h))
    m = AmdGpuMeter(s.import_module, "simulated-amd", clock)
    assert m.open().state == "ok"
    assert [d.index for d in m.devices] == [0] and m.undiscovered == {1: "unexpected_attributeerror"}
    assert [r.device.index for r in m.read()] == [0]
    odd["on"] = False
    assert [r.device.index for r in m.read()] == [0, 1] and m.undiscovered == {}
