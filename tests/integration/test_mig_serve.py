"""A real `wattprint serve --gpu.backend=simulated` on a simulated 7-slice H100 in MIG mode: its
/metrics over HTTP split the GPU by instance — idle by slices, active by GPM utilisation × slices —
and the instances' energy sums to the GPU's counter exactly."""

import subprocess
import time

import pytest
import yaml

from support import ROOT, parse_metrics, start_daemon, stop_all, value, write_scenario

pytestmark = pytest.mark.integration


def test_serve_splits_a_mig_gpu_by_instance(tmp_path):
    sleepers = [subprocess.Popen(["sleep", "120"]) for _ in range(3)]  # the three residents
    try:
        data = yaml.safe_load((ROOT / "tests/fixtures/sim/mig-h100.yaml").read_text())
        for inst, p in zip(data["gpus"][0]["mig_instances"], sleepers):
            for proc in inst["processes"]:
                proc["pid"] = p.pid
        scenario = write_scenario(tmp_path / "mig.yaml", data)
        d = start_daemon(tmp_path, "--sample.interval=500ms", "--gpu.backend=simulated",
                         f"--gpu.simulation-file={scenario}")
        try:
            time.sleep(3)
            m = parse_metrics(d.get())
        finally:
            d.stop()
    finally:
        stop_all(sleepers)
    gpu = value(m, "wattprint_gpu_energy_joules_total")
    mig = "wattprint_gpu_mig_instance_energy_joules_total"
    per = {gi: {mode: value(m, mig, gpu_instance=gi, mode=mode) for mode in ("idle", "active")}
           for gi in ("1", "5", "9", "10")}
    assert gpu > 0 and sum(v for p in per.values() for v in p.values()) == pytest.approx(gpu, rel=1e-12)
    idle = sum(p["idle"] for p in per.values())
    for gi, slices in (("1", 3), ("5", 2), ("9", 1), ("10", 1)):
        assert per[gi]["idle"] == pytest.approx(idle * slices / 7, rel=1e-9)
    assert per["1"]["active"] / per["5"]["active"] == pytest.approx(0.8 * 3 / (0.5 * 2), rel=1e-9)
    assert per["9"]["active"] == per["10"]["active"] == 0
    info = m["wattprint_gpu_mig_instance_info"]
    assert len(info) == 4 and {dict(k)["method"] for k in info} == {"gpm"}
    assert {dict(k)["profile"] for k in info} == {"3g.40gb", "2g.20gb", "1g.10gb"}
    gpu_info = dict(next(iter(m["wattprint_gpu_info"])))
    assert (gpu_info["backend"], gpu_info["mig_mode"]) == ("simulated", "enabled")
    # the empty 1g instance: unallocated; the three residents: their endpoint; Σ = the GPU
    assert value(m, "wattprint_endpoint_energy_joules_total", endpoint="unallocated", component="gpu") == \
        pytest.approx(per["10"]["idle"], rel=1e-9)
    assert value(m, "wattprint_endpoint_energy_joules_total", component="gpu") == pytest.approx(gpu, rel=1e-9)
    assert not any("gpu_instance" in dict(k) for k in m["wattprint_endpoint_energy_joules_total"])


def test_validation_script_mig_mode_dry_run(tmp_path):
    """benchmarks/gpu_validation.py --mig --simulated: per-instance energy against the GPU's counter."""
    import json
    import sys

    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_validation.py"), "--mig", "--simulated",
                          "--window", "4", "--warmup", "2", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    (report,) = [json.loads(p.read_text()) for p in tmp_path.glob("mig-validation-*.json")]
    e, rows = report["energy"], {r["gpu_instance"]: r for r in report["instances"]}
    assert e["sum_instances_j"] == pytest.approx(e["wattprint_gpu_j"], rel=1e-12)
    assert e["wattprint_gpu_j"] == pytest.approx(e["nvml_delta_j"], rel=0.03)  # bracketing skew only
    idle = sum(r["idle_j"] for r in rows.values())
    assert [rows[k]["idle_j"] / idle for k in (1, 5, 9, "free")] == pytest.approx([3 / 7, 2 / 7, 1 / 7, 1 / 7])
    assert rows[1]["active_j"] / rows[5]["active_j"] == pytest.approx(50 * 3 / (20 * 2), rel=1e-9)
    assert rows[9]["active_j"] == 0 and {rows[k]["method"] for k in (1, 5, 9)} == {"gpm"}
