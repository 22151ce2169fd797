"""llama.cpp ``llama-server`` (or ``llama serve``): ``/metrics`` on port 8080, only with
``--metrics`` (``LLAMA_ARG_ENDPOINT_METRICS``); in router mode one scrape per model with
``?model=<id>&autoload=false`` (the scraper lists the loaded models on ``/models`` first: a
scrape must never load a model).

Prompt tokens are all the prompt's tokens, as vLLM counts them: ``prompt_tokens_total`` counts
only the tokens evaluated ("excluding cached tokens"), and builds since PR #26920
(tools/server/server-task.cpp, b10423+) add ``prompt_tokens_cached_total``, summed in here.
Older builds have no cached-token counter: their prompt tokens leave the cached prefix out.

No labels and no request counter (only the gauges ``requests_processing`` and
``requests_deferred``), so requests stay None rather than being guessed. Values are written by a
C++ stream with 6 significant digits (``1.23457e+06``): coarse, but never decreasing.
"""

from .base import Family, TableReader

READER = TableReader(
    engine="llamacpp",
    metrics_path="/metrics",
    fields={
        "prompt_tokens": (Family("llamacpp:prompt_tokens_total",
                                 plus=("llamacpp:prompt_tokens_cached_total",)),),
        "generation_tokens": (Family("llamacpp:tokens_predicted_total"),),
    },
    notes=(
        "requests: llama.cpp exports no request counter; left None",
        "model: llama.cpp has no model label; the caller fills it",
    ),
)
