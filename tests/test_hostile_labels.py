"""Label values and the exposition's size are bounded whatever local processes call themselves
(issue 14 #4). Old: 60 short-lived processes with a 120 KB model name grew /metrics from 13.5 KB
to 14.4 MB, kept after they exited."""

from __future__ import annotations

import pytest
from test_faults import H100, FaultNode

from exporter.exposition import LABEL_MAX_BYTES, cap_label
from exporter.ledger import Ledger
from support import parse_metrics


def test_sixty_processes_with_120kb_model_names_leave_a_small_exposition(tmp_path):
    node = FaultNode(tmp_path, [{**H100, "processes": []}], {})
    base = len(node.sampler.metrics_text())
    for i in range(60):
        model = f"m{i}-" + "x" * 120_000
        node.procs[100 + i] = {"comm": "python3", "cmdline": ["vllm", "serve", model, "--port", str(9000 + i)]}
        node.step(ticks={100 + i: 50})
        del node.procs[100 + i]
    node.step()
    text = node.sampler.metrics_text()
    assert len(text) < base + 60 * 4 * 1024, len(text)  # a few lines per process, each short
    values = [v for series in parse_metrics(text).values() for labels in series for _k, v in labels]
    assert max(len(v.encode()) for v in values) <= LABEL_MAX_BYTES
    capped = {v for v in values if v.startswith("m") and "~" in v}
    assert len(capped) == 60  # sixty processes, sixty distinct (capped) models: nothing merged


@pytest.mark.parametrize("value", ["short", "é" * 40, "é" * 64, "x" * 129, "模" * 100, "a\\n\"" * 50])
def test_cap_label_is_bounded_stable_and_keeps_values_apart(value):
    capped = cap_label(value)
    assert len(capped.encode()) <= LABEL_MAX_BYTES
    assert cap_label(value) == capped  # the same value always caps the same: joins still meet
    if len(value.encode()) <= LABEL_MAX_BYTES:
        assert capped == value
    else:
        assert cap_label(value + "y") != capped


def test_the_ledger_folds_new_series_past_its_label_byte_budget():
    led = Ledger(max_series=10_000, max_label_bytes=10_000)
    for i in range(1000):
        led.add("endpoint_energy_joules_total", ("", f"e{i}-" + "z" * 100, "", "gpu", "active"), 1.0)
    series = led.counters["endpoint_energy_joules_total"]
    assert led.label_bytes <= 10_000 + 200 and len(series) < 200
    assert led.total("endpoint_energy_joules_total") == 1000.0  # every joule kept, on overflow
    assert ("", "overflow", "", "gpu", "active") in series
