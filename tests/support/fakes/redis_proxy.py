"""A TCP proxy in front of the real Redis (or PostgreSQL) that can lose a reply after the
command ran.

`cut_reply_after(marker)` arms a one-shot fault: the next request whose bytes contain
`marker` is forwarded to Redis, Redis runs it and answers, and the proxy drops that answer and
closes the client's connection. The client sees a connection error for a command that did
happen, which is exactly when a blind retry can repeat a side effect.
`delay_reply_after(marker, seconds)` only holds that reply back for a while, and
`hold_requests_from(marker)` keeps that request from Redis altogether.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class _Link:
    cut_next_reply: bool = False
    delay_next_reply: float = 0.0
    holding: bool = False  # requests stop here: Redis never sees them
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


class RedisProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._armed: list[bytes] = []
        self._delayed: list[tuple[bytes, float]] = []
        self._held: list[bytes] = []
        self.held = 0
        self._links: set[asyncio.Task[None]] = set()
        self.cuts = 0
        self.port = 0

    async def __aenter__(self) -> RedisProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._links):
            task.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cut_reply_after(self, marker: bytes) -> None:
        self._armed.append(marker)

    def hold_requests_from(self, marker: bytes) -> None:
        """The next request containing `marker`, and everything after it on its connection,
        never reaches Redis (until the connection closes)."""
        self._held.append(marker)

    def delay_reply_after(self, marker: bytes, seconds: float) -> None:
        """The next reply after a request containing `marker` (and whatever comes with it)
        reaches the client `seconds` late; Redis ran the command at once."""
        self._delayed.append((marker, seconds))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._links.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        link = _Link(writers=[writer, up_writer])
        try:
            await asyncio.gather(
                self._requests(reader, up_writer, link), self._replies(up_reader, writer, link)
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            link.close()
            if task is not None:
                self._links.discard(task)

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
            if link.cut_next_reply:
                # Redis ran the command and answered; the client never hears of it.
                self.cuts += 1
                with contextlib.suppress(OSError):
                    link.close()
                return
            if link.delay_next_reply:
                delay, link.delay_next_reply = link.delay_next_reply, 0.0
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
        link.close()
