"""NVIDIA Dynamo's HTTP front end (``python -m dynamo.frontend``): ``/metrics`` on its
``--http-port`` (``DYN_HTTP_PORT``, 8000).

Names from ``lib/runtime/src/metrics/prometheus_names.rs`` and
``lib/llm/src/http/service/metrics.rs``: ``dynamo_frontend_requests_total{model, endpoint,
request_type, status[, error_type]}`` (a success is ``status="success"``), and the token
histograms ``dynamo_frontend_input_sequence_tokens`` / ``…_output_sequence_tokens`` (``_sum``;
there is no input-token counter).

Which endpoint the requests land on: the workers (``python -m dynamo.vllm|sglang|trtllm``) hold
the GPUs, and pass their engine's own metrics through on their system port (``DYN_SYSTEM_PORT``),
so discovery reads the workers and leaves the front end alone: requests land where the energy is,
and a request is not counted twice. This reader is for a front end configured as a target (a
node with front ends only, say); its counts then belong to the target's own endpoint.
"""

from .base import Family, TableReader, histogram_sum

READER = TableReader(
    engine="dynamo",
    metrics_path="/metrics",
    model_labels=("model",),
    fields={
        "requests": (Family("dynamo_frontend_requests_total",
                            only=("status", frozenset({"success"}))),),
        "prompt_tokens": (histogram_sum("dynamo_frontend_input_sequence_tokens"),),
        "generation_tokens": (Family("dynamo_frontend_output_tokens_total"),
                              histogram_sum("dynamo_frontend_output_sequence_tokens")),
    },
)
