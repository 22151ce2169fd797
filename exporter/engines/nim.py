"""NVIDIA NIM for LLMs: ``/v1/metrics`` on port 8000 (24.05: ``/metrics``).

NIM 1.x names its vLLM-derived counters without a prefix; ``request_success_total`` counts
finish reasons stop and length only (NIM observability docs; Run:ai "NIM Observability Metrics
via API"). NIM 2.x may expose the backend's own names, so the ``vllm:`` names are the fallback.
The ``model_name`` label is [unverified].
"""

from .base import Family, TableReader, success

READER = TableReader(
    engine="nim",
    metrics_path="/v1/metrics",
    model_labels=("model_name", "model"),
    fields={
        "requests": (success("request_success_total"), success("vllm:request_success_total")),
        "prompt_tokens": (Family("prompt_tokens_total"), Family("vllm:prompt_tokens_total")),
        "generation_tokens": (
            Family("generation_tokens_total"),
            Family("vllm:generation_tokens_total"),
        ),
    },
)
