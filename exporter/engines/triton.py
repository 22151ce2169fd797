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
"""

from .base import Family, TableReader

READER = TableReader(
    engine="triton",
    metrics_path="/metrics",
    model_labels=("model",),
    fields={
        "requests": (Family("nv_inference_request_success"),),
        "prompt_tokens": (Family("vllm:prompt_tokens_total"),),
        "generation_tokens": (Family("vllm:generation_tokens_total"),),
        "compute_seconds": (Family("nv_inference_compute_infer_duration_us", scale=1e-6),),
    },
    composite=frozenset({"ensemble", "tensorrt_llm_bls"}),
    notes=("decoupled TensorRT-LLM models may report 0 compute time (tensorrtllm_backend #49, "
           "#284): split by tokens there",),
)
