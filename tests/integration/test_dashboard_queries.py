"""Every query of every generated dashboard, against a real stack with data.

The stack, as deployed on a simulated 4-GPU node:
- a vLLM-format server (`benchmarks/workloads/vllm serve … --device cpu`, its renamed
  `VLLM::EngineCore` worker resident on GPUs 0 and 1) driven by a request generator;
- a Triton-format server hosting two models (resident on GPU 2); GPU 3 holds no process
  (`unallocated`) and loses its NVML handle for a few seconds (collector errors);
- an SGLang-looking process with metrics switched on but nothing listening (its engine scrape is
  down: scrape errors and an engine alert);
- a RAPL powercap tree (package, core, dram, psys) whose counters advance, and a procfs view
  holding only this test's processes;
- a real `wattprint serve` with counterfactual regions, training footprints and budgets;
- a real Prometheus loading rules/wattprint.rules.yaml, rewritten for the test only: group
  intervals of 1 s, alert `for:` of 2 s, and recording-rule windows of 20 s (5m) and 60 s (1h);
  the hourly rollups become 5 s increases every 5 s (they tile the run as the hourly ones tile a year).

After ~75 s every panel query runs through Prometheus's /api/v1/query, with `$namespace`,
`$endpoint`, `$model`, `$instance`, `$cluster` → `.*`, `$node` → the `node` label Prometheus adds
to the target (as the Helm chart's relabelling does), `$catch_all` → its default,
`$__rate_interval` → 10s and `$__range` → the run's length (panels over this month / this year
too: the run is all the stack has). Each must parse (HTTP 200) and return data, except those
listed in EXEMPT with a reason. Every query variable of every dashboard must list values too,
except `cluster` and `namespace` (no such labels in one Prometheus outside Kubernetes), and no
rule may have failed to evaluate (prometheus_rule_evaluation_failures_total).

With WATTPRINT_PREVIEW_DIR set, the results (instant values, and for time-series panels the range
over the run) are saved to $WATTPRINT_PREVIEW_DIR/queries.json for scripts/render_previews.py.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from support import (ROOT, WINDOWS, fast_rules, free_port, make_powercap, process_tree, procfs_view, set_energy,
                     start_daemon, start_prometheus, start_traffic_node, traffic_spec)
from support import drive_completions  # noqa: E402

pytestmark = pytest.mark.integration
DASHBOARDS = ROOT / "dashboards"
ENGINES = ROOT / "tests" / "fixtures" / "engines"
RUN_S = float(os.environ.get("WATTPRINT_DASHBOARD_RUN_S", "75"))
RATE_INTERVAL = "10s"  # Grafana's $__rate_interval at a 1 s scrape interval is ≥ 4 s

# Queries that cannot have data in this stack by construction: (dashboard uid, panel title,
# refId) → why. Keep it short; a query listed here that does return data is reported.
EXEMPT: dict[tuple[str, str, str], str] = {}

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
QWEN = "Qwen/Qwen2.5-7B-Instruct"
# Training footprints (tCO2e): Llama 3.1 8B from its model card (420 t, location-based);
# the Triton models' are illustrative.
TRAINING_T = {LLAMA: 420.0, "resnet": 0.05, "bert": 0.65}


def _port(preferred: int) -> int:
    """The preferred port when nothing listens there and it can be bound (stable endpoint names
    in the previews), else a free one."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


def _wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout}s")


def _drive(url: str, stop: threading.Event) -> None:
    drive_completions(url, stop, prompt="how much carbon does this sentence cost")


def _rapl_writer(sysfs: Path, stop: threading.Event) -> None:
    """Package ~95 W swinging ±25 W (core inside it), DRAM ~12 W, psys ~140 W: 5 Hz updates."""
    watts = {"intel-rapl:0": (95, 25), "intel-rapl:0:0": (70, 20), "intel-rapl:0:1": (12, 2),
             "intel-rapl:1": (140, 30)}
    uj = {z: 10_000_000_000 for z in watts}
    t0 = last = time.time()
    while not stop.is_set():
        time.sleep(0.2)
        now = time.time()
        for zone, (base, swing) in watts.items():
            uj[zone] += int((base + swing * math.sin((now - t0) / 9)) * (now - last) * 1e6)
            set_energy(sysfs, zone, uj[zone] % 262143328850)
        last = now


ROLLUP_S = 5  # test-only: the hourly rollups as 5 s increases evaluated every 5 s


def tiled_rollups(rules_file: Path) -> Path:
    """The fast rules with the rollup group's points tiling the run as the hourly ones tile a year
    (interval = window, ROLLUP_S), so "this month" sums to the run's emissions and not to
    overlapping windows evaluated every second."""
    doc = yaml.safe_load(rules_file.read_text())
    (group,) = [g for g in doc["groups"] if g["name"] == "wattprint.rollup.1h"]
    group["interval"] = f"{ROLLUP_S}s"
    for r in group["rules"]:
        r["expr"] = re.sub(r"\[\w+\]", f"[{ROLLUP_S}s]", r["expr"])
    rules_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    return rules_file


def panel_queries() -> list[dict]:
    """Every query of every generated dashboard: {file, uid, dashboard, panel_id, title, type,
    ref, expr, instant}."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for p in board["panels"]:
            for t in p.get("targets", []):
                out.append({"file": path.name, "uid": board["uid"], "dashboard": board["title"],
                            "panel_id": p["id"], "title": p["title"], "type": p["type"],
                            "ref": t["refId"], "expr": t["expr"], "instant": bool(t.get("instant"))})
    return out


# The catch_all variable's default (fleet overview): the ranked tables leave the catch-all series out.
CATCH_ALL = "unallocated|system|overflow"
# The node label, as the Helm chart's scrape config relabels a pod's node name into it; $node
# selects it (so Node detail's queries are checked with a node picked, not with "All").
NODE = "gpu-node-1"


def substitute(expr: str, range_s: int) -> str:
    expr = expr.replace("${node}", NODE).replace("$node", NODE)
    for var in ("cluster", "namespace", "endpoint", "model", "instance"):
        expr = expr.replace(f"${{{var}}}", ".*").replace(f"${var}", ".*")
    expr = expr.replace("${catch_all}", CATCH_ALL).replace("$catch_all", CATCH_ALL)
    return expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__range", f"{range_s}s")


def api(port: int, path: str, **params: str) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=15) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_every_panel_query_returns_data(tmp_path):
    queries = panel_queries()
    assert queries, "no dashboards/*.json: run python dashboards/generate.py"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ENGINES)}
    vllm_port, triton_http, triton_metrics, sglang_port = _port(18000), _port(18001), _port(18002), _port(30000)
    vllm_pid = tmp_path / "vllm.pid"
    procs: list[subprocess.Popen] = []

    def spawn(name: str, argv: list[str], **extra: str) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, *argv], env={**env, **extra}, cwd=tmp_path,
                             stdout=open(tmp_path / f"{name}.log", "w"), stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    stop = threading.Event()
    d = prom = None
    try:
        spawn("vllm", [str(ROOT / "benchmarks/workloads/vllm"), "serve", LLAMA, "--port", str(vllm_port),
                       "--device", "cpu", "--pid-file", str(vllm_pid)])
        triton = spawn("triton", [str(ENGINES / "tritonserver"), "--model-repository", "/models",
                                  "--http-port", str(triton_http), "--metrics-port", str(triton_metrics)])
        spawn("sglang", ["-m", "sglang.launch_server", "--model-path", QWEN, "--port", str(sglang_port),
                         "--enable-metrics"], BURN_DUTY="0.05")
        _wait_http(f"http://127.0.0.1:{vllm_port}/metrics")
        _wait_http(f"http://127.0.0.1:{triton_metrics}/metrics")
        deadline = time.time() + 10
        while not (vllm_pid.exists() and len(process_tree({p.pid for p in procs})) >= 5) and time.time() < deadline:
            time.sleep(0.1)  # the engine workers (vLLM's, SGLang's) are spawned

        # GPUs 0-1: the vLLM engine worker (tensor parallel), busier from 25 s; GPU 2: Triton;
        # GPU 3: no process, and its NVML handle is lost for 3 s; GPU 4: a vLLM-shaped server
        # under simulated traffic whose mix varies (its marginal costs get fitted).
        t0 = time.time()
        vllm_gpu = lambda util, mem: {"pid_file": str(vllm_pid), "memory_gib": mem, "sm_util": util}  # noqa: E731
        gpus = [
            {"name": "NVIDIA H100 80GB HBM3", "idle_w": 70, "max_w": 700, "phases": [
                {"at_s": 0, "processes": [vllm_gpu(30, 62)]}, {"at_s": 25, "processes": [vllm_gpu(70, 62)]},
                {"at_s": 50, "processes": [vllm_gpu(45, 62)]}]},
            {"name": "NVIDIA H100 80GB HBM3", "idle_w": 70, "max_w": 700, "phases": [
                {"at_s": 0, "processes": [vllm_gpu(25, 62)]}, {"at_s": 25, "processes": [vllm_gpu(65, 62)]},
                {"at_s": 50, "processes": [vllm_gpu(40, 62)]}]},
            {"name": "NVIDIA H100 80GB HBM3", "idle_w": 70, "max_w": 700, "phases": [
                {"at_s": 0, "processes": [{"pid": triton.pid, "memory_gib": 18, "sm_util": 12}]},
                {"at_s": 40, "processes": [{"pid": triton.pid, "memory_gib": 18, "sm_util": 28}]}]},
            {"name": "NVIDIA H100 80GB HBM3", "idle_w": 70, "max_w": 700, "processes": [],
             "faults": [{"call": "energy", "error": "GPU_IS_LOST", "after_s": 12, "for_s": 3}]},
        ]
        scenario, traffic, _ = start_traffic_node(tmp_path, [traffic_spec(0.01, 0.12, 7)], other_gpus=gpus,
                                                  start_unix=t0, driver_version="550.54.15",
                                                  model_prefix="sim/dashboard-")
        procs += traffic
        procfs = procfs_view(tmp_path / "proc", {p.pid for p in procs})
        sysfs = make_powercap(tmp_path / "sys", {
            "intel-rapl:0": {"name": "package-0"}, "intel-rapl:0:0": {"name": "core"},
            "intel-rapl:0:1": {"name": "dram"}, "intel-rapl:1": {"name": "psys"}})
        vllm_endpoint = f"vllm-{vllm_port}"
        cfg = tmp_path / "wattprint.yaml"
        cfg.write_text(yaml.safe_dump({
            "carbon": {"region": "aws:us-east-1",
                       "counterfactual_regions": ["gcp:europe-north1", "aws:eu-west-3", "country:POL"],
                       "training_co2e_tonnes": TRAINING_T},
            "engines": {"interval": "1s", "budgets": [
                {"endpoint": vllm_endpoint, "model": LLAMA, "grams_per_request": 0.0015},  # ~2.5 mg: over
                {"endpoint": f"triton-{triton_http}", "model": "resnet", "grams_per_request": 0.0012}]}}))
        threads = [threading.Thread(target=_rapl_writer, args=(sysfs, stop), daemon=True)]
        threads += [threading.Thread(target=_drive, args=(f"http://127.0.0.1:{vllm_port}/v1/completions", stop),
                                     daemon=True) for _ in range(2)]
        for t in threads:
            t.start()
        d = start_daemon(tmp_path, "--sample.interval=1s", "--marginal.window=1s", "--gpu.backend=simulated",
                         f"--gpu.simulation-file={scenario}", f"--path.sysfs={sysfs}", f"--path.procfs={procfs}",
                         f"--config.file={cfg}")
        prom = start_prometheus(tmp_path, [f"127.0.0.1:{d.port}"], rule_files=[str(tiled_rollups(fast_rules(tmp_path)))],
                                target_labels={"node": NODE})
        started = time.time()
        time.sleep(max(0.0, started + RUN_S - time.time()))
        end = time.time()
        range_s = int(end - started)

        results, missing, bad = [], [], []
        for q in queries:
            expr = substitute(q["expr"], range_s)
            status, body = api(prom.port, "query", query=expr, time=f"{end:.3f}")
            rec = {**q, "query": expr, "status": status}
            if status != 200 or body.get("status") != "success":
                bad.append(f"{q['dashboard']} / {q['title']} [{q['ref']}]: HTTP {status} {body.get('error')}")
                continue
            rec["result"] = body["data"]["result"]
            if not q["instant"] and os.environ.get("WATTPRINT_PREVIEW_DIR"):
                _, rng = api(prom.port, "query_range", query=expr, start=f"{started:.3f}", end=f"{end:.3f}", step="1")
                rec["range"] = rng.get("data", {}).get("result", [])
            if not rec["result"]:
                missing.append(q)
            results.append(rec)
        # the per-model rule (each node's GPU model and region joined in by the rules) is, at the
        # instant it was recorded, Σ CO2e / Σ requests of the model's endpoints from the raw counters
        model_rule, w = "wattprint:model_co2e_grams_per_request:1h", WINDOWS["[1h]"]
        _, stamps = api(prom.port, "query", query=f"timestamp({model_rule})", time=f"{end:.3f}")
        recorded = stamps["data"]["result"]
        assert len(recorded) >= 3, recorded
        for s in recorded:
            labels, at = s["metric"], float(s["value"][1])
            assert labels["gpu_model"] == "NVIDIA H100 80GB HBM3" and labels["region"] == "aws:us-east-1", labels
            sel = 'model="%s"' % labels["model"]
            _, got = api(prom.port, "query", query=f"{model_rule}{{{sel}}}", time=f"{at:.3f}")
            _, want = api(prom.port, "query", time=f"{at:.3f}", query=(
                f"sum(rate(wattprint_endpoint_co2e_grams_total{{{sel}}}{w})) / sum(rate(wattprint_endpoint_requests_total{{{sel}}}{w}))"))
            got_v, want_v = float(got["data"]["result"][0]["value"][1]), float(want["data"]["result"][0]["value"][1])
            assert math.isclose(got_v, want_v, rel_tol=1e-6), (labels, got_v, want_v)
        # no rule failed to evaluate (a many-to-many join, say): Prometheus's own counter, per group
        with urllib.request.urlopen(f"http://127.0.0.1:{prom.port}/metrics", timeout=10) as r:
            own = r.read().decode()
        failures = {line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in own.splitlines()
                    if line.startswith("prometheus_rule_evaluation_failures_total{")}
        assert failures and not any(failures.values()), failures
        # the template variables' label_values() queries list values (Grafana asks /api/v1/series)
        empty_vars = []
        for path in sorted(DASHBOARDS.glob("*.json")):
            for v in json.loads(path.read_text())["templating"]["list"]:
                if v["type"] != "query" or v["name"] in ("cluster", "namespace"):
                    continue
                m = re.fullmatch(r"label_values\((.*), (\w+)\)", v["query"])
                assert m, v["query"]
                _, series = api(prom.port, "series", **{"match[]": substitute(m.group(1), range_s)},
                                start=f"{started:.3f}", end=f"{end:.3f}")
                if not {s.get(m.group(2)) for s in series.get("data", [])} - {None}:
                    empty_vars.append(f"{path.name} ${v['name']}: {v['query']}")
    finally:
        stop.set()
        if prom:
            prom.stop()
        log = d.stop() if d else ""
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()

    total = len(queries)
    with_data = total - len(missing) - len(bad)
    summary = f"{with_data} of {total} panel queries return data"
    print(f"\n{summary}")
    for q in missing:
        why = EXEMPT.get((q["uid"], q["title"], q["ref"]), "NOT EXEMPT")
        print(f"  no data: {q['dashboard']} / {q['title']} [{q['ref']}]: {why}\n      {q['expr']}")
    stale = [k for k in EXEMPT if not any((q["uid"], q["title"], q["ref"]) == k for q in missing)]
    if stale:
        print(f"  exempt but returned data (or no such query): {stale}")
    if out := os.environ.get("WATTPRINT_PREVIEW_DIR"):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "queries.json").write_text(json.dumps({
            "summary": summary, "run_seconds": range_s, "start": started, "end": end,
            "rate_interval": RATE_INTERVAL, "results": results}, indent=1))
    assert not bad, "queries Prometheus rejected:\n" + "\n".join(bad)
    assert not empty_vars, "variables without values:\n" + "\n".join(empty_vars)
    # "this month" sums the rollups; over the run it is the run's CO2e, as increase() over the raw
    # counters has it (each ROLLUP_S window extrapolates to its edges: close, not exact)
    value = {(r["title"], r["ref"]): float(r["result"][0]["value"][1]) for r in results
             if r["result"] and len(r["result"]) == 1 and "value" in r["result"][0]}
    month_g, range_g = value[("CO2e this month", "A")] * 1e6, value[("Emitted in the time range", "A")]
    print(f"  CO2e this month (rollups) {month_g:.4g} g, emitted in the run (increase) {range_g:.4g} g")
    assert 0.75 < month_g / range_g < 1.25, (month_g, range_g)
    unexplained = [q for q in missing if (q["uid"], q["title"], q["ref"]) not in EXEMPT]
    assert not unexplained, (
        f"{summary}; without data and not exempt:\n"
        + "\n".join(f"{q['dashboard']} / {q['title']} [{q['ref']}]: {q['expr']}" for q in unexplained)
        + "\n--- wattprint log (tail) ---\n" + log[-2000:])
