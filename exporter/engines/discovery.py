"""Where an engine's metrics are: from its command line, or from pod annotations. Pure helpers.

``metrics_port_from_cmdline`` reads ports with ``exporter.identity.cmdline.detect`` (flags, then
environment, then documented defaults: Triton ``--metrics-port`` 8002, TGI ``--prometheus-port``
else ``--port``, …) and adds what detect does not know:
- engines it does not recognise by program name (NIM, or a wrapper around a known engine):
  ``--metrics-port``/``--prometheus-port``, else ``--port``, else the engine's default port;
- whether metrics are switched on at all: llama.cpp serves ``/metrics`` only with ``--metrics``
  (``LLAMA_ARG_ENDPOINT_METRICS``), SGLang only with ``--enable-metrics`` (unknown, so assumed
  on, when a ``--config`` file is given), Triton not with ``--allow-metrics=false``. None then,
  rather than a port that answers 404/501 on every scrape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exporter.identity.cmdline import detect

# Used only when detect() does not recognise the command line.
_DEFAULT_PORT = {
    "vllm": 8000, "sglang": 30000, "tgi": 3000, "triton": 8002, "llamacpp": 8080,
    "trtllm": 8000, "nim": 8000,
}
_PORT_ENV = {"nim": "NIM_SERVER_PORT"}  # [unverified] NIM's documented port variable
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class _Switch:
    on: tuple[str, ...] = ()  # metrics only with one of these flags …
    env: str | None = None  # … or this variable set true
    unknown: tuple[str, ...] = ()  # flags that may switch them on out of sight (a config file)
    off: str | None = None  # a boolean flag that, false, switches them off


_SWITCHES = {
    "llamacpp": _Switch(on=("--metrics",), env="LLAMA_ARG_ENDPOINT_METRICS"),
    "sglang": _Switch(on=("--enable-metrics",), unknown=("--config",)),
    "triton": _Switch(off="--allow-metrics"),
}


def _flag(argv: Sequence[str], names: tuple[str, ...]) -> str | None:
    """Value of the last ``--x=v`` or ``--x v`` among ``names`` ("" for a bare flag)."""
    value = None
    for i, arg in enumerate(argv):
        key, eq, attached = arg.partition("=")
        if key in names:
            nxt = argv[i + 1] if i + 1 < len(argv) else ""
            value = attached if eq else ("" if nxt.startswith("-") else nxt)
    return value


def _port(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value).strip()
    return int(text) if text.isascii() and text.isdigit() and 0 < int(text) < 65536 else None


def _enabled(engine: str, argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    switch = _SWITCHES.get(engine)
    if switch is None:
        return True
    if switch.off and (_flag(argv, (switch.off,)) or "").strip().lower() in _FALSE:
        return False
    if not switch.on:
        return True
    env = str(environ.get(switch.env, "")).strip().lower() if switch.env else ""
    return _flag(argv, switch.on + switch.unknown) is not None or env not in _FALSE | {""}


def metrics_port_from_cmdline(
    engine: str, argv: Sequence[str], environ: Mapping[str, str] | None = None
) -> int | None:
    """The port of ``engine``'s Prometheus metrics, as its command line (and environment) says;
    None when the command line is another engine's, or says metrics are off."""
    env = environ or {}
    identity = detect(argv, environ)
    if identity is not None:
        if identity.engine != engine:
            return None
        port = identity.metrics_port
    else:
        port = (
            _port(_flag(argv, ("--metrics-port", "--prometheus-port")))
            or _port(_flag(argv, ("--port",)))
            or _port(env.get(_PORT_ENV.get(engine, ""), ""))
            or _DEFAULT_PORT.get(engine)
        )
    return port if port and _enabled(engine, argv, env) else None


def from_annotations(
    annotations: Mapping[str, str], default_path: str = "/metrics"
) -> tuple[int, str] | None:
    """(port, path) from the ``prometheus.io/port`` and ``prometheus.io/path`` pod annotations;
    None without a valid port. ``prometheus.io/scrape`` is not consulted: it says whether
    Prometheus should collect the pod, not where the engine's metrics are."""
    port = _port(annotations.get("prometheus.io/port"))
    if port is None:
        return None
    path = annotations.get("prometheus.io/path")
    path = path.strip() if isinstance(path, str) and path.strip() else default_path
    return port, path if path.startswith("/") else "/" + path
