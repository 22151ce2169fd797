"""The chart's ServiceMonitor and PodMonitor, as prometheus-operator turns them into scrape
configs, scraped by a real Prometheus from a real `wattprint serve` (simulated GPU, fake API
server with the recorded pods): no stored Wattprint series carries the exporter's own pod
identity (namespace, service, pod, container, endpoint of the exporter's target), every series
has node (and cluster, set by the chart's values), and the model endpoint's own namespace/endpoint
labels survive.

prometheus-operator is not run here (it needs a cluster); ``operator_job`` reproduces what its
config generator writes for the fields the chart uses, from prometheus-operator's source,
pkg/prometheus/promcfg.go at v0.93.0-24-g6adcebc50 (generateServiceMonitorConfig and
generatePodMonitorConfig, role "endpoints", the default): the job name, honor_labels, interval,
timeout, path, scheme, the relabel_configs in the operator's order (the job copied to
__tmp_prometheus_job_name, the selector's keep rules, the port's keep rule, node/pod from the
endpoint's target, namespace/service/pod/container from the meta labels, the running-phase
filter, targetLabels, job from the Service name or jobLabel, endpoint from the port name, then
the monitor's own relabelings as generateRelabelConfig writes them), sample_limit and
metric_relabel_configs. Left out: the sharding rules appended last (they set only __tmp_
labels, with a $(SHARD) the operator's config-reloader substitutes), scrape classes and
enforcedNamespaceLabel (not set by kube-prometheus-stack's defaults), and scrape_protocols
(needs Prometheus 2.49; this machine's is 2.42). Kubernetes service discovery is replaced by one static target whose
``__meta_kubernetes_*`` labels are those SD would attach to the exporter pod's endpoint, built
from the rendered Service and DaemonSet (their labels, port and container names).

A control job with the same config minus the chart's relabelings shows the collision the chart
prevents (node-level series take namespace="monitoring", endpoint="metrics", the exporter's pod).
"""

from __future__ import annotations

import copy
import re
import time
from pathlib import Path

import pytest
import yaml

from support import start_prometheus  # noqa: E402
from test_identity_kubernetes import NODE  # noqa: E402

pytest.importorskip("grpc")
helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")
from test_kubernetes_serve import kubernetes_serve  # noqa: E402

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
RELEASE, NAMESPACE, CLUSTER = "wp", "monitoring", "prod-eu"
EXPORTER_POD = "wp-wattprint-x7k2p"
IDENTITY = ("namespace", "service", "pod", "container", "endpoint")


def render(values: dict) -> list[dict]:
    out = helm.Chart.load(str(ROOT / "helm" / "wattprint")).render(
        copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [d for path, text in out.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _relabel(rc: dict) -> dict:
    """generateRelabelConfig: a monitoring.coreos.com RelabelConfig in Prometheus' words."""
    assert set(rc) <= {"sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement",
                       "action"}, rc
    out = {}
    for ours, theirs in [("sourceLabels", "source_labels"), ("separator", "separator"),
                         ("targetLabel", "target_label"), ("regex", "regex"), ("modulus", "modulus"),
                         ("replacement", "replacement")]:
        if rc.get(ours) not in (None, "", [], 0):
            out[theirs] = rc[ours]
    if rc.get("action"):
        out["action"] = rc["action"].lower()
    return out


ENDPOINT_FIELDS = {"port", "path", "scheme", "interval", "scrapeTimeout", "honorLabels", "relabelings",
                   "metricRelabelings"}
SPEC_FIELDS = {"jobLabel", "sampleLimit", "namespaceSelector", "selector", "targetLabels", "endpoints",
               "podMetricsEndpoints"}


def operator_job(monitor: dict, address: str, meta: dict[str, str]) -> dict:
    """The scrape config prometheus-operator generates for ``monitor``'s first endpoint, with
    ``address`` as the one discovered target carrying the SD ``meta`` labels."""
    kind, spec = monitor["kind"], monitor["spec"]
    assert set(spec) <= SPEC_FIELDS, set(spec) - SPEC_FIELDS  # a field this reproduction lacks
    service = kind == "ServiceMonitor"
    ep = (spec["endpoints"] if service else spec["podMetricsEndpoints"])[0]
    assert set(ep) <= ENDPOINT_FIELDS, set(ep) - ENDPOINT_FIELDS
    ns, name = monitor["metadata"]["namespace"], monitor["metadata"]["name"]
    assert spec["namespaceSelector"]["matchNames"] == [meta["__meta_kubernetes_namespace"]]
    job = {"job_name": f"{'serviceMonitor' if service else 'podMonitor'}/{ns}/{name}/0",
           "honor_labels": bool(ep.get("honorLabels", False)),
           "static_configs": [{"targets": [address], "labels": meta}],
           "scrape_interval": ep["interval"], "scrape_timeout": ep["scrapeTimeout"],
           "metrics_path": ep["path"], "scheme": ep["scheme"]}
    rel: list[dict] = [{"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}]
    obj = "service" if service else "pod"
    if not service:
        rel.append({"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"})
    for k in sorted(spec["selector"]["matchLabels"]):
        rel.append({"action": "keep", "source_labels": [f"__meta_kubernetes_{obj}_label_{_sanitize(k)}",
                                                        f"__meta_kubernetes_{obj}_labelpresent_{_sanitize(k)}"],
                    "regex": f"({spec['selector']['matchLabels'][k]});true"})
    port_meta = "__meta_kubernetes_endpoint_port_name" if service else "__meta_kubernetes_pod_container_port_name"
    rel.append({"action": "keep", "source_labels": [port_meta], "regex": ep["port"]})
    target = ["__meta_kubernetes_endpoint_address_target_kind", "__meta_kubernetes_endpoint_address_target_name"]
    if service:
        rel += [{"source_labels": target, "separator": ";", "regex": "Node;(.*)", "replacement": "${1}",
                 "target_label": "node"},
                {"source_labels": target, "separator": ";", "regex": "Pod;(.*)", "replacement": "${1}",
                 "target_label": "pod"},
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
                {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"}]
        for label in spec.get("targetLabels", []):
            rel.append({"source_labels": [f"__meta_kubernetes_service_label_{_sanitize(label)}"],
                        "target_label": _sanitize(label), "regex": "(.+)", "replacement": "${1}"})
        rel.append({"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job",
                    "replacement": "${1}"})
    else:
        rel += [{"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                {"target_label": "job", "replacement": f"{ns}/{name}"}]
    if spec.get("jobLabel"):
        rel.append({"source_labels": [f"__meta_kubernetes_{obj}_label_{_sanitize(spec['jobLabel'])}"],
                    "target_label": "job", "regex": "(.+)", "replacement": "${1}"})
    rel.append({"target_label": "endpoint", "replacement": ep["port"]})
    rel += [_relabel(r) for r in ep.get("relabelings", [])]
    job["relabel_configs"] = rel
    if spec.get("sampleLimit"):
        job["sample_limit"] = spec["sampleLimit"]
    if ep.get("metricRelabelings"):
        job["metric_relabel_configs"] = [_relabel(r) for r in ep["metricRelabelings"]]
    return job


def sd_meta(objs: list[dict], kind: str) -> dict[str, str]:
    """The __meta_kubernetes_* labels Kubernetes SD (role endpoints for a ServiceMonitor, pod for
    a PodMonitor) attaches to the exporter pod's metrics port on node NODE."""
    ds = next(d for d in objs if d["kind"] == "DaemonSet")
    tmpl = ds["spec"]["template"]
    c = tmpl["spec"]["containers"][0]
    port = next(p for p in c["ports"] if p["name"] == "metrics")
    meta = {"__meta_kubernetes_namespace": NAMESPACE, "__meta_kubernetes_pod_name": EXPORTER_POD,
            "__meta_kubernetes_pod_node_name": NODE, "__meta_kubernetes_pod_phase": "Running",
            "__meta_kubernetes_pod_container_name": c["name"],
            "__meta_kubernetes_pod_container_port_name": port["name"],
            "__meta_kubernetes_pod_container_port_number": str(port["containerPort"])}
    for k, v in tmpl["metadata"]["labels"].items():
        meta[f"__meta_kubernetes_pod_label_{_sanitize(k)}"] = v
        meta[f"__meta_kubernetes_pod_labelpresent_{_sanitize(k)}"] = "true"
    if kind == "ServiceMonitor":
        svc = next(d for d in objs if d["kind"] == "Service" and
                   d["spec"]["selector"].items() <= tmpl["metadata"]["labels"].items())
        meta |= {"__meta_kubernetes_service_name": svc["metadata"]["name"],
                 "__meta_kubernetes_endpoint_port_name": svc["spec"]["ports"][0]["name"],
                 "__meta_kubernetes_endpoint_address_target_kind": "Pod",
                 "__meta_kubernetes_endpoint_address_target_name": EXPORTER_POD,
                 "__meta_kubernetes_endpoint_ready": "true"}
        for k, v in svc["metadata"]["labels"].items():
            meta[f"__meta_kubernetes_service_label_{_sanitize(k)}"] = v
            meta[f"__meta_kubernetes_service_labelpresent_{_sanitize(k)}"] = "true"
    return meta


def _series(prom, job: str) -> list[dict]:
    return [r["metric"] for r in prom.query(f'{{job="{job}", __name__=~"wattprint_.+"}}')]


@pytest.mark.parametrize("kind", ["ServiceMonitor", "PodMonitor"])
def test_no_series_carries_the_exporters_pod_identity(tmp_path, kind):
    key = "serviceMonitor" if kind == "ServiceMonitor" else "podMonitor"
    values = {key: {"enabled": True, "interval": "1s", "scrapeTimeout": "1s", "sampleLimit": 5000,
                    **({"targetLabels": ["app.kubernetes.io/part-of"]} if key == "serviceMonitor" else {})},
              "cluster": {"name": CLUSTER}}
    objs = render(values)
    monitor = next(d for d in objs if d["kind"] == kind)
    meta = sd_meta(objs, kind)
    with kubernetes_serve(tmp_path) as d:
        address = f"127.0.0.1:{d.port}"
        job = operator_job(monitor, address, meta)
        control = copy.deepcopy(job)  # the operator's own relabelings only, under another job
        control["job_name"] += "/control"
        control["relabel_configs"] = job["relabel_configs"][:len(job["relabel_configs"]) -
                                                           len(monitor["spec"].get("endpoints", monitor["spec"].get("podMetricsEndpoints"))[0]["relabelings"])]
        control["relabel_configs"].append({"target_label": "job", "replacement": "control"})
        prom = start_prometheus(tmp_path, [], scrape_configs=[job, control])
        try:
            prom.wait_for('wattprint_endpoint_energy_joules_total{job="wattprint", namespace="models"}', timeout=40)
            prom.wait_for('wattprint_endpoint_energy_joules_total{job="control", namespace="models"}', timeout=20)
            time.sleep(1.5)
            ours, theirs = _series(prom, "wattprint"), _series(prom, "control")
            up = prom.query('up{job="wattprint"}')
        finally:
            prom.stop()
    assert up and up[0]["value"][1] == "1", up
    assert len(ours) > 20, ours
    # the control: with only the operator's relabelings, node-level series take the exporter
    # pod's identity (the collision the chart's relabelings prevent)
    node_series = [s for s in theirs if s["__name__"] == "wattprint_node_energy_joules_total"]
    assert node_series and all(s.get("namespace") == NAMESPACE and s.get("endpoint") == "metrics" and
                               s.get("pod") == EXPORTER_POD and s.get("container") == "wattprint"
                               for s in node_series), node_series
    # the chart's monitor: nothing of the exporter's own pod on any series
    for s in ours:
        assert s.get("namespace") != NAMESPACE, s
        assert s.get("pod") != EXPORTER_POD and s.get("container") != "wattprint", s
        assert "service" not in s and s.get("endpoint") != "metrics", s
        assert s["node"] == NODE and s["instance"] == NODE and s["cluster"] == CLUSTER, s
        assert s["job"] == "wattprint", s
        if kind == "ServiceMonitor":  # targetLabels copies the Service's label
            assert s["app_kubernetes_io_part_of"] == "wattprint", s
    node = [s for s in ours if s["__name__"] == "wattprint_node_energy_joules_total"]
    assert node and all(not set(IDENTITY) & set(s) for s in node), node
    # the model endpoint's own labels (from the pod cache) are kept
    endpoints = {(s.get("namespace"), s.get("endpoint")) for s in ours
                 if s["__name__"] == "wattprint_endpoint_energy_joules_total"}
    assert ("models", "llama-3-8b-predictor") in endpoints and ("dev", "shared-a") in endpoints, endpoints
    assert (None, "unallocated") in endpoints, endpoints  # namespace="" stays absent, not "monitoring"
