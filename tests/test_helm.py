"""The Helm chart (helm/wattprint): lint, render under several value sets, validate every object
against the Kubernetes API schemas, run checkov, and keep the chart's copies current.

No helm binary is needed: helm-python-sdk (import ``helm_python``) binds Helm's Go SDK;
kubernetes-validate bundles the Kubernetes OpenAPI schemas offline; checkov lives in its own
virtual environment (.venv-checkov) because it pins old packaging/boto3/aiohttp.

The chart keeps copies of files that live elsewhere in the repository (Helm cannot read outside
the chart directory). Refresh them with::

    .venv/bin/python tests/test_helm.py sync

which copies rules/wattprint.rules.yaml to files/, dashboards/*.json to dashboards/, and
regenerates the ``config`` part of values.schema.json from exporter/config.py.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "wattprint"
RULES = ROOT / "rules" / "wattprint.rules.yaml"
CHART_RULES = CHART / "files" / "wattprint.rules.yaml"
DASHBOARDS = ROOT / "dashboards"
CHART_DASHBOARDS = CHART / "dashboards"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
SYNC_HINT = "run: .venv/bin/python tests/test_helm.py sync"

# Config keys the chart sets itself as flags (its mounts and port): not accepted under `config`.
CHART_SET_KEYS = {("web", "listen_address"), ("web", "config_file"), ("path", "procfs"),
                  ("path", "sysfs")}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
RELEASE, NAMESPACE = "wp", "monitoring"
FAKE_DASHBOARD = "zz-test-only.json"  # added to a temporary copy of the chart by the tests

VALUE_SETS: dict[str, dict] = {
    "defaults": {},
    "everything": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"},
                           "tlsConfig": {"insecureSkipVerify": True},
                           "basicAuth": {"username": {"name": "wattprint-scrape", "key": "username"},
                                         "password": {"name": "wattprint-scrape", "key": "password"}},
                           "relabelings": [{"targetLabel": "cluster", "replacement": "prod"}],
                           "metricRelabelings": [{"sourceLabels": ["__name__"],
                                                  "regex": "go_.*", "action": "drop"}]},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"},
                           "additionalGroups": [{"name": "site.rules", "rules": [
                               {"record": "site:wattprint_node_power_watts:5m",
                                "expr": "sum(rate(wattprint_node_energy_joules_total[5m]))"}]}]},
        "dashboards": {"enabled": True, "annotations": {"grafana_folder": "Wattprint"}},
        "networkPolicy": {
            "enabled": True,
            "ingressFrom": [{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": "monitoring"}}}],
            "egress": [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
                       {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}],
        },
        "webConfig": {
            "enabled": True,
            "tlsSecret": "wattprint-tls",
            "config": {
                "tls_server_config": {"cert_file": "/etc/wattprint/tls/tls.crt",
                                      "key_file": "/etc/wattprint/tls/tls.key"},
                "basic_auth_users": {"prometheus": "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"},
            },
        },
        "config": {"sample": {"interval": "10s"}, "web": {"telemetry_path": "/metrics"},
                   "attribution": {"level": "pod"}},
    },
    "nonroot": {
        "securityContext": {"runAsUser": 10066, "runAsGroup": 10066},
        "hostPID": False,
        "podResources": {"enabled": False},
        "runtimeClassName": "",
        "serviceAccount": {"automountToken": False},
        "rbac": {"create": False},
        "config": {"kubernetes": {"enabled": "off"}, "gpu": {"backend": "none"}},
        "image": {"pullPolicy": "Always",
                  "digest": "sha256:" + "0123456789abcdef" * 4},
    },
    "custom": {
        # maps merge with the defaults: null removes the default GPU label
        "nodeSelector": {"node.kubernetes.io/instance-type": "p5.48xlarge", "pool": "inference",
                         "nvidia.com/gpu.present": None},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "inference",
                         "effect": "NoSchedule"},
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}]}]}}},
        "priorityClassName": "system-node-critical",
        "providerSecrets": [
            {"env": "ELECTRICITYMAPS_TOKEN", "secretName": "electricitymaps", "key": "token"},
            {"env": "WATTTIME_PASSWORD", "secretName": "watttime", "key": "password"},
        ],
        "config": {"carbon": {
            "region": "DE",
            "providers": [
                {"type": "electricitymaps", "zone": "DE", "token_env": "ELECTRICITYMAPS_TOKEN"},
                {"type": "watttime", "region": "DE", "username": "ops",
                 "password_env": "WATTTIME_PASSWORD"},
            ],
            "counterfactual_regions": ["FR", "europe-north1"],
        }},
        "extraArgs": ["--log.level=debug"],
        "extraEnv": [{"name": "TZ", "value": "UTC"}],
        "podAnnotations": {"example.com/team": "ml-platform"},
        "image": {"repository": "registry.example.com/wattprint", "tag": "0.1.0-rc1"},
    },
    "amd": {  # AMD Instinct nodes: no NVIDIA runtime, the AMD GPU Operator's node label
        "amd": {"enabled": True, "supplementalGroups": [44, 110]},
        "runtimeClassName": "",
        "nodeSelector": {"nvidia.com/gpu.present": None, "feature.node.kubernetes.io/amd-gpu": "true"},
        "config": {"gpu": {"backend": "amdsmi"}},
    },
    "intensity": {
        "intensity": {"enabled": True, "zone": "DE", "nodePollInterval": 30},
        "serviceMonitor": {"enabled": True},
        "providerSecrets": [{"env": "ELECTRICITYMAPS_TOKEN", "secretName": "electricitymaps", "key": "token"}],
        "config": {"carbon": {"region": "DE", "providers": [
            {"type": "electricitymaps", "zone": "DE", "token_env": "ELECTRICITYMAPS_TOKEN", "forecast": True}]}},
    },
}

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed "
                           "(pip install -r tests/requirements-deploy.txt)")
kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed "
                         "(pip install -r tests/requirements-deploy.txt)")
K8S_VERSIONS = ("1.28.0", kv.latest_version())


# --- rendering -----------------------------------------------------------------------------

def _chart_with_fake_dashboard(tmp: Path) -> Path:
    """A copy of the chart with one extra dashboard, so the dashboard template always renders."""
    dst = tmp / "wattprint"
    shutil.copytree(CHART, dst)
    (dst / "dashboards").mkdir(exist_ok=True)
    (dst / "dashboards" / FAKE_DASHBOARD).write_text(json.dumps(
        {"title": "Test only", "uid": "zz-test-only", "panels": [], "schemaVersion": 39}))
    return dst


def render(chart_dir: Path, values: dict) -> dict[str, str]:
    chart = helm.Chart.load(str(chart_dir))
    out = chart.render(copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE, is_install=True)
    return {path: text for path, text in out.items() if path.endswith((".yaml", ".yml", ".txt"))}


def manifests(rendered: dict[str, str]) -> list[dict]:
    docs = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("chart")
    fake = _chart_with_fake_dashboard(tmp)
    return {name: render(fake if name == "everything" else CHART, values)
            for name, values in VALUE_SETS.items()}


@pytest.fixture(scope="module")
def docs(rendered) -> dict[str, list[dict]]:
    return {name: manifests(r) for name, r in rendered.items()}


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(docs: list[dict]) -> dict:
    return one(docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]


def pod_spec(docs: list[dict]) -> dict:
    return one(docs, "DaemonSet")["spec"]["template"]["spec"]


# --- lint and schema validation --------------------------------------------------------------

@pytest.mark.parametrize("name", VALUE_SETS)
@pytest.mark.parametrize("kube", ["v1.28.0", "v" + K8S_VERSIONS[1]])
def test_lint(name, kube):
    report = helm.lint(str(CHART), copy.deepcopy(VALUE_SETS[name]), strict=True, kube_version=kube)
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert not serious and not report["errors"], report


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_object_validates(docs, rendered, name):
    assert docs[name], "nothing rendered"
    for text in rendered[name].values():
        assert "<no value>" not in text
    for doc in docs[name]:
        assert doc.get("metadata", {}).get("name"), doc
        if doc["kind"] in CRD_KINDS:
            check_crd(doc)
            continue
        for version in K8S_VERSIONS:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as e:
                pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes "
                            f"{version} at {'.'.join(map(str, e.path))}: {e.message}")


def check_crd(doc: dict) -> None:
    """The prometheus-operator CRDs are not in kubernetes-validate: check the fields by hand."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    meta = doc["metadata"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta["name"]) and meta["namespace"]
    spec = doc["spec"]
    if doc["kind"] == "ServiceMonitor":
        assert spec["selector"]["matchLabels"]
        assert spec["endpoints"]
        for ep in spec["endpoints"]:
            assert ep["port"] and ep["path"].startswith("/")
            assert ep["scheme"] in ("http", "https")
            assert re.fullmatch(r"(\d+(ms|s|m|h))+", ep["interval"])
            for r in ep.get("relabelings", []) + ep.get("metricRelabelings", []):
                assert set(r) <= {"sourceLabels", "separator", "targetLabel", "regex", "modulus",
                                  "replacement", "action"}, r
    else:
        assert spec["groups"]
        names = [g["name"] for g in spec["groups"]]
        assert len(names) == len(set(names)), "rule group names must be unique"
        for g in spec["groups"]:
            assert set(g) <= {"name", "interval", "rules", "limit", "partial_response_strategy",
                              "query_offset", "labels"}, g.keys()
            assert g["rules"], g["name"]
            for r in g["rules"]:
                assert isinstance(r["expr"], (str, int)) and str(r["expr"]).strip()
                assert ("alert" in r) != ("record" in r), r
                assert set(r) <= {"alert", "record", "expr", "for", "keep_firing_for", "labels",
                                  "annotations"}, r.keys()


def test_schema_rejects_bad_values():
    chart = helm.Chart.load(str(CHART))
    chart.validate_schema({})
    chart.validate_schema(copy.deepcopy(VALUE_SETS["custom"]))
    bad = [
        {"image": 5},
        {"imageTag": "x"},  # unknown top-level key
        {"hostPID": "yes"},
        {"port": 70000},
        {"config": {"sample": {"intervall": "5s"}}},  # typo in a config key
        {"config": {"path": {"procfs": "/proc"}}},  # set by the chart
        {"providerSecrets": [{"env": "X", "secretName": "s"}]},  # key missing
        {"image": {"digest": "latest"}},
    ]
    for values in bad:
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(values)
        with pytest.raises(helm.HelmValuesError):
            chart.render(values, name=RELEASE, namespace=NAMESPACE)


def config_schema() -> dict:
    """The `config` part of values.schema.json, generated from exporter/config.py."""
    from exporter import config as cfg

    sections = {}
    for section, sfield in cfg.Config.model_fields.items():
        model = sfield.default_factory
        keys = {key: {"description": " ".join((f.description or "").replace("%%", "%").split())}
                for key, f in model.model_fields.items() if (section, key) not in CHART_SET_KEYS}
        if keys:
            sections[section] = {"type": "object", "additionalProperties": False, "properties": keys}
    return {
        "type": "object",
        "description": "The Wattprint configuration file (generated from exporter/config.py by "
                       "tests/test_helm.py sync); unknown sections and keys are rejected. "
                       "web.listen_address and path.* are set by the chart as flags.",
        "additionalProperties": False,
        "properties": sections,
    }


def test_schema_config_matches_the_exporter():
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["properties"]["config"] == config_schema(), \
        f"values.schema.json's config keys differ from exporter/config.py; {SYNC_HINT}"


def test_default_config_is_valid_for_the_exporter(docs, tmp_path):
    """The ConfigMap of every value set loads with the exporter's own validation, and the
    DaemonSet's arguments parse with its command line."""
    from exporter import cli

    parser = cli.build_parser()
    try:  # --web.config.file lands later; the chart passes it only with webConfig.enabled
        parser.parse_args(["serve", "--web.config.file=/dev/null"])
        known = {"--web.config.file"}
    except SystemExit:
        known = set()
    for name, objs in docs.items():
        cm = next(d for d in objs if d["kind"] == "ConfigMap" and "config.yaml" in d["data"])
        path = tmp_path / f"{name}.yaml"
        path.write_text(cm["data"]["config.yaml"])
        args = [a.replace("/etc/wattprint/config.yaml", str(path)) for a in container(objs)["args"]]
        if "--web.config.file" not in known:  # the flag lands later; the chart guards it
            args = [a for a in args if not a.startswith("--web.config.file=")]
        ns = parser.parse_args(args)
        cli.load_config(ns)
        for other in [d for d in objs if d["kind"] == "ConfigMap" and "config.yaml" in d["data"] and d is not cm]:
            path.write_text(other["data"]["config.yaml"])  # the intensity service's
            cli.load_config(parser.parse_args(["intensity", f"--config.file={path}"]))


# --- what each value set renders -----------------------------------------------------------

def test_defaults(docs):
    objs = docs["defaults"]
    kinds = sorted(d["kind"] for d in objs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "Service",
                     "ServiceAccount"]
    assert all(d["metadata"]["namespace"] == NAMESPACE for d in objs
               if d["kind"] not in ("ClusterRole", "ClusterRoleBinding"))
    spec, c = pod_spec(objs), container(objs)
    assert spec["hostPID"] is True
    assert spec["runtimeClassName"] == "nvidia"
    assert spec.get("hostNetwork") is not True and spec.get("hostIPC") is not True
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["image"] == "ghcr.io/wattprint/wattprint:0.1.0"
    assert c["args"][0] == "serve"
    assert {"--config.file=/etc/wattprint/config.yaml", "--path.procfs=/host/proc",
            "--path.sysfs=/host/sys", "--web.listen-address=:10066"} <= set(c["args"])
    assert not any(a.startswith("--web.config.file") for a in c["args"])
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["runAsUser"] == 0 and sc["runAsNonRoot"] is False
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["port"] == c["ports"][0]["name"] == "metrics"
    assert c["ports"][0]["containerPort"] == 10066
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and \
        {"cpu", "memory"} <= set(c["resources"]["limits"])
    # host mounts: read-only, at the paths the flags name
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    for name, host, path in [("proc", "/proc", "/host/proc"), ("sys", "/sys", "/host/sys"),
                             ("pod-resources", "/var/lib/kubelet/pod-resources",
                              "/var/lib/kubelet/pod-resources")]:
        assert volumes[name]["hostPath"]["path"] == host
        assert mounts[name]["mountPath"] == path and mounts[name]["readOnly"] is True
    for name, v in volumes.items():
        if "hostPath" in v:
            assert mounts[name]["readOnly"] is True, name
    assert mounts["config"]["mountPath"] == "/etc/wattprint/config.yaml"
    assert volumes["config"]["configMap"]["name"] == one(objs, "ConfigMap")["metadata"]["name"]
    # RBAC: read pods, get its node (region label), get replicasets, nothing else
    rules = one(objs, "ClusterRole")["rules"]
    assert rules == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                     {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
                     {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get"]}]
    binding = one(objs, "ClusterRoleBinding")
    sa = one(objs, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": NAMESPACE}]
    assert spec["serviceAccountName"] == sa["metadata"]["name"]
    svc = one(objs, "Service")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == one(objs, "DaemonSet")["spec"]["selector"]["matchLabels"]


def test_everything_enabled(docs, rendered):
    objs = docs["everything"]
    c, spec = container(objs), pod_spec(objs)
    # web config: a Secret, mounted, passed as the flag; probes and scrape over HTTPS
    secret = one(objs, "Secret")
    web = yaml.safe_load(secret["stringData"]["web-config.yml"])
    assert web == VALUE_SETS["everything"]["webConfig"]["config"]
    assert "--web.config.file=/etc/wattprint/web/web-config.yml" in c["args"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["web-config"]["secret"]["secretName"] == secret["metadata"]["name"]
    assert volumes["tls"]["secret"]["secretName"] == "wattprint-tls"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/etc/wattprint/web"]["readOnly"] and mounts["/etc/wattprint/tls"]["readOnly"]
    assert c["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    # ServiceMonitor: the Service's port and labels, exporter labels kept, node label added
    sm = one(objs, "ServiceMonitor")
    svc = one(objs, "Service")
    ep = sm["spec"]["endpoints"][0]
    assert ep["port"] == svc["spec"]["ports"][0]["name"]
    assert ep["scheme"] == "https" and ep["honorLabels"] is True
    assert ep["relabelings"][0]["targetLabel"] == "node"
    assert ep["relabelings"][1]["targetLabel"] == "cluster"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    # PrometheusRule: the rules file's groups, then the additional ones
    rule = one(objs, "PrometheusRule")
    want = yaml.safe_load(CHART_RULES.read_text())["groups"] + \
        VALUE_SETS["everything"]["prometheusRule"]["additionalGroups"]
    assert rule["spec"]["groups"] == want
    # dashboards: one labelled ConfigMap per JSON file in the chart's dashboards/
    boards = [d for d in objs if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"]]
    files = sorted(p.name for p in CHART_DASHBOARDS.glob("*.json")) + [FAKE_DASHBOARD]
    assert sorted(k for b in boards for k in b["data"]) == sorted(files)
    for b in boards:
        assert b["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert b["metadata"]["annotations"] == {"grafana_folder": "Wattprint"}
        for text in b["data"].values():
            json.loads(text)
            assert len(text.encode()) < 1_000_000, "a ConfigMap holds at most 1 MiB"
    # NetworkPolicy: the metrics port, from the given peers; egress as given
    netpol = one(objs, "NetworkPolicy")
    assert netpol["spec"]["podSelector"]["matchLabels"] == one(objs, "DaemonSet")["spec"]["selector"]["matchLabels"]
    assert netpol["spec"]["ingress"][0]["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert netpol["spec"]["ingress"][0]["from"] == VALUE_SETS["everything"]["networkPolicy"]["ingressFrom"]
    assert netpol["spec"]["policyTypes"] == ["Ingress", "Egress"]
    notes = next(t for p, t in rendered["everything"].items() if p.endswith("NOTES.txt"))
    assert "https://" in notes


def test_nonroot_without_host_pid(docs):
    objs = docs["nonroot"]
    spec, c = pod_spec(objs), container(objs)
    assert spec["hostPID"] is False
    assert "runtimeClassName" not in spec
    assert spec["automountServiceAccountToken"] is False
    for sc in (spec["securityContext"], c["securityContext"]):
        assert sc["runAsUser"] == 10066 and sc["runAsGroup"] == 10066 and sc["runAsNonRoot"] is True
    assert "pod-resources" not in {v["name"] for v in spec["volumes"]}
    assert not [d for d in objs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    assert c["image"].endswith("@sha256:" + "0123456789abcdef" * 4)
    skips = skip_annotations(one(objs, "DaemonSet"))
    assert not skips, f"a non-root, no-hostPID, digest-pinned install needs no checkov skips: {skips}"


def test_custom_placement_and_provider_secrets(docs):
    objs = docs["custom"]
    spec, c = pod_spec(objs), container(objs)
    v = VALUE_SETS["custom"]
    assert spec["nodeSelector"] == {"node.kubernetes.io/instance-type": "p5.48xlarge", "pool": "inference"}
    assert spec["tolerations"] == v["tolerations"]
    assert spec["affinity"] == v["affinity"]
    assert spec["priorityClassName"] == "system-node-critical"
    assert c["image"] == "registry.example.com/wattprint:0.1.0-rc1"
    assert c["args"][-1] == "--log.level=debug"
    env = {e["name"]: e for e in c["env"]}
    assert env["TZ"] == {"name": "TZ", "value": "UTC"}
    for s in v["providerSecrets"]:
        assert env[s["env"]]["valueFrom"] == {"secretKeyRef": {"name": s["secretName"], "key": s["key"]}}
    # every <secret>_env the config names is set in the container
    cfg = yaml.safe_load(one(objs, "ConfigMap")["data"]["config.yaml"])
    named = {val for p in cfg["carbon"]["providers"] for k, val in p.items() if k.endswith("_env")}
    assert named and named <= set(env)
    assert one(objs, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]["example.com/team"] == "ml-platform"


def test_amd_nodes(docs):
    """amd.enabled: the amd.com/gpu taint tolerated (after the defaults), /dev/kfd and /dev/dri
    mounted from the host, the render/video groups added; no amd.com/gpu requested, not privileged."""
    objs = docs["amd"]
    spec, c = pod_spec(objs), container(objs)
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                                   {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["nodeSelector"] == {"feature.node.kubernetes.io/amd-gpu": "true"} and "runtimeClassName" not in spec
    assert spec["securityContext"]["supplementalGroups"] == [44, 110]
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["dev-kfd"]["hostPath"] == {"path": "/dev/kfd", "type": "CharDevice"}
    assert vols["dev-dri"]["hostPath"] == {"path": "/dev/dri", "type": "Directory"}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["dev-kfd"] == "/dev/kfd" and mounts["dev-dri"] == "/dev/dri"
    assert c["securityContext"]["privileged"] is False and "amd.com/gpu" not in json.dumps(c.get("resources", {}))
    assert yaml.safe_load(one(objs, "ConfigMap")["data"]["config.yaml"])["gpu"]["backend"] == "amdsmi"
    # the defaults mount no device and add no group
    default = pod_spec(docs["defaults"])
    assert not {"dev-kfd", "dev-dri"} & {v["name"] for v in default["volumes"]}
    assert "supplementalGroups" not in default["securityContext"]


def test_intensity_service_and_nodes_pointing_at_it(docs):
    """intensity.enabled: one Deployment polls the providers with their keys; the DaemonSet's
    config reads it through the Service, and the nodes get no provider key at all."""
    objs = docs["intensity"]
    dep = one(objs, "Deployment")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["args"][:2] == ["intensity", "--config.file=/etc/wattprint/config.yaml"]
    assert "--web.listen-address=:10067" in c["args"]
    assert pod["automountServiceAccountToken"] is False and pod.get("hostPID") is not True
    assert c["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["readOnlyRootFilesystem"] is True
    assert not [v for v in pod["volumes"] if "hostPath" in v]
    assert {e["name"] for e in c["env"]} == {"ELECTRICITYMAPS_TOKEN"}
    configmaps = {d["metadata"]["name"]: yaml.safe_load(d["data"]["config.yaml"]) for d in objs
                  if d["kind"] == "ConfigMap"}
    mounted = next(v["configMap"]["name"] for v in pod["volumes"] if v["name"] == "config")
    assert configmaps[mounted]["carbon"]["providers"] == VALUE_SETS["intensity"]["config"]["carbon"]["providers"]
    services = {d["metadata"]["name"]: d for d in objs if d["kind"] == "Service"}
    svc = services[dep["metadata"]["name"]]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["port"] == 10067 and "clusterIP" not in svc["spec"]
    # the DaemonSet's selector (and its Service's, and its NetworkPolicy's) never picks the intensity pod
    ds = one(objs, "DaemonSet")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert not ds["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    node_cfg = configmaps[next(v["configMap"]["name"] for v in pod_spec(objs)["volumes"] if v["name"] == "config")]
    assert node_cfg["carbon"]["providers"] == [{"type": "wattprint", "zone": "DE", "poll_interval_s": 30,
                                                "url": f"http://{svc['metadata']['name']}.{NAMESPACE}.svc:10067"}]
    assert node_cfg["carbon"]["region"] == "DE"
    assert "ELECTRICITYMAPS_TOKEN" not in {e["name"] for e in container(objs)["env"]}
    monitors = [d for d in objs if d["kind"] == "ServiceMonitor"]
    assert any(m["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"] for m in monitors)
    assert "Deployment" not in {d["kind"] for d in docs["defaults"]}


def test_config_change_rolls_the_pods():
    a = manifests(render(CHART, {}))
    b = manifests(render(CHART, {"config": {"sample": {"interval": "1s"}}}))
    key = "checksum/config"
    assert one(a, "DaemonSet")["spec"]["template"]["metadata"]["annotations"][key] != \
        one(b, "DaemonSet")["spec"]["template"]["metadata"]["annotations"][key]


def test_misconfigurations_fail_with_a_message():
    chart = helm.Chart.load(str(CHART))
    with pytest.raises(helm.HelmError, match="webConfig.existingSecret"):
        chart.render({"webConfig": {"enabled": True}}, name=RELEASE, namespace=NAMESPACE)
    with pytest.raises(helm.HelmError, match="intensity.zone"):
        chart.render({"intensity": {"enabled": True}}, name=RELEASE, namespace=NAMESPACE)
    with pytest.raises(helm.HelmError, match="config.carbon.providers"):
        chart.render({"intensity": {"enabled": True, "zone": "DE"}}, name=RELEASE, namespace=NAMESPACE)
    with pytest.raises(helm.HelmError, match="service.enabled"):
        chart.render({"serviceMonitor": {"enabled": True}, "service": {"enabled": False}},
                     name=RELEASE, namespace=NAMESPACE)


# --- checkov ---------------------------------------------------------------------------------

def skip_annotations(obj: dict) -> dict[str, str]:
    """{check id: reason} from checkov.io/skipN: ID=reason annotations."""
    out = {}
    for k, val in (obj["metadata"].get("annotations") or {}).items():
        if re.fullmatch(r"checkov\.io/skip\d+", k):
            check, _, reason = val.partition("=")
            out[check] = reason
    return out


@pytest.mark.skipif(not CHECKOV.exists(), reason=f"checkov is not installed in {CHECKOV.parent.parent} "
                    "(python3 -m venv .venv-checkov && .venv-checkov/bin/pip install checkov)")
def test_checkov(rendered, tmp_path):
    """No failed check but the ones the chart skips, each with its reason; and every skip is
    needed (the same manifests without the skip annotations fail exactly those checks)."""
    expected: dict[str, set[str]] = {}
    for name, files in rendered.items():
        for path, text in files.items():
            if path.endswith("NOTES.txt") or not text.strip():
                continue
            base = Path(path).name
            for variant in ("as-rendered", "without-skips"):
                out = tmp_path / variant / name / base
                out.parent.mkdir(parents=True, exist_ok=True)
                docs_ = [d for d in yaml.safe_load_all(text) if d]
                if variant == "without-skips":
                    for d in docs_:
                        skips = skip_annotations(d)
                        for check, reason in skips.items():
                            assert len(reason.strip()) >= 20, f"{check} skipped without a reason"
                        expected.setdefault(f"/{name}/{base}", set()).update(skips)
                        ann = d["metadata"].get("annotations") or {}
                        for k in [k for k in ann if k.startswith("checkov.io/")]:
                            del ann[k]
                out.write_text(yaml.safe_dump_all(docs_, sort_keys=False))
    proc = subprocess.run([str(CHECKOV), "-d", str(tmp_path), "--framework", "kubernetes",
                           "--compact", "--quiet", "--skip-download", "-o", "json"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    assert proc.stdout.strip(), proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["summary"]["parsing_errors"] == 0
    failed: dict[str, dict[str, set[str]]] = {"as-rendered": {}, "without-skips": {}}
    for f in report["results"]["failed_checks"]:
        variant, _, path = f["file_path"].lstrip("/").partition("/")
        failed[variant].setdefault(f"/{path}", set()).add(f["check_id"])
    assert not failed["as-rendered"], \
        f"checkov failures not skipped in the chart with a reason: {failed['as-rendered']}"
    assert report["summary"]["skipped"] == sum(map(len, expected.values()))
    got = failed["without-skips"]
    assert got == {k: v for k, v in expected.items() if v}, "each checkov skip must be needed"


# --- documentation and the chart's copies ----------------------------------------------------

def _value_paths(node: dict, prefix: str = "") -> list[tuple[str, bool]]:
    """(dotted path, is it a leaf) of every key in values.yaml."""
    out = []
    for key, val in node.items():
        if "/" in str(key):  # a label key inside a map of labels (nodeSelector): data, not a value
            continue
        path = f"{prefix}{key}"
        nested = isinstance(val, dict) and any("/" not in str(k) for k in val)
        out.append((path, not nested))
        if nested:
            out += _value_paths(val, path + ".")
    return out


def test_readme_documents_every_value():
    """Every top-level key and every leaf of values.yaml has a row in the README's table (rows
    for the keys in between are optional), and the table names no key that does not exist."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text().partition("\n## Values\n")[2].partition("\n## ")[0]
    assert readme, "helm/wattprint/README.md needs a '## Values' section"
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, re.M))
    paths = _value_paths(values)
    required = [p for p, leaf in paths if leaf or "." not in p]
    missing = [p for p in required if p not in documented]
    assert not missing, f"values missing from helm/wattprint/README.md's table: {missing}"
    stale = sorted(documented - {p for p, _ in paths})
    assert not stale, f"helm/wattprint/README.md documents values that do not exist: {stale}"


def test_every_schema_key_is_in_values():
    """values.yaml, values.schema.json and the README describe the same keys."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(schema["properties"]) - {"global"} == set(values)
    for key, sub in schema["properties"].items():
        if sub.get("additionalProperties") is False and key != "config":
            assert set(sub["properties"]) == set(values[key]), key


def test_chart_app_version_is_the_package_version():
    from exporter import __version__

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__


def test_rules_copy_is_current():
    if not RULES.exists():
        pytest.skip("rules/wattprint.rules.yaml does not exist yet")
    assert CHART_RULES.exists() and CHART_RULES.read_bytes() == RULES.read_bytes(), \
        f"helm/wattprint/files/wattprint.rules.yaml differs from rules/wattprint.rules.yaml; {SYNC_HINT}"


def test_dashboard_copies_are_current():
    sources = sorted(DASHBOARDS.glob("*.json")) if DASHBOARDS.is_dir() else []
    if not sources:
        pytest.skip("dashboards/*.json does not exist yet (generated by the dashboard tooling)")
    copies = {p.name: p.read_bytes() for p in CHART_DASHBOARDS.glob("*.json")}
    assert copies == {p.name: p.read_bytes() for p in sources}, \
        f"helm/wattprint/dashboards/ differs from dashboards/; {SYNC_HINT}"


def sync() -> None:
    """Copy the rules file and dashboards into the chart; regenerate the schema's config part."""
    if RULES.exists():
        CHART_RULES.parent.mkdir(exist_ok=True)
        shutil.copyfile(RULES, CHART_RULES)
        print(f"copied {RULES.relative_to(ROOT)}")
    if DASHBOARDS.is_dir():
        CHART_DASHBOARDS.mkdir(exist_ok=True)
        for old in CHART_DASHBOARDS.glob("*.json"):
            old.unlink()
        for src in sorted(DASHBOARDS.glob("*.json")):
            shutil.copyfile(src, CHART_DASHBOARDS / src.name)
            print(f"copied {src.relative_to(ROOT)}")
    path = CHART / "values.schema.json"
    schema = json.loads(path.read_text())
    schema["properties"]["config"] = config_schema()
    path.write_text(json.dumps(schema, indent=2) + "\n")
    print(f"updated {path.relative_to(ROOT)} (config)")


if __name__ == "__main__":
    if sys.argv[1:] != ["sync"]:
        sys.exit("usage: tests/test_helm.py sync")
    sys.path.insert(0, str(ROOT))
    sync()
