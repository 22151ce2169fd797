"""Simulated inference traffic for the simulated GPU (``--gpu.backend=simulated`` only): a GPU
whose power follows a known ``idle + a × prompt-token rate + b × generation-token rate`` plus
noise, and the engine counters that go with it.

The simulated NVML (:mod:`exporter.sensors.simnvml`) prices a GPU's power with it, and a
simulated inference server (the tests' ``traffic_engine.py``, the demo's servers) serves the
cumulative token and request counts from the same schedule, so the truth of a marginal-cost fit
is known exactly. Both sides compute everything from the scenario and the time alone (a shared
``start_unix``), so separate processes agree without talking.

A GPU's ``traffic:`` block (all optional but the two costs)::

    traffic:
      seed: 7
      prefill_j_per_token: 0.01     # a: J per prompt token
      decode_j_per_token: 0.12      # b: J per generated token
      segment_s: 1.0                # rates are constant within a segment, drawn anew for each
      prompt_tokens_per_s: [0, 6000]
      generation_tokens_per_s: [0, 1200]
      quiet_share: 0.1              # share of segments with no traffic at all
      noise: 0.03                   # power noise per segment: normal, sd = this × active power
      generation_per_prompt: null   # a number: generation rate = it × prompt rate (a fixed mix)
      generation_tokens_per_request: 200
      quiet_every_s: 60             # a quiet period every this many seconds (absent: none) …
      quiet_for_s: 15               # … the last this many of them without traffic (idle cost shows)
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


class TrafficError(ValueError):
    pass


def _pair(spec: dict, key: str, default: tuple[float, float], where: str) -> tuple[float, float]:
    v = spec.get(key, list(default))
    if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)
            and 0 <= v[0] <= v[1]):
        raise TrafficError(f"{where}.{key}: expected [low, high] with 0 <= low <= high, got {v!r}")
    return float(v[0]), float(v[1])


def _number(spec: dict, key: str, default: float | None, where: str, low: float = 0.0) -> float:
    v = spec.get(key, default)
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < low:
        raise TrafficError(f"{where}.{key}: expected a number >= {low:g}, got {v!r}")
    return float(v)


@dataclass
class Traffic:
    prefill_j: float
    decode_j: float
    seed: int = 0
    segment_s: float = 1.0
    prompt_rate: tuple[float, float] = (0.0, 6000.0)
    generation_rate: tuple[float, float] = (0.0, 1200.0)
    quiet_share: float = 0.1
    noise: float = 0.03
    generation_per_prompt: float | None = None
    tokens_per_request: float = 200.0
    quiet_every_s: float | None = None
    quiet_for_s: float = 0.0
    # prefix sums at segment boundaries: (prompt tokens, generation tokens, active joules)
    _sums: list[tuple[float, float, float]] = field(default_factory=lambda: [(0.0, 0.0, 0.0)], init=False)
    _segs: list[tuple[float, float, float]] = field(default_factory=list, init=False)

    @classmethod
    def parse(cls, spec: object, where: str) -> "Traffic":
        if not isinstance(spec, dict):
            raise TrafficError(f"{where}: expected a mapping")
        unknown = set(spec) - {"seed", "prefill_j_per_token", "decode_j_per_token", "segment_s",
                               "prompt_tokens_per_s", "generation_tokens_per_s", "quiet_share", "noise",
                               "generation_per_prompt", "generation_tokens_per_request", "quiet_every_s",
                               "quiet_for_s"}
        if unknown:
            raise TrafficError(f"{where}: unknown keys {sorted(unknown)}")
        ratio = spec.get("generation_per_prompt")
        every = spec.get("quiet_every_s")
        every = None if every is None else _number(spec, "quiet_every_s", None, where, low=1e-3)
        quiet_for = _number(spec, "quiet_for_s", 0.0, where)
        if every is not None and quiet_for >= every:
            raise TrafficError(f"{where}.quiet_for_s: expected less than quiet_every_s ({every:g}), got {quiet_for:g}")
        return cls(prefill_j=_number(spec, "prefill_j_per_token", None, where),
                   decode_j=_number(spec, "decode_j_per_token", None, where),
                   seed=int(_number(spec, "seed", 0, where)),
                   segment_s=_number(spec, "segment_s", 1.0, where, low=1e-3),
                   prompt_rate=_pair(spec, "prompt_tokens_per_s", (0.0, 6000.0), where),
                   generation_rate=_pair(spec, "generation_tokens_per_s", (0.0, 1200.0), where),
                   quiet_share=min(1.0, _number(spec, "quiet_share", 0.1, where)),
                   noise=_number(spec, "noise", 0.03, where),
                   generation_per_prompt=None if ratio is None else _number(spec, "generation_per_prompt", None, where),
                   tokens_per_request=_number(spec, "generation_tokens_per_request", 200.0, where, low=1e-6),
                   quiet_every_s=every, quiet_for_s=quiet_for)

    def in_quiet_period(self, i: int) -> bool:
        """Whether segment i starts in a scheduled quiet period (quiet_every_s/quiet_for_s)."""
        if self.quiet_every_s is None:
            return False
        return (i * self.segment_s) % self.quiet_every_s >= self.quiet_every_s - self.quiet_for_s

    def segment(self, i: int) -> tuple[float, float, float]:
        """Segment i's (prompt tokens/s, generation tokens/s, active watts), noise included."""
        while len(self._segs) <= i:
            k = len(self._segs)
            rng = random.Random(f"{self.seed}:{k}")
            if rng.random() < self.quiet_share or self.in_quiet_period(k):
                p = d = 0.0
            else:
                p = rng.uniform(*self.prompt_rate)
                d = p * self.generation_per_prompt if self.generation_per_prompt is not None \
                    else rng.uniform(*self.generation_rate)
            active = self.prefill_j * p + self.decode_j * d
            watts = max(0.0, active + rng.gauss(0.0, self.noise * active)) if active > 0 else 0.0
            self._segs.append((p, d, watts))
            P, D, E = self._sums[-1]
            self._sums.append((P + p * self.segment_s, D + d * self.segment_s, E + watts * self.segment_s))
        return self._segs[i]

    def totals(self, t: float) -> tuple[float, float, float]:
        """Exact (prompt tokens, generation tokens, active joules) from time 0 to ``t``."""
        if t <= 0:
            return 0.0, 0.0, 0.0
        i = int(t // self.segment_s)
        p, d, watts = self.segment(i)
        P, D, E = self._sums[i]
        part = t - i * self.segment_s
        return P + p * part, D + d * part, E + watts * part

    def active_w(self, t: float) -> float:
        return self.segment(int(max(0.0, t) // self.segment_s))[2] if t >= 0 else 0.0

    def counters(self, t: float) -> dict[str, float]:
        """What the simulated server's counters read at ``t``: whole tokens and requests."""
        P, D, _ = self.totals(t)
        return {"prompt_tokens": float(math.floor(P)), "generation_tokens": float(math.floor(D)),
                "requests": float(math.floor(D / self.tokens_per_request))}
