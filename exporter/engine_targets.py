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
         on_gpu: Collection[int] = (), config: Callable[[Any, str], Mapping[str, str] | None] | None = None,
         skipped: list[str] | None = None) -> list[Target]:
    """Every local server's metrics: one target per (process, port) of a recognised server, and
    one per annotated pod with no recognised server whose processes run on a GPU (read by the
    ``wattprint.io/engine`` annotation's reader, else ``auto``); configured targets win.
    ``config(process, path)``: the settings of a server's config file (``ConfigFiles``). A
    process whose data breaks this (hostile or odd) is left out and named in ``skipped``; the
    others are still found."""
    from .engines import READERS  # the readers (and prometheus_client's parser) only with scraping on

    out: dict[str, Target] = {}
    served_pods: set[Any] = set()
    annotated: list[tuple[Any, int]] = []
    fronted = _fronting_nims(procs)
    # the oldest process first: a later one claiming the same port cannot take over a server's URL
    for pid, p in sorted(procs.items(), key=lambda kv: (getattr(kv[1], "starttime", 0), kv[0])):
        try:
            ident = cmdline.detect(p.cmdline, getattr(p, "environ", None))
            meta = resolver.pod_of(p)
            if ident is None or ident.engine not in READERS:
                if meta is not None and pid in on_gpu:
                    annotated.append((meta, pid))
                continue
            if meta is not None:
                served_pods.add(_pod_key(meta))
            if pid in fronted:
                continue  # a NIM proxying a server process of its own: that server is read instead
            _server_targets(out, pid, p, ident, meta, procs, resolver, config, READERS)
        except Exception as e:  # noqa: BLE001 - one process's data must not stop discovery
            if skipped is not None:
                skipped.append(f"pid {pid}: {type(e).__name__}")
    for meta, pid in annotated:
        if _pod_key(meta) not in served_pods:
            try:
                _annotated(out, meta, resolver.resolve(pid, procs), READERS)
            except Exception as e:  # noqa: BLE001
                if skipped is not None:
                    skipped.append(f"pid {pid}: {type(e).__name__}")
    for t in static:
        out[t.url] = t
    return list(out.values())


def _pod_key(meta: Any) -> tuple[str, str]:
    return (getattr(meta, "namespace", ""), getattr(meta, "name", ""))


def _fronting_nims(procs: dict[int, Any]) -> set[int]:
    """NIM processes with a recognised server process below them: NIM 2.x/3.0 proxies
    ``/v1/metrics`` to its backend, which holds the GPUs, so the backend is read (requests land
    where the energy is) and the NIM is not (a request counted once)."""
    out: set[int] = set()
    for p in procs.values():
        parent = procs.get(p.ppid)
        if parent is None:
            continue
        pid_ident = cmdline.detect(parent.cmdline, getattr(parent, "environ", None))
        ident = cmdline.detect(p.cmdline, getattr(p, "environ", None))
        if pid_ident is not None and pid_ident.engine == "nim" and ident is not None and ident.engine != "nim":
            out.add(parent.pid)
    return out


def _server_targets(out: dict[str, Target], pid: int, p: Any, ident: Any, meta: Any, procs: dict[int, Any],
                    resolver: Any, config: Any, readers: Mapping[str, Any]) -> None:
    from .engines import discovery

    env = getattr(p, "environ", None)
    if not ident.scraped or cmdline.is_helper(p.cmdline, env) or _under_scraped_server(p, ident, procs):
        return  # a front end counting its workers' requests; a shard, stub, runner or child
    argv = p.cmdline
    if config is not None and (path := discovery.config_path(ident.engine, argv)):
        argv = discovery.with_config(argv, config(p, path))
    points = discovery.scrape_points(ident.engine, argv, env)  # (): metrics off
    host = ident.host or "127.0.0.1"  # a server bound to one address is reached there
    default = readers[ident.engine].metrics_path
    if meta is not None:  # reach the pod on its own IP; its annotations win where they differ
        host = meta.pod_ip or host
        found = discovery.from_annotations(meta.annotations, points[0].path or default if points else default)
        if found is not None and found[0] not in {pt.port for pt in points}:
            per_model = bool(points) and points[0].per_model
            points = (discovery.ScrapePoint(found[0], found[1], per_model=per_model),)
    workload = resolver.resolve(pid, procs)
    for point in points:
        url = f"http://{host}:{point.port}{point.path or default}"
        out.setdefault(url, Target(workload, point.engine or ident.engine, url, ident.model, point.per_model))


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


class ConfigFiles:
    """The settings of servers' config files, read and parsed off the sampler thread.

    A file is read once per (process, start time, path): a hostile process can point its
    ``--config`` at a file on a hung FUSE or NFS mount, or at a huge YAML; the read and the parse
    run on one worker thread, and the sampler waits at most ``wait_s`` for them. A file not read
    in time counts as unreadable (its metrics switch reads "may be on") until the worker is done;
    a worker stuck for good costs that one thread, never the sampler."""

    def __init__(self, read_file: Callable[[int, str], str | None], wait_s: float = 0.2) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.read_file = read_file
        self.wait_s = wait_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-config")
        self._done: dict[tuple[int, int, str], Mapping[str, str] | None] = {}
        self._pending: dict[tuple[int, int, str], Any] = {}

    def __call__(self, p: Any, path: str) -> Mapping[str, str] | None:
        from concurrent.futures import TimeoutError as FutureTimeout

        from .engines import discovery

        key = (p.pid, getattr(p, "starttime", 0), path)
        for k in [k for k, f in self._pending.items() if f.done() and k != key]:  # finished meanwhile
            fut = self._pending.pop(k)
            self._done[k] = fut.result() if fut.exception() is None else None
        if key in self._done:
            return self._done[key]
        fut = self._pending.get(key)
        if fut is None:
            if self._pending:  # the worker is busy (or stuck): no queue behind it
                return None
            fut = self._pending[key] = self._pool.submit(
                lambda: discovery.config_settings(self.read_file(p.pid, path)))
        try:
            result = fut.result(timeout=self.wait_s)
        except FutureTimeout:
            return None
        except Exception:  # noqa: BLE001 - a read or parse failure: settings unknown
            result = None
        del self._pending[key]
        self._done[key] = result
        return result

    def forget(self, live: Mapping[int, Any]) -> None:
        if len(self._done) > 2 * len(live) + 64:
            self._done = {k: v for k, v in self._done.items()
                          if k[0] in live and getattr(live[k[0]], "starttime", 0) == k[1]}


MAX_TARGETS = 64          # targets scraped at once, configured ones first
NEW_PER_MINUTE = 16       # new discovered targets admitted per minute, after a first burst of max_targets


class TargetFinder:
    """The targets the scraper reads: found every ``REFRESH_S`` by the sampler thread, and
    admitted under two bounds a local user cannot lift by starting processes: at most
    ``max_targets`` at once (configured targets first, then those already admitted, then new
    ones), and at most ``new_per_minute`` new discovered targets a minute once the first
    ``max_targets`` are in (a token bucket of that size), so that processes cycling through ports
    cannot make the daemon poll arbitrary ports at will.
    What is refused is counted by reason (``refused``) and logged once per reason."""

    def __init__(self, resolver: Any, read_file: Callable[[int, str], str | None] | None = None,
                 max_targets: int = MAX_TARGETS, new_per_minute: float = NEW_PER_MINUTE) -> None:
        self.resolver = resolver
        self.config = ConfigFiles(read_file) if read_file is not None else None
        self.static: list[Target] = []
        self.current: list[Target] = []
        self.max_targets = max_targets
        self.new_per_minute = new_per_minute
        self.refused: dict[str, int] = {"max_targets": 0, "rate": 0}
        self.over = 0  # targets found but not scraped at the last refresh
        self._tokens = float(max_targets)
        self._at = -1e18
        self._warned: set[str] = set()
        self.skipped = 0  # processes whose data broke discovery (hostile or odd), for ever
        self.up_urls: Callable[[], Collection[str]] = frozenset  # the scraper's answering targets

    def maybe_refresh(self, now: float, procs: dict[int, Any], on_gpu: Collection[int] = ()) -> None:
        if now - self._at >= REFRESH_S:
            elapsed = now - self._at if self._at > -1e17 else 0.0
            self._at = now
            self._tokens = min(float(self.max_targets), self._tokens + elapsed * self.new_per_minute / 60.0)
            skipped: list[str] = []
            self.current = self._admit(find(procs, self.resolver, self.static, on_gpu, self.config, skipped))
            if skipped:
                self.skipped += len(skipped)
                self._warn_once("skipped", "engine discovery left out %s (its command line, environment "
                                "or config file could not be read as a server's)", ", ".join(skipped[:5]))
            if self.config is not None:
                self.config.forget(procs)

    def _admit(self, found: list[Target]) -> list[Target]:
        static = {t.url for t in self.static}
        before = {t.url for t in self.current}
        up = set(self.up_urls())
        # configured, then answering, then new, then admitted but not answering: processes posing
        # as servers cannot squat the places a real server (or one restarting) needs
        ordered = sorted(found, key=lambda t: (t.url not in static, t.url not in up,
                                               t.url in before and t.url not in up))
        out: list[Target] = []
        over = 0
        for t in ordered:
            if len(out) >= self.max_targets:
                over += 1
                self._refuse("max_targets", t)
                continue
            if t.url not in static and t.url not in before:
                if self._tokens < 1.0:
                    over += 1
                    self._refuse("rate", t)
                    continue
                self._tokens -= 1.0
            out.append(t)
        self.over = over
        return out

    def _refuse(self, reason: str, t: Target) -> None:
        self.refused[reason] += 1
        self._warn_once(reason, "engine target %s not scraped (%s: at most %d targets, %g new a minute); "
                        "counted in wattprint_engine_targets_refused_total", t.url, reason, self.max_targets,
                        self.new_per_minute)

    def _warn_once(self, what: str, msg: str, *args: Any) -> None:
        if what not in self._warned:
            self._warned.add(what)
            import logging

            logging.getLogger(__name__).warning(msg, *args)

    def targets(self) -> list[Target]:
        return self.current

    def contribute(self, snap: Any) -> None:
        snap.set("engine_targets", (), float(len(self.current)))
        for reason, n in self.refused.items():
            snap.set("engine_targets_refused_total", (reason,), float(n))
        snap.set("engine_targets_refused_total", ("unreadable",), float(self.skipped))
