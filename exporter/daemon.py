"""The composition root: every part of the daemon built from the typed configuration, and the
``serve`` lifecycle (start, signals, shutdown). ``cli`` parses and dispatches; ``check`` and
``serve`` share these builders.

What is built, in order: the Kubernetes identity (only when enabled), the carbon region and
accounting, the meters (from :mod:`exporter.sensors.registry`), the sampler over them, the HTTP
server, then the background tasks (intensity providers, engine scraping, the pod cache, the web
config reloader). Heavy libraries are imported where they are needed: the Kubernetes client only
when it is enabled, grpc only where a kubelet pod-resources socket exists, the web config's TLS
and bcrypt only with a web config file.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

from . import config

log = logging.getLogger("wattprint")


def build_providers(cfg: config.Config) -> list[Any]:
    """The live intensity providers of carbon.providers, in order (``serve`` and ``intensity``)."""
    if not cfg.carbon.providers:
        return []  # and no adapter module loaded
    from .carbon import providers

    live = []
    for raw in cfg.carbon.providers:
        opts = dict(raw)
        live.append(providers.build(opts.pop("type"), **opts))
    return live


def build_carbon(cfg: config.Config, region: Any) -> Any:
    """The carbon accounting for this node (``region``: an accounting.Region)."""
    from .carbon import accounting

    c = cfg.carbon
    return accounting.build(
        region=region, pue=c.pue, providers=build_providers(cfg), max_age_s=c.max_age,
        counterfactual_regions=c.counterfactual_regions,
        embodied_cfg={"per_gpu_kg": c.embodied_gpu_kg, "server_kg": c.embodied_server_kg,
                      "gpus_per_server": c.embodied_gpus_per_server, "lifetime_years": c.embodied_lifetime_years},
        training_tonnes=c.training_co2e_tonnes)


async def resolve_region(cfg: config.Config, cluster: Any = None) -> Any:
    """carbon.region, else the node's topology.kubernetes.io/region label, else cloud instance
    metadata (when allowed), else the world average."""
    from .carbon import accounting
    from .carbon import region as detect

    if cfg.carbon.region:
        return accounting.resolve_static(cfg.carbon.region, "config")
    guesses = []
    if cluster is not None:
        guesses.append(detect.region_from_node_labels(await cluster.pods.node_labels()))
    if may_ask_metadata(cfg):
        guesses.append(await detect.detect_cloud_region(timeout_s=1.0))
    for guess in guesses:
        if guess is None:
            continue
        try:
            return accounting.resolve_static(guess.key, guess.source)
        except KeyError:
            log.warning("region %s from %s is not in the bundled dataset", guess.key, guess.source)
    log.warning("carbon.region is not set and no region was detected: using the world average "
                "intensity; set --carbon.region (see `wattprint regions`)")
    return accounting.resolve_static(None, "")


def may_ask_metadata(cfg: config.Config) -> bool:
    """detect_region=auto asks cloud metadata only where the firmware names a cloud vendor."""
    if cfg.carbon.detect_region != "auto":
        return cfg.carbon.detect_region == "on"
    for name in ("sys_vendor", "bios_vendor", "board_vendor"):
        try:
            with open(os.path.join(cfg.path.sysfs, "class/dmi/id", name)) as fh:
                vendor = fh.read().strip()
        except OSError:
            continue
        if vendor.startswith(("Amazon", "Google", "Microsoft")):
            return True
    return False


def build_sampler(cfg: config.Config, carbon: Any = None, cluster: Any = None) -> Any:
    from .identity import cmdline
    from .identity.resolver import Resolver, Rule
    from .sampler import Sampler
    from .sensors import open_cpu, open_gpu
    from .sensors.procfs import FULL_SCAN_S, ProcessTable

    rules = [Rule.parse(r, f"attribution.rules[{i}]") for i, r in enumerate(cfg.attribution.rules)]
    sampler = Sampler(gpu=open_gpu(cfg), cpu=open_cpu(cfg),
                      procs=ProcessTable(cfg.path.procfs, max(1, round(FULL_SCAN_S / cfg.sample.interval)),
                                         environ_keys=(cmdline.wants_environ, frozenset(cmdline.env_keys()))),
                      resolver=Resolver(rules, pods=cluster),
                      interval_s=cfg.sample.interval, idle_power_config=cfg.gpu.idle_power_watts,
                      gpu_idle_policy=cfg.attribution.gpu_idle_policy,
                      cpu_idle_policy=cfg.attribution.cpu_idle_policy, level=cfg.attribution.level,
                      max_series=cfg.attribution.max_series, util_poll_s=cfg.gpu.util_poll_interval, carbon=carbon,
                      gpu_owners=(lambda: cluster.gpu_owners) if cluster is not None else None)
    if cluster is not None:  # the endpoints' own budgets (pod annotations), read live
        sampler.requests.pods = cluster.pods.pods
    return sampler


def apply_engine_lists(cfg: config.Config, sampler: Any) -> None:
    """The configured engine targets and budgets (at start, and again on SIGHUP)."""
    from .engine_targets import Target
    from .identity.resolver import Workload

    e = cfg.engines
    sampler.targets.static = [Target(Workload(t.get("namespace", ""), t["endpoint"], t.get("model", "")),
                                     t["engine"], t["url"], t.get("model", "")) for t in e.targets]
    sampler.requests.budgets.configured = [
        ((b.get("namespace", ""), b["endpoint"], b.get("model", ""), b.get("owner", "")), float(b["grams_per_request"]))
        for b in e.budgets]


# what SIGHUP puts in force; every other change is logged as needing a restart
LIVE_KEYS = ("engines.targets", "engines.budgets", "attribution.rules")


def reload_live(old: config.Config, new: config.Config, sampler: Any) -> tuple[list[str], list[str]]:
    """Put the live parts of a re-read configuration in force; (applied, needing a restart)."""
    from .identity.resolver import Rule

    before, after = config.redacted_dict(old), config.redacted_dict(new)
    changed = sorted(f"{sec}.{key}" for sec in after for key in after[sec]
                     if before.get(sec, {}).get(key) != after[sec][key])
    applied = [k for k in changed if k in LIVE_KEYS]
    if "attribution.rules" in applied:
        sampler.resolver.set_rules([Rule.parse(r, f"attribution.rules[{i}]")
                                    for i, r in enumerate(new.attribution.rules)])
    if {"engines.targets", "engines.budgets"} & set(applied):
        apply_engine_lists(new, sampler)
    return applied, [k for k in changed if k not in LIVE_KEYS]


def start_engines(cfg: config.Config, sampler: Any) -> Any:
    """Engine scraping: discovered targets plus configured ones; budgets as gauges."""
    from .engine_scraper import EngineScraper
    from .pipeline.marginal import MarginalStage

    e = cfg.engines
    apply_engine_lists(cfg, sampler)
    sampler.targets.max_targets, sampler.targets.new_per_minute = e.max_targets, e.new_targets_per_minute
    scraper = EngineScraper(sampler.engine_targets, e.interval, e.timeout, e.max_bytes)
    sampler.targets.up_urls = scraper.up_urls
    sampler.engines = scraper
    sampler.requests.expire_s = 2 * e.interval + 1.0  # no increment for two scrapes: no model was active
    m = cfg.marginal
    sampler.marginal = MarginalStage(window_s=max(m.window, 2 * e.interval), horizon_s=m.horizon,  # 0: 2 scrapes
                                     min_windows=m.min_windows, enabled=m.enabled)
    return scraper


def needs_tls(cfg: config.Config) -> bool:
    """Whether anything this configuration can do needs the ``ssl`` module: a web config file
    (TLS, reloaded live), a live intensity provider (HTTPS APIs), the Kubernetes API, and engine
    scraping (its readers use prometheus_client's parser, and importing prometheus_client imports
    ssl). Cloud metadata is plain HTTP."""
    return bool(cfg.web.config_file or cfg.carbon.providers or cfg.kubernetes.wanted() or cfg.engines.enabled)


def skip_tls_if_unused(cfg: config.Config) -> bool:
    """Keep the ``ssl`` module (and libssl/libcrypto, ~4 MB of the daemon's ~50 MB) out of a
    process that will never speak TLS: asyncio and aiohttp import it only if they can, and run
    plain HTTP without it. Must run before asyncio is imported; a no-op when TLS may be needed."""
    if needs_tls(cfg) or "ssl" in sys.modules or "asyncio" in sys.modules:
        return False
    sys.modules["ssl"] = None  # type: ignore[assignment]  # `import ssl` now raises ImportError
    return True


def serve(cfg: config.Config, reread: Any = None) -> int:
    """``wattprint serve``: run until SIGINT/SIGTERM."""
    tls_off = skip_tls_if_unused(cfg)
    import asyncio

    from .server import make_app

    security = web_security(cfg)
    fd_limit = open_files_limit()
    # The sampler thread holds the GIL while it reads procfs and renders; a short switch interval
    # lets the HTTP thread answer a scrape within ~1 ms instead of waiting up to 5 ms per hand-off.
    sys.setswitchinterval(0.0005)

    async def main() -> int:
        from .identity.cluster import open_cluster
        from .sensors import MeterError

        cluster = None
        if cfg.kubernetes.wanted():
            from .identity.kubernetes import PodCacheError

            try:
                cluster = open_cluster(cfg.kubernetes)
            except PodCacheError as e:
                log.error("%s", e)
                return 2
        carbon = build_carbon(cfg, await resolve_region(cfg, cluster))
        log.info("carbon: region %s (%s), %g gCO2e/kWh static (%s), PUE %g (%s)", carbon.region.key,
                 carbon.region.how, carbon.region.grams_per_kwh, carbon.region.source, carbon.pue,
                 carbon.pue_source)
        try:
            sampler = build_sampler(cfg, carbon, cluster)
        except MeterError as e:
            log.error("%s", e)
            return 2
        if cluster is not None:
            log.info("Kubernetes: watching pods of node %s via %s; pod-resources %s", cluster.pods.node_name,
                     cluster.pods.api_url, cluster.podres_state)
        log_meters(sampler)
        cap = connection_cap(fd_limit)
        sampler.http = cap
        runner, listener = await start_http(make_app(sampler, cfg.web.telemetry_path, security, cap),
                                            cfg.web.listen_address, security, cap)
        sampler.start()
        background = [asyncio.create_task(carbon.service.run())]
        if cfg.engines.enabled:
            background.append(asyncio.create_task(start_engines(cfg, sampler).in_own_thread()))
        if cluster is not None:
            background.append(asyncio.create_task(cluster.run()))
        reloader = start_web_reloader(cfg, security, background)
        running = [cfg]

        def hangup() -> None:
            """SIGHUP: re-read the web config and the configuration; put what can change live in
            force, log what needs a restart. Never an exit: the counters live on."""
            web_state = "none" if reloader is None else ("reloaded" if reloader.reload_now() else "failed (kept)")
            if reread is None:
                log.info("SIGHUP: web config %s", web_state)
                return
            try:
                new = reread()
            except (config.ConfigError, OSError, ValueError) as e:
                log.error("SIGHUP: configuration not reloaded (the running one stays): %s", e)
                return
            applied, restart = reload_live(running[0], new, sampler)
            running[0] = new
            log.info("SIGHUP: web config %s; configuration reloaded: %s%s", web_state,
                     ", ".join(applied) or "nothing changed live",
                     f"; needs a restart to change: {', '.join(restart)}" if restart else "")
        log.info("listening on %s (metrics at %s)%s", cfg.web.listen_address, cfg.web.telemetry_path,
                 "; TLS library not loaded (nothing configured speaks TLS)" if tls_off else "")
        try:
            await until_stopped(hangup)
        finally:
            await shut_down(background, runner, listener)
            sampler.stop()
            if sampler.gpu is not None:
                sampler.gpu.close()
        return 0

    return asyncio.run(main())


# --- the HTTP lifecycle ``serve`` and ``intensity`` share ------------------------------------

def web_security(cfg: config.Config) -> Any:
    """The web config's TLS/auth (exporter.webconfig.WebSecurity), or None without a file. A bad
    file is a ConfigError: exit 2 before anything starts."""
    if not cfg.web.config_file:
        return None
    from . import webconfig

    return webconfig.WebSecurity(webconfig.load(cfg.web.config_file))


def open_files_limit() -> int:
    from .server import raise_fd_limit

    fd_before, fd_limit = raise_fd_limit()
    if fd_limit > fd_before:
        log.info("open files limit raised from %d to %d (the hard limit)", fd_before, fd_limit)
    return fd_limit


def connection_cap(fd_limit: int) -> Any:
    from .server import ConnectionCap
    from .webconfig.limits import MAX_CONNECTIONS, RESERVED_FDS

    return ConnectionCap(min(MAX_CONNECTIONS, max(16, (fd_limit - RESERVED_FDS) // 2)))


async def start_http(app: Any, address: str, security: Any, cap: Any) -> tuple[Any, Any]:
    """``app`` served on ``address`` with the server limits, TLS when configured and every
    connection through ``cap``: (runner, listening server)."""
    from aiohttp import web

    from .server import listen
    from .webconfig.limits import SERVER_LIMITS

    host, port = config.split_listen_address(address)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, **SERVER_LIMITS)
    await runner.setup()
    try:
        listener = await listen(runner, host, port, security.ssl if security is not None else None, cap)
    except OSError as e:
        await runner.cleanup()
        log.error("cannot listen on %s: %s", address, e.strerror or e,
                  extra={"fields": {"address": address, "err": e.strerror or str(e)}})
        raise SystemExit(1) from None
    return runner, listener


def start_web_reloader(cfg: config.Config, security: Any, background: list[Any]) -> Any:
    """The web config reloader (its task added to ``background``), or None without a web config."""
    if security is None:
        return None
    from . import webconfig

    reloader = webconfig.Reloader(security)
    background.append(reloader.start())
    log.info("web config %s: %s", cfg.web.config_file, webconfig.describe(security.config))
    return reloader


async def until_stopped(hangup: Any) -> None:
    """Wait for SIGINT or SIGTERM; SIGHUP calls ``hangup``."""
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hangup)
    await stop.wait()


async def shut_down(background: list[Any], runner: Any, listener: Any) -> None:
    import asyncio

    log.info("shutting down")
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    listener.close()
    await runner.cleanup()


def log_meters(sampler: Any) -> None:
    gpu = sampler.gpu.status if sampler.gpu is not None else None
    if gpu is not None and gpu.state != "ok":
        log.info("no GPU metering: %s", gpu.detail)
    elif gpu is not None:
        log.info("GPU metering via %s: %s, driver %s", gpu.backend, gpu.detail, gpu.driver)
        if gpu.backend.startswith("simulated"):
            log.warning("SIMULATED GPUs in use (--gpu.backend=%s): numbers are a test double", gpu.backend)
    log.info("CPU energy via %s", sampler.cpu_method)
