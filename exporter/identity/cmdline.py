"""Which inference server a process is, and which model it serves, from its command line.

Pure functions over argv (and, where given, the process environment). One table, ``_PROGRAMS``,
says for each server program where its model name and ports come from; adding an engine is one
more row. ``resolve`` walks a process tree upwards, because vLLM and SGLang rename their GPU
workers (``VLLM::EngineCore``, ``sglang::scheduler_TP0``) and leave no flags in their argv.

Facts used (see shared/reference/inference-servers.md, section 2):
- vLLM ``vllm serve MODEL`` / ``python -m vllm.entrypoints.openai.api_server --model M``; the first
  ``--served-model-name`` is the metrics label; API port 8000.
- SGLang ``python -m sglang.launch_server --model-path M [--served-model-name N]``; port 30000.
- TGI ``text-generation-launcher --model-id M`` (env MODEL_ID, default bigscience/bloom-560m),
  ``--port``/``-p`` (env PORT, default 3000), ``--prometheus-port`` (v3.3+); children
  ``text-generation-router --tokenizer-name M --port P`` and shards
  ``text-generation-server serve M``.
- Triton ``tritonserver`` HTTP 8000 (``--http-port``), metrics 8002 (``--metrics-port``); Python
  backend stubs ``triton_python_backend_stub <repo>/<model>/<version>/model.py ...``.
- llama.cpp ``llama-server -m FILE.gguf [-a ALIAS] [--port 8080]`` (env ``LLAMA_ARG_*``).
- ``trtllm-serve [serve] MODEL [--port 8000]``: label = basename of a local directory, or the HF id.
- Ollama ``ollama serve`` (OLLAMA_HOST, default port 11434) and its per-model runners
  (``ollama runner --model .../blobs/sha256-…``, ``ollama_llama_server``, and from v0.30 a
  ``llama-server`` on a blob), whose model is only a content hash: model "".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Protocol
from urllib.parse import urlsplit

ENGINES = ("vllm", "sglang", "tgi", "triton", "llamacpp", "trtllm", "ollama", "nim", "lmdeploy",
           "dynamo", "kserve")


@dataclass(frozen=True)
class EngineIdentity:
    engine: str  # one of ENGINES
    model: str  # served model name; "" when it cannot be known from the process
    port: int | None  # HTTP (API) port: from flags/env, else the engine's documented default
    metrics_port: int | None  # where its Prometheus /metrics listens (= port unless separate)
    endpoint: str  # workload name outside Kubernetes: "<engine>-<port>"
    # False: a front end whose counts are its workers' (Dynamo, TRT-LLM's proxy) or a launcher
    # whose child serves (TGI): not scraped itself
    scraped: bool = field(default=True, compare=False)
    # which program of the engine: its name where not the engine's own server ("dynamo-vllm": a
    # Dynamo worker, whose metrics are its system port's /metrics, switched by DYN_SYSTEM_PORT)
    program: str = field(default="", compare=False)
    # the address the server binds when it names one IP (``--host 10.0.0.5``): its metrics are
    # there, not on 127.0.0.1. "" for the wildcard, loopback names and host names (127.0.0.1 used)
    host: str = field(default="", compare=False)


class ProcLike(Protocol):
    """What ``resolve`` needs of a process. An optional ``environ`` mapping attribute, when a
    process object has one, is used as well (TGI's docker image sets its port only by env)."""

    pid: int
    ppid: int
    comm: str
    cmdline: tuple[str, ...]


# --- the table -----------------------------------------------------------------------------------


def _verbatim(value: str) -> str:
    return value


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _gguf_name(path: str) -> str:
    """llama.cpp names a model after its file: ``/m/Qwen2-7B-Q4_K_M-00001-of-00002.gguf`` →
    ``Qwen2-7B-Q4_K_M`` (split-file suffix and extension dropped)."""
    name = re.sub(r"\.gguf$", "", _basename(path), flags=re.IGNORECASE)
    return re.sub(r"-\d{5}-of-\d{5}$", "", name)


def _trtllm_name(model: str) -> str:
    """trtllm-serve labels a local checkpoint directory by its basename, an HF id verbatim."""
    return _basename(model) if model.startswith(("/", ".", "~")) else model


def _triton_stub_model(path: str) -> str:
    """``<repository>/<model>/<version>/model.py`` → ``<model>``; "" for any other shape."""
    parts = path.split("/")
    if len(parts) >= 3 and parts[-2].isdigit() and parts[-3] not in ("", ".", ".."):
        return parts[-3]
    return ""


def _ollama_port(host: str) -> str:
    """OLLAMA_HOST is ``[scheme://]host[:port]``; an absent port defaults as in Ollama's
    envconfig: 11434, or 80/443 when the scheme http/https is spelled out."""
    scheme, sep, rest = host.strip().partition("://")
    default = {"http": "80", "https": "443"}.get(scheme, "11434") if sep else "11434"
    try:
        port = urlsplit("//" + (rest if sep else scheme)).port
    except ValueError:
        port = None
    return str(port) if port else default


@dataclass(frozen=True)
class _Source:
    """One place a value may come from; the first of a program's sources with a value wins."""

    flags: tuple[str, ...] = ()  # last occurrence wins, as with argparse/clap
    env: str | None = None
    positional: bool = False  # the first positional argument (after the subcommand, or later)
    convert: Callable[[str], str] = _verbatim


@dataclass(frozen=True)
class _Program:
    engine: str
    default_port: int
    model: tuple[_Source, ...] = ()
    default_model: str = ""
    port: tuple[_Source, ...] = (_Source(("--port",)),)
    metrics: tuple[_Source, ...] = ()  # a separate /metrics listener
    default_metrics_port: int | None = None  # None: same as the HTTP port
    # A helper process of a server (shard, backend stub, runner): it has no public port of its
    # own, so resolve() takes port and endpoint from the nearest server ancestor of its engine.
    helper: bool = False
    # How a positional is found among flags: the flags that take no value (argparse store_true,
    # BooleanOptionalAction; any --no-x too) and those taking several (nargs="+"). Others take one.
    bool_flags: frozenset[str] = frozenset()
    list_flags: frozenset[str] = frozenset()
    positional_anywhere: bool = False  # argparse: a positional may follow the flags
    name: str = ""  # the endpoint's prefix, when not the engine's ("dynamo-frontend")
    scraped: bool = True
    host: tuple[_Source, ...] = ()  # the bind-address flags, metrics listener's first


# vllm serve: argparse with BooleanOptionalAction/store_true flags (vllm/engine/arg_utils.py,
# vllm/entrypoints/openai/cli_args.py); a model after them is still the positional model_tag
_VLLM_BOOLS = frozenset({
    "--enforce-eager", "--trust-remote-code", "--enable-prefix-caching", "--enable-chunked-prefill",
    "--disable-log-requests", "--disable-log-stats", "--enable-log-requests", "--enable-lora",
    "--enable-auto-tool-choice", "--headless", "--data-parallel-external-lb",
    "--data-parallel-hybrid-lb", "--data-parallel-multi-port-external-lb", "--enable-expert-parallel",
    "--disable-custom-all-reduce", "--enable-sleep-mode", "--disable-fastapi-docs",
    "--enable-prompt-tokens-details", "--enable-server-load-tracking", "--enable-mfu-metrics",
    "--async-scheduling", "--skip-tokenizer-init", "--disable-frontend-multiprocessing",
    "--enable-request-id-headers", "--return-tokens-as-token-ids", "--enable-force-include-usage",
    "--disable-uvicorn-access-log", "--enable-log-outputs", "--ssl-cert-reqs-none",
})
_VLLM_LISTS = frozenset({"--served-model-name", "--middleware", "--lora-modules", "--allowed-origins",
                         "--allowed-methods", "--allowed-headers", "--api-key"})


# vLLM's default model when none is given (vllm/config/model.py ModelConfig.model)
VLLM_DEFAULT_MODEL = "Qwen/Qwen3-0.6B"
# bind addresses: vLLM --host (vllm/entrypoints/openai/cli_args.py, default None: all), SGLang
# --host (sglang/srt/server_args.py, default 127.0.0.1), TGI's router --hostname (the launcher
# passes it, default 0.0.0.0), Triton --metrics-address/--http-address (default 0.0.0.0),
# llama.cpp --host/LLAMA_ARG_HOST (default 127.0.0.1), trtllm-serve --host (default localhost),
# LMDeploy --server-name (default 0.0.0.0): docs/research/
_HOST = (_Source(("--host",)),)
_VLLM = _Program(
    "vllm", 8000, (_Source(("--served-model-name",)), _Source(("--model",), positional=True)),
    VLLM_DEFAULT_MODEL, bool_flags=_VLLM_BOOLS, list_flags=_VLLM_LISTS, positional_anywhere=True, host=_HOST,
)
# the vLLM worker of NVIDIA Dynamo: vLLM's own flags (--model, no positional); its only port is
# the system server's DYN_SYSTEM_PORT (metrics off when unset: Dynamo's default -1)
_DYN_SYSTEM = (_Source(env="DYN_SYSTEM_PORT"),)
_DYNAMO_VLLM = _Program(
    "vllm", 0, (_Source(("--served-model-name",)), _Source(("--model",))), VLLM_DEFAULT_MODEL,
    port=_DYN_SYSTEM, name="dynamo-vllm",
)
_SGLANG_MODEL = (_Source(("--served-model-name",)), _Source(("--model-path", "--model"), positional=True))
# sglang serve MODEL: sglang/cli/serve.py rewrites a leading positional to --model-path
_SGLANG = _Program("sglang", 30000, _SGLANG_MODEL, host=_HOST)
_DYNAMO_SGLANG = _Program("sglang", 0, _SGLANG_MODEL, port=_DYN_SYSTEM, name="dynamo-sglang")
_TGI_PORTS = dict(
    port=(_Source(("--port", "-p"), env="PORT"),),
    metrics=(_Source(("--prometheus-port",), env="PROMETHEUS_PORT"),),
)
# the launcher serves nothing itself: its router child (given --port/--prometheus-port
# explicitly, launcher/src/main.rs) is the HTTP server, and the one scraped
_TGI = _Program(
    "tgi", 3000, (_Source(("--model-id",), env="MODEL_ID"),), "bigscience/bloom-560m", **_TGI_PORTS,
    scraped=False,
)
_TGI_ROUTER = _Program("tgi", 3000, (_Source(("--tokenizer-name",)),), **_TGI_PORTS,
                       host=(_Source(("--hostname",)),))  # not $HOSTNAME: a container's own name
_TGI_SHARD = _Program("tgi", 3000, (_Source(positional=True),), helper=True)
_TRITON_PORTS = dict(
    port=(_Source(("--http-port",)),),
    metrics=(_Source(("--metrics-port",)),),
    default_metrics_port=8002,
)
_TRITON = _Program("triton", 8000, **_TRITON_PORTS, host=(_Source(("--metrics-address",)), _Source(("--http-address",))))
_TRITON_STUB = _Program(
    "triton", 8000, (_Source(positional=True, convert=_triton_stub_model),), helper=True,
    **_TRITON_PORTS,
)
_LLAMACPP = _Program(
    "llamacpp",
    8080,
    (
        _Source(("--alias", "-a"), env="LLAMA_ARG_ALIAS"),
        _Source(("--model", "-m"), env="LLAMA_ARG_MODEL", convert=_gguf_name),
        _Source(("--hf-repo", "-hf", "-hfr"), env="LLAMA_ARG_HF_REPO"),
    ),
    port=(_Source(("--port",), env="LLAMA_ARG_PORT"),),
    host=(_Source(("--host",), env="LLAMA_ARG_HOST"),),
)
# router mode (--models-dir / --models-preset, no model): one child llama-server per loaded model
# (--host 127.0.0.1 --port <free> --alias <id>, tools/server/server-models.cpp); the router's
# /metrics needs ?model=<id> (and loads an unloaded model unless &autoload=false)
_LLAMACPP_ROUTER_FLAGS = ("--models-dir", "--models-preset")
_LLAMACPP_ROUTER = replace(_LLAMACPP, model=(), name="llamacpp-router")
# click: options may come before the MODEL argument (trtllm-serve --port 8001 /models/x)
_TRTLLM = _Program("trtllm", 8000, (_Source(positional=True, convert=_trtllm_name),), positional_anywhere=True,
                   host=_HOST,
                   bool_flags=frozenset({"--trust-remote-code", "--enable-chunked-prefill", "--disable-gc",
                                         "--grpc", "--telemetry", "--no-telemetry"}))
# trtllm-serve disaggregated -c cfg.yaml: a proxy in front of context/generation servers (each a
# trtllm-serve of its own, scraped as such); it holds no GPU and its metrics have no model
_TRTLLM_PROXY = _Program("trtllm", 8000, port=(), name="trtllm-disaggregated", scraped=False)
_DYNAMO_TRTLLM = _Program(
    "trtllm", 0, (_Source(("--served-model-name",)), _Source(("--model-path", "--model"), convert=_trtllm_name)),
    port=_DYN_SYSTEM, name="dynamo-trtllm",
)
# Dynamo's HTTP front end (python -m dynamo.frontend): a router; the workers hold the GPUs and
# report the requests (requests land where the energy is), so it is not scraped by default
_DYNAMO_FRONTEND = _Program(
    "dynamo", 8000, port=(_Source(("--http-port",), env="DYN_HTTP_PORT"),), name="dynamo-frontend",
    scraped=False,
)
# NVIDIA NIM for LLMs: NIM_SERVER_PORT (8000), NIM_SERVED_MODEL_NAME (NIM docs, configuration)
_NIM = _Program(
    "nim", 8000, (_Source(env="NIM_SERVED_MODEL_NAME"), _Source(env="NIM_MODEL_NAME")),
    port=(_Source(env="NIM_SERVER_PORT"),),
)
# lmdeploy serve api_server MODEL [--model-name N] [--server-port 23333] (lmdeploy/cli/serve.py)
_LMDEPLOY = _Program(
    "lmdeploy", 23333, (_Source(("--model-name",)), _Source(positional=True)),
    port=(_Source(("--server-port",)),), positional_anywhere=True,  # argparse: MODEL after the flags too
    host=(_Source(("--server-name",)),),
    bool_flags=frozenset({"--disable-metrics", "--trust-remote-code", "--enable-prefix-caching",
                          "--allow-terminate-by-client", "--disable-fastapi-docs", "--enable-metrics"}),
)
# KServe's huggingfaceserver: python -m huggingfaceserver --model_name=ISVC [--model_id=HF |
# --model_dir=DIR] (vLLM in-process; its model_name label is --served-model-name, else the
# model id or directory: huggingfaceserver/__main__.py load_model); REST and /metrics on 8080
_KSERVE = _Program(
    "kserve", 8080, (_Source(("--served-model-name",)), _Source(("--model-id",)), _Source(("--model-dir",))),
    "/mnt/models", port=(_Source(("--http-port",)),),
)
_OLLAMA_PORT = (_Source(env="OLLAMA_HOST", convert=_ollama_port),)
_OLLAMA = _Program("ollama", 11434, port=_OLLAMA_PORT)
_OLLAMA_RUNNER = _Program("ollama", 11434, port=_OLLAMA_PORT, helper=True)

# (program, subcommand or None) → how to read it. The program is argv[0]'s basename, or for a
# Python interpreter the ``-m`` module or the script's basename (console scripts run as
# ``python3 /usr/local/bin/vllm serve …``).
_PROGRAMS: dict[tuple[str, str | None], _Program] = {
    ("vllm", "serve"): _VLLM,
    ("vllm.entrypoints.cli.main", "serve"): _VLLM,
    ("vllm.entrypoints.openai.api_server", None): _VLLM,
    ("sglang.launch_server", None): _SGLANG,
    ("sglang", "serve"): _SGLANG,
    ("text-generation-launcher", None): _TGI,
    ("text-generation-router", None): _TGI_ROUTER,
    ("text-generation-server", "serve"): _TGI_SHARD,
    ("tritonserver", None): _TRITON,
    ("triton_python_backend_stub", None): _TRITON_STUB,
    ("llama-server", None): _LLAMACPP,
    ("llama", "serve"): _LLAMACPP,  # the unified llama binary
    ("trtllm-serve", "serve"): _TRTLLM,
    ("trtllm-serve", None): _TRTLLM,  # serve is the default subcommand (DefaultGroup)
    ("trtllm-serve", "disaggregated"): _TRTLLM_PROXY,
    # the workers of an MPI-launched disaggregated setup (their ports are in the YAML), the gRPC
    # server and the multimodal encoder: no Prometheus text of their own (commands/serve.py)
    ("trtllm-serve", "disaggregated_mpi_worker"): replace(_TRTLLM_PROXY, name="trtllm-disaggregated-worker"),
    ("trtllm-serve", "grpc"): replace(_TRTLLM_PROXY, name="trtllm-grpc", default_port=50051,
                                      port=(_Source(("--port",)),), model=_TRTLLM.model),
    ("trtllm-serve", "mm_embedding_serve"): replace(_TRTLLM_PROXY, name="trtllm-encoder",
                                                    port=(_Source(("--port",)),)),
    ("nim-serve", None): _NIM,
    ("lmdeploy", "serve api_server"): _LMDEPLOY,
    ("dynamo.vllm", None): _DYNAMO_VLLM,
    ("dynamo.sglang", None): _DYNAMO_SGLANG,
    ("dynamo.trtllm", None): _DYNAMO_TRTLLM,
    ("dynamo.frontend", None): _DYNAMO_FRONTEND,
    ("huggingfaceserver", None): _KSERVE,
    ("ollama", "serve"): _OLLAMA,
    ("ollama", "runner"): _OLLAMA_RUNNER,
    ("ollama_llama_server", None): _OLLAMA_RUNNER,
}
_ENV_KEYS = tuple(
    sorted({s.env for p in _PROGRAMS.values() for s in (*p.model, *p.port, *p.metrics, *p.host) if s.env})
)
_PROGRAM_NAMES = frozenset(name for name, _sub in _PROGRAMS)
_NO_PROGRAM = _Program("", 0)


# read by exporter.engines.discovery (metrics switches, ports of engines found otherwise); a test
# checks that every variable it reads is listed here
DISCOVERY_ENV_KEYS = ("LLAMA_ARG_ENDPOINT_METRICS", "NIM_SERVER_PORT", "LLAMA_ARG_MODELS_DIR",
                      "LLAMA_ARG_MODELS_PRESET")


_ALL_ENV_KEYS = tuple(sorted({*_ENV_KEYS, *DISCOVERY_ENV_KEYS}))


def env_keys() -> tuple[str, ...]:
    """Every environment variable a known server reads its model, ports or metrics switch from
    (and nothing else: an environment holds tokens and keys)."""
    return _ALL_ENV_KEYS


def wants_environ(argv: Sequence[str]) -> bool:
    """Whether ``argv`` is a program whose settings may come from its environment: one of the
    servers of the table. Cheap; called once per new process."""
    try:
        if len(argv) == 1 and " " in argv[0]:
            argv = argv[0].split()
        found = _program(argv) if argv and argv[0] else None
    except (TypeError, ValueError, AttributeError, IndexError):
        return False
    return found is not None and found[0] in _PROGRAM_NAMES
_OLLAMA_BLOB = re.compile(r"/blobs/sha256[-:][0-9a-f]+$")

# --- argv reading --------------------------------------------------------------------------------

_PYTHON = re.compile(r"python\d*(\.\d+)?$")
_PY_OPTS_WITH_ARG = frozenset(("-X", "-W", "-Q"))


def _program(argv: Sequence[str]) -> tuple[str, list[str]] | None:
    """(program name, its arguments), looking through a Python interpreter."""
    name, args = _basename(argv[0]), list(argv[1:])
    if not _PYTHON.match(name):
        return name, args
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-m":
            return (args[i + 1], args[i + 2 :]) if i + 1 < len(args) else None
        if arg.startswith("-m"):
            return arg[2:], args[i + 1 :]
        if arg.startswith("-c") or arg == "-":
            return None
        if not arg.startswith("-"):
            return _basename(arg), args[i + 1 :]
        i += 2 if arg in _PY_OPTS_WITH_ARG else 1
    return None


def _norm(flag: str) -> str:
    return flag.replace("_", "-") if flag.startswith("--") else flag


def _flag(args: Sequence[str], names: tuple[str, ...]) -> str | None:
    """Value of the last ``--x=y`` or ``--x y`` among ``names`` (``_`` and ``-`` alike in long
    flags, as vLLM and trtllm-serve accept both)."""
    value = None
    for i, arg in enumerate(args):
        key, eq, attached = arg.partition("=")
        if _norm(key) not in names:
            continue
        if eq:
            value = attached
        elif i + 1 < len(args) and not args[i + 1].startswith("-"):
            value = args[i + 1]
    return value or None


# argparse switches by the engines' naming: --enable-x/--disable-x (store_true), --no-x (the
# negative of a BooleanOptionalAction): they take no value
_SWITCH_PREFIXES = ("--no-", "--enable-", "--disable-")


def _attached_short(arg: str) -> bool:
    """``-O3``, ``-tp2``: a short option with its value attached takes no separate value."""
    return arg.startswith("-") and not arg.startswith("--") and len(arg) > 2


def _positional(args: Sequence[str], program: _Program) -> str | None:
    """The first positional argument: ``args[0]``, or with ``positional_anywhere`` the first one
    that no flag takes as its value (``vllm serve --port 8000 Qwen/Qwen3-8B``)."""
    if args and not args[0].startswith("-"):
        return args[0]
    if not program.positional_anywhere:
        return None
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-"):
            return arg
        if arg == "--":  # the end of the flags: what follows is positional
            return args[i + 1] if i + 1 < len(args) else None
        key, eq, _v = arg.partition("=")
        key = _norm(key)
        i += 1
        if eq or key in program.bool_flags or key.startswith(_SWITCH_PREFIXES) or _attached_short(arg):
            continue
        if key in program.list_flags:
            while i < len(args) and not args[i].startswith("-"):
                i += 1
        elif i < len(args) and not args[i].startswith("-"):
            i += 1  # the flag's value
    return None


def _lookup(
    sources: tuple[_Source, ...], args: Sequence[str], env: Mapping[str, str],
    program: _Program | None = None,
) -> str | None:
    for src in sources:
        value = (
            (_positional(args, program or _NO_PROGRAM) if src.positional else None)
            or _flag(args, src.flags)
            or (env.get(src.env) if src.env else None)
        )
        if value:
            return src.convert(value)
    return None


def _is_llamacpp_router(args: Sequence[str], env: Mapping[str, str]) -> bool:
    has_model = _lookup(_LLAMACPP.model[1:], args, env)
    routed = any(_flag(args, (f,)) for f in _LLAMACPP_ROUTER_FLAGS) or any(
        env.get(v) for v in ("LLAMA_ARG_MODELS_DIR", "LLAMA_ARG_MODELS_PRESET"))
    return routed and not has_model


def is_llamacpp_router(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> bool:
    """A llama.cpp server in router mode (its metrics are per model: ``/metrics?model=``)."""
    identity = detect(argv, environ)
    return identity is not None and identity.program == _LLAMACPP_ROUTER.name


def _bind_host(value: str | None) -> str:
    """A bind address that is one IP (not a wildcard, not loopback): where to reach the server."""
    import ipaddress

    try:
        ip = ipaddress.ip_address((value or "").strip("[]"))
    except ValueError:
        return ""  # a host name (localhost, the node's name), or nothing: 127.0.0.1 is tried
    if ip.is_unspecified or ip == ipaddress.ip_address("127.0.0.1") or ip == ipaddress.ip_address("::1"):
        return ""
    return f"[{ip}]" if ip.version == 6 else str(ip)


def _port(value: str | None) -> int | None:
    if value and value.isascii() and value.isdigit() and 0 < int(value) < 65536:
        return int(value)
    return None


@lru_cache(maxsize=4096)
def _detect(
    argv: tuple[str, ...], env_items: tuple[tuple[str, str], ...]
) -> tuple[EngineIdentity, bool] | None:
    """(identity with defaults filled in, whether it is a helper process) or None."""
    if len(argv) == 1 and " " in argv[0]:  # a title set over argv, e.g. by setproctitle
        argv = tuple(argv[0].split())
    if not argv or not argv[0]:
        return None
    found = _program(argv)
    if found is None:
        return None
    name, args = found
    if len(args) > 1 and (name, f"{args[0]} {args[1]}") in _PROGRAMS:
        program, args = _PROGRAMS[(name, f"{args[0]} {args[1]}")], args[2:]
    elif args and (name, args[0]) in _PROGRAMS:
        program, args = _PROGRAMS[(name, args[0])], args[1:]
    else:
        program = _PROGRAMS.get((name, None))
    if program is None:
        return None
    env = dict(env_items)
    if program is _LLAMACPP and _OLLAMA_BLOB.search(_flag(args, ("--model", "-m")) or ""):
        program = _OLLAMA_RUNNER  # Ollama ≥ 0.30 runs upstream llama-server on its blobs
    elif program is _LLAMACPP and _is_llamacpp_router(args, env):
        program = _LLAMACPP_ROUTER
    model = _lookup(program.model, args, env, program) or program.default_model
    port = _port(_lookup(program.port, args, env)) or program.default_port or None
    metrics_port = (
        _port(_lookup(program.metrics, args, env)) or program.default_metrics_port or port
    )
    name = program.name or program.engine
    endpoint = f"{name}-{port}" if port else name
    identity = EngineIdentity(program.engine, model, port, metrics_port, endpoint, program.scraped,
                              program.name, _bind_host(_lookup(program.host, args, env)))
    return identity, program.helper


def _identify(
    argv: Sequence[str], environ: Mapping[str, str] | None
) -> tuple[EngineIdentity, bool] | None:
    """``_detect`` on untrusted input: what is not text gives None, never an error."""
    try:
        env = tuple((k, v) for k in _ALL_ENV_KEYS if environ and isinstance(v := environ.get(k), str))
        return _detect(tuple(argv), env)
    except (TypeError, ValueError, AttributeError):
        return None


def is_helper(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``argv`` is a helper process of a server (a shard, a backend stub, a runner)."""
    hit = _identify(argv, environ)
    return hit is not None and hit[1]


def detect(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> EngineIdentity | None:
    """The inference server that ``argv`` (and ``environ``) describe, or None.

    Flags beat environment variables, which beat documented defaults. Helper processes (TGI
    shards, Triton Python stubs, Ollama runners) get their engine's default port here; ``resolve``
    replaces it with the port of the server they belong to.
    """
    hit = _identify(argv, environ)
    return hit[0] if hit else None


# --- process tree ---------------------------------------------------------------------------------


def _ancestry(pid: int, procs: Mapping[int, ProcLike], max_depth: int) -> Iterator[ProcLike]:
    """The process and its ancestors, at most ``max_depth`` in all; stops at a missing parent or
    a cycle."""
    seen: set[int] = set()
    while len(seen) < max_depth and pid not in seen and (proc := procs.get(pid)) is not None:
        seen.add(pid)
        yield proc
        pid = proc.ppid


def resolve(
    pid: int, procs: Mapping[int, ProcLike], max_depth: int = 8
) -> tuple[EngineIdentity, int] | None:
    """The identity of ``pid``: its own, or its nearest identifiable ancestor's, with the pid that
    carried it. O(depth): each step is a cached parse of that process's argv.

    Every process of one server lands on one endpoint: the outermost server of the same engine
    in the ancestry names the endpoint (TGI's launcher over its router child, llama.cpp's router
    over its per-model children), and the innermost process with a model names the model (a
    llama.cpp child's ``--alias``, a Triton stub's model directory). Helper processes (TGI
    shards, Triton stubs, Ollama runners) never name the endpoint.
    """
    own: tuple[EngineIdentity, int] | None = None   # the innermost identifiable process
    server: EngineIdentity | None = None            # the outermost server of own's engine so far
    for proc in _ancestry(pid, procs, max_depth):
        hit = _identify(proc.cmdline, getattr(proc, "environ", None))
        if hit is None:
            continue
        identity, is_helper = hit
        if own is None:
            own = identity, proc.pid
        elif identity.engine != own[0].engine:
            break  # another engine's process above: a wrapper, not this server
        if not is_helper:
            server = identity
    if own is None:
        return None
    if server is None:
        return own
    model = own[0].model or server.model
    return (server if model == server.model else replace(server, model=model)), own[1]
