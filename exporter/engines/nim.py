"""NVIDIA NIM for LLMs: ``/v1/metrics`` on port 8000 (24.05: ``/metrics``).

NIM 1.x names its vLLM-derived counters without a prefix; ``request_success_total`` counts
finish reasons stop and length only (NIM observability docs; Run:ai "NIM Observability Metrics
via API"). NIM 2.x/3.0 is a proxy in front of one engine (vLLM or SGLang) and forwards
``/v1/metrics`` to it, so the engine's own names follow: ``vllm:*``, then ``sglang:*`` (whose
request counter includes aborted requests, see ``sglang.py``). The ``model_name`` label is
[unverified] for 1.x.
"""

from .base import Family, TableReader, success

READER = TableReader(
    engine="nim",
    metrics_path="/v1/metrics",
    model_labels=("model_name", "model"),
    fields={
        "requests": (success("request_success_total"), success("vllm:request_success_total"),
                     Family("sglang:num_requests_total")),
        "prompt_tokens": (Family("prompt_tokens_total"), Family("vllm:prompt_tokens_total"),
                          Family("sglang:prompt_tokens_total")),
        "generation_tokens": (
            Family("generation_tokens_total"),
            Family("vllm:generation_tokens_total"),
            Family("sglang:generation_tokens_total"),
        ),
    },
)
