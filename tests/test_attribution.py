"""Unit and property tests of exporter.attribution (pure arithmetic, no I/O)."""

from __future__ import annotations

import math
import os
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.attribution import (
    ACTIVE,
    CPU_DEVICE,
    CPU_IDLE_POLICY_DOCS,
    GPU_IDLE_POLICY_DOCS,
    IDLE,
    IDLE_POLICIES_CPU,
    IDLE_POLICIES_GPU,
    SYSTEM,
    UNALLOCATED,
    CpuInterval,
    GpuInterval,
    Share,
    device_totals,
    gpu_joules_by_key,
    split_cpu,
    split_gpu,
    split_interval,
)


def gpu(energy=100.0, dt=1.0, idle_w=0.0, mem=None, util=None, device="gpu0"):
    return GpuInterval(device, energy, dt, idle_w, mem or {}, util or {})


def cpu(energy=None, busy=1.0, secs=None, node_busy=0.0):
    return CpuInterval(energy if energy is not None else {"cpu": 100.0}, busy, secs or {}, node_busy)


def table(shares):
    """(key, device, component, mode) -> joules; asserts each row appears once."""
    out = {}
    for s in shares:
        k = (s.key, s.device, s.component, s.mode)
        assert k not in out, f"duplicate row {k}"
        out[k] = s.joules
    return out


def by_key_mode(shares):
    out = defaultdict(float)
    for s in shares:
        out[(s.key, s.mode)] += s.joules
    return dict(out)


# ---------------------------------------------------------------------------------- GPU rules

def test_gpu_idle_is_baseline_and_active_the_rest():
    rows = by_key_mode(split_gpu(gpu(energy=300.0, dt=2.0, idle_w=50.0, mem={"a": 1})))
    assert rows == {("a", IDLE): 100.0, ("a", ACTIVE): 200.0}


def test_gpu_idle_capped_at_measured_energy():
    rows = by_key_mode(split_gpu(gpu(energy=30.0, dt=1.0, idle_w=50.0, mem={"a": 1})))
    assert rows == {("a", IDLE): 30.0}  # baseline above the measured power: no active, no negative


def test_gpu_no_resident_goes_to_unallocated_keeping_modes():
    shares = split_gpu(gpu(energy=80.0, idle_w=60.0))
    assert table(shares) == {(UNALLOCATED, "gpu0", "gpu", ACTIVE): 20.0,
                             (UNALLOCATED, "gpu0", "gpu", IDLE): 60.0}


def test_gpu_active_by_sm_util():
    rows = by_key_mode(split_gpu(gpu(energy=100.0, mem={"a": 1, "b": 1}, util={"a": 30, "b": 10})))
    assert rows[("a", ACTIVE)] == pytest.approx(75.0)
    assert rows[("b", ACTIVE)] == pytest.approx(25.0)


def test_gpu_active_equal_when_util_zero_or_empty():
    for util in ({}, {"a": 0, "b": 0}):
        rows = by_key_mode(split_gpu(gpu(energy=90.0, mem={"a": 5, "b": 1, "c": 0}, util=util)))
        assert [rows[(k, ACTIVE)] for k in "abc"] == pytest.approx([30.0, 30.0, 30.0])


def test_gpu_util_only_key_is_resident():
    rows = by_key_mode(split_gpu(gpu(energy=100.0, idle_w=40.0, mem={"a": 10}, util={"b": 5})))
    assert rows[("b", ACTIVE)] == pytest.approx(60.0)
    assert ("a", ACTIVE) not in rows  # zero rows are omitted
    # memory policy: b holds no known memory, a holds it all
    assert rows[("a", IDLE)] == pytest.approx(40.0)
    assert ("b", IDLE) not in rows
    rows = by_key_mode(split_gpu(gpu(energy=100.0, idle_w=40.0, mem={"a": 10}, util={"b": 5}), "equal"))
    assert rows[("a", IDLE)] == rows[("b", IDLE)] == pytest.approx(20.0)


def test_gpu_idle_by_memory_and_equal_policies():
    iv = gpu(energy=100.0, idle_w=100.0, mem={"a": 3 << 30, "b": 1 << 30})
    rows = by_key_mode(split_gpu(iv, "memory"))
    assert rows == {("a", IDLE): pytest.approx(75.0), ("b", IDLE): pytest.approx(25.0)}
    rows = by_key_mode(split_gpu(iv, "equal"))
    assert rows == {("a", IDLE): pytest.approx(50.0), ("b", IDLE): pytest.approx(50.0)}


def test_gpu_idle_memory_all_zero_is_equal():
    rows = by_key_mode(split_gpu(gpu(energy=60.0, idle_w=60.0, mem={"a": 0, "b": 0, "c": 0})))
    assert [rows[(k, IDLE)] for k in "abc"] == pytest.approx([20.0] * 3)


def test_gpu_zero_energy_gives_no_rows():
    assert split_gpu(gpu(energy=0.0, idle_w=50.0, mem={"a": 1})) == []


def test_share_fields():
    [s] = split_gpu(gpu(energy=5.0, mem={"a": 1}, device="gpu3"))
    assert s == Share("a", "gpu3", "gpu", ACTIVE, 5.0)


@pytest.mark.parametrize("field,kwargs", [
    ("energy_j", dict(energy=-1.0)),
    ("energy_j", dict(energy=math.nan)),
    ("energy_j", dict(energy=math.inf)),
    ("dt_s", dict(dt=0.0)),
    ("dt_s", dict(dt=-1.0)),
    ("dt_s", dict(dt=math.nan)),
    ("idle_power_w", dict(idle_w=-5.0)),
    ("idle_power_w", dict(idle_w=math.nan)),
    ("memory_bytes", dict(mem={"a": -1})),
    ("sm_util", dict(util={"a": math.nan})),
])
def test_gpu_invalid_inputs_name_field_and_value(field, kwargs):
    with pytest.raises(ValueError, match=field) as e:
        split_gpu(gpu(**kwargs))
    bad = next(iter(kwargs.values()))
    bad = next(iter(bad.values())) if isinstance(bad, dict) else bad
    assert repr(bad) in str(e.value)


def test_gpu_unknown_policy():
    with pytest.raises(ValueError, match="idle_policy.*'bytes'"):
        split_gpu(gpu(mem={"a": 1}), "bytes")


# ---------------------------------------------------------------------------------- CPU rules

def test_cpu_active_by_cpu_time_remainder_to_system():
    iv = cpu({"cpu": 100.0, "dram": 20.0}, busy=0.5, secs={"a": 2.0, "b": 1.0}, node_busy=4.0)
    t = table(split_cpu(iv))
    assert t[("a", CPU_DEVICE, "cpu", ACTIVE)] == pytest.approx(25.0)
    assert t[("b", CPU_DEVICE, "cpu", ACTIVE)] == pytest.approx(12.5)
    assert t[(SYSTEM, CPU_DEVICE, "cpu", ACTIVE)] == pytest.approx(12.5)
    assert t[(SYSTEM, CPU_DEVICE, "cpu", IDLE)] == pytest.approx(50.0)
    assert t[("a", CPU_DEVICE, "dram", ACTIVE)] == pytest.approx(5.0)
    assert t[(SYSTEM, CPU_DEVICE, "dram", IDLE)] == pytest.approx(10.0)


def test_cpu_node_busy_smaller_than_sum_is_clamped():
    t = table(split_cpu(cpu({"cpu": 30.0}, busy=1.0, secs={"a": 2.0, "b": 1.0}, node_busy=1.5)))
    assert t == {("a", CPU_DEVICE, "cpu", ACTIVE): pytest.approx(20.0),
                 ("b", CPU_DEVICE, "cpu", ACTIVE): pytest.approx(10.0)}


def test_cpu_single_workload_owning_all_busy_time():
    t = table(split_cpu(cpu({"cpu": 30.0}, busy=1.0, secs={"a": 2.0}, node_busy=2.0)))
    assert t == {("a", CPU_DEVICE, "cpu", ACTIVE): 30.0}


def test_cpu_no_cpu_time_all_active_to_system():
    for node_busy in (0.0, 3.0):
        t = table(split_cpu(cpu({"cpu": 10.0}, busy=0.3, secs={"a": 0.0}, node_busy=node_busy)))
        assert t == {(SYSTEM, CPU_DEVICE, "cpu", ACTIVE): pytest.approx(3.0),
                     (SYSTEM, CPU_DEVICE, "cpu", IDLE): pytest.approx(7.0)}


def test_cpu_idle_gpu_share_policy():
    iv = cpu({"cpu": 100.0}, busy=0.25, secs={"a": 1.0}, node_busy=1.0)
    weights = {"a": 300.0, "b": 100.0, UNALLOCATED: 1e6, SYSTEM: 5.0}
    t = table(split_cpu(iv, "gpu_share", weights))
    assert t[("a", CPU_DEVICE, "cpu", IDLE)] == pytest.approx(56.25)
    assert t[("b", CPU_DEVICE, "cpu", IDLE)] == pytest.approx(18.75)
    assert (UNALLOCATED, CPU_DEVICE, "cpu", IDLE) not in t
    assert (SYSTEM, CPU_DEVICE, "cpu", IDLE) not in t


def test_cpu_idle_gpu_share_falls_back_to_system():
    iv = cpu({"cpu": 10.0}, busy=0.0)
    for weights in (None, {}, {UNALLOCATED: 5.0}, {"a": 0.0}):
        assert table(split_cpu(iv, "gpu_share", weights)) == {(SYSTEM, CPU_DEVICE, "cpu", IDLE): 10.0}


@pytest.mark.parametrize("field,iv", [
    ("energy_j", cpu({"cpu": -1.0})),
    ("energy_j", cpu({"dram": math.nan})),
    ("busy_ratio", cpu(busy=1.5)),
    ("busy_ratio", cpu(busy=math.nan)),
    ("node_busy_seconds", cpu(node_busy=-2.0)),
    ("cpu_seconds", cpu(secs={"a": -0.5})),
])
def test_cpu_invalid_inputs(field, iv):
    with pytest.raises(ValueError, match=field):
        split_cpu(iv)


def test_cpu_invalid_gpu_weights_and_policy():
    with pytest.raises(ValueError, match="gpu_weights"):
        split_cpu(cpu(), "gpu_share", {"a": -1.0})
    with pytest.raises(ValueError, match="'gpu'"):
        split_cpu(cpu(), "gpu")


def test_policies_are_documented():
    assert IDLE_POLICIES_GPU == ("memory", "equal")
    assert IDLE_POLICIES_CPU == ("system", "gpu_share")
    for docs in (GPU_IDLE_POLICY_DOCS, CPU_IDLE_POLICY_DOCS):
        assert all(isinstance(d, str) and len(d) > 20 for d in docs.values())


def test_special_keys_are_distinct_from_workload_keys():
    assert UNALLOCATED != SYSTEM
    assert UNALLOCATED != "unallocated" and SYSTEM != "system"
    assert len({UNALLOCATED, SYSTEM, "unallocated", "system"}) == 4


# --------------------------------------------------------------------------- split_interval

def test_split_interval_derives_gpu_weights():
    gpus = [gpu(energy=30.0, mem={"a": 1}, device="gpu0"),
            gpu(energy=10.0, mem={"b": 1}, util={"b": 1}, device="gpu1"),
            gpu(energy=50.0, device="gpu2")]  # unallocated: no weight
    shares = split_interval(gpus, cpu({"cpu": 8.0}, busy=0.0), cpu_idle_policy="gpu_share")
    assert gpu_joules_by_key(shares) == {"a": 30.0, "b": 10.0}
    t = table(shares)
    assert t[("a", CPU_DEVICE, "cpu", IDLE)] == pytest.approx(6.0)
    assert t[("b", CPU_DEVICE, "cpu", IDLE)] == pytest.approx(2.0)
    assert device_totals(shares) == pytest.approx({"gpu0": 30.0, "gpu1": 10.0, "gpu2": 50.0,
                                                   "cpu": 8.0})


def test_split_interval_rejects_duplicate_devices_and_bad_policy():
    with pytest.raises(ValueError, match="'gpu0'"):
        split_interval([gpu(device="gpu0"), gpu(device="gpu0")], None)
    with pytest.raises(ValueError, match="'nope'"):
        split_interval([], None, cpu_idle_policy="nope")
    assert split_interval([], None) == []


# ---------------------------------------------------------------------------- properties

# magnitudes from sub-microjoule to far beyond any real counter, and exact zeros
mag = st.one_of(st.just(0.0), st.floats(1e-12, 1e12), st.floats(1e-300, 1e300))
nonneg = st.one_of(st.just(0.0), st.floats(0.0, 1e6), mag)
keys = st.integers(0, 200)
weights = st.dictionaries(keys, nonneg, max_size=12)


@st.composite
def gpu_intervals(draw, device="gpu0"):
    return GpuInterval(
        device=device,
        energy_j=draw(mag),
        dt_s=draw(st.one_of(st.floats(1e-6, 3600.0), st.floats(1e-300, 1e300))),
        idle_power_w=draw(nonneg),
        memory_bytes=draw(weights),
        sm_util=draw(st.one_of(st.just({}), weights)),
    )


@st.composite
def cpu_intervals(draw):
    return CpuInterval(
        energy_j=draw(st.dictionaries(st.sampled_from(["cpu", "dram", "psys"]), mag, max_size=3)),
        busy_ratio=draw(st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))),
        cpu_seconds=draw(weights),
        node_busy_seconds=draw(nonneg),
    )


@st.composite
def intervals(draw, max_gpus=4):
    n = draw(st.integers(0, max_gpus))
    gpus = [draw(gpu_intervals(f"gpu{i}")) for i in range(n)]
    return gpus, draw(st.one_of(st.none(), cpu_intervals()))


def measured(gpus, cpu_iv):
    m = {g.device: g.energy_j for g in gpus}
    if cpu_iv is not None and cpu_iv.energy_j:
        m[CPU_DEVICE] = math.fsum(cpu_iv.energy_j.values())
    return m


MAX_REL_ERR = [0.0]


def check_conservation(shares, expected: dict[str, float]):
    got = device_totals(shares)
    for dev, e in expected.items():
        g = got.get(dev, 0.0)
        err = abs(g - e)
        if e > 0:
            MAX_REL_ERR[0] = max(MAX_REL_ERR[0], err / e)
        assert err <= max(1e-9 * e, 1e-12), (dev, g, e)
    assert set(got) <= set(expected)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(intervals(), st.sampled_from(IDLE_POLICIES_GPU), st.sampled_from(IDLE_POLICIES_CPU))
def test_property_conservation_nonneg_and_modes(iv, gpol, cpol):
    gpus, cpu_iv = iv
    shares = split_interval(gpus, cpu_iv, gpol, cpol)
    check_conservation(shares, measured(gpus, cpu_iv))
    assert all(s.joules > 0 and math.isfinite(s.joules) for s in shares)
    assert all(s.mode in (ACTIVE, IDLE) for s in shares)
    if cpu_iv is not None:  # per component too, not only per device
        for comp, e in cpu_iv.energy_j.items():
            got = math.fsum(s.joules for s in shares if s.device == CPU_DEVICE and s.component == comp)
            assert abs(got - e) <= max(1e-9 * e, 1e-12), (comp, got, e)
    for g in gpus:
        idle = math.fsum(s.joules for s in shares if s.device == g.device and s.mode == IDLE)
        want = min(g.energy_j, g.idle_power_w * g.dt_s)
        assert abs(idle - want) <= max(1e-9 * want, 1e-12), (idle, want)
        keys_ = {s.key for s in shares if s.device == g.device}
        if g.memory_bytes or g.sm_util:
            assert UNALLOCATED not in keys_
        else:
            assert keys_ <= {UNALLOCATED}


@settings(max_examples=300, deadline=None)
@given(cpu_intervals(), st.sampled_from(IDLE_POLICIES_CPU), weights)
def test_property_cpu_modes(iv, pol, gw):
    shares = split_cpu(iv, pol, gw)
    for comp, e in iv.energy_j.items():
        active = math.fsum(s.joules for s in shares if s.component == comp and s.mode == ACTIVE)
        want = e * iv.busy_ratio
        assert abs(active - want) <= max(1e-9 * want, 1e-12)
        # a workload never gets more active energy than its CPU-time share
        for s in shares:
            if s.component == comp and s.mode == ACTIVE and s.key is not SYSTEM:
                cs = iv.cpu_seconds[s.key]
                denom = max(iv.node_busy_seconds, math.fsum(iv.cpu_seconds.values()))
                # (absolute slack of 1e-12 of the device's active energy: shares far below it, such as
                # subnormal CPU times, are rounding noise, not a workload getting more than its share)
                assert s.joules <= want * (cs / denom) * (1 + 1e-9) + 1e-12 * want + 1e-300
    check_conservation(shares, measured([], iv))


def test_seeded_fuzz_full_scale():
    """16 GPUs x 64 workloads and 500 CPU consumers: the sizes hypothesis draws are kept small."""
    import random

    rng = random.Random(1234)
    for _ in range(50):
        wl = list(range(64))
        gpus = [GpuInterval(f"gpu{i}", rng.choice([0.0, rng.uniform(0, 700), 10 ** rng.uniform(-9, 9)]),
                            rng.uniform(0.5, 2.0), rng.choice([0.0, 60.0, 1e4]),
                            {k: rng.choice([0, rng.randrange(1 << 36)]) for k in rng.sample(wl, rng.randrange(65))},
                            {k: rng.uniform(0, 100) for k in rng.sample(wl, rng.randrange(65))})
                for i in range(16)]
        cpu_iv = CpuInterval({"cpu": rng.uniform(0, 400), "dram": rng.uniform(0, 50)}, rng.random(),
                             {k: rng.uniform(0, 0.1) for k in range(500)}, rng.uniform(0, 80))
        for pol in IDLE_POLICIES_CPU:
            shares = split_interval(gpus, cpu_iv, cpu_idle_policy=pol)
            check_conservation(shares, measured(gpus, cpu_iv))
            assert all(s.joules > 0 for s in shares)


def test_report_max_conservation_error():
    """Large hypothesis run; prints the max relative conservation error seen (visible with -s).

    WATTPRINT_CONSERVATION_EXAMPLES sets its size (default 1500; hypothesis draws ~30 ms each).
    """
    MAX_REL_ERR[0] = 0.0
    n = int(os.environ.get("WATTPRINT_CONSERVATION_EXAMPLES", "1500"))

    @settings(max_examples=n, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(intervals(max_gpus=2), st.sampled_from(IDLE_POLICIES_GPU),
           st.sampled_from(IDLE_POLICIES_CPU))
    def run(iv, gpol, cpol):
        gpus, cpu_iv = iv
        check_conservation(split_interval(gpus, cpu_iv, gpol, cpol), measured(gpus, cpu_iv))

    run()
    print(f"\nattribution: max relative conservation error over {n} hypothesis intervals "
          f"= {MAX_REL_ERR[0]:.3e}")
    assert MAX_REL_ERR[0] <= 1e-9
