"""Coalesces concurrent Lua calls into one pipelined round trip (the producer's enqueues)."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from shared.closing import stop_loops
from shared.queue.scripts import Scripts
from shared.queue.step_batches import run_steps
from shared.queue.steps import Step

_Call = tuple[Step, "asyncio.Future[Any]"]


@dataclass(slots=True)
class _Lane:
    pending: list[_Call] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class ScriptBatcher:
    """Calls submitted while a round trip is in flight go out together in the next one.

    One caller alone is sent at once, so an idle producer pays no extra latency; a burst of
    callers (many users at the same moment) shares round trips and a single connection
    instead of taking one pooled connection each. Calls of different lanes (task types) never
    share a round trip: on a cluster each type lives on one shard, and a shard failing over
    (or waiting for a replica) must not hold up the others, nor fail their calls with it.
    """

    def __init__(self, scripts: Scripts) -> None:
        self._scripts = scripts
        self._lanes: dict[Hashable, _Lane] = {}
        self._closing = False

    async def run(self, step: Step, lane: Hashable = None) -> Any:
        if self._closing:
            raise ConnectionError("queue closed")
        queue = self._lanes.get(lane)
        if queue is None:
            queue = self._lanes[lane] = _Lane()
        if queue.task is None:
            queue.task = asyncio.create_task(self._flush_loop(queue), name="script-batcher")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queue.pending.append((step, future))
        queue.wakeup.set()
        return await future

    async def aclose(self) -> None:
        # The flag and the wakeup, not only the cancel (see shared.closing).
        self._closing = True
        for lane in self._lanes.values():
            lane.wakeup.set()
        await stop_loops([lane.task for lane in self._lanes.values() if lane.task], "batcher")
        for lane in self._lanes.values():
            lane.task = None
            for _, future in lane.pending:
                if not future.done():
                    future.set_exception(ConnectionError("queue closed"))
            lane.pending = []

    async def _flush_loop(self, lane: _Lane) -> None:
        while not self._closing:
            await lane.wakeup.wait()
            lane.wakeup.clear()
            batch, lane.pending = lane.pending, []
            if batch:
                await self._flush(batch)

    async def _flush(self, batch: list[_Call]) -> None:
        try:
            # Durable: with REDIS_WAIT_REPLICAS set, the whole batch waits once for the
            # replicas, so a burst pays one wait, not one per call. Enqueues onto one stream
            # share one script call.
            steps = [step for step, _ in batch]
            results = await run_steps(self._scripts, steps, raise_on_error=False)
        except Exception as exc:  # noqa: BLE001 - every caller of the batch gets the error
            results = [exc] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
