"""Process → workload resolution order and caching."""

from types import SimpleNamespace

from exporter.identity.resolver import SYSTEM, Resolver, Rule, Workload

CID = "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"
CGROUP = f"0::/kubepods.slice/kubepods-pod5f0c1a2e_8d3b_4c61_9a57_2b8e4f6d7c10.slice/cri-containerd-{CID}.scope\n"


def proc(pid, cmdline, ppid=1, comm="python3", cgroup=""):
    return SimpleNamespace(pid=pid, ppid=ppid, comm=comm, cmdline=tuple(cmdline), cgroup=cgroup, starttime=7)


class Pods:
    """The PodCache's lookup surface; the pod arrives after the first lookup."""

    def __init__(self):
        self.meta = None

    def by_container_id(self, cid):
        return self.meta if cid == CID else None


def test_order_kubernetes_then_cmdline_then_rules_then_gpu_fallback():
    procs = {10: proc(10, ["vllm", "serve", "m1", "--port", "9000"]),
             11: proc(11, ["python", "embed_worker.py"]),
             12: proc(12, ["python", "train.py"], comm="train"),
             13: proc(13, ["sshd"])}
    r = Resolver([Rule.parse({"name": "embedder", "cmdline": r"embed_worker\.py", "model": "bge"}, "r")])
    assert r.resolve(10, procs) == Workload("", "vllm-9000", "m1")
    assert r.resolve(11, procs) == Workload("", "embedder", "bge")
    assert r.resolve(12, procs, on_gpu=True) == Workload("", "train", "")
    assert r.resolve(13, procs) == SYSTEM
    assert r.resolve(999, procs, on_gpu=True).endpoint == "unidentified"


def test_pod_metadata_that_arrives_late_is_picked_up():
    pods = Pods()
    procs = {10: proc(10, ["vllm", "serve", "meta-llama/Llama-3.1-8B"], cgroup=CGROUP)}
    r = Resolver(pods=pods)
    assert r.resolve(10, procs).namespace == ""          # pod cache not synced yet: not cached
    pods.meta = SimpleNamespace(namespace="models", endpoint="llama-3-8b-predictor", model="llama-3-8b",
                                name="llama-3-8b-predictor-7d9f8b6c5d-x2x7q")
    w = r.resolve(10, procs)
    # the pod names the endpoint; the model stays the one the server serves (issue 13: a pod label
    # never overrides it, or energy and requests land on different label sets)
    assert (w.namespace, w.endpoint, w.model) == ("models", "llama-3-8b-predictor", "meta-llama/Llama-3.1-8B")
    pods.meta = None
    assert r.resolve(10, procs) == w                      # now cached for the process's lifetime
