"""Kubernetes identity for the sampler, kept current in the background, read from memory.

- Pod metadata by container ID: a node-scoped list+watch (``PodCache``), never one API call per
  sample or per scrape.
- GPU → pod: the kubelet pod-resources socket (``v1.PodResourcesLister/List``) when mounted,
  refreshed every ``refresh_s``. A GPU allocated to a pod belongs to that pod's endpoint even when
  its processes are invisible (no hostPID) or it has none yet (reserved, idle).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any

from .resolver import Workload

if TYPE_CHECKING:
    from ..config import KubernetesConfig

log = logging.getLogger(__name__)


class Cluster:
    def __init__(self, pods: Any, podres: Any = None, refresh_s: float = 30.0) -> None:
        self.pods = pods            # PodCache
        self.podres = podres        # PodResourcesClient or None
        self.refresh_s = refresh_s
        self.gpu_owners: dict[str, Workload] = {}   # GPU UUID -> workload (swapped whole)
        self.podres_state = "not configured" if podres is None else "starting"

    def by_container_id(self, cid: str) -> Any:
        return self.pods.by_container_id(cid)

    async def run(self) -> None:
        tasks = [asyncio.create_task(self.pods.run(), name="pod-cache")]
        if self.podres is not None:
            tasks.append(asyncio.create_task(self._refresh_owners(), name="pod-resources"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    async def _refresh_owners(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                assignments = await loop.run_in_executor(None, self.podres.list)
                self.gpu_owners = self._owners(assignments)
                self._state("ok")
            except Exception as e:  # PodResourcesError and friends: keep the last map, retry
                self._state(str(e))
            await asyncio.sleep(self.refresh_s)

    def _owners(self, assignments: list[Any]) -> dict[str, Workload]:
        by_name = {(m.namespace, m.name): m for m in self.pods.pods()}
        out = {}
        for a in assignments:
            meta = by_name.get((a.namespace, a.pod))
            out[a.device_id] = (Workload(meta.namespace, meta.endpoint, meta.model, meta.name) if meta
                                else Workload(a.namespace, a.pod, "", a.pod))
        return out

    def _state(self, state: str) -> None:
        if state != self.podres_state:
            (log.info if state == "ok" else log.warning)("kubelet pod-resources: %s", state)
        self.podres_state = state


def open_cluster(cfg: "KubernetesConfig") -> Cluster | None:
    """The cluster identity the configuration asks for, or None outside Kubernetes."""
    if not cfg.wanted():
        return None
    from .kubernetes import PodCache

    node = cfg.node_name or os.environ.get("NODE_NAME", "")
    kw: dict[str, Any] = {"model_labels": cfg.model_labels}
    if cfg.api_url:
        pods = PodCache(cfg.api_url, node, cfg.token_file, cfg.ca_file, **kw)
    else:
        if cfg.token_file:
            kw["token_file"] = cfg.token_file
        if cfg.ca_file:
            kw["ca_file"] = cfg.ca_file
        pods = PodCache.in_cluster(node, **kw)
    podres = None
    if os.path.exists(cfg.pod_resources_socket):  # grpc (~20 MB) is imported only where there is a kubelet
        from .podresources import PodResourcesClient

        podres = PodResourcesClient(cfg.pod_resources_socket)
    return Cluster(pods, podres)
