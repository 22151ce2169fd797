"""The README's promises: generated tables in sync, and the worked attribution example exact."""

import subprocess
import sys

import pytest

from exporter import attribution as a
from support import ROOT

GIB = 1024**3


def test_generated_sections_are_current():
    out = subprocess.run([sys.executable, str(ROOT / "scripts/update_readme.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_worked_example():
    gpus = [a.GpuInterval("gpu0", 2000.0, 5.0, 70.0, {"llama": 30 * GIB, "embedder": 10 * GIB},
                          {"llama": 60.0, "embedder": 20.0}),
            a.GpuInterval("gpu1", 400.0, 5.0, 70.0, {}, {})]
    cpu = a.CpuInterval({"cpu": 150.0}, 0.4, {"llama": 1.0, "embedder": 0.5}, 4.0)
    rows = {}
    for s in a.split_interval(gpus, cpu):
        key = (s.key if isinstance(s.key, str) else s.key.name, s.device, s.mode)
        rows[key] = rows.get(key, 0.0) + s.joules
    assert rows[("llama", "gpu0", "active")] == pytest.approx(1237.5)
    assert rows[("embedder", "gpu0", "active")] == pytest.approx(412.5)
    assert rows[("llama", "gpu0", "idle")] == pytest.approx(262.5)
    assert rows[("embedder", "gpu0", "idle")] == pytest.approx(87.5)
    assert rows[("unallocated", "gpu1", "idle")] + rows[("unallocated", "gpu1", "active")] == pytest.approx(400)
    assert rows[("llama", "cpu", "active")] == pytest.approx(15)
    assert rows[("embedder", "cpu", "active")] == pytest.approx(7.5)
    assert rows[("system", "cpu", "active")] == pytest.approx(37.5)
    assert rows[("system", "cpu", "idle")] == pytest.approx(90)
    per = {}
    for (k, _, _), j in rows.items():
        per[k] = per.get(k, 0.0) + j
    assert per == pytest.approx({"llama": 1515, "embedder": 507.5, "unallocated": 400, "system": 127.5})
    assert sum(per.values()) == pytest.approx(2550)
