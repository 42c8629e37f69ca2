"""The loopback fault proxy: a TCP proxy in front of a real server (Redis or PostgreSQL) that
a test breaks on purpose.

Whole-link faults (`break_`, `mend`): `Fault.REFUSE` refuses new connections and cuts the
open ones (the server seems down, as in a restart); `Fault.LOSE_REPLIES` lets requests reach
the server but loses every reply and cuts its connection (commands run, and their client
cannot know it).

One-shot faults, armed by a marker (bytes the request contains):
- `cut_reply_after(marker)`: the server runs that request and answers; the proxy drops the
  answer and closes the client's connection, which is exactly when a blind retry can repeat
  a side effect;
- `delay_reply_after(marker, seconds)`: that reply (and what comes with it) arrives late;
- `hold_requests_from(marker)`: that request, and everything after it on its connection,
  never reaches the server.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Self


class Fault(StrEnum):
    NONE = "none"
    REFUSE = "refuse"
    LOSE_REPLIES = "lose_replies"


@dataclass(eq=False)  # kept in a set: hashed by identity
class _Link:
    cut_next_reply: bool = False
    delay_next_reply: float = 0.0
    holding: bool = False  # requests stop here: the server never sees them
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()

    def abort(self) -> None:
        for writer in self.writers:
            writer.transport.abort()


class FaultProxy:
    """``async with FaultProxy(6379) as proxy``: clients connect to ``proxy.port``."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._armed: list[bytes] = []
        self._delayed: list[tuple[bytes, float]] = []
        self._held: list[bytes] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._open: set[_Link] = set()
        self.fault = Fault.NONE
        self.held = 0
        self.cuts = 0
        self.port = 0

    async def __aenter__(self) -> Self:
        await self._listen()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop_listening()
        self._cut_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

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

    def cut_reply_after(self, marker: bytes) -> None:
        self._armed.append(marker)

    def hold_requests_from(self, marker: bytes) -> None:
        self._held.append(marker)

    def delay_reply_after(self, marker: bytes, seconds: float) -> None:
        self._delayed.append((marker, seconds))

    async def _listen(self) -> None:
        # The same port again after a REFUSE, so clients reconnect to where they were.
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _cut_all(self) -> None:
        for link in list(self._open):
            link.abort()
        self._open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.fault is Fault.REFUSE:
            writer.transport.abort()
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writers=[writer, up_writer])
        self._open.add(link)
        try:
            await asyncio.gather(
                self._requests(reader, up_writer, link), self._replies(up_reader, writer, link)
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            link.close()
            self._open.discard(link)
            if task is not None:
                self._tasks.discard(task)

    async def _requests(
        self, reader: asyncio.StreamReader, up: asyncio.StreamWriter, link: _Link
    ) -> None:
        while data := await reader.read(65536):
            for marker in list(self._armed):
                if marker in data:
                    self._armed.remove(marker)
                    link.cut_next_reply = True
            for marker in list(self._held):
                if marker in data:
                    self._held.remove(marker)
                    link.holding = True
                    self.held += 1
            if link.holding:
                continue
            for marker, seconds in list(self._delayed):
                if marker in data:
                    self._delayed.remove((marker, seconds))
                    link.delay_next_reply = seconds
            up.write(data)
            await up.drain()
        link.close()

    async def _replies(
        self, up: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        while data := await up.read(65536):
            if link.cut_next_reply or self.fault is Fault.LOSE_REPLIES:
                # The server ran the command and answered; the client never hears of it.
                self.cuts += 1
                with contextlib.suppress(OSError):
                    if link.cut_next_reply:
                        link.close()
                    else:
                        link.abort()
                return
            if link.delay_next_reply:
                delay, link.delay_next_reply = link.delay_next_reply, 0.0
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
        link.close()
