"""Issue "Totals that hold on real drivers and real timing": one test per class of accounting
defect fixed so far, each named after its class. Each fails on the code before the fix (the
figure in the docstring is what the old code booked)."""

from __future__ import annotations

import asyncio
import math

import aiohttp
import pytest

from exporter.engine_scraper import EngineScraper, Increment, Target
from exporter.identity.resolver import Workload
from exporter.ledger import Ledger
from exporter.pipeline.device import GpuAccount
from exporter.sensors import idle_table
from exporter.sensors.cpu_estimate import CpuPowerModel, EstimateMeter
from exporter.sensors.procfs import CLK_TCK, parse_proc_stat
from support import free_port, value
from test_faults import H100, VLLM, FaultNode, _raise_once


def test_gpu_counter_reset_keeps_the_post_reset_counter_as_a_lower_bound():
    """A driver reload restarts the counter at 0; power readings around it under-estimate a busy
    interval. Old: 17,200 J bridged from two power readings while the counter since the reload
    alone said 18,044 J."""
    a = GpuAccount()
    a.update(900_000_000, 400_000, 0.0)
    d = a.update(18_044_000, 460_000, 40.0)  # 18,044 J counted since the reload, inside 40 s
    assert d.counter_reset and d.joules == pytest.approx(18_044.0)
    d2 = a.update(18_500_000, 460_000, 41.0)
    assert d2.joules == pytest.approx(456.0)


def test_steal_time_is_not_busy_time():
    """An idle 4-vCPU guest with 50 % steal: old busy share 0.5 (2.9× the energy of the model)."""
    # user nice system idle iowait irq softirq steal guest guest_nice
    t = parse_proc_stat(f"cpu  0 0 0 {400 * CLK_TCK // 100} 0 0 0 {400 * CLK_TCK // 100} 0 0\n")
    assert t.busy_s == 0.0
    model = CpuPowerModel(4, 0.74, 3.5)
    assert model.power_w(t.busy_s / t.total_s) == pytest.approx(model.power_w(0.0))


def test_guest_time_is_counted_once():
    t = parse_proc_stat("cpu  100 0 0 100 0 0 0 0 100 0\n")  # guest 100 is inside user 100
    assert t.busy_s == pytest.approx(100 / CLK_TCK) and t.total_s == pytest.approx(200 / CLK_TCK)


def test_cpu_estimate_covers_an_interval_whose_proc_stat_read_failed(tmp_path):
    """Old: the failed interval was priced at idle power and the next one only for its own
    time (14 J instead of 20 J over these two seconds)."""
    node = FaultNode(tmp_path, [], {}, rapl=False)
    m0 = node.step()
    e0 = value(m0, "wattprint_node_energy_joules_total", component="cpu")
    node.advance()                      # 150 busy / 250 idle ticks: u = 0.375, P = 4·(1 + 0.375·4) = 10 W
    (tmp_path / "proc" / "stat").unlink()
    node.sample()
    node.advance()
    m = node.sample()
    got = value(m, "wattprint_node_energy_joules_total", component="cpu") - e0
    assert got == pytest.approx(20.0, rel=1e-6)
    assert EstimateMeter(CpuPowerModel(4, 1.0, 5.0)).measure(1.0, None).joules == {"estimate": 0.0}


class _Source:
    """An engine scraper's queue, as the sampler sees it."""

    def __init__(self) -> None:
        self.queue: list[Increment] = []
        self.states: dict = {}
        self.resets: dict = {}
        self.served: dict = {}

    def served_models(self) -> dict:
        return dict(self.served)

    def drain(self) -> list[Increment]:
        out, self.queue = self.queue, []
        return out

    def contribute(self, snap) -> None:
        pass


def test_engine_increments_of_a_rolled_back_sample_are_booked_by_the_next(tmp_path):
    """Old: the 7 requests drained by a sample that then failed were lost (0 vs 7)."""
    procs = {10: {"comm": "python3", "cmdline": VLLM}}
    node = FaultNode(tmp_path, [{**H100, "processes": [{"pid": 10, "sm_util": 50}]}], procs)
    src = _Source()
    node.sampler.engines = src
    w = Workload("", "vllm-8001", "meta-llama/Llama-3.1-8B")
    src.queue.append(Increment(w, w.model, {"requests": 7.0, "prompt_tokens": 70.0}))
    _raise_once(node)
    node.advance()
    with pytest.raises(RuntimeError):
        node.sampler.sample()          # the sample fails inside booking, after the drain
    m = node.step()
    assert value(m, "wattprint_endpoint_requests_total", endpoint="vllm-8001") == 7.0
    m = node.step()                     # and only once
    assert value(m, "wattprint_endpoint_requests_total", endpoint="vllm-8001") == 7.0


def test_engine_scrape_errors_never_go_backwards_when_a_target_leaves_and_returns():
    """Old: [1, 2, 3, 0, 1] as the target left the list and came back."""
    url = f"http://127.0.0.1:{free_port()}/metrics"  # nothing listens: a connect error each time
    t = Target(Workload("", "ep", "m"), "vllm", url, "m")
    listed = {"on": True}
    scraper = EngineScraper(lambda: [t] if listed["on"] else [], timeout_s=1.0)

    class Snap:
        def __init__(self):
            self.values = {}

        def set(self, metric, labels, v):
            self.values.setdefault(metric, {})[labels] = v

    seen = []

    async def run():
        async with aiohttp.ClientSession() as session:
            for on in (True, True, True, False, True, True):
                listed["on"] = on
                await scraper.scrape_all(session)
                snap = Snap()
                scraper.contribute(snap)
                seen.append(snap.values.get("engine_scrape_errors_total", {}).get(("", "ep", "vllm", "connect"), 0.0))

    asyncio.run(run())
    # the third pass leaves the failing target alone (it backs off); gone and back: a new visit,
    # the lifetime counter carries on
    assert seen == [1, 2, 2, 2, 3, 4]


@pytest.mark.parametrize("name, watts", [
    ("NVIDIA GH200 480GB", 90.0), ("NVIDIA H200", 75.0), ("NVIDIA A100 80GB PCIe", 40.0),
    ("NVIDIA A100-SXM4-80GB", 55.0), ("NVIDIA A100-PCIE-40GB", 35.0), ("NVIDIA B200", 140.0),
    ("NVIDIA GB200", 150.0), ("NVIDIA H20", 60.0), ("NVIDIA L40S", 35.0), ("NVIDIA H100 NVL", 60.0),
    ("AMD Instinct MI300X", 140.0), ("AMD Instinct MI300X VF", 140.0), ("AMD Instinct MI325X", 160.0),
    ("AMD Instinct MI355X", 238.0),
])
def test_idle_table_most_specific_match_wins(name, watts):
    """Old: a GH200 got the H200 row and an A100 80GB PCIe the SXM value."""
    assert idle_table.lookup(name) == watts


def test_folded_series_count_label_sets_not_increments():
    """Old: 100 increments of one folded label set counted 100."""
    led = Ledger(max_series=1)
    led.add("endpoint_requests_total", ("", "a", ""), 1.0)
    for _ in range(100):
        led.add("endpoint_requests_total", ("", "b", ""), 1.0)
    assert led.folded["endpoint_requests_total"] == 1
    assert math.fsum(led.counters["endpoint_requests_total"].values()) == 101.0


# --- NVML fields degrade one by one --------------------------------------------------------------

def _gpu_node(tmp_path, faults, procs=None):
    gpu = {**H100, "processes": [{"pid": 20, "memory_gib": 10, "sm_util": 50}], "faults": faults}
    return FaultNode(tmp_path, [gpu], procs if procs is not None else {20: {"comm": "python3", "cmdline": VLLM}})


def _err(m, kind):
    return value(m, "wattprint_collector_errors_total", collector="gpu", kind=kind)


def test_gpu_energy_booked_when_process_list_fails(tmp_path):
    """MIG in an unprivileged container: the process list (and utilisation) say NoPermission on
    every read. Old: the GPU was not metered at all (0 J vs 4,000 J)."""
    node = _gpu_node(tmp_path, [{"call": "processes", "error": "NO_PERMISSION", "after_s": 0, "for_s": 1e9},
                                {"call": "utilization", "error": "NO_PERMISSION", "after_s": 0, "for_s": 1e9}])
    for _ in range(5):
        m = node.step()
    truth = node.gpu_truth(0)
    assert value(m, "wattprint_gpu_energy_joules_total") == pytest.approx(truth, rel=1e-9)
    assert value(m, "wattprint_endpoint_energy_joules_total", endpoint="unallocated", component="gpu") == \
        pytest.approx(truth, rel=1e-9)  # residents unknown: the GPU's owner, else unallocated — never nowhere
    assert _err(m, "processes_no_permission") == 6 and value(m, "wattprint_collector_up", collector="gpu") == 1


def test_process_list_falls_back_to_the_v2_symbol(tmp_path):
    """nvidia-ml-py >= 12.535 calls ..._v3, which drivers before R510 lack: the _v2 symbol is used."""
    node = _gpu_node(tmp_path, [{"call": "processes", "error": "FUNCTION_NOT_FOUND", "after_s": 0, "for_s": 1e9}])
    for _ in range(3):
        m = node.step(ticks={20: 10})
    assert value(m, "wattprint_endpoint_energy_joules_total", endpoint="vllm-8001", component="gpu") == \
        pytest.approx(node.gpu_truth(0), rel=1e-9)
    assert "wattprint_collector_errors_total" not in "".join(k for k in m if "gpu" in str(k))


def test_gpu_without_an_energy_counter_symbol_integrates_power(tmp_path):
    """A driver without the counter (FunctionNotFound from 2 s on): power integration from that
    read, bridged from the last counter read; nothing lost (power here is piecewise constant)."""
    node = _gpu_node(tmp_path, [{"call": "energy", "error": "FUNCTION_NOT_FOUND", "after_s": 2.5, "for_s": 1e9}])
    for _ in range(6):
        m = node.step()
    assert value(m, "wattprint_gpu_energy_joules_total") == pytest.approx(node.gpu_truth(0), rel=1e-6)
    assert 'energy_method="power_integration"' in node.sampler.metrics_text()
    assert _err(m, "energy_function_not_found") == 1


def test_gpu_memory_read_failure_degrades_alone(tmp_path):
    node = _gpu_node(tmp_path, [{"call": "memory", "error": "UNKNOWN", "after_s": 1.5, "for_s": 2}])
    for _ in range(5):
        m = node.step()
    assert value(m, "wattprint_gpu_energy_joules_total") == pytest.approx(node.gpu_truth(0), rel=1e-9)
    assert _err(m, "memory_unknown") == 2


def test_exited_gpu_process_keeps_its_endpoint(tmp_path):
    """The process exits between two samples while NVML still lists it for the interval. Old:
    its last interval's GPU energy went to endpoint="unidentified"."""
    import shutil

    node = _gpu_node(tmp_path, [])
    for _ in range(3):
        m = node.step(ticks={20: 10})
    before = value(m, "wattprint_endpoint_energy_joules_total", endpoint="vllm-8001", component="gpu")
    shutil.rmtree(tmp_path / "proc" / "20")
    del node.procs[20]
    m = node.step()
    assert value(m, "wattprint_endpoint_energy_joules_total", endpoint="vllm-8001", component="gpu") > before
    assert value(m, "wattprint_endpoint_energy_joules_total", endpoint="unidentified") == 0


def test_multi_model_split_follows_the_interval_activity_not_stale_weights(tmp_path):
    """A Triton server with two models: once only B is active, A gets none of the energy (old: A
    kept its last share, 2,000 of 8,000 J). With no activity for two scrape intervals the energy
    stays on the server's own label set, as documented in exporter/pipeline/requests.py."""
    triton = ["tritonserver", "--model-repository=/models", "--http-port=8000"]
    node = _gpu_node(tmp_path, [], {20: {"comm": "tritonserver", "cmdline": triton}})
    src = _Source()
    node.sampler.engines = src
    node.sampler.requests.expire_s = 3.0
    m = node.step()
    ep = next(labels["endpoint"] for key in m.get("wattprint_endpoint_energy_joules_total", {})
              for labels in [dict(key)] if labels.get("component") == "gpu")
    w = Workload("", ep, "")

    def gpu_j(model):
        return value(m, "wattprint_endpoint_energy_joules_total", endpoint=ep, model=model, component="gpu")

    src.queue += [Increment(w, "a", {"requests": 1, "compute_seconds": 1.0}),
                  Increment(w, "b", {"requests": 1, "compute_seconds": 3.0})]
    m = node.step()
    a0, b0 = gpu_j("a"), gpu_j("b")
    assert b0 == pytest.approx(3 * a0)
    src.queue += [Increment(w, "b", {"requests": 1, "compute_seconds": 2.0})]   # only B is active now
    m = node.step()
    assert gpu_j("a") == pytest.approx(a0) and gpu_j("b") > b0
    own0 = gpu_j("")
    for _ in range(5):                                                          # nothing active for 5 s
        m = node.step()
    assert gpu_j("") > own0 and gpu_j("a") == pytest.approx(a0)


def test_a_persistent_exception_on_one_process_costs_only_its_identity(tmp_path):
    """Old: one process whose identity raised made every sample roll back, for ever (no energy at
    all). Now its energy goes to `unidentified`, counted, and everything else is booked."""
    procs = {20: {"comm": "python3", "cmdline": VLLM}, 30: {"comm": "python", "cmdline": ["python", "x.py"]}}
    gpu = {**H100, "processes": [{"pid": 20, "sm_util": 50}, {"pid": 30, "sm_util": 50}]}
    node = FaultNode(tmp_path, [gpu], procs)
    real = node.sampler.resolver.resolve

    def resolve(pid, *a, **kw):
        if pid == 30:
            raise RuntimeError("bad data in this process")
        return real(pid, *a, **kw)
    node.sampler.resolver.resolve = resolve  # type: ignore[method-assign]
    for _ in range(4):
        m = node.step(ticks={20: 10, 30: 10})
    assert value(m, "wattprint_gpu_energy_joules_total") == pytest.approx(node.gpu_truth(0), rel=1e-9)
    assert value(m, "wattprint_endpoint_energy_joules_total", endpoint="vllm-8001", component="gpu") > 0
    assert value(m, "wattprint_endpoint_energy_joules_total", endpoint="unidentified", component="gpu") > 0
    assert value(m, "wattprint_collector_errors_total", collector="attribution", kind="resolve_runtimeerror") >= 4
    assert value(m, "wattprint_collector_errors_total", collector="sampler") == 0


def test_rapl_counter_reset_is_not_booked_as_a_wrap(tmp_path):
    """powercap ABI (Linux Documentation/power/powercap/powercap.rst): each zone has
    constraint_N_max_power_uw / constraint_N_power_limit_uw. A counter that restarts (not a
    wrap) used to be booked as a near-full wrap: 262 kJ of phantom energy in one second."""
    from exporter.sensors.rapl import RaplMeter
    from support import make_powercap, set_energy

    root = make_powercap(tmp_path / "sys", {"intel-rapl:0": {"name": "package-0", "energy_uj": 200_000_000_000}})
    (root / "class/powercap/intel-rapl:0/constraint_0_max_power_uw").write_text("250000000\n")  # 250 W
    meter = RaplMeter(str(root))
    assert meter.zones[0].max_power_uw == 250_000_000
    meter.measure(1.0, None)
    set_energy(root, "intel-rapl:0", 200_000_000_000 + 100_000_000)       # +100 J in 1 s: fine
    assert meter.measure(1.0, None).joules["intel-rapl:0"] == pytest.approx(100.0)
    set_energy(root, "intel-rapl:0", 40_000_000)                           # reset: 40 J since
    r = meter.measure(1.0, None)
    assert r.joules["intel-rapl:0"] == pytest.approx(40.0) and r.errors == {"intel-rapl:0": "reset"}
    set_energy(root, "intel-rapl:0", 140_000_000)
    assert meter.measure(1.0, None).joules["intel-rapl:0"] == pytest.approx(100.0)


def test_a_real_rapl_wrap_is_still_a_wrap(tmp_path):
    from exporter.sensors.rapl import RaplMeter
    from support import make_powercap, set_energy

    rng = 65_712_999_613  # a real 65.7 kJ package range
    root = make_powercap(tmp_path / "sys", {"intel-rapl:0": {"name": "package-0", "energy_uj": rng - 50_000_000,
                                                           "max_energy_range_uj": rng}})
    (root / "class/powercap/intel-rapl:0/constraint_0_power_limit_uw").write_text("280000000\n")
    meter = RaplMeter(str(root))
    meter.measure(1.0, None)
    set_energy(root, "intel-rapl:0", 230_000_000)                          # wrapped: 50 + 230 J in 1 s
    r = meter.measure(1.0, None)
    assert r.joules["intel-rapl:0"] == pytest.approx(280.0) and not r.errors
