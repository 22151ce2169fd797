"""Log lines in logfmt (default) or JSON, like other Prometheus exporters."""

from __future__ import annotations

import json
import logging
import sys
import time

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn",
          logging.ERROR: "error", logging.CRITICAL: "error"}


def _fields(record: logging.LogRecord) -> dict[str, str]:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
    out = {"ts": ts, "level": _NAMES.get(record.levelno, "info"),
           "caller": f"{record.module}:{record.lineno}", "msg": record.getMessage()}
    out.update({k: str(v) for k, v in getattr(record, "fields", {}).items()})  # extra={"fields": {...}}
    if record.exc_info:
        out["err"] = logging.Formatter().formatException(record.exc_info)
    return out


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = []
        for k, v in _fields(record).items():
            if v == "" or any(c in v for c in ' ="\n\t'):
                v = json.dumps(v)
            parts.append(f"{k}={v}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record))


class RateLimit(logging.Filter):
    """At most ``burst`` records of one kind (logger, level, message template) per ``period_s``;
    the next one that passes says how many were left out. A storm (an accept loop out of file
    descriptors, a failing sample every second) costs a few lines, never a disk or a CPU core,
    and each kind of trouble is still seen."""

    def __init__(self, period_s: float = 10.0, burst: int = 5, max_kinds: int = 1000) -> None:
        super().__init__()
        self.period_s, self.burst, self.max_kinds = period_s, burst, max_kinds
        self._kinds: dict[tuple, list[float]] = {}  # kind -> [window start, passed, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        now = record.created
        kind = (record.name, record.levelno, str(record.msg)[:200])
        st = self._kinds.get(kind)
        if st is None or now - st[0] >= self.period_s:
            dropped = st[2] if st else 0
            if len(self._kinds) >= self.max_kinds:
                self._kinds.clear()
            self._kinds[kind] = [now, 1, 0]
            if dropped:
                record.msg = f"{record.msg} (and {int(dropped)} more like it in the last {self.period_s:g} s)"
            return True
        if st[1] < self.burst:
            st[1] += 1
            return True
        st[2] += 1
        return False


def setup(level: str = "info", fmt: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    handler.addFilter(RateLimit())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
