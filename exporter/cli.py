"""``wattprint``: the command line. It parses and dispatches: flags are generated from the config
models (exporter.config); what ``serve`` builds and runs is exporter.daemon, what ``check``
reports is exporter.check."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from . import __version__, catalogue, config, logs
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
