"""Tests of exporter.identity.cgroup: container and pod from /proc/<pid>/cgroup text."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.identity.cgroup import QOS_CLASSES, RUNTIMES, ContainerRef, parse_cgroup

CID = "f0eb818dfca38ec64825efe94737f173fa434b77b1ddccdb2a1739d860afc366"
OUTER = "2ffccadc07408f3c8a4d7bdc3909986818667797b4b94abe654c322ee681269f"
OTHER = "4d703b14d607b072032edc43e399d84549e16e44e8ab92488012223acbe766bd"
UID = "5c1a5b2e-8f3d-4c7a-9e21-0b6f4d2a7c19"
U_ = UID.replace("-", "_")  # how systemd slice names spell it
STATIC_UID = "8e1c5f0b2a7d4e9c6b3a1f0e9d8c7b6a"  # kubelet's hash for static (mirror) pods


def v1(path: str, *, root_lines: int = 0) -> str:
    """A cgroup v1 /proc/<pid>/cgroup: one line per controller, ``root_lines`` of them at /."""
    controllers = ["misc", "rdma", "pids", "hugetlb", "net_prio", "perf_event", "net_cls",
                   "freezer", "devices", "memory", "blkio", "cpuacct", "cpu", "cpuset"]
    lines = [f"{13 - i}:{c}:{'/' if i < root_lines else path}" for i, c in enumerate(controllers)]
    return "\n".join([*lines, f"1:name=systemd:{path}", f"0::{path}", ""])


def ref(runtime: str, pod_uid: str | None = None, qos: str | None = None, cid: str = CID):
    return ContainerRef(runtime, cid, pod_uid, qos)


KUBEPODS = "/kubepods.slice"
BURSTABLE = f"{KUBEPODS}/kubepods-burstable.slice/kubepods-burstable-pod{U_}.slice"
BESTEFFORT = f"{KUBEPODS}/kubepods-besteffort.slice/kubepods-besteffort-pod{U_}.slice"
GUARANTEED = f"{KUBEPODS}/kubepods-pod{U_}.slice"

CASES = [
    # containerd (systemd driver, cgroup v2 and v1; containerd's own v1 systemd spelling; nerdctl)
    (f"0::{BURSTABLE}/cri-containerd-{CID}.scope\n", ref("containerd", UID, "burstable")),
    (f"0::{GUARANTEED}/cri-containerd-{CID}.scope", ref("containerd", UID, "guaranteed")),
    (v1(f"{BESTEFFORT}/cri-containerd-{CID}.scope"), ref("containerd", UID, "besteffort")),
    (v1(f"/system.slice/containerd.service/kubepods-burstable-pod{U_}.slice:cri-containerd:{CID}"),
     ref("containerd", UID, "burstable")),
    (f"0::{KUBEPODS}/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/"
     f"cri-containerd-{CID}.scope", ref("containerd", STATIC_UID, "burstable")),
    (f"0::/system.slice/nerdctl-{CID}.scope", ref("containerd")),
    # CRI-O (systemd v2 and v1, cgroupfs)
    (f"0::{BESTEFFORT}/crio-{CID}.scope", ref("cri-o", UID, "besteffort")),
    (v1(f"{BURSTABLE}/crio-{CID}.scope"), ref("cri-o", UID, "burstable")),
    (f"0::/kubepods/burstable/pod{UID}/crio-{CID}", ref("cri-o", UID, "burstable")),
    # Docker (standalone, v2 and v1; dockershim under kubelet)
    (f"0::/system.slice/docker-{CID}.scope", ref("docker")),
    (v1(f"/docker/{CID}"), ref("docker")),
    (f"0::{BESTEFFORT}/docker-{CID}.scope", ref("docker", UID, "besteffort")),
    # Podman (rootless under user.slice, rootful under machine.slice, v1 cgroupfs)
    (f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope/container",
     ref("podman")),
    (f"0::/machine.slice/libpod-{CID}.scope", ref("podman")),
    (v1(f"/libpod_parent/libpod-{CID}"), ref("podman")),
    # cgroupfs driver: the runtime is not visible
    (v1(f"/kubepods/burstable/pod{UID}/{CID}"), ref("unknown", UID, "burstable")),
    (f"0::/kubepods/pod{UID}/{CID}", ref("unknown", UID, "guaranteed")),
    (f"0::/kubepods/besteffort/pod{UID}/{CID.upper()}", ref("unknown", UID, "besteffort")),
    # kind: a pod's container inside a docker "node" container: the innermost wins
    (f"0::/system.slice/docker-{OUTER}.scope/kubelet.slice/kubelet-kubepods.slice/"
     f"kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{U_}.slice/"
     f"cri-containerd-{CID}.scope", ref("containerd", UID, "burstable")),
    # a pod slice inside a container, without a container of its own, is the outer container's
    (f"0::/docker/{OUTER}/kubepods/burstable/pod{UID}", ref("docker", cid=OUTER)),
    # v1: the first line that names a container wins; lines at / are skipped
    (v1(f"/kubepods/burstable/pod{UID}/{CID}", root_lines=5), ref("unknown", UID, "burstable")),
    (f"12:memory:/docker/{CID}\n11:cpu:/docker/{OTHER}\n", ref("docker")),
    (f"12:memory:/\n11:cpu:/user.slice\n10:pids:/docker/{CID}\n", ref("docker")),
]

NOT_CONTAINERS = [
    "0::/user.slice/user-1000.slice/session-3.scope\n",
    "0::/init.scope\n",
    "0::/\n",
    "0::/system.slice/containerd.service\n",
    v1("/user.slice/user-1000.slice/session-1.scope"),
    f"0::{BURSTABLE}\n",  # the pod's own slice: no container
    f"0::{BURSTABLE}/crio-conmon-{CID}.scope",  # CRI-O's monitor, not the container
    f"0::/machine.slice/libpod-conmon-{CID}.scope",
    f"0::/docker/{CID[:63]}",  # 63 hex characters: not an id
    f"0::/docker/{CID}0",
    f"0::/docker/{CID[:-1]}g",
    f"/docker/{CID}",  # not a cgroup line
    "",
    "hello",
    "::::",
    "\x00\x00\n\n",
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_parse_cgroup(text, expected):
    assert parse_cgroup(text) == expected


@pytest.mark.parametrize("text", NOT_CONTAINERS)
def test_non_container_processes_are_none(text):
    assert parse_cgroup(text) is None


@pytest.mark.parametrize("value", [None, b"0::/docker/" + CID.encode(), 42, ["0::/"]])
def test_non_text_input_is_none(value):
    assert parse_cgroup(value) is None


def test_every_runtime_is_covered():
    assert {expected.runtime for _, expected in CASES} == set(RUNTIMES)


# --- fuzz --------------------------------------------------------------------------------------------

HEX64 = re.compile(r"[0-9a-f]{64}")
POD_UID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}")

SEGMENTS = [
    "kubepods.slice", "kubepods-burstable.slice", "kubepods-besteffort.slice", "kubepods",
    "burstable", "besteffort", f"kubepods-burstable-pod{U_}.slice", f"kubepods-pod{U_}.slice",
    f"pod{UID}", f"pod{STATIC_UID}", f"cri-containerd-{CID}.scope", f"crio-{CID}.scope",
    f"crio-conmon-{CID}.scope", f"docker-{OUTER}.scope", "docker", CID, OTHER, f"libpod-{CID}.scope",
    "libpod_parent", "system.slice", "user.slice", "init.scope", "cri-containerd", "pod", "",
    "pod_", f"pod{U_}_", f"{U_}.slice",
]
paths = st.lists(st.one_of(st.sampled_from(SEGMENTS), st.text(max_size=12)), max_size=8).map(
    lambda parts: "/" + "/".join(parts)
)
lines = st.one_of(
    st.builds(lambda n, c, path: f"{n}:{c}:{path}", st.integers(0, 13),
              st.sampled_from(["", "memory", "cpu,cpuacct", "name=systemd"]), paths),
    st.text(max_size=40),
)
texts = st.one_of(st.text(), st.lists(lines, max_size=6).map("\n".join))


@settings(max_examples=500)
@given(texts)
def test_parse_cgroup_never_raises_and_is_well_formed(text):
    found = parse_cgroup(text)
    if found is None:
        return
    assert found.runtime in RUNTIMES
    assert HEX64.fullmatch(found.container_id)
    assert found.container_id in text.lower()
    assert found.pod_uid is None or POD_UID.fullmatch(found.pod_uid)
    assert found.qos is None or found.qos in QOS_CLASSES
    assert found.pod_uid is not None or found.qos is None
