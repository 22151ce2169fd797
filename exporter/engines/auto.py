"""``auto``: a server that no command line names (an unrecognised process whose pod's
``prometheus.io/port`` annotation points at its metrics, a configured target with
``engine: auto``), read by the first engine whose own families the text holds.

Which engine a text is comes from prefixes only its families carry. Order matters where one
server carries another's families: Triton hosting vLLM exposes ``nv_inference_*`` and
``vllm:*`` (Triton's reader reads both); a Dynamo worker passes its engine's families through
(``dynamo_component_*`` beside ``vllm:*``), and is read as that engine. A text with none of them
is ``EngineParseError("missing")``, counted as ``parse_missing`` like any scrape without the
families wanted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from collections.abc import Mapping

from .base import EngineParseError, Reader, Reading

# (marker at the start of a sample or TYPE line's name, engine); first match wins
SIGNATURES: tuple[tuple[str, str], ...] = (
    ("dynamo_frontend_", "dynamo"),
    ("nv_inference_", "triton"),
    ("vllm:", "vllm"),
    ("sglang:", "sglang"),
    ("trtllm_", "trtllm"),
    ("lmdeploy:", "lmdeploy"),
    ("llamacpp:", "llamacpp"),
    ("tgi_", "tgi"),
    ("request_success_total", "nim"),   # NIM 1.x: vLLM's names without a prefix
)


def sniff(text: str) -> str | None:
    """The engine whose families ``text`` holds, by SIGNATURES order; None for none. A C-speed
    substring search per marker (a sample line starts with its name; a family with no samples
    yet still has its ``# TYPE`` line)."""
    body = "\n" + text
    for marker, engine in SIGNATURES:
        if "\n" + marker in body or "\n# TYPE " + marker in body:
            return engine
    return None


@dataclass(frozen=True)
class AutoReader:
    engine: str
    metrics_path: str
    readers: Mapping[str, Reader]  # the registry (which holds this reader too)

    def parse(self, text: str) -> Reading:
        if not isinstance(text, str):
            raise EngineParseError("format", f"expected text, got {type(text).__name__}")
        engine = sniff(text)
        if engine is None or engine == self.engine:
            raise EngineParseError("missing", "no inference server's families "
                                   f"({', '.join(m for m, _e in SIGNATURES)})")
        reading = self.readers[engine].parse(text)
        return replace(reading, derived=(f"engine {engine}, found from its families",
                                         *reading.derived))

