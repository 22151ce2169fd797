"""The ledger: counters only grow, the cardinality cap folds into an overflow series that keeps
sums whole, and opt-in detail levels add per-pod and per-process series."""

import math

import pytest

from exporter.ledger import Ledger
from test_sampler import GPU, VLLM, Node, value


def test_cap_folds_into_overflow_and_counts():
    led = Ledger(max_series=3)
    for i in range(10):
        led.add("endpoint_energy_joules_total", ("ns", f"ep{i}", "m", "gpu", "active"), 1.0)
    series = led.counters["endpoint_energy_joules_total"]
    assert len(series) == 4  # three real series + the overflow one
    assert series[("", "overflow", "", "gpu", "active")] == 7.0
    assert led.folded["endpoint_energy_joules_total"] == 7
    assert math.fsum(series.values()) == 10.0  # nothing lost


def test_negative_or_nan_increments_are_bugs():
    led = Ledger()
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite and >= 0"):
            led.add("node_energy_joules_total", ("gpu",), bad)


def test_transaction_rolls_back_whole():
    led = Ledger()
    led.begin()
    led.add("node_energy_joules_total", ("gpu",), 5.0)
    led.rollback()
    assert led.total("node_energy_joules_total") == 0.0


def test_detail_levels_and_no_new_series_per_restart(tmp_path):
    procs = {10: {"comm": "python3", "cmdline": VLLM}}
    node = Node(tmp_path, [{**GPU, "processes": [{"pid": 10, "sm_util": 50}]}], procs)
    node.sampler.level = "process"
    for _ in range(3):
        node.step(ticks={10: 10})
    m = node.metrics()
    assert value(m, "wattprint_process_energy_joules_total", pid="10", comm="python3", endpoint="vllm-8001") > 0
    # the server restarts with a new pid: same endpoint series, one more process series
    procs[11] = {**procs.pop(10), "start": 999}
    import shutil
    shutil.rmtree(tmp_path / "proc" / "10")
    node.sim._gpus[0].phases[0].procs[0].pid = 11
    for _ in range(3):
        node.step(ticks={11: 10})
    m = node.metrics()
    endpoints = {dict(k)["endpoint"] for k in m["wattprint_endpoint_energy_joules_total"]}
    assert endpoints == {"vllm-8001", "system"}
    assert {dict(k)["pid"] for k in m["wattprint_process_energy_joules_total"]} >= {"10", "11"}


def test_default_level_has_no_per_process_series(tmp_path):
    node = Node(tmp_path, [{**GPU, "processes": [{"pid": 10, "sm_util": 50}]}],
                {10: {"comm": "python3", "cmdline": VLLM}})
    for _ in range(2):
        node.step()
    m = node.metrics()
    assert "wattprint_process_energy_joules_total" not in m and "wattprint_pod_energy_joules_total" not in m
