"""A loopback aiohttp fake-server base: scripted replies, recorded requests, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import orjson
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RecordedRequest:
    """What a client sent: header names are lower-case, `json` is None for non-JSON bodies."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any
    at: float  # time.monotonic() when the request arrived


@dataclass(frozen=True)
class Reply:
    """A scripted answer; `delay` holds it back (longer than a client timeout = a hang)."""

    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    delay: float = 0.0


def hang(seconds: float = 30.0) -> Reply:
    """A reply that never arrives within any sane client timeout (ends early on server close)."""
    return Reply(status=504, json={"error": "fake server hang"}, delay=seconds)


def json_response(
    data: Any,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    content_type: str = "application/json",
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        headers=dict(headers or {}),
        content_type=content_type,
    )


async def read_json(request: web.Request) -> Any:
    """The request's JSON body, or None when it is missing or malformed."""
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None


def make_png(width: int, height: int, seed: int = 0) -> bytes:
    """A small valid RGB PNG (vertical gradient) so fakes need no image library."""
    rows = b"".join(
        b"\x00" + bytes(((seed + y) % 256, (seed * 7) % 256, (255 - y) % 256)) * width
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


class FakeServer:
    """Base for fakes: subclasses add routes; tests script replies and read `requests`.

    Use as `async with FakeX() as fake:`; `fake.url` is the base URL a client should use.
    """

    base_path = ""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._scripts: list[tuple[str | None, Reply]] = []
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self._port = 0

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError("fake server is not running")
        return f"http://127.0.0.1:{self._port}{self.base_path}"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def script(self, *replies: Reply, path: str | None = None) -> None:
        """Queue replies for the next requests whose path starts with `path` (any if None)."""
        self._scripts.extend((path, reply) for reply in replies)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.path.startswith(path)]

    async def pause(self, seconds: float) -> None:
        """Sleep that ends at once when the server closes, so hangs never delay teardown."""
        assert self._closing is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    async def start(self) -> None:
        self._closing = asyncio.Event()
        app = web.Application(middlewares=[self._middleware])
        self.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        parsed: Any = None
        if body and request.content_type == "application/json":
            with contextlib.suppress(orjson.JSONDecodeError):
                parsed = orjson.loads(body)
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers={key.lower(): value for key, value in request.headers.items()},
                body=body,
                json=parsed,
                at=time.monotonic(),
            )
        )
        scripted = self._take_script(request.path)
        if scripted is None:
            return await handler(request)
        if scripted.delay:
            await self.pause(scripted.delay)
        payload = scripted.body if scripted.body is not None else orjson.dumps(scripted.json)
        return web.Response(
            body=payload,
            status=scripted.status,
            headers=dict(scripted.headers),
            content_type=scripted.content_type,
        )

    def _take_script(self, path: str) -> Reply | None:
        for index, (prefix, reply) in enumerate(self._scripts):
            if prefix is None or path.startswith(prefix):
                del self._scripts[index]
                return reply
        return None
