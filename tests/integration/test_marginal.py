"""What one more token costs, through a real ``wattprint serve``: simulated GPUs whose power is
``idle + a × prompt-token rate + b × generation-token rate`` plus noise (exporter/sensors/
simtraffic.py), each under a vLLM-shaped server (tests/fixtures/engines/traffic_engine.py, started
as ``vllm serve <model> --port N``) whose counters come from the same schedule.

Time runs ten times faster than in production, every setting scaled alike: 0.1 s samples (1 s),
0.5 s engine scrapes (5 s), 1 s windows (10 s), traffic that changes every 1 s (10 s). So the
60 s run is 10 minutes of simulated traffic.

Must show (issue "What one more request costs"): the exported a and b within 5 % of the truth,
95 % intervals covering it, nothing published when prompt and generation tokens move in a fixed
ratio; and a server restart midway costs the fit nothing."""

from __future__ import annotations

import time

import pytest

from support import FAST_MARGINAL_ARGS, parse_metrics, start_daemon, start_traffic_node, stop_all, traffic_spec

RUN_S = 60.0  # 10 simulated minutes
# (prefill J/token, decode J/token, seed); the fixed-mix and restarting servers are extra
TRUTHS = [(0.008, 0.10, 11), (0.012, 0.15, 12), (0.02, 0.25, 13), (0.01, 0.12, 14)]
COLLINEAR = 4
RESTART = 5


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("marginal")
    specs = [traffic_spec(a, b, seed) for a, b, seed in TRUTHS]
    specs.append(traffic_spec(0.01, 0.12, 15, generation_per_prompt=0.2))   # a fixed mix: not identifiable
    specs.append(traffic_spec(0.01, 0.12, 16))                                # restarts at 30 s
    scenario, procs, start = start_traffic_node(tmp, specs, restart_at={RESTART: 30.0})
    d = None
    try:
        d = start_daemon(tmp, *FAST_MARGINAL_ARGS, "--gpu.backend=simulated", f"--gpu.simulation-file={scenario}",
                         "--carbon.region=FR")
        time.sleep(max(0.0, start + RUN_S - time.time()))
        yield parse_metrics(d.get()), d
    finally:
        if d is not None:
            d.stop()
        stop_all(procs)


def _one(m: dict, name: str, model: str, **labels: str) -> float | None:
    hits = [v for k, v in m.get(name, {}).items()
            if dict(k).get("model") == model and all(dict(k).get(a) == b for a, b in labels.items())]
    assert len(hits) <= 1, (name, model, hits)
    return hits[0] if hits else None


@pytest.mark.parametrize("i", [*range(len(TRUTHS)), RESTART], ids=[*(f"seed{t[2]}" for t in TRUTHS), "restart"])
def test_the_exported_marginal_costs_are_the_truth(fitted, i):
    m, d = fitted
    a, b = TRUTHS[i][:2] if i < len(TRUTHS) else (0.01, 0.12)
    model = f"sim/model-{i}"
    assert _one(m, "wattprint_endpoint_energy_model_state", model, state="fitted") == 1, d.log.read_text()[-3000:]
    windows = _one(m, "wattprint_endpoint_energy_model_windows", model)
    assert windows is not None and windows >= 40, windows  # ~58 windows of 1 s in 60 s
    for phase, truth in (("prefill", a), ("decode", b)):
        est = _one(m, "wattprint_endpoint_marginal_joules_per_token", model, phase=phase)
        se = _one(m, "wattprint_endpoint_marginal_joules_per_token_stderr", model, phase=phase)
        assert est is not None and se is not None
        assert abs(est / truth - 1) < 0.05, f"{phase}: {est:.5f} J/token against the truth {truth} (stderr {se:.2g})"
        assert 0 < se < 0.05 * truth, se
    r2 = _one(m, "wattprint_endpoint_energy_model_r_squared", model)
    assert r2 is not None and r2 > 0.9


def test_the_intervals_cover_the_truth(fitted):
    """±1.96 stderr covers the truth for most of the 8 terms (95 % intervals: all 8 covered with
    probability 0.66, at least 7 with 0.94)."""
    m, _ = fitted
    covered = 0
    for i, (a, b, _seed) in enumerate(TRUTHS):
        for phase, truth in (("prefill", a), ("decode", b)):
            est = _one(m, "wattprint_endpoint_marginal_joules_per_token", f"sim/model-{i}", phase=phase)
            se = _one(m, "wattprint_endpoint_marginal_joules_per_token_stderr", f"sim/model-{i}", phase=phase)
            covered += est is not None and abs(est - truth) <= 1.96 * se
    assert covered >= 6, covered


def test_a_fixed_mix_publishes_nothing_and_says_why(fitted):
    m, _ = fitted
    model = f"sim/model-{COLLINEAR}"
    assert _one(m, "wattprint_endpoint_energy_model_state", model, state="collinear") == 1
    for name in ("wattprint_endpoint_marginal_joules_per_token", "wattprint_endpoint_marginal_joules_per_token_stderr",
                 "wattprint_endpoint_energy_model_r_squared", "wattprint_endpoint_energy_model_fixed_active_watts"):
        assert not [k for k in m.get(name, {}) if dict(k).get("model") == model], name
    # the endpoint itself is fine: energy and requests on its label set
    assert _one(m, "wattprint_endpoint_requests_total", model) > 0


def test_every_token_and_joule_still_lands_once(fitted):
    """The fit reads what was booked; it books nothing: the endpoints' energy still sums to the node's."""
    m, _ = fitted
    node = sum(m["wattprint_node_energy_joules_total"].values())
    endpoints = sum(m["wattprint_endpoint_energy_joules_total"].values())
    assert endpoints == pytest.approx(node, rel=1e-9)
    assert _one(m, "wattprint_endpoint_tokens_total", "sim/model-0", kind="prompt") > 0
