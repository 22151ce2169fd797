"""What every engine reader shares: the result types and one table-driven reader.

An engine module only states where its counters live (a ``TableReader``); parsing is done here,
once, with ``prometheus_client.parser`` (a real exposition-format parser).

How a scrape is read, and why:

- **Only the wanted families are parsed.** Lines are first sorted by metric name (a C-speed
  ``str.startswith``), and only the samples of the few families a reader wants go to the parser.
  A 50,000-bucket latency histogram costs one string test per line, and a malformed line in a
  family we do not read cannot spoil the families we do.
- **``# TYPE`` is trusted over the name.** A wanted counter declared ``gauge`` is not read. A
  family without a ``# TYPE`` line is read by its exact sample name (TGI's histograms are
  ``_sum`` samples, its counters lack ``_total``; both are matched by the name as exposed).
- **A family with any bad line is dropped whole** (its counter becomes None and is named in
  ``Reading.dropped``): a parse error, a duplicate series, a negative, NaN or infinite value,
  conflicting ``# TYPE`` lines. Half a counter family would be an undercount, which the
  normaliser would take for an engine restart and then count again in full; None just means
  "no news this scrape", and the cumulative counter catches up at the next good scrape.
- **Truncated text is refused** (``EngineParseError(kind="truncated")``): the text format ends
  every line, the last included, with a line feed, so a body that does not end in ``\\n`` was
  cut off. The cut line may still parse (``27453`` cut to ``274``) as a smaller, wrong value;
  skipping the scrape loses nothing, because the counters are cumulative. A cut that falls
  exactly on a line boundary cannot be seen in the text format; families then missing read None.
- **Missing families read None, never 0**: an engine registers labelled counters lazily (TGI,
  TRT-LLM, SGLang on the first finished request), so absent means unknown. A family present with
  only excluded series (vLLM ``finished_reason="abort"`` only) reads 0.0 for that model.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.parser import text_string_to_metric_families

COUNTERS = ("requests", "prompt_tokens", "generation_tokens", "compute_seconds")
# a family with more sample lines is dropped unparsed ("too many series"): the parse of any body
# is bounded (a hostile server's 250,000 model names cost one line count, not a parse)
MAX_SERIES_PER_FAMILY = 5000

# finished_reason values that are not a successful request. vLLM: abort, error (stop, length and
# repetition count); TRT-LLM: timeout, not_finished (a disaggregated context-only phase);
# cancelled as spelled by TRT-LLM's enum. One set serves every engine that has the label.
UNSUCCESSFUL = frozenset({"abort", "error", "timeout", "cancelled", "not_finished"})


class EngineParseError(ValueError):
    """A scrape that yields no reading. ``kind``: ``format`` (not the exposition format: JSON,
    HTML), ``truncated`` (the last line has no line feed), ``missing`` (none of the engine's
    families), ``malformed`` (every family found was malformed)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class ModelCounters:
    """Cumulative values as the server reports them; None where it does not report one."""

    model: str  # served model name; "" when the server has no model label (the caller fills it)
    requests: float | None = None
    prompt_tokens: float | None = None
    generation_tokens: float | None = None
    compute_seconds: float | None = None  # Triton only: per-model compute time, for splitting

    def counters(self) -> dict[str, float]:
        """The counters reported, keyed by field name: the input of ``Normaliser.update``."""
        return {name: v for name in COUNTERS if (v := getattr(self, name)) is not None}


@dataclass(frozen=True)
class Reading:
    engine: str
    models: dict[str, ModelCounters]
    derived: tuple[str, ...]  # how each counter was obtained, for logs and docs
    metrics_path: str
    dropped: tuple[str, ...] = ()  # families left unread, with the reason


class Reader(Protocol):
    engine: str
    metrics_path: str

    def parse(self, text: str) -> Reading: ...


@dataclass(frozen=True)
class Family:
    """One metric family a counter can be read from, named as on its ``# TYPE`` line."""

    name: str
    types: tuple[str, ...] = ("counter",)
    suffix: str = ""  # the sample read: "_sum" of a histogram (or summary)
    exclude: tuple[str, frozenset[str]] | None = None  # (label, values) not counted
    only: tuple[str, frozenset[str]] | None = None  # (label, values): only these counted
    scale: float = 1.0  # unit conversion, e.g. µs → s
    plus: tuple[str, ...] = ()  # families added to this one where present (their sample names)

    @property
    def sample(self) -> str:
        return self.name + self.suffix

    def counts(self, labels: Mapping[str, str]) -> bool:
        if self.only is not None and labels.get(self.only[0]) not in self.only[1]:
            return False
        return self.exclude is None or labels.get(self.exclude[0]) not in self.exclude[1]

    def describe(self) -> str:
        text = f"sum of {self.sample}"
        if self.exclude:
            text += f" except {self.exclude[0]} in {'/'.join(sorted(self.exclude[1]))}"
        if self.only:
            text += f" where {self.only[0]} in {'/'.join(sorted(self.only[1]))}"
        if self.plus:
            text += f" + {' + '.join(self.plus)} where present"
        if self.suffix:
            text += f" ({'/'.join(self.types)} sum)"
        if self.scale != 1.0:
            text += f" × {self.scale:g}"
        return text


def histogram_sum(name: str) -> Family:
    # metrics-exporter-prometheus (TGI) renders a histogram as a summary unless buckets are set
    return Family(name, ("histogram", "summary"), "_sum")


def success(name: str) -> Family:
    return Family(name, exclude=("finished_reason", UNSUCCESSFUL))


def histogram_count(name: str) -> Family:
    return Family(name, ("histogram", "summary"), "_count")


_NAME = re.compile(r"[^\s{]+")
_UNTYPED = ("", "untyped", "unknown")
Series = list[tuple[dict[str, str], float]]


def _scan(text: str, wanted: list[Family]) -> tuple[dict[str, list[str]], dict[str, set[str]]]:
    """Sample lines and declared types of the wanted families, in one pass over the text."""
    by_sample = {f.sample: f.name for f in wanted}
    by_type_name = {f.name: f.name for f in wanted}
    for f in wanted:  # OpenMetrics declares a counter without its _total
        if "counter" in f.types:
            by_type_name.setdefault(f.name.removesuffix("_total"), f.name)
    prefixes = (*by_sample, "#")
    lines: dict[str, list[str]] = {}
    declared: dict[str, set[str]] = {}
    for raw in text.split("\n"):
        line = raw.strip()
        if not line.startswith(prefixes):
            continue
        if line[0] == "#":
            parts = line.split(None, 3)
            if len(parts) > 2 and parts[1] == "TYPE" and parts[2] in by_type_name:
                kind = parts[3].strip() if len(parts) > 3 else ""
                declared.setdefault(by_type_name[parts[2]], set()).add(kind)
        elif (name := by_sample.get(_NAME.match(line).group())) is not None:  # type: ignore
            lines.setdefault(name, []).append(line)
    return lines, declared


def _parse_family(family: Family, kind: str, lines: list[str]) -> tuple[Series | None, str]:
    """Parse one family's sample lines; (None, reason) when any of them is bad."""
    header = "" if kind in _UNTYPED else f"# TYPE {family.name} {kind}\n"
    try:
        parsed = list(text_string_to_metric_families(header + "\n".join(lines) + "\n"))
    except Exception as exc:  # a third-party parser on untrusted text: contain any failure
        return None, f"unparsable ({type(exc).__name__})"
    series: Series = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    for sample in (s for metric in parsed for s in metric.samples):
        value = float(sample.value)
        if not math.isfinite(value) or value < 0:
            return None, f"value {sample.value!r}"
        key = tuple(sorted(sample.labels.items()))
        if key in seen:
            return None, f"duplicate series {dict(key)}"
        seen.add(key)
        series.append((sample.labels, value))
    return series, ""


def _families(text: str, wanted: list[Family]) -> tuple[dict[str, Series | None], list[str]]:
    """name → its series (None: present but malformed); absent and wrong-typed families are
    left out. Also the reasons for what was left unread."""
    lines, declared = _scan(text, wanted)
    found: dict[str, Series | None] = {}
    dropped: list[str] = []
    for family in wanted:
        kinds = declared.get(family.name, set())
        if family.name in found or not (kinds or family.name in lines):
            continue
        if len(kinds) > 1:
            found[family.name] = None
            dropped.append(f"{family.name}: conflicting TYPE lines {sorted(kinds)}")
            continue
        kind = next(iter(kinds), "")
        if len(lines.get(family.name, ())) > MAX_SERIES_PER_FAMILY:
            found[family.name] = None
            dropped.append(f"{family.name}: too many series ({len(lines[family.name])} > {MAX_SERIES_PER_FAMILY})")
            continue
        if kind not in _UNTYPED and kind not in family.types:
            dropped.append(f"{family.name}: TYPE {kind}, not {'/'.join(family.types)}")
            continue
        series, reason = _parse_family(family, kind, lines.get(family.name, []))
        found[family.name] = series
        if series is None:
            dropped.append(f"{family.name}: {reason}")
    return found, dropped


def _not_exposition(text: str) -> bool:
    """HTML, or a JSON document (TRT-LLM's ``/metrics``, an error body)."""
    head = text.lstrip()[:1]
    if head == "<":
        return True
    if head in ("{", "["):
        try:
            json.loads(text)
        except (ValueError, RecursionError):
            return False
        return True
    return False


@dataclass(frozen=True)
class TableReader:
    """A reader described by a table: for each ModelCounters field, the families it may be read
    from, in order of preference (the first present one is used; a malformed one is not skipped
    over, so one counter never switches source between scrapes)."""

    engine: str
    metrics_path: str
    fields: Mapping[str, tuple[Family, ...]]
    model_labels: tuple[str, ...] = ()  # first label present names the model; none: model ""
    anonymous: frozenset[str] = frozenset()  # label values meaning "no name" (TRT-LLM's)
    composite: frozenset[str] = frozenset()  # models whose compute time repeats others' (Triton)
    # (marker model, internal models): where the marker is served beside a composite model, the
    # internal models are steps of the composite's requests, not models users call (Triton's
    # TensorRT-LLM repository: preprocessing → tensorrt_llm → postprocessing, run once per
    # streamed chunk). Their requests are not counted, none of the energy goes to them, and their
    # tokens are the first composite's (by name).
    internal: tuple[str, frozenset[str]] | None = None
    notes: tuple[str, ...] = ()
    _wanted: list[Family] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        wanted = [f for alts in self.fields.values() for f in alts]
        wanted += [Family(extra) for f in list(wanted) for extra in f.plus]  # counters added in
        object.__setattr__(self, "_wanted", wanted)

    def _model(self, labels: Mapping[str, str]) -> str:
        name = next((labels[k] for k in self.model_labels if k in labels), "")
        return "" if name in self.anonymous else name

    def _per_model(self, family: Family, series: Series) -> dict[str, float]:
        per_model: dict[str, float] = {}
        for labels, value in series:
            model = self._model(labels)
            counted = value * family.scale if family.counts(labels) else 0.0
            per_model[model] = per_model.get(model, 0.0) + counted
        return per_model

    def parse(self, text: str) -> Reading:
        if not isinstance(text, str):
            raise EngineParseError("format", f"expected text, got {type(text).__name__}")
        if _not_exposition(text):
            raise EngineParseError("format", f"not the text format: {text.lstrip()[:40]!r}")
        if text and not text.endswith("\n"):
            raise EngineParseError("truncated", "the last line has no line feed")
        found, dropped = _families(text, self._wanted)
        values: dict[str, dict[str, float]] = {}  # counter → model → value
        derived: list[str] = []
        for name, alternatives in self.fields.items():
            family = next((f for f in alternatives if f.name in found), None)
            if family is not None and (series := found[family.name]) is not None:
                per_model = self._per_model(family, series)
                for extra in family.plus:  # a malformed one is no news: the field reads None
                    if extra in found:
                        more = found[extra]
                        if more is None:
                            per_model = None
                            break
                        for m, v in self._per_model(Family(extra), more).items():
                            per_model[m] = per_model.get(m, 0.0) + v
                if per_model is None:
                    continue
                values[name] = per_model
                derived.append(f"{name} = {family.describe()}")
        if not values:
            raise self._empty(found, dropped)
        if self.composite and "compute_seconds" in values:
            names = ", ".join(sorted(self.composite))
            derived.append(f"compute_seconds left None for composite models ({names}): "
                           "their time repeats their composing models' time")
        self._fold_internal(values, derived)
        models = {
            m: ModelCounters(m, **{
                name: None if name == "compute_seconds" and m in self.composite else v.get(m)
                for name, v in values.items()
            })
            for m in dict.fromkeys(m for per_model in values.values() for m in per_model)
        }
        return Reading(self.engine, models, (*derived, *self.notes), self.metrics_path,
                       tuple(dropped))

    def _fold_internal(self, values: dict[str, dict[str, float]], derived: list[str]) -> None:
        if self.internal is None:
            return
        marker, internal = self.internal
        served = {m for per_model in values.values() for m in per_model}
        composites = sorted(served & self.composite)
        if marker not in served or not composites:
            return
        steps = sorted(served & internal)
        # the tokens go to one composite, always the same (the first by name: "ensemble" before
        # "tensorrt_llm_bls"), so that its counter stays monotonic when both are served
        owner = composites[0]
        for name, per_model in values.items():
            moved = sum(per_model.pop(m, 0.0) for m in steps)
            if name in ("prompt_tokens", "generation_tokens") and moved:
                per_model[owner] = per_model.get(owner, 0.0) + moved
        derived.append(f"{', '.join(steps)}: steps of {', '.join(composites)} (not counted as "
                       f"models; their tokens are {owner}'s)")

    def _empty(self, found: Mapping[str, Series | None], dropped: list[str]) -> EngineParseError:
        if found:  # present, and every one malformed
            return EngineParseError("malformed", "; ".join(dropped))
        wanted = ", ".join(sorted({f.sample for f in self._wanted}))
        why = f" ({'; '.join(dropped)})" if dropped else ""
        return EngineParseError("missing", f"none of {wanted}{why}")
