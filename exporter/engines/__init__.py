"""Readers for the inference servers' own Prometheus metrics: requests and tokens per model, so
that grams per request is one PromQL division.

Pure parsing, no network: a collector fetches ``reader.metrics_path`` on the port that
``discovery`` finds and hands the text to ``READERS[engine].parse``; ``normalise.Normaliser``
turns the cumulative values into increments that survive engine restarts.

Adding an engine is one module with a ``READER`` (usually a ``TableReader``: which families hold
which counter) and one name in ``_MODULES``.
"""

from . import auto, dynamo, kserve, llamacpp, lmdeploy, nim, sglang, tgi, triton, trtllm, vllm
from .base import COUNTERS, EngineParseError, ModelCounters, Reader, Reading

_MODULES = (vllm, sglang, tgi, triton, llamacpp, trtllm, nim, lmdeploy, dynamo, kserve)

READERS: dict[str, Reader] = {m.READER.engine: m.READER for m in _MODULES}
READERS["auto"] = auto.AutoReader("auto", "/metrics", READERS)  # a server no command line names

__all__ = ["COUNTERS", "READERS", "EngineParseError", "ModelCounters", "Reader", "Reading"]
