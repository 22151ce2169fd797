"""Scenario tests of exporter.attribution: many intervals, totals accumulated as the daemon would."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass

import pytest

from exporter.attribution import (
    ACTIVE,
    CPU_DEVICE,
    IDLE,
    SYSTEM,
    UNALLOCATED,
    CpuInterval,
    GpuInterval,
    split_cpu,
    split_gpu,
    split_interval,
)


@dataclass(frozen=True)
class Workload:  # the caller's key type
    namespace: str
    endpoint: str
    model: str


CHAT = Workload("prod", "chat", "llama-3-70b")
EMBED = Workload("prod", "embed", "bge-large")
GIB = 1 << 30


class Totals:
    """Running counters per (key, device, component, mode), like the ledger; plus the meters."""

    def __init__(self):
        self.parts = defaultdict(list)
        self.measured = defaultdict(list)

    def add(self, shares):
        for s in shares:
            self.parts[(s.key, s.device, s.component, s.mode)].append(s.joules)

    def meter(self, device, joules):
        self.measured[device].append(joules)

    def get(self, key=None, device=None, component=None, mode=None):
        return math.fsum(
            j for (k, d, c, m), js in self.parts.items()
            if (key is None or k == key) and (device is None or d == device)
            and (component is None or c == component) and (mode is None or m == mode)
            for j in js)

    def keys(self, device=None):
        return {k for (k, d, _, _) in self.parts if device is None or d == device}

    def assert_conserved(self):
        for dev, js in self.measured.items():
            assert self.get(device=dev) == pytest.approx(math.fsum(js), rel=1e-12, abs=1e-9), dev
        assert {d for (_, d, _, _) in self.parts} <= set(self.measured)


def gpu_iv(device, energy, mem, util, idle_w=60.0, dt=1.0):
    return GpuInterval(device, energy, dt, idle_w, mem, util)


def test_a_time_sharing_3_to_1():
    rng = random.Random(1)
    t = Totals()
    for _ in range(600):
        x = rng.uniform(10, 30)
        util = {CHAT: 3 * x * rng.uniform(0.95, 1.05), EMBED: x * rng.uniform(0.95, 1.05)}
        e = rng.uniform(150, 400)
        t.meter("gpu0", e)
        t.add(split_gpu(gpu_iv("gpu0", e, {CHAT: 40 * GIB, EMBED: 2 * GIB}, util)))
    ratio = t.get(CHAT, mode=ACTIVE) / t.get(EMBED, mode=ACTIVE)
    assert ratio == pytest.approx(3.0, rel=0.01)
    # idle follows memory held (policy "memory"): 40:2
    assert t.get(CHAT, mode=IDLE) / t.get(EMBED, mode=IDLE) == pytest.approx(20.0)
    assert t.keys() == {CHAT, EMBED}
    t.assert_conserved()


def test_b_tensor_parallel_across_4_gpus():
    rng = random.Random(2)
    t = Totals()
    for _ in range(300):
        gpus = []
        for i in range(4):
            e = rng.uniform(60, 700)
            t.meter(f"gpu{i}", e)
            util = {CHAT: rng.uniform(0, 100)} if rng.random() < 0.8 else {}
            gpus.append(gpu_iv(f"gpu{i}", e, {CHAT: 70 * GIB}, util))
        t.add(split_interval(gpus, None))
    assert t.keys() == {CHAT}  # nothing unallocated
    assert t.get(CHAT) == pytest.approx(math.fsum(math.fsum(v) for v in t.measured.values()),
                                        rel=1e-12)
    t.assert_conserved()


def test_c_reserved_but_idle_gpu_belongs_to_its_resident():
    rng = random.Random(3)
    t = Totals()
    for _ in range(300):
        e = rng.uniform(58, 64)  # ~ the idle baseline of 60 W
        t.meter("gpu0", e)
        t.add(split_gpu(gpu_iv("gpu0", e, {EMBED: 12 * GIB}, {EMBED: 0.0})))
    assert t.keys() == {EMBED}
    assert t.get(EMBED) == pytest.approx(math.fsum(t.measured["gpu0"]), rel=1e-12)
    assert t.get(EMBED, mode=IDLE) > 0.95 * t.get(EMBED)
    t.assert_conserved()


def test_d_process_exits_mid_run():
    rng = random.Random(4)
    t = Totals()
    embed_at_exit = None
    for i in range(200):
        e = rng.uniform(100, 300)
        t.meter("gpu0", e)
        if i < 100:
            mem, util = {CHAT: 30 * GIB, EMBED: 10 * GIB}, {CHAT: 50.0, EMBED: 50.0}
        else:
            mem, util = {CHAT: 30 * GIB}, {CHAT: 80.0}
        shares = split_gpu(gpu_iv("gpu0", e, mem, util))
        if i >= 100:
            assert EMBED not in {s.key for s in shares}
        t.add(shares)
        if i == 99:
            embed_at_exit = t.get(EMBED)
    assert embed_at_exit > 0
    assert t.get(EMBED) == embed_at_exit  # earlier shares stay in the running totals
    assert t.get(CHAT) + t.get(EMBED) == pytest.approx(math.fsum(t.measured["gpu0"]), rel=1e-12)
    t.assert_conserved()


def test_e_gpu_without_resident_is_unallocated():
    rng = random.Random(5)
    t = Totals()
    for _ in range(100):
        e0, e1 = rng.uniform(50, 90), rng.uniform(100, 300)
        t.meter("gpu0", e0)
        t.meter("gpu1", e1)
        t.add(split_interval([gpu_iv("gpu0", e0, {}, {}), gpu_iv("gpu1", e1, {CHAT: GIB}, {})],
                             None))
    assert t.keys("gpu0") == {UNALLOCATED}
    assert t.keys("gpu1") == {CHAT}
    assert t.get(UNALLOCATED, mode=IDLE) > 0 and t.get(UNALLOCATED, mode=ACTIVE) > 0
    t.assert_conserved()


def test_f_cpu_by_cpu_time_remainder_to_system():
    rng = random.Random(6)
    t = Totals()
    for _ in range(300):
        energy = {"cpu": rng.uniform(80, 200), "dram": rng.uniform(10, 30)}
        t.meter(CPU_DEVICE, math.fsum(energy.values()))
        secs = {CHAT: rng.uniform(1.0, 2.0), EMBED: rng.uniform(0.2, 0.6)}
        node_busy = (secs[CHAT] + secs[EMBED]) * rng.uniform(1.1, 1.5)  # kernel etc.
        t.add(split_cpu(CpuInterval(energy, rng.uniform(0.2, 0.6), secs, node_busy)))
    assert t.keys() == {CHAT, EMBED, SYSTEM}
    assert t.get(CHAT, mode=IDLE) == t.get(EMBED, mode=IDLE) == 0.0  # policy "system"
    assert t.get(CHAT, mode=ACTIVE) > t.get(EMBED, mode=ACTIVE) > 0
    assert t.get(SYSTEM, mode=ACTIVE) > 0
    assert t.get(component="dram") > 0
    t.assert_conserved()


def test_f_cpu_idle_by_gpu_share_over_a_node():
    rng = random.Random(7)
    t = Totals()
    for _ in range(300):
        gpus = []
        for dev, wl in (("gpu0", CHAT), ("gpu1", CHAT), ("gpu2", EMBED), ("gpu3", None)):
            e = rng.uniform(80, 500)
            t.meter(dev, e)
            mem = {wl: 20 * GIB} if wl else {}
            gpus.append(gpu_iv(dev, e, mem, {wl: 50.0} if wl else {}))
        energy = {"cpu": rng.uniform(80, 200), "dram": rng.uniform(10, 30)}
        t.meter(CPU_DEVICE, math.fsum(energy.values()))
        cpu = CpuInterval(energy, rng.uniform(0.1, 0.5), {CHAT: 1.0, EMBED: 1.0}, 3.0)
        shares = split_interval(gpus, cpu, cpu_idle_policy="gpu_share")
        # per interval: CPU idle split follows GPU energy (CHAT holds 2 GPUs, EMBED 1, gpu3 none)
        gpu_chat = math.fsum(s.joules for s in shares if s.key == CHAT and s.component == "gpu")
        gpu_embed = math.fsum(s.joules for s in shares if s.key == EMBED and s.component == "gpu")
        idle = {s.key: s.joules for s in shares if s.component == "cpu" and s.mode == IDLE}
        assert set(idle) == {CHAT, EMBED}  # nothing idle to SYSTEM, nothing to UNALLOCATED
        assert idle[CHAT] / idle[EMBED] == pytest.approx(gpu_chat / gpu_embed, rel=1e-12)
        t.add(shares)
    assert t.get(SYSTEM, device=CPU_DEVICE, mode=IDLE) == 0.0
    assert t.get(SYSTEM, device=CPU_DEVICE, mode=ACTIVE) > 0  # the 1/3 of busy time not theirs
    assert t.keys("gpu3") == {UNALLOCATED}
    t.assert_conserved()
