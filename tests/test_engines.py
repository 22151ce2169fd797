"""Tests of exporter.engines: the inference servers' own metrics, read and normalised.

Fixtures in tests/fixtures/engines_text/ (provenance in SOURCES.md) are one realistic exposition
per engine, plus a Triton repository with an ensemble and a BLS model.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.engines import COUNTERS, READERS, EngineParseError, ModelCounters, Reading
from exporter.engines.discovery import from_annotations, metrics_port_from_cmdline
from exporter.engines.normalise import Normaliser
from exporter.identity.cmdline import ENGINES

FIXTURES = Path(__file__).parent / "fixtures" / "engines_text"
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


def fixture(name: str) -> str:
    return (FIXTURES / f"{name}.prom").read_text()


def parse(engine: str, text: str) -> Reading:
    return READERS[engine].parse(text)


def approx(value: float | None):
    return None if value is None else pytest.approx(value)


def values(reading: Reading) -> dict[str, tuple]:
    """{model: (requests, prompt_tokens, generation_tokens, compute_seconds)}, approximately."""
    return {m: tuple(approx(getattr(c, f)) for f in COUNTERS) for m, c in reading.models.items()}


# --- every counter of every fixture ---------------------------------------------------------------

# fixture → (engine, {model: (requests, prompt_tokens, generation_tokens, compute_seconds)})
EXPECTED = {
    # stop+length+repetition over two data-parallel engines; abort (7) and error (2) left out
    "vllm": ("vllm", {LLAMA: (1 + 131 + 0 + 5 + 120 + 1, 18512 + 20000, 27453 + 30001, None)}),
    "sglang": ("sglang", {LLAMA: (11228, 8128902, 7557572, None)}),
    "tgi": ("tgi", {"": (11, 311, 402, None)}),
    "triton": ("triton", {
        "mistral7b": (20, None, None, 12.5),
        "llama2": (20 + 5, None, None, 3.0 + 3.1 + 0.9),  # versions 1 and 2, two GPUs
        "vllm_model": (1, 10, 16, 0.086861),
    }),
    # TensorRT-LLM repository (tensorrt_llm served beside the composites): preprocessing,
    # tensorrt_llm and postprocessing are steps of ensemble/tensorrt_llm_bls, not models
    "triton_ensemble": ("triton", {
        "ensemble": (100, None, None, None),  # composite: its time repeats the others'
        "tensorrt_llm_bls": (30, None, None, None),  # composite (BLS)
    }),
    # streamed: postprocessing ran 41,870 times for 1,200 requests; tokens are the _sum of the
    # tensorrt_llm model's nv_llm_*_token_len histograms, the sole composite's
    "triton_trtllm_streaming": ("triton", {"ensemble": (1200, 412880, 41870, None)}),
    "llamacpp": ("llamacpp", {"": (None, 1234570, 98304, None)}),  # no request counter
    "trtllm": ("trtllm", {"Qwen/Qwen3-8B": (412 + 88, 256000, 128512, None)}),  # not timeout
    "nim": ("nim", {"meta/llama-3.1-8b-instruct": (320, 52340, 71002, None)}),
    # current upstream shapes (docs/research/*.md; each fixture's header cites its source)
    "vllm_current": ("vllm", {"Qwen/Qwen3-8B": (1187 + 213 + 1164 + 221, 1843206 + 1791552,
                                                402117 + 398540, None)}),
    "sglang_current": ("sglang", {LLAMA: (212 + 431, 48210 + 91544, 30117 + 77203, None)}),  # is_streaming summed
    "lmdeploy": ("lmdeploy", {"internlm/internlm2_5-7b-chat": (517, 120433, 88410, None)}),  # FINISH only
    "dynamo_frontend": ("dynamo", {"Qwen/Qwen3-8B": (2311 + 402 + 88, 2384112, 704120, None)}),  # success only
    "dynamo_worker_vllm": ("vllm", {"Qwen/Qwen3-8B": (2391 + 405, 2384112, 704120, None)}),
    "llamacpp_current": ("llamacpp", {"": (None, 913422 + 2481940, 187305, None)}),  # + cached
    "llamacpp_legacy": ("llamacpp", {"": (None, 913422, 187305, None)}),
    "trtllm_current": ("trtllm", {"Llama-3.1-8B-Instruct": (10, 12800, 5120, None)}),
    "nim_v1": ("nim", {"meta/llama3-8b-instruct": (40, 40960, 10240, None)}),
    "nim_sglang_backend": ("nim", {"meta/llama-3.1-8b-instruct": (None, 51200, 20480, None)}),
}


@pytest.mark.parametrize("name", EXPECTED)
def test_fixture_counters(name: str) -> None:
    engine, expected = EXPECTED[name]
    reading = parse(engine, fixture(name))
    assert values(reading) == expected
    assert all(model == counters.model for model, counters in reading.models.items())
    assert (reading.engine, reading.metrics_path, reading.dropped) == (
        engine, READERS[engine].metrics_path, ())


def test_registry_covers_the_engines_with_prometheus_metrics() -> None:
    assert set(READERS) == (set(ENGINES) - {"ollama"}) | {"auto"}  # Ollama has no /metrics
    assert all(reader.engine == engine for engine, reader in READERS.items())
    assert {e: r.metrics_path for e, r in READERS.items()} == {
        "vllm": "/metrics", "sglang": "/metrics", "tgi": "/metrics", "triton": "/metrics",
        "llamacpp": "/metrics", "trtllm": "/prometheus/metrics", "nim": "/v1/metrics", "auto": "/metrics",
        "lmdeploy": "/metrics", "dynamo": "/metrics", "kserve": "/metrics"}


@pytest.mark.parametrize("engine, needle", [
    ("llamacpp", "requests: llama.cpp exports no request counter"),
    ("tgi", "tgi_request_input_length_sum (histogram/summary sum)"),
    ("vllm", "vllm:request_success_total except finished_reason in abort/"),
    ("triton", "compute_seconds left None for composite models (ensemble, tensorrt_llm_bls)"),
])
def test_derived_says_how_each_counter_was_obtained(engine: str, needle: str) -> None:
    assert any(needle in note for note in parse(engine, fixture(engine)).derived)


def test_counters_for_the_normaliser_leave_out_what_is_not_reported() -> None:
    counters = parse("llamacpp", fixture("llamacpp")).models[""].counters()
    assert counters == {"prompt_tokens": 1234570.0, "generation_tokens": 98304.0}


def test_trtllm_undefined_model_label_means_no_name() -> None:
    text = fixture("trtllm").replace('model_name="Qwen/Qwen3-8B"', 'model_name="undefined"')
    assert list(parse("trtllm", text).models) == [""]


def test_triton_composite_models_are_configurable() -> None:
    reader = dataclasses.replace(READERS["triton"], composite=frozenset({"preprocessing"}), internal=None)
    models = reader.parse(fixture("triton_ensemble")).models
    assert models["preprocessing"].compute_seconds is None
    assert models["ensemble"].compute_seconds == pytest.approx(25.85684)


def test_triton_steps_are_models_where_no_tensorrt_llm_is_served() -> None:
    """preprocessing/postprocessing are common names: they are steps only in the TensorRT-LLM
    repository (tensorrt_llm served beside a composite)."""
    text = fixture("triton_ensemble").replace('model="tensorrt_llm"', 'model="resnet"')
    assert set(parse("triton", text).models) == {"ensemble", "preprocessing", "resnet", "postprocessing",
                                                 "tensorrt_llm_bls"}


def test_nim_falls_back_to_backend_native_names() -> None:
    assert values(parse("nim", fixture("vllm"))) == values(parse("vllm", fixture("vllm")))


# --- families that are late, mistyped, malformed, cut off -----------------------------------------

def vllm_lines(*prefixes: str) -> str:
    """The vLLM fixture's lines for the named families only (samples, HELP and TYPE)."""
    return "".join(line for line in fixture("vllm").splitlines(keepends=True)
                   if any(p in line for p in prefixes))


TYPE_ONLY = "".join(
    f"# HELP {n} x\n# TYPE {n} counter\n"
    for n in ("vllm:request_success_total", "vllm:prompt_tokens_total",
              "vllm:generation_tokens_total")
)


@pytest.mark.parametrize("engine, text, expected", [
    # a family not yet exposed reads None, not 0
    ("vllm", vllm_lines("vllm:generation_tokens_total"), {LLAMA: (None, None, 57454, None)}),
    # prometheus_client before the first .labels(): HELP/TYPE, no samples: no models yet
    ("vllm", TYPE_ONLY, {}),
    ("vllm", TYPE_ONLY + vllm_lines("vllm:prompt_tokens_total{"),
     {LLAMA: (None, 38512, None, None)}),
    # only excluded series: the model is known and has 0 successes
    ("vllm", vllm_lines('finished_reason="abort"'), {LLAMA: (0, None, None, None)}),
    # TRT-LLM builds without token counters
    ("trtllm", "\n".join(l for l in fixture("trtllm").splitlines() if "tokens" not in l) + "\n",
     {"Qwen/Qwen3-8B": (500, None, None, None)}),
])
def test_late_families_read_none(engine: str, text: str, expected: dict) -> None:
    assert values(parse(engine, text)) == expected


def test_type_lines_are_trusted_over_names() -> None:
    text = fixture("vllm").replace("TYPE vllm:request_success_total counter",
                                   "TYPE vllm:request_success_total gauge")
    reading = parse("vllm", text)
    assert reading.models[LLAMA].requests is None
    assert reading.dropped == ("vllm:request_success_total: TYPE gauge, not counter",)


@pytest.mark.parametrize("engine, edit", [
    # no TYPE lines at all: read by the exact sample names
    ("tgi", lambda t: "\n".join(l for l in t.splitlines() if not l.startswith("#")) + "\n"),
    # OpenMetrics declares counters without _total
    ("vllm", lambda t: t.replace("TYPE vllm:request_success_total", "TYPE vllm:request_success")),
    # metrics-exporter-prometheus without buckets renders histograms as summaries
    ("tgi", lambda t: t.replace("input_length histogram", "input_length summary")),
    ("vllm", lambda t: t.replace("\n", "\r\n")),
    ("vllm", lambda t: t.replace("} ", "}\t").replace("\n", "   \n")),
])
def test_equivalent_spellings_read_the_same(engine: str, edit) -> None:
    assert values(parse(engine, edit(fixture(engine)))) == EXPECTED[engine][1]


GOOD_STOP = (f'vllm:request_success_total{{engine="0",finished_reason="stop",'
             f'model_name="{LLAMA}"}} 1.0\n')
PROMPT_0 = f'vllm:prompt_tokens_total{{engine="0",model_name="{LLAMA}"}} 18512.0\n'


@pytest.mark.parametrize("old, new, field, reason", [
    (GOOD_STOP, GOOD_STOP.replace('"}', '"'), "requests", "unparsable"),  # no closing brace
    (GOOD_STOP, GOOD_STOP.replace("1.0", "1,0"), "requests", "unparsable"),
    (GOOD_STOP, GOOD_STOP * 2, "requests", "duplicate series"),
    (PROMPT_0, PROMPT_0.replace("18512.0", "NaN"), "prompt_tokens", "value nan"),
    (PROMPT_0, PROMPT_0.replace("18512.0", "-3"), "prompt_tokens", "value -3"),
    (PROMPT_0, PROMPT_0 + "# TYPE vllm:prompt_tokens_total gauge\n", "prompt_tokens",
     "conflicting TYPE"),
])
def test_a_malformed_family_is_dropped_whole(old: str, new: str, field: str, reason: str) -> None:
    reading = parse("vllm", fixture("vllm").replace(old, new))
    got = values(reading)[LLAMA]
    expected = EXPECTED["vllm"][1][LLAMA]
    assert [f for f, a, b in zip(COUNTERS, got, expected) if a != b] == [field]
    assert getattr(reading.models[LLAMA], field) is None
    assert len(reading.dropped) == 1 and reason in reading.dropped[0]


@pytest.mark.parametrize("junk", [
    "this is not a metric\n",
    'vllm:time_to_first_token_seconds_bucket{le="0.5",model_name="x" 3\n',  # unread family
    "# TYPE\n# HELP\n#\n",
    "\x00\ufffd{}} 1\n",
])
def test_malformed_lines_elsewhere_do_not_matter(junk: str) -> None:
    text = fixture("vllm")
    for at in (0, text.index("# HELP vllm:generation"), len(text)):
        assert values(parse("vllm", text[:at] + junk + text[at:])) == EXPECTED["vllm"][1]


@pytest.mark.parametrize("name", EXPECTED)
def test_text_cut_inside_a_line_is_refused(name: str) -> None:
    engine, text = EXPECTED[name][0], fixture(name)
    for cut in (len(text) - 1, text.index(" ", len(text) // 2) + 2):
        with pytest.raises(EngineParseError) as err:
            parse(engine, text[:cut])
        assert err.value.kind == "truncated"


def test_text_cut_at_a_line_boundary_reads_what_is_complete() -> None:
    text = fixture("vllm")
    cut = text.index("# HELP vllm:generation_tokens_total")
    assert values(parse("vllm", text[:cut])) == {LLAMA: (None, 38512, None, None)}


@pytest.mark.parametrize("engine, text, kind", [
    ("trtllm", '[{"gpuMemUsage": 1, "iterLatencyMS": 2.5}]', "format"),  # what /metrics returns
    ("vllm", '{"detail": "Not Found"}\n', "format"),
    ("llamacpp", "<html><body>501 Not Implemented</body></html>\n", "format"),
    ("vllm", "", "missing"),
    ("vllm", "\n\n", "missing"),
    ("vllm", fixture("tgi"), "missing"),
    ("tgi", "# TYPE tgi_request_count counter\ntgi_request_count 1\n", "missing"),  # no success yet
    ("vllm", "# TYPE vllm:request_success_total gauge\n", "missing"),
    ("tgi", "tgi_request_success 1 2 3 x\ntgi_request_input_length_sum Inf\n", "malformed"),
])
def test_no_reading(engine: str, text: str, kind: str) -> None:
    with pytest.raises(EngineParseError) as err:
        parse(engine, text)
    assert err.value.kind == kind


@pytest.mark.parametrize("engine, family, buckets", [
    ("vllm", "vllm:time_to_first_token_seconds", 'engine="0",le="{le}",model_name="m"'),  # unread
    ("tgi", "tgi_request_input_length", 'le="{le}"'),  # the family whose _sum is read
])
def test_huge_histograms_parse_quickly(engine: str, family: str, buckets: str) -> None:
    lines = "".join(f"{family}_bucket{{{buckets.format(le=i / 8)}}} {i}\n" for i in range(50_000))
    header = f"# TYPE {family} histogram\n"
    text = fixture(engine).replace(header, header + lines)
    assert len(text) > 2_000_000
    start = time.perf_counter()
    reading = parse(engine, text)
    assert time.perf_counter() - start < 2.0
    assert values(reading) == EXPECTED[engine][1]


# --- fuzzing: only EngineParseError, and only sane values ---------------------------------------

def check(reading: Reading) -> None:
    for model, counters in reading.models.items():
        assert isinstance(model, str) and counters.model == model
        assert all(math.isfinite(v) and v >= 0 for v in counters.counters().values())


def parse_or_refuse(engine: str, text: str) -> Reading | None:
    try:
        reading = parse(engine, text)
    except EngineParseError as err:
        assert err.kind in ("format", "truncated", "missing", "malformed")
        return None
    check(reading)
    return reading


@settings(max_examples=300, deadline=None)
@given(engine=st.sampled_from(sorted(READERS)), text=st.text())
def test_fuzz_arbitrary_text(engine: str, text: str) -> None:
    parse_or_refuse(engine, text)


ALPHABET = st.sampled_from(
    list('{}",=# \n\t\\+-.eE0123456789_:abcxyzINFna') + ["\x00", "é", "\u2028"])
MUTATION = st.tuples(
    st.sampled_from(["delete", "insert", "duplicate_line", "drop_line", "swap_lines", "truncate"]),
    st.floats(0, 1), st.floats(0, 1), st.text(ALPHABET, max_size=12),
)


def mutate(text: str, mutations: list[tuple[str, float, float, str]]) -> str:
    for op, a, b, payload in mutations:
        i, j = sorted((int(a * len(text)), int(b * len(text))))
        lines = text.splitlines(keepends=True) or [""]
        k, m = int(a * (len(lines) - 1)), int(b * (len(lines) - 1))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + payload + text[i:]
        elif op == "truncate":
            text = text[:j]
        else:
            if op == "duplicate_line":
                lines.insert(m, lines[k])
            elif op == "drop_line":
                del lines[k]
            else:
                lines[k], lines[m] = lines[m], lines[k]
            text = "".join(lines)
    return text


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(sorted(EXPECTED)), mutations=st.lists(MUTATION, min_size=1, max_size=4))
def test_fuzz_mutated_fixtures(name: str, mutations: list) -> None:
    """Whatever the damage: a reading or EngineParseError, sane values, and fed between two
    good readings, never a negative increment from the normaliser."""
    engine, text = EXPECTED[name][0], fixture(name)
    good = parse(engine, text)
    damaged = parse_or_refuse(engine, mutate(text, mutations))
    normaliser = Normaliser()
    for reading in (good, damaged, good, damaged):
        for model, counters in (reading.models if reading else {}).items():
            increments = normaliser.update(model, counters.counters())
            assert all(math.isfinite(v) and v >= 0 for v in increments.values())


# --- the normaliser ------------------------------------------------------------------------------

# steps of (counters given, increments expected, resets of the key so far)
NORMALISER_STEPS = [
    ({"requests": 100.0, "tokens": 5000.0}, {"requests": 0.0, "tokens": 0.0}, 0),  # first sight
    ({"requests": 103.0, "tokens": 5300.0}, {"requests": 3.0, "tokens": 300.0}, 0),
    ({"requests": 103.0}, {"requests": 0.0}, 0),  # tokens missing: no increment, kept
    ({"requests": 104.0, "tokens": 5310.0}, {"requests": 1.0, "tokens": 10.0}, 0),
    ({"requests": 2.0, "tokens": 40.0}, {"requests": 2.0, "tokens": 40.0}, 1),  # restart
    ({"requests": 5.0, "tokens": 90.0, "compute": 7.0},  # compute seen late: first sight
     {"requests": 3.0, "tokens": 50.0, "compute": 0.0}, 1),
    ({"requests": float("nan"), "tokens": -1.0, "compute": None}, {}, 1),  # unusable: ignored
    ({"requests": 6.0, "tokens": float("inf"), "compute": 8.5},
     {"requests": 1.0, "compute": 1.5}, 1),
    ({"requests": 0.0}, {"requests": 0.0}, 2),  # a restart caught before the first request
]


def test_normaliser_steps() -> None:
    normaliser = Normaliser()
    for counters, increments, resets in NORMALISER_STEPS:
        assert normaliser.update("ep", counters) == increments
        assert normaliser.resets["ep"] == resets
    assert normaliser.update("other", {"requests": 9.0}) == {"requests": 0.0}  # keys independent
    normaliser.forget("ep")
    assert normaliser.update("ep", {"requests": 50.0}) == {"requests": 0.0}
    assert normaliser.resets["ep"] == 0


COUNTER_VALUE = st.one_of(
    st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**6)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ab"),
                          st.dictionaries(st.sampled_from(["requests", "tokens"]), COUNTER_VALUE))))
def test_normaliser_never_goes_backwards(steps: list) -> None:
    normaliser = Normaliser()
    for key, counters in steps:
        assert all(math.isfinite(v) and v >= 0 for v in normaliser.update(key, counters).values())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1e9), min_size=1))
def test_normaliser_sums_a_monotonic_counter_exactly(deltas: list[float]) -> None:
    normaliser, value, total = Normaliser(), 0.0, 0.0
    for delta in deltas:
        value += delta
        total += normaliser.update("k", {"c": value})["c"]
    assert total == pytest.approx(value - deltas[0], rel=1e-9, abs=1e-6)


# --- discovery ------------------------------------------------------------------------------------

# (engine, argv, environ, metrics port)
PORT_CASES = [
    ("vllm", ["vllm", "serve", LLAMA, "--port", "8001"], None, 8001),
    ("vllm", ["vllm", "serve", LLAMA], None, 8000),
    ("vllm", ["tritonserver", "--model-repository=/models"], None, None),  # another engine
    ("triton", ["tritonserver", "--model-repository=/models"], None, 8002),
    ("triton", ["tritonserver", "--model-repository=/m", "--metrics-port", "9102"], None, 9102),
    ("triton", ["tritonserver", "--model-repository=/models", "--allow-metrics=false"], None, None),
    ("triton", ["tritonserver", "--model-repository=/m", "--allow-metrics", "true"], None, 8002),
    ("tgi", ["text-generation-launcher", "--model-id", "bigscience/bloom", "--port", "8080"], None,
     8080),
    ("tgi", ["text-generation-launcher", "--model-id", "x", "--prometheus-port", "9000"], None,
     9000),
    ("tgi", ["text-generation-launcher"], {"PORT": "80"}, 80),
    ("sglang", ["python3", "-m", "sglang.launch_server", "--model-path", LLAMA], None, None),
    ("sglang", ["python3", "-m", "sglang.launch_server", "--model-path", LLAMA, "--enable-metrics"],
     None, 30000),
    ("sglang", ["python3", "-m", "sglang.launch_server", "--config", "/etc/sglang.yaml"], None,
     30000),  # a config file may switch metrics on
    ("llamacpp", ["llama-server", "-m", "/models/qwen.gguf", "--port", "9090"], None, None),
    ("llamacpp", ["llama-server", "-m", "/models/qwen.gguf", "--metrics"], None, 8080),
    ("llamacpp", ["llama-server", "-m", "/m.gguf"], {"LLAMA_ARG_ENDPOINT_METRICS": "1"}, 8080),
    ("llamacpp", ["llama-server", "-m", "/m.gguf"], {"LLAMA_ARG_ENDPOINT_METRICS": "0"}, None),
    # /prometheus/metrics only with return_perf_metrics: true in the config file (openai_server.py)
    ("trtllm", ["trtllm-serve", "serve", "/models/Qwen3-8B", "--port", "8010"], None, None),
    ("trtllm", ["trtllm-serve", "/models/Qwen3-8B", "--config", "/c.yaml", "--port", "8010"], None, 8010),
    ("trtllm", ["trtllm-serve", "/m", "--extra_llm_api_options", "c.yaml", "--config-read-by-wattprint",
                "--return-perf-metrics"], None, 8000),
    ("trtllm", ["trtllm-serve", "/m", "--config", "c.yaml", "--config-read-by-wattprint"], None, None),
    ("trtllm", ["trtllm-serve", "disaggregated", "-c", "disagg.yaml"], None, None),  # the proxy
    ("lmdeploy", ["lmdeploy", "serve", "api_server", "internlm/internlm2_5-7b-chat"], None, 23333),
    ("lmdeploy", ["lmdeploy", "serve", "api_server", "m", "--disable-metrics"], None, None),
    ("vllm", ["python3", "-m", "dynamo.vllm", "--model", "Qwen/Qwen3-8B"], None, None),  # no system port
    ("vllm", ["python3", "-m", "dynamo.vllm", "--model", "Qwen/Qwen3-8B"], {"DYN_SYSTEM_PORT": "8081"}, 8081),
    ("dynamo", ["python3", "-m", "dynamo.frontend", "--http-port", "8000"], None, 8000),  # there; not scraped (find)
    ("llamacpp", ["llama-server", "-m", "/m.gguf"], {"LLAMA_ARG_ENDPOINT_METRICS": "yes"}, None),
    ("llamacpp", ["llama-server", "-m", "/m.gguf"], {"LLAMA_ARG_ENDPOINT_METRICS": "enabled"}, 8080),
    ("llamacpp", ["llama", "serve", "-m", "/m.gguf", "--metrics"], None, 8080),
    ("nim", ["/opt/nim/start_server.sh"], None, 8000),
    ("nim", ["/opt/nim/start_server.sh"], {"NIM_SERVER_PORT": "9999"}, 9999),
    ("nim", ["python3", "-m", "vllm_nvext.entrypoints.openai.api_server", "--port", "8123"], None,
     8123),
    ("kserve", ["python3", "-m", "huggingfaceserver", "--model_name=x", "--http_port=8081"], None,
     8081),
    ("vllm", ["python3", "-m", "my_wrapper", "--model", "x", "--metrics-port=8081"], None,
     8081),  # a wrapper detect() does not know
    ("ollama", ["/bin/sh", "-c", "sleep 1"], None, None),
    ("vllm", [], None, 8000),  # nothing readable: the documented default
]


@pytest.mark.parametrize("engine, argv, environ, port", PORT_CASES)
def test_metrics_port_from_cmdline(engine: str, argv: list[str], environ, port: int | None) -> None:
    assert metrics_port_from_cmdline(engine, argv, environ) == port


@pytest.mark.parametrize("annotations, expected", [
    ({"prometheus.io/port": "8000"}, (8000, "/metrics")),
    ({"prometheus.io/port": "8002", "prometheus.io/path": "/metrics"}, (8002, "/metrics")),
    ({"prometheus.io/port": " 8000 ", "prometheus.io/path": "v1/metrics"}, (8000, "/v1/metrics")),
    ({"prometheus.io/port": "8080", "prometheus.io/path": "/metrics?model=qwen"},
     (8080, "/metrics?model=qwen")),
    ({"prometheus.io/port": "8000", "prometheus.io/path": ""}, (8000, "/metrics")),
    ({"prometheus.io/port": "8000", "prometheus.io/scrape": "false"}, (8000, "/metrics")),
    ({"prometheus.io/path": "/metrics"}, None),
    ({"prometheus.io/port": "http"}, None),
    ({"prometheus.io/port": "70000"}, None),
    ({"prometheus.io/port": "0"}, None),
    ({}, None),
])
def test_from_annotations(annotations: dict, expected) -> None:
    assert from_annotations(annotations) == expected


def test_from_annotations_with_an_engine_path() -> None:
    assert from_annotations({"prometheus.io/port": "8000"}, READERS["trtllm"].metrics_path) == (
        8000, "/prometheus/metrics")


def test_model_counters_default_to_unknown() -> None:
    assert ModelCounters("m").counters() == {}
