"""The bundled annual grid-intensity dataset: cloud regions and countries, in gCO2e/kWh.

``data/regions.csv`` is built by ``scripts/build_regions.py`` from Google region-carbon-info,
Cloud Carbon Footprint and Ember/OWID (via CodeCarbon); attributions are in NOTICE and the
upstream licences in ``data/licenses/``. Keys are ``aws:us-east-1``, ``gcp:europe-north1``,
``azure:westeurope`` and ``country:FRA`` (ISO 3166-1 alpha-3).
"""

from __future__ import annotations

import csv
import difflib
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from functools import cache
from importlib.resources import files

PROVIDERS = ("aws", "gcp", "azure", "country")
SOURCES_LINE = ("Sources: Google region-carbon-info (Apache-2.0); Cloud Carbon Footprint "
                "(Apache-2.0; EPA eGRID, EEA, EMA); Ember/OWID via CodeCarbon (CC-BY-4.0, MIT). "
                "Attributions: NOTICE.")


@dataclass(frozen=True)
class RegionIntensity:
    key: str
    provider: str
    region: str
    location: str
    grams_per_kwh: float
    year: int | None  # None: the upstream source states no vintage (CCF's EPA/EEA/EMA rows)
    source: str
    licence: str


def _read_csv(name: str) -> list[dict[str, str]]:
    text = files("exporter.carbon").joinpath("data", name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


@cache
def load() -> dict[str, RegionIntensity]:
    """Every row of the packaged dataset, by key."""
    out = {}
    for r in _read_csv("regions.csv"):
        out[r["key"]] = RegionIntensity(
            key=r["key"], provider=r["provider"], region=r["region"], location=r["location"],
            grams_per_kwh=float(r["grams_per_kwh"]), year=int(r["year"]) if r["year"] else None,
            source=r["source"], licence=r["licence"])
    return out


@cache
def _alpha3() -> dict[str, str]:
    return {r["alpha2"]: r["alpha3"] for r in _read_csv("iso3166.csv")}


def _norm(s: str) -> str:
    return s.strip().lower().replace(" ", "")


def lookup(region: str, table: Mapping[str, RegionIntensity] | None = None) -> RegionIntensity:
    """Resolve ``aws:us-east-1``, a bare region name (``us-east-1``, ``europe-north1``,
    ``westeurope`` or ``West Europe``) when only one provider has it, or a country as
    ``country:FRA``, ``FRA``, ``FR`` or ``France``. Case-insensitive.

    Raises KeyError naming the candidates when the name is ambiguous or unknown.
    """
    table = load() if table is None else table
    want = _norm(region)
    if ":" in want:
        provider, _, name = want.partition(":")
        if provider == "country" and len(name) == 2:
            name = _alpha3().get(name.upper(), name).lower()
        candidates = [r for r in table.values() if r.provider == provider and _norm(r.region) == name]
    else:
        candidates = [r for r in table.values() if _norm(r.region) == want]
        if not candidates and len(want) == 2:
            candidates = [r for r in table.values()
                          if r.provider == "country" and r.region == _alpha3().get(want.upper())]
        if not candidates:
            candidates = [r for r in table.values()
                          if r.provider == "country" and _norm(r.location) == want]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        keys = ", ".join(sorted(r.key for r in candidates))
        raise KeyError(f"region {region!r} is ambiguous: use one of {keys}")
    names = {n.lower(): n for r in table.values() for n in (r.key, r.region)}
    close = [names[n] for n in difflib.get_close_matches(want, sorted(names), n=5, cutoff=0.6)]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"unknown region {region!r}{hint} (`wattprint regions` lists them all)")


def search(text: str = "", provider: str | None = None) -> list[RegionIntensity]:
    """Rows whose key, region or location contains ``text`` (case-insensitive), optionally of
    one provider, cleanest first."""
    needle = text.strip().lower()
    rows = [r for r in load().values()
            if (provider is None or r.provider == provider)
            and any(needle in s.lower() for s in (r.key, r.region, r.location))]
    return sorted(rows, key=lambda r: (r.grams_per_kwh, r.key))


def _table(rows: list[RegionIntensity]) -> str:
    head = ("KEY", "LOCATION", "gCO2e/kWh", "YEAR", "SOURCE")
    body = [(r.key, r.location, f"{r.grams_per_kwh:.1f}", str(r.year or "n/a"), r.source) for r in rows]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    right = {2, 3}  # numbers align right

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    footer = [f"{len(rows)} regions; annual location-based averages; YEAR n/a: vintage not stated "
              "upstream.", SOURCES_LINE]
    return "\n".join([line(head), *map(line, body), "", *footer]) + "\n"


def _run(args) -> int:
    rows = search(args.filter, args.provider)
    if not rows:
        print(f"no region matches {args.filter!r}", file=sys.stderr)
        return 1
    out = sys.stdout
    if args.output == "json":
        json.dump([asdict(r) for r in rows], out, indent=2)
        out.write("\n")
    elif args.output == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow([f.name for f in fields(RegionIntensity)])
        w.writerows([r.key, r.provider, r.region, r.location, r.grams_per_kwh,
                     "" if r.year is None else r.year, r.source, r.licence] for r in rows)
    else:
        out.write(_table(rows))
    return 0


def add_cli(subparsers) -> None:
    """Add ``wattprint regions [FILTER] [--provider P] [--output table|json|csv]``."""
    p = subparsers.add_parser(
        "regions", help="list the bundled grid intensities (gCO2e/kWh) by cloud region and country",
        description="List the bundled annual grid intensities, cleanest first. FILTER matches "
                    "key, region or location, case-insensitively.")
    p.add_argument("filter", nargs="?", default="", metavar="FILTER",
                   help="substring, e.g. europe, us-east, FRA")
    p.add_argument("--provider", choices=PROVIDERS, help="only this provider's rows")
    p.add_argument("--output", choices=("table", "json", "csv"), default="table")
    p.set_defaults(func=_run)
