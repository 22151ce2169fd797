"""`wattprint serve` in "Kubernetes" mode against a fake API server (recorded pod shapes) and a
real gRPC kubelet pod-resources server on a unix socket: a process in a pod's container gets the
pod's namespace/endpoint/model; a GPU allocated to a pod with no visible process is that pod's;
an unallocated GPU stays unallocated; conservation holds."""

import asyncio
import contextlib
import copy
import os
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("grpc")

from support import make_procfs, parse_metrics, start_daemon, value, write_scenario  # noqa: E402
from test_identity_kubernetes import NODE, FakeApiServer  # noqa: E402
from test_identity_podresources import GPU0, GPU1, Kubelet, serve  # noqa: E402

pytestmark = pytest.mark.integration
LLAMA_CGROUP = ("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5f0c1a2e_8d3b_4c61_9a57_"
                "2b8e4f6d7c10.slice/cri-containerd-6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb78"
                "75b4b.scope\n")


@contextlib.contextmanager
def kubernetes_serve(tmp_path: Path, *args: str):
    """A `wattprint serve` in Kubernetes mode on node NODE (fake API server with the recorded
    pods, real gRPC pod-resources server): a vLLM process of pod models/llama-3-8b-predictor on
    GPU 0, GPU 1 allocated to dev/shared-a with no process, GPU 2 nobody's. Yields the daemon,
    stopped (its exposition linted) when the block ends; ``d.emit(type, pod)`` sends the fake API
    server's pod watch an event."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    api = FakeApiServer()
    asyncio.run_coroutine_threadsafe(api.start(), loop).result(10)
    sockdir = Path(tempfile.mkdtemp(prefix="wp-k8s-"))
    sock = sockdir / "kubelet.sock"
    kubelet = serve(sock, Kubelet())
    token = tmp_path / "token"
    token.write_text("token-A\n")
    procfs = make_procfs(tmp_path / "proc", {4001: {
        "comm": "python3", "cgroup": LLAMA_CGROUP,
        "cmdline": ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "/mnt/models", "--port", "8080"]}},
        cpu_busy=100, cpu_idle=100)
    scenario = write_scenario(tmp_path / "sim.yaml", {"gpus": [
        {"uuid": GPU0, "idle_w": 70, "max_w": 700, "processes": [{"pid": 4001, "memory_gib": 40, "sm_util": 50}]},
        {"uuid": GPU1, "idle_w": 60, "max_w": 700, "processes": []},              # allocated, idle
        {"uuid": "GPU-ffffffff-0000-0000-0000-000000000002", "idle_w": 50, "max_w": 700}]})  # nobody's
    d = None
    try:
        d = start_daemon(tmp_path, "--sample.interval=0.5s", f"--path.procfs={procfs}", "--gpu.backend=simulated",
                         f"--gpu.simulation-file={scenario}", "--kubernetes.enabled=on",
                         f"--kubernetes.api-url={api.url}", f"--kubernetes.node-name={NODE}",
                         f"--kubernetes.token-file={token}", f"--kubernetes.pod-resources-socket={sock}",
                         "--engines.interval=1s", *args)
        d.emit = lambda etype, obj: loop.call_soon_threadsafe(api.emit, etype, obj)
        yield d
    finally:
        if d:
            d.stop()
        kubelet.stop(0)
        asyncio.run_coroutine_threadsafe(api.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        for p in sockdir.iterdir():
            p.unlink()
        sockdir.rmdir()


def test_pods_and_gpu_allocations_label_the_energy(tmp_path):
    with kubernetes_serve(tmp_path) as d:
        deadline, m = time.time() + 20, {}
        while time.time() < deadline:
            m = parse_metrics(d.get())
            if value(m, "wattprint_endpoint_energy_joules_total", namespace="dev") > 0 and \
                    value(m, "wattprint_endpoint_energy_joules_total", namespace="models") > 0:
                break
            time.sleep(0.3)
        m0 = m
        time.sleep(2)
        m = parse_metrics(d.get())
    log = d.log.read_text()

    def delta(**labels):
        name = "wattprint_endpoint_energy_joules_total"
        return value(m, name, component="gpu", **labels) - value(m0, name, component="gpu", **labels)

    gpu = {i: value(m, "wattprint_gpu_energy_joules_total", gpu=str(i)) - value(m0, "wattprint_gpu_energy_joules_total", gpu=str(i))
           for i in range(3)}
    # the pod names the endpoint; the model is the one the server serves (vLLM's model_name label
    # is --model when no --served-model-name is given), not the pod's inferenceservice label
    llama = delta(namespace="models", endpoint="llama-3-8b-predictor", model="/mnt/models")
    shared = delta(namespace="dev", endpoint="shared-a")
    unalloc = delta(endpoint="unallocated")
    assert llama == pytest.approx(gpu[0], rel=1e-6), log[-2000:]
    assert shared == pytest.approx(gpu[1], rel=1e-6), "a GPU allocated to a pod is that pod's, even idle"
    assert unalloc == pytest.approx(gpu[2], rel=1e-6)
    assert value(m, "wattprint_endpoint_energy_joules_total") == pytest.approx(
        value(m, "wattprint_node_energy_joules_total"), rel=1e-9)
    assert "token-A" not in log
    # the carbon region came from the node's topology.kubernetes.io/region label
    assert value(m, "wattprint_carbon_info", region="aws:eu-west-1") == 1, log[-1500:]


def test_pod_annotation_sets_the_endpoints_budget_live(tmp_path):
    """The team that owns an endpoint sets its budget on its pods: wattprint.io/budget-grams-per-
    request and wattprint.io/owner, read from the pod watch. Editing it changes the gauge in the
    same running exporter (no restart); the annotation wins over the configured budget, and an
    invalid one is ignored (the configured budget is back) and counted."""
    from test_identity_kubernetes import VLLM

    name = "wattprint_endpoint_budget_grams_per_request"
    ep = {"namespace": "models", "endpoint": "llama-3-8b-predictor"}
    conf = tmp_path / "config.yaml"
    conf.write_text("engines:\n  budgets:\n    - {namespace: models, endpoint: llama-3-8b-predictor, "
                    "model: llama-3-8b, grams_per_request: 9.0}\n")

    def annotated(**ann: str) -> dict:
        pod = copy.deepcopy(VLLM)
        pod["metadata"]["annotations"] = {**pod["metadata"]["annotations"], **ann}
        return pod

    def budgets(d) -> dict[tuple, float]:
        m = parse_metrics(d.get())
        return {tuple(sorted(k)): v for k, v in m.get(name, {}).items()}

    def wait(d, pred, what: str) -> dict:
        deadline, got = time.time() + 15, {}
        while time.time() < deadline:
            got = budgets(d)
            if pred(got):
                return got
            time.sleep(0.2)
        raise AssertionError(f"{what}: {got}")

    def series(owner: str, grams: float):
        return {tuple(sorted({**ep, "model": "llama-3-8b", "owner": owner}.items())): grams}

    with kubernetes_serve(tmp_path, f"--config.file={conf}") as d:
        pid = d.proc.pid
        wait(d, lambda b: b == series("", 9.0), "the configured budget first")
        d.emit("MODIFIED", annotated(**{"wattprint.io/budget-grams-per-request": "0.5",
                                        "wattprint.io/owner": "team-llm"}))
        wait(d, lambda b: b == series("team-llm", 0.5), "the pod's own budget, with its owner")
        d.emit("MODIFIED", annotated(**{"wattprint.io/budget-grams-per-request": "0.25",
                                        "wattprint.io/owner": "team-llm"}))
        wait(d, lambda b: b == series("team-llm", 0.25), "the edited budget")
        d.emit("MODIFIED", annotated(**{"wattprint.io/budget-grams-per-request": "lots"}))
        wait(d, lambda b: b == series("", 9.0), "an invalid annotation leaves the configured budget")
        assert value(parse_metrics(d.get()), "wattprint_budget_annotations_invalid") == 1
        assert d.proc.poll() is None and d.proc.pid == pid  # one process throughout: no restart
    log = d.log.read_text()
    assert "wattprint.io/budget-grams-per-request='lots'" in log and "llama-3-8b-predictor-7d9f8b6c5d-x2x7q" in log
