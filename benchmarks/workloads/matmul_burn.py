#!/usr/bin/env python3
"""A GPU load at a chosen duty cycle: bf16 matrix products for `duty` of each 200 ms period,
idle for the rest. With --device cpu (or no torch) it burns CPU instead, for dry runs.

    python3 benchmarks/workloads/matmul_burn.py --duty 0.25 [--device cuda] [--pid-file F]
"""

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duty", type=float, default=1.0)
    ap.add_argument("--period", type=float, default=0.2)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--pid-file")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and args.device != "cpu":
        a = torch.randn(args.size, args.size, device=args.device, dtype=torch.bfloat16)
        b = torch.randn(args.size, args.size, device=args.device, dtype=torch.bfloat16)

        def work() -> None:
            (a @ b).sum().item()
    else:
        def work() -> None:
            t = time.perf_counter() + 0.005
            while time.perf_counter() < t:
                pass
    if args.pid_file:
        with open(args.pid_file, "w") as fh:
            fh.write(str(os.getpid()))
    while True:
        start = time.perf_counter()
        while time.perf_counter() - start < args.duty * args.period:
            work()
        rest = args.period - (time.perf_counter() - start)
        if rest > 0:
            time.sleep(rest)


if __name__ == "__main__":
    main()
