"""PodResourcesClient against a real gRPC server on a unix socket (the kubelet's role)."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent import futures
from pathlib import Path

import pytest

grpc = pytest.importorskip("grpc")

from exporter.identity import podresources  # noqa: E402
from exporter.identity.podresources import (  # noqa: E402
    DeviceAssignment,
    PodResourcesClient,
    PodResourcesError,
)
from exporter.identity.podresources_pb import api_pb2, api_pb2_grpc  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GPU0 = "GPU-6f1c2a3b-4d5e-6f70-8192-a3b4c5d6e7f8"
GPU1 = "GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"
MIG = "MIG-1d2e3f40-5162-7384-95a6-b7c8d9e0f1a2"


def response() -> api_pb2.ListPodResourcesResponse:
    P, C, D = api_pb2.PodResources, api_pb2.ContainerResources, api_pb2.ContainerDevices
    topo = api_pb2.TopologyInfo(nodes=[api_pb2.NUMANode(ID=0)])
    return api_pb2.ListPodResourcesResponse(pod_resources=[
        P(name="llama-3-8b-predictor-7d9f8b6c5d-x2x7q", namespace="models", containers=[
            C(name="storage-initializer"),
            C(name="kserve-container", cpu_ids=[2, 3],
              devices=[D(resource_name="nvidia.com/gpu", device_ids=[GPU0], topology=topo)]),
        ]),
        P(name="small-embedder-0", namespace="models", containers=[
            C(name="tei", devices=[D(resource_name="nvidia.com/mig-1g.10gb", device_ids=[MIG])]),
        ]),
        # time-slicing: two replicas of the same GPU given to one container
        P(name="shared-a", namespace="dev", containers=[
            C(name="app", devices=[D(resource_name="nvidia.com/gpu",
                                     device_ids=[f"{GPU1}::0", f"{GPU1}::3"])]),
        ]),
        P(name="sriov-router", namespace="net", containers=[
            C(name="r", devices=[D(resource_name="intel.com/sriov_netdevice",
                                   device_ids=["0000:3b:02.1"])]),
        ]),
        P(name="coredns-5d78c9869d-abcde", namespace="kube-system", containers=[C(name="coredns")]),
        # ROCm's device plugin: amd.com/gpu devices are PCI addresses (ROCm/k8s-device-plugin
        # internal/pkg/amdgpu/amdgpu.go GetAMDGPUs: the base name of pci:amdgpu/0000:19:00.0)
        P(name="llama-70b-0", namespace="models", containers=[
            C(name="vllm", devices=[D(resource_name="amd.com/gpu", device_ids=["0000:05:00.0", "0000:25:00.0"])]),
        ]),
    ])


class Kubelet(api_pb2_grpc.PodResourcesListerServicer):
    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls = 0

    def List(self, request, context):  # noqa: N802 - gRPC method name
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        return response()


def serve(sock: Path, servicer) -> "grpc.Server":
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(servicer, server)
    assert server.add_insecure_port(f"unix://{sock}")
    server.start()
    return server


@pytest.fixture
def sockdir():
    # short path (unix sockets are limited to ~107 bytes), world-traversable like
    # /var/lib/kubelet/pod-resources
    d = tempfile.mkdtemp(prefix="wp-pr-")
    os.chmod(d, 0o755)
    yield Path(d)
    for p in Path(d).iterdir():
        p.unlink()
    os.rmdir(d)


def test_generated_stubs_speak_the_kubelet_service_name():
    svc = api_pb2.DESCRIPTOR.services_by_name["PodResourcesLister"]
    assert svc.full_name == "v1.PodResourcesLister"
    assert set(svc.methods_by_name) >= {"List", "GetAllocatableResources", "Get"}
    assert podresources.LIST_METHOD == "/v1.PodResourcesLister/List"
    assert podresources.GRPC_AVAILABLE


def test_list_returns_gpu_assignments(sockdir):
    sock = sockdir / "kubelet.sock"
    kubelet = Kubelet()
    server = serve(sock, kubelet)
    try:
        with PodResourcesClient(str(sock)) as client:
            assert client.state == "not listed yet"
            got = client.list()
            assert client.state == "ok"
            assert got == [
                DeviceAssignment("models", "llama-3-8b-predictor-7d9f8b6c5d-x2x7q",
                                 "kserve-container", "nvidia.com/gpu", GPU0),
                DeviceAssignment("models", "small-embedder-0", "tei",
                                 "nvidia.com/mig-1g.10gb", MIG),
                DeviceAssignment("dev", "shared-a", "app", "nvidia.com/gpu", GPU1),
                DeviceAssignment("models", "llama-70b-0", "vllm", "amd.com/gpu", "0000:05:00.0"),
                DeviceAssignment("models", "llama-70b-0", "vllm", "amd.com/gpu", "0000:25:00.0"),
            ]
            assert client.list() == got and kubelet.calls == 2  # channel reused
        other = PodResourcesClient(str(sock), resource_prefixes=("intel.com/",)).list()
        assert [a.device_id for a in other] == ["0000:3b:02.1"]
    finally:
        server.stop(None)


def test_pci_addresses_are_normalised_like_amdsmi_formats_them():
    assert podresources.normalize_device_id("0000:C1:00.0") == "0000:c1:00.0"
    assert podresources.normalize_device_id("amdgpu_xcp_30") == "amdgpu_xcp_30"   # an MI300 partition
    assert podresources.normalize_device_id(f"{GPU1}::2") == GPU1


def test_missing_socket(tmp_path):
    client = PodResourcesClient(str(tmp_path / "nope.sock"))
    with pytest.raises(PodResourcesError, match="socket not found"):
        client.list()
    assert "socket not found" in client.state


def test_not_a_socket(tmp_path):
    f = tmp_path / "kubelet.sock"
    f.write_text("")
    with pytest.raises(PodResourcesError, match="not a unix socket"):
        PodResourcesClient(str(f)).list()


def test_unimplemented(sockdir):
    sock = sockdir / "kubelet.sock"
    server = serve(sock, api_pb2_grpc.PodResourcesListerServicer())  # List not implemented
    try:
        client = PodResourcesClient(str(sock))
        with pytest.raises(PodResourcesError, match="UNIMPLEMENTED"):
            client.list()
        assert "UNIMPLEMENTED" in client.state
    finally:
        server.stop(None)


def test_deadline_exceeded(sockdir):
    sock = sockdir / "kubelet.sock"
    server = serve(sock, Kubelet(delay_s=1.0))
    try:
        client = PodResourcesClient(str(sock), timeout_s=0.2)
        t0 = time.monotonic()
        with pytest.raises(PodResourcesError, match="deadline exceeded"):
            client.list()
        assert time.monotonic() - t0 < 0.9
    finally:
        server.stop(None)


def test_dead_socket_is_unavailable(sockdir):
    sock = sockdir / "kubelet.sock"
    server = serve(sock, Kubelet())
    server.stop(None).wait()  # grpc removes nothing: a stale socket file stays behind
    if not sock.exists():
        import socket as s
        stale = s.socket(s.AF_UNIX)
        stale.bind(str(sock))
        stale.close()
    with pytest.raises(PodResourcesError, match="unavailable"):
        PodResourcesClient(str(sock), timeout_s=1).list()


def test_permission_denied(sockdir):
    sock = sockdir / "kubelet.sock"
    server = serve(sock, Kubelet())
    try:
        os.chmod(sock, 0o755)  # root may write; others may not
        if os.geteuid() != 0:
            os.chmod(sock, 0o000)
            with pytest.raises(PodResourcesError, match="permission denied"):
                PodResourcesClient(str(sock)).list()
            return
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("no 'nobody' user to drop privileges to")
        # Root bypasses file modes: check from a forked child that drops to nobody.
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: no pytest machinery, report through the pipe, _exit
            msg = "no error"
            try:
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                PodResourcesClient(str(sock), timeout_s=1).list()
            except PodResourcesError as e:
                msg = f"ERR {e}"
            except BaseException as e:  # noqa: BLE001
                msg = f"OTHER {type(e).__name__}: {e}"
            os.write(w, msg.encode()[:4000])
            os._exit(0)
        os.close(w)
        deadline = time.monotonic() + 20
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                pytest.fail("child did not finish")
            time.sleep(0.02)
        msg = os.read(r, 4096).decode()
        os.close(r)
        if msg.startswith("OTHER PermissionError"):
            pytest.skip(f"cannot drop privileges here: {msg}")
        assert msg.startswith("ERR permission denied"), msg
    finally:
        server.stop(None)


def test_without_grpcio_state_says_so():
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "grpc" or name.startswith("grpc."):
                    raise ImportError("blocked", name=name)
        sys.meta_path.insert(0, Block())
        from exporter.identity.podresources import PodResourcesClient, PodResourcesError
        c = PodResourcesClient("/nonexistent.sock")
        print("STATE", c.state)
        try:
            c.list()
        except PodResourcesError as e:
            print("ERR", e)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert "STATE grpcio not installed" in out.stdout, out.stderr
    assert "ERR grpcio not installed" in out.stdout


def test_concurrent_lists_share_one_channel(sockdir):
    sock = sockdir / "kubelet.sock"
    kubelet = Kubelet()
    server = serve(sock, kubelet)
    try:
        client = PodResourcesClient(str(sock))
        results: list = []
        threads = [threading.Thread(target=lambda: results.append(len(client.list())))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [5, 5, 5, 5] and kubelet.calls == 4   # 3 NVIDIA assignments, 2 AMD
        client.close()
    finally:
        server.stop(None)
