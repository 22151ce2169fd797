"""A small synchronous client for the Prometheus HTTP API (``/api/v1/query``,
``/api/v1/query_range``, ``/api/v1/label/__name__/values``): urllib, a timeout on every call, and
one error type whose message names the URL and what went wrong (refused, timed out, HTTP status,
not JSON, ``status: error``)."""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any


class PrometheusError(RuntimeError):
    """Prometheus could not be asked, or answered with an error."""


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]]


def _reason(e: BaseException) -> str:
    r = getattr(e, "reason", e)
    if isinstance(r, ConnectionRefusedError):
        return "connection refused"
    if isinstance(r, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(r, socket.gaierror):
        return f"unknown host ({r.strerror or r})"
    return str(r) or type(r).__name__


_CLUSTER = re.compile(r"\bcluster\b")


class Client:
    """Prometheus's query API. ``cluster_label``: the label that tells clusters apart in this
    Prometheus (as ``wattprint rules --rules.cluster-label``): queries are written with
    ``cluster`` and it stands in for it, both ways, here at the boundary."""

    def __init__(self, url: str, timeout: float = 30.0, opener=urllib.request.urlopen,
                 cluster_label: str = "cluster"):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise PrometheusError(f"--prometheus.url={url!r}: not an http(s) URL (e.g. http://prometheus:9090)")
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", cluster_label):
            raise PrometheusError(f"--cluster-label={cluster_label!r}: not a Prometheus label name")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.opener = opener
        self.cluster_label = cluster_label

    def _expr(self, expr: str) -> str:
        return expr if self.cluster_label == "cluster" else _CLUSTER.sub(self.cluster_label, expr)

    def _labels(self, labels: dict[str, str]) -> dict[str, str]:
        if self.cluster_label == "cluster" or self.cluster_label not in labels:
            return labels
        out = {k: v for k, v in labels.items() if k != self.cluster_label}
        out["cluster"] = labels[self.cluster_label]
        return out

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        """The ``data`` of a successful API answer."""
        url = f"{self.url}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        what = params.get("query", path) if params else path
        try:
            with self.opener(urllib.request.Request(url, headers={"Accept": "application/json"}),
                             timeout=self.timeout) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            raise PrometheusError(f"Prometheus at {self.url} answered HTTP {e.code} to {what}: "
                                  f"{self._error_text(e.read())}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = _reason(e)
            extra = f" within {self.timeout:g} s" if reason == "timed out" else ""
            raise PrometheusError(f"cannot reach Prometheus at {self.url}: {reason}{extra}") from None
        try:
            doc = json.loads(body)
        except ValueError:
            raise PrometheusError(f"{url} did not answer with JSON (is {self.url} a Prometheus "
                                  f"server?): {body[:80]!r}") from None
        if not isinstance(doc, dict) or doc.get("status") != "success":
            raise PrometheusError(f"Prometheus at {self.url} refused {what}: {self._error_text(body)}")
        return doc.get("data")

    @staticmethod
    def _error_text(body: bytes) -> str:
        try:
            doc = json.loads(body)
            return f"{doc.get('errorType', 'error')}: {doc.get('error', doc)}"
        except (ValueError, AttributeError):
            return body[:200].decode(errors="replace").strip() or "(empty body)"

    def query(self, expr: str, at: float) -> list[Sample]:
        expr = self._expr(expr)
        data = self.get("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})
        if not isinstance(data, dict) or data.get("resultType") not in ("vector", "scalar"):
            raise PrometheusError(f"Prometheus at {self.url}: unexpected answer to {expr}: {data!r:.200}")
        if data["resultType"] == "scalar":
            return [Sample({}, float(data["result"][1]))]
        return [Sample(self._labels(r["metric"]), float(r["value"][1])) for r in data["result"]]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        expr = self._expr(expr)
        data = self.get("/api/v1/query_range", {"query": expr, "start": f"{start:.3f}",
                                                "end": f"{end:.3f}", "step": f"{step:g}"})
        if not isinstance(data, dict) or data.get("resultType") != "matrix":
            raise PrometheusError(f"Prometheus at {self.url}: unexpected answer to {expr}: {data!r:.200}")
        return [Series(self._labels(r["metric"]), [(float(t), float(v)) for t, v in r["values"]])
                for r in data["result"]]

    def metric_names(self) -> list[str]:
        data = self.get("/api/v1/label/__name__/values")
        return list(data or [])
