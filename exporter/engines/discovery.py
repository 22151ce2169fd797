"""Where an engine's metrics are: from its command line, or from pod annotations. Pure helpers.

``metrics_port_from_cmdline`` reads ports with ``exporter.identity.cmdline.detect`` (flags, then
environment, then documented defaults: Triton ``--metrics-port`` 8002, TGI ``--prometheus-port``
else ``--port``, …) and adds what detect does not know:
- engines it does not recognise by program name (NIM, or a wrapper around a known engine):
  ``--metrics-port``/``--prometheus-port``, else ``--port``, else the engine's default port;
- whether metrics are switched on at all: llama.cpp serves ``/metrics`` only with ``--metrics``
  (``LLAMA_ARG_ENDPOINT_METRICS``), SGLang only with ``--enable-metrics``, trtllm-serve only with
  ``return_perf_metrics: true`` in its config file (read by the daemon, ``with_config``; one it
  cannot read may switch them on, so they are assumed on), Triton not with
  ``--allow-metrics=false``, LMDeploy not with ``--disable-metrics``. No scrape point then,
  rather than a port that answers 404/501 on every scrape.
- the ports: vLLM's data-parallel API servers, SGLang's gRPC-mode sidecar, LMDeploy's ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from exporter.identity.cmdline import detect, is_llamacpp_router

# Used only when detect() does not recognise the command line.
_DEFAULT_PORT = {
    "vllm": 8000, "sglang": 30000, "tgi": 3000, "triton": 8002, "llamacpp": 8080,
    "trtllm": 8000, "nim": 8000, "lmdeploy": 23333, "kserve": 8080, "dynamo": 8000,
}
_PORT_ENV = {"nim": "NIM_SERVER_PORT"}  # NIM's port variable (NIM docs; nim-deploy chart)
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class _Switch:
    on: tuple[str, ...] = ()  # metrics only with one of these flags …
    env: str | None = None  # … or this variable set true
    true: frozenset[str] | None = None  # the values the engine reads as true (None: not false)
    unknown: tuple[str, ...] = ()  # flags that may switch them on out of sight (a config file)
    off: str | None = None  # a boolean flag that, false, switches them off
    disable: tuple[str, ...] = ()  # flags that switch them off


_SWITCHES = {
    # common/arg.cpp: an env boolean is true only as exactly "on", "enabled", "true" or "1"
    "llamacpp": _Switch(on=("--metrics",), env="LLAMA_ARG_ENDPOINT_METRICS",
                        true=frozenset({"on", "enabled", "true", "1"})),
    # a --config file is read by the daemon; one it cannot read may switch them on: assumed on
    "sglang": _Switch(on=("--enable-metrics",), unknown=("--config",)),
    "triton": _Switch(off="--allow-metrics"),
    # lmdeploy ≥ 0.14: metrics on by default, --disable-metrics switches them off
    "lmdeploy": _Switch(disable=("--disable-metrics",)),
    # trtllm-serve: /prometheus/metrics only with return_perf_metrics: true in its --config /
    # --extra_llm_api_options YAML (openai_server.py); the daemon reads that file, and without
    # one metrics are off
    "trtllm": _Switch(on=("--return-perf-metrics",), unknown=("--config", "--extra-llm-api-options")),
}


def _norm(flag: str) -> str:
    return flag.replace("_", "-") if flag.startswith("--") else flag


def _flag(argv: Sequence[str], names: tuple[str, ...]) -> str | None:
    """Value of the last ``--x=v`` or ``--x v`` among ``names`` ("" for a bare flag; ``_`` and
    ``-`` alike in long flags, as vLLM, SGLang and trtllm-serve accept both)."""
    value = None
    for i, arg in enumerate(argv):
        key, eq, attached = arg.partition("=")
        if _norm(key) in names:
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
    if switch.disable and _flag(argv, switch.disable) is not None:
        return False
    if not switch.on:
        return True
    if _flag(argv, switch.on) not in (None, *_FALSE):
        return True
    if CONFIG_READ not in argv and _flag(argv, switch.unknown) is not None:
        return True  # a config file nobody read may switch them on
    env = str(environ.get(switch.env, "")) if switch.env else ""
    if switch.true is not None:
        return env in switch.true
    return env.strip().lower() not in _FALSE | {""}


@dataclass(frozen=True)
class ScrapePoint:
    """One place to read an engine's metrics on its host: a port, and a path where it is not
    the reader's own (``""``), and a reader where it is not the engine's own."""

    port: int
    path: str = ""
    engine: str = ""
    per_model: bool = False  # llama.cpp router: list /models, then /metrics?model=<id> for each


MAX_PORTS = 64  # data-parallel API servers read per process, at most


def _count(argv: Sequence[str], *names: str) -> int:
    for name in names:
        if n := _port(_flag(argv, (name,))):
            return min(n, MAX_PORTS)
    return 1


def _vllm_ports(argv: Sequence[str], env: Mapping[str, str], port: int) -> tuple[int, ...]:
    """vLLM data parallel (vllm/entrypoints/cli/serve.py, openai/dp_supervisor.py): --headless
    runs engines only (no HTTP; the head's API server reports them); with
    --data-parallel-multi-port-external-lb one ``vllm serve`` supervises one API server per
    local rank on --port + local rank, each counting only its own rank. Every other mode serves
    all its ranks on --port."""
    if _flag(argv, ("--headless",)) is not None:
        return ()
    if _flag(argv, ("--data-parallel-multi-port-external-lb",)) is not None:
        local = _count(argv, "--data-parallel-size-local", "--data-parallel-size", "-dp")
        return tuple(port + rank for rank in range(local))
    return (port,)


def _sglang_ports(argv: Sequence[str], env: Mapping[str, str], port: int) -> tuple[int, ...]:
    """SGLang --smg-grpc-mode (--grpc-mode): gRPC on --port and /metrics on an HTTP sidecar at
    --smg-http-sidecar-port (alias --grpc-http-sidecar-port), default --port + 1
    (srt/entrypoints/grpc_server.py)."""
    if _flag(argv, ("--smg-grpc-mode", "--grpc-mode")) is None:
        return (port,)
    sidecar = _port(_flag(argv, ("--smg-http-sidecar-port", "--grpc-http-sidecar-port")))
    return (sidecar or port + 1,)


def _lmdeploy_ports(argv: Sequence[str], env: Mapping[str, str], port: int) -> tuple[int, ...]:
    """lmdeploy --dp N: one api_server per rank on --server-port + rank
    (serve/openai/launch_server.py)."""
    return tuple(port + rank for rank in range(_count(argv, "--dp")))


# engine → function(argv, environ, first port) → the ports of its metrics; the default is the
# first port alone
_PORTS: dict[str, Callable[[Sequence[str], Mapping[str, str], int], tuple[int, ...]]] = {
    "vllm": _vllm_ports, "sglang": _sglang_ports, "lmdeploy": _lmdeploy_ports,
}


def scrape_points(
    engine: str, argv: Sequence[str], environ: Mapping[str, str] | None = None
) -> tuple[ScrapePoint, ...]:
    """Where ``engine``'s Prometheus metrics are, as its command line (and environment) says;
    () when the command line is another engine's, or says metrics are off or absent."""
    env = environ or {}
    identity = detect(argv, environ)
    if identity is not None:
        if identity.engine != engine:
            return ()
        port = identity.metrics_port
    else:
        port = (
            _port(_flag(argv, ("--metrics-port", "--prometheus-port")))
            or _port(_flag(argv, ("--port",)))
            or _port(env.get(_PORT_ENV.get(engine, ""), ""))
            or _DEFAULT_PORT.get(engine)
        )
    if identity is not None and identity.program.startswith("dynamo-"):
        # a Dynamo worker: its system server's /metrics (engine metrics passed through), there
        # whenever DYN_SYSTEM_PORT is set, whatever the engine's own switches say
        return (ScrapePoint(port, "/metrics"),) if port else ()
    if not port or not _enabled(engine, argv, env):
        return ()
    ports = _PORTS[engine](argv, env, port) if engine in _PORTS else (port,)
    per_model = engine == "llamacpp" and is_llamacpp_router(argv, environ)
    return tuple(ScrapePoint(p, per_model=per_model) for p in ports if 0 < p < 65536)


def metrics_port_from_cmdline(
    engine: str, argv: Sequence[str], environ: Mapping[str, str] | None = None
) -> int | None:
    """The first port of ``scrape_points``; None when there is none."""
    points = scrape_points(engine, argv, environ)
    return points[0].port if points else None


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


# --- settings in a server's config file ----------------------------------------------------------

# (engine, the flags naming its YAML config) and the keys read from it: ports and metrics
# switches only (vLLM --config: each key is a flag, vllm/utils/argparse_utils.py; SGLang --config:
# the same, flags win; trtllm-serve --config/--extra_llm_api_options: LLM API options)
CONFIG_FLAGS = {
    "vllm": ("--config",),
    "sglang": ("--config",),
    "trtllm": ("--config", "--extra-llm-api-options"),
}
CONFIG_KEYS = frozenset({
    "port", "headless", "data-parallel-multi-port-external-lb", "data-parallel-size-local",
    "data-parallel-size", "enable-metrics", "smg-grpc-mode", "grpc-mode", "smg-http-sidecar-port",
    "grpc-http-sidecar-port", "return-perf-metrics",
})
CONFIG_MAX_BYTES = 64 * 1024  # a server's config file is a few hundred bytes
CONFIG_READ = "--config-read-by-wattprint"  # appended once the config file's settings are in argv


def config_path(engine: str, argv: Sequence[str]) -> str | None:
    """The config file a server's command line names, or None."""
    names = CONFIG_FLAGS.get(engine)
    return (_flag(argv, names) or None) if names else None


def config_settings(text: str | None) -> dict[str, str] | None:
    """The ports and metrics switches of a server's YAML config file (flag → value, "" for a true
    switch); None when the text is missing or does not parse (its settings are unknown), {} when
    it holds none. Untrusted text: at most CONFIG_MAX_BYTES are parsed (libyaml where present), and
    only a key of CONFIG_KEYS with a true bool, a port-sized int or a short string is kept."""
    if text is None:
        return None
    import yaml  # only for a server with a config file

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text[:CONFIG_MAX_BYTES], Loader=loader)  # noqa: S506 - a safe loader
    except Exception:  # untrusted text: any parser failure means "settings unknown"
        return None
    if not isinstance(data, dict):
        return {}
    out: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(key, str) or len(key) > 64:
            continue
        flag = "--" + key.replace("_", "-")
        if flag[2:] not in CONFIG_KEYS:
            continue
        if value is True:
            out[flag] = ""
        elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 32:
            out[flag] = str(value)
        elif isinstance(value, str) and len(value) <= 16:
            out[flag] = value
    return out


def with_config(argv: Sequence[str], settings: Mapping[str, str] | None) -> tuple[str, ...]:
    """``argv`` with the settings of its config file (``config_settings``) appended as flags,
    where the command line does not set them (flags win over the file). Unknown settings (None)
    leave ``argv`` as it is, so that the metrics switches read its config flag as "may be on"."""
    if settings is None:
        return tuple(argv)
    given = {_norm(a.partition("=")[0]) for a in argv if a.startswith("--")}
    extra: list[str] = [CONFIG_READ]
    for flag, value in settings.items():
        if flag not in given:
            extra += [flag, value] if value else [flag]
    return (*argv, *extra)
