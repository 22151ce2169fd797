"""The demo's simulated servers (exporter/demo/engines.py) as the exporter's own engine readers
read them, and the scheduled quiet period of simulated traffic (exporter/sensors/simtraffic.py)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.demo.engines import SHAPES, Exposition, fixture_text
from exporter.engines import READERS
from exporter.sensors.simtraffic import Traffic, TrafficError

COUNTS = {"prompt_tokens": 10_000.0, "generation_tokens": 2_000.0, "requests": 10.0}
NAMES = {"vllm": {"model": "SIMULATED/Qwen3-8B"}, "sglang": {"model": "SIMULATED/Llama"},
         "triton": {"model0": "simulated-chat", "model1": "simulated-embed"}}


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_the_readers_see_the_traffic_counters(kind):
    reading = READERS[kind].parse(Exposition(SHAPES[kind], NAMES[kind]).text(COUNTS).decode())
    assert not reading.dropped, reading.dropped
    models = reading.models
    if kind == "triton":
        assert set(models) == {"simulated-chat", "simulated-embed"}  # the repository's first two, in the
        first, second = models["simulated-chat"], models["simulated-embed"]  # fixture's mistral7b, llama2 rows
        assert (first.requests, second.requests) == (7.0, 3.0)  # 70/30 of the requests
        # compute time: 100 and 250 µs a generated token of each model's share
        assert first.compute_seconds == pytest.approx(0.7 * 2000 * 100e-6)
        assert second.compute_seconds == pytest.approx(0.3 * 2000 * 250e-6)
    else:
        (m,) = models.values()
        assert m.model == NAMES[kind]["model"]
        assert (m.requests, m.prompt_tokens, m.generation_tokens) == (10.0, 10_000.0, 2_000.0)


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_the_served_text_keeps_the_fixture_and_parses(kind):
    """The fixture's lines (its citation header too), edited, in the text format prometheus_client
    parses (promtool's lint is not the bar: upstream's own names hold ':')."""
    text = Exposition(SHAPES[kind], NAMES[kind]).text(COUNTS).decode()
    fixture = fixture_text(SHAPES[kind].fixture)
    assert [line for line in text.split("\n") if line.startswith("# ") and not line.startswith(("# HELP", "# TYPE"))] \
        == [line for line in fixture.split("\n") if line.startswith("# ") and not line.startswith(("# HELP", "# TYPE"))]
    families = {f.name: f for f in text_string_to_metric_families(text + "\n")}
    assert families and all(f.samples for f in families.values())  # no family left without samples


def test_a_scheduled_quiet_period_has_no_traffic_and_flat_counters():
    spec = {"seed": 3, "prefill_j_per_token": 0.01, "decode_j_per_token": 0.1, "quiet_share": 0.0,
            "prompt_tokens_per_s": [100, 200], "generation_tokens_per_s": [10, 20],
            "quiet_every_s": 10, "quiet_for_s": 3}
    t = Traffic.parse(spec, "traffic")
    for second in range(30):
        p, d, w = t.segment(second)
        assert (p == 0 and d == 0 and w == 0) == (second % 10 >= 7), second
    assert t.counters(17.0) == t.counters(19.99)
    assert t.counters(21.0)["prompt_tokens"] > t.counters(19.99)["prompt_tokens"]
    with pytest.raises(TrafficError, match="quiet_for_s"):
        Traffic.parse({**spec, "quiet_for_s": 10}, "traffic")
