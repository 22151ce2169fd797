"""Real processes, real procfs: child processes whose command lines look like vLLM and SGLang
(each with a renamed worker that burns CPU) are attributed to the right endpoint and model by a
real `wattprint serve`."""

import os
import subprocess
import sys
import time

import pytest

from support import stop_all, ROOT, parse_metrics, start_daemon, value

pytestmark = pytest.mark.integration
ENGINES = ROOT / "tests" / "fixtures" / "engines"


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in [pid] + children(pid):
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if int(open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(name))
            except OSError:
                pass
    return out


def test_cpu_energy_lands_on_the_right_endpoints(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ENGINES)}
    vllm = subprocess.Popen([sys.executable, str(ENGINES / "vllm"), "serve", "meta-llama/Llama-3.1-8B-Instruct",
                             "--port", "18001"], env={**env, "BURN_DUTY": "0.6"})
    sgl = subprocess.Popen([sys.executable, "-m", "sglang.launch_server", "--model-path", "Qwen/Qwen2.5-7B-Instruct",
                            "--port", "30123"], env={**env, "BURN_DUTY": "0.3"})
    d = None
    try:
        time.sleep(1.5)  # workers spawned and renamed
        comms = {open(f"/proc/{c}/comm").read().strip() for c in children(vllm.pid) + children(sgl.pid)}
        assert {"VLLM::EngineCor", "sglang::schedul"} <= comms, comms  # comm is cut at 15 chars
        d = start_daemon(tmp_path, "--sample.interval=0.5s", "--gpu.backend=none")
        m0 = parse_metrics(d.get())
        c0 = {"v": cpu_seconds(vllm.pid), "s": cpu_seconds(sgl.pid)}
        time.sleep(8)
        m1 = parse_metrics(d.get())
        c1 = {"v": cpu_seconds(vllm.pid), "s": cpu_seconds(sgl.pid)}
    finally:
        stop_all([vllm, sgl])
        if d:
            d.stop()

    def delta(**labels):
        name = "wattprint_endpoint_energy_joules_total"
        return value(m1, name, component="cpu", mode="active", **labels) - value(m0, name, component="cpu",
                                                                               mode="active", **labels)

    v = delta(endpoint="vllm-18001", model="meta-llama/Llama-3.1-8B-Instruct", namespace="")
    s = delta(endpoint="sglang-30123", model="Qwen/Qwen2.5-7B-Instruct", namespace="")
    assert v > 0 and s > 0, (v, s)
    # CPU active energy is split by CPU time: the endpoints' ratio follows their measured CPU time
    measured = (c1["v"] - c0["v"]) / (c1["s"] - c0["s"])
    assert v / s == pytest.approx(measured, rel=0.25), (v / s, measured)
    # and nothing of theirs leaked to an endpoint named after the renamed workers
    endpoints = {dict(k)["endpoint"] for k in m1["wattprint_endpoint_energy_joules_total"]}
    assert not any("VLLM" in e or "sglang::" in e for e in endpoints), endpoints
    node = value(m1, "wattprint_node_energy_joules_total", component="cpu")
    attributed = value(m1, "wattprint_endpoint_energy_joules_total", component="cpu")
    assert attributed == pytest.approx(node, rel=1e-9)
