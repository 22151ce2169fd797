"""The report's data model, pure: per-group figures folded from query results, the ratios
(grams per request, per 1k generation tokens, idle share, training share), the totals, and the
factors the figures were computed with."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from .period import Period

from . import ALLOWED_BY, DEFAULT_BY, GROUP_LABELS, SOURCES  # noqa: F401 - the options, defined in the package

# series of energy no endpoint can be charged with (README, "How energy is attributed")
CATCH_ALL = ("unallocated", "system", "overflow")


def ratio(num: float, den: float, scale: float = 1.0) -> float | None:
    """``scale × num / den``; None (no figure, never Inf or NaN) when the denominator is 0."""
    return scale * num / den if den > 0 else None


@dataclass
class Figures:
    """What one group (or the total) used and emitted in the period."""
    energy_joules: float = 0.0
    energy_idle_joules: float = 0.0
    co2e_operational_grams: float = 0.0
    co2e_embodied_grams: float = 0.0
    requests: float = 0.0
    prompt_tokens: float = 0.0
    generation_tokens: float = 0.0

    def add(self, other: "Figures") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def co2e_grams(self) -> float:
        return self.co2e_operational_grams + self.co2e_embodied_grams

    @property
    def idle_share(self) -> float | None:
        return ratio(self.energy_idle_joules, self.energy_joules)

    @property
    def grams_per_request(self) -> float | None:
        return ratio(self.co2e_grams, self.requests)

    @property
    def grams_per_1k_generation_tokens(self) -> float | None:
        return ratio(self.co2e_grams, self.generation_tokens, 1000.0)

    @property
    def joules_per_request(self) -> float | None:
        return ratio(self.energy_joules, self.requests)

    @property
    def operational_grams_per_kwh(self) -> float | None:
        """The period's effective intensity: operational CO2e over energy (PUE included)."""
        return ratio(self.co2e_operational_grams, self.energy_joules, 3.6e6)

    def book(self, what: str, split: str, value: float) -> None:
        """Add one query result: ``what`` is energy/co2e/requests/tokens, ``split`` the value of
        its mode/scope/kind label ("" for requests)."""
        if what not in BOOKING:
            raise ValueError(f"unknown figure {what!r}")
        for name in BOOKING[what].get(split, BOOKING[what].get(None, ())):
            setattr(self, name, getattr(self, name) + value)


# figure → split label value (None: any other) → the Figures fields a result adds to
BOOKING: dict[str, dict[str | None, tuple[str, ...]]] = {
    "energy": {"idle": ("energy_joules", "energy_idle_joules"), None: ("energy_joules",)},
    "co2e": {"operational": ("co2e_operational_grams",), "embodied": ("co2e_embodied_grams",)},
    "requests": {None: ("requests",)},
    "tokens": {"prompt": ("prompt_tokens",), "generation": ("generation_tokens",)},
}

FIGURE_KEYS = ("energy_joules", "energy_idle_joules", "idle_share", "co2e_grams", "co2e_operational_grams",
               "co2e_embodied_grams", "requests", "prompt_tokens", "generation_tokens", "grams_per_request",
               "grams_per_1k_generation_tokens", "joules_per_request", "operational_grams_per_kwh")


def figures_dict(f: Figures) -> dict[str, float | None]:
    return {k: getattr(f, k) for k in FIGURE_KEYS}


@dataclass
class Row:
    group: dict[str, str]  # the --by labels and their values ("" where a series lacks the label)
    figures: Figures = field(default_factory=Figures)
    training_co2e_grams: float | None = None  # the model's configured training footprint
    daily: list[tuple[float, float, float]] = field(default_factory=list)  # (day start, operational g, embodied g)

    @property
    def catch_all(self) -> bool:
        return self.group.get("endpoint") in CATCH_ALL

    @property
    def training_share(self) -> float | None:
        """The period's inference CO2e as a share of the model's training footprint."""
        return ratio(self.figures.co2e_grams, self.training_co2e_grams or 0.0)

    def as_dict(self) -> dict[str, object]:
        labels = {k: self.group.get(k) for k in ALLOWED_BY if k in self.group or k in GROUP_LABELS}
        return {**labels, "catch_all": self.catch_all, **figures_dict(self.figures),
                "training_co2e_grams": self.training_co2e_grams, "training_share": self.training_share}


@dataclass
class Factors:
    """The factors in force over the period, as the exporters exposed them."""
    carbon: list[dict[str, str]] = field(default_factory=list)  # wattprint_carbon_info label sets
    pue: list[tuple[dict[str, str], float, float]] = field(default_factory=list)  # (labels, min, max)
    embodied: list[tuple[dict[str, str], float, float]] = field(default_factory=list)  # g per GPU-second


@dataclass
class Statement:
    url: str
    period: Period
    by: tuple[str, ...]
    source: str  # "rollups" | "raw"
    rows: list[Row]
    factors: Factors
    exclude_catch_all: bool = False
    notes: list[str] = field(default_factory=list)
    source_detail: str = ""  # why that source, in words

    @property
    def totals(self) -> Figures:
        t = Figures()
        for r in self.rows:
            t.add(r.figures)
        return t


def fold(by: tuple[str, ...], results: dict[tuple[str, str], list[tuple[dict[str, str], float]]],
         training: dict[str, float]) -> list[Row]:
    """Rows from query results: ``results[(what, split_label)]`` = [(labels, value)]; every label
    set seen in any result is a row. Sorted by CO2e, largest first, catch-alls after the rest."""
    rows: dict[tuple[str, ...], Row] = {}
    for (what, split_label), samples in results.items():
        for labels, value in samples:
            key = tuple(labels.get(k, "") for k in by)
            row = rows.setdefault(key, Row(dict(zip(by, key))))
            row.figures.book(what, labels.get(split_label, "") if split_label else "", value)
    for row in rows.values():
        if "model" in row.group and row.group["model"] in training:
            row.training_co2e_grams = training[row.group["model"]]
    return sorted(rows.values(), key=lambda r: (r.catch_all, -r.figures.co2e_grams, tuple(r.group.values())))
