"""LMDeploy ``lmdeploy serve api_server MODEL``: ``/metrics`` on ``--server-port`` (23333), on by
default since v0.14 (``--disable-metrics`` switches it off).

Names from ``lmdeploy/metrics/loggers.py`` (0.18.0): labels ``model_name`` (``--model-name``,
else the model path as given) and ``engine`` (the data-parallel rank, summed here).
``lmdeploy:request_success_total`` has one pre-created series per ``ResponseType``
(``finished_reason="ResponseType.FINISH"``, ``…CANCEL``, ``…INTERNAL_ENGINE_ERROR``, …), and a
success is ``ResponseType.FINISH`` (``record_finish`` runs only for it,
``metrics/metrics_processor.py``): an include-list, not vLLM's exclude set, so a new error kind
is never counted as a success.
"""

from .base import Family, TableReader

READER = TableReader(
    engine="lmdeploy",
    metrics_path="/metrics",
    model_labels=("model_name",),
    fields={
        "requests": (Family("lmdeploy:request_success_total",
                            only=("finished_reason", frozenset({"ResponseType.FINISH"}))),),
        "prompt_tokens": (Family("lmdeploy:prompt_tokens_total"),),
        "generation_tokens": (Family("lmdeploy:generation_tokens_total"),),
    },
)
