"""Node-scoped pod metadata cache (Kubernetes API server: one list, then one long watch).

Lookups (`by_pod_uid`, `by_container_id`) are dictionary reads. The API server sees one
list per (re)sync, one long-lived watch at a time and at most one GET per owner ReplicaSet,
never a request per scrape or per sample: per-scrape lookups took down API servers in
Kepler #2366 and hit client-side throttling in dcgm-exporter PR #552.

Protocol, as client-go's reflector does it:
  1. LIST /api/v1/pods?fieldSelector=spec.nodeName=<node>&resourceVersion=0 (served from the
     API server's watch cache). After a 410 Gone the re-list omits resourceVersion (a
     consistent read), so the cache never goes back in time.
  2. WATCH from the list's resourceVersion with allowWatchBookmarks=true and
     timeoutSeconds≈resync_s. A clean end of the stream resumes the watch from the last
     resourceVersion seen (events and BOOKMARKs both advance it). A 410 Gone (HTTP or an
     ERROR event), a dropped connection or a hang re-lists.
  3. Failures (5xx, 401/403, connection errors, timeouts, drops) back off exponentially
     with jitter; the back-off is reset only once a watch has delivered something, so a
     list that succeeds followed by a watch that fails cannot loop tightly.
The bearer token is re-read from its file on every 401 and at least once a minute (bound
service-account tokens rotate); it is never logged and never appears in `stats()`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import ssl
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import quote, urlencode

import aiohttp
import yarl

log = logging.getLogger(__name__)

DEFAULT_MODEL_LABELS: tuple[str, ...] = (
    "serving.kserve.io/inferenceservice",
    "llm-d.ai/model",
)
ANNOTATION_ALLOWLIST: tuple[str, ...] = (
    "prometheus.io/port",
    "prometheus.io/path",
    "prometheus.io/scrape",
    "wattprint.io/engine",
    "wattprint.io/budget-grams-per-request",  # the endpoint's own budget (pipeline/budgets.py)
    "wattprint.io/owner",
)
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_MAX_AGE_S = 60.0
USER_AGENT = "wattprint-podcache"


class PodCacheError(RuntimeError):
    """Configuration errors (e.g. not running in a cluster)."""


@dataclass(frozen=True)
class PodMeta:
    uid: str
    namespace: str
    name: str
    endpoint: str
    model: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    containers: Mapping[str, str] = field(default_factory=dict, hash=False)
    container_ports: Mapping[str, tuple[int, ...]] = field(default_factory=dict, hash=False)
    pod_ip: str = ""   # status.podIP: where the node reaches the pod's inference server metrics


# --------------------------------------------------------------------------- pure helpers


def normalize_container_id(cid: str) -> str:
    """'containerd://abc…' / 'cri-o://…' / 'docker://…' → 'abc…' (lower case)."""
    cid = (cid or "").strip()
    if "://" in cid:
        cid = cid.split("://", 1)[1]
    return cid.lower()


def normalize_pod_uid(uid: str) -> str:
    """Pod UIDs as written by the systemd cgroup driver use '_' for '-'."""
    return (uid or "").strip().lower().replace("_", "-")


def _controller_ref(meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
    refs = meta.get("ownerReferences") or []
    for ref in refs:
        if ref.get("controller"):
            return ref
    return refs[0] if refs else None


def strip_template_hash(rs_name: str, labels: Mapping[str, str]) -> str:
    """Deployment name from a ReplicaSet name, using the pod's pod-template-hash label."""
    h = labels.get(POD_TEMPLATE_HASH_LABEL)
    if h and rs_name.endswith("-" + h):
        return rs_name[: -(len(h) + 1)]
    return rs_name


def owner_replicaset(pod: Mapping[str, Any]) -> str | None:
    ref = _controller_ref(pod.get("metadata") or {})
    if ref and ref.get("kind") == "ReplicaSet":
        return ref.get("name") or None
    return None


def resolve_endpoint(
    pod: Mapping[str, Any], rs_owner: Callable[[str, str], str | None] | None = None
) -> str:
    """The workload a pod belongs to.

    LeaderWorkerSet (label) > ReplicaSet→Deployment (via `rs_owner`, else hash strip) >
    StatefulSet / DaemonSet / Job / any other controller (its name) > bare or static pod
    (the pod's own name).
    """
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    name = meta.get("name", "")
    lws = labels.get(LWS_NAME_LABEL)
    if lws:
        return lws
    ref = _controller_ref(meta)
    if not ref:
        return name
    kind, owner = ref.get("kind", ""), ref.get("name", "")
    if kind == "ReplicaSet" and owner:
        if rs_owner is not None:
            resolved = rs_owner(meta.get("namespace", ""), owner)
            if resolved:
                return resolved
        return strip_template_hash(owner, labels)
    if kind == "Node":  # static pod's mirror: the kubelet owns it
        return name
    return owner or name


def _container_ids(status: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for cs in status.get(key) or []:
            cname = cs.get("name", "")
            # The previous instance of a restarted container: its processes may still have
            # energy in the interval that just ended.
            last = ((cs.get("lastState") or {}).get("terminated") or {}).get("containerID")
            for raw in (last, cs.get("containerID")):
                cid = normalize_container_id(raw or "")
                if cid:
                    out[cid] = cname
    return out


def _container_ports(spec: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            ports = tuple(
                int(p["containerPort"]) for p in c.get("ports") or [] if "containerPort" in p
            )
            if ports or c.get("name") not in out:
                out[c.get("name", "")] = ports
    return out


def pod_meta_from_object(
    pod: Mapping[str, Any],
    *,
    label_allowlist: Iterable[str] = DEFAULT_MODEL_LABELS,
    model_labels: Iterable[str] | None = None,
    rs_owner: Callable[[str, str], str | None] | None = None,
) -> PodMeta:
    meta = pod.get("metadata") or {}
    raw_labels: Mapping[str, str] = meta.get("labels") or {}
    raw_ann: Mapping[str, str] = meta.get("annotations") or {}
    allow = tuple(label_allowlist)
    model_keys = tuple(model_labels) if model_labels is not None else allow
    model = next((raw_labels[k] for k in model_keys if raw_labels.get(k)), "")
    keep = set(allow) | set(model_keys)
    return PodMeta(
        uid=normalize_pod_uid(meta.get("uid", "")),
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        endpoint=resolve_endpoint(pod, rs_owner),
        model=model,
        labels=MappingProxyType({k: v for k, v in raw_labels.items() if k in keep}),
        annotations=MappingProxyType(
            {k: v for k, v in raw_ann.items() if k in ANNOTATION_ALLOWLIST}
        ),
        containers=MappingProxyType(_container_ids(pod.get("status") or {})),
        container_ports=MappingProxyType(_container_ports(pod.get("spec") or {})),
        pod_ip=str((pod.get("status") or {}).get("podIP") or ""),
    )


def _slim(pod: Mapping[str, Any]) -> dict[str, Any]:
    """What is kept of a pod object: enough to rebuild its PodMeta later."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    return {
        "metadata": {
            k: meta.get(k)
            for k in ("uid", "name", "namespace", "labels", "annotations", "ownerReferences")
        },
        "spec": {k: spec.get(k) for k in ("initContainers", "containers")},
        "status": {
            k: status.get(k)
            for k in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses", "podIP")
        },
    }


# --------------------------------------------------------------------------- the cache


class _Failure(Exception):
    def __init__(self, kind: str, message: str, *, relist: bool = True):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.relist = relist
        self.progressed = False  # did the failed watch deliver anything first?


@dataclass
class _Entry:
    obj: dict[str, Any]
    meta: PodMeta
    rs: tuple[str, str] | None
    deleted_at: float | None = None


_RS_UNRESOLVED = object()


class PodCache:
    """Pods of one node, kept current by list+watch; lookups never touch the network."""

    def __init__(
        self,
        api_url: str,
        node_name: str,
        token_file: str | None,
        ca_file: str | None,
        *,
        resync_s: float = 300,
        timeout_s: float = 10,
        label_allowlist: Iterable[str] = DEFAULT_MODEL_LABELS,
        model_labels: Iterable[str] | None = None,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
        deleted_grace_s: float = 600,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 60.0,
        resolve_replicasets: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not node_name:
            raise PodCacheError(
                "node name is required (set it from the downward API: spec.nodeName)"
            )
        self.api_url = api_url.rstrip("/")
        self.node_name = node_name
        self.token_file = token_file
        self.ca_file = ca_file
        self.resync_s = float(resync_s)
        self.timeout_s = float(timeout_s)
        self.label_allowlist = tuple(label_allowlist)
        self.model_labels = tuple(model_labels) if model_labels is not None else None
        self.deleted_grace_s = float(deleted_grace_s)
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)
        self.resolve_replicasets = resolve_replicasets
        self._session_factory = session_factory
        self._clock = clock

        self._pods: dict[str, _Entry] = {}
        self._by_cid: dict[str, str] = {}
        self._rv: str = ""
        self._synced = asyncio.Event()
        self._synced_flag = False

        self._rs_owner: dict[tuple[str, str], Any] = {}  # (ns, rs) -> owner name | _RS_UNRESOLVED
        self._rs_retry_at: dict[tuple[str, str], float] = {}
        self._rs_pending: set[tuple[str, str]] = set()
        self._rs_queue: asyncio.Queue[tuple[str, str]] | None = None
        self._rs_forbidden = False

        self._token: str | None = None
        self._token_read_at = -1e18
        self._old_tokens: list[str] = []  # redacted from messages even after rotation

        self._lists = 0
        self._watches = 0
        self._rs_fetches = 0
        self._errors: dict[str, int] = {}
        self._last_error = ""
        self._state = "starting"  # "ok" or the kind of the last failure; logged on change

    # ------------------------------------------------------------------ construction

    @classmethod
    def in_cluster(cls, node_name: str, **kw: Any) -> "PodCache":
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise PodCacheError(
                "not running in a Kubernetes pod: KUBERNETES_SERVICE_HOST is not set"
            )
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        sa_dir = kw.pop("service_account_dir", SERVICE_ACCOUNT_DIR)
        token_file = kw.pop("token_file", os.path.join(sa_dir, "token"))
        ca_file = kw.pop("ca_file", os.path.join(sa_dir, "ca.crt"))
        return cls(f"https://{host}:{port}", node_name, token_file, ca_file, **kw)

    # ------------------------------------------------------------------ lookups

    def by_pod_uid(self, uid: str) -> PodMeta | None:
        e = self._pods.get(normalize_pod_uid(uid))
        if e is None or self._expired(e, self._clock()):
            return None
        return e.meta

    def by_container_id(self, cid: str) -> PodMeta | None:
        uid = self._by_cid.get(normalize_container_id(cid))
        return self.by_pod_uid(uid) if uid else None

    def pods(self) -> list[PodMeta]:
        """Live pods (not those kept for the deletion grace period)."""
        return [e.meta for e in list(self._pods.values()) if e.deleted_at is None]

    def stats(self) -> dict[str, Any]:
        entries = list(self._pods.values())
        return {
            "synced": self._synced_flag,
            "pods": sum(1 for e in entries if e.deleted_at is None),
            "deleted_pods": sum(1 for e in entries if e.deleted_at is not None),
            "lists": self._lists,
            "watches": self._watches,
            "replicaset_fetches": self._rs_fetches,
            "resource_version": self._rv,
            "errors_by_kind": dict(self._errors),
            "last_error": self._last_error,
            "state": self._state,
        }

    async def wait_synced(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    # ------------------------------------------------------------------ main loop

    async def run(self) -> None:
        self._rs_queue = asyncio.Queue()
        session = await self._open_session()
        rs_task = asyncio.create_task(self._rs_worker(session), name="podcache-replicasets")
        failures = 0
        need_list = True
        consistent_list = False
        try:
            while True:
                if failures:
                    await asyncio.sleep(self._backoff_delay(failures))
                try:
                    if need_list:
                        await self._list(session, consistent=consistent_list)
                        need_list = False
                        consistent_list = False
                    await self._watch(session)
                    failures = 0  # clean end of a watch: resume from the last resourceVersion
                except _Failure as f:
                    self._record_error(f.kind, f.message)
                    need_list = need_list or f.relist
                    if f.kind == "gone_410":
                        consistent_list = True
                    # Back-off restarts only after a watch delivered something, so a list
                    # that works followed by a watch that fails still backs off.
                    failures = 1 if f.progressed else failures + 1
                    if f.kind == "http_401":
                        self._token_read_at = -1e18  # re-read the (rotated) token file
                except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:  # noqa: BLE001 - a failing adapter never stops the loop
                    log.debug("pod cache internal error", exc_info=True)
                    self._record_error("internal", f"{type(e).__name__}: {e}")
                    need_list = True
                    failures += 1
        finally:
            rs_task.cancel()
            await asyncio.gather(rs_task, return_exceptions=True)
            await session.close()

    def _backoff_delay(self, failures: int) -> float:
        base = min(self.backoff_max_s, self.backoff_initial_s * (2 ** min(failures - 1, 30)))
        return base * random.uniform(0.5, 1.0)

    async def _open_session(self) -> aiohttp.ClientSession:
        """A missing or bad CA file is reported and retried, never fatal."""
        failures = 0
        while True:
            try:
                return self._make_session()
            except (OSError, ssl.SSLError) as e:
                failures += 1
                self._record_error("ca_file", f"cannot load CA file {self.ca_file}: {e}")
                await asyncio.sleep(self._backoff_delay(failures))

    async def node_labels(self, timeout_s: float = 5.0) -> dict[str, str]:
        """This node's labels (one GET at start-up, for ``topology.kubernetes.io/region``);
        {} with a log line when the API does not answer or RBAC lacks ``get nodes``."""
        try:
            session = self._make_session()
        except (OSError, ssl.SSLError) as e:
            log.info("node labels: cannot load CA file: %s", e)
            return {}
        try:
            async with session:
                async with session.get(f"{self.api_url}/api/v1/nodes/{self.node_name}", headers=self._headers(),
                                       timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                    if resp.status != 200:
                        log.info("node labels: GET node %s answered HTTP %d (RBAC needs get nodes)",
                                 self.node_name, resp.status)
                        return {}
                    body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            log.info("node labels: %s", self._redact(f"{type(e).__name__}: {e}"))
            return {}
        labels = (body.get("metadata") or {}).get("labels") or {} if isinstance(body, dict) else {}
        return {str(k): str(v) for k, v in labels.items()}

    # ------------------------------------------------------------------ HTTP plumbing

    def _make_session(self) -> aiohttp.ClientSession:
        if self._session_factory is not None:
            return self._session_factory()
        ssl_ctx: ssl.SSLContext | bool = True
        if self.api_url.startswith("https"):
            ssl_ctx = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True
        connector = aiohttp.TCPConnector(ssl=ssl_ctx, limit=4)
        return aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT})

    def _read_token(self) -> str | None:
        if not self.token_file:
            return None
        now = time.monotonic()
        if self._token is None or now - self._token_read_at >= TOKEN_MAX_AGE_S:
            try:
                with open(self.token_file, encoding="utf-8") as f:
                    self._token = f.read().strip()
                if self._token and self._token not in self._old_tokens:
                    self._old_tokens = (self._old_tokens + [self._token])[-4:]
            except OSError as e:
                raise _Failure(
                    "token_file", f"cannot read token file {self.token_file}: {e.strerror}"
                )
            self._token_read_at = now
        return self._token

    def _headers(self) -> dict[str, str]:
        h = {"Accept": "application/json"}
        tok = self._read_token()
        if tok:
            h["Authorization"] = f"Bearer {tok}"
        return h

    def _url(self, path: str, params: Mapping[str, str]) -> yarl.URL:
        # urlencode writes spec.nodeName=x as spec.nodeName%3Dx, exactly as kubectl does.
        return yarl.URL(f"{self.api_url}{path}?{urlencode(params, quote_via=quote)}", encoded=True)

    async def _get(self, session: aiohttp.ClientSession, url: yarl.URL) -> aiohttp.ClientResponse:
        """Response headers within timeout_s, else a 'timeout' failure."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await session.get(
                    url,
                    headers=self._headers(),
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s),
                )
        except TimeoutError:
            raise _Failure("timeout", f"no response from the API server within {self.timeout_s:g}s")
        except aiohttp.ClientConnectorCertificateError as e:
            raise _Failure("tls", f"TLS verification failed: {e.certificate_error}")
        except aiohttp.ClientSSLError as e:
            raise _Failure("tls", f"TLS error: {type(e).__name__}")
        except aiohttp.ClientConnectionError as e:
            raise _Failure("connection", f"cannot reach the API server: {type(e).__name__}: {e}")

    async def _check(self, resp: aiohttp.ClientResponse) -> None:
        if resp.status < 400:
            return
        detail = ""
        try:
            body = json.loads(await asyncio.wait_for(resp.read(), self.timeout_s))
            if isinstance(body, dict):
                detail = str(body.get("message") or body.get("reason") or "")[:200]
        except Exception:  # noqa: BLE001 - the status code is what matters
            pass
        finally:
            resp.release()
        kind = "gone_410" if resp.status == 410 else f"http_{resp.status}"
        hint = {
            401: " (token rejected; re-reading the token file)",
            403: " (RBAC: the service account needs list/watch on pods)",
        }.get(resp.status, "")
        raise _Failure(kind, f"HTTP {resp.status} {resp.reason or ''}{hint}: {detail}".strip())

    # ------------------------------------------------------------------ list / watch

    def _selector_params(self) -> dict[str, str]:
        return {"fieldSelector": f"spec.nodeName={self.node_name}"}

    async def _list(self, session: aiohttp.ClientSession, *, consistent: bool) -> None:
        items: list[dict[str, Any]] = []
        cont = ""
        rv = ""
        while True:
            params = self._selector_params()
            params["limit"] = "500"
            if cont:
                params["continue"] = cont
            elif not consistent:
                params["resourceVersion"] = "0"  # served from the API server's watch cache
            resp = await self._get(session, self._url("/api/v1/pods", params))
            await self._check(resp)
            try:
                async with asyncio.timeout(self.timeout_s):
                    body = json.loads(await resp.read())
            except TimeoutError:
                raise _Failure("timeout", "pod list body not received in time")
            except (ValueError, aiohttp.ClientPayloadError) as e:
                raise _Failure("decode", f"bad pod list: {type(e).__name__}")
            finally:
                resp.release()
            items.extend(body.get("items") or [])
            lm = body.get("metadata") or {}
            rv = lm.get("resourceVersion", rv)
            cont = lm.get("continue") or ""
            if not cont:
                break
        self._lists += 1
        self._replace_all(items, rv)

    async def _watch(self, session: aiohttp.ClientSession) -> None:
        """One watch request. Returns on a clean end; raises _Failure otherwise.

        A stream that ends cleanly but early and empty counts as a failure (no re-list), so
        a server that closes watches at once cannot make us spin.
        """
        seconds = max(1, int(self.resync_s * random.uniform(0.9, 1.1)))
        params = self._selector_params()
        params.update(
            {
                "watch": "1",
                "resourceVersion": self._rv,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(seconds),
            }
        )
        try:
            resp = await self._get(session, self._url("/api/v1/pods", params))
            await self._check(resp)
        except _Failure as f:
            # The request failed before any stream: retry the watch from the same
            # resourceVersion (the server answers 410 if it is too old, and we re-list then).
            f.relist = f.kind == "gone_410"
            raise
        self._watches += 1
        self._set_ok()
        progressed = False
        started = time.monotonic()
        buf = bytearray()
        try:
            async with asyncio.timeout(seconds + self.timeout_s):
                async for chunk in resp.content.iter_any():
                    buf += chunk
                    while (i := buf.find(b"\n")) >= 0:
                        line = bytes(buf[:i])
                        del buf[: i + 1]
                        if line.strip():
                            self._handle_event(line)
                            progressed = True
                if buf.strip():
                    self._handle_event(bytes(buf))
                    progressed = True
        except _Failure as f:
            f.progressed = progressed
            raise
        except TimeoutError:
            f = _Failure("timeout", f"watch still open past its {seconds}s timeout")
            f.progressed = progressed
            raise f from None
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionError) as e:
            f = _Failure("watch_dropped", f"watch stream dropped: {type(e).__name__}")
            f.progressed = progressed
            raise f from None
        finally:
            resp.release()
        if not progressed and time.monotonic() - started < seconds / 2:
            raise _Failure("watch_closed_early", "watch ended at once with no events", relist=False)

    def _handle_event(self, line: bytes) -> None:
        try:
            ev = json.loads(line)
            etype = ev["type"]
            obj = ev.get("object") or {}
        except (ValueError, KeyError, TypeError) as e:
            raise _Failure("decode", f"bad watch event: {type(e).__name__}")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if etype == "ERROR":
            code = obj.get("code")
            msg = str(obj.get("message") or obj.get("reason") or "")[:200]
            if code == 410:
                raise _Failure("gone_410", f"watch expired (410 Gone): {msg}")
            raise _Failure(f"watch_error_{code}", f"watch ERROR event {code}: {msg}")
        if etype in ("ADDED", "MODIFIED"):
            self._upsert(obj)
        elif etype == "DELETED":
            self._mark_deleted(normalize_pod_uid((obj.get("metadata") or {}).get("uid", "")))
        elif etype != "BOOKMARK":
            log.debug("ignoring watch event type %s", etype)
        if rv:
            self._rv = rv
        self._purge()

    # ------------------------------------------------------------------ state changes

    def _build(self, obj: dict[str, Any]) -> _Entry:
        slim = _slim(obj)
        meta = pod_meta_from_object(
            slim,
            label_allowlist=self.label_allowlist,
            model_labels=self.model_labels,
            rs_owner=self._rs_lookup,
        )
        rs_name = owner_replicaset(slim)
        rs = (meta.namespace, rs_name) if rs_name else None
        return _Entry(obj=slim, meta=meta, rs=rs)

    def _index(self, entry: _Entry, old: _Entry | None) -> None:
        uid = entry.meta.uid
        if old is not None:
            for cid in old.meta.containers:
                if cid not in entry.meta.containers and self._by_cid.get(cid) == uid:
                    del self._by_cid[cid]
        for cid in entry.meta.containers:
            self._by_cid[cid] = uid
        self._pods[uid] = entry

    def _safe_build(self, obj: Any) -> _Entry | None:
        try:
            entry = self._build(obj)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            self._record_error("bad_object", f"unusable pod object skipped: {type(e).__name__}",
                               affects_state=False)
            return None
        return entry if entry.meta.uid else None

    def _upsert(self, obj: dict[str, Any]) -> None:
        entry = self._safe_build(obj)
        if entry is not None:
            self._index(entry, self._pods.get(entry.meta.uid))

    def _mark_deleted(self, uid: str) -> None:
        e = self._pods.get(uid)
        if e is not None and e.deleted_at is None:
            e.deleted_at = self._clock()

    def _replace_all(self, items: list[dict[str, Any]], rv: str) -> None:
        seen: set[str] = set()
        for obj in items:
            entry = self._safe_build(obj)
            if entry is not None:
                seen.add(entry.meta.uid)
                self._index(entry, self._pods.get(entry.meta.uid))
        # Pods that vanished while the watch was down: keep them for the grace period too.
        for uid in list(self._pods):
            if uid not in seen:
                self._mark_deleted(uid)
        self._rv = rv
        self._purge()
        first = not self._synced_flag
        self._synced_flag = True
        if self._synced is not None:
            self._synced.set()
        if first:
            log.info(
                "pod cache synced: %d pods on node %s from %s",
                len(seen), self.node_name, self.api_url,
            )

    def _expired(self, e: _Entry, now: float) -> bool:
        return e.deleted_at is not None and now - e.deleted_at > self.deleted_grace_s

    def _purge(self) -> None:
        now = self._clock()
        for uid, e in list(self._pods.items()):
            if self._expired(e, now):
                del self._pods[uid]
                for cid in e.meta.containers:
                    if self._by_cid.get(cid) == uid:
                        del self._by_cid[cid]
        if len(self._rs_owner) > 4 * len(self._pods) + 64:  # old rollouts' ReplicaSets
            used = {e.rs for e in self._pods.values()}
            for key in [k for k in self._rs_owner if k not in used]:
                self._rs_owner.pop(key, None)
                self._rs_retry_at.pop(key, None)

    def _record_error(self, kind: str, message: str, *, affects_state: bool = True) -> None:
        self._errors[kind] = self._errors.get(kind, 0) + 1
        self._last_error = self._redact(f"{kind}: {message}")
        if not affects_state:
            log.debug("pod cache: %s", self._last_error)
            return
        if self._state != kind:
            log.warning(
                "pod cache (%s): %s; retrying with back-off", self.api_url, self._last_error
            )
        self._state = kind

    def _set_ok(self) -> None:
        if self._state not in ("ok", "starting"):
            log.info("pod cache recovered (%s)", self.api_url)
        self._state = "ok"

    def _redact(self, text: str) -> str:
        for tok in self._old_tokens:
            text = text.replace(tok, "<redacted>")
        return text

    # ------------------------------------------------------------------ ReplicaSet owners

    def _rs_lookup(self, namespace: str, rs_name: str) -> str | None:
        key = (namespace, rs_name)
        owner = self._rs_owner.get(key)
        if owner is not None and owner is not _RS_UNRESOLVED:
            return owner
        if not self.resolve_replicasets or self._rs_forbidden or self._rs_queue is None:
            return None
        if owner is _RS_UNRESOLVED and self._clock() < self._rs_retry_at.get(key, 0.0):
            return None
        if key not in self._rs_pending:
            self._rs_pending.add(key)
            self._rs_queue.put_nowait(key)
        return None

    async def _rs_worker(self, session: aiohttp.ClientSession) -> None:
        assert self._rs_queue is not None
        while True:
            key = await self._rs_queue.get()
            try:
                owner = await self._fetch_rs_owner(session, *key)
            except _Failure as f:
                self._record_error(f"replicaset_{f.kind}", f.message, affects_state=False)
                if f.kind == "http_403":
                    self._rs_forbidden = True  # no RBAC for replicasets: hash strip from now on
                    log.warning(
                        "no permission to get replicasets; deriving Deployment names from "
                        "pod-template-hash (grant get on apps/replicasets to resolve owners)"
                    )
                self._rs_owner[key] = _RS_UNRESOLVED
                self._rs_retry_at[key] = self._clock() + self.resync_s
            else:
                self._rs_owner[key] = owner if owner is not None else _RS_UNRESOLVED
                if owner is None:  # 404: the ReplicaSet is gone; hash strip is final
                    self._rs_retry_at[key] = float("inf")
                self._refresh_rs(key)
            finally:
                self._rs_pending.discard(key)

    async def _fetch_rs_owner(
        self, session: aiohttp.ClientSession, namespace: str, rs_name: str
    ) -> str | None:
        path = (
            f"/apis/apps/v1/namespaces/{quote(namespace, safe='')}"
            f"/replicasets/{quote(rs_name, safe='')}"
        )
        resp = await self._get(session, yarl.URL(self.api_url + path, encoded=True))
        self._rs_fetches += 1
        if resp.status == 404:
            resp.release()
            return None
        await self._check(resp)
        try:
            async with asyncio.timeout(self.timeout_s):
                body = json.loads(await resp.read())
        except (TimeoutError, ValueError, aiohttp.ClientPayloadError) as e:
            raise _Failure("decode", f"bad ReplicaSet {namespace}/{rs_name}: {type(e).__name__}")
        finally:
            resp.release()
        ref = _controller_ref(body.get("metadata") or {})
        return (ref.get("name") if ref else None) or rs_name

    def _refresh_rs(self, key: tuple[str, str]) -> None:
        for e in list(self._pods.values()):
            if e.rs == key:
                new = self._build(e.obj)
                new.deleted_at = e.deleted_at
                self._index(new, e)

