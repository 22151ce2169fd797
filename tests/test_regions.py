"""The bundled grid-intensity dataset, its lookups and the `regions` subcommand."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
from pathlib import Path

import pytest

from exporter.carbon import regions
from exporter.carbon.regions import RegionIntensity, load, lookup, search

REPO = Path(__file__).resolve().parent.parent
CSV_PATH = REPO / "exporter" / "carbon" / "data" / "regions.csv"
SHARED_DATA = REPO.parent / "shared" / "data"
COLUMNS = ["key", "provider", "region", "location", "grams_per_kwh", "year", "source", "licence"]


def raw_rows() -> list[dict[str, str]]:
    with CSV_PATH.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_csv_schema_and_plausible_values():
    rows = raw_rows()
    assert list(rows[0]) == COLUMNS
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)), "duplicate keys"
    for r in rows:
        assert r["key"] == f"{r['provider']}:{r['region']}"
        assert r["provider"] in regions.PROVIDERS
        assert r["location"] and r["source"] and r["licence"], r
        assert 0 < float(r["grams_per_kwh"]) < 1500, r
        if r["year"]:
            assert 2000 <= int(r["year"]) <= 2030, r
        else:  # only CCF's EPA/EEA/EMA figures come without a stated vintage
            assert r["source"].endswith("via CCF"), r


def test_every_provider_is_present_and_countries_are_iso3():
    by_provider = {p: [r for r in load().values() if r.provider == p] for p in regions.PROVIDERS}
    assert all(by_provider.values())
    assert all(len(r.region) == 3 and r.region.isupper() for r in by_provider["country"])


def test_no_carbonfootprint_com_figures_are_shipped():
    for r in load().values():
        if "carbonfootprint" in r.source:
            assert r.source.startswith("Ember/OWID via CodeCarbon") and "replaces" in r.source


def test_load_is_cached_and_typed():
    table = load()
    assert load() is table
    fra = table["country:FRA"]
    assert isinstance(fra, RegionIntensity)
    assert isinstance(fra.grams_per_kwh, float) and isinstance(fra.year, int)


@pytest.mark.parametrize("name, key", [
    ("aws:us-east-1", "aws:us-east-1"),
    ("us-east-1", "aws:us-east-1"),
    ("  US-EAST-1 ", "aws:us-east-1"),
    ("gcp:europe-north1", "gcp:europe-north1"),
    ("europe-north1", "gcp:europe-north1"),
    ("us-east1", "gcp:us-east1"),
    ("azure:westeurope", "azure:westeurope"),
    ("westeurope", "azure:westeurope"),
    ("West Europe", "azure:westeurope"),
    ("country:FRA", "country:FRA"),
    ("country:fr", "country:FRA"),
    ("FRA", "country:FRA"),
    ("FR", "country:FRA"),
    ("fr", "country:FRA"),
    ("France", "country:FRA"),
    ("GB", "country:GBR"),
])
def test_lookup_accepts_every_form(name, key):
    assert lookup(name).key == key


def _row(key: str, grams: float = 100.0) -> RegionIntensity:
    provider, region = key.split(":")
    return RegionIntensity(key, provider, region, "Somewhere", grams, 2024, "test", "CC0")


def test_lookup_ambiguous_bare_name_lists_candidates():
    table = {k: _row(k) for k in ("aws:eu-1", "gcp:eu-1", "gcp:us-1")}
    with pytest.raises(KeyError) as e:
        lookup("eu-1", table)
    assert "ambiguous" in str(e.value) and "aws:eu-1" in str(e.value) and "gcp:eu-1" in str(e.value)
    assert lookup("gcp:eu-1", table).key == "gcp:eu-1"
    assert lookup("us-1", table).key == "gcp:us-1"


def test_lookup_unknown_suggests_close_matches():
    with pytest.raises(KeyError) as e:
        lookup("us-eats-1")
    assert "us-east-1" in str(e.value)
    with pytest.raises(KeyError):
        lookup("aws:europe-north1")  # a GCP name under the wrong provider
    with pytest.raises(KeyError):
        lookup("ZZ")


def test_search_filters_and_sorts_by_intensity():
    europe = search("europe")
    assert europe and all("europe" in (r.key + r.location).lower() for r in europe)
    assert [r.grams_per_kwh for r in europe] == sorted(r.grams_per_kwh for r in europe)
    gcp = search(provider="gcp")
    assert gcp and {r.provider for r in gcp} == {"gcp"}
    assert len(search()) == len(load())
    assert search("no-such-place") == []


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="wattprint")
    regions.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["regions", *argv])
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_table_is_aligned_sorted_and_cites_sources(capsys):
    code, out, _ = run_cli(capsys, "--provider", "gcp")
    assert code == 0
    lines = out.splitlines()
    head, body = lines[0], lines[1:lines.index("")]
    assert head.split()[:3] == ["KEY", "LOCATION", "gCO2e/kWh"]
    assert len(body) == len(search(provider="gcp"))
    column_end = head.index("gCO2e/kWh") + len("gCO2e/kWh")
    values = [float(line[:column_end].split()[-1]) for line in body]
    assert values == sorted(values)
    assert all(line.startswith("gcp:") for line in body)
    footer = "\n".join(lines[lines.index("") + 1:])
    assert "NOTICE" in footer and "Google region-carbon-info" in footer and "CC-BY-4.0" in footer


def test_cli_json(capsys):
    code, out, _ = run_cli(capsys, "FRA", "--output", "json")
    assert code == 0
    data = json.loads(out)
    fra = next(d for d in data if d["key"] == "country:FRA")
    assert fra["year"] == load()["country:FRA"].year
    assert set(fra) == set(COLUMNS)


def test_cli_csv_round_trips(capsys):
    code, out, _ = run_cli(capsys, "us-", "--provider", "aws", "--output", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == COLUMNS
    assert {r["key"] for r in rows} >= {"aws:us-east-1", "aws:us-west-2"}
    assert all(r["provider"] == "aws" for r in rows)
    committed = {r["key"]: r for r in raw_rows()}
    for r in rows:
        assert float(r["grams_per_kwh"]) == float(committed[r["key"]]["grams_per_kwh"])


def test_cli_no_match_exits_nonzero(capsys):
    code, out, err = run_cli(capsys, "atlantis")
    assert code == 1 and out == "" and "atlantis" in err


@pytest.mark.skipif(not SHARED_DATA.is_dir(),
                    reason=f"{SHARED_DATA} absent: cannot rebuild the committed regions.csv")
def test_committed_csv_matches_build_script():
    spec = importlib.util.spec_from_file_location("build_regions", REPO / "scripts" / "build_regions.py")
    build_regions = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_regions)
    rows, notes = build_regions.build(SHARED_DATA)
    assert build_regions.render(rows) == CSV_PATH.read_text(), \
        "regions.csv is stale: run scripts/build_regions.py"
    assert any("carbonfootprint.com" in n for n in notes)
