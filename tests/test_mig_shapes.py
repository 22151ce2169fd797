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
