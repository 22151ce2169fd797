#!/usr/bin/env python3
"""The marginal-cost fit through a real ``wattprint serve``, seed after seed.

Each batch is one simulated node: up to ``--batch`` simulated H100s whose power is
``idle + a × prompt-token rate + b × generation-token rate`` plus 3 % noise, each under a
vLLM-shaped server serving the counters of the same schedule (``tests/support.start_traffic_node``).
Time runs 10× faster than in production with every setting scaled alike (samples 0.1 s, engine
scrapes 0.5 s, windows 1 s, traffic redrawn every 1 s), so ``--minutes 10`` runs 60 s a batch.

It prints, per seed, the truth, the exported estimate and its stderr for both phases, whether the
95 % interval (±1.96 stderr) covers the truth and whether the estimate is within 5 %; then the
totals, next to what an honest 95 % interval would give (19 of 20).

    .venv/bin/python benchmarks/marginal.py [--seeds 20] [--batch 7] [--minutes 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support import (FAST_MARGINAL_ARGS, parse_metrics, start_daemon, start_traffic_node,  # noqa: E402
                     stop_all, traffic_spec)


def one_batch(seeds: list[int], minutes: float) -> list[dict]:
    rng = random.Random(sum(seeds))
    truths = [(round(rng.uniform(0.004, 0.03), 4), round(rng.uniform(0.06, 0.4), 3)) for _ in seeds]
    with tempfile.TemporaryDirectory(prefix="wattprint-marginal-") as tmp:
        # model names of this run only: a daemon on this host sees every vLLM-looking process
        prefix = f"sim/bench{os.getpid()}-{seeds[0]}-"
        scenario, procs, start = start_traffic_node(Path(tmp), [traffic_spec(a, b, s) for (a, b), s in zip(truths, seeds)],
                                                    model_prefix=prefix)
        d = None
        try:
            d = start_daemon(Path(tmp), *FAST_MARGINAL_ARGS, "--gpu.backend=simulated",
                             f"--gpu.simulation-file={scenario}", "--carbon.region=FR")
            end = start + minutes * 6.0
            while time.time() < end:
                print(f"  seeds {seeds[0]}–{seeds[-1]}: {max(0.0, end - time.time()):4.0f} s left", end="\r", flush=True)
                time.sleep(1.0)
            m = parse_metrics(d.get())
        finally:
            if d is not None:
                d.stop()
            stop_all(procs)
    out = []
    for i, (seed, (a, b)) in enumerate(zip(seeds, truths)):
        row: dict = {"seed": seed, "model": f"{prefix}{i}"}
        state = [dict(k)["state"] for k in m.get("wattprint_endpoint_energy_model_state", {})
                 if dict(k)["model"] == row["model"]]
        row["state"] = state[0] if state else "none"
        for phase, truth in (("prefill", a), ("decode", b)):
            def get(name: str) -> float | None:
                v = [v for k, v in m.get(name, {}).items() if dict(k)["model"] == row["model"] and dict(k)["phase"] == phase]
                return v[0] if v else None
            est, se = get("wattprint_endpoint_marginal_joules_per_token"), get("wattprint_endpoint_marginal_joules_per_token_stderr")
            row[phase] = {"truth": truth, "estimate": est, "stderr": se,
                          "covered": est is not None and abs(est - truth) <= 1.96 * se,
                          "within_5pct": est is not None and abs(est / truth - 1) < 0.05}
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--batch", type=int, default=7, help="simulated GPUs (seeds) per daemon run")
    ap.add_argument("--minutes", type=float, default=10.0, help="simulated minutes of traffic per batch")
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    rows: list[dict] = []
    for i in range(0, len(seeds), args.batch):
        rows += one_batch(seeds[i:i + args.batch], args.minutes)
    print(" " * 60)
    print(f"{'seed':>5} {'state':<10} {'prefill truth':>13} {'estimate ± stderr':>22} {'cov':>4} "
          f"{'decode truth':>12} {'estimate ± stderr':>20} {'cov':>4}")
    for r in rows:
        cells = []
        for phase in ("prefill", "decode"):
            p = r[phase]
            est = "—" if p["estimate"] is None else f"{p['estimate']:.5f} ± {p['stderr']:.5f}"
            cells.append(f"{p['truth']:>12.4f} {est:>21} {'yes' if p['covered'] else 'NO':>4}")
        print(f"{r['seed']:>5} {r['state']:<10} {cells[0]} {cells[1]}")
    n = len(rows)
    for phase in ("prefill", "decode"):
        cov = sum(r[phase]["covered"] for r in rows)
        w5 = sum(r[phase]["within_5pct"] for r in rows)
        print(f"{phase}: 95 % interval covers the truth in {cov}/{n} seeds ({100 * cov / n:.0f} %; honest "
              f"intervals: about 95 %), within 5 % in {w5}/{n}")
    if args.json:
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "minutes": args.minutes, "rows": rows},
                                        indent=1))


if __name__ == "__main__":
    main()
