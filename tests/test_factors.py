"""Documented carbon factors and the operational/embodied arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.carbon.factors import FACTORS, embodied_grams, operational_grams, render_markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "carbon-factors.md"


def test_every_factor_is_documented():
    for name, f in FACTORS.items():
        assert f.name == name
        assert f.value > 0 and f.unit and f.source and f.range_note
    assert "ASSUMED" in FACTORS["pue.on_prem"].source


def test_defaults_match_the_reference_notes():
    assert FACTORS["pue.aws"].value == 1.135
    assert FACTORS["pue.gcp"].value == 1.1
    assert FACTORS["pue.azure"].value == 1.185
    assert FACTORS["embodied.gpu_kg"].value == 150
    assert FACTORS["embodied.server_kg"].value == 2500
    assert FACTORS["embodied.gpus_per_server"].value == 8
    assert FACTORS["embodied.lifetime_years"].value == 4


def test_operational_grams_hand_computed():
    assert operational_grams(3.6e6, 400.0, 1.0) == pytest.approx(400.0)  # 1 kWh
    assert operational_grams(1.8e6, 400.0, 1.1) == pytest.approx(220.0)  # 0.5 kWh x 1.1 x 400
    # an H100 at 700 W for one hour on a 400 g/kWh grid: 280 g (reference section 4)
    assert operational_grams(700 * 3600, 400.0, 1.0) == pytest.approx(280.0)
    assert operational_grams(0.0, 400.0, 1.5) == 0.0


def test_operational_grams_rejects_impossible_inputs():
    with pytest.raises(ValueError):
        operational_grams(1.0, 400.0, 0.9)
    with pytest.raises(ValueError):
        operational_grams(-1.0, 400.0, 1.0)


def test_embodied_grams_hand_computed():
    # (150 + 2500/8) kg = 462.5 kg per GPU over 4 x 8760 h = 13.199 g per GPU-hour
    assert embodied_grams(3600) == pytest.approx(462_500 / 35_040)
    # a whole lifetime carries the whole share
    assert embodied_grams(4 * 8760 * 3600) == pytest.approx(462_500)
    # (100 + 800/4) kg over 2 years: 300,000 g / 17,520 h
    assert embodied_grams(3600, per_gpu_kg=100, server_kg=800, gpus_per_server=4,
                          lifetime_years=2) == pytest.approx(300_000 / 17_520)
    assert embodied_grams(0) == 0.0


def test_embodied_grams_rejects_impossible_inputs():
    with pytest.raises(ValueError):
        embodied_grams(-1)
    with pytest.raises(ValueError):
        embodied_grams(3600, gpus_per_server=0)
    with pytest.raises(ValueError):
        embodied_grams(3600, lifetime_years=0)


def test_committed_doc_is_current():
    assert DOC.read_text() == render_markdown(), \
        "docs/carbon-factors.md is stale: python -m exporter.carbon.factors > docs/carbon-factors.md"
