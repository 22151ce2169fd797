"""RAPL meter against fixture powercap trees: wrap-around, overlaps, sockets, unreadable zones."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from exporter.sensors.rapl import RaplMeter, discover, wrap_delta
from support import ROOT, make_powercap, set_energy

TWO_SOCKETS = {
    "intel-rapl:0": {"name": "package-0", "energy_uj": 1_000_000, "max_energy_range_uj": 262143328850},
    "intel-rapl:0:0": {"name": "core", "energy_uj": 500_000},
    "intel-rapl:0:1": {"name": "dram", "energy_uj": 200_000, "max_energy_range_uj": 65712999613},
    "intel-rapl:1": {"name": "package-1", "energy_uj": 3_000_000},
    "intel-rapl:1:0": {"name": "dram", "energy_uj": 100_000},
    "intel-rapl:2": {"name": "psys", "energy_uj": 9_000_000},
    "intel-rapl-mmio:0": {"name": "package-0", "energy_uj": 1_000_000},
}


def test_two_sockets_overlaps_never_in_totals(tmp_path):
    zones, problem = discover(str(make_powercap(tmp_path, TWO_SOCKETS)))
    assert problem == ""
    by = {z.zone: z for z in zones}
    assert "intel-rapl-mmio:0" not in by, "MMIO duplicate of package-0 must be dropped"
    used = sorted(z.zone for z in zones if z.used_in_total)
    assert used == ["intel-rapl:0", "intel-rapl:0:1", "intel-rapl:1", "intel-rapl:1:0"]
    assert by["intel-rapl:0:0"].domain == "core" and not by["intel-rapl:0:0"].used_in_total
    assert by["intel-rapl:2"].domain == "psys" and by["intel-rapl:2"].socket == "platform"
    assert by["intel-rapl:1:0"].socket == "1" and by["intel-rapl:1:0"].component == "dram"


def test_psys_only_host_uses_psys(tmp_path):
    zones, _ = discover(str(make_powercap(tmp_path, {"intel-rapl:0": {"name": "psys"}})))
    assert [z.zone for z in zones if z.used_in_total] == ["intel-rapl:0"]


def test_amd_style_package_zones(tmp_path):
    tree = {"amd-rapl:0": {"name": "package-0"}, "amd-rapl:0:0": {"name": "core"}}
    zones, _ = discover(str(make_powercap(tmp_path, tree)))
    assert [(z.zone, z.used_in_total) for z in zones] == [("amd-rapl:0", True), ("amd-rapl:0:0", False)]


def test_wrap_delta():
    assert wrap_delta(100, 250, 1000) == 150
    assert wrap_delta(900, 50, 1000) == 150   # wrapped once at max_energy_range_uj
    assert wrap_delta(900, 50, 0) == 50       # unknown range: a reset, count what came since zero
    assert wrap_delta(1200, 50, 1000) == 50   # read beyond the zone's own range: a reset, never negative


def test_deltas_with_wrap_match_true_energy(tmp_path):
    max_range = 10_000_000  # 10 J: wraps often
    root = make_powercap(tmp_path, {"intel-rapl:0": {"name": "package-0", "energy_uj": 9_000_000,
                                                     "max_energy_range_uj": max_range}})
    meter = RaplMeter(str(root))
    assert meter.read()[0] == {"intel-rapl:0": 0.0}  # first read primes
    true_uj, raw, got = 0, 9_000_000, 0.0
    for step in [3_000_000, 4_500_000, 9_999_999, 1, 7_000_000] * 20:
        raw = (raw + step) % max_range
        true_uj += step
        set_energy(root, "intel-rapl:0", raw)
        deltas, errors = meter.read()
        assert errors == {}
        got += deltas["intel-rapl:0"]
    assert got == pytest.approx(true_uj / 1e6, rel=1e-12)


def test_missing_powercap_says_why(tmp_path):
    zones, problem = discover(str(tmp_path))
    assert zones == [] and "does not exist" in problem and "virtual machine" in problem


def test_zone_vanishes_then_returns_keeps_energy(tmp_path):
    root = make_powercap(tmp_path, {"intel-rapl:0": {"name": "package-0", "energy_uj": 1_000_000}})
    meter = RaplMeter(str(root))
    meter.read()
    energy = root / "class/powercap/intel-rapl:0/energy_uj"
    energy.unlink()
    deltas, errors = meter.read()
    assert errors == {"intel-rapl:0": "read"} and "intel-rapl:0" not in deltas
    set_energy(root, "intel-rapl:0", 4_000_000)  # back: the gap's 3 J arrive in one delta
    deltas, errors = meter.read()
    assert errors == {} and deltas["intel-rapl:0"] == pytest.approx(3.0)


PROBE = """
import json, sys
sys.path.insert(0, {path!r})  # the package from the source tree; its sensors need only the stdlib
from exporter.sensors import rapl
m = rapl.RaplMeter({sysfs!r})
print(json.dumps({{"zones": [[z.zone, z.readable, z.problem] for z in m.zones], "usable": m.usable}}))
"""


def test_root_only_energy_uj_is_explained():
    """Real permissions, as on Linux >= 5.10 (CVE-2020-8694): energy_uj mode 0400 owned by root,
    read by an unprivileged process (user 'nobody' when the tests run as root)."""
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        root = make_powercap(Path(tmp), {"intel-rapl:0": {"name": "package-0"},
                                         "intel-rapl:0:0": {"name": "core"}})
        (root / "class/powercap/intel-rapl:0/energy_uj").chmod(0o400 if os.geteuid() == 0 else 0o000)
        kw = {"user": 65534, "group": 65534} if os.geteuid() == 0 else {}
        code = PROBE.format(path=str(ROOT), sysfs=str(root))
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, **kw)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    zones = {z: (readable, problem) for z, readable, problem in got["zones"]}
    assert zones["intel-rapl:0"][0] is False and "CVE-2020-8694" in zones["intel-rapl:0"][1]
    assert zones["intel-rapl:0:0"][0] is True
    assert got["usable"] is False, "core alone must never become the node total"
