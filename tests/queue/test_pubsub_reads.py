"""Reading pub/sub messages straight off the connection (shared.queue.subscription).

A burst already received comes in one call, in order; a message cut short by a silent peer
holds the read only until the deadline, and what was read before it is handed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from shared.config import Settings
from shared.queue.connection import RedisClient, create_redis
from shared.queue.subscription import BURST, Message, next_messages, open_pubsub

UPSTREAM = ("127.0.0.1", 6379)


class ThrottledProxy:
    """Forwards everything to Redis; replies only up to `budget` bytes while one is set."""

    def __init__(self) -> None:
        self.budget: int | None = None
        self._held = bytearray()
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def __aenter__(self) -> ThrottledProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def allow(self, budget: int | None) -> None:
        self.budget = budget
        self._changed.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*UPSTREAM)
        self._writers += [writer, up_writer]
        for task in (self._pipe(reader, up_writer), self._replies(up_reader, writer)):
            self._tasks.add(asyncio.create_task(task))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    async def _replies(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        read = asyncio.create_task(reader.read(65536))
        while True:
            changed = asyncio.create_task(self._changed.wait())
            await asyncio.wait({read, changed}, return_when=asyncio.FIRST_COMPLETED)
            self._changed.clear()
            changed.cancel()
            if read.done():
                self._held += read.result()
                read = asyncio.create_task(reader.read(65536))
            size = len(self._held) if self.budget is None else min(self.budget, len(self._held))
            if size:
                writer.write(bytes(self._held[:size]))
                del self._held[:size]
                if self.budget is not None:
                    self.budget -= size
                await writer.drain()


@pytest.fixture
async def proxy() -> AsyncIterator[ThrottledProxy]:
    async with ThrottledProxy() as running:
        yield running


def _push(channel: str, data: bytes) -> bytes:
    """A RESP3 message push, as Redis sends it."""
    parts = [b"message", channel.encode(), data]
    return b">3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


async def _subscribed(settings: Settings, url: str, channel: str) -> tuple[RedisClient, PubSub]:
    client = create_redis(settings.replace(redis_url=url), "pubsub-reads", 1, retries=0)
    pubsub = open_pubsub(client)
    await pubsub.subscribe(channel)
    [(kind, confirmed, _)] = await next_messages(pubsub, [channel], 5.0)
    assert (kind, confirmed) == (b"subscribe", channel.encode())
    return client, pubsub


async def test_a_burst_already_received_comes_in_one_call_in_order(settings: Settings) -> None:
    channel = f"test:{uuid.uuid4().hex}:ch"
    client, pubsub = await _subscribed(settings, settings.redis_url, channel)
    publisher = aioredis.Redis.from_url(settings.redis_url)
    try:
        pipe = publisher.pipeline(transaction=False)
        for i in range(BURST + 50):
            pipe.publish(channel, str(i))
        await pipe.execute()
        await asyncio.sleep(0.2)  # all of it is in the socket buffer by now
        got: list[Message] = []
        calls = 0
        while len(got) < BURST + 50:
            got += await next_messages(pubsub, [channel], 5.0)
            calls += 1
        assert [data for _, _, data in got] == [str(i).encode() for i in range(BURST + 50)]
        assert {(kind, ch) for kind, ch, _ in got} == {(b"message", channel.encode())}
        assert calls <= 3  # bursts, not one call per message
        started = time.monotonic()
        assert await next_messages(pubsub, [channel], 0.3) == []
        assert 0.25 < time.monotonic() - started < 2
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()
        await publisher.aclose()


async def test_a_message_cut_short_holds_the_read_only_until_the_deadline(
    settings: Settings, proxy: ThrottledProxy
) -> None:
    channel = f"test:{uuid.uuid4().hex}:ch"
    url = f"redis://127.0.0.1:{proxy.port}/0"
    client, pubsub = await _subscribed(settings, url, channel)
    publisher = aioredis.Redis.from_url(settings.redis_url)
    try:
        # The first message whole, then five bytes of the second: the peer goes silent.
        proxy.allow(len(_push(channel, b"first")) + 5)
        pipe = publisher.pipeline(transaction=False)
        pipe.publish(channel, b"first")
        pipe.publish(channel, b"second")
        await pipe.execute()
        await asyncio.sleep(0.2)
        started = time.monotonic()
        got = await next_messages(pubsub, [channel], 0.5)
        assert [data for _, _, data in got] == [b"first"]
        assert time.monotonic() - started < 2
        proxy.allow(None)  # the rest arrives: the cut message is read whole
        got = await next_messages(pubsub, [channel], 5.0)
        assert [data for _, _, data in got] == [b"second"]
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()
        await publisher.aclose()
