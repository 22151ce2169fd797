"""SGLang: ``/metrics`` on port 30000, only with ``--enable-metrics``.

The request and token counters come from the tokenizer manager (``TokenizerMetricsCollector``,
``python/sglang/srt/metrics/collector.py``), labelled ``model_name`` (+ ``engine_type``,
``priority``, ``--extra-metric-labels``; summed here), so tensor-parallel ranks do not multiply
them. ``sglang:num_requests_total`` is incremented per finished request together with the token
counters. ``sglang:num_aborted_requests_total`` is not subtracted: it counts abort calls (an
``abort_all`` counts once), not a subset of finished requests.
"""

from .base import Family, TableReader

READER = TableReader(
    engine="sglang",
    metrics_path="/metrics",
    model_labels=("model_name", "name"),  # "name" in the 2024 prototypes
    fields={
        "requests": (Family("sglang:num_requests_total"),),
        "prompt_tokens": (Family("sglang:prompt_tokens_total"),),
        "generation_tokens": (Family("sglang:generation_tokens_total"),),
    },
    notes=("requests: sglang:num_aborted_requests_total is not subtracted (it counts abort "
           "calls, not finished requests)",),
)
