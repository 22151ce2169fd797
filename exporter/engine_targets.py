"""Where the local inference servers' metrics are: each process whose own command line is an
inference server, with its metrics port from its flags, or from its pod's
``prometheus.io/port``/``prometheus.io/path`` annotations, plus the configured targets.

Refreshed by the sampler thread (which already holds every process and its identity) every
``REFRESH_S``; read by the engine scraper in the event loop (one list, swapped whole)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .identity import cmdline
from .identity.resolver import Workload

REFRESH_S = 10.0


@dataclass(frozen=True)
class Target:
    workload: Workload
    engine: str
    url: str
    model: str          # the identity's served model, used when the server's metrics carry none


def find(procs: dict[int, Any], resolver: Any, static: list[Target]) -> list[Target]:
    from .engines import READERS, discovery  # the readers (and prometheus_client's parser) only with scraping on

    out: dict[str, Target] = {}
    for pid, p in procs.items():
        ident = cmdline.detect(p.cmdline)
        if ident is None or ident.engine not in READERS:
            continue
        parent = procs.get(p.ppid)
        pident = cmdline.detect(parent.cmdline) if parent is not None else None
        if pident is not None and pident.engine == ident.engine:
            continue  # a shard, stub or runner of a server already listed
        port = discovery.metrics_port_from_cmdline(ident.engine, p.cmdline)  # None: metrics off
        path, host = READERS[ident.engine].metrics_path, "127.0.0.1"
        meta = resolver.pod_of(p)
        if meta is not None:  # reach the pod on its own IP; its annotations win
            host = meta.pod_ip or host
            port = int(meta.annotations.get("prometheus.io/port") or port or 0) or None
            path = meta.annotations.get("prometheus.io/path") or path
        if port is None:
            continue
        url = f"http://{host}:{port}{path}"
        out[url] = Target(resolver.resolve(pid, procs), ident.engine, url, ident.model)
    for t in static:
        out[t.url] = t
    return list(out.values())


class TargetFinder:
    def __init__(self, resolver: Any) -> None:
        self.resolver = resolver
        self.static: list[Target] = []
        self.current: list[Target] = []
        self._at = -1e18

    def maybe_refresh(self, now: float, procs: dict[int, Any]) -> None:
        if now - self._at >= REFRESH_S:
            self._at = now
            self.current = find(procs, self.resolver, self.static)

    def targets(self) -> list[Target]:
        return self.current
