"""A day of varying load and grid intensity: the daemon's CO2e counter matches ∫P(t)·I(t)dt
within 0.5 %, where the usual PromQL shortcuts do not (figures: benchmarks/carbon_integration.py)."""

import sys

import pytest

from support import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import carbon_integration  # noqa: E402


def test_daily_integration_is_exact_and_shortcuts_are_not():
    r = carbon_integration.run(60.0)
    assert abs(r["daemon_err_pct"]) < 0.5, r
    assert abs(r["naive_err_pct"]) > 2 and abs(r["daily_avg_err_pct"]) > 2, r
    assert r["energy_kwh"] == pytest.approx(7.10, abs=0.05)
