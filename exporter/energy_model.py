"""What one more token costs: a robust, non-negative fit of an endpoint's active energy on its
prompt and generation tokens, with standard errors. Pure math: no I/O, no clock, no state.

The model, per window of an endpoint's own traffic (``exporter.pipeline.marginal`` cuts them)::

    active joules ≈ c × seconds + a × prompt tokens + b × generation tokens

- ``a`` is the marginal energy of one prompt token (phase ``prefill``), ``b`` of one generated
  token (phase ``decode``), in joules per token. Both are constrained to be ≥ 0.
- ``c`` (watts) is active power the tokens do not explain: an idle baseline a little off, work
  that is not tokens (tokenisation, scheduling, KV-cache moves). It keeps ``a`` and ``b`` free of
  the idle baseline's error; it may be negative (the baseline too high) and is not a marginal cost.
  Idle energy is not in the fit at all: the attribution keeps it apart (``mode="idle"``).

The fit is Huber's M-estimator by iteratively reweighted least squares (``k = 1.345``, scale from
the median absolute residual): a window spoiled by a restart, a scrape that arrived late or a
burst the counters did not see costs little. Where the residuals grow with the fitted energy (a
GPU's power noise does: a busy window is noisier than a quiet one), the fit is redone with each
window weighted by its estimated noise (feasible weighted least squares, ``|r| ≈ α + γ ŷ``), which
roughly halves the prefill term's error on such data and changes nothing where noise is even.
Standard errors are Huber's own (the "H1" covariance
of Huber 1981, §7.6, as in R's ``MASS::rlm`` and statsmodels' ``RLM``), widened by Student's
t quantile for n − 3 degrees of freedom over the normal one, so that a 95 % interval is
``estimate ± 1.96 × stderr`` even with few windows.

Nothing is published when the windows do not identify the terms, and :class:`Fit` says why
(``state``): too few busy windows, no prompt or no generation tokens at all, prompt and
generation tokens moving in a fixed ratio (``collinear``: their variance inflation factor above
``max_vif``), or a term significantly below zero (the model does not describe the endpoint). A term
whose interval reaches zero (relative standard error above ``max_rel_se``) is left out alone
(``prefill_unidentified`` / ``decode_unidentified``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

HUBER_K = 1.345        # 95 % efficiency at the normal distribution
MAD_TO_SIGMA = 1.4826  # the normal distribution's sigma per median absolute deviation
Z_975 = 1.959963984540054
# a window beyond these is not traffic (a server's counters gone wild, a hostile neighbour's fake
# server): 10⁸ tokens/s is ~1,000× a busy 8-GPU node, 10⁶ W a megawatt. It is left out, not fitted.
MAX_TOKENS_PER_S = 1e8
MAX_WATTS = 1e6
STATES = ("fitted", "prefill_unidentified", "decode_unidentified", "too_few_windows", "no_prompt_tokens",
          "no_generation_tokens", "collinear", "negative_term", "fit_failed")


@dataclass(frozen=True)
class Window:
    """One window of an endpoint's traffic: its length, its active energy and its token counts."""
    dt_s: float
    joules: float
    prompt: float
    generation: float


@dataclass(frozen=True)
class Fit:
    state: str                     # one of STATES
    windows: int                   # windows in the fit
    busy: int = 0                  # windows with tokens
    prefill: float | None = None   # J per prompt token (None: not published)
    prefill_se: float | None = None
    decode: float | None = None    # J per generation token
    decode_se: float | None = None
    fixed_w: float | None = None   # the per-second term c (W); may be negative
    r_squared: float | None = None
    vif: float | None = None
    detail: str = ""

    @property
    def published(self) -> bool:
        return self.prefill is not None or self.decode is not None


def fit(windows: Sequence[Window], *, min_windows: int = 12, max_vif: float = 25.0,
        max_rel_se: float = 0.5, max_iter: int = 50) -> Fit:
    """Fit the model to ``windows`` (see the module); never raises on odd data."""
    rows = [w for w in windows if all(math.isfinite(v) for v in (w.dt_s, w.joules, w.prompt, w.generation))
            and w.dt_s > 0 and w.prompt >= 0 and w.generation >= 0 and w.joules <= MAX_WATTS * w.dt_s
            and w.prompt + w.generation <= MAX_TOKENS_PER_S * w.dt_s]
    n = len(rows)
    busy = sum(1 for w in rows if w.prompt + w.generation > 0)
    if busy < min_windows:
        return Fit("too_few_windows", n, busy, detail=f"{busy} windows with tokens, {min_windows} needed")
    if not any(w.prompt for w in rows):
        return Fit("no_prompt_tokens", n, busy, detail="the engine reported no prompt tokens")
    if not any(w.generation for w in rows):
        return Fit("no_generation_tokens", n, busy, detail="the engine reported no generation tokens")
    cols = [[w.dt_s for w in rows], [w.prompt for w in rows], [w.generation for w in rows]]
    y = [w.joules for w in rows]
    scale = [math.sqrt(math.fsum(v * v for v in c) / n) or 1.0 for c in cols]
    x = [[c[i] / s for c, s in zip(cols, scale)] for i in range(n)]  # rows, columns scaled to RMS 1
    vif = max(_vif(x, 1), _vif(x, 2))
    if vif > max_vif:
        return Fit("collinear", n, busy, vif=vif, detail=f"prompt and generation tokens move together "
                   f"(variance inflation {vif:.0f} > {max_vif:g}): their costs cannot be told apart")
    beta, free, w, r = _huber_nonneg(x, y, max_iter)
    sd = _noise_scale(x, beta, r)
    if sd is not None:  # noise that grows with the power: weigh each window by 1/its noise
        x = [[v / si for v in xi] for xi, si in zip(x, sd)]
        y = [yi / si for yi, si in zip(y, sd)]
        beta, free, w, r = _huber_nonneg(x, y, max_iter)
    s = _mad(r)
    cov = _huber_cov(x, r, s, list(range(3)))
    hac = _hac_cov(x, r, s)
    if cov is not None and hac is not None:  # the larger of the two: residuals of adjacent windows correlate
        cov = [[max(cov[j][j], hac[j][j]) if i == j else cov[i][j] for j in range(3)] for i in range(3)]
    if cov is None:
        return Fit("collinear", n, busy, vif=vif, detail="the design is singular")
    widen = t_quantile_975(n - 3) / Z_975  # few windows: ±1.96 stderr still a 95 % interval
    se = [math.sqrt(max(cov[j][j], 0.0)) * widen for j in range(3)]
    if len(free) < 3:  # a token term pinned at 0: is it really ≤ 0, or just small?
        unconstrained = _solve(x, y, w, [0, 1, 2]) or beta
        for j in (1, 2):
            if j not in free and unconstrained[j] < -2 * se[j]:
                phase = "prefill" if j == 1 else "decode"
                return Fit("negative_term", n, busy, vif=vif, detail=f"the {phase} term is below zero "
                           f"({unconstrained[j] / scale[j]:.3g} J/token, stderr {se[j] / scale[j]:.2g}): "
                           "the linear model does not describe this endpoint")
    est = [b / sc for b, sc in zip(beta, scale)]
    ses = [e / sc for e, sc in zip(se, scale)]
    y0 = [w.joules for w in rows]  # R² on the windows' own joules, whatever the weights
    ybar = math.fsum(y0) / n
    tss = math.fsum((v - ybar) ** 2 for v in y0)
    rss = math.fsum((v - math.fsum(e * c for e, c in zip(est, (w.dt_s, w.prompt, w.generation)))) ** 2
                    for v, w in zip(y0, rows))
    r2 = 1.0 - rss / tss if tss > 0 else None
    ok = [est[j] > 0 and ses[j] <= max_rel_se * est[j] for j in (1, 2)]
    state = "fitted" if all(ok) else ("prefill_unidentified" if ok[1] else
                                      "decode_unidentified" if ok[0] else "collinear")
    if state == "collinear":
        return Fit("collinear", n, busy, vif=vif, r_squared=r2,
                   detail="neither token term is distinguishable from zero")
    return Fit(state, n, busy,
               prefill=est[1] if ok[0] else None, prefill_se=ses[1] if ok[0] else None,
               decode=est[2] if ok[1] else None, decode_se=ses[2] if ok[1] else None,
               fixed_w=est[0], r_squared=r2, vif=vif)


def t_quantile_975(df: int) -> float:
    """Student's t 97.5 % quantile (Cornish-Fisher expansion about the normal one; within 0.2 %
    of the exact value for df ≥ 3)."""
    if df < 1:
        return math.inf
    z, v = Z_975, float(df)
    return (z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3))


# --- small dense linear algebra on lists (three columns at most) -------------------------------

def _normal(x: list[list[float]], y: list[float], w: list[float]) -> tuple[list[list[float]], list[float]]:
    """XᵀWX and XᵀWy, one pass over the windows (columns scaled to RMS 1: plain sums are exact enough)."""
    a = [[0.0] * 3 for _ in range(3)]
    b = [0.0, 0.0, 0.0]
    for wi, xi, yi in zip(w, x, y):
        for p in range(3):
            wp = wi * xi[p]
            b[p] += wp * yi
            row = a[p]
            for q in range(3):
                row[q] += wp * xi[q]
    return a, b


def _subset(a: list[list[float]], b: list[float], cols: list[int]) -> list[float] | None:
    sol = _gauss([[a[p][q] for q in cols] for p in cols], [b[p] for p in cols])
    if sol is None:
        return None
    out = [0.0, 0.0, 0.0]
    for p, c in enumerate(cols):
        out[c] = sol[p]
    return out


def _solve(x: list[list[float]], y: list[float], w: list[float], cols: list[int]) -> list[float] | None:
    """Weighted least squares on the columns ``cols``; the others are 0. None if singular."""
    a, b = _normal(x, y, w)
    return _subset(a, b, cols)


def _gauss(a: list[list[float]], b: list[float]) -> list[float] | None:
    k = len(b)
    m = [row[:] + [bv] for row, bv in zip(a, b)]
    norm = max((abs(v) for row in a for v in row), default=0.0)
    for c in range(k):
        p = max(range(c, k), key=lambda i: abs(m[i][c]))
        if abs(m[p][c]) <= 1e-12 * max(norm, 1e-300):
            return None
        m[c], m[p] = m[p], m[c]
        for i in range(k):
            if i != c:
                f = m[i][c] / m[c][c]
                for j in range(c, k + 1):
                    m[i][j] -= f * m[c][j]
    return [m[i][k] / m[i][i] for i in range(k)]


def _inverse(a: list[list[float]]) -> list[list[float]] | None:
    k = len(a)
    cols = [_gauss(a, [1.0 if i == j else 0.0 for i in range(k)]) for j in range(k)]
    if any(c is None for c in cols):
        return None
    return [[cols[j][i] for j in range(k)] for i in range(k)]  # type: ignore[index]


def _vif(x: list[list[float]], j: int) -> float:
    """Variance inflation of column j against the others (centred: the dt column acts as the
    intercept); inf when column j is a combination of the others."""
    others = [c for c in range(3) if c != j]
    y = [row[j] for row in x]
    ones = [1.0] * len(x)
    beta = _solve(x, y, ones, others)
    mean = math.fsum(y) / len(y)
    tss = math.fsum((v - mean) ** 2 for v in y)
    if beta is None or tss <= 0:
        return math.inf
    rss = math.fsum((yi - math.fsum(beta[c] * row[c] for c in others)) ** 2 for yi, row in zip(y, x))
    return math.inf if rss <= 1e-12 * tss else tss / rss


def _mad(r: list[float]) -> float:
    med = sorted(abs(v) for v in r)
    n = len(med)
    m = med[n // 2] if n % 2 else 0.5 * (med[n // 2 - 1] + med[n // 2])
    return MAD_TO_SIGMA * m


def _nonneg(x: list[list[float]], y: list[float], w: list[float]) -> tuple[list[float], list[int]]:
    """Weighted least squares with the token terms (columns 1, 2) ≥ 0: the best of the feasible
    solutions on every subset of them (four at most), all from one XᵀWX."""
    a, b = _normal(x, y, w)
    best: tuple[float, list[float], list[int]] | None = None
    for cols in ([0, 1, 2], [0, 1], [0, 2], [0]):
        beta = _subset(a, b, cols)
        if beta is None or beta[1] < 0 or beta[2] < 0:
            continue
        # the weighted RSS less the constant yᵀWy: βᵀAβ − 2 βᵀb
        crit = sum(beta[p] * a[p][q] * beta[q] for p in range(3) for q in range(3)) \
            - 2 * sum(beta[p] * b[p] for p in range(3))
        if best is None or crit < best[0] - 1e-12 * abs(crit):
            best = (crit, beta, cols)
    if best is None:
        return [0.0, 0.0, 0.0], []
    return best[1], best[2]


def _residuals(x: list[list[float]], y: list[float], beta: list[float]) -> list[float]:
    b0, b1, b2 = beta
    return [yi - (b0 * xi[0] + b1 * xi[1] + b2 * xi[2]) for xi, yi in zip(x, y)]


def _huber_nonneg(x: list[list[float]], y: list[float], max_iter: int
                  ) -> tuple[list[float], list[int], list[float], list[float]]:
    w = [1.0] * len(y)
    beta, free = _nonneg(x, y, w)
    r = _residuals(x, y, beta)
    for _ in range(max_iter):
        s = _mad(r)
        if s <= 0:
            break
        cut = HUBER_K * s
        w = [1.0 if -cut <= v <= cut else cut / abs(v) for v in r]
        new, free = _nonneg(x, y, w)
        r = _residuals(x, y, new)
        done = all(abs(a - b) <= 1e-8 * (abs(a) + abs(b) + 1e-12) for a, b in zip(new, beta))
        beta = new
        if done:
            break
    return beta, free, w, r


def _noise_scale(x: list[list[float]], beta: list[float], r: list[float]) -> list[float] | None:
    """Each window's noise, relative (mean 1), where it grows with the fitted energy: |residual|
    regressed on the fit, |r| ≈ α + γ ŷ. None when it does not grow (γ not above 2 of its
    standard errors, or the spread it implies is under 1.5×): plain least squares is then as good.
    Each weight is bounded to 5× the mean, so one quiet window cannot take over the fit."""
    n = len(r)
    yhat = [-v for v in _residuals(x, [0.0] * n, beta)]  # x·β
    a = [abs(v) for v in r]
    my, ma = math.fsum(yhat) / n, math.fsum(a) / n
    sxx = math.fsum((v - my) ** 2 for v in yhat)
    if sxx <= 0 or n < 8:
        return None
    gamma = math.fsum((v - my) * (u - ma) for v, u in zip(yhat, a)) / sxx
    alpha = ma - gamma * my
    res = [u - alpha - gamma * v for v, u in zip(yhat, a)]
    se_gamma = math.sqrt(math.fsum(e * e for e in res) / (n - 2) / sxx)
    if gamma <= 2 * se_gamma:
        return None
    sd = [alpha + gamma * v for v in yhat]
    mean = math.fsum(sd) / n
    if mean <= 0:
        return None
    sd = [max(v / mean, 0.2) for v in sd]
    if max(sd) < 1.5 * min(sd):
        return None
    return sd


def _hac_cov(x: list[list[float]], r: list[float], s: float) -> list[list[float]] | None:
    """Newey-West covariance of the M-estimate (Bartlett kernel, lag ⌈4 (n/100)^(2/9)⌉), for
    windows in time order: power that wanders over more than one window makes neighbouring
    residuals alike, and noise that grows with the traffic makes them unequal, both of which the
    H1 formula assumes away. B⁻¹ M B⁻¹ · n/(n−p), B = Σ ψ'(u) x xᵀ,
    M = Σ_l w_l Σ_i ψ_i ψ_(i−l) (x_i x_(i−l)ᵀ + x_(i−l) x_iᵀ) (l = 0 counted once), with ψ_i
    inflated by its window's leverage (HC3)."""
    n, p = len(r), 3
    if n <= p or s <= 0:
        return None
    u = [v / s for v in r]
    b = [[math.fsum(xi[a] * xi[c] for xi, v in zip(x, u) if abs(v) <= HUBER_K) for c in range(p)] for a in range(p)]
    inv = _inverse(b)
    xtx = _inverse([[math.fsum(xi[a] * xi[c] for xi in x) for c in range(p)] for a in range(p)])
    if inv is None or xtx is None:
        return None
    # each window's ψ inflated by 1/(1 − leverage), as HC3 does: windows far out in token space
    # (a burst) pull the fit towards them, and their residuals understate their noise
    lev = [math.fsum(xi[a] * xtx[a][c] * xi[c] for a in range(p) for c in range(p)) for xi in x]
    psi = [max(-HUBER_K, min(HUBER_K, v)) * s / max(1.0 - h, 0.05) for v, h in zip(u, lev)]
    lag = math.ceil(4 * (n / 100) ** (2 / 9))
    m = [[0.0] * p for _ in range(p)]
    for lg in range(0, min(lag, n - 1) + 1):
        wl = 1.0 - lg / (lag + 1)
        for i in range(lg, n):
            f = wl * psi[i] * psi[i - lg]
            xi, xj = x[i], x[i - lg]
            for a in range(p):
                for c in range(p):
                    m[a][c] += f * (xi[a] * xj[c] + (xj[a] * xi[c] if lg else 0.0))
    corr = n / (n - p)
    return [[corr * math.fsum(inv[a][i] * m[i][j] * inv[j][c] for i in range(p) for j in range(p))
             for c in range(p)] for a in range(p)]


def _huber_cov(x: list[list[float]], r: list[float], s: float, cols: list[int]) -> list[list[float]] | None:
    """Huber's H1 covariance of the estimate: K² · [Σψ²/(n−p)] / [Σψ'/n]² · (XᵀX)⁻¹, with
    ψ(u) = clip(u, −k, k) on residuals in units of the scale s (s² restored)."""
    n, p = len(r), len(cols)
    xtx = [[math.fsum(xi[a] * xi[b] for xi in x) for b in cols] for a in cols]
    inv = _inverse(xtx)
    if inv is None or n <= p:
        return None
    if s <= 0:  # an exact fit: no spread to speak of
        s = math.sqrt(math.fsum(v * v for v in r) / (n - p)) or 0.0
        return [[v * s * s for v in row] for row in inv]
    u = [v / s for v in r]
    psi2 = math.fsum(min(abs(v), HUBER_K) ** 2 for v in u)
    dpsi = [1.0 if abs(v) <= HUBER_K else 0.0 for v in u]
    m = math.fsum(dpsi) / n
    if m <= 0:
        return None
    var_dpsi = math.fsum((d - m) ** 2 for d in dpsi) / n
    k2 = (1 + p / n * var_dpsi / (m * m)) ** 2
    factor = k2 * (psi2 / (n - p)) / (m * m) * s * s
    return [[v * factor for v in row] for row in inv]
