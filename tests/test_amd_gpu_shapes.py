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

from exporter.sampler import Sampler
from exporter.sensors.amdgpu import AmdGpuMeter
from exporter.sensors.simamdsmi import (AmdSmiLibraryException, AmdSmiParameterException, AmdSmiRetryException,
                                        AmdSmiTimeoutException, SimulatedAmdSmi)
from support import write_scenario
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
