"""A loopback TCP proxy in front of a real server (Redis) that a test can break and mend."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from enum import StrEnum
from types import TracebackType
from typing import Any, Self


class Fault(StrEnum):
    NONE = "none"
    # Connections are refused and open ones cut: the server seems down (a restart).
    REFUSE = "refuse"
    # Requests reach the server, but every reply is lost and its connection cut: commands
    # run, and their client cannot know it.
    LOSE_REPLIES = "lose_replies"


class TcpProxy:
    """``async with TcpProxy(6379) as proxy``: clients connect to ``proxy.port``."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.fault = Fault.NONE
        self.port = 0

    async def __aenter__(self) -> Self:
        await self._listen()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop_listening()
        self._cut_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def break_(self, fault: Fault) -> None:
        """Start failing: REFUSE stops listening; both cut the connections now open."""
        self.fault = fault
        if fault is Fault.REFUSE:
            await self._stop_listening()
        self._cut_all()

    async def mend(self) -> None:
        if self.fault is Fault.REFUSE:
            await self._listen()
        self.fault = Fault.NONE

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _cut_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.fault is Fault.REFUSE:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        upstream = self._spawn(self._pump(reader, up_writer, replies=False))
        downstream = self._spawn(self._pump(up_reader, writer, replies=True))
        await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
        for end in (writer, up_writer):
            end.transport.abort()
            self._writers.discard(end)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, replies: bool
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await source.read(65536):
                if replies and self.fault is Fault.LOSE_REPLIES:
                    return
                sink.write(data)
                await sink.drain()
