"""MIG attribution: the pure split, the simulated NVML's MIG and GPM surface, the meter, and the
whole sampler — a 7-slice H100 with a 3g, a 2g and two 1g instances held by four endpoints (one
idle, one with no process): per-instance energy, idle by slices, active by GPM utilisation and
by the slice-share fallback, Σ = the GPU's energy exactly."""

from __future__ import annotations

import math
from pathlib import Path

import pynvml
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.attribution import (
    ACTIVE,
    IDLE,
    UNALLOCATED,
    GpuInterval,
    MigInstance,
    mig_split,
    split_gpu,
)
from exporter.identity.resolver import Workload
from exporter.sensors.nvml import GpuMeter, profile_name
from exporter.sensors.simnvml import ScenarioError, SimulatedNVML
from support import value, write_scenario
from test_faults import SGLANG, VLLM, FaultNode

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "tests/fixtures/sim/mig-h100.yaml"
SLICES = {1: 3, 5: 2, 9: 1, 10: 1}          # GPU instance -> slices, as in the scenario
UTIL = {1: 80.0, 5: 50.0, 9: 0.0, 10: 0.0}  # GPU instance -> SM utilisation (%)
TGI = ["text-generation-launcher", "--model-id", "BAAI/bge-small-en", "--port", "8090"]
PROCS = {1001: {"comm": "python3", "cmdline": VLLM}, 1002: {"comm": "python", "cmdline": SGLANG},
         1003: {"comm": "text-generation-launcher", "cmdline": TGI}}


def mig_gpus(**extra) -> list[dict]:
    g = yaml.safe_load(SCENARIO.read_text())["gpus"][0]
    return [{**g, **extra}]


# --- the pure split ---------------------------------------------------------------------------------

def four(activity: bool = True, owner=None) -> GpuInterval:
    """7 slices: 3g (pid 1, 80 %), 2g (pid 2, 50 %), 1g (pid 3, idle), 1g (no process)."""
    insts = (MigInstance("a", 3, {1: 30.0}, activity=80.0 if activity else None),
             MigInstance("b", 2, {2: 12.0}, activity=50.0 if activity else None),
             MigInstance("c", 1, {3: 4.0}, activity=0.0 if activity else None),
             MigInstance("d", 1, {}, activity=0.0 if activity else None, owner=owner))
    return GpuInterval("gpu0", 1000.0, 1.0, 70.0, {1: 30.0, 2: 12.0, 3: 4.0}, {}, insts, 7.0)


def by(shares, key, mode):
    return math.fsum(s.joules for s in shares if s.key == key and s.mode == mode)


def test_idle_by_slices_active_by_gpm():
    iv = four()
    parts, method = mig_split(iv)
    assert method == "gpm"
    assert [p[0] for p in parts] == pytest.approx([30.0, 20.0, 10.0, 10.0, 0.0])  # 70 J by 3:2:1:1
    active = 930.0
    assert [p[1] for p in parts] == pytest.approx([active * 2.4 / 3.4, active * 1.0 / 3.4, 0, 0, 0])
    shares = split_gpu(iv)
    assert by(shares, 1, ACTIVE) == pytest.approx(active * 2.4 / 3.4) and by(shares, 3, ACTIVE) == 0
    assert by(shares, 3, IDLE) == pytest.approx(10.0)              # idle, but it holds its slice
    assert by(shares, UNALLOCATED, IDLE) == pytest.approx(10.0)    # no process, no owner
    assert math.fsum(s.joules for s in shares) == pytest.approx(1000.0, rel=1e-15)


def test_fallback_slice_share_among_instances_with_processes():
    parts, method = mig_split(four(activity=False))
    assert method == "slice_share"
    assert [p[1] for p in parts] == pytest.approx([930 * 3 / 6, 930 * 2 / 6, 930 / 6, 0, 0])
    # one instance without a GPM sample (its first read): the whole GPU falls back, never mixes
    iv = four()
    iv = GpuInterval(**{**iv.__dict__, "mig": iv.mig[:3] + (MigInstance("d", 1, {}, activity=None),)})
    assert mig_split(iv)[1] == "slice_share"


def test_gpm_all_zero_falls_back_and_no_work_follows_slices():
    insts = tuple(MigInstance(k, s, {}, activity=0.0) for k, s in (("a", 3), ("b", 2)))
    iv = GpuInterval("gpu0", 100.0, 1.0, 10.0, {}, {}, insts, 7.0)
    parts, method = mig_split(iv)
    assert method == "slice_share"
    assert [p[1] for p in parts] == pytest.approx([90 * 3 / 7, 90 * 2 / 7, 90 * 2 / 7])  # free: 2 slices
    assert [p[0] for p in parts] == pytest.approx([10 * 3 / 7, 10 * 2 / 7, 10 * 2 / 7])


def test_owner_takes_an_instance_without_process():
    pod = Workload("models", "embedder", "bge", "embedder-0")
    shares = split_gpu(four(owner=pod))
    assert by(shares, pod, IDLE) == pytest.approx(10.0)
    assert by(shares, UNALLOCATED, IDLE) == 0


@pytest.mark.parametrize("insts,total,field", [
    ((MigInstance("a", 0, {}),), 7.0, "slices"),
    ((MigInstance("a", 4, {}), MigInstance("b", 4, {})), 7.0, "mig_slices"),
    ((MigInstance("a", 1, {}, activity=-1.0),), 7.0, "activity"),
])
def test_bad_mig_input_is_named(insts, total, field):
    with pytest.raises(ValueError, match=field):
        mig_split(GpuInterval("gpu0", 1.0, 1.0, 0.0, {}, {}, insts, total))


@st.composite
def mig_intervals(draw):
    total = draw(st.sampled_from([7.0, 8.0]))
    n = draw(st.integers(1, 7))
    slices = [draw(st.sampled_from([1, 2, 3, 4])) for _ in range(n)]
    while sum(slices) > total:
        slices.pop()
    if not slices:
        slices = [1]
    gpm = draw(st.booleans())
    insts = []
    for i, s in enumerate(slices):
        pids = draw(st.lists(st.integers(0, 5), max_size=3, unique=True))
        mem = {100 * i + p: draw(st.floats(0, 1e11)) for p in pids}
        act = draw(st.one_of(st.none(), st.floats(0, 100))) if gpm else None
        insts.append(MigInstance(f"m{i}", s, mem, activity=act))
    energy = draw(st.one_of(st.just(0.0), st.floats(0, 1e7)))
    return GpuInterval("gpu0", energy, draw(st.floats(0.01, 100)), draw(st.floats(0, 1000)), {}, {},
                       tuple(insts), total)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mig_intervals(), st.sampled_from(["memory", "equal"]))
def test_property_mig_conservation(iv, policy):
    parts, method = mig_split(iv)
    assert method in ("gpm", "slice_share")
    idle = min(iv.energy_j, iv.idle_power_w * iv.dt_s)
    assert abs(math.fsum(p[0] for p in parts) - idle) <= max(1e-9 * idle, 1e-12)
    assert abs(math.fsum(p[1] for p in parts) - (iv.energy_j - idle)) <= max(1e-9 * iv.energy_j, 1e-12)
    held = sum(i.slices for i in iv.mig)
    if idle > 0:  # idle follows the slices exactly (free slices: the last part)
        for inst, p in zip(iv.mig, parts):
            assert p[0] == pytest.approx(idle * inst.slices / iv.mig_slices, rel=1e-9, abs=1e-9)
        assert parts[-1][0] == pytest.approx(idle * (iv.mig_slices - held) / iv.mig_slices, rel=1e-9, abs=1e-9)
    shares = split_gpu(iv, policy)
    assert all(s.joules > 0 and math.isfinite(s.joules) for s in shares)
    total = math.fsum(s.joules for s in shares)
    assert abs(total - iv.energy_j) <= max(1e-9 * iv.energy_j, 1e-12)


# --- the simulated NVML's MIG surface and the meter ----------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def sim(tmp_path, gpus, clock):
    return SimulatedNVML.from_file(str(write_scenario(tmp_path / "s.yaml", {"gpus": gpus})), clock)


def test_sim_speaks_nvml_shapes_and_codes(tmp_path):
    lib = sim(tmp_path, mig_gpus(), Clock())
    lib.nvmlInit()
    h = lib.nvmlDeviceGetHandleByIndex(0)
    assert lib.nvmlDeviceGetMaxMigDeviceCount(h) == 7
    mh = lib.nvmlDeviceGetMigDeviceHandleByIndex(h, 0)
    assert lib.nvmlDeviceGetUUID(mh).startswith("MIG-") and lib.nvmlDeviceGetUUID(h).startswith("GPU-")
    a = lib.nvmlDeviceGetAttributes(mh)
    assert isinstance(a, pynvml.c_nvmlDeviceAttributes)   # the wrapper's own ctypes structure
    assert (a.gpuInstanceSliceCount, a.computeInstanceSliceCount) == (3, 3)
    assert (lib.nvmlDeviceGetGpuInstanceId(mh), lib.nvmlDeviceGetComputeInstanceId(mh)) == (1, 0)
    with pytest.raises(pynvml.NVMLError_NotFound):        # "no valid MIG device was found at index"
        lib.nvmlDeviceGetMigDeviceHandleByIndex(h, 4)
    with pytest.raises(pynvml.NVMLError_NotSupported):    # attributes: MIG device handles only
        lib.nvmlDeviceGetAttributes(h)
    with pytest.raises(pynvml.NVMLError_NotSupported):    # process utilisation is not supported under MIG
        lib.nvmlDeviceGetProcessUtilization(h, 0)
    with pytest.raises(pynvml.NVMLError_NotSupported):    # no per-instance energy
        lib.nvmlDeviceGetTotalEnergyConsumption(mh)
    procs = lib.nvmlDeviceGetComputeRunningProcesses(h)   # aggregate, with each process's instance
    assert {(p.pid, p.gpuInstanceId) for p in procs} == {(1001, 1), (1002, 5), (1003, 9)}
    assert [p.pid for p in lib.nvmlDeviceGetComputeRunningProcesses(mh)] == [1001]
    assert lib.nvmlDeviceGetGpuInstanceProfileInfo(h, pynvml.NVML_GPU_INSTANCE_PROFILE_7_SLICE).sliceCount == 7
    with pytest.raises(pynvml.NVMLError_NotSupported):
        lib.nvmlDeviceGetGpuInstanceProfileInfo(h, pynvml.NVML_GPU_INSTANCE_PROFILE_8_SLICE)


def test_gpm_unsupported_before_hopper(tmp_path):
    a100 = mig_gpus(name="NVIDIA A100-SXM4-80GB")
    lib = sim(tmp_path, a100, Clock())
    lib.nvmlInit()
    h = lib.nvmlDeviceGetHandleByIndex(0)
    assert lib.nvmlGpmQueryDeviceSupport(h).isSupportedDevice == 0
    with pytest.raises(pynvml.NVMLError_NotSupported):
        lib.nvmlGpmMigSampleGet(h, 1, lib.nvmlGpmSampleAlloc())
    meter = GpuMeter(lib, backend="simulated")
    meter.open()
    d = meter.devices[0]
    assert (d.mig_activity, d.mig_slices) == ("slice_share", 7) and "not supported" in d.mig_activity_detail


def test_meter_lists_instances_and_gpm_utilisation(tmp_path):
    clock = Clock()
    meter = GpuMeter(sim(tmp_path, mig_gpus(), clock), backend="simulated")
    meter.open()
    d = meter.devices[0]
    assert (d.mig_mode, d.mig_slices, d.mig_activity) == ("enabled", 7, "gpm")
    first = meter.read()[0]
    assert [m.sm_util for m in first.mig] == [None] * 4   # one GPM sample: no interval yet
    clock.t += 5
    r = meter.read()[0]
    assert not r.field_errors and r.sm_util == {} and not meter.needs_polling
    assert [(m.gpu_instance, m.profile, m.slices, m.sm_util) for m in r.mig] == [
        (1, "3g.40gb", 3.0, 80.0), (5, "2g.20gb", 2.0, 50.0), (9, "1g.10gb", 1.0, 0.0), (10, "1g.10gb", 1.0, 0.0)]
    assert r.processes == {1001: 30 * 1024**3, 1002: 12 * 1024**3, 1003: 4 * 1024**3}
    assert len({m.uuid for m in r.mig}) == 4 and all(m.uuid.startswith("MIG-") for m in r.mig)
    meter.close()
    assert not meter.lib.gpm_buffers                     # every GPM sample buffer freed


def test_gpm_fault_degrades_to_the_fallback(tmp_path):
    clock = Clock()
    gpus = mig_gpus(faults=[{"call": "gpm", "error": "UNKNOWN", "after_s": 0, "for_s": 1e9}])
    meter = GpuMeter(sim(tmp_path, gpus, clock))
    meter.open()
    clock.t += 1
    r = meter.read()[0]
    assert r.field_errors == {"gpm": "unknown"} and all(m.sm_util is None for m in r.mig)
    assert r.energy_mj is not None and len(r.mig) == 4   # the energy and the instances still there
    meter.close()
    assert not meter.lib.gpm_buffers                     # a failed sample's buffer is reused, then freed


def test_profile_names_follow_the_device_plugin():
    h100 = 81559 * 1024**2  # an H100 80GB's memory as nvidia-smi shows it
    assert profile_name(1, 1, 9856, h100) == "1g.10gb"
    assert profile_name(3, 3, 40192, h100) == "3g.40gb"
    assert profile_name(7, 7, 80768, h100) == "7g.80gb"
    assert profile_name(3, 1, 40192, h100) == "1c.3g.40gb"


@pytest.mark.parametrize("bad,msg", [
    ({"mig_instances": [{"profile": "5g.50gb"}]}, "not an H100 profile"),
    ({"mig_instances": [{"profile": "4g.40gb"}, {"profile": "4g.40gb"}]}, "8 slices held"),
    ({"mig": False}, "needs mig: true"),
])
def test_bad_mig_scenario_is_named(tmp_path, bad, msg):
    with pytest.raises(ScenarioError, match=msg):
        sim(tmp_path, mig_gpus(**bad), Clock())


# --- the whole sampler ------------------------------------------------------------------------------

def instance_energy(m: dict, gi: int, mode: str) -> float:
    return value(m, "wattprint_gpu_mig_instance_energy_joules_total", gpu_instance=str(gi), mode=mode)


def run_node(tmp_path, gpus, owners=None, steps=4):
    node = FaultNode(tmp_path, gpus, dict(PROCS))
    if owners is not None:
        node.sampler.booking.gpu_owners = lambda: owners
    t_start = node.clock.t
    node.step()  # the first GPM interval: from here every instance has a GPM utilisation
    before = node.metrics()
    for _ in range(steps):
        m = node.step()
    return node, before, m, t_start


def deltas(before, m, gi):
    return {mode: instance_energy(m, gi, mode) - instance_energy(before, gi, mode) for mode in ("idle", "active")}


@pytest.mark.parametrize("gpm", [True, False])
def test_seven_slice_h100_four_endpoints(tmp_path, gpm):
    node, before, m, _ = run_node(tmp_path, mig_gpus(gpm=gpm))
    gpu_total = value(m, "wattprint_gpu_energy_joules_total")
    assert gpu_total == pytest.approx(node.gpu_truth(0), rel=1e-9)
    per = {gi: deltas(before, m, gi) for gi in SLICES}
    gpu_delta = gpu_total - value(before, "wattprint_gpu_energy_joules_total")
    # Σ over instances and modes = the GPU's energy, exactly (all 7 slices are held: nothing free)
    assert math.fsum(v for p in per.values() for v in p.values()) == pytest.approx(gpu_delta, rel=1e-12)
    assert value(m, "wattprint_gpu_mig_instance_energy_joules_total", gpu_instance="free") == 0
    idle = math.fsum(p["idle"] for p in per.values())
    active = gpu_delta - idle
    for gi, s in SLICES.items():  # idle by the slices each instance reserves
        assert per[gi]["idle"] == pytest.approx(idle * s / 7, rel=1e-12)
    if gpm:  # active by GPM SM utilisation × slices: the idle 1g and the empty 1g get none
        weights = {gi: UTIL[gi] * SLICES[gi] for gi in SLICES}
    else:    # by slices among the instances with processes: the idle 1g too, not the empty one
        weights = {1: 3, 5: 2, 9: 1, 10: 0}
    for gi, w in weights.items():
        assert per[gi]["active"] == pytest.approx(active * w / sum(weights.values()), rel=1e-12, abs=1e-9)
    # the true active power: 630 W × Σ util × slices / 7
    assert active == pytest.approx(630 * (0.8 * 3 + 0.5 * 2) / 7 * 4, rel=1e-9)
    method = "gpm" if gpm else "slice_share"
    assert value(m, "wattprint_gpu_mig_instance_info", method=method) == 4
    # the endpoints: one per instance; the instance without a process is unallocated
    ep = lambda name, mode: value(m, "wattprint_endpoint_energy_joules_total", endpoint=name, component="gpu",
                                  mode=mode) - value(before, "wattprint_endpoint_energy_joules_total",
                                                     endpoint=name, component="gpu", mode=mode)
    names = {1: "vllm-8001", 5: "sglang-30000", 9: "tgi-8090", 10: "unallocated"}
    for gi, name in names.items():
        assert ep(name, "idle") == pytest.approx(per[gi]["idle"], rel=1e-9), name
        assert ep(name, "active") == pytest.approx(per[gi]["active"], rel=1e-9, abs=1e-9), name
    # instance labels live on GPU-level series only, never on the endpoint series
    assert not any("gpu_instance" in dict(k) for k in m["wattprint_endpoint_energy_joules_total"])


def test_mig_instance_of_a_pod_without_process_is_the_pods(tmp_path, sockdir=None):
    """The kubelet's pod-resources (a real gRPC server on a unix socket) gives a pod the empty 1g
    instance (nvidia.com/mig-1g.10gb, its MIG UUID): its energy is the pod's, not unallocated."""
    grpc = pytest.importorskip("grpc")
    from concurrent import futures
    import tempfile

    from exporter.identity.cluster import Cluster
    from exporter.identity.podresources import PodResourcesClient
    from exporter.identity.podresources_pb import api_pb2, api_pb2_grpc

    lib = sim(tmp_path, mig_gpus(), Clock())
    lib.nvmlInit()
    empty = lib.nvmlDeviceGetUUID(lib.nvmlDeviceGetMigDeviceHandleByIndex(lib.nvmlDeviceGetHandleByIndex(0), 3))

    class Kubelet(api_pb2_grpc.PodResourcesListerServicer):
        def List(self, request, context):  # noqa: N802 - gRPC method name
            return api_pb2.ListPodResourcesResponse(pod_resources=[api_pb2.PodResources(
                name="embedder-0", namespace="models", containers=[api_pb2.ContainerResources(
                    name="tei", devices=[api_pb2.ContainerDevices(resource_name="nvidia.com/mig-1g.10gb",
                                                                  device_ids=[empty])])])])

    class NoPods:  # the pod cache has not seen the pod yet: the assignment's own names are used
        def pods(self):
            return []

    d = Path(tempfile.mkdtemp(prefix="wp-mig-"))
    sock = d / "kubelet.sock"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(Kubelet(), server)
    assert server.add_insecure_port(f"unix://{sock}")
    server.start()
    try:
        with PodResourcesClient(str(sock)) as client:
            owners = Cluster(NoPods())._owners(client.list())
    finally:
        server.stop(None)
        sock.unlink(missing_ok=True)
        d.rmdir()
    assert set(owners) == {empty}
    node, before, m, _ = run_node(tmp_path / "node", mig_gpus(), owners=owners)
    pod = value(m, "wattprint_endpoint_energy_joules_total", endpoint="embedder-0", mode="idle") - \
        value(before, "wattprint_endpoint_energy_joules_total", endpoint="embedder-0", mode="idle")
    assert pod == pytest.approx(deltas(before, m, 10)["idle"], rel=1e-9) and pod > 0
    assert value(m, "wattprint_endpoint_energy_joules_total", endpoint="unallocated", component="gpu") == \
        value(before, "wattprint_endpoint_energy_joules_total", endpoint="unallocated", component="gpu")


# --- wattprint check ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,method,why", [("NVIDIA H100 80GB HBM3", "gpm", ""),
                                             ("NVIDIA A100-SXM4-80GB", "slice_share", "not supported")])
def test_check_shows_the_backend_its_method_and_why(tmp_path, name, method, why):
    from exporter import check
    from test_registry import cfg
    from support import make_procfs

    make_procfs(tmp_path / "proc", {}, 100, 100)
    scenario = write_scenario(tmp_path / "mig.yaml", {"gpus": mig_gpus(name=name)})
    rep = check.diagnose(cfg(tmp_path, gpu__backend="simulated", gpu__simulation_file=str(scenario)))
    mig = rep["gpu"]["gpus"][0]["mig"]
    assert rep["gpu"]["backend"] == "simulated"
    assert (mig["slices"], mig["activity_method"], len(mig["instances"])) == (7, method, 4)
    assert why in mig["activity_detail"] and bool(why) == bool(mig["activity_detail"])
    text = check.render_text(rep)
    assert f"MIG: 7 slices, 4 instance(s); idle split by slices, active by {method}" in text
    assert "1g.10gb" in text and "MIG-" in text


def test_process_list_denied_keeps_the_instances_and_their_owner(tmp_path):
    """An unprivileged container: every process list says NO_PERMISSION. The instances stay (by
    their slices), the pod that holds one gets its energy, the rest is unallocated — never lost."""
    lib = sim(tmp_path, mig_gpus(), Clock())
    lib.nvmlInit()
    uuid0 = lib.nvmlDeviceGetUUID(lib.nvmlDeviceGetMigDeviceHandleByIndex(lib.nvmlDeviceGetHandleByIndex(0), 0))
    pod = Workload("models", "llama", "llama-3", "llama-0")
    gpus = mig_gpus(faults=[{"call": "processes", "error": "NO_PERMISSION", "after_s": 0, "for_s": 1e9}])
    node, before, m, _ = run_node(tmp_path / "node", gpus, owners={uuid0: pod})
    assert len(m["wattprint_gpu_mig_instance_info"]) == 4
    got = value(m, "wattprint_endpoint_energy_joules_total", endpoint="llama", component="gpu") - \
        value(before, "wattprint_endpoint_energy_joules_total", endpoint="llama", component="gpu")
    assert got == pytest.approx(sum(deltas(before, m, 1).values()), rel=1e-9) and got > 0
    assert value(m, "wattprint_collector_errors_total", collector="gpu", kind="processes_no_permission") > 0


def test_mig_mode_without_instances_is_all_free(tmp_path):
    """MIG enabled, no instance created: every handle index answers NOT_FOUND (nothing counted as an
    error), and the GPU's whole energy is the free slices', unallocated."""
    node, before, m, _ = run_node(tmp_path, [{"name": "NVIDIA H100 80GB HBM3", "idle_w": 70, "mig": True}])
    free = value(m, "wattprint_gpu_mig_instance_energy_joules_total", gpu_instance="free")
    assert free == pytest.approx(value(m, "wattprint_gpu_energy_joules_total"), rel=1e-12) and free > 0
    assert "wattprint_gpu_mig_instance_info" not in m
    assert value(m, "wattprint_endpoint_energy_joules_total", endpoint="unallocated") == pytest.approx(free, rel=1e-9)
    assert "wattprint_collector_errors_total" not in m or \
        not any(dict(k).get("collector") == "gpu" for k in m["wattprint_collector_errors_total"])


def test_compute_instances_share_their_gpu_instance(tmp_path):
    """A 3g GPU instance cut into a 1c and a 2c compute instance: each MIG device reserves its part
    of the 3 slices (1 and 2), and both carry their GPU instance's GPM utilisation (GPM samples a
    GPU instance, nvmlGpmMigSampleGet(device, gpuInstanceId, …))."""
    clock = Clock()
    insts = [{"profile": "1c.3g.40gb", "gpu_instance": 1, "compute_instance": 0, "sm_util": 90,
              "processes": [{"pid": 7, "memory_gib": 1}]},
             {"profile": "2c.3g.40gb", "gpu_instance": 1, "compute_instance": 1, "sm_util": 30, "processes": []},
             {"profile": "4g.40gb", "gpu_instance": 2, "sm_util": 0, "processes": []}]
    meter = GpuMeter(sim(tmp_path, [{"name": "NVIDIA H100 80GB HBM3", "mig": True, "mig_instances": insts}], clock))
    meter.open()
    meter.read()
    clock.t += 2
    r = meter.read()[0]
    got = [(m.gpu_instance, m.compute_instance, m.profile, m.slices, m.sm_util) for m in r.mig]
    assert got == [(1, 0, "1c.3g.40gb", 1.0, 50.0), (1, 1, "2c.3g.40gb", 2.0, 50.0), (2, 0, "4g.40gb", 4.0, 0.0)]
