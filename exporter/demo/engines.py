"""Simulated inference servers for ``wattprint demo`` (and the tests): processes that look like
vLLM, Triton and SGLang in procfs and on the wire, serving each server's upstream metric text
(``data/*.prom``, whose sources ``data/SOURCES.md`` and each file's header cite) with the
counters that simulated inference traffic moves.

Each runs with the upstream command line, so that ``wattprint serve`` finds it as it finds the
real server (exporter/identity/cmdline.py, exporter/engines/discovery.py)::

    vllm serve MODEL --port N [--host IP]
    tritonserver --model-repository DIR --http-port N --metrics-port M
    python -m sglang.launch_server --model-path MODEL --port N --enable-metrics

(``demo`` starts them through small launchers named after the upstream programs: see
:func:`launchers`). The traffic is :class:`exporter.sensors.simtraffic.Traffic` of the scenario's
GPU ``$SIM_TRAFFIC`` = ``<scenario.yaml>:<gpu index>`` on the scenario's ``start_unix``: the
simulated NVML prices that GPU's power from the same schedule. The process writes its pid to
``$SIM_PID_FILE`` (the scenario's ``pid_file``: the simulated GPU then shows it as resident).
With ``$SIM_RESTART_AT_S`` the counters restart from 0 at that time (a server restart).

What moves, per server (every other sample keeps the fixture's value; a sample of a moved
family that no rule names reads 0, as a pre-created series that never grew):

- vLLM (``vllm_current.prom``, data-parallel rank 0 only): ``vllm:prompt_tokens_total``,
  ``vllm:generation_tokens_total``, ``vllm:request_success_total{finished_reason="stop"}``;
- SGLang (``sglang_current.prom``): the token and request counters, split 60/40 between
  ``is_streaming="true"`` and ``"false"``, and device prefix-cache hits (a quarter of the prompt);
- Triton (``triton.prom``; one GPU, versions 1 only, no GPU block: as with
  ``--allow-gpu-metrics=false``): two models, the first two directories of the model repository,
  sharing the traffic's requests 70/30 with 100 and 250 µs of compute per generated token, so
  that their energy split (by compute time) differs from their request split.
"""

from __future__ import annotations

import errno
import math
import os
import sys
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Callable

import yaml

from ..sensors.simtraffic import Traffic

ADDRESS_IN_USE = 98  # the exit status when the port is taken (EADDRINUSE's number): the demo takes another
Counters = dict[str, float]
# a rule: (a substring the sample line holds, or "" for any; the counter; its factor)
Rule = tuple[str, str, float]


@dataclass(frozen=True)
class Shape:
    fixture: str
    models: dict[str, str]                 # the fixture's model name → the served one's key
    moves: dict[str, tuple[Rule, ...]]     # family → rules, first match wins
    drop: tuple[str, ...] = ()             # sample lines holding one of these are left out
    drop_families: tuple[str, ...] = ()    # families left out (HELP, TYPE and samples)
    listen: Callable[[list[str]], tuple[str, int]] = field(default=lambda argv: ("127.0.0.1", 0))


def _opt(argv: list[str], name: str, default: str | None = None) -> str:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    if default is None:
        raise SystemExit(f"{name} is required")
    return default


SHAPES = {
    "vllm": Shape(
        fixture="vllm_current.prom", models={"Qwen/Qwen3-8B": "model"}, drop=('engine="1"',),
        moves={"vllm:prompt_tokens_total": (("", "prompt_tokens", 1.0),),
               "vllm:generation_tokens_total": (("", "generation_tokens", 1.0),),
               "vllm:request_success_total": (('finished_reason="stop"', "requests", 1.0),)},
        listen=lambda argv: (_opt(argv, "--host", "127.0.0.1"), int(_opt(argv, "--port", "8000")))),
    "sglang": Shape(
        fixture="sglang_current.prom", models={"meta-llama/Llama-3.1-8B-Instruct": "model"},
        moves={"sglang:prompt_tokens_total": (('is_streaming="true"', "prompt_tokens", 0.6),
                                              ('is_streaming="false"', "prompt_tokens", 0.4)),
               "sglang:generation_tokens_total": (('is_streaming="true"', "generation_tokens", 0.6),
                                                  ('is_streaming="false"', "generation_tokens", 0.4)),
               "sglang:num_requests_total": (('is_streaming="true"', "requests", 0.6),
                                             ('is_streaming="false"', "requests", 0.4)),
               "sglang:num_aborted_requests_total": (),
               "sglang:cached_tokens_total": (('cache_source="device"', "prompt_tokens", 0.25),)},
        listen=lambda argv: (_opt(argv, "--host", "127.0.0.1"), int(_opt(argv, "--port", "30000")))),
    "triton": Shape(
        fixture="triton.prom", models={"mistral7b": "model0", "llama2": "model1"},
        drop=('version="2"', "vllm_model", "GPU-5c3e1a2b"),
        drop_families=("nv_gpu_", "nv_energy_consumption"),
        moves={"nv_inference_request_success": (('"mistral7b"', "requests", 0.7), ('"llama2"', "requests", 0.3)),
               "nv_inference_count": (('"mistral7b"', "requests", 0.7), ('"llama2"', "requests", 0.3)),
               "nv_inference_request_failure": (),
               "nv_inference_compute_infer_duration_us": (('"mistral7b"', "generation_tokens", 0.7 * 100),
                                                          ('"llama2"', "generation_tokens", 0.3 * 250))},
        listen=lambda argv: ("127.0.0.1", int(_opt(argv, "--metrics-port", "8002")))),
}


def fixture_text(name: str) -> str:
    return resources.files(__package__).joinpath("data", name).read_text(encoding="utf-8")


def _name(line: str) -> str:
    """The metric a line is about: a sample's name, a HELP or TYPE line's family, else ""."""
    if line.startswith(("# HELP ", "# TYPE ")):
        return line.split(" ", 3)[2]
    return "" if line.startswith("#") else line.split("{", 1)[0].split(" ", 1)[0]


class Exposition:
    """A server's metric text at a time: the fixture's lines, edited once, values filled per
    request."""

    def __init__(self, shape: Shape, names: dict[str, str]) -> None:
        raw = [line for line in fixture_text(shape.fixture).split("\n")
               if not any(d in line for d in shape.drop) and not _name(line).startswith(shape.drop_families)]
        kept = {_name(line) for line in raw if line and not line.startswith("#")}
        self.lines: list[tuple[str, bool, Rule | None]] = []  # (line, moved, its rule)
        for line in raw:
            name = _name(line)
            if line.startswith(("# HELP ", "# TYPE ")) and not any(k == name or k.startswith(name + "_") for k in kept):
                continue  # a family left without samples
            moved = not line.startswith("#") and name in shape.moves
            rule = next((r for r in shape.moves[name] if r[0] in line), None) if moved else None
            for old, key in shape.models.items():
                line = line.replace(f'"{old}"', f'"{names[key]}"')
            self.lines.append((line, moved, rule))

    def text(self, counters: Counters) -> bytes:
        out = []
        for line, moved, rule in self.lines:
            if moved:
                v = float(math.floor(counters[rule[1]] * rule[2])) if rule else 0.0
                line = f"{line.rsplit(' ', 1)[0]} {v!r}"
            out.append(line)
        return "\n".join(out).encode()


def model_names(kind: str, argv: list[str]) -> dict[str, str]:
    """The served model names, from the command line as the real server takes them: vLLM's
    ``serve MODEL``, SGLang's ``--model-path`` (its served_model_name by default), Triton's model
    repository (one directory a model: the first two, sorted)."""
    if kind == "vllm":
        return {"model": argv[1] if len(argv) > 1 and argv[0] == "serve" else "Qwen/Qwen3-8B"}
    if kind == "sglang":
        return {"model": _opt(argv, "--model-path")}
    repo = Path(_opt(argv, "--model-repository"))
    models = sorted(p.name for p in repo.iterdir() if p.is_dir()) if repo.is_dir() else []
    if len(models) < 2:
        raise SystemExit(f"--model-repository {repo}: expected two model directories, found {models}")
    return {"model0": models[0], "model1": models[1]}


def _traffic() -> tuple[Traffic, float]:
    scenario, _, index = os.environ["SIM_TRAFFIC"].rpartition(":")
    spec = yaml.safe_load(Path(scenario).read_text())
    gpu = spec["gpus"][int(index)]
    return Traffic.parse(gpu["traffic"], f"gpus[{index}].traffic"), float(spec["start_unix"])


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, 15, 0, 0, 0)  # PR_SET_PDEATHSIG = SIGTERM: never outlive the launcher
    except (OSError, AttributeError):
        pass


def main(kind: str, argv: list[str] | None = None) -> None:
    """Serve ``kind``'s metrics (``vllm``, ``sglang`` or ``triton``) until terminated."""
    argv = list(sys.argv[1:] if argv is None else argv)
    shape = SHAPES[kind]
    _die_with_parent()
    traffic, start = _traffic()
    restart_at = float(os.environ.get("SIM_RESTART_AT_S", "inf"))
    exposition = Exposition(shape, model_names(kind, argv))

    def body() -> bytes:
        t = time.time() - start
        c = traffic.counters(t)
        if t >= restart_at:  # the restarted server counts from 0 again
            before = traffic.counters(restart_at)
            c = {k: v - before[k] for k, v in c.items()}
        return exposition.text(c)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            data, status = (body(), 200) if self.path.split("?")[0] == "/metrics" else (b"not found\n", 404)
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    host, port = shape.listen(argv)
    try:
        httpd = ThreadingHTTPServer((host, port), Handler)
    except OSError as e:
        print(f"{kind}: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr, flush=True)
        sys.exit(ADDRESS_IN_USE if e.errno == errno.EADDRINUSE else 1)
    Path(os.environ["SIM_PID_FILE"]).write_text(str(os.getpid()))
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


def launchers(directory: Path) -> dict[str, list[str]]:
    """Launchers named after the upstream programs, in ``directory``: ``bin/vllm``,
    ``bin/tritonserver`` (scripts run by this interpreter) and a ``sglang.launch_server`` module
    under ``py/`` (for ``python -m``, with ``py`` on PYTHONPATH). Returns each kind's command
    prefix."""
    pkg_root = str(Path(__file__).resolve().parents[2])  # where ``exporter`` is imported from
    (directory / "bin").mkdir(parents=True, exist_ok=True)
    (directory / "py" / "sglang").mkdir(parents=True, exist_ok=True)
    code = ("import sys; sys.path.insert(0, {root!r}); from exporter.demo.engines import main; "
            "main({kind!r})\n")
    for prog, kind in (("vllm", "vllm"), ("tritonserver", "triton")):
        path = directory / "bin" / prog
        path.write_text(f"#!{sys.executable}\n" + code.format(root=pkg_root, kind=kind))
        path.chmod(0o755)
    (directory / "py" / "sglang" / "__init__.py").write_text("")
    (directory / "py" / "sglang" / "launch_server.py").write_text(code.format(root=pkg_root, kind="sglang"))
    return {"vllm": [str(directory / "bin" / "vllm")], "triton": [str(directory / "bin" / "tritonserver")],
            "sglang": [sys.executable, "-m", "sglang.launch_server"]}
