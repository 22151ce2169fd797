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
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "SecurityContextConstraints"}
RELEASE, NAMESPACE = "wp", "monitoring"
FAKE_DASHBOARD = "zz-test-only.json"  # added to a temporary copy of the chart by the tests

VALUE_SETS: dict[str, dict] = {
    "defaults": {},
    "everything": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"},
                           "tlsConfig": {"insecureSkipVerify": True},
                           "basicAuth": {"username": {"name": "wattprint-scrape", "key": "username"},
                                         "password": {"name": "wattprint-scrape", "key": "password"}},
                           "relabelings": [{"targetLabel": "region", "replacement": "eu"}],
                           "jobLabel": "app.kubernetes.io/part-of", "targetLabels": ["app.kubernetes.io/part-of"],
                           "sampleLimit": 20000, "scrapeProtocols": ["OpenMetricsText1.0.0", "PrometheusText0.0.4"],
                           "metricRelabelings": [{"sourceLabels": ["__name__"],
                                                  "regex": "go_.*", "action": "drop"}]},
        "cluster": {"name": "prod"},
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

# The platform value sets a user passes with -f (helm/wattprint/ci/<platform>.yaml, also what
# chart-testing's `ct install` reads): each renders, validates and passes checkov like the above.
CI_SETS = {f"ci-{p.stem}": yaml.safe_load(p.read_text()) or {} for p in sorted((CHART / "ci").glob("*.yaml"))}
VALUE_SETS.update(CI_SETS)

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
    """The prometheus-operator CRDs and OpenShift's SCC are not in kubernetes-validate: check
    the fields by hand."""
    assert doc["apiVersion"] == ("security.openshift.io/v1" if doc["kind"] == "SecurityContextConstraints"
                                 else "monitoring.coreos.com/v1")
    meta = doc["metadata"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta["name"])
    assert meta.get("namespace") or doc["kind"] == "SecurityContextConstraints"
    if doc["kind"] == "SecurityContextConstraints":
        assert "namespace" not in meta  # cluster-scoped
        assert doc["allowPrivilegedContainer"] in (True, False) and doc["allowHostNetwork"] is False
        assert doc["runAsUser"]["type"] in ("MustRunAs", "RunAsAny") and doc["seLinuxContext"]["type"]
        return
    spec = doc["spec"]
    if doc["kind"] in ("ServiceMonitor", "PodMonitor"):
        assert spec["selector"]["matchLabels"]
        endpoints = spec["endpoints" if doc["kind"] == "ServiceMonitor" else "podMetricsEndpoints"]
        assert endpoints
        for ep in endpoints:
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


def _field_schema(model, key: str, f) -> dict:
    """The JSON schema of one config key, from its pydantic annotation: its type (a duration is a
    number of seconds or a string like 5s/500ms/2m, the exporter's own pattern), a Literal's
    values, its bounds, null where it is optional. A key that a "before" validator rewrites
    (log.level, lowercased) gets only its type (LOUD passes the schema, the exporter refuses
    it): never tighter than the exporter. test_bad_config_fails_helm_template_not_the_pod checks
    both reject the same bad values."""
    import types
    import typing

    import annotated_types as at

    from exporter import config as cfg

    def of(tp) -> dict:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            inner = [a for a in args if a is not type(None)]
            out = of(inner[0]) if len(inner) == 1 else {}
            if type(None) in args and "type" in out:
                out["type"] = [out["type"], "null"]
            elif type(None) in args and out:
                out = {"anyOf": [out, {"type": "null"}]}
            return out
        if origin is typing.Literal:
            return {"enum": list(args)}
        if origin is list:
            return {"type": "array", "items": of(args[0]) if args else {}}
        if origin is dict:
            return {"type": "object", "additionalProperties": of(args[1])}
        simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
        return {"type": simple[tp]} if tp in simple else {}

    before = [d for d in model.__pydantic_decorators__.field_validators.values()
              if key in d.info.fields and d.info.mode == "before"]
    if any(type(m).__name__ == "BeforeValidator" for m in f.metadata):  # Duration
        out = {"anyOf": [{"type": "number"}, {"type": "string", "pattern": cfg._DURATION.pattern}]}
        if typing.get_origin(f.annotation) in (typing.Union, types.UnionType):
            out["anyOf"].append({"type": "null"})
    elif before:  # rewritten first (log.level is lowercased): only the Literal's type is known
        values = typing.get_args(f.annotation) if typing.get_origin(f.annotation) is typing.Literal else ()
        out = {"type": "string"} if values and all(isinstance(v, str) for v in values) else {}
    else:
        out = of(f.annotation)
        for m in f.metadata:
            for cls, attr, word in [(at.Ge, "ge", "minimum"), (at.Le, "le", "maximum"),
                                    (at.Gt, "gt", "exclusiveMinimum"), (at.Lt, "lt", "exclusiveMaximum")]:
                if isinstance(m, cls):
                    out[word] = getattr(m, attr)
    return {"description": " ".join((f.description or "").replace("%%", "%").split()), **out}


def config_schema() -> dict:
    """The `config` part of values.schema.json, generated from exporter/config.py."""
    from exporter import config as cfg

    sections = {}
    for section, sfield in cfg.Config.model_fields.items():
        model = sfield.default_factory
        keys = {key: _field_schema(model, key, f)
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


# config values both the chart's schema and the exporter reject, each with the key it names
BAD_CONFIGS = [
    ({"sample": {"interval": "forever"}}, "interval"),
    ({"sample": {"interval": "5 minutes"}}, "interval"),
    ({"gpu": {"backend": "cuda"}}, "backend"),
    ({"attribution": {"level": "namespace"}}, "level"),
    ({"attribution": {"max_series": 5}}, "max_series"),
    ({"carbon": {"pue": 0.5}}, "pue"),
    ({"carbon": {"counterfactual_regions": "FR"}}, "counterfactual_regions"),
    ({"engines": {"enabled": "sometimes"}}, "enabled"),
    ({"engines": {"max_targets": "many"}}, "max_targets"),
    ({"kubernetes": {"enabled": "yes please"}}, "enabled"),
    ({"log": {"level": 3}}, "level"),
]
GOOD_CONFIGS = [{"sample": {"interval": v}} for v in ("5s", "500ms", "2m", 10, 0.5, "1.5s")] + [
    {"log": {"level": "DEBUG"}}, {"carbon": {"pue": None}}, {"gpu": {"simulation_file": None}},
    {"engines": {"timeout": 3, "max_bytes": 1 << 20}}, {"attribution": {"rules": [{"name": "batch", "cmdline": "train.py"}]}}]


def _exporter_loads(conf: dict, path: Path) -> None:
    from exporter import cli

    path.write_text(yaml.safe_dump(conf))
    cli.load_config(cli.build_parser().parse_args(["serve", f"--config.file={path}"]))


def test_bad_config_fails_helm_template_not_the_pod(tmp_path):
    """A config the exporter would refuse (and crash-loop on) fails `helm template` with the key
    named; one it accepts renders."""
    from exporter import config as cfg

    chart = helm.Chart.load(str(CHART))
    for conf, key in BAD_CONFIGS:
        with pytest.raises(helm.HelmValuesError, match=key):
            chart.render({"config": conf}, name=RELEASE, namespace=NAMESPACE)
        with pytest.raises((cfg.ConfigError, SystemExit)):
            _exporter_loads(conf, tmp_path / "bad.yaml")
    for conf in GOOD_CONFIGS:
        chart.validate_schema({"config": conf})
        _exporter_loads(conf, tmp_path / "good.yaml")


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
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "Pod", "Service",
                     "ServiceAccount"]  # the Pod: the helm test hook
    assert all(d["metadata"]["namespace"] == NAMESPACE for d in objs
               if d["kind"] not in ("ClusterRole", "ClusterRoleBinding"))
    spec, c = pod_spec(objs), container(objs)
    assert spec["hostPID"] is True
    assert "runtimeClassName" not in spec  # a RuntimeClass that does not exist rejects the pods
    assert "initContainers" not in spec
    assert spec.get("hostNetwork") is not True and spec.get("hostIPC") is not True
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in spec["tolerations"]
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
    # the chart's own relabelings first (the exporter pod's identity dropped, node and instance
    # from the node), then the values' (tests/integration/test_helm_scrape.py scrapes with them)
    assert ep["relabelings"][0] == {"action": "labeldrop", "regex": "(namespace|service|pod|container|endpoint)"}
    assert [r.get("targetLabel") for r in ep["relabelings"][1:]] == ["node", "instance", "cluster", "region"]
    assert ep["relabelings"][-1] == VALUE_SETS["everything"]["serviceMonitor"]["relabelings"][0]
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert ep["relabelings"][3] == {"targetLabel": "cluster", "replacement": "prod", "action": "replace"}
    assert sm["spec"]["jobLabel"] == "app.kubernetes.io/part-of" and sm["spec"]["sampleLimit"] == 20000
    assert sm["spec"]["targetLabels"] == ["app.kubernetes.io/part-of"]
    assert sm["spec"]["scrapeProtocols"] == ["OpenMetricsText1.0.0", "PrometheusText0.0.4"]
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    # PrometheusRule: the rules file's groups, then the additional ones
    rule = one(objs, "PrometheusRule")
    want = yaml.safe_load(RULES.read_text())["groups"] + \
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
    assert netpol["spec"]["ingress"][0]["from"][:-1] == VALUE_SETS["everything"]["networkPolicy"]["ingressFrom"]
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


def test_ci_gke_mounts_the_driver_and_is_privileged(docs):
    objs = docs["ci-gke"]
    spec, c = pod_spec(objs), container(objs)
    assert "runtimeClassName" not in spec and "nodeSelector" not in spec
    term = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term == [{"matchExpressions": [{"key": "cloud.google.com/gke-accelerator", "operator": "Exists"}]}]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert volumes["nvidia-driver"]["hostPath"]["path"] == "/home/kubernetes/bin/nvidia"
    assert mounts["nvidia-driver"] == {"name": "nvidia-driver", "mountPath": "/usr/local/nvidia", "readOnly": True}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["LD_LIBRARY_PATH"].split(":")[0] == "/usr/local/nvidia/lib64"
    assert c["securityContext"]["privileged"] is True and c["securityContext"]["allowPrivilegeEscalation"] is True
    assert {"CKV_K8S_16", "CKV_K8S_20"} <= set(skip_annotations(one(objs, "DaemonSet")))
    # GKE taints GPU nodes nvidia.com/gpu=present:NoSchedule
    assert any(t["key"] == "nvidia.com/gpu" and t["operator"] == "Exists" for t in spec["tolerations"])
    for name in ("defaults", "ci-eks", "ci-aks"):
        sc = container(docs[name])["securityContext"]
        assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False, name
        assert "nvidia-driver" not in {v["name"] for v in pod_spec(docs[name])["volumes"]}, name


def test_ci_eks_aks_and_gpu_operator_placement(docs):
    eks = pod_spec(docs["ci-eks"])
    assert "runtimeClassName" not in eks and "nodeSelector" not in eks
    terms = eks["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {t["matchExpressions"][0]["key"] for t in terms} == {
        "eks.amazonaws.com/instance-gpu-manufacturer", "karpenter.k8s.aws/instance-gpu-manufacturer",
        "nvidia.com/gpu.present"}
    aks = pod_spec(docs["ci-aks"])
    assert "runtimeClassName" not in aks
    assert aks["nodeSelector"] == {"kubernetes.azure.com/accelerator": "nvidia"}
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in aks["tolerations"]
    assert pod_spec(docs["ci-gpu-operator"])["runtimeClassName"] == "nvidia"


def test_ci_nonroot_with_the_permission_init_container(docs):
    """node-exporter's pattern: a root init container with CHOWN/FOWNER only gives the
    exporter's group read access to energy_uj; the exporter runs as 10066 with nothing."""
    objs = docs["ci-nonroot"]
    spec, c = pod_spec(objs), container(objs)
    (init,) = spec["initContainers"]
    assert init["image"] == c["image"]
    isc = init["securityContext"]
    assert isc["runAsUser"] == 0 and isc["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]}
    assert isc["allowPrivilegeEscalation"] is False and isc["privileged"] is False
    assert init["volumeMounts"] == [{"name": "sys", "mountPath": "/host/sys", "readOnly": False}]
    script = init["command"][-1]
    assert "chown root:10066" in script and "chmod g+r" in script and "-name energy_uj" in script
    for sc in (spec["securityContext"], c["securityContext"]):
        assert sc["runAsUser"] == 10066 and sc["runAsGroup"] == 10066 and sc["runAsNonRoot"] is True
    assert {m["name"]: m["readOnly"] for m in c["volumeMounts"] if m["name"] in ("sys", "proc")} == \
        {"sys": True, "proc": True}
    assert "pod-resources" not in {v["name"] for v in spec["volumes"]}
    assert {"CKV_K8S_23", "CKV_K8S_40"}.isdisjoint(skip_annotations(one(objs, "DaemonSet")))
    with pytest.raises(helm.HelmError, match="permissionInit.enabled is for a non-root exporter"):
        helm.Chart.load(str(CHART)).render({"permissionInit": {"enabled": True}}, name=RELEASE, namespace=NAMESPACE)
    # GID 0 would chown energy_uj to group root: readable by every GID-0 process on the node
    for sc in ({"runAsUser": 0, "runAsGroup": 10066}, {"runAsUser": 10066, "runAsGroup": 0}):
        with pytest.raises(helm.HelmError, match="permissionInit.enabled is for a non-root exporter"):
            helm.Chart.load(str(CHART)).render({"permissionInit": {"enabled": True}, "securityContext": sc},
                                               name=RELEASE, namespace=NAMESPACE)


def test_ci_openshift_scc_and_podmonitor(docs):
    objs = docs["ci-openshift"]
    scc = one(objs, "SecurityContextConstraints")
    assert scc["allowHostPID"] is True and scc["allowHostDirVolumePlugin"] is True
    assert scc["allowPrivilegedContainer"] is False and scc["allowPrivilegeEscalation"] is False
    assert scc["runAsUser"] == {"type": "MustRunAs", "uid": 0}
    assert scc["requiredDropCapabilities"] == ["ALL"] and scc["allowedCapabilities"] == []
    assert scc["seLinuxContext"] == {"type": "MustRunAs", "seLinuxOptions": {"type": "spc_t"}}
    # every volume type the DaemonSet uses is allowed
    kinds = {k for v in pod_spec(objs)["volumes"] for k in v if k != "name"}
    assert kinds <= set(scc["volumes"]), kinds
    rule = one(objs, "ClusterRole")["rules"][-1]
    assert rule == {"apiGroups": ["security.openshift.io"], "resources": ["securitycontextconstraints"],
                    "resourceNames": [scc["metadata"]["name"]], "verbs": ["use"]}
    assert pod_spec(objs)["runtimeClassName"] == "nvidia"
    pm = one(objs, "PodMonitor")
    assert pm["spec"]["selector"]["matchLabels"].items() <= \
        one(objs, "DaemonSet")["spec"]["template"]["metadata"]["labels"].items()
    assert "ServiceMonitor" not in {d["kind"] for d in objs}
    assert "SecurityContextConstraints" not in {d["kind"] for d in docs["defaults"]}


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
                                   {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
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


def test_prometheus_rule_tuning(tmp_path):
    """Alerts disabled by name, `for` and severity per alert, labels on every alert, the
    runbook's own address, thresholds (the same text as `wattprint rules --rules.threshold`);
    recording rules untouched; promtool accepts the result."""
    from support import PROMTOOL

    from exporter import rules

    thresholds = {"gpu_idle_share": 0.8, "intensity_max_age_seconds": 7200, "efficiency_regression_percent": 150}
    tuning = {"enabled": True, "disabled": ["WattprintReservationMostlyIdle"], "thresholds": thresholds,
              "alerts": {"WattprintExporterDown": {"for": "10m", "severity": "critical"}},
              "additionalRuleLabels": {"team": "ml-platform", "severity": "page"},
              "runbookUrl": "https://wiki.example.com/ops/wattprint-runbook"}
    rule = one(manifests(render(CHART, {"prometheusRule": tuning})), "PrometheusRule")
    plain = yaml.safe_load(rules.generate(thresholds=thresholds))["groups"]
    got = {g["name"]: g for g in rule["spec"]["groups"]}
    exprs = {r["alert"]: r["expr"] for g in got.values() for r in g["rules"] if "alert" in r}
    assert "> 0.8)" in exprs["WattprintGpuIdleWithEndpointResident"] and ">= 150 / 100" in exprs["WattprintEfficiencyRegression"]
    assert list(got) == [g["name"] for g in plain]
    for g in plain:
        want_alerts = [r for r in g["rules"] if r.get("alert") != "WattprintReservationMostlyIdle"]
        assert len(got[g["name"]]["rules"]) == len(want_alerts)
        for r, mine in zip(want_alerts, got[g["name"]]["rules"]):
            if "record" in r:
                assert mine == r
                continue
            assert mine["expr"] == r["expr"] and mine["alert"] == r["alert"]
            down = r["alert"] == "WattprintExporterDown"
            assert mine["for"] == ("10m" if down else r["for"])
            # the alert's own severity wins over additionalRuleLabels; the per-alert one over both
            assert mine["labels"] == {**r["labels"], "team": "ml-platform", **({"severity": "critical"} if down else {})}
            section = r["annotations"]["runbook_url"].split("#")[1]
            assert mine["annotations"]["runbook_url"] == f"https://wiki.example.com/ops/wattprint-runbook#{section}"
            assert {k: v for k, v in mine["annotations"].items() if k != "runbook_url"} == \
                {k: v for k, v in r["annotations"].items() if k != "runbook_url"}
    assert "WattprintReservationMostlyIdle" not in {r.get("alert") for g in got.values() for r in g["rules"]}
    if PROMTOOL:
        f = tmp_path / "tuned.rules.yaml"
        f.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
        check = subprocess.run([PROMTOOL, "check", "rules", str(f)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    chart = helm.Chart.load(str(CHART))
    for bad, match in [({"disabled": ["WattprintTypo"]}, "no alert named \"WattprintTypo\""),
                       ({"alerts": {"WattprintNope": {"for": "1m"}}}, "no alert named"),
                       ({"alerts": {"WattprintExporterDown": {"for": "soon"}}}, "for"),
                       ({"runbookUrl": "wiki/runbook"}, "runbookUrl"),
                       ({"thresholds": {"gpu_idle_shares": 0.8}}, "gpu_idle_shares"),
                       ({"thresholds": {"gpu_idle_share": "high"}}, "gpu_idle_share")]:
        with pytest.raises(helm.HelmError, match=match):
            chart.render({"prometheusRule": {"enabled": True, **bad}}, name=RELEASE, namespace=NAMESPACE)


def test_helm_test_hook_runs_wattprint_check_on_the_rendered_config(docs, tmp_path):
    """The `helm test` pod mounts the DaemonSet's ConfigMap and runs `wattprint check` on it;
    its script, run here on the rendered config, passes, and fails on a config the exporter
    refuses (one that got past the schema, e.g. an out-of-range interval)."""
    objs = docs["defaults"]
    pod = next(d for d in objs if d["kind"] == "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    c = spec["containers"][0]
    assert c["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["readOnlyRootFilesystem"] is True
    assert not [v for v in spec["volumes"] if "hostPath" in v]
    cm = next(v for v in spec["volumes"] if v["name"] == "config")["configMap"]["name"]
    assert cm == next(v for v in pod_spec(objs)["volumes"] if v["name"] == "config")["configMap"]["name"]
    script = c["command"][-1]
    assert "wattprint check --config.file=/etc/wattprint/config.yaml" in script
    assert f"http://wp-wattprint.{NAMESPACE}.svc:10066/readyz" in script
    check_line = next(line for line in script.splitlines() if line.strip().startswith("wattprint check"))
    env = {**os.environ, **{e["name"]: e["value"] for e in c["env"]}, "PYTHONPATH": str(ROOT)}
    for text, ok in [(one(objs, "ConfigMap")["data"]["config.yaml"], True),
                     ("sample:\n  interval: 1h\n", False)]:
        conf = tmp_path / "config.yaml"
        conf.write_text(text)
        cmd = check_line.replace("wattprint ", f"{sys.executable} -m exporter ", 1).replace(
            "/etc/wattprint/config.yaml", str(conf))
        proc = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
        assert (proc.returncode == 0) is ok, proc.stdout[-1500:] + proc.stderr[-1500:]
        if not ok:
            assert "sample.interval" in proc.stderr, proc.stderr
    # its labels are not the exporter's: the DaemonSet would adopt it, the Service select it
    selector = one(objs, "DaemonSet")["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= pod["metadata"]["labels"].items()
    https = next(d for d in docs["everything"] if d["kind"] == "Pod")
    # a NetworkPolicy with ingressFrom lets the test pod in
    peers = one(docs["everything"], "NetworkPolicy")["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {k: https["metadata"]["labels"][k] for k in
                                            ("app.kubernetes.io/name", "app.kubernetes.io/instance")}}} in peers
    assert "/readyz" not in https["spec"]["containers"][0]["command"][-1]  # TLS/auth: check only


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
    with pytest.raises(helm.HelmError, match="choose one"):
        chart.render({"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
                     name=RELEASE, namespace=NAMESPACE)
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


def chart_rules() -> str:
    """The chart's rules file: rules/wattprint.rules.yaml with the __T:name__ threshold tokens
    left in, for prometheusrule.yaml to fill from prometheusRule.thresholds."""
    from exporter import rules

    return rules.generate(thresholds=None)


def thresholds_schema() -> dict:
    from exporter import rules

    return {"type": "object", "additionalProperties": False,
            "description": "The alerts' numeric thresholds (exporter/rules.py THRESHOLDS, generated by "
                           "tests/test_helm.py sync)",
            "properties": {k: {"type": "number", "minimum": 0} for k in rules.THRESHOLDS}}


def test_threshold_values_are_the_generators():
    from exporter import rules

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["prometheusRule"]["thresholds"] == rules.THRESHOLDS
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["properties"]["prometheusRule"]["properties"]["thresholds"] == thresholds_schema(), SYNC_HINT


def test_rules_copy_is_current():
    if not RULES.exists():
        pytest.skip("rules/wattprint.rules.yaml does not exist yet")
    assert CHART_RULES.exists() and CHART_RULES.read_text() == chart_rules(), \
        f"helm/wattprint/files/wattprint.rules.yaml differs from the generator's; {SYNC_HINT}"


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
        CHART_RULES.write_text(chart_rules())
        print(f"generated {CHART_RULES.relative_to(ROOT)} (thresholds left to the chart's values)")
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
    schema["properties"]["prometheusRule"]["properties"]["thresholds"] = thresholds_schema()
    path.write_text(json.dumps(schema, indent=2) + "\n")
    print(f"updated {path.relative_to(ROOT)} (config)")


if __name__ == "__main__":
    if sys.argv[1:] != ["sync"]:
        sys.exit("usage: tests/test_helm.py sync")
    sys.path.insert(0, str(ROOT))
    sync()
