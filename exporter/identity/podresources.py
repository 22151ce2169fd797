"""GPU → pod from the kubelet pod-resources API (gRPC on a unix socket).

The kubelet serves `v1.PodResourcesLister/List` on /var/lib/kubelet/pod-resources/kubelet.sock
(dcgm-exporter maps GPUs to pods the same way). Each device-plugin device assigned to a
container comes back as `resource_name` + `device_ids`; for the NVIDIA device plugin these
are GPU UUIDs ("GPU-…") or, with MIG, MIG device ids. ROCm's device plugin (`amd.com/gpu`,
ROCm/k8s-device-plugin internal/pkg/amdgpu/amdgpu.go `GetAMDGPUs`) names each GPU by its PCI
address, the base name of /sys/module/amdgpu/drivers/pci:amdgpu/0000:19:00.0; the sampler maps
it to the GPU's UUID through amdsmi's `amdsmi_get_gpu_device_bdf` (the same lowercase form).
Its MI300 partition devices (`amdgpu_xcp_*` platform devices) have no PCI address of their own
and are not mapped.

grpcio/protobuf are optional: without them `PodResourcesClient.state` is
"grpcio not installed" and `list()` raises PodResourcesError with that message.
The call is synchronous and bounded by `timeout_s`; call it from the sampling thread or an
executor, once per refresh, not per scrape.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from dataclasses import dataclass
from typing import Iterable

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
LIST_METHOD = "/v1.PodResourcesLister/List"
_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

_IMPORT_ERROR: str | None
try:
    import grpc
except ImportError:
    grpc = None  # type: ignore[assignment]
    _IMPORT_ERROR = "grpcio not installed"
else:
    try:
        from exporter.identity.podresources_pb import api_pb2, api_pb2_grpc
        _IMPORT_ERROR = None
    except ImportError as e:  # protobuf missing
        _IMPORT_ERROR = f"protobuf not installed ({e.name or e})"
    except Exception as e:  # noqa: BLE001 - protobuf VersionError / grpc RuntimeError (too old)
        _IMPORT_ERROR = f"grpcio/protobuf too old for the generated stubs: {e}"

GRPC_AVAILABLE = _IMPORT_ERROR is None


class PodResourcesError(RuntimeError):
    """The kubelet pod-resources API could not be read; the message says why."""


@dataclass(frozen=True)
class DeviceAssignment:
    namespace: str
    pod: str
    container: str
    resource_name: str
    device_id: str  # GPU UUID ("GPU-…"), MIG device id, or PCI address (AMD: "0000:19:00.0")


_PCI_ADDRESS = re.compile(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]")


def normalize_device_id(device_id: str) -> str:
    """Drop a time-slicing replica suffix ('GPU-…::3' → 'GPU-…') so ids match NVML UUIDs; a PCI
    address in lowercase, as amdsmi formats it."""
    device_id = device_id.split("::", 1)[0]
    return device_id.lower() if _PCI_ADDRESS.fullmatch(device_id) else device_id


class PodResourcesClient:
    def __init__(
        self,
        socket_path: str = DEFAULT_SOCKET,
        timeout_s: float = 2.0,
        resource_prefixes: Iterable[str] = ("nvidia.com/", "amd.com/"),
    ) -> None:
        self.socket_path = socket_path
        self.timeout_s = float(timeout_s)
        self.resource_prefixes = tuple(resource_prefixes)
        self.state = _IMPORT_ERROR or "not listed yet"
        self._channel = None
        self._lock = threading.Lock()

    # -------------------------------------------------------------- public

    def list(self) -> list[DeviceAssignment]:
        try:
            out = self._list()
        except PodResourcesError as e:
            self.state = str(e)
            raise
        self.state = "ok"
        return out

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None

    def __enter__(self) -> "PodResourcesClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- internals

    def _preflight(self) -> None:
        path = self.socket_path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise PodResourcesError(
                f"pod-resources socket not found at {path}: mount the host's "
                "/var/lib/kubelet/pod-resources into the exporter (hostPath)"
            ) from None
        except PermissionError:
            raise PodResourcesError(
                f"permission denied reaching {path}: the exporter cannot traverse its directory"
            ) from None
        if not stat.S_ISSOCK(st.st_mode):
            raise PodResourcesError(f"{path} is not a unix socket")
        if not os.access(path, os.R_OK | os.W_OK):
            raise PodResourcesError(
                f"permission denied on {path}: connecting needs write access to the socket "
                "(the kubelet creates it root-owned, mode 0755 or stricter)"
            )

    def _stub(self):
        with self._lock:
            if self._channel is None:
                target = "unix://" + os.path.abspath(self.socket_path)
                self._channel = grpc.insecure_channel(
                    target, options=[("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES)]
                )
            return api_pb2_grpc.PodResourcesListerStub(self._channel)

    def _list(self) -> list[DeviceAssignment]:
        if _IMPORT_ERROR is not None:
            raise PodResourcesError(_IMPORT_ERROR)
        self._preflight()
        try:
            resp = self._stub().List(api_pb2.ListPodResourcesRequest(), timeout=self.timeout_s)
        except grpc.RpcError as e:
            raise self._error(e) from None
        out: list[DeviceAssignment] = []
        seen: set[DeviceAssignment] = set()
        for pod in resp.pod_resources:
            for c in pod.containers:
                for dev in c.devices:
                    if not dev.resource_name.startswith(self.resource_prefixes):
                        continue
                    for raw in dev.device_ids:
                        a = DeviceAssignment(
                            pod.namespace, pod.name, c.name, dev.resource_name,
                            normalize_device_id(raw),
                        )
                        if a not in seen:
                            seen.add(a)
                            out.append(a)
        return out

    def _error(self, e: "grpc.RpcError") -> PodResourcesError:
        code = e.code() if hasattr(e, "code") else None
        details = (e.details() if hasattr(e, "details") else "") or ""
        name = getattr(code, "name", str(code))
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            msg = (f"kubelet pod-resources List did not answer within {self.timeout_s:g}s "
                   "(deadline exceeded)")
        elif code == grpc.StatusCode.UNIMPLEMENTED:
            msg = (f"kubelet does not implement {LIST_METHOD} (UNIMPLEMENTED): the kubelet is "
                   "too old for the v1 pod-resources API or the API is disabled")
        elif code == grpc.StatusCode.UNAVAILABLE:
            self.close()  # don't sit in the channel's reconnect back-off after a kubelet restart
            if "permission denied" in details.lower():
                msg = f"permission denied connecting to {self.socket_path}: {details}"
            else:
                msg = f"kubelet pod-resources socket {self.socket_path} unavailable: {details}"
        else:
            msg = f"kubelet pod-resources List failed: {name}: {details}"
        return PodResourcesError(msg)
