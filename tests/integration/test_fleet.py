"""A fleet on real Prometheus: three `wattprint serve` nodes in two clusters, each cluster's
Prometheus in agent mode remote-writing (its `cluster` external label on every series) into one
central Prometheus with the remote-write receiver, which evaluates the generated rules.

- Cluster "eu": nodes a and b, each a simulated H100 held by a vLLM-shaped server under
  simulated traffic; both servers are replicas of one endpoint, as on real hosts: the same
  command line `vllm serve llama-3-8b-0 --port P` (endpoint `vllm-P`), each node's bound to its
  own address (127.0.0.2, .3: `--host`, the node's IP).
- Cluster "us": node c (127.0.0.4), the same endpoint name and model, another grid (region).

Each node's daemon reads a procfs view holding only its own server (a node sees only its own
processes). The rules are the generated file with short windows (support.fast_rules).

Asserted: every node's counters arrive in the central Prometheus exactly as the node exposed them
(matched by the node's own sample count); the fleet's per-endpoint energy, CO2e and requests are
the sums of the nodes' over the window; the clusters stay apart; grams per request of the
replicated endpoint is Σ CO2e / Σ requests over both replicas."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml

from support import (fast_rules, free_port, parse_metrics, procfs_view, start_daemon, start_prometheus,
                     start_traffic_node, stop_all, traffic_spec)

pytestmark = pytest.mark.integration
NODES = {"a": ("eu", "FR", 11, "127.0.0.2"), "b": ("eu", "FR", 12, "127.0.0.3"),
         "c": ("us", "aws:us-east-1", 13, "127.0.0.4")}
MODEL = "llama-3-8b-0"
RUN_S = 45.0
PORT = free_port()  # every node's server listens on it, on the node's own address
ENDPOINT = f"vllm-{PORT}"


def _poll(daemons: dict, seen: dict, stop: threading.Event) -> None:
    """Each node's exposition every 0.2 s, keyed by its own sample count: what it showed when."""
    while not stop.is_set():
        for name, d in daemons.items():
            try:
                m = parse_metrics(d.get())
            except OSError:
                continue
            k = next(iter(m.get("wattprint_samples_total", {}).values()), None)
            if k is not None:
                seen[name].setdefault(k, m)
        time.sleep(0.2)


def _chat(m: dict, name: str, **labels: str) -> float:
    return sum(v for k, v in m.get(name, {}).items()
               if dict(k).get("endpoint") == ENDPOINT and all(dict(k).get(a) == b for a, b in labels.items()))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleet")
    procs, daemons, proms = [], {}, []
    stop = threading.Event()
    seen: dict[str, dict] = {n: {} for n in NODES}
    try:
        central = start_prometheus(tmp, [], rule_files=[str(fast_rules(tmp))],
                                   args=["--web.enable-remote-write-receiver"])
        proms.append(central)
        cfg = tmp / "wattprint.yaml"
        cfg.write_text(yaml.safe_dump({"engines": {"interval": "1s"}}))
        for name, (cluster, region, seed, host) in NODES.items():
            ndir = tmp / name
            ndir.mkdir()
            scenario, eng, _ = start_traffic_node(ndir, [traffic_spec(0.01, 0.12, seed)], model_prefix="llama-3-8b-",
                                                  host=host, port=PORT)
            procs += eng
            view = procfs_view(ndir / "proc", {p.pid for p in eng})
            daemons[name] = start_daemon(ndir, "--sample.interval=1s", "--gpu.backend=simulated",
                                         f"--gpu.simulation-file={scenario}", f"--path.procfs={view}",
                                         f"--config.file={cfg}", f"--carbon.region={region}")
        for cluster in ("eu", "us"):
            targets = [f"127.0.0.1:{daemons[n].port}" for n, (c, *_) in NODES.items() if c == cluster]
            proms.append(start_prometheus(tmp, targets, agent=True, external_labels={"cluster": cluster},
                                          remote_write=[f"http://127.0.0.1:{central.port}/api/v1/write"]))
        poller = threading.Thread(target=_poll, args=(daemons, seen, stop), daemon=True)
        poller.start()
        central.wait_for('count(wattprint_samples_total) == 3', timeout=60)
        central.wait_for(f'count(wattprint_endpoint_requests_total{{endpoint="{ENDPOINT}", model="{MODEL}"}}) == 3',
                         timeout=60)
        started = time.time()
        time.sleep(RUN_S)
        polled_until = time.time() - 2  # every sample before this was polled (a sample a second, a poll each 0.2 s)
        time.sleep(4)  # the agents' batches of that time arrive
        stop.set()
        poller.join(5)
        ports = {f"127.0.0.1:{d.port}": name for name, d in daemons.items()}
        yield central, seen, ports, polled_until, started
    finally:
        stop.set()
        for p in proms:
            p.stop()
        for d in daemons.values():
            d.stop()
        stop_all(procs)


def test_every_node_arrives_exactly_as_it_exposed_itself(fleet):
    """The central Prometheus holds, for each node, the values the node itself exposed at the same
    sample (its own sample count tells which): nothing lost or altered on the remote-write path."""
    central, seen, ports, at, _ = fleet
    samples = {r["metric"]["instance"]: (r["metric"]["cluster"], int(float(r["value"][1])))
               for r in central.query("wattprint_samples_total", at=at)}
    assert {ports[i] for i in samples} == set(NODES)
    for metric in ("wattprint_endpoint_energy_joules_total", "wattprint_endpoint_co2e_grams_total",
                   "wattprint_endpoint_requests_total", "wattprint_endpoint_tokens_total"):
        rows = central.query(f'sum by (cluster, instance) ({metric}{{endpoint="{ENDPOINT}"}})', at=at)
        assert len(rows) == 3, (metric, rows)
        for r in rows:
            inst = r["metric"]["instance"]
            node = ports[inst]
            cluster, k = samples[inst]
            assert r["metric"]["cluster"] == cluster == NODES[node][0]
            own = _chat(seen[node][k], metric)
            assert own > 0 and float(r["value"][1]) == pytest.approx(own, rel=1e-12), (metric, node, k)


def test_the_fleet_sums_the_nodes_and_keeps_clusters_apart(fleet):
    central, *_ = fleet
    w = "40s"
    per_cluster = {r["metric"]["cluster"]: float(r["value"][1]) for r in central.query(
        f'sum by (cluster, namespace, endpoint, model) (increase(wattprint_endpoint_energy_joules_total{{endpoint="{ENDPOINT}"}}[{w}]))')}
    per_node = central.query(f'sum by (cluster, instance) (increase(wattprint_endpoint_energy_joules_total{{endpoint="{ENDPOINT}"}}[{w}]))')
    assert set(per_cluster) == {"eu", "us"}
    by_cluster: dict[str, list[float]] = {}
    for r in per_node:
        by_cluster.setdefault(r["metric"]["cluster"], []).append(float(r["value"][1]))
    assert len(by_cluster["eu"]) == 2 and len(by_cluster["us"]) == 1
    for c, vals in by_cluster.items():
        assert per_cluster[c] == pytest.approx(sum(vals), rel=0.01)
        assert per_cluster[c] > 0
    # the recording rules (60 s for "1h"): one series per cluster for the replicated endpoint
    power = central.query(f'wattprint:endpoint_power_watts:1h{{endpoint="{ENDPOINT}", model="{MODEL}"}}')
    assert sorted(r["metric"]["cluster"] for r in power) == ["eu", "us"]
    # two replicas draw about twice one node's power (same GPUs, same traffic distribution)
    p = {r["metric"]["cluster"]: float(r["value"][1]) for r in power}
    assert 1.3 < p["eu"] / p["us"] < 3.0, p


def test_grams_per_request_is_total_co2e_over_total_requests_across_replicas(fleet):
    """The rule's value against Σ CO2e / Σ requests of the raw series at the rule's own evaluation
    time (its sample's timestamp). Not exact: a remote-written sample can land after the rule ran
    (the agents batch for up to 1 s), and requests are whole counts. rules/tests/fleet.yaml checks
    the same ratio exactly, and that it is not a mean of the replicas' ratios."""
    central, _seen, _ports, at, _ = fleet
    rule_expr = f'wattprint:endpoint_co2e_grams_per_request:1h{{endpoint="{ENDPOINT}", model="{MODEL}"}}'
    stamps = {r["metric"]["cluster"]: float(r["value"][1]) for r in central.query(f"timestamp({rule_expr})", at=at)}
    assert set(stamps) == {"eu", "us"}
    rule: dict[str, float] = {}
    for c, te in stamps.items():
        rule[c] = float(central.query(f'{rule_expr[:-1]}, cluster="{c}"}}', at=te)[0]["value"][1])
        co2e = float(central.query(f'sum(rate(wattprint_endpoint_co2e_grams_total{{endpoint="{ENDPOINT}", '
                                   f'cluster="{c}"}}[60s]))', at=te)[0]["value"][1])
        reqs = float(central.query(f'sum(rate(wattprint_endpoint_requests_total{{endpoint="{ENDPOINT}", '
                                   f'cluster="{c}"}}[60s]))', at=te)[0]["value"][1])
        assert rule[c] == pytest.approx(co2e / reqs, rel=0.03), c
    # the two grids differ (FR is far cleaner than us-east-1): the clusters were not merged
    assert rule["us"] > 3 * rule["eu"]


def test_wattprint_report_against_the_central_prometheus_prints_the_same_figures(fleet):
    import datetime as dt
    import json
    import subprocess
    import sys

    from support import ROOT

    central, _seen, _ports, end, start = fleet
    start, end = int(start) + 1, int(end)

    def iso(t: float) -> str:
        return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    out = subprocess.run([sys.executable, "-m", "exporter", "report", f"--prometheus.url=http://127.0.0.1:{central.port}",
                          f"--from={iso(start)}", f"--to={iso(end)}", "--by=cluster,namespace,endpoint,model",
                          "--output=json"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    rows = {r["cluster"]: r for r in report["rows"] if r["endpoint"] == ENDPOINT and r["model"] == MODEL}
    assert set(rows) == {"eu", "us"}
    rng = f"{(end - start) * 1000}ms"
    for metric, key in (("wattprint_endpoint_energy_joules_total", "energy_joules"),
                        ("wattprint_endpoint_co2e_grams_total", "co2e_grams"),
                        ("wattprint_endpoint_requests_total", "requests")):
        want = {r["metric"]["cluster"]: float(r["value"][1]) for r in central.query(
            f'sum by (cluster) (increase({metric}{{endpoint="{ENDPOINT}", model="{MODEL}"}}[{rng}]))', at=end)}
        for c in ("eu", "us"):
            assert rows[c][key] == pytest.approx(want[c], rel=0.01), (key, c)
    for c, r in rows.items():
        assert r["grams_per_request"] == pytest.approx(r["co2e_grams"] / r["requests"], rel=1e-9)
        assert r["co2e_grams"] == pytest.approx(r["co2e_operational_grams"] + r["co2e_embodied_grams"], rel=1e-9)
