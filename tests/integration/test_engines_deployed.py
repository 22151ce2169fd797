"""Inference servers as they are really deployed (issue 13): each shape is a process started with
the upstream command line and environment (``tests/fixtures/engines/fake_engine.py`` under the
upstream program's name), laying out its process tree as upstream does and serving an
upstream-shaped exposition (``tests/fixtures/engines_text``, each citing its source), on a
simulated GPU of its own, under one real ``wattprint serve``.

For every shape: the requests (or tokens, where the engine has no request counter) are counted
exactly (the fake moves every sample by ``K``: a counted family moves by ``K`` per counted
series), and the energy and the requests land on the **same** ``namespace/endpoint/model``.
The shapes where nothing may be scraped (a front end, a proxy, metrics off, ``--headless``) are
checked not to be, with their energy still booked.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support import ROOT, parse_metrics, start_daemon, stop_all, write_scenario

pytestmark = pytest.mark.integration

FAKE = ROOT / "tests" / "fixtures" / "engines" / "fake_engine.py"
K = 7  # the fake engines' tick: every served sample moves by K


_TAKEN: set[int] = set()


def free_ports(n: int) -> list[int]:
    """n consecutive free ports (vLLM's multi-port data parallel uses --port + rank), none handed
    out before (the servers bind theirs later)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n >= 65000:
            continue
        ok = not _TAKEN & set(range(base, base + n))
        for p in range(base, base + n) if ok else ():
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            _TAKEN.update(range(base, base + n))
            return list(range(base, base + n))
    raise RuntimeError("no free ports")


@dataclass
class Shape:
    name: str
    argv: list[str]                      # {bin}/program or {py} -m module; {p0}, {p1} ports
    nodes: dict                          # fake_engine nodes; the first is the process started
    env: dict = field(default_factory=dict)
    endpoint: str = ""                   # expected endpoint ({p0}…)
    model: str = ""                      # expected model on energy and requests
    requests: int | None = None          # counted request series (Δ = K × this)
    prompt: int | None = None            # counted prompt-token series
    generation: int | None = None
    scraped: bool = True                 # False: must not be scraped
    ports: int = 2
    gpu: str = "worker"                  # which process holds the GPU: worker, server, or a node name
    files: dict = field(default_factory=dict)  # name → text, written beside the spec (config files)


VLLM_TEXT = "vllm_current.prom"
# vLLM's counted series per rank: finished_reason stop, length, repetition (abort, error are not
# successes; all five are pre-created, vllm/v1/metrics/loggers.py)

SHAPES = [
    # vLLM: the model after the flags (argparse positional, vllm/entrypoints/openai/cli_args.py)
    Shape("vllm-model-after-flags", ["{bin}/vllm", "serve", "--port", "{p0}", "Qwen/Qwen3-8B"],
          {"n": {"serve": [{"port": "{p0}", "routes": {"/metrics": VLLM_TEXT}}], "worker": "VLLM::EngineCore"}},
          endpoint="vllm-{p0}", model="Qwen/Qwen3-8B", requests=6, prompt=2, generation=2),
    # vLLM: model and port only in --config (vllm/utils/argparse_utils.py: each key is a flag)
    Shape("vllm-config-only", ["{bin}/vllm", "serve", "--config", "vllm-config.yaml"],
          {"n": {"serve": [{"port": "{p0}", "routes": {"/metrics": VLLM_TEXT}}], "worker": "VLLM::EngineCore"}},
          files={"vllm-config.yaml": "model: Qwen/Qwen3-8B\nport: {p0}\nenforce_eager: true\n"},
          endpoint="vllm-8000", model="Qwen/Qwen3-8B", requests=6),
    # vLLM: no model at all serves ModelConfig.model's default, Qwen/Qwen3-0.6B
    Shape("vllm-default-model", ["{bin}/vllm", "serve", "--port", "{p0}"],
          {"n": {"serve": [{"port": "{p0}", "routes": {"/metrics": VLLM_TEXT},
                            "replace": {"Qwen/Qwen3-8B": "Qwen/Qwen3-0.6B"}}], "worker": "VLLM::EngineCore"}},
          endpoint="vllm-{p0}", model="Qwen/Qwen3-0.6B", requests=6),
    # vLLM data parallel, --data-parallel-multi-port-external-lb: one API server per local rank on
    # --port + rank, each counting its own rank only (vllm/entrypoints/openai/dp_supervisor.py)
    Shape("vllm-dp-multi-port", ["{bin}/vllm", "serve", "Qwen/Qwen3-8B", "--data-parallel-size", "2",
                                 "--data-parallel-size-local", "2", "--data-parallel-multi-port-external-lb",
                                 "--port", "{p0}"],
          {"n": {"serve": [{"port": "{p0}", "routes": {"/metrics": VLLM_TEXT}, "grep": 'engine="0"'},
                           {"port": "{p1}", "routes": {"/metrics": VLLM_TEXT}, "grep": 'engine="1"'}],
                 "worker": "VLLM::EngineCore"}},
          endpoint="vllm-{p0}", model="Qwen/Qwen3-8B", requests=6),
    # vLLM --headless: engines only, no HTTP (the head's API server reports them)
    Shape("vllm-headless", ["{bin}/vllm", "serve", "Qwen/Qwen3-8B", "--headless", "--data-parallel-size", "4",
                            "--data-parallel-start-rank", "2", "--port", "{p0}"],
          {"n": {"worker": "VLLM::EngineCore"}}, endpoint="vllm-{p0}", model="Qwen/Qwen3-8B", scraped=False),
    # KServe huggingfaceserver: vLLM in-process, label = --model_id (huggingfaceserver/__main__.py)
    Shape("kserve-huggingfaceserver", ["{py}", "-m", "huggingfaceserver", "--model_name=qwen",
                                       "--model_id=Qwen/Qwen3-8B", "--http_port={p0}"],
          {"n": {"serve": [{"port": "{p0}", "routes": {"/metrics": VLLM_TEXT}}], "worker": "VLLM::EngineCore"}},
          endpoint="kserve-{p0}", model="Qwen/Qwen3-8B", requests=6),
    # SGLang: sglang serve MODEL (positional, rewritten to --model-path by sglang/cli/serve.py)
    Shape("sglang-serve-positional", ["{bin}/sglang", "serve", "Qwen/Qwen3-32B", "--port", "{p0}", "--enable-metrics"],
          {"n": {"serve": [{"port": "{p0}", "routes": {"/metrics": "sglang_current.prom"},
                            "replace": {"meta-llama/Llama-3.1-8B-Instruct": "Qwen/Qwen3-32B"}}],
                 "worker": "sglang::scheduler_TP0"}},
          endpoint="sglang-{p0}", model="Qwen/Qwen3-32B", requests=2, prompt=2, generation=2),
    # SGLang --smg-grpc-mode: gRPC on --port, /metrics on the sidecar at --port + 1
    Shape("sglang-grpc-mode", ["{py}", "-m", "sglang.launch_server", "--model-path", "Qwen/Qwen3-8B",
                               "--smg-grpc-mode", "--enable-metrics", "--port", "{p0}"],
          {"n": {"serve": [{"port": "{p1}", "routes": {"/metrics": "sglang_current.prom"},
                            "replace": {"meta-llama/Llama-3.1-8B-Instruct": "Qwen/Qwen3-8B"}}],
                 "worker": "sglang::scheduler_TP0"}},
          endpoint="sglang-{p0}", model="Qwen/Qwen3-8B", requests=2),
    # TGI in its image: the port only in the launcher's environment (PORT), the router child
    # given --port explicitly (launcher/src/main.rs), the shards holding the GPU
    Shape("tgi-port-from-env", ["{bin}/text-generation-launcher"],
          {"n": {"children": [
              {"node": "router", "argv": ["{bin}/text-generation-router", "--max-concurrent-requests", "128",
                                          "--tokenizer-name", "HuggingFaceH4/zephyr-7b-beta", "--port", "{p0}"]},
              {"node": "shard", "argv": ["{bin}/text-generation-server", "serve", "HuggingFaceH4/zephyr-7b-beta",
                                         "--uds-path", "/tmp/text-generation-server"]}]},
           "router": {"serve": [{"port": "{p0}", "routes": {"/metrics": "tgi.prom"}}]},
           "shard": {}},
          env={"MODEL_ID": "HuggingFaceH4/zephyr-7b-beta", "PORT": "{p0}"},
          endpoint="tgi-{p0}", model="HuggingFaceH4/zephyr-7b-beta", requests=1, prompt=1, generation=1,
          gpu="shard"),
    # Triton serving one model: energy on that model, not model=""
    Shape("triton-one-model", ["{bin}/tritonserver", "--model-repository=/models", "--http-port={p1}",
                               "--metrics-port={p0}"],
          {"n": {"serve": [{"port": "{p0}", "routes": {"/metrics": "triton.prom"}, "grep": 'model="mistral7b"'}]}},
          endpoint="triton-{p1}", model="mistral7b", requests=1, gpu="server"),
    # Triton + TensorRT-LLM, streamed: requests are the ensemble's (postprocessing runs per chunk)
    Shape("triton-trtllm-streaming", ["{bin}/tritonserver", "--model-repository=/all_models/inflight_batcher_llm",
                                      "--http-port={p1}", "--metrics-port={p0}"],
          {"n": {"serve": [{"port": "{p0}", "routes": {"/metrics": "triton_trtllm_streaming.prom"}}]}},
          endpoint="triton-{p1}", model="ensemble", requests=1, prompt=1, generation=1, gpu="server"),
    # llama.cpp configured by its environment only (common/arg.cpp LLAMA_ARG_*)
    Shape("llamacpp-env-only", ["{bin}/llama-server"],
          {"n": {"serve": [{"port": "{p0}", "routes": {"/metrics": "llamacpp_current.prom"}}]}},
          env={"LLAMA_ARG_MODEL": "/models/phi-3-mini.gguf", "LLAMA_ARG_PORT": "{p0}",
               "LLAMA_ARG_ENDPOINT_METRICS": "1"},
          endpoint="llamacpp-{p0}", model="phi-3-mini", prompt=2, generation=1, gpu="server"),
    # llama.cpp, the unified binary
    Shape("llama-serve", ["{bin}/llama", "serve", "-m", "/models/gemma-3-1b-it-Q4_K_M.gguf", "--metrics",
                          "--port", "{p0}"],
          {"n": {"serve": [{"port": "{p0}", "routes": {"/metrics": "llamacpp_legacy.prom"}}]}},
          endpoint="llamacpp-{p0}", model="gemma-3-1b-it-Q4_K_M", prompt=1, generation=1, gpu="server"),
    # llama.cpp router mode: per-model children; the router's /metrics needs ?model= (and loads a
    # model unless autoload=false); the children are not scraped on their own (counted once)
    Shape("llamacpp-router", ["{bin}/llama-server", "--models-dir", "/models", "--metrics", "--port", "{p0}"],
          {"n": {"serve": [{"port": "{p0}", "models": "llamacpp_models.json",
                            "per_model": {"qwen3-8b": "llamacpp_current.prom"}}],
                 "children": [{"node": "child", "argv": [
                     "{bin}/llama-server", "--alias", "qwen3-8b", "--ctx-size", "32768", "--host", "127.0.0.1",
                     "--metrics", "--model", "/models/Qwen3-8B-Q4_K_M.gguf", "--n-gpu-layers", "99",
                     "--port", "{p1}"]}]},
           "child": {"serve": [{"port": "{p1}", "routes": {"/metrics": "llamacpp_current.prom"}}]}},
          endpoint="llamacpp-router-{p0}", model="qwen3-8b", prompt=2, generation=1, gpu="child"),
    # TRT-LLM: /prometheus/metrics only with return_perf_metrics: true in --config; /metrics is
    # JSON that a read drains (never read)
    Shape("trtllm-perf-metrics", ["{bin}/trtllm-serve", "/models/Llama-3.1-8B-Instruct", "--port", "{p0}",
                                  "--config", "{dir}/trtllm-options.yaml"],
          {"n": {"serve": [{"port": "{p0}", "routes": {"/prometheus/metrics": "trtllm_current.prom"},
                            "forbidden": ["/metrics"]}], "worker": "python3"}},
          files={"trtllm-options.yaml": (ROOT / "tests/fixtures/engines_text/trtllm_extra_options.yaml").read_text()},
          endpoint="trtllm-{p0}", model="Llama-3.1-8B-Instruct", requests=2, prompt=1, generation=1),
    Shape("trtllm-metrics-off", ["{bin}/trtllm-serve", "/models/Llama-3.1-8B-Instruct", "--port", "{p0}"],
          {"n": {"serve": [{"port": "{p0}", "forbidden": ["/metrics", "/prometheus/metrics"]}], "worker": "python3"}},
          endpoint="trtllm-{p0}", model="Llama-3.1-8B-Instruct", scraped=False),
    Shape("trtllm-disaggregated-proxy", ["{bin}/trtllm-serve", "disaggregated", "-c", "{dir}/disagg.yaml"],
          {"n": {"serve": [{"port": "{p0}", "forbidden": ["/metrics", "/prometheus/metrics"]}]}},
          files={"disagg.yaml": "hostname: localhost\nport: {p0}\ncontext_servers:\n  num_instances: 1\n"
                                "  urls: [\"localhost:8001\"]\ngeneration_servers:\n  num_instances: 1\n"
                                "  urls: [\"localhost:8002\"]\n"},
          endpoint="trtllm-disaggregated-8000", scraped=False, gpu="server"),
    # LMDeploy: success is finished_reason="ResponseType.FINISH" (an include-list: 12 other
    # pre-created series move too and are not counted); the engine child renamed ZMQMPEngine
    Shape("lmdeploy", ["{bin}/lmdeploy", "serve", "api_server", "internlm/internlm2_5-7b-chat",
                       "--server-port", "{p0}", "--backend", "pytorch"],
          {"n": {"serve": [{"port": "{p0}", "routes": {"/metrics": "lmdeploy.prom"}}], "worker": "ZMQMPEngine"}},
          endpoint="lmdeploy-{p0}", model="internlm/internlm2_5-7b-chat", requests=1, prompt=1, generation=1),
    # NIM with an SGLang backend: /v1/metrics on NIM_SERVER_PORT shows sglang:* names
    Shape("nim-sglang-backend", ["{bin}/nim-serve"],
          {"n": {"serve": [{"port": "{p0}", "routes": {"/v1/metrics": "nim_sglang_backend.prom"}}],
                 "worker": "sglang::schedul"}},
          env={"NIM_SERVER_PORT": "{p0}", "NIM_SERVED_MODEL_NAME": "meta/llama-3.1-8b-instruct"},
          endpoint="nim-{p0}", model="meta/llama-3.1-8b-instruct", prompt=1, generation=1),
    # Dynamo: the worker holds the GPU and passes vLLM's metrics through on DYN_SYSTEM_PORT
    Shape("dynamo-vllm-worker", ["{py}", "-m", "dynamo.vllm", "--model", "Qwen/Qwen3-8B"],
          {"n": {"serve": [{"port": "{p0}", "routes": {"/metrics": "dynamo_worker_vllm.prom"}}],
                 "worker": "VLLM::EngineCore"}},
          env={"DYN_SYSTEM_PORT": "{p0}"}, endpoint="dynamo-vllm-{p0}", model="Qwen/Qwen3-8B", requests=3),
    # Dynamo's front end: a router without a GPU; its counts are the workers' (not scraped)
    Shape("dynamo-frontend", ["{py}", "-m", "dynamo.frontend"],
          {"n": {"serve": [{"port": "{p0}", "routes": {"/metrics": "dynamo_frontend.prom"}, "forbidden": []}]}},
          env={"DYN_HTTP_PORT": "{p0}"}, endpoint="dynamo-frontend-{p0}", scraped=False, gpu="server"),
]


def _fill(obj, subs: dict):
    """The shape with its placeholders filled in (a port alone becomes an int)."""
    if isinstance(obj, str):
        if obj in ("{p0}", "{p1}"):
            return subs[obj[1:-1]]
        for k, v in subs.items():
            obj = obj.replace("{" + k + "}", str(v))
        return obj
    if isinstance(obj, list):
        return [_fill(x, subs) for x in obj]
    if isinstance(obj, dict):
        return {k: _fill(v, subs) for k, v in obj.items()}
    return obj


def _install(tmp: Path) -> tuple[Path, Path]:
    """Executables named as the upstream programs (a Python script: /proc shows
    ``python3 <bin>/<name> …``, as for every Python console script), and the modules run with -m."""
    bin_dir, pkgs = tmp / "bin", tmp / "pkgs"
    bin_dir.mkdir()
    run = f"import runpy, sys; sys.argv[0] = {str(FAKE)!r}; runpy.run_path({str(FAKE)!r}, run_name='__main__')\n"
    for name in ("vllm", "sglang", "text-generation-launcher", "text-generation-router", "text-generation-server",
                 "tritonserver", "llama-server", "llama", "trtllm-serve", "lmdeploy", "nim-serve"):
        (bin_dir / name).write_text(f"#!{sys.executable}\n{run}")
        (bin_dir / name).chmod(0o755)
    for module in ("huggingfaceserver", "sglang.launch_server", "dynamo.vllm", "dynamo.frontend"):
        path = pkgs.joinpath(*module.split("."))
        for parent in [pkgs.joinpath(*module.split(".")[:i]) for i in range(1, module.count(".") + 1)]:
            parent.mkdir(parents=True, exist_ok=True)
            (parent / "__init__.py").touch()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".py").write_text(run)
    return bin_dir, pkgs


def _pids(spec_dir: Path) -> dict[tuple[str, str], int]:
    out = {}
    if (spec_dir / "pids").exists():
        for line in (spec_dir / "pids").read_text().split("\n"):
            if line.strip():
                node, pid, role = line.split()
                out[(node, role)] = int(pid)
    return out


def _series(m: dict, name: str, **labels: str) -> dict[frozenset, float]:
    return {k: v for k, v in m.get(name, {}).items() if all(dict(k).get(a) == b for a, b in labels.items())}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deployed")
    bin_dir, pkgs = _install(tmp)
    procs, started = [], []
    d = None
    try:
        for i, shape in enumerate(SHAPES):
            sdir = tmp / f"s{i}"
            sdir.mkdir()
            ports = free_ports(shape.ports)
            subs = {"bin": bin_dir, "py": sys.executable, "dir": sdir, "p0": ports[0], "p1": ports[-1]}
            nodes = {f"{i}-{k}": _fill(v, subs) for k, v in shape.nodes.items()}
            for node in nodes.values():
                for child in node.get("children", []):
                    child["node"] = f"{i}-{child['node']}"
            (sdir / "spec.json").write_text(json.dumps(nodes))
            for name, text in shape.files.items():
                (sdir / name).write_text(_fill(text, subs))
            first = next(iter(nodes))
            env = {**os.environ, "PYTHONPATH": str(pkgs), "FAKE_ENGINE": f"{sdir / 'spec.json'}:{first}",
                   **{k: str(_fill(v, subs)) for k, v in shape.env.items()}}
            procs.append(subprocess.Popen([str(_fill(a, subs)) for a in shape.argv], env=env, cwd=sdir,
                                          stdout=subprocess.DEVNULL, stderr=open(sdir / "stderr", "w")))
            started.append((shape, sdir, subs))
        holders: list[int] = []
        deadline = time.time() + 30
        for shape, sdir, _subs in started:
            i = started.index((shape, sdir, _subs))
            want = (f"{i}-n", "worker") if shape.gpu == "worker" else (
                (f"{i}-n", "server") if shape.gpu == "server" else (f"{i}-{shape.gpu}", "server"))
            while want not in _pids(sdir):
                assert time.time() < deadline, f"{shape.name} did not start: {(sdir / 'stderr').read_text()}"
                time.sleep(0.1)
            holders.append(_pids(sdir)[want])
        scenario = write_scenario(tmp / "sim.yaml", {"driver_version": "550.54.15", "gpus": [
            {"name": "NVIDIA H100 80GB HBM3", "idle_w": 70, "max_w": 700,
             "processes": [{"pid": pid, "memory_gib": 20, "sm_util": 60}]} for pid in holders]})
        d = start_daemon(tmp, "--sample.interval=1s", "--engines.interval=1s", "--gpu.backend=simulated",
                         f"--gpu.simulation-file={scenario}", "--carbon.region=FR")
        expected_up = {_fill(s.endpoint, subs) for s, _d, subs in started if s.scraped}
        deadline, m = time.time() + 30, {}
        while time.time() < deadline:
            m = parse_metrics(d.get())
            up = {dict(k)["endpoint"] for k, v in m.get("wattprint_engine_scrape_up", {}).items() if v == 1}
            if expected_up <= up:
                break
            time.sleep(0.3)
        assert expected_up <= up, (expected_up - up, d.log.read_text()[-3000:])
        time.sleep(1.5)  # every target's first scrape (its baseline) is in
        before = parse_metrics(d.get())
        for _shape, sdir, _subs in started:
            (sdir / "tick").write_text(str(K))
        time.sleep(4.5)  # two scrapes and a sample
        after = parse_metrics(d.get())
        yield {"before": before, "after": after, "started": started, "log": d.log}
    finally:
        if d is not None:
            d.stop()
        stop_all(procs)


@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_requests_and_energy_meet_on_one_label_set(deployed, shape):
    shape_, sdir, subs = next(x for x in deployed["started"] if x[0] is shape)
    before, after = deployed["before"], deployed["after"]
    endpoint, model = _fill(shape.endpoint, subs), shape.model
    assert not (sdir / "loads").exists(), "a scrape loaded a model"
    assert not (sdir / "forbidden").exists(), (sdir / "forbidden").read_text()
    scraped = {dict(k)["endpoint"] for k in after.get("wattprint_engine_scrape_up", {})}
    energy = _series(after, "wattprint_endpoint_energy_joules_total", endpoint=endpoint, component="gpu")
    assert energy and sum(energy.values()) > 0, f"no GPU energy on endpoint {endpoint}"
    if not shape.scraped:
        assert endpoint not in scraped
        assert not _series(after, "wattprint_endpoint_requests_total", endpoint=endpoint)
        return
    # counted exactly: Δ = K × the counted series
    def delta(name: str, **labels: str) -> float:
        return sum(_series(after, name, **labels).values()) - sum(_series(before, name, **labels).values())

    for kind, n in (("requests", shape.requests), ("prompt", shape.prompt), ("generation", shape.generation)):
        if n is None:
            continue
        got = delta("wattprint_endpoint_requests_total", endpoint=endpoint, model=model) if kind == "requests" \
            else delta("wattprint_endpoint_tokens_total", endpoint=endpoint, model=model, kind=kind)
        assert got == K * n, f"{kind}: {got} != {K} × {n}"
    # every request series of this endpoint has its energy on the same label set, and the energy
    # booked while requests were counted went to that label set only
    req = _series(after, "wattprint_endpoint_requests_total", endpoint=endpoint) or \
        _series(after, "wattprint_endpoint_tokens_total", endpoint=endpoint)
    labelsets = {(dict(k)["namespace"], dict(k)["endpoint"], dict(k)["model"]) for k in req}
    assert labelsets == {("", endpoint, model)}
    grew = {dict(k)["model"] for k, v in energy.items()
            if v > before.get("wattprint_endpoint_energy_joules_total", {}).get(k, 0.0)}
    assert grew == {model}, f"GPU energy grew on models {grew}, requests on {model}"
