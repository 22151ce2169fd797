"""Where the local inference servers' metrics are: each process whose own command line (and
environment) is an inference server, at the ports its flags say (several for vLLM's
data-parallel API servers), or at its pod's ``prometheus.io/port``/``prometheus.io/path``
annotations; an annotated pod of unrecognised processes on a GPU; plus the configured targets.

Refreshed by the sampler thread (which already holds every process and its identity) every
``REFRESH_S``; read by the engine scraper in the event loop (one list, swapped whole)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
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
    per_model: bool = False  # llama.cpp router: /models lists the loaded models, each read apart


ENGINE_ANNOTATION = "wattprint.io/engine"  # names the reader of an annotated pod's metrics


def find(procs: dict[int, Any], resolver: Any, static: list[Target],
         on_gpu: Collection[int] = (), read_file: Callable[[int, str], str | None] | None = None) -> list[Target]:
    """Every local server's metrics: one target per (process, port) of a recognised server, and
    one per annotated pod whose processes no command line names but that run on a GPU (read by
    the ``wattprint.io/engine`` annotation's reader, else ``auto``); configured targets win."""
    from .engines import READERS, discovery  # the readers (and prometheus_client's parser) only with scraping on

    out: dict[str, Target] = {}
    for pid, p in procs.items():
        env = getattr(p, "environ", None)
        ident = cmdline.detect(p.cmdline, env)
        meta = resolver.pod_of(p)
        if ident is None or ident.engine not in READERS:
            if meta is not None and pid in on_gpu:
                _annotated(out, meta, resolver.resolve(pid, procs), READERS)
            continue
        if not ident.scraped or cmdline.is_helper(p.cmdline, env) or _under_scraped_server(p, ident, procs):
            continue  # a front end counting its workers' requests; a shard, stub, runner or child
        argv = p.cmdline
        if read_file is not None and (path := discovery.config_path(ident.engine, argv)):
            argv = discovery.with_config(argv, read_file(pid, path))
        points = discovery.scrape_points(ident.engine, argv, env)  # (): metrics off
        host = "127.0.0.1"
        if meta is not None:  # reach the pod on its own IP; its annotations win
            host = meta.pod_ip or host
            default = READERS[ident.engine].metrics_path
            annotated = discovery.from_annotations(meta.annotations, points[0].path or default if points else default)
            if annotated is not None:
                per_model = bool(points) and points[0].per_model
                points = (discovery.ScrapePoint(annotated[0], annotated[1], per_model=per_model),)
        workload = resolver.resolve(pid, procs)
        for point in points:
            url = f"http://{host}:{point.port}{point.path or READERS[ident.engine].metrics_path}"
            out[url] = Target(workload, point.engine or ident.engine, url, ident.model, point.per_model)
    for t in static:
        out[t.url] = t
    return list(out.values())


def _under_scraped_server(p: Any, ident: Any, procs: dict[int, Any]) -> bool:
    """A server whose parent is a scraped server of the same engine (llama.cpp's router over its
    per-model children): the parent's scrape covers it. A launcher that is not scraped (TGI's)
    leaves its serving child to be scraped."""
    parent = procs.get(p.ppid)
    if parent is None:
        return False
    env = getattr(parent, "environ", None)
    pident = cmdline.detect(parent.cmdline, env)
    return (pident is not None and pident.engine == ident.engine and pident.scraped
            and not cmdline.is_helper(parent.cmdline, env))


def _annotated(out: dict[str, Target], meta: Any, workload: Workload, readers: Mapping[str, Any]) -> None:
    from .engines import discovery

    found = discovery.from_annotations(meta.annotations)
    if found is None or not meta.pod_ip:
        return
    engine = meta.annotations.get(ENGINE_ANNOTATION, "auto")
    engine = engine if engine in readers else "auto"
    url = f"http://{meta.pod_ip}:{found[0]}{found[1]}"
    out.setdefault(url, Target(workload, engine, url, workload.model))


class TargetFinder:
    def __init__(self, resolver: Any, read_file: Callable[[int, str], str | None] | None = None) -> None:
        self.resolver = resolver
        self.read_file = read_file  # a process's config file (ProcessTable.read_process_file)
        self.static: list[Target] = []
        self.current: list[Target] = []
        self._at = -1e18

    def maybe_refresh(self, now: float, procs: dict[int, Any], on_gpu: Collection[int] = ()) -> None:
        if now - self._at >= REFRESH_S:
            self._at = now
            self.current = find(procs, self.resolver, self.static, on_gpu, self.read_file)

    def targets(self) -> list[Target]:
        return self.current
