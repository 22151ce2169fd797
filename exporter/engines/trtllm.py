"""TensorRT-LLM ``trtllm-serve``: Prometheus text at ``/prometheus/metrics`` (``/metrics`` is
JSON iteration stats, and reading it drains a buffer other readers depend on: never read), only
with ``return_perf_metrics: true`` at the top level of the ``--config`` /
``--extra_llm_api_options`` YAML (``tensorrt_llm/serve/openai_server.py``); discovery reads that
file. ``trtllm-serve disaggregated`` is a proxy (no GPU, metrics without a model): its context and
generation servers are scraped instead.

Names from ``tensorrt_llm/metrics/collector.py``. Successes by ``finished_reason``: stop and
length count; timeout and not_finished (a disaggregated context-only phase) do not. Older builds
label every series ``model_name="undefined"``, read here as no name (the caller fills it). The
token counters exist in recent builds only; older ones read None.
"""

from .base import Family, TableReader, success

READER = TableReader(
    engine="trtllm",
    metrics_path="/prometheus/metrics",
    model_labels=("model_name",),
    anonymous=frozenset({"undefined"}),
    fields={
        # the first collector had no prefix (request_success_total, …); read as a fallback
        "requests": (success("trtllm_request_success_total"), success("request_success_total")),
        "prompt_tokens": (Family("trtllm_prompt_tokens_total"), Family("prompt_tokens_total")),
        "generation_tokens": (Family("trtllm_generation_tokens_total"),
                              Family("generation_tokens_total")),
    },
)
