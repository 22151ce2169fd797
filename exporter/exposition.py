"""Exposition by contribution: every part of the daemon writes its own series into one
:class:`Snapshot` per sample (its ``contribute(snap)`` method), and :class:`Renderer` turns that
snapshot into the Prometheus text format once per sample, on the sampler thread.

The scrape handler only returns the bytes of the latest :class:`Exposition` (gzip made on the
first request that asks for it, then kept): no sensor or network I/O, no rendering, on the
scrape path.

The text is written here directly rather than through a ``prometheus_client`` registry: building
a registry of metric-family objects every second was half of the sampling loop's CPU. The output
is byte-for-byte what ``prometheus_client.generate_latest`` (0.26) writes for the same families —
``tests/test_exposition.py`` renders random snapshots both ways and compares them. The value
format follows ``prometheus_client.utils.floatToGoString`` (Apache-2.0), which mimics Go's.
"""

from __future__ import annotations

import gzip
import math
import os
import resource
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, Protocol

from . import catalogue

Series = dict[tuple[str, ...], float]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
GZIP_LEVEL = 5


@dataclass
class Snapshot:
    """Everything one scrape shows, keyed by catalogue short name (no ``wattprint_`` prefix)."""
    values: dict[str, Series] = field(default_factory=dict)

    def set(self, metric: str, labels: tuple[str, ...], value: float) -> None:
        self.values.setdefault(metric, {})[labels] = value


class Contributor(Protocol):
    """A part of the daemon that owns some series of the exposition."""

    def contribute(self, snap: Snapshot) -> None: ...


def go_float(v: float) -> str:
    """A sample value as Prometheus's Go code writes it (prometheus_client's floatToGoString)."""
    d = float(v)
    if d == 0.0:
        return "0.0"  # also for -0.0 (client_python writes "-0.0"): the same series, the same text
    if d == math.inf:
        return "+Inf"
    if d == -math.inf:
        return "-Inf"
    if d != d:
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


LABEL_MAX_BYTES = 128  # a longer label value keeps its first bytes and a hash of the whole


def cap_label(v: str) -> str:
    """A label value of at most LABEL_MAX_BYTES UTF-8 bytes: a longer one (a 120 KB model name on
    a hostile command line) becomes its first bytes, "~" and 12 hex digits of its SHA-256, so two
    long values stay apart and the same value always caps the same (energy and requests still
    meet)."""
    if len(v) <= LABEL_MAX_BYTES // 4:  # cannot be longer: 4 bytes a character at most
        return v
    raw = v.encode("utf-8", "surrogatepass")
    if len(raw) <= LABEL_MAX_BYTES:
        return v
    import hashlib

    digest = hashlib.sha256(raw).hexdigest()[:12]
    head = raw[:LABEL_MAX_BYTES - 13].decode("utf-8", "ignore")  # never half a character
    return f"{head}~{digest}"


def cap_labels(labels: tuple[str, ...]) -> tuple[str, ...]:
    for v in labels:
        if len(v) > LABEL_MAX_BYTES // 4:
            return tuple(cap_label(x) for x in labels)
    return labels


def escape_label_value(v: str) -> str:
    if "\\" in v or '"' in v or "\n" in v:
        return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return v


def escape_help(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n")


class _Family:
    """Pre-rendered pieces of one metric family: its header and, per label set, its prefix."""

    __slots__ = ("header", "sample", "names", "order", "prefixes", "lines")

    def __init__(self, name: str, type_: str, help_: str, labels: tuple[str, ...]) -> None:
        sample = name
        if type_ == "counter" and not name.endswith("_total"):
            sample = name + "_total"
        shown = "gauge" if type_ == "info" else type_
        self.header = f"# HELP {sample} {escape_help(help_)}\n# TYPE {sample} {shown}\n"
        self.sample, self.names = sample, labels
        self.order = sorted(range(len(labels)), key=lambda i: labels[i])  # label names sorted, as client_python
        self.prefixes: dict[tuple[str, ...], str] = {}
        self.lines: dict[tuple[str, ...], tuple[float, str]] = {}  # labels -> (value, its line)

    def line(self, labels: tuple[str, ...], v: float) -> str:
        """One sample line; most values do not change between samples, so the last line of
        each series is kept and reused while its value is the same."""
        hit = self.lines.get(labels)
        if hit is not None and hit[0] == v:
            return hit[1]
        if len(self.lines) > 100_000:
            self.lines.clear()
        text = f"{self.prefix(labels)}{go_float(v)}\n"
        self.lines[labels] = (v, text)
        return text

    def prefix(self, labels: tuple[str, ...]) -> str:
        p = self.prefixes.get(labels)
        if p is None:
            if len(self.prefixes) > 100_000:  # label sets that came and went: start over
                self.prefixes.clear()
            if labels:
                inner = ",".join(f'{self.names[i]}="{escape_label_value(cap_label(labels[i]))}"'
                                 for i in self.order)
                p = f"{self.sample}{{{inner}}} "
            else:
                p = self.sample + " "
            self.prefixes[labels] = p
        return p


def to_openmetrics(text: bytes) -> bytes:
    """The same families in OpenMetrics 1.0 (what Prometheus asks for first): a counter family is
    named without its ``_total`` (its samples keep it), HELP also escapes ``"``, and the text ends
    with ``# EOF``. Sample lines are the same bytes."""
    lines = text.decode().split("\n")
    counters = {ln[7:-8] for ln in lines if ln.startswith("# TYPE ") and ln.endswith(" counter")}
    out = []
    for ln in lines:
        if ln.startswith(("# HELP ", "# TYPE ")):
            kind, rest = ln[2:6], ln[7:]
            name, sep, tail = rest.partition(" ")
            if name in counters and name.endswith("_total"):
                name = name[:-6]
            if kind == "HELP":
                tail = tail.replace('"', '\\"')
            ln = f"# {kind} {name}{sep}{tail}"
        out.append(ln)
    if out and out[-1] == "":
        out.pop()
    return ("\n".join(out) + "\n# EOF\n").encode()


@dataclass
class Exposition:
    """One rendered sample. ``gzip()`` and ``openmetrics()`` are made on first use and kept."""
    text: bytes = b""
    _gz: bytes | None = None
    _om: bytes | None = None
    _om_gz: bytes | None = None

    def gzip(self) -> bytes:
        gz = self._gz
        if gz is None:
            gz = self._gz = gzip.compress(self.text, compresslevel=GZIP_LEVEL)
        return gz

    def openmetrics(self) -> bytes:
        om = self._om
        if om is None:
            om = self._om = to_openmetrics(self.text)
        return om

    def openmetrics_gzip(self) -> bytes:
        gz = self._om_gz
        if gz is None:
            gz = self._om_gz = gzip.compress(self.openmetrics(), compresslevel=GZIP_LEVEL)
        return gz


class Renderer:
    """Renders snapshots; ``current`` is swapped atomically per sample (readers see the old
    exposition or the new one, never a mix)."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self._process = ProcessMetrics()
        self._texts: dict[str, tuple[Series, str]] = {}  # family -> (its series, its text) last sample
        self.current = Exposition()
        self._lock = threading.Lock()  # render() may be called from two threads in tests

    def family(self, short: str) -> _Family:
        fam = self._families.get(short)
        if fam is None:
            m = catalogue.get(short)
            fam = self._families[short] = _Family(m.name if m.type != "info" else m.family + "_info",
                                                  m.type, m.help, m.labels)
        return fam

    def render(self, snap: Snapshot) -> Exposition:
        with self._lock:
            out: list[str] = []
            cache = self._texts
            texts: dict[str, tuple[Series, str]] = {}
            for short, series in snap.values.items():
                hit = cache.get(short)
                if hit is not None and hit[0] == series:  # unchanged family (info, static gauges)
                    text = hit[1]
                else:
                    fam = self.family(short)
                    line = fam.line
                    text = fam.header + "".join([line(labels, v) for labels, v in series.items()])
                    series = dict(series)  # the snapshot's dict may be shared with its owner
                texts[short] = (series, text)
                out.append(text)
            self._texts = texts
            out.extend(self._process.lines())
            self.current = Exposition("".join(out).encode())
            return self.current


class ProcessMetrics:
    """The exporter's own ``process_*`` metrics, as prometheus_client's ProcessCollector writes
    them (Linux): virtual and resident memory, start time, CPU seconds, open and max fds.

    Cheap sources, since this runs every sample: CPU from ``times(2)`` (``os.times``: the same
    clock ticks as ``/proc/self/stat``'s utime/stime, every thread included), memory from
    ``/proc/self/statm`` (no walk over the threads, which reading ``/proc/self/stat`` costs), the
    start time once. Counting open descriptors lists ``/proc/self/fd``: done every
    ``FDS_EVERY_S`` seconds, the last count shown in between."""

    FDS_EVERY_S = 10.0

    def __init__(self, procfs: str = "/proc") -> None:
        self.procfs = procfs
        self.statm_path = os.path.join(procfs, "self", "statm")
        self.fd_path = os.path.join(procfs, "self", "fd")
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.pagesize = os.sysconf("SC_PAGESIZE")
        self.start = 0.0
        self._fds: float | None = None
        self._fds_at = -1e18
        btime = 0.0
        try:
            with open(os.path.join(procfs, "stat"), "rb") as fh:
                for line in fh:
                    if line.startswith(b"btime "):
                        btime = float(line.split()[1])
            with open(os.path.join(procfs, "self", "stat"), "rb") as fh:
                self.start = float(fh.read().rsplit(b")", 1)[-1].split()[19]) / self.ticks + btime
        except (OSError, ValueError, IndexError):
            pass

    def lines(self) -> Iterable[str]:
        """One small read per sample (``statm``), the descriptor count now and then."""
        try:
            fd = os.open(self.statm_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                raw = os.read(fd, 256)
            finally:
                os.close(fd)
            size, resident = (float(x) * self.pagesize for x in raw.split()[:2])
        except (OSError, ValueError):
            return []
        t = os.times()
        cpu = round((t.user + t.system) * self.ticks) / self.ticks  # whole ticks, as /proc/self/stat
        out = [_gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", size),
               _gauge("process_resident_memory_bytes", "Resident memory size in bytes.", resident),
               _gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
                      self.start),
               "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
               f"# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {go_float(cpu)}\n"]
        now = time.monotonic()
        if self._fds is None or now - self._fds_at >= self.FDS_EVERY_S:
            try:
                self._fds, self._fds_at = float(len(os.listdir(self.fd_path))), now
            except OSError:
                return out
        out.append(_gauge("process_open_fds", "Number of open file descriptors.", self._fds))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        out.append(_gauge("process_max_fds", "Maximum number of open file descriptors.",
                          float(soft) if soft != resource.RLIM_INFINITY else math.inf))
        return out


def _gauge(name: str, help_: str, v: float) -> str:
    return f"# HELP {name} {help_}\n# TYPE {name} gauge\n{name} {go_float(v)}\n"
