"""``wattprint``: the command line. Flags are generated from the config models (exporter.config)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any, Sequence

from . import __version__, catalogue, config, logs
from .config import ConfigError

log = logging.getLogger("wattprint")

EPILOG = f"""Precedence: defaults < --config.file (YAML) < WATTPRINT_* environment < flags.
Every flag --section.key-name is also the YAML key section.key_name and the variable
WATTPRINT_SECTION_KEY_NAME. Default port {config.DEFAULT_PORT}. Docs: README.md."""


def _config_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("configuration")
    g.add_argument("--config.file", dest="config_file", metavar="PATH",
                   help="YAML configuration file (env WATTPRINT_CONFIG_FILE).")
    for section, key, f in config.scalar_keys():
        choices = getattr(f.annotation, "__args__", None) if "Literal" in str(f.annotation) else None
        default = f.default if f.default is not None else "unset"
        if section == "sample" and key == "interval":
            default = f"{f.default:g}s"
        help_ = (f"{f.description} Default: {default}. Env: {config.env_name(section, key)}."
                 ).replace("%", "%%").replace("%%%%", "%%")
        g.add_argument(config.flag_name(section, key), *config.FLAG_ALIASES.get((section, key), ()),
                       dest=f"cfg:{section}:{key}", default=None,
                       metavar=key.split("_")[-1].upper(), choices=choices, help=help_)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wattprint", description="Energy and carbon of AI inference, per model endpoint, "
        "exported to Prometheus.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"wattprint {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parent = _config_parent()
    serve = sub.add_parser("serve", parents=[parent], help="run the exporter daemon",
                           description="Sample GPU and CPU energy every --sample.interval, attribute it "
                           "to model endpoints and serve it on /metrics.", epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.set_defaults(func=cmd_serve)
    check = sub.add_parser("check", parents=[parent], help="diagnose which meters this host has",
                           description="Show which meters this host has (NVML and each GPU, each RAPL "
                           "zone, the CPU estimate) and, for each missing one, why and what to do.",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("--output", choices=["text", "json"], default="text", help="Output format.")
    check.set_defaults(func=cmd_check)
    cat = sub.add_parser("catalogue", help="print the metric catalogue as a Markdown table")
    cat.set_defaults(func=lambda args: (sys.stdout.write(catalogue.markdown_table()), 0)[1])
    try:
        from .carbon import regions
    except ImportError:  # the bundled dataset module is optional in a partial checkout
        regions = None  # type: ignore[assignment]
    if regions is not None and hasattr(regions, "add_cli"):
        regions.add_cli(sub)
    return parser


def _flags(args: argparse.Namespace) -> dict[tuple[str, str], Any]:
    out = {}
    for k, v in vars(args).items():
        if k.startswith("cfg:") and v is not None:
            _, section, key = k.split(":")
            out[(section, key)] = v
    return out


def load_config(args: argparse.Namespace) -> config.Config:
    return config.load(args.config_file, _flags(args))


def cmd_check(args: argparse.Namespace) -> int:
    from . import check

    cfg = load_config(args)
    logs.setup("error", cfg.log.format)  # keep the report clean
    report = check.diagnose(cfg)
    sys.stdout.write(check.render_json(report) if args.output == "json" else check.render_text(report))
    return 0


def build_carbon(cfg: config.Config, region: Any) -> Any:
    """The carbon accounting for this node (``region``: an accounting.Region)."""
    from .carbon import accounting, providers

    live = []
    for raw in cfg.carbon.providers:
        opts = dict(raw)
        live.append(providers.build(opts.pop("type"), **opts))
    c = cfg.carbon
    return accounting.build(
        region=region, pue=c.pue, providers=live, max_age_s=c.max_age,
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
    if _may_ask_metadata(cfg):
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


def _may_ask_metadata(cfg: config.Config) -> bool:
    """detect_region=auto asks cloud metadata only where the firmware names a cloud vendor."""
    if cfg.carbon.detect_region != "auto":
        return cfg.carbon.detect_region == "on"
    import os

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
    from .identity.resolver import Resolver, Rule
    from .sampler import Sampler
    from .sensors import cpu_model, open_gpu, open_rapl
    from .sensors.procfs import ProcessTable

    rules = [Rule.parse(r, f"attribution.rules[{i}]") for i, r in enumerate(cfg.attribution.rules)]
    return Sampler(gpu=open_gpu(cfg), rapl=open_rapl(cfg), cpu_model=cpu_model(cfg),
                   procs=ProcessTable(cfg.path.procfs), resolver=Resolver(rules, pods=cluster),
                   interval_s=cfg.sample.interval, idle_power_config=cfg.gpu.idle_power_watts,
                   gpu_idle_policy=cfg.attribution.gpu_idle_policy,
                   cpu_idle_policy=cfg.attribution.cpu_idle_policy, level=cfg.attribution.level,
                   max_series=cfg.attribution.max_series, carbon=carbon,
                   gpu_owners=(lambda: cluster.gpu_owners) if cluster is not None else None)


def start_engines(cfg: config.Config, sampler: Any) -> Any:
    """Engine scraping: discovered targets plus configured ones; budgets as gauges."""
    from .engine_scraper import EngineScraper, Target
    from .identity.resolver import Workload

    e = cfg.engines
    sampler.static_targets = [Target(Workload(t.get("namespace", ""), t["endpoint"], t.get("model", "")),
                                     t["engine"], t["url"], t.get("model", "")) for t in e.targets]
    sampler.budgets = [((b.get("namespace", ""), b["endpoint"], b.get("model", "")), float(b["grams_per_request"]))
                       for b in e.budgets]
    scraper = EngineScraper(sampler.engine_targets, e.interval, e.timeout, e.max_bytes)
    sampler.engines = scraper
    return scraper


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from . import webconfig
    from .sensors import MeterError
    from .server import make_app

    cfg = load_config(args)
    logs.setup(cfg.log.level, cfg.log.format)
    # A bad web config file is a ConfigError: main() prints it and exits 2 before anything starts.
    security = (webconfig.WebSecurity(webconfig.load(cfg.web.config_file))
                if cfg.web.config_file else None)
    host, port = config.split_listen_address(cfg.web.listen_address)
    # The sampler thread holds the GIL while it reads procfs and renders; a short switch interval
    # lets the HTTP thread answer a scrape within ~1 ms instead of waiting up to 5 ms per hand-off.
    sys.setswitchinterval(0.0005)

    async def main() -> int:
        from .identity.cluster import open_cluster
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
        gpu = sampler.gpu.status if sampler.gpu is not None else None
        if gpu is not None and gpu.state != "ok":
            log.info("no GPU metering: %s", gpu.detail)
        elif gpu is not None:
            log.info("GPU metering via %s: %s, driver %s", gpu.backend, gpu.detail, gpu.driver)
            if gpu.backend == "simulated":
                log.warning("SIMULATED GPUs in use (--gpu.backend=simulated): numbers are a test double")
        log.info("CPU energy via %s", sampler.cpu_method)
        runner = web.AppRunner(make_app(sampler, cfg.web.telemetry_path, security), access_log=None,
                               handle_signals=False, **webconfig.SERVER_LIMITS)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=256, reuse_address=True,
                           ssl_context=security.ssl if security is not None else None)
        try:
            await site.start()
        except OSError as e:
            raise SystemExit(f"cannot listen on {cfg.web.listen_address}: {e.strerror}") from None
        sampler.start()
        background = [asyncio.create_task(carbon.service.run())]
        if cfg.engines.enabled:
            background.append(asyncio.create_task(start_engines(cfg, sampler).run()))
        if cluster is not None:
            background.append(asyncio.create_task(cluster.run()))
        if security is not None:
            background.append(webconfig.Reloader(security).start())
            log.info("web config %s: %s", cfg.web.config_file, webconfig.describe(security.config))
        log.info("listening on %s (metrics at %s)", cfg.web.listen_address, cfg.web.telemetry_path)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            log.info("shutting down")
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await runner.cleanup()
            sampler.stop()
            if sampler.gpu is not None:
                sampler.gpu.close()
        return 0

    return asyncio.run(main())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"wattprint: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:
        if isinstance(e.code, str):
            print(f"wattprint: {e.code}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
