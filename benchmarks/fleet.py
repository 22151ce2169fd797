#!/usr/bin/env python3
"""What a fleet costs Prometheus: N simulated nodes scraped by a real Prometheus evaluating the
generated rules, for N = 100, 300 and 1,000 (``--nodes``), and a projection to 10,000.

1. One real `wattprint serve` runs on a simulated 8-GPU node with four vLLM-shaped servers under
   simulated traffic (tests/support.start_traffic_node); its /metrics is captured once.
2. A fleet simulator (one process, aiohttp) serves that exposition as N nodes, each relabelled
   the way a real fleet differs: its own GPU UUIDs, its servers' endpoints drawn from a fleet of
   N/2 distinct endpoints (replicas spread over nodes), its own namespace; counters advance with
   time at the captured rates. Every node is a Prometheus target of its own (`instance` and
   `cluster` labels: three clusters), `__metrics_path__` telling the simulator which node.
3. A real Prometheus scrapes them every ``--scrape-interval`` (15 s), evaluates the generated
   rules (rules/wattprint.rules.yaml) at the same interval and scrapes itself; after
   ``--settle`` scrapes it reports: series per node (from the capture), head series, its RSS,
   the rule groups' evaluation time, and the scrape duration.

    .venv/bin/python benchmarks/fleet.py [--nodes 100,300,1000] [--scrape-interval 15] [--settle 4] [--json F]

Run on the 2-vCPU CI machine, the simulator shares the CPUs with Prometheus: its scrape durations
include the simulator's response time, so they are an upper bound of Prometheus's own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support import PROMETHEUS, free_port, start_daemon, start_traffic_node, stop_all, traffic_spec  # noqa: E402

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$")


def capture(tmp: Path) -> str:
    """A real daemon's exposition: 8 simulated GPUs, four of them held by servers under traffic."""
    specs = [traffic_spec(0.01, 0.12, s) for s in range(4)]
    idle = [{"name": "NVIDIA H100 80GB HBM3", "idle_w": 70, "max_w": 700, "processes": []} for _ in range(4)]
    scenario, procs, _ = start_traffic_node(tmp, specs, other_gpus=idle, model_prefix="fleet-model-")
    d = None
    try:
        d = start_daemon(tmp, "--sample.interval=1s", "--engines.interval=1s", "--gpu.backend=simulated",
                         f"--gpu.simulation-file={scenario}", "--carbon.region=FR")
        time.sleep(12)
        return d.get()
    finally:
        if d is not None:
            d.stop()
        stop_all(procs)


class Fleet:
    """N nodes' expositions from one capture (see the module)."""

    def __init__(self, text: str, n: int) -> None:
        self.n, self.t0 = n, time.time()
        self.lines: list[tuple[str, str, float, bool]] = []  # (name, labels, value, counter)
        counters = {m.group(1) for m in re.finditer(r"^# TYPE (\S+) counter$", text, re.M)}
        self.head = [ln for ln in text.split("\n") if ln.startswith("#")]
        for ln in text.split("\n"):
            m = SAMPLE.match(ln)
            if m:
                name = m.group(1)
                self.lines.append((name, m.group(2) or "", float(m.group(3)), name in counters))
        self.endpoints = sorted({e for _, labels, _, _ in self.lines for e in re.findall(r'endpoint="(vllm-\d+)"', labels)})

    def relabel(self, labels: str, node: int) -> str:
        """One node's label set: its own GPU UUIDs; its servers' endpoints from a fleet of N/2
        (endpoint k runs on nodes k, k + N/2, …: replicas), each with its team's namespace and
        its model."""
        labels = re.sub(r'uuid="GPU-[0-9a-f]{8}', f'uuid="GPU-{node:08x}', labels)
        m = re.search(r'endpoint="(vllm-\d+)"', labels)
        if m and m.group(1) in self.endpoints:
            e = (node * 4 + self.endpoints.index(m.group(1))) % max(1, self.n // 2)
            labels = labels.replace(m.group(0), f'endpoint="ep-{e}"').replace('namespace=""', f'namespace="team-{e % 20}"')
            labels = re.sub(r'model="fleet-model-\d+"', f'model="model-{e % 7}"', labels)
        return labels

    def body(self, node: int) -> bytes:
        age = time.time() - self.t0
        out = [f"{name}{self.relabel(labels, node) if labels else ''} {value * (1 + age / 600) if counter else value!r}"
               for name, labels, value, counter in self.lines]
        return ("\n".join(self.head) + "\n" + "\n".join(out) + "\n").encode()


def serve(fleet: Fleet, port: int, ready: threading.Event) -> None:
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=fleet.body(int(request.match_info["node"])), content_type="text/plain")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/node/{node}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def query(port: int, expr: str) -> float:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=30) as r:
        res = json.load(r)["data"]["result"]
    return float(res[0]["value"][1]) if res else float("nan")


def run(n: int, text: str, tmp: Path, scrape_s: int, settle: int) -> dict:
    fleet = Fleet(text, n)
    sim_port, prom_port = free_port(), free_port()
    ready = threading.Event()
    threading.Thread(target=serve, args=(fleet, sim_port, ready), daemon=True).start()
    ready.wait(10)
    d = tmp / f"prom-{n}"
    d.mkdir()
    rules = (ROOT / "rules" / "wattprint.rules.yaml").read_text()
    rules = re.sub(r"interval: 30s", f"interval: {scrape_s}s", rules)
    (d / "rules.yaml").write_text(rules)
    targets = [{"targets": [f"127.0.0.1:{sim_port}"],
                "labels": {"__metrics_path__": f"/node/{i}", "instance": f"node-{i}", "cluster": f"c{i % 3}"}}
               for i in range(n)]
    import yaml

    (d / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": f"{scrape_s}s", "evaluation_interval": f"{scrape_s}s",
                   "scrape_timeout": f"{min(scrape_s, 10)}s"},
        "rule_files": [str(d / "rules.yaml")],
        "scrape_configs": [{"job_name": "wattprint", "static_configs": targets},
                           {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{prom_port}"]}]}]}))
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=open(d / "log", "w"),
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/-/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.3)
        for i in range(settle):
            print(f"  N={n}: scrape {i + 1}/{settle}", end="\r", flush=True)
            time.sleep(scrape_s)
        series_per_node = sum(1 for _ in fleet.lines)
        return {
            "nodes": n, "series_per_node": series_per_node,
            "head_series": query(prom_port, "prometheus_tsdb_head_series"),
            "prometheus_rss_mb": query(prom_port, 'process_resident_memory_bytes{job="prometheus"}') / 2**20,
            "rule_eval_s": query(prom_port, "sum(prometheus_rule_group_last_duration_seconds)"),
            "rule_eval_max_group_s": query(prom_port, "max(prometheus_rule_group_last_duration_seconds)"),
            "scrape_duration_p50_s": query(prom_port, 'quantile(0.5, scrape_duration_seconds{job="wattprint"})'),
            "scrape_duration_max_s": query(prom_port, 'max(scrape_duration_seconds{job="wattprint"})'),
            "recorded_series": query(prom_port, 'count({__name__=~"wattprint:.+"})'),
            "targets_up": query(prom_port, 'sum(up{job="wattprint"})'),
        }
    finally:
        proc.terminate()
        proc.wait(20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", default="100,300,1000")
    ap.add_argument("--scrape-interval", type=int, default=15)
    ap.add_argument("--settle", type=int, default=4, help="scrape intervals before measuring")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="wattprint-fleet-"))
    print("capturing a real daemon's exposition (8 simulated GPUs, 4 servers under traffic)…")
    (tmp / "capture").mkdir()
    text = capture(tmp / "capture")
    rows = [run(int(n), text, tmp, args.scrape_interval, args.settle) for n in args.nodes.split(",")]
    print(" " * 40)
    cols = ["nodes", "series_per_node", "head_series", "recorded_series", "prometheus_rss_mb", "rule_eval_s",
            "rule_eval_max_group_s", "scrape_duration_p50_s", "scrape_duration_max_s", "targets_up"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    if len(rows) >= 2:  # a straight line through the largest two, to 10,000 nodes
        a, b = rows[-2], rows[-1]
        proj = {}
        for c in ("head_series", "recorded_series", "prometheus_rss_mb", "rule_eval_s"):
            slope = (b[c] - a[c]) / (b["nodes"] - a["nodes"])
            proj[c] = b[c] + slope * (10_000 - b["nodes"])
        print("projected to 10,000 nodes (linear through the two largest runs): "
              + ", ".join(f"{k} {v:.4g}" for k, v in proj.items()))
        rows.append({"nodes": 10_000, "projected": True, **proj})
    if args.json:
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
                                         "scrape_interval_s": args.scrape_interval, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
