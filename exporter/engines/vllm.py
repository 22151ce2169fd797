"""vLLM (``vllm serve``): ``/metrics`` on the API port.

Counters carry ``model_name`` and ``engine`` (the data-parallel rank, summed here). Successes are
split by ``finished_reason``: stop, length and repetition count; abort and error do not
(``vllm/v1/metrics/loggers.py``; reference §1, §3).
"""

from .base import Family, TableReader, success

READER = TableReader(
    engine="vllm",
    metrics_path="/metrics",
    model_labels=("model_name", "model"),  # "model" when hosted by Triton or KServe
    fields={
        "requests": (success("vllm:request_success_total"),),
        "prompt_tokens": (Family("vllm:prompt_tokens_total"),),
        "generation_tokens": (Family("vllm:generation_tokens_total"),),
    },
)
