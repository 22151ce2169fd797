"""KServe's ``huggingfaceserver`` (``python -m huggingfaceserver --model_name=…``): ``/metrics`` on
``--http_port`` (8080), serving the process's whole prometheus_client registry
(``python/kserve/kserve/protocol/rest/server.py``).

With the vLLM backend (the default for LLMs) the in-process engine's ``vllm:*`` counters are
there, labelled ``model_name`` = ``--served-model-name``, else ``--model_id`` or the model
directory (``huggingfaceserver/__main__.py`` ``load_model``), not the InferenceService name. With
the Hugging Face backend only KServe's own histograms exist: requests are the count of
``request_predict_seconds`` per ``model_name`` (``python/kserve/kserve/metrics.py``), and there
are no token counters.
"""

from .base import TableReader, histogram_count, success
from .vllm import READER as VLLM

READER = TableReader(
    engine="kserve",
    metrics_path="/metrics",
    model_labels=("model_name",),
    fields={
        "requests": (success("vllm:request_success_total"), histogram_count("request_predict_seconds")),
        "prompt_tokens": VLLM.fields["prompt_tokens"],
        "generation_tokens": VLLM.fields["generation_tokens"],
    },
)
