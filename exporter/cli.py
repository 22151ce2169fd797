"""``wattprint``: the command line. It parses and dispatches: flags are generated from the config
models (exporter.config); what ``serve`` builds and runs is exporter.daemon, what ``check``
reports is exporter.check."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from . import catalogue, config, logs
from .config import ConfigError

EPILOG = f"""Precedence: defaults < --config.file (YAML) < WATTPRINT_* environment < flags.
Every flag --section.key-name is also the YAML key section.key_name and the variable
WATTPRINT_SECTION_KEY_NAME. Default port {config.DEFAULT_PORT}. Docs: README.md."""


def _config_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("configuration")
    g.add_argument("--config.file", dest="config_file", metavar="PATH",
                   help="YAML configuration file (env WATTPRINT_CONFIG_FILE).")
    for section, key, f in config.scalar_keys():
        choices = config.allowed_values(f)
        allowed = f" One of: {', '.join(choices)}." if choices else ""
        help_ = (f"{f.description}{allowed} Default: {config.default_text(f) or 'unset'}. "
                 f"Env: {config.env_name(section, key)}.").replace("%", "%%").replace("%%%%", "%%")
        g.add_argument(config.flag_name(section, key), *config.FLAG_ALIASES.get((section, key), ()),
                       dest=f"cfg:{section}:{key}", default=None,
                       metavar=key.split("_")[-1].upper(), choices=choices, help=help_)
    return p


class _Version(argparse.Action):
    """``--version``: version, branch, revision, build user and date, like Prometheus tools."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="Show the version, branch, revision and build date, and exit.")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from . import buildinfo

        sys.stdout.write(buildinfo.version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wattprint", description="Energy and carbon of AI inference, per model endpoint, "
        "exported to Prometheus.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parent = _config_parent()
    serve = sub.add_parser("serve", parents=[parent], help="run the exporter daemon",
                           description="Sample GPU and CPU energy every --sample.interval, attribute it "
                           "to model endpoints and serve it on /metrics.", epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.set_defaults(func=cmd_serve)
    check = sub.add_parser("check", parents=[parent], help="diagnose which meters this host has",
                           description="Show which meters this host has (NVML and each GPU, each RAPL "
                           "zone, each hwmon sensor, the CPU estimate) and, for each missing one, why and "
                           "what to do. Exit status 1 when a meter asked for by name (--gpu.backend, "
                           "--cpu.meter) is not usable here, so it can gate an init container.",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("--output", choices=["text", "json"], default="text", help="Output format.")
    check.set_defaults(func=cmd_check)
    _report_parser(sub)
    intensity = sub.add_parser("intensity", parents=[parent], help="serve the grid intensity to the cluster's nodes",
                               description="Poll carbon.providers once for the whole cluster (one call per "
                               "zone per poll interval, whatever the node count) and serve the intensity and "
                               "forecasts on /metrics and /api/v1/intensity?zone= for the nodes' wattprint "
                               "provider. Default port 10067.", epilog=EPILOG,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    intensity.set_defaults(func=cmd_intensity)
    cat = sub.add_parser("catalogue", help="print the metric catalogue as a Markdown table")
    cat.set_defaults(func=lambda args: (sys.stdout.write(catalogue.markdown_table()), 0)[1])
    try:
        from .carbon import regions
    except ImportError:  # the bundled dataset module is optional in a partial checkout
        regions = None  # type: ignore[assignment]
    if regions is not None and hasattr(regions, "add_cli"):
        regions.add_cli(sub)
    from . import rules

    rules.add_cli(sub)
    from . import demo

    demo.add_cli(sub)
    return parser


REPORT_EPILOG = """examples:
  wattprint report --prometheus.url=http://prometheus:9090
      the last 30 days, per cluster, namespace, endpoint and model, as Markdown
  wattprint report --prometheus.url=http://thanos-query:9090 --from=2026-11-01 --to=2026-12-01 \\
      --by=namespace,endpoint --output=csv > november.csv
  wattprint report --prometheus.url=http://prometheus:9090 --from=-7d --output=html > week.html
  wattprint report --prometheus.url=http://prometheus:9090 --from=-12h --by=model --output=json

Per group: energy, idle share, CO2e (operational + embodied), requests, generation tokens,
grams per request, grams per 1k generation tokens and the training footprint share, with the
method and the factors in force (intensity source, PUE, embodied rate). Exit status 1 when
Prometheus cannot be reached or holds nothing to report, 2 for a bad option. README.md,
"Monthly statements: wattprint report"."""


def _report_parser(sub) -> None:
    from . import report

    p = sub.add_parser("report", help="print a period's energy and CO2e per endpoint, from Prometheus",
                       description="An emissions statement for a period, per group, read from "
                       "Prometheus's HTTP API: the hourly rollups (wattprint:*:increase1h) when they "
                       "cover the period, the raw counters otherwise.", epilog=REPORT_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prometheus.url", dest="prometheus_url", required=True, metavar="URL",
                   help="Prometheus (or Thanos/Mimir query front end) base URL, e.g. "
                   "http://prometheus:9090 or https://example.org/prometheus.")
    p.add_argument("--from", dest="start", default="-30d", metavar="TIME",
                   help="Start of the period: a UTC date 2026-11-01 (midnight), a date-time "
                   "2026-11-01T12:00:00Z (an offset like +01:00 is honoured), relative -30d, -12h, "
                   "-90m, -2w, or now. Default: -30d.")
    p.add_argument("--to", dest="end", default="now", metavar="TIME",
                   help="End of the period, same forms: the figures are what the counters grew by "
                   "between --from and --to. Default: now.")
    p.add_argument("--by", default=",".join(report.DEFAULT_BY), metavar="LABELS",
                   help=f"Comma-separated labels to group by, from {', '.join(report.ALLOWED_BY)}; "
                   "a label left out is summed over (--by=endpoint merges an endpoint's clusters). "
                   "instance forces the raw counters. Default: cluster,namespace,endpoint,model.")
    p.add_argument("--output", choices=report.OUTPUTS, default="markdown",
                   help="markdown (a table and the method statement), csv (one line per group and "
                   "a total line, SI units), json (\"rows\", \"totals\", \"from\", \"to\", the "
                   "factors), html (a self-contained page with a daily CO2e chart per group). "
                   "Default: markdown.")
    p.add_argument("--source", choices=report.SOURCES, default="auto",
                   help="auto: the rollups when they hold 90 %% of the period's hours in every "
                   "cluster, else the raw counters (increase()); rollups or raw: that one. "
                   "Default: auto.")
    p.add_argument("--exclude-catch-all", action="store_true",
                   help="Leave out the catch-all endpoints unallocated, system and overflow "
                   "(kept and marked † by default; they count in the totals).")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="Time limit of each Prometheus API call. Default: 30.")
    p.add_argument("--cluster-label", default="cluster", metavar="LABEL",
                   help="The label that tells clusters apart in this Prometheus (the one given to "
                   "`wattprint rules --rules.cluster-label`); shown as cluster. Default: cluster.")
    p.set_defaults(func=cmd_report)


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
    return 1 if report["unavailable_requested"] else 0


def cmd_report(args: argparse.Namespace) -> int:
    from . import report

    try:
        text = report.report(args.prometheus_url, args.start, args.end, args.by, args.output,
                             args.source, args.exclude_catch_all, args.timeout, cluster_label=args.cluster_label)
    except report.OptionError as e:
        print(f"wattprint report: {e}", file=sys.stderr)
        return 2
    except (report.ReportError, report.PrometheusError) as e:
        print(f"wattprint report: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from . import daemon

    cfg = load_config(args)
    logs.setup(cfg.log.level, cfg.log.format)
    return daemon.serve(cfg, reread=lambda: load_config(args))


def cmd_intensity(args: argparse.Namespace) -> int:
    from . import intensity_server

    cfg = load_config(args)
    logs.setup(cfg.log.level, cfg.log.format)
    return intensity_server.serve(cfg)


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
