"""Tests of exporter.identity.cmdline: engine/model/port from argv, and the process-tree walk."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.identity import cmdline
from exporter.identity.cmdline import ENGINES, EngineIdentity, detect, resolve

BLOB = "/root/.ollama/models/blobs/sha256-6a0746a1ec1aef3e7ec53868f220ff6e389f6f8ef87a01d77c96807de94ca2aa"
STUB = "/opt/tritonserver/backends/python/triton_python_backend_stub"


def stub_argv(model_py: str, instance: str = "vllm_model_0_0") -> list[str]:
    """A Triton Python-backend stub as stub_launcher.cc execs it."""
    return [STUB, model_py, "triton_python_backend_shm_region_3", "1048576", "1048576", "212",
            "/opt/tritonserver/backends/python", "336", instance, "/opt/tritonserver/backends/vllm"]


def ident(engine: str, model: str, port: int, metrics_port: int | None = None) -> EngineIdentity:
    return EngineIdentity(engine, model, port, metrics_port or port, f"{engine}-{port}")


LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"

# (argv, environ, expected)
DETECT_CASES = [
    # vLLM
    (["vllm", "serve", LLAMA_8B, "--port", "8001", "--tensor-parallel-size", "2"], None,
     ident("vllm", LLAMA_8B, 8001)),
    (["/usr/bin/python3", "/usr/local/bin/vllm", "serve", "Qwen/Qwen2.5-7B-Instruct",
      "--served-model-name", "qwen", "qwen-7b", "--port=9000"], None,
     ident("vllm", "qwen", 9000)),
    (["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "/models/llama",
      "--host", "0.0.0.0"], None,
     ident("vllm", "/models/llama", 8000)),
    (["python3.11", "-u", "-m", "vllm.entrypoints.openai.api_server",
      "--model=mistralai/Mistral-7B-Instruct-v0.3", "--served_model_name", "mistral"], None,
     ident("vllm", "mistral", 8000)),
    (["vllm", "serve", "--model", "facebook/opt-125m", "--enforce-eager"], None,
     ident("vllm", "facebook/opt-125m", 8000)),
    (["/opt/venv/bin/python", "-m", "vllm.entrypoints.cli.main", "serve", "ibm-granite/granite-3.1-8b",
      "--port", "8080"], None,
     ident("vllm", "ibm-granite/granite-3.1-8b", 8080)),
    (["vllm serve Qwen/Qwen3-0.6B --port 8002"], None,  # argv overwritten by a title
     ident("vllm", "Qwen/Qwen3-0.6B", 8002)),
    # SGLang
    (["python3", "-m", "sglang.launch_server", "--model-path", LLAMA_8B, "--port", "30001",
      "--enable-metrics"], None,
     ident("sglang", LLAMA_8B, 30001)),
    (["python", "-m", "sglang.launch_server", "--model-path=/models/qwen", "--served-model-name",
      "qwen2"], None,
     ident("sglang", "qwen2", 30000)),
    (["/usr/bin/python3.10", "-m", "sglang.launch_server", "--model", "deepseek-ai/DeepSeek-V3",
      "--tp", "8", "--trust-remote-code", "--host", "0.0.0.0"], None,
     ident("sglang", "deepseek-ai/DeepSeek-V3", 30000)),
    # TGI
    (["text-generation-launcher", "--model-id", "mistralai/Mistral-7B-v0.1", "--port", "8080"], None,
     ident("tgi", "mistralai/Mistral-7B-v0.1", 8080)),
    (["/usr/local/bin/text-generation-launcher"],
     {"MODEL_ID": "HuggingFaceH4/zephyr-7b-beta", "PORT": "80", "HOME": "/root"},
     ident("tgi", "HuggingFaceH4/zephyr-7b-beta", 80)),
    (["text-generation-launcher", "--model-id", "gpt2", "--prometheus-port", "9000"], None,
     ident("tgi", "gpt2", 3000, 9000)),
    (["text-generation-launcher", "-p", "8081", "--model-id", "gpt2"],
     {"MODEL_ID": "ignored/model", "PORT": "80"},
     ident("tgi", "gpt2", 8081)),
    (["text-generation-launcher", "--num-shard", "2"], None,
     ident("tgi", "bigscience/bloom-560m", 3000)),
    (["text-generation-router", "--max-concurrent-requests", "128", "--tokenizer-name",
      "bigscience/bloom-560m", "--port", "80", "--prometheus-port", "9000"], None,
     ident("tgi", "bigscience/bloom-560m", 80, 9000)),
    (["/opt/conda/bin/python3.11", "/opt/conda/bin/text-generation-server", "serve",
      "bigscience/bloom-560m", "--uds-path", "/tmp/text-generation-server", "--json-output"], None,
     ident("tgi", "bigscience/bloom-560m", 3000)),
    # Triton
    (["tritonserver", "--model-repository=/models"], None, ident("triton", "", 8000, 8002)),
    (["/opt/tritonserver/bin/tritonserver", "--model-repository", "/models", "--http-port", "9000",
      "--grpc-port", "9001", "--metrics-port", "9002"], None,
     ident("triton", "", 9000, 9002)),
    (["tritonserver", "--model-repository=/models", "--model-control-mode=explicit",
      "--load-model=ensemble", "--http-port=8010"], None,
     ident("triton", "", 8010, 8002)),
    (stub_argv("/models/vllm_model/1/model.py"), None, ident("triton", "vllm_model", 8000, 8002)),
    (stub_argv("/mnt/repo/tensorrt_llm_bls/3/model.py", "tensorrt_llm_bls_0_1"), None,
     ident("triton", "tensorrt_llm_bls", 8000, 8002)),
    (stub_argv("/opt/model.py"), None, ident("triton", "", 8000, 8002)),
    # llama.cpp
    (["llama-server", "-m", "/models/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "--port", "8081",
      "--metrics"], None,
     ident("llamacpp", "Meta-Llama-3.1-8B-Instruct-Q4_K_M", 8081)),
    (["/app/llama-server", "--model", "/models/qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf",
      "--alias", "qwen2.5-7b", "--host", "0.0.0.0"], None,
     ident("llamacpp", "qwen2.5-7b", 8080)),
    (["./llama-server", "-hf", "ggml-org/gemma-3-1b-it-GGUF", "-c", "4096"], None,
     ident("llamacpp", "ggml-org/gemma-3-1b-it-GGUF", 8080)),
    (["/app/llama-server"], {"LLAMA_ARG_MODEL": "/models/phi-3-mini.gguf", "LLAMA_ARG_PORT": "9090"},
     ident("llamacpp", "phi-3-mini", 9090)),
    (["llama-server", "--model=/m/tinyllama.GGUF", "-a", "tiny", "--port", "0"], None,
     ident("llamacpp", "tiny", 8080)),  # port 0 is no port: the default is recorded
    # TensorRT-LLM
    (["trtllm-serve", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "--backend", "pytorch", "--port",
      "8001"], None,
     ident("trtllm", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", 8001)),
    (["/usr/bin/python3", "/usr/local/bin/trtllm-serve", "serve", "/workspace/engines/llama-3-8b/",
      "--tp_size", "2"], None,
     ident("trtllm", "llama-3-8b", 8000)),
    (["trtllm-serve", "./checkpoints/mistral", "--host", "0.0.0.0", "--port=8005"], None,
     ident("trtllm", "mistral", 8005)),
    # issue 13: shapes as upstream documents them (docs/research/*.md)
    # vllm serve: the positional model may follow the flags (argparse nargs="?"); none at all
    # serves ModelConfig.model's default
    (["vllm", "serve", "--port", "8000", "Qwen/Qwen3-8B"], None, ident("vllm", "Qwen/Qwen3-8B", 8000)),
    (["vllm", "serve", "--enforce-eager", "--port=8001", "--trust-remote-code", "Qwen/Qwen3-8B"], None,
     ident("vllm", "Qwen/Qwen3-8B", 8001)),
    (["vllm", "serve", "--port", "8002"], None, ident("vllm", "Qwen/Qwen3-0.6B", 8002)),
    (["vllm", "serve", "/mnt/models", "--served-model-name", "llama", "publishers/ns/models/llama",
      "--port", "8001"], None, ident("vllm", "llama", 8001)),  # KServe LLMInferenceService
    # sglang serve: a leading positional is rewritten to --model-path (sglang/cli/serve.py)
    (["sglang", "serve", "Qwen/Qwen3-32B", "--enable-metrics"], None, ident("sglang", "Qwen/Qwen3-32B", 30000)),
    # NIM: NIM_SERVER_PORT, NIM_SERVED_MODEL_NAME
    (["nim-serve"], {"NIM_SERVED_MODEL_NAME": "meta/llama-3.1-8b-instruct", "NIM_SERVER_PORT": "8080"},
     ident("nim", "meta/llama-3.1-8b-instruct", 8080)),
    # LMDeploy: lmdeploy serve api_server MODEL (console script through python)
    (["/usr/bin/python3", "/usr/local/bin/lmdeploy", "serve", "api_server", "internlm/internlm2_5-7b-chat",
      "--server-port", "23334", "--backend", "pytorch"], None,
     ident("lmdeploy", "internlm/internlm2_5-7b-chat", 23334)),
    (["lmdeploy", "serve", "api_server", "/models/qwen", "--model-name", "qwen"], None,
     ident("lmdeploy", "qwen", 23333)),
    (["lmdeploy", "serve", "api_server", "--server-port", "23335", "--disable-metrics",
      "internlm/internlm2_5-7b-chat"], None, ident("lmdeploy", "internlm/internlm2_5-7b-chat", 23335)),
    (["trtllm-serve", "--port", "8001", "--backend", "pytorch", "/models/Llama-3.1-8B"], None,
     ident("trtllm", "Llama-3.1-8B", 8001)),  # click: options before the MODEL argument
    # KServe huggingfaceserver: the vLLM label is --model_id (or the model dir), not --model_name
    (["python3", "-m", "huggingfaceserver", "--model_name=llama", "--model_id=meta-llama/Llama-3.1-8B"], None,
     ident("kserve", "meta-llama/Llama-3.1-8B", 8080)),
    (["python3", "-m", "huggingfaceserver", "--model_name=llama"], None, ident("kserve", "/mnt/models", 8080)),
    # trtllm-serve disaggregated: a proxy (its servers are scraped); no model
    (["trtllm-serve", "disaggregated", "-c", "disagg_config.yaml"], None,
     EngineIdentity("trtllm", "", 8000, 8000, "trtllm-disaggregated-8000")),
    # llama.cpp: the unified binary; router mode
    (["llama", "serve", "-m", "/models/Qwen3-8B-Q4_K_M.gguf", "--metrics"], None,
     ident("llamacpp", "Qwen3-8B-Q4_K_M", 8080)),
    (["llama-server", "--models-dir", "/models", "--metrics", "--port", "8090"], None,
     EngineIdentity("llamacpp", "", 8090, 8090, "llamacpp-router-8090")),
    # NVIDIA Dynamo: workers' only port is DYN_SYSTEM_PORT; the front end's is --http-port / DYN_HTTP_PORT
    (["python3", "-m", "dynamo.vllm", "--model", "Qwen/Qwen3-8B"], {"DYN_SYSTEM_PORT": "8081"},
     EngineIdentity("vllm", "Qwen/Qwen3-8B", 8081, 8081, "dynamo-vllm-8081")),
    (["python3", "-m", "dynamo.sglang", "--model-path", "Qwen/Qwen3-8B", "--served-model-name", "qwen"],
     {"DYN_SYSTEM_PORT": "8082"}, EngineIdentity("sglang", "qwen", 8082, 8082, "dynamo-sglang-8082")),
    (["python3", "-m", "dynamo.frontend"], {"DYN_HTTP_PORT": "8010"},
     EngineIdentity("dynamo", "", 8010, 8010, "dynamo-frontend-8010")),
    # Ollama
    (["/usr/local/bin/ollama", "serve"], None, ident("ollama", "", 11434)),
    (["ollama", "serve"], {"OLLAMA_HOST": "0.0.0.0:11500"}, ident("ollama", "", 11500)),
    (["ollama", "serve"], {"OLLAMA_HOST": "https://ollama.internal"}, ident("ollama", "", 443)),
    (["ollama", "serve"], {"OLLAMA_HOST": "[::]"}, ident("ollama", "", 11434)),
    (["/usr/local/bin/ollama", "runner", "--ollama-engine", "--model", BLOB, "--port", "39561"],
     None, ident("ollama", "", 11434)),
    (["/usr/lib/ollama/llama-server", "--model", BLOB, "--port", "41233", "--host", "127.0.0.1"],
     None, ident("ollama", "", 11434)),
    (["/tmp/ollama123/runners/cuda_v12/ollama_llama_server", "--model", BLOB, "--ctx-size", "8192",
      "--port", "35000"], None, ident("ollama", "", 11434)),
]

NOT_ENGINES = [
    [],
    [""],
    ["VLLM::EngineCore"],
    ["VLLM::Worker_TP0"],
    ["sglang::scheduler_TP0"],
    ["python3"],
    ["python3", "-m"],
    ["python3", "-c", "import vllm; vllm.serve()"],
    ["python3", "train.py", "--model", "llama"],
    ["bash", "-c", "vllm serve x"],
    ["vllm", "bench", "serve", "--model", "x"],
    ["vllm"],
    ["ollama", "run", "llama3.2"],
    ["ollama"],
    ["text-generation-server", "download-weights", "bigscience/bloom-560m"],
    ["/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", "abc"],
    ["nvidia-smi", "--query-gpu=power.draw", "--format=csv"],
]


@pytest.mark.parametrize(("argv", "environ", "expected"), DETECT_CASES)
def test_detect(argv, environ, expected):
    assert detect(argv, environ) == expected


@pytest.mark.parametrize("argv", NOT_ENGINES)
def test_detect_returns_none_for_other_processes(argv):
    assert detect(argv) is None


@pytest.mark.parametrize("argv", [None, 42, [None], [b"vllm", b"serve"], ["vllm", "serve", 7]])
def test_detect_returns_none_for_non_text(argv):
    assert detect(argv) is None


def test_every_engine_is_covered_by_the_table():
    assert {case[2].engine for case in DETECT_CASES} == set(ENGINES)


def test_detect_accepts_tuples_and_ignores_unrelated_environment():
    argv = ("vllm", "serve", "m")
    assert detect(argv, {"PORT": "1234", "MODEL_ID": "other"}) == ident("vllm", "m", 8000)


# --- the process tree ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    comm: str
    cmdline: tuple[str, ...]
    environ: dict[str, str] = field(default_factory=dict)


def tree(*procs: Proc) -> dict[int, Proc]:
    return {p.pid: p for p in procs}


def p(pid: int, ppid: int, *argv: str, environ: dict[str, str] | None = None) -> Proc:
    return Proc(pid, ppid, (argv[0].rsplit("/", 1)[-1] if argv else "")[:15], argv, environ or {})


HOST = tree(
    p(1, 0, "/sbin/init"),
    p(50, 1, "/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", "abc"),
    # vLLM: API server, engine core, tensor-parallel workers (renamed by setproctitle)
    p(200, 50, "/usr/bin/python3", "/usr/local/bin/vllm", "serve", LLAMA_8B, "--port", "8000",
      "--tensor-parallel-size", "2"),
    p(210, 200, "VLLM::EngineCore"),
    p(220, 210, "VLLM::Worker_TP0"),
    p(221, 210, "VLLM::Worker_TP1"),
    p(230, 200, "/usr/bin/python3", "-c", "from multiprocessing.resource_tracker import main;main(9)"),
    # SGLang: launcher, scheduler and detokenizer
    p(300, 50, "python3", "-m", "sglang.launch_server", "--model-path", "Qwen/Qwen2.5-7B-Instruct",
      "--port", "30005"),
    p(310, 300, "sglang::scheduler_TP0"),
    p(311, 300, "sglang::detokenizer"),
    # TGI in its docker image: the port is only in the launcher's environment
    p(400, 50, "text-generation-launcher",
      environ={"MODEL_ID": "HuggingFaceH4/zephyr-7b-beta", "PORT": "80"}),
    p(410, 400, "text-generation-router", "--tokenizer-name", "HuggingFaceH4/zephyr-7b-beta",
      "--port", "80"),
    p(420, 400, "/opt/conda/bin/python3.11", "/opt/conda/bin/text-generation-server", "serve",
      "HuggingFaceH4/zephyr-7b-beta", "--uds-path", "/tmp/text-generation-server"),
    # Triton with a Python-backend stub per model instance
    p(500, 50, "tritonserver", "--model-repository=/models", "--http-port=8100"),
    p(510, 500, *stub_argv("/models/vllm_model/1/model.py")),
    p(511, 510, "VLLM::EngineCore"),
    # Ollama ≥ 0.30 runs llama-server on a blob
    p(600, 1, "/usr/local/bin/ollama", "serve", environ={"OLLAMA_HOST": "0.0.0.0:11500"}),
    p(610, 600, "/usr/lib/ollama/llama-server", "--model", BLOB, "--port", "41233"),
    # broken trees
    p(700, 701, "bash"),
    p(701, 700, "sleep", "1000"),
    p(800, 800, "VLLM::EngineCore"),
    p(900, 12345, "VLLM::EngineCore"),
    p(910, 12345, *stub_argv("/models/ensemble_pre/2/model.py")),
)

RESOLVE_CASES = [
    (200, ident("vllm", LLAMA_8B, 8000), 200),
    (210, ident("vllm", LLAMA_8B, 8000), 200),
    (220, ident("vllm", LLAMA_8B, 8000), 200),
    (221, ident("vllm", LLAMA_8B, 8000), 200),
    (230, ident("vllm", LLAMA_8B, 8000), 200),
    (310, ident("sglang", "Qwen/Qwen2.5-7B-Instruct", 30005), 300),
    (311, ident("sglang", "Qwen/Qwen2.5-7B-Instruct", 30005), 300),
    (400, ident("tgi", "HuggingFaceH4/zephyr-7b-beta", 80), 400),
    (410, ident("tgi", "HuggingFaceH4/zephyr-7b-beta", 80), 410),
    # a helper keeps its own model but takes its server's port and endpoint
    (420, ident("tgi", "HuggingFaceH4/zephyr-7b-beta", 80), 420),
    (500, ident("triton", "", 8100, 8002), 500),
    (510, ident("triton", "vllm_model", 8100, 8002), 510),
    (511, ident("triton", "vllm_model", 8100, 8002), 510),
    (610, ident("ollama", "", 11500), 610),
    # a helper whose server is not visible keeps its engine's defaults
    (910, ident("triton", "ensemble_pre", 8000, 8002), 910),
]


@pytest.mark.parametrize(("pid", "expected", "carrier"), RESOLVE_CASES)
def test_resolve_walks_up_to_the_identifying_process(pid, expected, carrier):
    assert resolve(pid, HOST) == (expected, carrier)


@pytest.mark.parametrize(
    "pid",
    [1, 50, 700, 701, 800, 900, 4242],
    ids=["init", "shim", "cycle-a", "cycle-b", "self-parent", "missing-parent", "unknown-pid"],
)
def test_resolve_returns_none_without_an_engine(pid):
    assert resolve(pid, HOST) is None


def test_resolve_without_environ_falls_back_to_the_documented_default():
    bare = {pid: Proc(q.pid, q.ppid, q.comm, q.cmdline) for pid, q in HOST.items()}
    assert resolve(420, bare) == (ident("tgi", "HuggingFaceH4/zephyr-7b-beta", 3000), 420)


def test_resolve_stops_after_max_depth():
    chain = tree(
        p(10, 1, "vllm", "serve", "m"),
        p(11, 10, "VLLM::EngineCore"),
        p(12, 11, "VLLM::Worker_TP0"),
        p(13, 12, "python3", "-c", "pass"),
    )
    assert resolve(13, chain, max_depth=3) is None
    assert resolve(13, chain, max_depth=4) == (ident("vllm", "m", 8000), 10)


def test_resolve_reuses_parsed_argv():
    resolve(220, HOST)
    before = cmdline._detect.cache_info()
    for _ in range(50):
        assert resolve(220, HOST) is not None
    after = cmdline._detect.cache_info()
    assert after.misses == before.misses
    # five processes on the path to init (the outermost server of the engine names the
    # endpoint, so the walk goes on past the first), each a cache hit
    assert after.hits == before.hits + 50 * 5


# --- fuzz --------------------------------------------------------------------------------------------

VOCAB = [
    "vllm", "serve", "python3", "-m", "-u", "-X", "vllm.entrypoints.openai.api_server",
    "sglang.launch_server", "text-generation-launcher", "text-generation-router",
    "text-generation-server", "tritonserver", STUB, "llama-server", "trtllm-serve", "ollama",
    "runner", "ollama_llama_server", "--port", "--port=", "-p", "--served-model-name", "--model",
    "--model=", "--model-path", "--model-id", "--http-port", "--metrics-port", "--prometheus-port",
    "-m", "-a", "--alias", "-hf", "/models/x/1/model.py", BLOB, "8000", "0", "65536", "99999999999",
    "-1", "x.gguf", "/", "", "=", "--", "²", "٣",
]
PROGRAMS = [
    ["vllm", "serve"], ["python3", "-m", "vllm.entrypoints.openai.api_server"],
    ["python3", "-u", "-m", "sglang.launch_server"], ["text-generation-launcher"],
    ["text-generation-router"], ["text-generation-server", "serve"], ["tritonserver"], [STUB],
    ["llama-server"], ["trtllm-serve"], ["ollama", "serve"], ["ollama", "runner"],
]
words = st.lists(st.one_of(st.sampled_from(VOCAB), st.text(max_size=20)), max_size=8)
argvs = st.one_of(words, st.builds(lambda head, tail: head + tail, st.sampled_from(PROGRAMS), words))
environs = st.none() | st.dictionaries(
    st.sampled_from(["PORT", "MODEL_ID", "PROMETHEUS_PORT", "OLLAMA_HOST", "LLAMA_ARG_MODEL",
                     "LLAMA_ARG_PORT", "LLAMA_ARG_ALIAS", "OTHER"]),
    st.one_of(st.text(max_size=20), st.sampled_from(["80", "[::1]:x", "http://h:99999", "0"])),
)


def assert_well_formed(identity: EngineIdentity) -> None:
    assert identity.engine in ENGINES
    assert isinstance(identity.model, str)
    assert isinstance(identity.port, int) and 0 < identity.port < 65536
    assert isinstance(identity.metrics_port, int) and 0 < identity.metrics_port < 65536
    assert identity.endpoint == f"{identity.engine}-{identity.port}"


@settings(max_examples=400)
@given(argvs, environs)
def test_detect_never_raises(argv, environ):
    identity = detect(argv, environ)
    if identity is not None:
        assert_well_formed(identity)


@settings(max_examples=200)
@given(st.dictionaries(st.integers(0, 12), st.tuples(st.integers(-1, 12), argvs), max_size=12),
       st.integers(-1, 13))
def test_resolve_never_raises_and_names_an_ancestor(raw, pid):
    procs = {k: Proc(k, ppid, "x", tuple(argv)) for k, (ppid, argv) in raw.items()}
    found = resolve(pid, procs)
    if found is None:
        return
    identity, carrier = found
    assert_well_formed(identity)
    ancestors, cur = [], pid
    while cur in procs and cur not in ancestors:
        ancestors.append(cur)
        cur = procs[cur].ppid
    assert carrier in ancestors[:8]


def test_every_process_of_one_server_lands_on_its_outermost_server_endpoint():
    """TGI without a readable environment: the launcher says port 3000 (its default), the router
    child says --port 80 and the shard says nothing. Old: the router was tgi-80 and the shards
    tgi-3000, so requests (read from the router) and energy (the shards') never met. Now both are
    the launcher's endpoint. A llama.cpp router's per-model children (--alias, a random --port,
    tools/server/server-models.cpp) keep their model and take the router's endpoint."""
    procs = tree(
        p(1, 0, "/sbin/init"),
        p(400, 1, "text-generation-launcher"),
        p(410, 400, "text-generation-router", "--tokenizer-name", "HuggingFaceH4/zephyr-7b-beta", "--port", "80"),
        p(420, 400, "/opt/conda/bin/python3.11", "/opt/conda/bin/text-generation-server", "serve",
          "HuggingFaceH4/zephyr-7b-beta", "--uds-path", "/tmp/text-generation-server"),
        p(500, 1, "llama-server", "--models-dir", "/models", "--metrics", "--port", "8090"),
        p(510, 500, "/usr/local/bin/llama-server", "--alias", "qwen3-8b", "--host", "127.0.0.1", "--metrics",
          "--model", "/models/Qwen3-8B-Q4_K_M.gguf", "--port", "41537"),
    )
    router, shard = resolve(410, procs)[0], resolve(420, procs)[0]
    assert router.endpoint == shard.endpoint == "tgi-3000"
    assert router.model == shard.model == "HuggingFaceH4/zephyr-7b-beta"
    child = resolve(510, procs)[0]
    assert (child.endpoint, child.model) == ("llamacpp-router-8090", "qwen3-8b")
    assert resolve(500, procs)[0].endpoint == "llamacpp-router-8090"


def test_another_engine_above_a_server_does_not_name_it():
    procs = tree(p(1, 0, "/sbin/init"), p(10, 1, "nim-serve"),
                 p(20, 10, "vllm", "serve", "meta/llama", "--port", "8100"), p(30, 20, "VLLM::EngineCore"))
    assert resolve(30, procs)[0].endpoint == "vllm-8100"


@pytest.mark.parametrize("argv, host", [
    (["vllm", "serve", "m", "--host", "10.0.0.5"], "10.0.0.5"),
    (["vllm", "serve", "m", "--host", "0.0.0.0"], ""),            # all addresses: 127.0.0.1 works
    (["vllm", "serve", "m", "--host", "localhost"], ""),          # a name: loopback
    (["python3", "-m", "sglang.launch_server", "--model-path", "m", "--host", "127.0.0.7"], "127.0.0.7"),
    (["llama-server", "-m", "x.gguf", "--host", "::"], ""),
    (["tritonserver", "--http-address", "10.1.0.1", "--metrics-address", "10.1.0.2"], "10.1.0.2"),
    (["lmdeploy", "serve", "api_server", "m", "--server-name", "fd00::5"], "[fd00::5]"),
    (["trtllm-serve", "m", "--host", "192.168.1.9"], "192.168.1.9"),
])
def test_a_server_bound_to_one_address_is_reached_there(argv, host):
    """Its metrics listen on that address only, not on 127.0.0.1 (vLLM --host, SGLang --host,
    Triton --metrics-address, llama.cpp --host, LMDeploy --server-name, trtllm-serve --host)."""
    assert cmdline.detect(argv).host == host


def test_llama_cpp_reads_its_bind_address_from_the_environment_too():
    assert cmdline.detect(["llama-server", "-m", "x.gguf"], {"LLAMA_ARG_HOST": "10.9.8.7"}).host == "10.9.8.7"
    assert "LLAMA_ARG_HOST" in cmdline.env_keys()
