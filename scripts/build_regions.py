#!/usr/bin/env python3
"""Regenerate exporter/carbon/data/regions.csv from the third-party data in shared/data.

    python scripts/build_regions.py [DATA_DIR] [--out PATH]

DATA_DIR defaults to ../shared/data (relative to the repository root). The CSV is committed:
the exporter and its tests never need DATA_DIR. Sources and their handling:

- GCP: Google region-carbon-info yearly files; each region takes its newest year.
- AWS, Azure: Cloud Carbon Footprint (CCF) grid factors, metric t CO2e/kWh (x 1e6 -> g/kWh).
  Rows whose Source is carbonfootprint.com (a copyrighted report) and rows whose value is
  malformed are replaced by the country's Ember/OWID figure; the `source` column says so.
  CCF's own GCP table is not used: Google's newer figures supersede it.
- country:ISO3: CodeCarbon's global_energy_mix.json (Our World in Data, from Ember).

Prints a summary: rows per provider, and every skipped or replaced row with the reason.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "exporter" / "carbon" / "data" / "regions.csv"

COLUMNS = ["key", "provider", "region", "location", "grams_per_kwh", "year", "source", "licence"]
PROVIDER_ORDER = {"aws": 0, "azure": 1, "gcp": 2, "country": 3}

GOOGLE = ("Google region-carbon-info", "Apache-2.0")
CCF_LICENCE = "Apache-2.0"
OWID = ("Ember/OWID via CodeCarbon", "CC-BY-4.0 (OWID/Ember); MIT (CodeCarbon)")
CCF_SOURCES = {"EPA": "EPA eGRID via CCF", "EEA": "EEA via CCF", "EMA Singapore": "EMA Singapore via CCF"}

# CCF names places by country (AWS) or city (Azure); these are the ones a fallback may need.
COUNTRY_ISO3 = {
    "South Africa": "ZAF", "Hong Kong": "HKG", "India": "IND", "Japan": "JPN",
    "South Korea": "KOR", "Australia": "AUS", "Canada": "CAN", "China": "CHN",
    "Bahrain": "BHR", "Brazil": "BRA", "Singapore": "SGP", "Germany": "DEU", "Ireland": "IRL",
    "England": "GBR", "Italy": "ITA", "France": "FRA", "Sweden": "SWE", "Netherlands": "NLD",
    "Pune": "IND", "Chennai": "IND", "Mumbai": "IND", "London": "GBR", "Cardiff": "GBR",
    "Paris": "FRA", "Helsinki": "FIN", "Frankfurt": "DEU", "Brussels": "BEL", "Gavle": "SWE",
}
_TONNES = re.compile(r"^0\.\d+$")  # a well-formed CCF factor, e.g. 0.000415755
MAX_PLAUSIBLE_G = 1500.0


def _row(provider, region, location, grams, year, source, licence):
    return {"key": f"{provider}:{region}", "provider": provider, "region": region,
            "location": location, "grams_per_kwh": round(float(grams), 3),
            "year": "" if year is None else int(year), "source": source, "licence": licence}


def countries(data: Path, notes: list[str]) -> dict[str, dict]:
    mix = json.loads((data / "codecarbon" / "global_energy_mix.json").read_text())
    out = {}
    for iso3, c in sorted(mix.items()):
        g = c.get("carbon_intensity")
        if not g or not 0 < g < MAX_PLAUSIBLE_G:
            notes.append(f"skip country:{iso3} ({c.get('country_name')}): implausible intensity {g!r}")
            continue
        out[iso3] = _row("country", iso3, c["country_name"], g, c["year"], *OWID)
    return out


def google(data: Path) -> list[dict]:
    newest: dict[str, tuple[int, dict]] = {}
    for f in sorted((data / "google-region-carbon-info").glob("[0-9][0-9][0-9][0-9].csv")):
        year = int(f.stem)
        with f.open(newline="") as fh:
            for r in csv.DictReader(fh):
                name = r["Google Cloud Region"].strip()
                if name not in newest or newest[name][0] < year:
                    newest[name] = (year, r)
    return [_row("gcp", name, r["Location"].strip(), r["Grid carbon intensity (gCO2eq / kWh)"],
                 year, *GOOGLE) for name, (year, r) in newest.items()]


def ccf(data: Path, provider: str, by_iso3: dict[str, dict], notes: list[str]) -> list[dict]:
    rows = []
    with (data / "ccf-coefficients" / f"grid-emissions-factors-{provider}.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            name = r["Region"].strip()
            region = name.lower().replace(" ", "") if provider == "azure" else name
            place = (r.get("Country") or r.get("Location") or "").strip()
            nerc = (r.get("NERC Region") or "").strip()
            location = f"{place} ({nerc})" if nerc else place
            raw, source = r["CO2e (metric ton/kWh)"].strip(), r["Source"].strip()
            problem = None
            if source == "carbonfootprint.com":
                problem = "source is carbonfootprint.com (copyrighted report)"
            elif not _TONNES.match(raw) or not 0 < float(raw) * 1e6 < MAX_PLAUSIBLE_G:
                problem = f"malformed value {raw!r}"
            elif source not in CCF_SOURCES:
                problem = f"unknown source {source!r}"
            if problem is None:
                rows.append(_row(provider, region, location, float(raw) * 1e6, None,
                                 CCF_SOURCES[source], CCF_LICENCE))
                continue
            iso3 = COUNTRY_ISO3.get(place)
            country = by_iso3.get(iso3)
            if country is None:
                notes.append(f"skip {provider}:{region}: {problem}; no Ember/OWID value for {place!r}")
                continue
            why = "carbonfootprint.com" if "carbonfootprint" in problem else "malformed"
            rows.append(_row(provider, region, location, country["grams_per_kwh"], country["year"],
                             f"{OWID[0]} for {iso3} (replaces CCF {why} value)", OWID[1]))
            notes.append(f"replace {provider}:{region}: {problem} -> country:{iso3} "
                         f"{country['grams_per_kwh']} g/kWh ({country['year']})")
    return rows


def build(data: Path) -> tuple[list[dict], list[str]]:
    """All rows, sorted by provider then key, and notes on skipped or replaced rows."""
    notes: list[str] = []
    by_iso3 = countries(data, notes)
    rows = [*ccf(data, "aws", by_iso3, notes), *ccf(data, "azure", by_iso3, notes),
            *google(data), *by_iso3.values()]
    notes.append("skip ccf-coefficients/grid-emissions-factors-gcp.csv: superseded by Google's "
                 "own newer yearly figures")
    keys = Counter(r["key"] for r in rows)
    dupes = [k for k, n in keys.items() if n > 1]
    if dupes:
        raise SystemExit(f"duplicate keys: {dupes}")
    rows.sort(key=lambda r: (PROVIDER_ORDER[r["provider"]], r["key"]))
    return rows, notes


def render(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA,
                    help=f"shared data folder (default {DEFAULT_DATA})")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output CSV (default {DEFAULT_OUT})")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"no data folder at {args.data}", file=sys.stderr)
        return 2
    rows, notes = build(args.data)
    args.out.write_text(render(rows))
    per = Counter(r["provider"] for r in rows)
    print(f"wrote {len(rows)} rows to {args.out}")
    for p in PROVIDER_ORDER:
        print(f"  {p:8} {per[p]:4}")
    print(f"{len(notes)} rows skipped or replaced:")
    for n in notes:
        print(f"  {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
