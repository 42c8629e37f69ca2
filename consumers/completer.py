"""Batches finished tasks into one pipelined round trip; a task's slot frees only once stored."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from redis.exceptions import RedisError

from shared.queue import Outcome, StreamConsumer
from shared.queue.connection import cancel_requested

log = structlog.get_logger(__name__)


class Completer:
    """Collects outcomes while a flush is in flight and sends them together.

    Under light load every outcome is flushed at once (no added latency); under heavy load
    they coalesce into one pipeline per round trip. A Redis error keeps the outcomes and
    retries: a result is never dropped and an entry is acked only after its result is stored.
    """

    def __init__(self, consumer: StreamConsumer) -> None:
        self._consumer = consumer
        self._pending: list[tuple[Outcome, asyncio.Future[bool]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._flush_loop(), name="completer")

    async def submit(self, outcome: Outcome) -> bool:
        """Store, ack and announce; True if this call wrote the final state."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((outcome, future))
        self._wakeup.set()
        return await future

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _flush_loop(self) -> None:
        backoff = 0.05
        while not cancel_requested():
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                written = await self._consumer.finish([outcome for outcome, _ in batch])
            except (RedisError, OSError) as exc:
                log.warning("finish_failed", error=str(exc), batch=len(batch), retry_in=backoff)
                self._pending = batch + self._pending
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                self._wakeup.set()
                continue
            backoff = 0.05
            for (_, future), wrote in zip(batch, written, strict=True):
                if not future.done():
                    future.set_result(wrote)
