"""The marginal-cost fit (exporter/energy_model.py, pure) and the stage that cuts its windows
(exporter/pipeline/marginal.py), on windows drawn from the simulated traffic schedule
(exporter/sensors/simtraffic.py), whose truth is known."""

from __future__ import annotations

import math
import random

import pytest

from exporter import energy_model
from exporter.energy_model import Window, fit
from exporter.engine_scraper import Increment
from exporter.exposition import Snapshot
from exporter.identity.resolver import Workload
from exporter.pipeline.marginal import MarginalStage
from exporter.sensors.simtraffic import Traffic, TrafficError


def windows_of(tr: Traffic, seconds: float, window_s: float = 10.0, idle_error_w: float = 0.0) -> list[Window]:
    out, t = [], 0.0
    while t + window_s <= seconds:
        c0, c1 = tr.counters(t), tr.counters(t + window_s)
        e = tr.totals(t + window_s)[2] - tr.totals(t)[2] + idle_error_w * window_s
        out.append(Window(window_s, e, c1["prompt_tokens"] - c0["prompt_tokens"],
                          c1["generation_tokens"] - c0["generation_tokens"]))
        t += window_s
    return out


def traffic(seed: int, a: float = 0.01, b: float = 0.12, **kw) -> Traffic:
    return Traffic(prefill_j=a, decode_j=b, seed=seed, segment_s=10.0, **kw)


def test_ten_minutes_of_traffic_give_both_costs_within_5_percent():
    f = fit(windows_of(traffic(1), 600))
    assert f.state == "fitted", f.detail
    assert f.prefill == pytest.approx(0.01, rel=0.05) and f.decode == pytest.approx(0.12, rel=0.05)
    assert 0 < f.prefill_se < 0.002 and 0 < f.decode_se < 0.01
    assert f.r_squared > 0.95 and f.windows == 60


def test_95_percent_intervals_cover_the_truth_in_at_least_18_of_20_seeds():
    hits = {"prefill": 0, "decode": 0}
    for seed in range(20):
        f = fit(windows_of(traffic(seed, a=0.015, b=0.2), 600))
        assert f.state == "fitted", (seed, f.detail)
        hits["prefill"] += abs(f.prefill - 0.015) <= 1.96 * f.prefill_se
        hits["decode"] += abs(f.decode - 0.2) <= 1.96 * f.decode_se
    assert hits["prefill"] >= 18 and hits["decode"] >= 18, hits


def test_the_intervals_are_calibrated_over_200_seeds():
    """Neither too narrow (an interval that lies) nor much too wide (one that says nothing): over
    200 seeds, ±1.96 stderr covers the truth 91–99 % of the time (95 % expected)."""
    hits = {"prefill": 0, "decode": 0}
    for seed in range(1000, 1200):
        f = fit(windows_of(traffic(seed, a=0.015, b=0.2), 600))
        hits["prefill"] += abs(f.prefill - 0.015) <= 1.96 * f.prefill_se
        hits["decode"] += abs(f.decode - 0.2) <= 1.96 * f.decode_se
    assert all(182 <= v <= 198 for v in hits.values()), hits


def test_an_idle_baseline_off_by_20_w_lands_in_the_fixed_term_not_the_token_costs():
    f = fit(windows_of(traffic(2), 600, idle_error_w=20.0))
    assert f.state == "fitted"
    assert f.fixed_w == pytest.approx(20.0, abs=4.0)
    assert f.prefill == pytest.approx(0.01, rel=0.05) and f.decode == pytest.approx(0.12, rel=0.05)


def test_a_fixed_mix_is_refused_as_collinear():
    f = fit(windows_of(traffic(3, generation_per_prompt=0.2), 600))
    assert f.state == "collinear" and not f.published and f.prefill is None and f.decode is None
    assert "cannot be told apart" in f.detail


def test_too_few_busy_windows_publish_nothing():
    f = fit(windows_of(traffic(4), 100))  # 10 windows
    assert f.state == "too_few_windows" and not f.published and "12 needed" in f.detail
    quiet = fit([Window(15, 900, 0, 0)] * 30)
    assert quiet.state == "too_few_windows"


def test_an_engine_without_prompt_or_generation_tokens_says_so():
    ws = windows_of(traffic(5), 600)
    assert fit([Window(w.dt_s, w.joules, 0, w.generation) for w in ws]).state == "no_prompt_tokens"
    assert fit([Window(w.dt_s, w.joules, w.prompt, 0) for w in ws]).state == "no_generation_tokens"


def test_outlier_windows_cost_the_robust_fit_little():
    ws = windows_of(traffic(6), 900)
    spoiled = [Window(w.dt_s, w.joules * (8 if i % 15 == 3 else 1), w.prompt, w.generation) for i, w in enumerate(ws)]
    f = fit(spoiled)
    assert f.prefill == pytest.approx(0.01, rel=0.08) and f.decode == pytest.approx(0.12, rel=0.05)


def test_a_term_with_no_cost_is_left_out_alone():
    f = fit(windows_of(traffic(7, a=0.0), 600))
    assert f.state == "prefill_unidentified" and f.prefill is None and f.decode == pytest.approx(0.12, rel=0.05)


def test_energy_that_falls_with_tokens_is_refused_as_a_negative_term():
    ws = windows_of(traffic(8), 600)
    f = fit([Window(w.dt_s, max(0.0, 20000 - 3 * w.prompt + 0.12 * w.generation), w.prompt, w.generation)
             for w in ws])
    assert f.state == "negative_term" and not f.published and "prefill" in f.detail


def test_garbage_windows_are_ignored_never_raise():
    good = windows_of(traffic(9), 600)
    bad = [Window(math.nan, 1, 1, 1), Window(15, math.inf, 1, 1), Window(0, 5, 1, 1), Window(15, 5, -4, 1)]
    f = fit(good + bad)
    assert f.state == "fitted" and f.windows == len(good)
    assert fit([]).state == "too_few_windows"


def test_a_window_no_traffic_could_make_is_left_out():
    """A server whose counters go wild (or a hostile neighbour's fake one) reports 10²⁰⁰ tokens:
    that window is left out, and the hour's fit stands."""
    good = windows_of(traffic(11), 600)
    f = fit(good + [Window(10, 5, 1e200, 3), Window(10, 1e300, 10, 10), Window(10, 1e300, 1e300, 1e300)])
    assert f.state == "fitted" and f.windows == len(good)
    assert f.decode == pytest.approx(0.12, rel=0.05)


def test_the_t_quantile_is_students():
    for df, exact in ((3, 3.182), (5, 2.571), (10, 2.228), (30, 2.042), (1000, 1.962)):
        assert energy_model.t_quantile_975(df) == pytest.approx(exact, abs=0.03)


# --- the schedule --------------------------------------------------------------------------

def test_the_schedule_is_exact_and_the_same_in_every_process():
    tr1, tr2 = traffic(10), traffic(10)
    P, D, E = tr1.totals(95.0)
    assert tr2.totals(95.0) == (P, D, E)  # rebuilt from the seed alone
    # piecewise constant: the integral of the rates over the segments
    segs = [tr1.segment(i) for i in range(10)]
    assert P == pytest.approx(sum(s[0] for s in segs[:9]) * 10 + segs[9][0] * 5)
    assert E == pytest.approx(sum(s[2] for s in segs[:9]) * 10 + segs[9][2] * 5)
    c = tr1.counters(95.0)
    assert c["prompt_tokens"] == math.floor(P) and c["requests"] == math.floor(D / 200)


@pytest.mark.parametrize("spec, words", [
    ({"decode_j_per_token": 0.1}, "prefill_j_per_token"),
    ({"prefill_j_per_token": 0.1, "decode_j_per_token": -1}, "decode_j_per_token"),
    ({"prefill_j_per_token": 0.1, "decode_j_per_token": 1, "prompt_tokens_per_s": [5, 1]}, "low <= high"),
    ({"prefill_j_per_token": 0.1, "decode_j_per_token": 1, "speed": 3}, "unknown keys"),
    ("fast", "expected a mapping"),
])
def test_a_bad_traffic_block_is_named(spec, words):
    with pytest.raises(TrafficError, match=words):
        Traffic.parse(spec, "gpus[0].traffic")


# --- the stage: windows cut at engine readings -------------------------------------------------

W = Workload("ml", "chat", "m")
KEY = ("ml", "chat", "m")


def run_stage(tr: Traffic, seconds: float, *, sample_s: float = 1.0, scrape_s: float = 5.0, lag_s: float = 0.3,
              restart_at: float | None = None, rng: random.Random | None = None) -> MarginalStage:
    """Drive the stage as the sampler does: a sample every ``sample_s`` books the active energy of
    its interval; an engine reading every ``scrape_s`` (arriving ``lag_s`` later, jittered)
    carries the counters' increments since the previous one."""
    rng = rng or random.Random(0)
    st = MarginalStage(window_s=10.0, horizon_s=3600.0, min_windows=12)
    last_counts: dict | None = None
    pending: list[Increment] = []
    next_scrape, t_prev = 0.0, 0.0
    t = sample_s
    while t <= seconds:
        while next_scrape <= t:
            at = next_scrape + lag_s * rng.random()
            counts = tr.counters(at)
            reset = restart_at is not None and last_counts is not None and at >= restart_at > last_at
            if last_counts is not None:
                base = {k: 0.0 for k in counts} if reset else last_counts
                pending.append(Increment(W, "m", {"prompt_tokens": counts["prompt_tokens"] - base["prompt_tokens"],
                                                  "generation_tokens": counts["generation_tokens"]
                                                  - base["generation_tokens"]}, at, reset))
            last_counts, last_at = counts, at
            next_scrape += scrape_s
        energy = tr.totals(t)[2] - tr.totals(t_prev)[2]
        st.observe(t, {KEY: energy, ("ml", "other", "x"): 5.0}, [i for i in pending if i.at <= t])
        pending = [i for i in pending if i.at > t]
        t_prev, t = t, t + sample_s
    return st


def test_the_stage_recovers_the_costs_from_late_jittered_readings():
    st = run_stage(traffic(20), 900)
    f = st.tracks[KEY].fit
    assert f.state == "fitted", f.detail
    assert f.prefill == pytest.approx(0.01, rel=0.05) and f.decode == pytest.approx(0.12, rel=0.05)
    assert ("ml", "other", "x") not in st.tracks  # no engine readings: not tracked


def test_a_restart_drops_one_window_and_nothing_else():
    st = run_stage(traffic(21), 900, restart_at=400.0)
    f = st.tracks[KEY].fit
    assert f.state == "fitted" and f.decode == pytest.approx(0.12, rel=0.05)
    whole = run_stage(traffic(21), 900).tracks[KEY].fit
    assert whole.windows - 2 <= f.windows <= whole.windows
    # the reading after the restart (every token since the engine's 0) is in no window
    assert max(w.prompt for _, w in st.tracks[KEY].windows) < 6000 * 25


def test_the_stage_exports_only_what_is_identified():
    st = run_stage(traffic(22), 900)
    snap = Snapshot()
    st.contribute(snap)
    v = snap.values
    assert set(v["endpoint_marginal_joules_per_token"]) == {KEY + ("prefill",), KEY + ("decode",)}
    assert v["endpoint_energy_model_state"] == {KEY + ("fitted",): 1.0}
    col = run_stage(traffic(23, generation_per_prompt=0.25), 900)
    snap = Snapshot()
    col.contribute(snap)
    assert "endpoint_marginal_joules_per_token" not in snap.values
    assert snap.values["endpoint_energy_model_state"] == {KEY + ("collinear",): 1.0}


def test_endpoints_tracked_are_bounded_and_forgotten_after_the_horizon():
    from exporter.pipeline import marginal

    st = MarginalStage(horizon_s=1000.0)
    for i in range(marginal.MAX_ENDPOINTS + 50):
        st.observe(float(i), {}, [Increment(Workload("ns", f"e{i}", "m"), "m", {}, float(i))])
    assert len(st.tracks) == marginal.MAX_ENDPOINTS
    st.observe(100_000.0, {}, [])
    assert not st.tracks


def test_fits_are_rationed_per_sample_so_many_endpoints_cannot_stall_the_loop(monkeypatch):
    """200 endpoints all due at once: at most FITS_PER_SAMPLE fits a sample, each in its turn."""
    from exporter.pipeline import marginal

    calls: list[int] = []
    real = energy_model.fit
    monkeypatch.setattr(marginal.energy_model, "fit", lambda ws, **kw: calls.append(len(ws)) or real(ws, **kw))
    st = MarginalStage(window_s=1.0, min_windows=12)
    eps = [Workload("ns", f"e{i}", "m") for i in range(200)]
    per_sample = []
    for t in range(1, 40):
        before = len(calls)
        st.observe(float(t), {("ns", w.endpoint, "m"): 100.0 for w in eps},
                   [Increment(w, "m", {"prompt_tokens": 10.0 * t, "generation_tokens": 3.0}, float(t) - 0.5) for w in eps])
        per_sample.append(len(calls) - before)
    assert max(per_sample) == marginal.FITS_PER_SAMPLE
    assert len({k for k, tr in st.tracks.items() if tr.fit is not None}) == sum(per_sample)  # each in turn


def test_a_failing_fit_costs_its_endpoint_only(monkeypatch):
    from exporter.pipeline import marginal

    def boom(ws, **kw):
        raise ValueError("-inf + inf in fsum")

    monkeypatch.setattr(marginal.energy_model, "fit", boom)
    st = run_stage(traffic(24), 300)  # observe() never raises
    assert st.tracks[KEY].fit.state == "fit_failed" and not st.tracks[KEY].fit.published
