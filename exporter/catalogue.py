"""The metric catalogue: the single source of truth for every metric Wattprint exposes.

Exposition (``exporter.exposition``), the README's metric table (``wattprint catalogue``) and,
later, dashboards and alert rules are generated from or checked against this table. Names and
label keys, once released, do not change (see DESIGN.md, "Metric catalogue").
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "wattprint_"


@dataclass(frozen=True)
class Metric:
    name: str
    type: str  # "counter" | "gauge" | "info"
    labels: tuple[str, ...]
    unit: str
    help: str

    @property
    def family(self) -> str:
        """The family name prometheus_client expects (counters without ``_total``)."""
        if self.type == "counter" and self.name.endswith("_total"):
            return self.name[: -len("_total")]
        if self.type == "info" and self.name.endswith("_info"):
            return self.name[: -len("_info")]
        return self.name


def _m(name: str, type_: str, labels: str, unit: str, help_: str) -> Metric:
    return Metric(PREFIX + name, type_, tuple(labels.split()) if labels else (), unit, help_)


ENDPOINT_LABELS = "namespace endpoint model"

METRICS: tuple[Metric, ...] = (
    # --- the contract (DESIGN.md) -----------------------------------------------------------
    _m("gpu_energy_joules_total", "counter", "gpu uuid name", "joules",
       "Energy used by each GPU since the exporter started (NVML total-energy counter, amdsmi energy "
       "accumulator, or power "
       "integrated over time where the counter is unsupported: see wattprint_gpu_info{energy_method})."),
    _m("cpu_energy_joules_total", "counter", "socket domain method", "joules",
       "CPU/DRAM energy per RAPL zone (method=rapl), hwmon sensor (method=hwmon) or from the "
       "utilisation model (method=estimate). Zones overlap (package contains core/uncore, psys "
       "contains package; Grace module contains grace contains cpu and sysio): "
       "never sum this metric; use wattprint_node_energy_joules_total for node totals."),
    _m("cpu_energy_estimated_joules_total", "counter", "socket domain method", "joules",
       "CPU/DRAM energy estimated, not measured: whole RAPL counter wraps hidden in a gap longer "
       "than one wrap period (the zone was unreadable), priced from the zone's power before and "
       "after the gap; a hwmon power sensor's gap longer than 30 s, or the interval of a hwmon "
       "energy counter's reset. Not in wattprint_cpu_energy_joules_total nor in any endpoint's energy: "
       "measured + estimated is the best figure for the zone."),
    _m("endpoint_energy_joules_total", "counter", ENDPOINT_LABELS + " component mode", "joules",
       "Energy attributed to each model endpoint. The sum over all series equals the node's "
       "measured energy (wattprint_node_energy_joules_total). endpoint=\"unallocated\" is GPU "
       "energy with no resident process; endpoint=\"system\" is CPU energy of no endpoint."),
    _m("endpoint_co2e_grams_total", "counter", ENDPOINT_LABELS + " scope", "grams",
       "Emissions attributed to each endpoint, integrated sample by sample with the intensity "
       "of that moment (scope=operational) or amortised manufacturing emissions (scope=embodied)."),
    _m("endpoint_requests_total", "counter", ENDPOINT_LABELS, "",
       "Successful requests, normalised from the inference server's own metrics."),
    _m("endpoint_tokens_total", "counter", ENDPOINT_LABELS + " kind", "",
       "Tokens (kind=prompt|generation), normalised from the inference server's own metrics."),
    _m("grid_intensity_grams_per_kwh", "gauge", "region zone provider signal", "grams_per_kwh",
       "Grid carbon intensity in use (gCO2e/kWh); signal=average feeds the totals, "
       "signal=marginal is advice only."),
    _m("endpoint_budget_grams_per_request", "gauge", ENDPOINT_LABELS + " owner", "grams",
       "Emissions budget per request, from configuration or the endpoint's pod annotation "
       "wattprint.io/budget-grams-per-request (owner: wattprint.io/owner); one alert rule compares "
       "every endpoint with its own budget and carries the owner."),
    _m("budget_annotations_invalid", "gauge", "", "",
       "Pods on this node whose wattprint.io/budget-grams-per-request annotation is not a number of "
       "grams in (0, 1e6) (ignored; the pod is named in the log)."),
    _m("engine_scrape_up", "gauge", ENDPOINT_LABELS + " engine", "",
       "1 when the inference server's /metrics was read and parsed at the last attempt."),
    _m("engine_scrape_errors_total", "counter", "namespace endpoint engine kind", "",
       "Failed engine scrapes by kind (timeout, connect, http, parse_*, too_large, too_many_models)."),
    _m("engine_targets", "gauge", "", "",
       "Inference servers' metrics endpoints being scraped (at most engines.max_targets)."),
    _m("engine_targets_refused_total", "counter", "reason", "",
       "Engine targets found but not scraped: reason max_targets (the cap), rate (more new targets "
       "a minute than engines.new_targets_per_minute) or unreadable (a process whose command line, "
       "environment or config file broke discovery)."),
    _m("http_connections_refused_total", "counter", "reason", "",
       "Client connections closed at the connection cap (which keeps descriptors for the sampler): "
       "reason evicted (the oldest connection that never completed a request, for a new one) or "
       "refused (every open connection had been served)."),
    _m("engine_restarts_total", "counter", "namespace endpoint engine", "",
       "Engine counters that went backwards (server restart); the normalised counters continue."),
    # --- what one more request costs (exporter/energy_model.py) -------------------------------
    _m("endpoint_marginal_joules_per_token", "gauge", ENDPOINT_LABELS + " phase", "joules",
       "What one more token costs in active energy (phase=prefill: a prompt token, decode: a "
       "generated token), fitted online from the endpoint's own windows over the last hour; absent "
       "when the windows do not identify it (see wattprint_endpoint_energy_model_state)."),
    _m("endpoint_marginal_joules_per_token_stderr", "gauge", ENDPOINT_LABELS + " phase", "joules",
       "Standard error of wattprint_endpoint_marginal_joules_per_token: its 95 % interval is "
       "±1.96 × this."),
    _m("endpoint_energy_model_windows", "gauge", ENDPOINT_LABELS, "",
       "Windows of the endpoint's traffic in its current energy-model fit."),
    _m("endpoint_energy_model_r_squared", "gauge", ENDPOINT_LABELS, "ratio",
       "Share of the variance of the windows' active energy that the fit explains (1 is perfect)."),
    _m("endpoint_energy_model_fixed_active_watts", "gauge", ENDPOINT_LABELS, "watts",
       "Active power the token terms do not explain (the fit's per-second term: an idle baseline "
       "a little off, work that is not tokens); may be negative. Not a marginal cost."),
    _m("endpoint_energy_model_state", "gauge", ENDPOINT_LABELS + " state", "",
       "1 for the energy model's current state: fitted, prefill_unidentified, decode_unidentified, "
       "too_few_windows, no_prompt_tokens, no_generation_tokens, collinear (prompt and generation "
       "tokens in a fixed ratio), negative_term or fit_failed (odd data, logged)."),
    # --- carbon ------------------------------------------------------------------------------
    _m("node_co2e_grams_total", "counter", "scope", "grams",
       "Node emissions (scope=operational|embodied); equals the sum over the endpoint series."),
    _m("counterfactual_co2e_grams_total", "counter", ENDPOINT_LABELS + " region", "grams",
       "The same attributed energy priced at a candidate region's bundled intensity (same PUE): "
       "what serving it there would have emitted."),
    _m("grid_intensity_age_seconds", "gauge", "provider zone signal", "seconds",
       "Age of the intensity reading (now minus the data point's own time); 0 for the static value."),
    _m("grid_intensity_forecast_grams_per_kwh", "gauge", "provider zone horizon", "grams_per_kwh",
       "Forecast grid carbon intensity (gCO2e/kWh) for the period holding now + horizon (1h, 6h, 24h), "
       "where the provider publishes forecasts (Electricity Maps, UK Carbon Intensity with "
       "forecast: true); served by `wattprint intensity`, e.g. for carbon-aware scaling."),
    _m("intensity_provider_calls_total", "counter", "provider", "",
       "HTTP requests made to each live intensity provider since start (on a node with the "
       "wattprint provider: requests to the cluster's intensity service, not to the third-party API)."),
    _m("carbon_info", "info", "region provider zone source how", "",
       "The intensity in use for the totals: region, provider (a live provider or static), zone, "
       "where the value comes from, and how the region was chosen."),
    _m("pue_ratio", "gauge", "source", "ratio", "Power usage effectiveness applied to the energy."),
    _m("embodied_grams_per_gpu_second", "gauge", "", "grams",
       "Amortised manufacturing emissions charged per GPU-second of residency."),
    _m("model_training_co2e_grams", "gauge", "model", "grams",
       "Training footprint per served model, from configuration (e.g. model cards)."),
    # --- node and device detail ---------------------------------------------------------------
    _m("node_energy_joules_total", "counter", "component", "joules",
       "Node energy by non-overlapping component (gpu, cpu, dram): what attribution splits."),
    _m("gpu_power_watts", "gauge", "gpu uuid name", "watts",
       "GPU power draw at the last sample (NVML power usage, amdsmi socket power; convenience gauge, "
       "use the counter)."),
    _m("gpu_memory_used_bytes", "gauge", "gpu uuid name", "bytes", "GPU memory in use."),
    _m("gpu_memory_total_bytes", "gauge", "gpu uuid name", "bytes", "GPU memory in total."),
    _m("gpu_processes", "gauge", "gpu uuid name", "",
       "Compute processes resident on the GPU at the last sample."),
    _m("gpu_info", "info", "gpu uuid name energy_method mig_mode backend driver", "",
       "One series per GPU: energy_method=counter (nvmlDeviceGetTotalEnergyConsumption, "
       "amdsmi_get_energy_count) or power_integration; mig_mode=enabled|disabled|unsupported; "
       "backend=nvml|amdsmi|simulated|simulated-amd."),
    _m("gpu_mig_instance_info", "info", "gpu uuid mig_uuid gpu_instance compute_instance profile slices method", "",
       "One series per MIG instance of a GPU in MIG mode: its MIG device UUID (what the kubelet's "
       "pod-resources lists), GPU/compute instance ids, profile, the GPU slices it reserves (its idle "
       "share) and how its active energy was split in the last interval: method=gpm (NVML GPM SM "
       "utilisation of the instance x its slices) or slice_share (slices among the instances with "
       "processes; no GPM on this GPU, or no previous GPM sample yet)."),
    _m("gpu_mig_instance_energy_joules_total", "counter",
       "gpu uuid mig_uuid gpu_instance compute_instance profile mode", "joules",
       "A MIG GPU's energy by instance (see wattprint_gpu_mig_instance_info for the method): idle by "
       "the slices each reserves, active by each instance's activity; gpu_instance=\"free\" is the "
       "slices no instance holds. Per GPU the sum over instances and modes equals "
       "wattprint_gpu_energy_joules_total."),
    _m("gpu_energy_resets_total", "counter", "gpu uuid name", "",
       "Times the GPU's energy counter restarted (driver reload; an amdsmi 32-bit wrap is not "
       "one); that interval was integrated from power instead."),
    _m("gpu_idle_power_watts", "gauge", "gpu uuid name source", "watts",
       "Idle baseline used to split GPU energy into idle and active "
       "(source=configured|learned|table|unknown; learned only from sustained quiet, see "
       "wattprint_gpu_idle_power_age_seconds)."),
    _m("gpu_idle_power_age_seconds", "gauge", "gpu uuid name", "seconds",
       "Age of the idle baseline's newest evidence: since its last vote when source=learned "
       "(sustained quiet readings), else since the GPU's first read."),
    _m("cpu_zone_info", "info", "zone socket domain method used_in_total readable", "",
       "One series per CPU energy zone: whether it is readable and whether it counts in the "
       "node totals (overlapping zones never do)."),
    _m("cpu_busy_ratio", "gauge", "", "ratio", "Node CPU busy fraction over the last interval."),
    # --- attribution detail ----------------------------------------------------------------
    _m("attribution_info", "info", "gpu_idle_policy cpu_idle_policy level", "",
       "The attribution policies in use (see README, 'How energy is attributed')."),
    _m("attribution_folded_series_total", "counter", "metric", "",
       "Distinct label sets folded into the overflow series because the cardinality cap was "
       "reached (each counted once, however many increments it had; exact up to 100,000 per metric)."),
    _m("pod_energy_joules_total", "counter", ENDPOINT_LABELS + " pod component mode", "joules",
       "Per-pod attributed energy (opt-in: --attribution.level=pod or process)."),
    _m("process_energy_joules_total", "counter", ENDPOINT_LABELS + " pid comm component mode",
       "joules", "Per-process attributed energy (opt-in: --attribution.level=process)."),
    # --- self-metrics ----------------------------------------------------------------------
    _m("build_info", "info", "version revision branch python", "",
       "Build information: version, git revision and branch of the build (as `wattprint "
       "--version` prints them; unknown when neither the build nor a checkout says), Python version."),
    _m("collector_up", "gauge", "collector", "",
       "1 when the collector's last read succeeded, 0 when it failed or is unavailable."),
    _m("collector_errors_total", "counter", "collector kind", "",
       "Collector read errors by kind; a failing collector never stops the sampling loop."),
    _m("sample_duration_seconds", "gauge", "", "seconds", "Wall time of the last sample."),
    _m("samples_total", "counter", "", "", "Samples taken since start."),
    _m("sample_interval_seconds", "gauge", "", "seconds", "Configured sample interval."),
    _m("last_sample_timestamp_seconds", "gauge", "", "seconds",
       "Unix time of the last completed sample."),
    _m("processes_tracked", "gauge", "", "", "Processes seen in procfs at the last sample."),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}


def get(short_name: str) -> Metric:
    """Look up a metric by its name without the ``wattprint_`` prefix."""
    return BY_NAME[PREFIX + short_name]


def markdown_table() -> str:
    """The README's metric table, generated from the catalogue."""
    rows = ["| name | type | labels | meaning |", "|---|---|---|---|"]
    for m in METRICS:
        labels = ", ".join(m.labels)
        rows.append(f"| `{m.name}` | {m.type} | {labels} | {m.help} |")
    return "\n".join(rows) + "\n"
