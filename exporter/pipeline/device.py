"""One GPU's accounting state: counter deltas, counter resets, power integration and the learned
idle baseline. Pure (no I/O, no clock of its own): fed one reading and its time per sample, the
same for every GPU backend. A snapshot (``copy()``) restores it after a failed sample."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Delta:
    joules: float | None      # None: nothing to book (first read, or no power)
    dt_s: float
    counter_reset: bool = False
    implausible: bool = False   # the counter advanced more than any GPU can draw: booked from power


QUIET_SETTLE_S = 3.0      # NVML power on Ampere+ is a 1-s average: the first seconds of quiet mix busy power
BUCKET = 10               # settled quiet readings per vote (its median)
MAX_VOTES = 30            # the baseline is the median of the latest votes …
HORIZON_S = 3600.0        # … none older than this: it follows the GPU up as well as down
MIN_TABLE_FRACTION = 0.3  # a reading ≤ 0, or below this × the model table's idle power, is not idle power
MAX_TABLE_FACTOR = 3.0    # nor one above this × the table's idle power …
MAX_LIMIT_FRACTION = 0.5  # … or above half the GPU's power limit
FLOOR_FRACTION = 0.5      # a counter advancing below this × the idle floor has restarted (a hidden reset) …
FLOOR_MIN_DT_S = 2.0      # … judged over intervals at least this long (the counter updates in steps)
MAX_DEVICE_W = 3000.0     # no accelerator draws more (B200 1 kW, MI355X 1.4 kW): when the limit is unknown
IMPLAUSIBLE_FACTOR = 2.0  # a counter advancing faster than this × the power limit (or MAX_DEVICE_W) …
IMPLAUSIBLE_MIN_DT_S = 1.0  # … over at least this long (a counter steps every ~20-100 ms) is a glitch


def plausible_idle(p: float, table_w: float | None, limit_w: float | None) -> bool:
    """Whether a power reading can be a GPU's idle power at all (bounds documented above)."""
    if p <= 0:
        return False
    if table_w and not MIN_TABLE_FRACTION * table_w <= p <= MAX_TABLE_FACTOR * table_w:
        return False
    return not (limit_w and p > MAX_LIMIT_FRACTION * limit_w)


def median(values: list[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


@dataclass
class GpuAccount:
    last_mj: int | None = None
    last_power_w: float | None = None
    last_t: float | None = None
    power_w: float = 0.0
    first_t: float | None = None
    min_power_w: float | None = None       # lowest plausible power seen (caps the table's value)
    quiet_since: float | None = None       # start of the current quiet window
    bucket: list[float] = field(default_factory=list)
    votes: list[tuple[float, float]] = field(default_factory=list)  # (time, median of a bucket)
    learned_w: float | None = None         # the median of the votes
    learned_t: float | None = None         # time of the newest vote
    moved_t: float | None = None           # when the energy counter last moved (bounds an advance)

    def copy(self) -> "GpuAccount":
        """A checkpoint (every sample, every GPU: a plain __dict__ copy, ~4× cheaper than
        dataclasses.replace, which re-runs __init__). The lists are shared: this class never
        changes one in place, it assigns a new one."""
        c = GpuAccount.__new__(GpuAccount)
        c.__dict__.update(self.__dict__)
        return c

    def update(self, energy_mj: int | None, power_mw: int | None, now: float,
               floor_w: float | None = None, limit_w: float | None = None) -> Delta:
        """Joules since this GPU's last good read (gaps included: nothing is lost). The energy
        counter where there is one; power-only devices integrate power (trapezoid).

        A counter restart (driver reload) is either a counter that went backwards, or one whose
        new value hides it. A new value that fits in Δt at ``limit_w`` (Δt ≥ FLOOR_MIN_DT_S) may
        be a count since a restart: it is one when the advance is below ``floor_w`` × Δt (less
        than the GPU draws idle), or when the new value is nearer the power readings' estimate
        of Δt than the advance is. Either way the count since the restart is an exact lower
        bound, and the power readings around the gap bridge it when they say more.

        An advance no GPU could make — above IMPLAUSIBLE_FACTOR × ``limit_w`` (MAX_DEVICE_W when
        unknown) over the time since the counter last moved (at least Δt and IMPLAUSIBLE_MIN_DT_S)
        — is a glitch, not energy: the interval is
        booked from the power readings (at most that ceiling), the counter's new value is the
        baseline from then on, and ``implausible`` says so (the stage counts it)."""
        power_w = self.power_w if power_mw is None else power_mw / 1000.0  # unread power: the last one
        dt = 0.0 if self.last_t is None else now - self.last_t
        joules: float | None = None
        reset = implausible = False
        if energy_mj is not None:
            if self.last_mj is not None:
                joules = (energy_mj - self.last_mj) / 1000.0
                since = energy_mj / 1000.0
                bridged = (power_w + (self.last_power_w or power_w)) / 2 * dt
                hidden = False
                if joules >= 0 and dt >= FLOOR_MIN_DT_S and (limit_w is None or since <= limit_w * dt):
                    # the new value fits in the interval: did the counter go on, or restart?
                    below_floor = floor_w is not None and joules < floor_w * dt
                    nearer = abs(since - bridged) < abs(joules - bridged)
                    hidden = below_floor or nearer
                if joules < 0 or hidden:  # the counter restarted: what it counted since is exact
                    reset = True
                    joules = max(bridged, since)
                # over the time since the counter last moved: a backend may hand on, in one read,
                # what a stalled counter missed (amdgpu's stuck accumulator, ROCm/amdsmi#22)
                span = now - (self.moved_t if self.moved_t is not None else self.last_t or now)
                ceiling = IMPLAUSIBLE_FACTOR * (limit_w or MAX_DEVICE_W) * max(dt, span, IMPLAUSIBLE_MIN_DT_S)
                if joules > ceiling:  # a glitch (a corrupt read, a misread wrap): the power readings say it
                    implausible = True
                    joules = min(bridged, ceiling)
            if energy_mj != self.last_mj:
                self.moved_t = now
            self.last_mj = energy_mj
        elif self.last_t is not None:  # no counter (or it was given up on): integrate power
            prev = self.last_power_w if self.last_power_w is not None else power_w
            joules = (power_w + prev) / 2 * dt
            self.last_mj = None
        if self.first_t is None:
            self.first_t = now
        self.last_t, self.last_power_w, self.power_w = now, power_w, power_w
        return Delta(joules, dt, reset, implausible)

    def learn_idle(self, quiet: bool, table_w: float | None = None, limit_w: float | None = None) -> None:
        """Learn the idle baseline from sustained quiet only: a reading counts once the GPU has
        been quiet for QUIET_SETTLE_S (the first reading of a quiet window never does), is
        plausible (:func:`plausible_idle`), and votes through the median of BUCKET readings;
        the baseline is the median of the votes of the last HORIZON_S."""
        p, now = self.power_w, self.last_t if self.last_t is not None else 0.0
        ok = plausible_idle(p, table_w, limit_w)
        if ok:
            self.min_power_w = p if self.min_power_w is None else min(self.min_power_w, p)
        if not quiet:
            self.quiet_since = None
            if self.bucket:
                self.bucket = []
            return
        if self.quiet_since is None:
            self.quiet_since = now
            return
        if now - self.quiet_since < QUIET_SETTLE_S or not ok:
            return
        self.bucket = [*self.bucket, p]  # a new list, never one a checkpoint shares
        if len(self.bucket) < BUCKET:
            return
        self.votes = [v for v in self.votes[-(MAX_VOTES - 1):] if now - v[0] <= HORIZON_S] + [(now, median(self.bucket))]
        self.bucket = []
        self.learned_w, self.learned_t = median([w for _, w in self.votes]), now

    def power_floor_w(self, table_w: float | None) -> float | None:
        """The least this GPU can draw while powered: FLOOR_FRACTION × the lower of its model
        table's idle power and the lowest plausible power seen; None when neither is known."""
        known = [w for w in (table_w, self.min_power_w) if w]
        return FLOOR_FRACTION * min(known) if known else None

    def idle_baseline(self, configured: float | None, table: float | None) -> tuple[float, str]:
        """(watts, source): configured, else learned from sustained quiet, else the model table
        (capped by the lowest plausible power seen), else the lowest plausible power seen."""
        if configured is not None:
            return configured, "configured"
        if self.learned_w is not None:
            return self.learned_w, "learned"
        if table is not None:
            return min(table, self.min_power_w if self.min_power_w is not None else table), "table"
        if self.min_power_w is not None:
            return self.min_power_w, "learned"
        return 0.0, "unknown"  # no table row and no plausible reading yet: all energy is active

    def idle_age_s(self, configured: bool) -> float:
        """Seconds since the baseline's newest evidence: its last vote when learned, else since
        the device's first read (a configured or table value has been in use that long)."""
        if self.last_t is None:
            return 0.0
        since = self.learned_t if self.learned_t is not None and not configured else self.first_t
        return max(0.0, self.last_t - (since if since is not None else self.last_t))


def quiet(processes: dict[int, int], sm_util: dict[int, float]) -> bool:
    """Quiet = no compute process at all, or samples that all say 0 % SM. "No new sample" is not
    quiet: a read soon after the previous one can find none while the GPU is busy."""
    return not processes or (bool(sm_util) and not any(v > 0 for v in sm_util.values()))
