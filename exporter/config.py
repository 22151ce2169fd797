"""One typed, validated configuration: YAML file, ``WATTPRINT_*`` environment, flags.

Precedence (lowest to highest): built-in defaults < ``--config.file`` YAML < environment
variables < command-line flags. Every scalar key ``section.key_name`` has the flag
``--section.key-name`` and the variable ``WATTPRINT_SECTION_KEY_NAME``; structured keys (lists,
maps) are set in the file. Flags and variables are generated from this module, so they cannot
drift from it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from .sensors.registry import CPU_METERS, GPU_BACKENDS

ENV_PREFIX = "WATTPRINT_"
DEFAULT_PORT = 10066  # see README "Port": not in the Prometheus default port allocations list

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _to_seconds(v: Any) -> float:
    return parse_duration(v)


Duration = Annotated[float, BeforeValidator(_to_seconds)]


def within(v: float, lo: float, hi: float, text: str) -> float:
    """A duration's allowed range, as a validator (the error says it in the user's units)."""
    if not lo <= v <= hi:
        raise ValueError(f"must be {text}")
    return v
"""Seconds, written as 5, 5s, 500ms, 2m or 1h."""


class ConfigError(Exception):
    """A configuration problem, worded for the person who has to fix it."""


def parse_duration(value: Any) -> float:
    """``5``, ``5s``, ``500ms``, ``2m``, ``1h`` → seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"not a duration: {value!r} (use e.g. 5s, 500ms, 2m)")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def format_duration(seconds: float) -> str:
    """A duration as a person writes it, and as parse_duration reads it back: 2h, 5m, 5s, 500ms."""
    for unit in ("h", "m", "s", "ms"):
        n = seconds / _UNIT_S[unit]
        if n >= 1 and abs(n - round(n)) < 1e-9:
            return f"{round(n)}{unit}"
    return "0s" if seconds == 0 else f"{seconds:g}s"


def is_duration(f: Any) -> bool:
    return any(isinstance(m, BeforeValidator) and m.func is _to_seconds for m in f.metadata)


def allowed_values(f: Any) -> tuple[str, ...] | None:
    """The values a Literal key allows, None for any other key."""
    return getattr(f.annotation, "__args__", None) if "Literal" in str(f.annotation) else None


def default_text(f: Any) -> str:
    """A key's default as it would be written in a flag ('' when it has none)."""
    if f.default is None:
        return ""
    return format_duration(f.default) if is_duration(f) else str(f.default)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WebConfig(_Section):
    listen_address: str = Field(
        f":{DEFAULT_PORT}", description="Address to serve /metrics on: host:port, :port or [v6]:port.")
    telemetry_path: str = Field("/metrics", description="Path under which metrics are served.")
    config_file: str | None = Field(
        None, description="Web configuration file in the Prometheus exporter-toolkit format: TLS, "
        "client certificates, basic auth, response headers, rate limit. Re-read when it or the "
        "files it names change.")

    @field_validator("listen_address")
    @classmethod
    def _addr(cls, v: str) -> str:
        split_listen_address(v)
        return v

    @field_validator("telemetry_path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or v in ("/", "/healthz", "/readyz"):
            raise ValueError("must start with '/' and not be /, /healthz or /readyz")
        return v


class PathConfig(_Section):
    sysfs: str = Field("/sys", description="sysfs mount point (RAPL is read under class/powercap, "
                       "hwmon sensors under class/hwmon).")
    procfs: str = Field("/proc", description="procfs mount point (CPU time, cgroups, command lines).")


class SampleConfig(_Section):
    interval: Duration = Field(
        5.0, description="Time between samples (e.g. 1s, 5s). Energy counters are exact at any "
        "interval; shorter intervals follow load changes more closely and cost more CPU.")

    _range = field_validator("interval")(lambda v: within(v, 0.1, 300, "between 100ms and 5m"))


class LogConfig(_Section):
    level: Literal["debug", "info", "warn", "error"] = Field("info", description="Log level.")
    format: Literal["logfmt", "json"] = Field("logfmt", description="Log line format.")

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


GPU_BACKEND_NAMES = ("auto", *GPU_BACKENDS, "none")
CPU_METER_NAMES = ("auto", *CPU_METERS)


class GpuConfig(_Section):
    backend: Literal[GPU_BACKEND_NAMES] = Field(  # type: ignore[valid-type]
        "auto", description="GPU backend (exporter/sensors/registry.py): auto (the first whose "
        "library and devices are present, else no GPU), nvml (required), amdsmi (AMD Instinct, "
        "required), simulated (a test double driven by --gpu.simulation-file; its metrics say "
        "backend=\"simulated\"), simulated-amd (the same for amdsmi), none.")
    util_poll_interval: Duration = Field(
        1.0, description="How often NVML per-process utilisation is read between samples on a GPU "
        "that two or more processes share (it splits the GPU's active energy between them). NVML "
        "keeps only each process's newest sample, refreshed about every 200 ms: 200ms collects every "
        "sample (4 more wake-ups a second at 1s sampling); the default reads one a second, an unbiased "
        "1-in-5 subsample of time.")
    simulation_file: str | None = Field(
        None, description="Scenario YAML for --gpu.backend=simulated or simulated-amd (see tests/fixtures/sim).")
    idle_power_watts: dict[str, float] = Field(
        default_factory=dict, description="Idle baseline per GPU index or UUID (file only), "
        "overriding the learned and table values.")

    _poll = field_validator("util_poll_interval")(lambda v: within(v, 0.1, 60, "between 100ms and 1m"))

    @field_validator("idle_power_watts")
    @classmethod
    def _idle(cls, v: dict[str, float]) -> dict[str, float]:
        for k, w in v.items():
            if not 0 <= w <= 2000:
                raise ValueError(f"idle power for GPU {k!r} must be within 0..2000 W, got {w}")
        return v


class CpuConfig(_Section):
    meter: Literal[CPU_METER_NAMES] = Field(  # type: ignore[valid-type]
        "auto", description="CPU meter (exporter/sensors/registry.py): auto (the first usable: RAPL, "
        "then hwmon, else the estimate), rapl (required), hwmon (required: Grace / amd_energy / ACPI "
        "power meter sensors), estimate.")
    rapl: Literal["auto", "off"] = Field(
        "auto", description="Read RAPL powercap zones when present and readable (auto) or never (off).")
    estimate_min_watts_per_vcpu: float = Field(
        0.74, ge=0, le=50, description="CPU estimate: watts per vCPU at idle (Cloud Carbon "
        "Footprint AWS fallback average, ccf-coefficients 2024).")
    estimate_max_watts_per_vcpu: float = Field(
        3.5, ge=0, le=100, description="CPU estimate: watts per vCPU at 100%% utilisation "
        "(Cloud Carbon Footprint AWS fallback average).")
    estimate_vcpus: int | None = Field(
        None, ge=1, le=4096, description="vCPUs for the estimate (default: the CPUs the host reports).")


class AttributionConfig(_Section):
    level: Literal["endpoint", "pod", "process"] = Field(
        "endpoint", description="Series detail: endpoint (default), pod (adds per-pod series), "
        "process (adds per-process series; high cardinality, for debugging).")
    gpu_idle_policy: Literal["memory", "equal"] = Field(
        "memory", description="How a GPU's idle energy is split over its resident endpoints: "
        "by GPU memory held (memory) or equally (equal).")
    cpu_idle_policy: Literal["system", "gpu_share"] = Field(
        "system", description="Where idle CPU energy goes: the endpoint=\"system\" series "
        "(system) or spread over endpoints by their GPU energy share (gpu_share).")
    rules: list[dict[str, str]] = Field(
        default_factory=list, description="Extra identity rules (file only): a list of "
        "{name: <endpoint>, cmdline: <regex>, model: <served name>} tried after Kubernetes and "
        "the known inference servers.")
    max_series: int = Field(
        2000, ge=10, le=1_000_000, description="Cardinality cap per attributed metric; label "
        "sets beyond it fold into endpoint=\"overflow\" and are counted.")


    @field_validator("rules")
    @classmethod
    def _rules(cls, v: list[dict[str, str]]) -> list[dict[str, str]]:
        from .identity.resolver import Rule

        for i, raw in enumerate(v):
            Rule.parse(raw, f"rules[{i}]")
        return v


class CarbonConfig(_Section):
    region: str | None = Field(
        None, description="Where this node's grid is: a dataset key or name (aws:us-east-1, "
        "europe-west4, westeurope, FR; list them with `wattprint regions`). Unset: the node's "
        "Kubernetes region label or cloud instance metadata, else the world average.")
    detect_region: Literal["auto", "on", "off"] = Field(
        "auto", description="Ask cloud instance metadata (AWS IMDSv2, GCP, Azure; 1 s timeout) "
        "for the region when carbon.region is unset: auto = only on hosts whose firmware names a "
        "cloud vendor.")
    pue: float | None = Field(
        None, ge=1.0, le=3.0, description="Power usage effectiveness of the facility. Default: "
        "the cloud's published constant (AWS 1.135, GCP 1.1, Azure 1.185; Cloud Carbon "
        "Footprint), else 1.0 (IT energy only, as CodeCarbon).")
    max_age: Duration = Field(
        7200.0, description="A live reading older than this falls back to the bundled value.")
    embodied_gpu_kg: float = Field(150.0, ge=0, le=5000, description="Manufacturing emissions "
                                   "per GPU, kgCO2e (BLOOM; published range ~15-575).")
    embodied_server_kg: float = Field(2500.0, ge=0, le=50000, description="Manufacturing emissions "
                                      "per server excluding GPUs, kgCO2e (BLOOM, HPE Apollo 6500).")
    embodied_gpus_per_server: int = Field(8, ge=1, le=64, description="GPUs sharing one server's "
                                          "embodied emissions.")
    embodied_lifetime_years: float = Field(4.0, gt=0, le=20, description="Amortisation period "
                                           "(Cloud Carbon Footprint 4 y; BLOOM 6 y).")
    providers: list[dict[str, Any]] = Field(
        default_factory=list, description="Live intensity providers (file only), tried in order: "
        "[{type: electricitymaps|watttime|ukgrid|file|wattprint, ...options}]; secrets as <name>_file or "
        "<name>_env, never inline; wattprint reads the cluster's `wattprint intensity` service.")
    counterfactual_regions: list[str] = Field(
        default_factory=list, description="Candidate regions (file only) whose bundled intensity "
        "prices the same energy in wattprint_counterfactual_co2e_grams_total.")
    training_co2e_tonnes: dict[str, float] = Field(
        default_factory=dict, description="Training footprint per served model name (file only), "
        "tCO2e, e.g. from model cards.")

    @field_validator("region")
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        if v:
            from .carbon import regions

            try:
                regions.lookup(v)
            except KeyError as e:
                raise ValueError(str(e.args[0]) if e.args else f"unknown region {v!r}") from None
        return v

    @field_validator("counterfactual_regions")
    @classmethod
    def _cf(cls, v: list[str]) -> list[str]:
        for name in v:
            cls._region(name)
        return v

    @field_validator("providers")
    @classmethod
    def _providers(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from .carbon import providers

        for i, raw in enumerate(v):
            opts = dict(raw)
            kind = opts.pop("type", None)
            if kind not in providers.PROVIDERS:
                raise ValueError(f"providers[{i}].type={kind!r}: use one of {sorted(providers.PROVIDERS)}")
            for opt in list(opts):
                problem = providers.option_problem(kind, opt)
                if problem:
                    raise ValueError(f"providers[{i}] ({kind}).{opt}: {problem}")
            try:
                providers.build(kind, **opts)
            except (TypeError, ValueError) as e:
                raise ValueError(f"providers[{i}] ({kind}): {e}") from None
        return v


class KubernetesConfig(_Section):
    enabled: Literal["auto", "on", "off"] = Field(
        "auto", description="Label processes with pod metadata from a node-scoped pod watch: auto "
        "= when running in a pod (KUBERNETES_SERVICE_HOST is set).")
    node_name: str | None = Field(
        None, description="This node's name (default: $NODE_NAME, from the downward API "
        "spec.nodeName); the pod watch is limited to it.")
    api_url: str | None = Field(
        None, description="API server URL (default: in-cluster, https://$KUBERNETES_SERVICE_HOST).")
    token_file: str | None = Field(None, description="Bearer token file (default: the service "
                                   "account's, re-read when it rotates).")
    ca_file: str | None = Field(None, description="CA bundle for the API server (default: the "
                                "service account's ca.crt).")
    pod_resources_socket: str = Field(
        "/var/lib/kubelet/pod-resources/kubelet.sock", description="kubelet pod-resources socket: "
        "GPU → pod assignments, used when mounted.")
    model_labels: list[str] = Field(
        default_factory=lambda: ["serving.kserve.io/inferenceservice", "llm-d.ai/model"],
        description="Pod labels (file only) naming the model of a pod whose processes are not a "
        "recognised inference server (first match wins); a recognised server's model is always "
        "the one its engine reports.")

    def wanted(self) -> bool:
        """Whether the Kubernetes identity is to be used here (auto: inside a pod, or with an API URL)."""
        in_pod = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        return self.enabled == "on" or (self.enabled == "auto" and (in_pod or bool(self.api_url)))


class EnginesConfig(_Section):
    enabled: bool = Field(True, description="Read request and token counters from the local "
                          "inference servers' /metrics (vLLM, SGLang, TGI, Triton, llama.cpp, TRT-LLM, NIM, "
                          "LMDeploy, Dynamo workers, KServe; other servers by pod annotations).")
    interval: Duration = Field(5.0, description="Time between engine scrapes.")
    max_targets: int = Field(64, ge=1, le=10000, description="Most inference servers' metrics endpoints "
                             "scraped at once (configured targets first; the rest counted as refused).")
    new_targets_per_minute: float = Field(16.0, gt=0, le=10000, description="Most new discovered targets "
                                          "admitted a minute (local processes cannot make the exporter "
                                          "poll arbitrary ports at will).")
    timeout: Duration = Field(2.0, description="Time limit of one engine scrape.")
    max_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Largest /metrics body read from an engine "
                           "(a real server's is well under 1 MB; at most 4 are read at once).")
    targets: list[dict[str, str]] = Field(
        default_factory=list, description="Extra scrape targets (file only): [{endpoint, engine, url, "
        "model, namespace}] for servers the exporter cannot discover.")
    budgets: list[dict[str, Any]] = Field(
        default_factory=list, description="Emissions budgets (file only): [{endpoint, model, namespace, "
        "grams_per_request, owner}] exposed as wattprint_endpoint_budget_grams_per_request. In a cluster "
        "a pod annotation wattprint.io/budget-grams-per-request (with wattprint.io/owner) sets its "
        "endpoint's budget instead, read live from the pod watch.")

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, b in enumerate(v):
            unknown = set(b) - {"endpoint", "model", "namespace", "grams_per_request", "owner"}
            if unknown or "endpoint" not in b or "grams_per_request" not in b:
                raise ValueError(f"budgets[{i}]: need endpoint and grams_per_request (optional model, "
                                 f"namespace, owner); unknown keys: {sorted(unknown)}")
            g = b["grams_per_request"]
            if not isinstance(g, (int, float)) or isinstance(g, bool) or not 0 < g < 1e6:
                raise ValueError(f"budgets[{i}].grams_per_request={g!r}: a number of grams > 0")
        return v

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: list[dict[str, str]]) -> list[dict[str, str]]:
        from .engines import READERS

        for i, t in enumerate(v):
            if t.get("engine") not in READERS or not str(t.get("url", "")).startswith(("http://", "https://")) \
                    or not t.get("endpoint"):
                raise ValueError(f"targets[{i}]: need endpoint, url (http://…) and engine in {sorted(READERS)}")
        return v


class MarginalConfig(_Section):
    enabled: bool = Field(True, description="Fit what one more prompt or generated token costs, per "
                          "endpoint with engine token counters (wattprint_endpoint_marginal_joules_per_token; "
                          "README, 'What one more request costs').")
    window: Duration = Field(0.0, description="Shortest window of an endpoint's traffic in the fit, cut at "
                             "engine readings; 0: two engine scrape intervals (10 s at the defaults), never "
                             "less. Shorter windows see more of the traffic's variation, which is what tells "
                             "prefill from decode.")
    horizon: Duration = Field(3600.0, description="How far back the fit looks: the operating point it "
                              "describes is that of this span.")
    min_windows: int = Field(12, ge=4, le=100000, description="Fewest windows with tokens before "
                             "anything is published.")

    _window = field_validator("window")(lambda v: v if v == 0 else within(v, 0.1, 3600, "0 or between 100ms and 1h"))
    _horizon = field_validator("horizon")(lambda v: within(v, 1, 7 * 86400, "between 1s and 7d"))


class Config(_Section):
    web: WebConfig = Field(default_factory=WebConfig)
    path: PathConfig = Field(default_factory=PathConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    gpu: GpuConfig = Field(default_factory=GpuConfig)
    cpu: CpuConfig = Field(default_factory=CpuConfig)
    attribution: AttributionConfig = Field(default_factory=AttributionConfig)
    carbon: CarbonConfig = Field(default_factory=CarbonConfig)
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    engines: EnginesConfig = Field(default_factory=EnginesConfig)
    marginal: MarginalConfig = Field(default_factory=MarginalConfig)


def split_listen_address(addr: str) -> tuple[str, int]:
    """``:9977`` → ('0.0.0.0', 9977); ``127.0.0.1:80``; ``[::1]:80``."""
    m = re.fullmatch(r"(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})", addr)
    if not m or not 0 < int(m.group("port")) < 65536:
        raise ValueError(f"not a listen address: {addr!r} (use host:port, :port or [::1]:port)")
    host = m.group("v6") or m.group("host") or "0.0.0.0"
    return host, int(m.group("port"))


# --- the scalar keys, their flags and variables, derived from the models --------------------

def scalar_keys() -> list[tuple[str, str, Any]]:
    """(section, key, FieldInfo) for every key settable by flag and environment."""
    out = []
    for section, sfield in Config.model_fields.items():
        model = sfield.default_factory  # each section's class
        for key, f in model.model_fields.items():  # type: ignore[union-attr]
            if f.default_factory is not None:  # maps and lists: file only
                continue
            out.append((section, key, f))
    return out


# Extra spellings of a flag: the exporter-toolkit's own name for the web config file.
FLAG_ALIASES: dict[tuple[str, str], tuple[str, ...]] = {("web", "config_file"): ("--web.config.file",)}


def flag_name(section: str, key: str) -> str:
    return f"--{section}.{key.replace('_', '-')}"


def env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_file(path: str) -> dict:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"--config.file {path!r}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"--config.file {path!r}: not UTF-8 text (byte {e.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"--config.file {path!r}: not valid YAML: {e}") from None
    except RecursionError:
        raise ConfigError(f"--config.file {path!r}: nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config.file {path!r}: top level must be a mapping, got {type(data).__name__}")
    return data


def _layer(pairs: dict[tuple[str, str], Any]) -> dict:
    out: dict[str, dict] = {}
    for (section, key), v in pairs.items():
        out.setdefault(section, {})[key] = v
    return out


def load(config_file: str | None = None, flags: dict[tuple[str, str], Any] | None = None,
         environ: dict[str, str] | None = None) -> Config:
    """Build the config from its layers; raise ConfigError naming key, value and what is allowed."""
    environ = os.environ if environ is None else environ
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG_FILE")
    layers = [_read_file(config_file) if config_file else {}]
    env_pairs = {(s, k): environ[env_name(s, k)] for s, k, _ in scalar_keys() if env_name(s, k) in environ}
    layers.append(_layer(env_pairs))
    layers.append(_layer({k: v for k, v in (flags or {}).items() if v is not None}))
    merged: dict = {}
    for layer in layers:
        merged = _deep_merge(merged, layer)
    origin = {**{k: f"environment {env_name(*k)}" for k in env_pairs},
              **{k: f"flag {flag_name(*k)}" for k, v in (flags or {}).items() if v is not None}}
    try:
        return Config.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(_explain(e, origin, config_file)) from None


def _explain(e: ValidationError, origin: dict[tuple[str, str], str], config_file: str | None) -> str:
    lines = []
    for err in e.errors():
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc)
        where = origin.get(loc[:2]) if len(loc) >= 2 else None
        where = where or (f"config file {config_file!r}" if config_file else "defaults")
        if err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key (from {where}); allowed here: "
                         + ", ".join(_allowed_keys(loc[:-1])))
            continue
        allowed = err.get("ctx", {}).get("expected")
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{key}={err.get('input')!r} (from {where}): {msg}"
                     + (f"; allowed: {allowed}" if allowed else ""))
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _allowed_keys(loc: tuple[str, ...]) -> list[str]:
    model: Any = Config
    for part in loc:
        f = model.model_fields.get(part)
        if f is None or f.default_factory is None:
            return []
        model = f.default_factory
    return sorted(model.model_fields)


def redacted_dict(cfg: Config) -> dict:
    """The effective config, for `check` and the landing page (no secrets in it yet: none exist)."""
    return cfg.model_dump()


def markdown_flags() -> str:
    """The README's flag table, generated from the models."""
    rows = ["| flag | environment | default | meaning |", "|---|---|---|---|",
            "| `--config.file` | `WATTPRINT_CONFIG_FILE` | | YAML configuration file |"]
    for section, key, f in scalar_keys():
        default = f"`{default_text(f)}`" if f.default is not None else ""
        desc = (f.description or "").replace("%%", "%").replace("|", "\\|")
        flags = " ".join(f"`{f}`" for f in (flag_name(section, key), *FLAG_ALIASES.get((section, key), ())))
        rows.append(f"| {flags} | `{env_name(section, key)}` | {default} | {desc} |")
    return "\n".join(rows) + "\n"
