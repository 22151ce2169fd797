"""The direct text renderer against the reference: prometheus_client.generate_latest (the library
Prometheus's Python exporters use) over the same families must give the same bytes, for random
snapshots of every metric in the catalogue, hostile label values and special floats included."""

from __future__ import annotations

import gzip
import math
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.process_collector import ProcessCollector

from exporter import catalogue
from exporter.exposition import Exposition, ProcessMetrics, Renderer, Snapshot, go_float


class _Reference:
    """What exporter/exposition.py did before it wrote text itself (a registry per sample)."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self):
        for short, series in self.snap.values.items():
            m = catalogue.get(short)
            names = list(m.labels)
            if m.type == "counter":
                fam = CounterMetricFamily(m.family, m.help, labels=names)
            elif m.type == "info":
                fam = InfoMetricFamily(m.family, m.help, labels=names)
                for labels in series:
                    fam.add_metric(list(labels), {})
                yield fam
                continue
            else:
                fam = GaugeMetricFamily(m.family, m.help, labels=names)
            for labels, value in series.items():
                fam.add_metric(list(labels), value)
            yield fam


def reference(snap: Snapshot) -> bytes:
    """client_python's text. The one deliberate difference: Wattprint writes a negative zero as
    0.0 (a value that compares equal must print the same, or the per-series cache would be unsound)."""
    snap = Snapshot({m: {k: (0.0 if v == 0 else v) for k, v in series.items()} for m, series in snap.values.items()})
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Reference(snap))
    return generate_latest(reg)


label_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12) | \
    st.sampled_from(['a"b', "back\\slash", "new\nline", "", "ünï", '\\"\n'])
values = st.floats(allow_nan=True, allow_infinity=True) | st.integers(0, 10**20).map(float) | \
    st.sampled_from([0.0, 1.0, 1e16, 123456789.0, 0.1, 1e-300, 5e-324])


@st.composite
def snapshots(draw):
    snap = Snapshot()
    for m in draw(st.lists(st.sampled_from(catalogue.METRICS), max_size=8, unique=True)):
        short = m.name.removeprefix(catalogue.PREFIX)
        for _ in range(draw(st.integers(0, 4))):
            labels = tuple(draw(label_text) for _ in m.labels)
            snap.set(short, labels, 1.0 if m.type == "info" else draw(values))
    return snap


def _without_process(text: bytes) -> bytes:
    return text.split(b"# HELP process_virtual_memory_bytes")[0]


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_text_is_byte_for_byte_what_prometheus_client_writes(snap):
    ours = Renderer().render(snap).text
    assert _without_process(ours) == reference(snap)


@settings(max_examples=100, deadline=None)
@given(st.lists(snapshots(), min_size=2, max_size=4))
def test_one_renderer_over_successive_samples_stays_exact(snaps):
    r = Renderer()  # its per-series line cache must never serve a stale value
    for snap in snaps:
        assert _without_process(r.render(snap).text) == reference(snap)


def test_every_catalogue_metric_renders_like_the_reference():
    snap = Snapshot()
    for m in catalogue.METRICS:
        snap.set(m.name.removeprefix(catalogue.PREFIX), tuple(f"v{i}" for i, _ in enumerate(m.labels)), 2.5
                 if m.type != "info" else 1)
    assert _without_process(Renderer().render(snap).text) == reference(snap)


def test_go_float_matches_the_reference_on_edges():
    from prometheus_client.utils import floatToGoString

    assert go_float(-0.0) == "0.0"
    for v in (0.0, 1.0, 1e6, 1234567.0, 12345678.9, 1e22, 1.5e-7, math.inf, -math.inf, math.nan, 7):
        assert go_float(v) == floatToGoString(v), v


def test_process_metrics_have_the_reference_names_types_and_values():
    ours = "".join(ProcessMetrics().lines())
    reg = CollectorRegistry()
    ProcessCollector(registry=reg)
    ref = generate_latest(reg).decode()
    head = re.compile(r"^# (?:HELP|TYPE) .*$", re.M)
    assert head.findall(ours) == head.findall(ref)
    ours_v = dict(line.split() for line in ours.splitlines() if not line.startswith("#"))
    ref_v = dict(line.split() for line in ref.splitlines() if not line.startswith("#"))
    assert ours_v["process_start_time_seconds"] == ref_v["process_start_time_seconds"]
    assert ours_v["process_max_fds"] == ref_v["process_max_fds"]
    rss = float(ours_v["process_resident_memory_bytes"])
    assert 0.5 < rss / float(ref_v["process_resident_memory_bytes"]) < 2


def test_gzip_is_made_once_on_first_use_and_decodes_to_the_text():
    exp = Exposition(b"wattprint_x 1.0\n" * 100)
    gz = exp.gzip()
    assert gzip.decompress(gz) == exp.text and exp.gzip() is gz


def test_label_prefixes_are_cached_but_bounded():
    r = Renderer()
    fam = r.family("endpoint_requests_total")
    for i in range(100_010):
        fam.prefix(("ns", f"e{i}", "m"))
    assert len(fam.prefixes) <= 100_001
