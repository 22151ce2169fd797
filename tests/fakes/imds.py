"""Fake AWS IMDSv2, GCP metadata and Azure IMDS servers on 127.0.0.1.

Each reproduces the header its real service insists on, and answers like it does without it:

- AWS: ``PUT /latest/api/token`` needs ``X-aws-ec2-metadata-token-ttl-seconds`` (1–21600, else
  400); ``GET /latest/meta-data/placement/region`` needs ``X-aws-ec2-metadata-token`` with a
  token it issued, else 401 (IMDSv2 only, as on instances with HttpTokens=required).
- GCP: ``GET /computeMetadata/v1/instance/zone`` needs ``Metadata-Flavor: Google``, else 403;
  answers carry ``Metadata-Flavor: Google``.
- Azure: ``GET /metadata/instance/compute/location?api-version=…&format=text`` needs
  ``Metadata: true``, else 400; a missing api-version is 400 too.

All three refuse a request that carries ``X-Forwarded-For`` (as the real services do, to stop
proxied requests). Switch one into a failure mode with ``fake.mode``:

    async with fake_imds() as imds:
        imds.gcp.mode = "hang"
        guess = await detect_cloud_region(endpoints=imds.endpoints, timeout_s=0.2)

Every request is recorded in ``fake.requests`` as (method, path, headers, query).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from .server import FakeServer

MODES = (
    "ok",
    "hang",  # never answers (until the fake closes)
    "html",  # 200 with an HTML page, as a captive portal or a proxy would send
    "garbage",  # 200 with a body that is no region name
    "empty",  # 200 with an empty body
    "server_error",  # 500
    "not_found",  # 404, as another cloud's metadata server answers a path it does not know
)

HTML = "<!DOCTYPE html><html><head><title>Login</title></head><body>Sign in to Wi-Fi</body></html>"
GARBAGE = "us east 1; DROP TABLE regions"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]


class FakeMetadata(FakeServer):
    """A cloud metadata service: the request log and the failure modes."""

    name = ""

    def __init__(self, answer: str) -> None:
        super().__init__()
        self.answer = answer  # what the "ok" mode serves as the region (or GCP zone path)
        self.requests: list[Request] = []

    def record(self, request: web.Request) -> None:
        self.requests.append(Request(request.method, request.path, dict(request.headers), dict(request.query)))


    async def failure(self) -> web.Response | None:
        """The answer of a failure mode, or None in mode "ok" (compare with None: a Response
        is a MutableMapping, so an empty one is falsy)."""
        mode = self.mode
        if mode == "hang":
            return await self.hang()
        if mode == "html":
            return web.Response(text=HTML, content_type="text/html")
        if mode == "garbage":
            return web.Response(text=GARBAGE)
        if mode == "empty":
            return web.Response(text="")
        if mode == "server_error":
            return web.Response(status=500, text="Internal Server Error")
        if mode == "not_found":
            return web.Response(status=404, text="Not Found")
        assert mode == "ok", mode
        return None

    @staticmethod
    def forwarded(request: web.Request) -> bool:
        return "X-Forwarded-For" in request.headers


class AwsImds(FakeMetadata):
    name = "aws"
    token_mode = "ok"  # "hang": the PUT never answers (a container behind a hop limit of 1)

    def __init__(self, answer: str = "eu-west-1") -> None:
        super().__init__(answer)
        self.tokens: set[str] = set()
        self._serial = itertools.count(1)

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_put("/latest/api/token", self.token)
        router.add_get("/latest/meta-data/placement/region", self.region)

    async def token(self, request: web.Request) -> web.Response:
        self.record(request)
        if self.token_mode == "hang":
            return await self.hang()
        if self.forwarded(request):
            return web.Response(status=403, text="Forbidden")
        try:
            ttl = int(request.headers.get("X-aws-ec2-metadata-token-ttl-seconds", ""))
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= 21600:
            return web.Response(status=400, text="Bad Request")
        token = f"AQAEAF{next(self._serial):04d}-fake-imdsv2-token=="
        self.tokens.add(token)
        return web.Response(text=token, headers={"X-aws-ec2-metadata-token-ttl-seconds": str(ttl)})

    async def region(self, request: web.Request) -> web.Response:
        self.record(request)
        if request.headers.get("X-aws-ec2-metadata-token") not in self.tokens:
            return web.Response(status=401, text="Unauthorized")
        answer = await self.failure()
        return web.Response(text=self.answer) if answer is None else answer


class GcpMetadata(FakeMetadata):
    name = "gcp"
    flavor_header = True  # False: answers without Metadata-Flavor: Google (not the real server)

    def __init__(self, answer: str = "projects/123456789012/zones/europe-west4-a") -> None:
        super().__init__(answer)

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/computeMetadata/v1/instance/zone", self.zone)

    async def zone(self, request: web.Request) -> web.Response:
        self.record(request)
        headers = {"Metadata-Flavor": "Google"} if self.flavor_header else {}
        if request.headers.get("Metadata-Flavor") != "Google" or self.forwarded(request):
            return web.Response(status=403, text="Missing Metadata-Flavor:Google header.", headers=headers)
        answer = await self.failure()
        if answer is None:
            answer = web.Response(text=self.answer)
        answer.headers.update(headers)
        return answer


class AzureImds(FakeMetadata):
    name = "azure"

    def __init__(self, answer: str = "westeurope") -> None:
        super().__init__(answer)

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/metadata/instance/compute/location", self.location)

    async def location(self, request: web.Request) -> web.Response:
        self.record(request)
        if request.headers.get("Metadata") != "true" or self.forwarded(request):
            return web.json_response({"error": "Bad request. Required metadata header not specified"}, status=400)
        if "api-version" not in request.query:
            return web.json_response({"error": "Bad request. api-version was not specified"}, status=400)
        answer = await self.failure()
        if answer is not None:
            return answer
        if request.query.get("format") != "text":  # leaf values default to JSON
            return web.json_response(self.answer)
        return web.Response(text=self.answer)


@dataclass
class FakeImds:
    aws: AwsImds
    gcp: GcpMetadata
    azure: AzureImds

    @property
    def all(self) -> tuple[FakeMetadata, ...]:
        return (self.aws, self.gcp, self.azure)

    @property
    def endpoints(self) -> dict[str, str]:
        return {fake.name: fake.url for fake in self.all}

    def set_mode(self, mode: str) -> None:
        for fake in self.all:
            fake.mode = mode

    @property
    def requests(self) -> list[Request]:
        return [r for fake in self.all for r in fake.requests]


@contextlib.asynccontextmanager
async def fake_imds(**answers: Any) -> AsyncIterator[FakeImds]:
    """All three fakes started; ``answers`` sets a fake's answer by provider name."""
    fakes = FakeImds(AwsImds(**_kw(answers, "aws")), GcpMetadata(**_kw(answers, "gcp")),
                     AzureImds(**_kw(answers, "azure")))
    try:
        for fake in fakes.all:
            await fake.start()
        yield fakes
    finally:
        for fake in fakes.all:
            await fake.close()


def _kw(answers: dict[str, Any], name: str) -> dict[str, Any]:
    return {"answer": answers[name]} if name in answers else {}


async def refused_url() -> str:
    """A 127.0.0.1 URL where nothing listens (a server started, then closed)."""
    server = TestServer(web.Application(), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    await server.close()
    return url
