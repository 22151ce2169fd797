"""End to end, as deployed: a vLLM-format server (real aiohttp, real text format, a renamed
engine worker burning CPU per request) driven by a request generator, a Triton-format server
hosting two models, a real `wattprint serve` discovering both from their command lines, a real
Prometheus loading the project's rules file, and a real Alertmanager receiving the budget alert.

The rules are the project's own file with two test-only changes: group intervals of 1 s and
alert `for:` durations of 2 s (a test cannot wait 15 minutes)."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from support import (ROOT, drive_completions, fast_rules, free_port, parse_metrics, start_daemon, start_prometheus,
                     stop_all, value)

pytestmark = pytest.mark.integration
AM = shutil.which("prometheus-alertmanager")
ENGINES = ROOT / "tests" / "fixtures" / "engines"


class Webhook:
    """Alertmanager's receiver: a tiny HTTP server on 127.0.0.1 recording what it is sent."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self) -> list[dict]:
        return [a for msg in self.received for a in msg.get("alerts", [])]


def start_alertmanager(tmp: Path, webhook: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cfg = tmp / "am.yml"
    cfg.write_text(yaml.safe_dump({
        "route": {"receiver": "test", "group_by": ["alertname", "endpoint"], "group_wait": "1s",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "test", "webhook_configs": [{"url": webhook, "send_resolved": False}]}]}))
    proc = subprocess.Popen([AM, f"--config.file={cfg}", f"--storage.path={tmp / 'amdata'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                            stdout=open(tmp / "am.log", "w"), stderr=subprocess.STDOUT)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1)
            return proc, port
        except OSError:
            time.sleep(0.1)
    raise RuntimeError((tmp / "am.log").read_text())


@pytest.mark.skipif(AM is None, reason="Debian package prometheus-alertmanager is not installed (scripts/test.sh installs it)")
def test_per_request_emissions_and_budget_alert(tmp_path):
    hook = Webhook()
    am, am_port = start_alertmanager(tmp_path, hook.url)
    vllm_port, triton_metrics = free_port(), free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    vllm = subprocess.Popen([sys.executable, str(ROOT / "benchmarks/workloads/vllm"), "serve", "tiny-e2e",
                             "--port", str(vllm_port), "--device", "cpu"], env=env,
                            stdout=open(tmp_path / "vllm.log", "w"), stderr=subprocess.STDOUT)
    triton = subprocess.Popen([sys.executable, str(ENGINES / "tritonserver"), "--model-repository", "/models",
                               "--http-port", "18000", "--metrics-port", str(triton_metrics)], env=env,
                              stdout=open(tmp_path / "triton.log", "w"), stderr=subprocess.STDOUT)
    endpoint = f"vllm-{vllm_port}"
    cfg = tmp_path / "wattprint.yaml"
    cfg.write_text(yaml.safe_dump({"carbon": {"region": "FR"}, "engines": {"interval": "1s", "budgets": [
        {"endpoint": endpoint, "model": "tiny-e2e", "grams_per_request": 1e-9},        # will be exceeded
        {"endpoint": "triton-18000", "model": "resnet", "grams_per_request": 1000.0},  # never
    ]}}))
    stop = threading.Event()
    procs, d, prom = [vllm, triton], None, None
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{vllm_port}/metrics", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        d = start_daemon(tmp_path, "--sample.interval=1s", "--gpu.backend=none", f"--config.file={cfg}")
        prom = start_prometheus(tmp_path, [f"127.0.0.1:{d.port}"], rule_files=[str(fast_rules(tmp_path, windows={}))],
                                alertmanagers=[f"127.0.0.1:{am_port}"], args=["--rules.alert.resend-delay=1s"])
        drivers = [threading.Thread(target=drive_completions, args=(f"http://127.0.0.1:{vllm_port}/v1/completions", stop))
                   for _ in range(2)]
        for t in drivers:
            t.start()
        deadline = time.time() + 60
        fired = []
        while time.time() < deadline and not fired:
            fired = [a for a in hook.alerts() if a["labels"].get("alertname") == "WattprintEndpointOverCarbonBudget"]
            time.sleep(1)
        time.sleep(20)  # a longer window for the per-request figures
        stop.set()
        for t in drivers:
            t.join(15)
        m = parse_metrics(d.get())
        engine_text = urllib.request.urlopen(f"http://127.0.0.1:{vllm_port}/metrics", timeout=5).read().decode()
        sel = f'namespace="",endpoint="{endpoint}",model="tiny-e2e"'
        rule_value = prom.query(f"wattprint:endpoint_co2e_grams_per_request:5m{{{sel}}}")
        co2e = prom.query(f"wattprint_endpoint_co2e_grams_total{{{sel},scope=\"operational\"}}[5m]")  # no GPU: no embodied
        reqs = prom.query(f"wattprint_endpoint_requests_total{{{sel}}}[5m]")
    finally:
        stop.set()
        stop_all(procs)
        if prom:
            prom.stop()
        log = d.stop() if d else ""
        am.terminate()
        hook.server.shutdown()

    # requests and tokens: the engine's own counters, normalised, with the energy series' labels
    engine = parse_metrics(engine_text)
    served = value(engine, "vllm:request_success_total")
    got = value(m, "wattprint_endpoint_requests_total", endpoint=endpoint, model="tiny-e2e")
    assert 0 < got <= served and served - got <= served * 0.2, (got, served, log[-1500:])
    assert value(m, "wattprint_endpoint_tokens_total", endpoint=endpoint, kind="generation") == pytest.approx(8 * got, rel=0.05)
    assert value(m, "wattprint_engine_scrape_up", endpoint=endpoint, engine="vllm") == 1
    # the Triton process's energy is split across its two models by compute time (3:1)
    resnet = value(m, "wattprint_endpoint_energy_joules_total", endpoint="triton-18000", model="resnet")
    bert = value(m, "wattprint_endpoint_energy_joules_total", endpoint="triton-18000", model="bert")
    assert bert > 0 and resnet / bert == pytest.approx(3.0, rel=0.05)
    assert value(m, "wattprint_endpoint_requests_total", endpoint="triton-18000", model="resnet") == pytest.approx(
        3 * value(m, "wattprint_endpoint_requests_total", endpoint="triton-18000", model="bert"), rel=0.05)
    assert value(m, "wattprint_endpoint_energy_joules_total") == pytest.approx(
        value(m, "wattprint_node_energy_joules_total"), rel=1e-9)
    # grams per request through Prometheus = attributed CO2e / successful requests over the window
    (c0, c1) = (float(co2e[0]["values"][0][1]), float(co2e[0]["values"][-1][1]))
    (r0, r1) = (float(reqs[0]["values"][0][1]), float(reqs[0]["values"][-1][1]))
    truth = (c1 - c0) / (r1 - r0)
    print(f"\ngrams/request: recording rule {float(rule_value[0]['value'][1]):.6g}, raw counters {truth:.6g} "
          f"({100 * (float(rule_value[0]['value'][1]) / truth - 1):+.3f} %); triton resnet/bert energy "
          f"{resnet / bert:.3f}; requests seen {got:.0f} of {served:.0f}")
    assert float(rule_value[0]["value"][1]) == pytest.approx(truth, rel=0.01)
    # the budget alert reached Alertmanager, for that endpoint only
    assert fired, f"no budget alert reached Alertmanager: {hook.received}"
    assert {a["labels"]["endpoint"] for a in fired} == {endpoint}
    assert "per request" in fired[0]["annotations"]["summary"] and fired[0]["annotations"]["runbook_url"]
