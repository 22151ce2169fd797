"""Which container (and Kubernetes pod) a process runs in, from the text of /proc/<pid>/cgroup.

Shapes understood, cgroup v1 (``N:controllers:/path``, many lines) and v2 (``0::/path``):
- kubelet, systemd driver: ``/kubepods.slice/kubepods-burstable.slice/
  kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`` (also ``crio-``,
  ``docker-``; Guaranteed pods sit directly under ``kubepods.slice`` as ``kubepods-pod<uid>.slice``)
- kubelet, cgroupfs driver: ``/kubepods/burstable/pod<uid>/<id>`` (runtime not visible: "unknown")
- containerd's v1 systemd form: ``/system.slice/containerd.service/kubepods-…-pod<uid>.slice:
  cri-containerd:<id>``
- docker ``/system.slice/docker-<id>.scope`` or ``/docker/<id>``; podman ``libpod-<id>.scope``
  (rootful under machine.slice, rootless under user.slice) or ``/libpod_parent/libpod-<id>``;
  nerdctl ``nerdctl-<id>.scope``
- nested (kind, Kubernetes in docker): the innermost container and pod win.
Anything else (``/user.slice/…``, ``/init.scope``, ``/``, conmon monitors, garbage) is None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

RUNTIMES = ("containerd", "cri-o", "docker", "podman", "unknown")
QOS_CLASSES = ("guaranteed", "burstable", "besteffort")


@dataclass(frozen=True)
class ContainerRef:
    runtime: str  # one of RUNTIMES
    container_id: str  # 64 lowercase hex characters
    pod_uid: str | None  # Kubernetes pod UID, dashed (systemd slices spell it with underscores)
    qos: str | None  # Kubernetes QoS class, when the path shows the pod


# Prefix of a container's own cgroup (``<prefix>-<id>.scope``) or the directory/segment just
# above a bare id (``/docker/<id>``, ``…slice:cri-containerd:<id>``) → runtime.
_RUNTIME_OF = {
    "cri-containerd": "containerd",
    "nerdctl": "containerd",
    "crio": "cri-o",
    "docker": "docker",
    "libpod": "podman",
}
_CONTAINER = re.compile(r"(?:([a-z-]+)-)?([0-9a-f]{64})(?:\.scope)?", re.IGNORECASE)
_POD = re.compile(r"(?:.*-)?pod([0-9a-f_-]{32,36})(?:\.slice)?", re.IGNORECASE)
# a dashed UUID, or the 32-hex hash kubelet gives static pods
_UID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}")


def _pod(segment: str, parent: str) -> tuple[str, str | None] | None:
    """(pod UID, QoS class) when ``segment`` is a pod's cgroup."""
    match = _POD.fullmatch(segment)
    uid = match.group(1).replace("_", "-").lower() if match else ""
    if not _UID.fullmatch(uid):
        return None
    context = f"{parent}/{segment}".lower()
    qos = next((q for q in ("burstable", "besteffort") if q in context), None)
    return uid, qos or ("guaranteed" if "kubepods" in context else None)


def _parse_path(path: str) -> ContainerRef | None:
    """The innermost container on ``path``, with the nearest pod enclosing it."""
    # ``a.slice:cri-containerd:<id>`` (containerd's v1 systemd form) splits like ``/``
    segments = [s for s in re.split(r"[/:]", path) if s]
    found = None
    pod: tuple[str, str | None] | None = None
    for parent, segment in zip(["", *segments], segments):
        if (match := _CONTAINER.fullmatch(segment)) is None:
            pod = _pod(segment, parent) or pod
            continue
        prefix, cid = match.groups()
        runtime = _RUNTIME_OF.get((prefix or parent).lower(), None if prefix else "unknown")
        if runtime is not None:  # None: ``crio-conmon-<id>`` etc., the runtime's monitor
            found = ContainerRef(runtime, cid.lower(), *(pod or (None, None)))
    return found


def parse_cgroup(text: str) -> ContainerRef | None:
    """The container of the first line of /proc/<pid>/cgroup that names one; None for a process
    outside containers, a cgroup namespace that hides the path (``0::/``), or unparseable text."""
    return _parse_text(text) if isinstance(text, str) else None


@lru_cache(maxsize=4096)  # the same few texts come back every sample
def _parse_text(text: str) -> ContainerRef | None:
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and (ref := _parse_path(parts[2])) is not None:
            return ref
    return None
