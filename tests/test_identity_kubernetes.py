"""PodCache against a fake Kubernetes API server (aiohttp on 127.0.0.1).

The fake speaks the API server's wire shapes: PodList / ReplicaSet JSON from
tests/fixtures/k8s, `fieldSelector=spec.nodeName%3D…`, `watch=1` as a chunked stream of
JSON lines (ADDED / MODIFIED / DELETED / BOOKMARK / ERROR with a 410 Status), Status
bodies on errors, and scripted failures (5xx, 401 until the token rotates, dropped
streams, 410 Gone, hangs).
"""

from __future__ import annotations

import asyncio
import collections
import copy
import json
import logging
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from exporter.identity.kubernetes import (
    PodCache,
    PodCacheError,
    PodMeta,
    normalize_container_id,
    pod_meta_from_object,
    resolve_endpoint,
    strip_template_hash,
)

FIX = Path(__file__).parent / "fixtures" / "k8s"
NODE = "gpu-node-a"
LOGGER = "exporter.identity.kubernetes"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIX / f"{name}.json").read_text())


VLLM, STS, LWS_LEADER, LWS_WORKER, BARE, OTHER = (
    fixture(n)
    for n in (
        "pod_vllm_kserve",
        "pod_statefulset",
        "pod_lws_leader",
        "pod_lws_worker",
        "pod_bare",
        "pod_other_node",
    )
)
RS_LLAMA = fixture("replicaset_llama")


def cid_of(pod: dict, container: str) -> str:
    for cs in pod["status"]["containerStatuses"]:
        if cs["name"] == container:
            return cs["containerID"]
    raise KeyError(container)


# --------------------------------------------------------------------------- fake server


class FakeApiServer:
    """Just enough of kube-apiserver: pods list/watch and replicaset get."""

    def __init__(self, token: str = "token-A") -> None:
        self.pods: dict[str, dict] = {}
        for p in (VLLM, STS, LWS_LEADER, LWS_WORKER, BARE, OTHER):
            self.pods[p["metadata"]["uid"]] = copy.deepcopy(p)
        self.replicasets = {("models", RS_LLAMA["metadata"]["name"]): copy.deepcopy(RS_LLAMA)}
        self.rv = 918600
        self.token = token
        self.requests: list[dict[str, Any]] = []
        self.list_script: collections.deque = collections.deque()
        self.watch_script: collections.deque = collections.deque()
        self.rs_status: int | None = None
        self._watchers: set[asyncio.Queue] = set()
        self.ssl_context: ssl.SSLContext | None = None

    # -- lifecycle
    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/pods", self._pods)
        app.router.add_get("/apis/apps/v1/namespaces/{ns}/replicasets/{name}", self._rs)
        app.router.add_get("/api/v1/nodes/{name}", self._node)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await self._site.start()
        port = self._site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self._runner.cleanup()

    # -- helpers for tests
    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["kind"] == kind]

    def emit(self, etype: str, obj: dict) -> None:
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if etype == "DELETED":
            self.pods.pop(obj["metadata"]["uid"], None)
        elif etype != "BOOKMARK":
            self.pods[obj["metadata"]["uid"]] = obj
        for q in self._watchers:
            q.put_nowait({"type": etype, "object": obj})

    def bookmark(self) -> None:
        self.emit("BOOKMARK", {"kind": "Pod", "apiVersion": "v1", "metadata": {}})

    # -- handlers
    def _status(self, code: int, reason: str, message: str) -> web.Response:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}
        return web.json_response(body, status=code)

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    def _node_pods(self, selector: str) -> list[dict]:
        field_, _, value = selector.partition("=")
        assert field_ in ("", "spec.nodeName")
        return [p for p in self.pods.values() if not value or p["spec"]["nodeName"] == value]

    async def _pods(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        kind = "watch" if q.get("watch") in ("1", "true") else "list"
        self.requests.append({"kind": kind, "t": time.monotonic(), "query": dict(q),
                              "raw_query": request.query_string})
        if not self._authorized(request):
            return self._status(401, "Unauthorized", "Unauthorized")
        script = self.list_script if kind == "list" else self.watch_script
        action = script.popleft() if script else None
        if isinstance(action, int):
            return self._status(action, "InternalError", f"scripted {action}")
        if action == "500-echo":  # a misbehaving proxy that echoes credentials back
            return self._status(500, "InternalError",
                                "upstream said: " + request.headers.get("Authorization", ""))
        if action == "hang":  # never answers
            await asyncio.sleep(3600)
        if kind == "list":
            items = self._node_pods(q.get("fieldSelector", ""))
            return web.json_response({"kind": "PodList", "apiVersion": "v1",
                                      "metadata": {"resourceVersion": str(self.rv)},
                                      "items": items})
        return await self._watch(request, action or {"end": "stream"})

    async def _watch(self, request: web.Request, action: dict) -> web.StreamResponse:
        node = request.query.get("fieldSelector", "").partition("=")[2]
        timeout = float(request.query.get("timeoutSeconds", "30"))
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)

        async def send(ev: dict) -> None:
            obj = ev["object"]
            if ev["type"] in ("ADDED", "MODIFIED", "DELETED") and node \
                    and obj["spec"]["nodeName"] != node:
                return
            await resp.write(json.dumps(ev).encode() + b"\n")

        for ev in action.get("events", []):
            await send(ev)
        end = action.get("end", "stream")
        if end == "drop":
            await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.close()
            return resp
        if end == "error410":
            await send({"type": "ERROR", "object": fixture("status_410")})
        elif end == "hang":
            await asyncio.sleep(3600)
        elif end == "stream":
            queue: asyncio.Queue = asyncio.Queue()
            self._watchers.add(queue)
            deadline = time.monotonic() + timeout
            try:
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        ev = await asyncio.wait_for(queue.get(), left)
                    except asyncio.TimeoutError:
                        break
                    await send(ev)
            finally:
                self._watchers.discard(queue)
        await resp.write_eof()
        return resp

    node_labels = {"topology.kubernetes.io/region": "eu-west-1", "eks.amazonaws.com/nodegroup": "gpu",
                   "kubernetes.io/hostname": NODE}

    async def _node(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._status(401, "Unauthorized", "Unauthorized")
        if request.match_info["name"] != NODE:
            return self._status(404, "NotFound", f'nodes "{request.match_info["name"]}" not found')
        return web.json_response({"kind": "Node", "apiVersion": "v1",
                                  "metadata": {"name": NODE, "labels": self.node_labels}})

    async def _rs(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        self.requests.append({"kind": "rs", "t": time.monotonic(), "path": f"{ns}/{name}"})
        if not self._authorized(request):
            return self._status(401, "Unauthorized", "Unauthorized")
        if self.rs_status:
            return self._status(self.rs_status, "Forbidden", "replicasets is forbidden")
        rs = self.replicasets.get((ns, name))
        if rs is None:
            return self._status(404, "NotFound", f'replicasets.apps "{name}" not found')
        return web.json_response(rs)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def until(pred, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def run_with(server_kw: dict | None, cache_kw: dict, body, token: str = "token-A",
             tmp_path: Path | None = None, setup=None):
    """Start the fake server, a PodCache.run() task, then `await body(server, cache)`."""

    async def main():
        server = FakeApiServer(**(server_kw or {}))
        if setup:
            setup(server)
        await server.start()
        token_file = None
        if tmp_path is not None:
            token_file = tmp_path / "token"
            token_file.write_text(token + "\n")
        kw = {"backoff_initial_s": 0.05, "backoff_max_s": 0.5, "timeout_s": 2, "resync_s": 30}
        kw.update(cache_kw)
        url = kw.pop("url", None) or server.url
        cache = PodCache(url, NODE, str(token_file) if token_file else None,
                         kw.pop("ca_file", None), **kw)
        task = asyncio.create_task(cache.run())
        try:
            return await body(server, cache)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await server.stop()

    return asyncio.run(main())


# --------------------------------------------------------------------------- pure parts


def test_resolve_endpoint_kinds():
    assert resolve_endpoint(VLLM) == "llama-3-8b-predictor"  # hash strip, no RS cache
    assert resolve_endpoint(VLLM, lambda ns, rs: "from-rs-owner") == "from-rs-owner"
    assert resolve_endpoint(VLLM, lambda ns, rs: None) == "llama-3-8b-predictor"
    assert resolve_endpoint(STS) == "qwen-72b"
    assert resolve_endpoint(LWS_LEADER) == "deepseek-r1"   # not the StatefulSet "deepseek-r1"…
    assert resolve_endpoint(LWS_WORKER) == "deepseek-r1"   # …nor "deepseek-r1-0"
    assert resolve_endpoint(BARE) == "debug-llama-cpp"

    def pod(kind: str, owner: str, name: str = "p-1", labels: dict | None = None) -> dict:
        return {"metadata": {"name": name, "namespace": "ns", "labels": labels or {},
                             "ownerReferences": [{"kind": kind, "name": owner, "controller": True}]}}

    assert resolve_endpoint(pod("DaemonSet", "node-agent")) == "node-agent"
    assert resolve_endpoint(pod("Job", "bench-28391")) == "bench-28391"
    assert resolve_endpoint(pod("Node", "gpu-node-a", name="etcd-gpu-node-a")) == "etcd-gpu-node-a"
    # A ReplicaSet pod without pod-template-hash (a bare ReplicaSet): its name is kept.
    assert resolve_endpoint(pod("ReplicaSet", "batch-rs")) == "batch-rs"
    assert strip_template_hash("a-b-5d4c", {"pod-template-hash": "5d4c"}) == "a-b"
    assert strip_template_hash("a-b-5d4c", {"pod-template-hash": "zzz"}) == "a-b-5d4c"


def test_pod_meta_from_recorded_pods():
    m = pod_meta_from_object(VLLM)
    assert (m.uid, m.namespace, m.name) == (VLLM["metadata"]["uid"], "models", VLLM["metadata"]["name"])
    assert m.model == "llama-3-8b"  # app.kubernetes.io/name=vllm names the app, not a model: not read
    assert dict(m.labels) == {"serving.kserve.io/inferenceservice": "llama-3-8b"}
    assert dict(m.annotations) == {"prometheus.io/port": "8080", "prometheus.io/path": "/metrics",
                                   "prometheus.io/scrape": "true"}
    main = normalize_container_id(cid_of(VLLM, "kserve-container"))
    init = normalize_container_id(VLLM["status"]["initContainerStatuses"][0]["containerID"])
    assert len(main) == 64 and "://" not in main
    assert dict(m.containers) == {main: "kserve-container", init: "storage-initializer"}
    assert dict(m.container_ports) == {"kserve-container": (8080,), "storage-initializer": ()}
    hash(m)  # usable as a dict key / in sets
    with pytest.raises(TypeError):
        m.labels["x"] = "y"  # type: ignore[index]

    s = pod_meta_from_object(STS)
    # app.kubernetes.io/name only: no model label (the server's own reported model names it)
    assert s.model == "" and s.endpoint == "qwen-72b"
    assert set(s.containers.values()) == {"sglang", "log-shipper"}
    assert len(s.containers) == 3  # + the OOM-killed previous sglang container (lastState)
    assert dict(s.annotations) == {"prometheus.io/scrape": "true", "prometheus.io/port": "30000"}

    w = pod_meta_from_object(LWS_WORKER)
    assert (w.endpoint, w.model) == ("deepseek-r1", "DeepSeek-R1")
    assert dict(w.container_ports) == {"vllm-worker": ()}

    b = pod_meta_from_object(BARE)
    assert (b.endpoint, b.model, dict(b.labels)) == ("debug-llama-cpp", "", {})

    custom = pod_meta_from_object(VLLM, label_allowlist=["component"], model_labels=["nope"])
    assert custom.model == "" and dict(custom.labels) == {"component": "predictor"}


def test_in_cluster(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(PodCacheError):
        PodCache.in_cluster(NODE)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    c = PodCache.in_cluster(NODE)
    assert c.api_url == "https://10.96.0.1:443"
    assert c.token_file == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert c.ca_file == "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    c = PodCache.in_cluster(NODE, service_account_dir=str(tmp_path), resync_s=60)
    assert c.api_url == "https://[fd00::1]:443" and c.token_file == str(tmp_path / "token")
    with pytest.raises(PodCacheError):
        PodCache("http://x", "", None, None)


# --------------------------------------------------------------------------- list + watch


def test_list_watch_lookups_and_deletion_grace(tmp_path):
    clock = FakeClock()

    async def body(server: FakeApiServer, cache: PodCache):
        assert await cache.wait_synced(5)
        st = cache.stats()
        assert st["synced"] and st["pods"] == 5 and st["lists"] == 1
        assert cache.by_pod_uid(OTHER["metadata"]["uid"]) is None  # other node, never listed

        # Node-scoped: every pods request carries the field selector, %3D-encoded.
        await until(lambda: server.of("watch"), what="first watch")
        for r in server.of("list") + server.of("watch"):
            assert r["query"]["fieldSelector"] == f"spec.nodeName={NODE}"
            assert f"fieldSelector=spec.nodeName%3D{NODE}" in r["raw_query"]
        lst, w = server.of("list")[0]["query"], server.of("watch")[0]["query"]
        assert lst["resourceVersion"] == "0"  # served from the watch cache
        assert w["resourceVersion"] == "918600" and w["allowWatchBookmarks"] == "true"

        # Lookups by container id (with or without runtime prefix) and by pod UID.
        m = cache.by_container_id(cid_of(VLLM, "kserve-container"))
        assert m is not None and m.name == VLLM["metadata"]["name"]
        assert cache.by_container_id(normalize_container_id(cid_of(VLLM, "kserve-container"))) is m
        assert cache.by_pod_uid(VLLM["metadata"]["uid"].replace("-", "_")) is m  # systemd cgroup form
        lws = cache.by_container_id(cid_of(LWS_WORKER, "vllm-worker"))
        assert (lws.endpoint, lws.model, lws.namespace) == ("deepseek-r1", "DeepSeek-R1", "llm-d")

        # The owner ReplicaSet is fetched once, lazily; the Deployment name comes from it.
        await until(lambda: server.of("rs"), what="replicaset fetch")
        await until(lambda: cache.stats()["replicaset_fetches"] == 1)
        assert cache.by_pod_uid(VLLM["metadata"]["uid"]).endpoint == "llama-3-8b-predictor"

        # Watch events: ADDED, MODIFIED (container restart), BOOKMARK, DELETED.
        new = copy.deepcopy(VLLM)
        new["metadata"].update(name="llama-3-8b-predictor-7d9f8b6c5d-n7k2p",
                               uid="0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e")
        new["status"]["containerStatuses"][0]["containerID"] = "containerd://" + "ab" * 32
        new["status"]["initContainerStatuses"] = []
        server.emit("ADDED", new)
        await until(lambda: cache.by_container_id("ab" * 32) is not None, what="ADDED pod")
        assert cache.stats()["pods"] == 6

        restarted = copy.deepcopy(STS)
        old_cid = cid_of(STS, "sglang")
        cs = next(c for c in restarted["status"]["containerStatuses"] if c["name"] == "sglang")
        cs["lastState"] = {"terminated": {"exitCode": 1, "containerID": old_cid}}
        cs["containerID"] = "containerd://" + "cd" * 32
        server.emit("MODIFIED", restarted)
        await until(lambda: cache.by_container_id("cd" * 32) is not None, what="MODIFIED pod")
        assert cache.by_container_id(old_cid).name == "qwen-72b-0"  # previous instance still maps

        server.bookmark()
        await until(lambda: cache.stats()["resource_version"] == str(server.rv), what="bookmark")

        server.emit("DELETED", BARE)
        await until(lambda: cache.stats()["deleted_pods"] == 1, what="DELETED pod")
        bare_cid = cid_of(BARE, "debug-llama-cpp")
        assert cache.by_container_id(bare_cid).endpoint == "debug-llama-cpp"  # within grace
        clock.now += 601
        assert cache.by_container_id(bare_cid) is None
        assert cache.by_pod_uid(BARE["metadata"]["uid"]) is None

        # Many events for the same ReplicaSet never cause another fetch.
        for _ in range(5):
            server.emit("MODIFIED", VLLM)
        await until(lambda: cache.stats()["resource_version"] == str(server.rv))
        assert len(server.of("rs")) == 1 and cache.stats()["lists"] == 1
        assert cache.stats()["errors_by_kind"] == {}

    run_with(None, {"clock": clock}, body, tmp_path=tmp_path)


def test_clean_watch_end_resumes_without_relist(tmp_path):
    async def body(server, cache):
        # the server logs a request before the client counts it: wait for both
        await until(lambda: len(server.of("watch")) >= 3 and cache.stats()["watches"] >= 3,
                    timeout=8, what="3 watches")
        watches = server.of("watch")
        assert len(server.of("list")) == 1
        assert all(1 <= int(w["query"]["timeoutSeconds"]) <= 2 for w in watches)
        assert cache.stats()["watches"] >= 3 and cache.stats()["errors_by_kind"] == {}

    run_with(None, {"resync_s": 1}, body, tmp_path=tmp_path)


def test_gone_410_event_and_http_relist(tmp_path):
    def setup(s: FakeApiServer):
        s.watch_script.extend([{"end": "error410"}, 410])

    async def body(server, cache):
        await until(lambda: cache.stats()["lists"] == 3, what="two re-lists")
        st = cache.stats()
        assert st["errors_by_kind"] == {"gone_410": 2}
        assert "410" in st["last_error"]
        lists = server.of("list")
        assert lists[0]["query"].get("resourceVersion") == "0"
        # After 410 the re-list is a consistent read (no resourceVersion=0), like client-go.
        assert "resourceVersion" not in lists[1]["query"]
        assert st["pods"] == 5

    run_with(None, {}, body, tmp_path=tmp_path, setup=setup)


def test_watch_dropped_mid_stream_relists(tmp_path):
    added = copy.deepcopy(BARE)
    added["metadata"].update(name="late-pod", uid="11111111-2222-4333-8444-555555555555")
    added["status"]["containerStatuses"][0]["containerID"] = "containerd://" + "ef" * 32

    def setup(s: FakeApiServer):
        s.watch_script.append({"events": [{"type": "ADDED", "object": added}], "end": "drop"})

    async def body(server, cache):
        await until(lambda: cache.stats()["lists"] == 2, what="re-list after drop")
        st = cache.stats()
        assert st["errors_by_kind"] == {"watch_dropped": 1}
        # The event that arrived before the drop was applied…
        assert cache.by_container_id("ef" * 32).name == "late-pod"
        # …and since the server never stored it, the re-list marks it deleted (grace kept).
        assert st["deleted_pods"] == 1 and st["pods"] == 5

    run_with(None, {}, body, tmp_path=tmp_path, setup=setup)


def test_5xx_backs_off_instead_of_looping(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    def setup(s: FakeApiServer):
        s.list_script.extend([500] * 1000)

    async def body(server, cache):
        await asyncio.sleep(2.0)
        lists = server.of("list")
        # backoff 0.1·2^n (×0.5–1 jitter), capped at 0.8 s: about 4–7 requests in 2 s.
        # A tight loop would make hundreds.
        assert 3 <= len(lists) <= 9, len(lists)
        gaps = [b["t"] - a["t"] for a, b in zip(lists, lists[1:])]
        assert max(gaps[-2:]) > min(gaps[:2])  # growing
        st = cache.stats()
        assert st["errors_by_kind"] == {"http_500": len(lists)} and not st["synced"]
        assert "HTTP 500" in st["last_error"]
        # Logged once per state change, not once per failure.
        assert sum("http_500" in r.getMessage() for r in caplog.records
                   if r.levelno >= logging.WARNING) == 1

    run_with(None, {"backoff_initial_s": 0.1, "backoff_max_s": 0.8}, body, tmp_path=tmp_path,
             setup=setup)


def test_list_ok_but_watch_failing_still_backs_off(tmp_path):
    def setup(s: FakeApiServer):
        s.watch_script.extend([503] * 1000)

    async def body(server, cache):
        await asyncio.sleep(1.5)
        assert len(server.of("list")) == 1  # a failed watch request keeps the list…
        assert 3 <= len(server.of("watch")) <= 8  # …and backs off
        assert set(cache.stats()["errors_by_kind"]) == {"http_503"}

    run_with(None, {"backoff_initial_s": 0.1, "backoff_max_s": 0.8}, body, tmp_path=tmp_path,
             setup=setup)


def test_hanging_list_and_watch_time_out(tmp_path):
    def setup(s: FakeApiServer):
        s.list_script.extend(["hang", "hang"])
        s.watch_script.append({"end": "hang"})

    async def body(server, cache):
        await until(lambda: cache.stats()["synced"], timeout=5, what="sync after hangs")
        assert cache.stats()["errors_by_kind"] == {"timeout": 2}
        # The hung watch (headers sent, then silence) is abandoned after timeoutSeconds+timeout_s.
        await until(lambda: cache.stats()["errors_by_kind"].get("timeout") == 3, timeout=6,
                    what="watch timeout")
        await until(lambda: cache.stats()["lists"] == 2, what="re-list after hung watch")
        assert len(server.of("list")) == 4

    run_with(None, {"timeout_s": 0.3, "resync_s": 1}, body, tmp_path=tmp_path, setup=setup)


def test_401_rereads_rotated_token_and_never_leaks_it(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    old, new = "eyJhbGciOiJSUzI1NiJ9.OLD-secret-token", "eyJhbGciOiJSUzI1NiJ9.NEW-secret-token"

    def setup(s: FakeApiServer):
        s.token = new
        s.list_script.append("500-echo")  # first authorised list: a 500 echoing the header

    async def body(server, cache):
        await until(lambda: cache.stats()["errors_by_kind"].get("http_401", 0) >= 1,
                    what="401")
        assert not cache.stats()["synced"]
        (tmp_path / "token").write_text(new + "\n")  # the kubelet rotates the bound token
        assert await cache.wait_synced(5)
        st = cache.stats()
        assert st["errors_by_kind"]["http_500"] == 1
        await until(lambda: server.of("watch"))
        texts = [json.dumps(cache.stats()), caplog.text, repr(cache.pods())]
        for t in texts:
            assert old not in t and new not in t and "secret-token" not in t
        assert any("<redacted>" in r.getMessage() or "http_500" in r.getMessage()
                   for r in caplog.records)

    run_with(None, {}, body, token=old, tmp_path=tmp_path, setup=setup)


def test_replicaset_forbidden_falls_back_to_hash_strip(tmp_path):
    def setup(s: FakeApiServer):
        s.rs_status = 403

    async def body(server, cache):
        await until(lambda: server.of("rs"), what="rs fetch")
        await until(lambda: "replicaset_http_403" in cache.stats()["errors_by_kind"])
        second = copy.deepcopy(VLLM)
        second["metadata"]["uid"] = "22222222-3333-4444-8555-666666666666"
        second["metadata"]["ownerReferences"][0]["name"] = "other-7f7f7f7f7f"
        second["metadata"]["labels"]["pod-template-hash"] = "7f7f7f7f7f"
        second["status"]["containerStatuses"][0]["containerID"] = "containerd://" + "12" * 32
        server.emit("ADDED", second)
        server.emit("MODIFIED", VLLM)
        await until(lambda: cache.by_container_id("12" * 32) is not None)
        assert cache.by_container_id("12" * 32).endpoint == "other"
        assert cache.by_pod_uid(VLLM["metadata"]["uid"]).endpoint == "llama-3-8b-predictor"
        assert len(server.of("rs")) == 1  # forbidden once: no more ReplicaSet requests
        assert cache.stats()["state"] == "ok"

    run_with(None, {}, body, tmp_path=tmp_path, setup=setup)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_tls_verified_with_ca_file(tmp_path):
    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(crt), "-subj", "/CN=kube-apiserver",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(crt, key)

    def setup(s: FakeApiServer):
        s.ssl_context = ctx

    async def ok(server, cache):
        assert await cache.wait_synced(5)
        assert cache.stats()["pods"] == 5

    run_with(None, {"ca_file": str(crt)}, ok, tmp_path=tmp_path, setup=setup)

    async def untrusted(server, cache):
        await until(lambda: "tls" in cache.stats()["errors_by_kind"], what="tls error")
        assert not cache.stats()["synced"]

    run_with(None, {}, untrusted, tmp_path=tmp_path, setup=setup)


def test_podmeta_is_frozen():
    m = PodMeta("u", "ns", "n", "e", "m")
    with pytest.raises(Exception):
        m.uid = "x"  # type: ignore[misc]


def test_missing_ca_file_is_reported_not_fatal(tmp_path):
    async def main():
        cache = PodCache("https://127.0.0.1:1", NODE, None, str(tmp_path / "ca.crt"),
                         backoff_initial_s=0.05, backoff_max_s=0.1)
        task = asyncio.create_task(cache.run())
        await until(lambda: cache.stats()["errors_by_kind"].get("ca_file", 0) >= 2)
        assert not task.done()
        assert "cannot load CA file" in cache.stats()["last_error"]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_unusable_pod_object_is_skipped_not_fatal(tmp_path):
    bad = copy.deepcopy(BARE)
    bad["metadata"].update(name="bad-ports", uid="33333333-4444-4555-8666-777777777777")
    bad["spec"]["containers"][0]["ports"] = [{"containerPort": "not-a-number"}]

    async def body(server, cache):
        assert await cache.wait_synced(5)
        await until(lambda: server.of("watch"))
        server.emit("ADDED", bad)
        server.emit("DELETED", STS)
        await until(lambda: cache.stats()["deleted_pods"] == 1, what="event after the bad one")
        st = cache.stats()
        assert st["errors_by_kind"] == {"bad_object": 1} and st["lists"] == 1
        assert cache.by_pod_uid(bad["metadata"]["uid"]) is None

    run_with(None, {}, body, tmp_path=tmp_path)
