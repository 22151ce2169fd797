"""Text Generation Inference: ``/metrics`` on ``--port`` (and from v3.3.0 also on
``--prometheus-port``).

The Rust exporter (metrics-exporter-prometheus) writes counters without ``_total`` and has no
token counters, so tokens are the ``_sum`` of the per-request length histograms
(``router/src/server.rs``). No model label: the caller names the model (``GET /info``, argv).
"""

from .base import Family, TableReader, histogram_sum

READER = TableReader(
    engine="tgi",
    metrics_path="/metrics",
    fields={
        "requests": (Family("tgi_request_success"),),
        "prompt_tokens": (histogram_sum("tgi_request_input_length"),),
        "generation_tokens": (histogram_sum("tgi_request_generated_tokens"),),
    },
    notes=(
        "prompt_tokens includes requests that failed after validation (the input length is "
        "recorded at validation)",
        "model: TGI has no model label; the caller fills it",
    ),
)
