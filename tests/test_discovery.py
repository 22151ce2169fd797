"""Where the local servers' metrics are (issue 13): a server's environment and config file, the
servers that must not be scraped, data-parallel ports, annotated pods of unrecognised processes
(read by the engine their families name), and the model on a server's energy."""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType, SimpleNamespace

import pytest

from exporter.engine_targets import TargetFinder, find
from exporter.engines import READERS, discovery
from exporter.engines.auto import sniff
from exporter.identity import cmdline
from exporter.identity.resolver import Resolver, Workload
from exporter.pipeline.requests import RequestStage
from exporter.sensors.procfs import ProcessTable, parse_environ

TEXTS = Path(__file__).parent / "fixtures" / "engines_text"
CID = "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"
CGROUP = f"0::/kubepods.slice/kubepods-pod5f0c1a2e_8d3b_4c61_9a57_2b8e4f6d7c10.slice/cri-containerd-{CID}.scope\n"


def proc(pid, *argv, ppid=1, environ=None, cgroup=""):
    return SimpleNamespace(pid=pid, ppid=ppid, comm=argv[0].rsplit("/", 1)[-1][:15], cmdline=tuple(argv),
                           cgroup=cgroup, starttime=7, environ=environ)


class Pods:
    def __init__(self, annotations, labels=None, model=""):
        self.meta = SimpleNamespace(namespace="models", endpoint="qwen", model=model, name="qwen-0",
                                    annotations=MappingProxyType(annotations), pod_ip="10.0.0.7",
                                    labels=MappingProxyType(labels or {}))

    def by_container_id(self, cid):
        return self.meta if cid == CID else None


def urls(targets):
    return sorted((t.url, t.engine, t.workload.endpoint) for t in targets)


# --- which engine a text is ---------------------------------------------------------------------

@pytest.mark.parametrize("fixture, engine", [
    ("vllm_current", "vllm"), ("sglang_current", "sglang"), ("tgi", "tgi"), ("triton", "triton"),
    ("triton_trtllm_streaming", "triton"), ("llamacpp_current", "llamacpp"), ("trtllm_current", "trtllm"),
    ("lmdeploy", "lmdeploy"), ("dynamo_frontend", "dynamo"), ("dynamo_worker_vllm", "vllm"),
    ("nim_v1", "nim"), ("nim_sglang_backend", "sglang"),
])
def test_the_families_name_the_engine(fixture, engine):
    text = (TEXTS / f"{fixture}.prom").read_text()
    assert sniff(text) == engine
    assert READERS["auto"].parse(text).engine == engine


def test_text_of_no_engine_is_missing_not_a_guess():
    from exporter.engines import EngineParseError

    with pytest.raises(EngineParseError) as e:
        READERS["auto"].parse("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3\n")
    assert e.value.kind == "missing"


# --- targets ---------------------------------------------------------------------------------------

def test_front_ends_launchers_helpers_and_headless_engines_are_not_scraped():
    procs = {
        10: proc(10, "python3", "-m", "dynamo.frontend", environ={"DYN_HTTP_PORT": "8010"}),
        11: proc(11, "python3", "-m", "dynamo.vllm", "--model", "Qwen/Qwen3-8B", environ={"DYN_SYSTEM_PORT": "8081"}),
        20: proc(20, "text-generation-launcher", environ={"PORT": "8080", "MODEL_ID": "m"}),
        21: proc(21, "text-generation-router", "--tokenizer-name", "m", "--port", "8080", ppid=20),
        22: proc(22, "text-generation-server", "serve", "m", ppid=20),
        30: proc(30, "trtllm-serve", "disaggregated", "-c", "d.yaml"),
        40: proc(40, "vllm", "serve", "m", "--headless", "--port", "9000"),
        50: proc(50, "llama-server", "--models-dir", "/models", "--metrics", "--port", "8090"),
        51: proc(51, "llama-server", "--alias", "q", "--host", "127.0.0.1", "--metrics", "-m", "/m/q.gguf",
                 "--port", "41537", ppid=50),
    }
    got = urls(find(procs, Resolver(), []))
    assert got == [("http://127.0.0.1:8080/metrics", "tgi", "tgi-8080"),
                   ("http://127.0.0.1:8081/metrics", "vllm", "dynamo-vllm-8081"),
                   ("http://127.0.0.1:8090/metrics", "llamacpp", "llamacpp-router-8090")]
    router = next(t for t in find(procs, Resolver(), []) if t.engine == "llamacpp")
    assert router.per_model


def test_vllm_multi_port_data_parallel_is_one_target_per_local_rank():
    procs = {10: proc(10, "vllm", "serve", "m", "--data-parallel-size", "4", "--data-parallel-size-local", "2",
                      "--data-parallel-multi-port-external-lb", "--port", "8100")}
    assert [t.url for t in find(procs, Resolver(), [])] == ["http://127.0.0.1:8100/metrics",
                                                           "http://127.0.0.1:8101/metrics"]
    assert len({t.workload for t in find(procs, Resolver(), [])}) == 1  # one endpoint


@pytest.mark.parametrize("text, scraped", [
    ("return_perf_metrics: true\n", True),
    ("return_perf_metrics: false\nenable_iter_perf_stats: true\n", False),
    ("{}\n", False),
    ("- not a mapping\n", False),
    ("a: [unclosed\n", True),  # does not parse: its settings are unknown, so metrics may be on
    (None, True),  # unreadable: it may switch metrics on, so they are assumed on
])
def test_trtllm_metrics_follow_its_config_file(text, scraped):
    procs = {10: proc(10, "trtllm-serve", "/models/Llama-3.1-8B", "--extra_llm_api_options", "opts.yaml",
                      "--port", "8010")}
    asked = []

    def read(pid, path):
        asked.append((pid, path))
        return text
    finder = TargetFinder(Resolver(), read)
    finder.maybe_refresh(0.0, procs)
    assert asked == [(10, "opts.yaml")]
    assert [t.url for t in finder.targets()] == (["http://127.0.0.1:8010/prometheus/metrics"] if scraped else [])
    finder.maybe_refresh(100.0, procs)
    assert len(asked) == 1  # read and parsed once per process


def test_config_flags_are_overridden_by_the_command_line():
    argv = ("vllm", "serve", "m", "--port", "9001", "--config", "c.yaml")
    settings = discovery.config_settings("port: 9000\nheadless: false\nmodel: other\napi_key: secret\n")
    full = discovery.with_config(argv, settings)
    assert discovery.scrape_points("vllm", full)[0].port == 9001
    assert "secret" not in full and "other" not in full  # only ports and switches are read
    only = discovery.with_config(("vllm", "serve", "m", "--config", "c"), discovery.config_settings("port: 9000\n"))
    assert discovery.scrape_points("vllm", only)[0].port == 9000


@pytest.mark.parametrize("text", [
    "port: 0x" + "f" * 4000 + "\n",   # an int too long to print (Python's 4,300-digit limit)
    "port: " + "9" * 5000 + "\n",
    "port: [1, 2]\n", "port: {a: 1}\n", "? [a, b]\n: 1\n", "&a [*a]\n", "port: !!binary aGk=\n",
    "x" * 200_000,
])
def test_a_hostile_config_file_costs_its_own_server_only(text):
    """Review of issue 13: a huge hex int in a config file made find() raise in the sampler
    thread, and no server on the node was discovered again."""
    procs = {10: proc(10, "vllm", "serve", "m", "--config", "c.yaml"),
             11: proc(11, "vllm", "serve", "other", "--port", "8100")}
    finder = TargetFinder(Resolver(), lambda pid, path: text)
    finder.maybe_refresh(0.0, procs)
    assert "http://127.0.0.1:8100/metrics" in [t.url for t in finder.targets()]


def test_a_config_file_on_a_hung_mount_never_holds_the_sampler():
    import threading
    import time

    release = threading.Event()

    def hung(pid, path):
        release.wait(10)
        return "port: 9000\n"
    procs = {10: proc(10, "vllm", "serve", "m", "--config", "c.yaml"),
             11: proc(11, "sglang", "serve", "q", "--config", "d.yaml", "--port", "31000")}
    finder = TargetFinder(Resolver(), hung)
    t0 = time.monotonic()
    finder.maybe_refresh(0.0, procs)
    elapsed = time.monotonic() - t0
    release.set()
    assert elapsed < 2.0  # one wait of ConfigFiles.wait_s, no queue behind the stuck read
    # meanwhile their settings are unknown: the sglang one "may be on" through its --config
    assert "http://127.0.0.1:31000/metrics" in [t.url for t in finder.targets()]


def test_an_annotated_pod_with_a_recognised_server_gets_no_second_target():
    """Review of issue 13: a trtllm-serve pod annotated prometheus.io/port also got an auto target
    at /metrics, TRT-LLM's JSON endpoint that a read drains."""
    pods = Pods({"prometheus.io/port": "8000"})
    procs = {10: proc(10, "trtllm-serve", "/m", "--port", "8000", "--config", "/c.yaml", cgroup=CGROUP),
             11: proc(11, "python3", "-c", "import mpi4py", ppid=10, cgroup=CGROUP)}
    got = find(procs, Resolver(pods=pods), [], on_gpu={11})
    assert [t.url for t in got] == ["http://10.0.0.7:8000/prometheus/metrics"]


def test_an_annotation_on_one_of_the_data_parallel_ports_keeps_them_all():
    pods = Pods({"prometheus.io/port": "8100"})
    procs = {10: proc(10, "vllm", "serve", "m", "--data-parallel-size-local", "2",
                      "--data-parallel-multi-port-external-lb", "--port", "8100", cgroup=CGROUP)}
    assert [t.url for t in find(procs, Resolver(pods=pods), [])] == [
        "http://10.0.0.7:8100/metrics", "http://10.0.0.7:8101/metrics"]


def test_a_nim_proxy_in_front_of_its_own_server_is_not_read_twice():
    procs = {10: proc(10, "nim-serve", environ={"NIM_SERVER_PORT": "8000"}),
             20: proc(20, "vllm", "serve", "meta/llama", "--port", "8100", ppid=10)}
    assert [t.url for t in find(procs, Resolver(), [])] == ["http://127.0.0.1:8100/metrics"]
    alone = {10: procs[10]}
    assert [t.url for t in find(alone, Resolver(), [])] == ["http://127.0.0.1:8000/v1/metrics"]


def test_an_annotated_pod_of_unrecognised_processes_on_a_gpu_is_read_by_its_families():
    pods = Pods({"prometheus.io/port": "9400", "prometheus.io/path": "/stats"})
    procs = {10: proc(10, "/opt/app/serve", "--weights", "/w", cgroup=CGROUP),
             11: proc(11, "/opt/app/sidecar", cgroup=CGROUP)}
    r = Resolver(pods=pods)
    assert find(procs, r, [], on_gpu=()) == []  # none of its processes on a GPU: not an inference server
    (t,) = find(procs, r, [], on_gpu={10})
    assert (t.url, t.engine, t.workload.namespace, t.workload.endpoint) == (
        "http://10.0.0.7:9400/stats", "auto", "models", "qwen")
    pods.meta.annotations = MappingProxyType({**pods.meta.annotations, "wattprint.io/engine": "sglang"})
    assert find(procs, r, [], on_gpu={10})[0].engine == "sglang"
    pods.meta.annotations = MappingProxyType({**pods.meta.annotations, "wattprint.io/engine": "nonsense"})
    assert find(procs, r, [], on_gpu={10})[0].engine == "auto"


def test_a_pod_label_names_the_endpoint_never_the_served_model():
    """Old: a Deployment labelled app.kubernetes.io/name: vllm booked energy to model="vllm"."""
    pods = Pods({}, labels={"app.kubernetes.io/name": "vllm"}, model="")
    procs = {10: proc(10, "vllm", "serve", "--port", "8000", "Qwen/Qwen3-8B", cgroup=CGROUP)}
    w = Resolver(pods=pods).resolve(10, procs)
    assert (w.namespace, w.endpoint, w.model) == ("models", "qwen", "Qwen/Qwen3-8B")
    pods.meta.model = "from-a-label"  # even an allow-listed model label: the server's own model wins
    assert Resolver(pods=pods).resolve(10, procs).model == "Qwen/Qwen3-8B"


# --- the model on a server's energy ---------------------------------------------------------------

class Source:
    def __init__(self):
        self.served: dict = {}
        self.queue: list = []

    def served_models(self):
        return dict(self.served)

    def drain(self):
        out, self.queue = self.queue, []
        return out

    def contribute(self, snap):
        pass


class Ledger:
    def add(self, *a):
        pass


def test_a_one_model_server_books_all_its_energy_to_the_model_its_engine_reports():
    w = Workload("", "vllm-8000", "")  # no model readable from its command line
    stage, src = RequestStage(expire_s=3), Source()
    stage.source = src
    worker = w._replace(model="")  # a sibling process of its pod (say a Ray worker): no model either
    stage.apply(Ledger(), 0.0)
    assert stage.weights_for(w) is None  # not scraped yet: its own label set
    src.served = {w: frozenset({"Qwen/Qwen3-8B"})}
    for t in (1.0, 100.0):  # idle for ever: still that model's (no activity needed)
        stage.apply(Ledger(), t)
        assert stage.weights_for(w) == stage.weights_for(worker) == {"Qwen/Qwen3-8B": 1.0}
    src.served = {}  # the server is gone
    stage.apply(Ledger(), 101.0)
    assert stage.weights_for(w) is None


def test_a_server_seen_with_two_models_is_split_by_activity_not_by_the_sole_rule():
    from exporter.engine_scraper import Increment

    w = Workload("", "triton-8000", "")
    stage, src = RequestStage(expire_s=3), Source()
    stage.source = src
    src.served = {w: frozenset({"a", "b"})}
    src.queue = [Increment(w, "a", {"requests": 1.0, "compute_seconds": 1.0}),
                 Increment(w, "b", {"requests": 1.0, "compute_seconds": 3.0})]
    stage.apply(Ledger(), 0.0)
    assert stage.weights_for(w) == {"a": 0.25, "b": 0.75}
    assert stage.weights_for(w._replace(model="a")) is None  # a stub of model a keeps it
    stage.apply(Ledger(), 10.0)  # quiet: the server's own label set
    assert stage.weights_for(w) is None


def test_the_steps_of_a_tensorrt_llm_ensemble_book_their_energy_to_it():
    """Review of issue 13: Triton's Python stubs of the step models (postprocessing…) kept their
    own label set, where no request is counted."""
    server = Workload("", "triton-8000", "")
    step = server._replace(model="postprocessing")
    stage, src = RequestStage(expire_s=3), Source()
    stage.source = src
    src.served = {server: frozenset({"ensemble"})}
    stage.apply(Ledger(), 0.0)
    assert stage.weights_for(step) == stage.weights_for(server) == {"ensemble": 1.0}


# --- a server's environment ------------------------------------------------------------------------

def test_only_the_wanted_variables_of_an_environment_are_kept():
    raw = b"HF_TOKEN=hf_secret\0PORT=80\0MODEL_ID=a=b\0PORT=81\0broken\0"
    assert parse_environ(raw, {"PORT", "MODEL_ID"}) == {"PORT": "80", "MODEL_ID": "a=b"}


def _procfs(tmp, pid, argv, environ: bytes | None):
    d = tmp / str(pid)
    d.mkdir(parents=True)
    (d / "stat").write_text(f"{pid} ({argv[0][:15]}) S 1 {pid} {pid} 0 -1 0 0 0 0 0 10 5 0 0 20 0 1 0 100 0 0\n")
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (d / "cgroup").write_text("0::/\n")
    if environ is not None:
        (d / "environ").write_bytes(environ)


def test_the_environment_is_read_for_servers_only_and_an_unreadable_one_is_counted(tmp_path, monkeypatch):
    root = tmp_path / "proc"
    _procfs(root, 10, ["text-generation-launcher"], b"PORT=8080\0MODEL_ID=m\0HF_TOKEN=x\0")
    _procfs(root, 11, ["bash"], b"PORT=1\0")
    _procfs(root, 12, ["llama-server", "--metrics"], b"LLAMA_ARG_PORT=9\0")
    (root / "stat").write_text("cpu 1 0 1 10 0 0 0 0 0 0\n")
    table = ProcessTable(str(root), environ_keys=(cmdline.wants_environ, frozenset(cmdline.env_keys())))
    real_open = os.open

    def deny(path, *a, **kw):  # another user's process: open(2) fails with EACCES (proc(5))
        if str(path).endswith("12/environ"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *a, **kw)
    monkeypatch.setattr(os, "open", deny)
    table.scan()
    assert table.procs[10].environ == {"PORT": "8080", "MODEL_ID": "m"}  # no token kept
    assert table.procs[11].environ is None  # not a server: never read
    assert table.procs[12].environ is None and table.environ_unreadable == 1
    assert cmdline.detect(table.procs[10].cmdline, table.procs[10].environ).endpoint == "tgi-8080"


def test_a_config_file_is_read_only_when_regular(tmp_path):
    root = tmp_path / "proc"
    (root / "10").mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    (work / "c.yaml").write_text("port: 9000\n")
    os.mkfifo(work / "fifo")  # a hostile process pointing --config at a FIFO must not hang the daemon
    (root / "10" / "cwd").symlink_to(work)
    (root / "10" / "root").symlink_to("/")
    table = ProcessTable(str(root))
    assert table.read_process_file(10, "c.yaml") == "port: 9000\n"
    assert table.read_process_file(10, "fifo") is None
    assert table.read_process_file(10, "missing.yaml") is None
    assert table.read_process_file(10, str(work / "c.yaml")) == "port: 9000\n"  # absolute: under its root
    assert table.read_process_file(10, "/dev/zero") is None


# --- review of issue 13: the other shapes --------------------------------------------------------

@pytest.mark.parametrize("argv, model", [
    (["vllm", "serve", "--enable-eplb", "Qwen/Qwen3-8B"], "Qwen/Qwen3-8B"),  # a switch not in the list
    (["vllm", "serve", "-O3", "Qwen/Qwen3-8B"], "Qwen/Qwen3-8B"),  # a short option, value attached
    (["vllm", "serve", "--port", "8000", "--", "Qwen/Qwen3-8B"], "Qwen/Qwen3-8B"),
    (["vllm", "serve", "--max-model-len", "4096", "Qwen/Qwen3-8B"], "Qwen/Qwen3-8B"),
])
def test_the_vllm_positional_model_after_any_switch(argv, model):
    assert cmdline.detect(argv).model == model


def test_a_dynamo_trtllm_worker_is_read_on_its_system_port_whatever_trtllm_serve_needs():
    env = {"DYN_SYSTEM_PORT": "8083"}
    points = discovery.scrape_points("trtllm", ["python3", "-m", "dynamo.trtllm", "--model-path", "/m/llama"], env)
    assert [(p.port, p.path) for p in points] == [(8083, "/metrics")]


@pytest.mark.parametrize("sub", ["disaggregated_mpi_worker", "grpc", "mm_embedding_serve", "disaggregated"])
def test_trtllm_serve_subcommands_are_not_models_and_are_not_scraped(sub):
    ident = cmdline.detect(["trtllm-serve", sub, "-c", "x.yaml"])
    assert ident.engine == "trtllm" and ident.model in ("", "x.yaml"[:0]) and not ident.scraped
    assert find({10: proc(10, "trtllm-serve", sub, "-c", "x.yaml")}, Resolver(), []) == []


def test_triton_tokens_stay_on_one_composite_when_both_are_served():
    """Review of issue 13: with ensemble and tensorrt_llm_bls both loaded (the stock repository)
    every token count was dropped."""
    text = (TEXTS / "triton_trtllm_streaming.prom").read_text().replace(
        'nv_inference_request_success{model="ensemble",version="1"} 1200',
        'nv_inference_request_success{model="ensemble",version="1"} 1200\n'
        'nv_inference_request_success{model="tensorrt_llm_bls",version="1"} 30')
    models = READERS["triton"].parse(text).models
    assert set(models) == {"ensemble", "tensorrt_llm_bls"}
    assert (models["ensemble"].prompt_tokens, models["ensemble"].generation_tokens) == (412880, 41870)
    assert models["tensorrt_llm_bls"].requests == 30 and models["tensorrt_llm_bls"].generation_tokens is None


def test_an_exec_is_identified_again(tmp_path):
    """sh -c "exec vllm serve …" keeps the pid and the start time: the new command line is read."""
    root = tmp_path / "proc"
    _procfs(root, 10, ["sh", "-c", "exec vllm serve m --port 8100"], None)
    (root / "stat").write_text("cpu 1 0 1 10 0 0 0 0 0 0\n")
    table = ProcessTable(str(root), environ_keys=(cmdline.wants_environ, frozenset(cmdline.env_keys())))
    table.scan()
    r = Resolver()
    assert r.resolve(10, table.procs) == SYSTEM_W
    import shutil

    shutil.rmtree(root / "10")
    _procfs(root, 10, ["vllm", "serve", "m", "--port", "8100"], b"PORT=1\0")
    table.scan()
    assert table.procs[10].cmdline[0] == "vllm" and 10 in table.new
    assert r.resolve(10, table.procs).endpoint == "vllm-8100"


SYSTEM_W = Workload("", "system", "")


def test_a_llama_router_model_that_fails_costs_itself_only():
    import asyncio

    import aiohttp
    from aiohttp import web

    from exporter.engine_scraper import EngineScraper
    from exporter.engine_targets import Target

    models = {"data": [{"id": "a", "status": {"value": "loaded"}}, {"id": "b", "status": {"value": "loaded"}},
                       {"id": "c", "status": {"value": "unloaded"}}]}
    asked = []

    async def main():
        async def listing(request):
            return web.json_response(models)

        async def metrics(request):
            asked.append(dict(request.query))
            if request.query["model"] == "b":
                return web.Response(status=404, text="model not loaded\n")
            return web.Response(text=(TEXTS / "llamacpp_current.prom").read_text())
        app = web.Application()
        app.router.add_get("/models", listing)
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        t = Target(Workload("", "llamacpp-router-1", ""), "llamacpp", f"http://127.0.0.1:{port}/metrics", "", True)
        scraper = EngineScraper(lambda: [t])
        async with aiohttp.ClientSession() as s:
            await scraper.scrape_all(s)
        await runner.cleanup()
        return scraper, t
    scraper, t = asyncio.run(main())
    assert scraper.states[t].up and scraper.served[t] == frozenset({"a"})
    assert sorted(q["model"] for q in asked) == ["a", "b"] and all(q["autoload"] == "false" for q in asked)


def test_a_later_process_claiming_a_servers_port_cannot_take_its_url():
    """Review of issue 14: a neighbour started `vllm serve x --port 8000` beside the real server on
    8000 and its workload got the real server's requests. The oldest process keeps the URL."""
    real = proc(10, "vllm", "serve", "meta/llama", "--port", "8000")
    real.starttime = 100
    squat = proc(99, "vllm", "serve", "hostile", "--port", "8000")
    squat.starttime = 5000
    for order in ({10: real, 99: squat}, {99: squat, 10: real}):
        (t,) = find(order, Resolver(), [])
        assert t.model == "meta/llama" and t.workload.endpoint == "vllm-8000"


def test_config_reads_go_on_after_a_slow_one_has_finished():
    """Review of issue 14: a read slower than the wait, whose process then exited, blocked every
    later config read for the daemon's life."""
    import threading
    import time

    release = threading.Event()

    def read(pid, path):
        if pid == 10:
            release.wait(5)
        return "port: 9100\n"
    finder = TargetFinder(Resolver(), read)
    slow = {10: proc(10, "vllm", "serve", "m", "--config", "a.yaml")}
    finder.maybe_refresh(0.0, slow)  # times out: unknown meanwhile
    release.set()
    time.sleep(0.1)
    later = {11: proc(11, "vllm", "serve", "n", "--config", "b.yaml")}  # pid 10 is gone
    finder.maybe_refresh(100.0, later)
    assert [t.url for t in finder.targets()] == ["http://127.0.0.1:9100/metrics"]
