"""Process → workload (namespace, endpoint, model), in order of trust:

1. Kubernetes pod metadata, when a pod cache is attached (container ID from the cgroup);
2. the inference server's own command line (vLLM, SGLang, TGI, Triton, llama.cpp, TRT-LLM, Ollama),
   walking up to the ancestor that carries the flags for renamed workers;
3. configured rules (regex on the command line);
4. a GPU-resident process nobody recognised: endpoint = its command name;
5. everything else: the ``system`` workload.

Results are cached per (pid, starttime): resolution is O(1) per process per sample.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Protocol, Sequence

from . import cgroup as cgroup_mod
from . import cmdline as cmdline_mod


class Workload(NamedTuple):
    """Who energy is booked to. A named tuple: it is hashed hundreds of times a sample (dict
    keys of every booking step), and tuple hashing and equality run in C."""
    namespace: str
    endpoint: str
    model: str
    pod: str = ""


SYSTEM = Workload("", "system", "")
UNALLOCATED = Workload("", "unallocated", "")


@dataclass(frozen=True)
class Rule:
    name: str                 # becomes the endpoint
    cmdline: re.Pattern[str]  # searched in the space-joined command line
    model: str = ""

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str) -> "Rule":
        try:
            return cls(str(raw["name"]), re.compile(str(raw["cmdline"])), str(raw.get("model", "")))
        except KeyError as e:
            raise ValueError(f"{where}: missing key {e.args[0]!r} (need name and cmdline)") from None
        except (re.error, OverflowError, RecursionError) as e:
            raise ValueError(f"{where}.cmdline: invalid regular expression: {e or type(e).__name__}") from None


class PodLookup(Protocol):
    def by_container_id(self, cid: str) -> Any: ...


class Resolver:
    def __init__(self, rules: Sequence[Rule] = (), pods: PodLookup | None = None) -> None:
        self.rules = list(rules)
        self.pods = pods
        self._cache: dict[tuple[int, int, int], Workload | None] = {}
        self._last: dict[int, Workload] = {}  # pid -> the workload it last resolved to (kept past its exit)
        self._new_rules: list[Rule] | None = None  # set by a reload, put in force by the sampler thread

    def set_rules(self, rules: Sequence[Rule]) -> None:
        """New rules (a configuration reload, from another thread): in force from the next
        sample, when every process is identified again."""
        self._new_rules = list(rules)

    def resolve(self, pid: int, procs: Mapping[int, Any], on_gpu: bool = False) -> Workload:
        p = procs.get(pid)
        if p is None:  # exited (or never seen): the identity it last had, if any
            last = self._last.get(pid)
            if last is not None:
                return last
            return Workload("", "unidentified", "") if on_gpu else SYSTEM
        key = (pid, p.starttime, hash(p.cmdline))  # an exec keeps pid and start time, not argv
        if key in self._cache:
            w = self._cache[key]
        else:
            w = self._identify(p, procs)
            if not self._pod_pending(p):  # a container whose pod is not in the cache yet: ask again
                self._cache[key] = w
        if w is not None:
            if self._last.get(pid) != w:
                self._last[pid] = w
            return w
        return Workload("", p.comm or "unidentified", "") if on_gpu else SYSTEM

    def matters(self, pid: int, procs: Mapping[int, Any]) -> bool:
        """Whether a process's own CPU time can matter: it belongs to a workload, or it is a
        container whose pod is not known yet. Everything else is the ``system`` remainder."""
        p = procs.get(pid)
        if p is None:
            return False
        return self.resolve(pid, procs) != SYSTEM or self._pod_pending(p)

    def _identify(self, p: Any, procs: Mapping[int, Any]) -> Workload | None:
        meta = self.pod_of(p)
        found = cmdline_mod.resolve(p.pid, procs)
        if meta is not None:
            # a pod names the endpoint; the served model is the engine's own, never a pod label's
            model = found[0].model if found is not None else meta.model
            return Workload(meta.namespace, meta.endpoint, model, meta.name)
        if found is not None:
            ident, _carrier = found
            return Workload("", ident.endpoint, ident.model)
        line = " ".join(p.cmdline)
        for rule in self.rules:
            if rule.cmdline.search(line):
                return Workload("", rule.name, rule.model)
        return None

    def _pod_pending(self, p: Any) -> bool:
        """In Kubernetes, a containerised process whose pod metadata has not arrived yet."""
        if self.pods is None or not p.cgroup:
            return False
        ref = cgroup_mod.parse_cgroup(p.cgroup)
        return ref is not None and self.pods.by_container_id(ref.container_id) is None

    def pod_of(self, p: Any) -> Any:
        """The pod metadata of a process (None outside Kubernetes or when unknown)."""
        if self.pods is None or not p.cgroup:
            return None
        ref = cgroup_mod.parse_cgroup(p.cgroup)
        return self.pods.by_container_id(ref.container_id) if ref else None

    def forget(self, live: Mapping[int, Any]) -> None:
        """Drop cache entries of processes that are gone (called once per sample, by the sampler
        thread), and put reloaded rules in force."""
        if self._new_rules is not None:
            self.rules, self._new_rules = self._new_rules, None
            self._cache = {}
        if len(self._cache) > 2 * len(live) + 64:
            self._cache = {k: v for k, v in self._cache.items()
                           if k[0] in live and live[k[0]].starttime == k[1]}
        if len(self._last) > 2 * len(live) + 64:  # exited pids' identities: kept until the map doubles
            self._last = {pid: w for pid, w in self._last.items() if pid in live}

