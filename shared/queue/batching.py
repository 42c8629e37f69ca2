"""Coalesces concurrent Lua calls into one pipelined round trip (the producer's enqueues)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from shared.queue.scripts import Scripts
from shared.queue.steps import Step

_Call = tuple[Step, "asyncio.Future[Any]"]


class ScriptBatcher:
    """Calls submitted while a round trip is in flight go out together in the next one.

    One caller alone is sent at once, so an idle producer pays no extra latency; a burst of
    callers (many users at the same moment) shares round trips and a single connection
    instead of taking one pooled connection each.
    """

    def __init__(self, redis: Redis, scripts: Scripts) -> None:
        self._redis = redis
        self._scripts = scripts
        self._pending: list[_Call] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def run(self, step: Step) -> Any:
        if self._task is None:
            self._task = asyncio.create_task(self._flush_loop(), name="script-batcher")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((step, future))
        self._wakeup.set()
        return await future

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _, future in self._pending:
            if not future.done():
                future.set_exception(ConnectionError("queue closed"))
        self._pending = []

    async def _flush_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            if batch:
                await self._flush(batch)

    async def _flush(self, batch: list[_Call]) -> None:
        try:
            results = await self._execute(batch)
            if any(isinstance(r, NoScriptError) for r in results):
                # Redis restarted and lost its script cache: load once and run the batch
                # again. No call of a NOSCRIPT batch ran, so nothing happens twice.
                await self._scripts.load()
                results = await self._execute(batch)
        except Exception as exc:  # noqa: BLE001 - every caller of the batch gets the error
            results = [exc] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for step, _ in batch:
            self._scripts.queue(pipe, step)
        return list(await pipe.execute(raise_on_error=False))
