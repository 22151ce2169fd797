"""``wattprint demo``: a SIMULATED GPU node, inference servers shaped like vLLM, Triton and
SGLang under simulated traffic, ``wattprint serve`` over them (and Prometheus with the rules
where it is installed), with a live per-endpoint table in the terminal. See :mod:`.run`."""

from __future__ import annotations

from typing import Any

DEFAULT_GPUS = 4
MIN_GPUS, MAX_GPUS = 3, 16  # one GPU for each of the 3 servers


def _duration(value: str) -> float:
    """--duration: 30s, 1m, 30 (seconds); more than 0."""
    import argparse

    from ..config import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{value!r}: must be more than 0 (e.g. 30s, 2m)")
    return seconds


def _int_in(low: int, high: int, why: str) -> Any:
    import argparse

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
        if not low <= n <= high:
            raise argparse.ArgumentTypeError(f"{n}: must be {low} to {high}{why}")
        return n
    return parse


def add_cli(sub: Any) -> None:
    import argparse

    p = sub.add_parser(
        "demo", help="see it without a GPU: a SIMULATED node with vLLM, Triton and SGLang under traffic",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Start, as local processes, a SIMULATED GPU node, inference servers shaped like "
        "vLLM, Triton (two models) and SGLang serving their upstream metrics under varying simulated "
        "traffic (with a quiet period every 30 s), `wattprint serve` over them and, with "
        "--with-prometheus or when `prometheus` is installed, Prometheus with the rules; show energy, "
        "power, CO2e, requests, grams per request, idle share and the cleanest candidate region's saving "
        "per endpoint, live. Ctrl-C (or --duration) stops every process it started.",
        epilog="examples:\n"
        "  wattprint demo                         # until Ctrl-C\n"
        "  wattprint demo --duration 2m --gpus 8\n"
        "  wattprint demo --with-prometheus       # fail if Prometheus is not installed\n"
        "Nothing here reads hardware: every number comes from a test double (backend=\"simulated\").")
    p.add_argument("--gpus", type=_int_in(MIN_GPUS, MAX_GPUS, " (one GPU for each of the 3 servers)"),
                   default=DEFAULT_GPUS, metavar="N",
                   help=f"simulated GPUs: one for each of the 3 servers, the rest idle "
                   f"({MIN_GPUS}-{MAX_GPUS}; default {DEFAULT_GPUS})")
    p.add_argument("--duration", type=_duration, default=None, metavar="DURATION",
                   help="stop after this long (30s, 5m, 1h; a bare number is seconds); default: until Ctrl-C")
    prom = p.add_mutually_exclusive_group()
    prom.add_argument("--with-prometheus", dest="prometheus", action="store_const", const=True, default=None,
                      help="also start Prometheus with the rules (default: when `prometheus` is on PATH)")
    prom.add_argument("--without-prometheus", dest="prometheus", action="store_const", const=False,
                      help="do not start Prometheus even where it is installed")
    p.add_argument("--port", type=_int_in(0, 65535, " (0: a free one)"), default=0,
                   help="the exporter's port on 127.0.0.1 (default: a free one)")
    p.add_argument("--svg", default=None, metavar="PATH", help="save the last table as an SVG image (rich)")

    def run(args: argparse.Namespace) -> int:
        import sys

        try:
            import rich  # noqa: F401 - the terminal view's library, an optional dependency
        except ImportError:
            print("wattprint demo: needs the `rich` library: pip install 'wattprint[demo]' "
                  "(scripts/setup.sh installs it)", file=sys.stderr)
            return 2
        from . import run as demo_run

        opts = demo_run.Options(gpus=args.gpus, duration_s=args.duration, prometheus=args.prometheus,
                                port=args.port, svg=args.svg)
        if (problem := demo_run.preflight(opts)) is not None:  # before anything is started
            print(f"wattprint demo: {problem}", file=sys.stderr)
            return 1
        return demo_run.main(opts)

    p.set_defaults(func=run)
