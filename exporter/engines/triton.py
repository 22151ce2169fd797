"""Triton Inference Server: ``/metrics`` on ``--metrics-port`` (8002).

Per model, summed over ``version`` (and ``gpu_uuid`` where a KIND_GPU instance adds it):
successes ``nv_inference_request_success`` and compute time
``nv_inference_compute_infer_duration_us`` (µs → s), the key for splitting one server's energy
between its models. Token counters exist only with the vLLM backend (``vllm:*{model,version}``,
``REPORT_CUSTOM_METRICS``).

Ensembles and BLS models count the time of the models they call once more, so their
``compute_seconds`` is left None and only the composing models' time splits energy. The metrics
do not say which models are composite: ``composite`` names them; the default is the
TensorRT-LLM backend's standard repository (``ensemble``, ``tensorrt_llm_bls``). For another
repository, ``dataclasses.replace(READER, composite=frozenset({...}))`` with the names whose
config has ``platform: "ensemble"`` or is a BLS Python model.


TensorRT-LLM backend (tensorrtllm_backend ``all_models/inflight_batcher_llm``, c2e65b8): tokens
are the ``_sum`` of the ``tensorrt_llm`` model's histograms ``nv_llm_input_token_len`` /
``nv_llm_output_token_len`` (``response_metric_type`` ``total_input_tokens`` /
``total_output_tokens``, recorded when a request finishes). A streamed ensemble runs
``postprocessing`` once per chunk (41,870 executions for 1,200 requests), and the Python
``tensorrt_llm`` model's compute time is near 0 (it only queues the request): where
``tensorrt_llm`` is served beside ``ensemble`` or ``tensorrt_llm_bls``, ``preprocessing``,
``tensorrt_llm`` and ``postprocessing`` are steps of the user-facing model, not models of their
own: their requests are not counted, the energy is split between the user-facing models by
their requests, and the tokens are the first user-facing model's by name (``ensemble`` where it
is served beside ``tensorrt_llm_bls``: one counter, always monotonic).
"""

from .base import Family, TableReader, histogram_sum

_TRTLLM_STEPS = frozenset({"preprocessing", "tensorrt_llm", "postprocessing"})

READER = TableReader(
    engine="triton",
    metrics_path="/metrics",
    model_labels=("model",),
    fields={
        "requests": (Family("nv_inference_request_success"),),
        "prompt_tokens": (
            Family("vllm:prompt_tokens_total"),
            Family("nv_llm_input_token_len", ("histogram",), "_sum",
                   only=("response_metric_type", frozenset({"total_input_tokens"}))),
        ),
        "generation_tokens": (
            Family("vllm:generation_tokens_total"),
            Family("nv_llm_output_token_len", ("histogram",), "_sum",
                   only=("response_metric_type", frozenset({"total_output_tokens"}))),
        ),
        "compute_seconds": (Family("nv_inference_compute_infer_duration_us", scale=1e-6),),
    },
    composite=frozenset({"ensemble", "tensorrt_llm_bls"}),
    internal=("tensorrt_llm", _TRTLLM_STEPS),
    notes=("decoupled TensorRT-LLM models may report 0 compute time (tensorrtllm_backend #49, "
           "#284): split by tokens there",),
)
