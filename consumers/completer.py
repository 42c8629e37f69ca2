"""Batches finished tasks into one pipelined round trip; a task's slot frees only once stored."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import structlog
from redis.exceptions import RedisError

from shared.queue import Ending, StreamConsumer
from shared.queue.connection import cancel_requested
from shared.tasks import TaskType

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Lane:
    """The outcomes of one task type waiting for their flush."""

    pending: list[tuple[Ending, asyncio.Future[bool]]] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Completer:
    """Collects outcomes while a flush is in flight and sends them together.

    Under light load every outcome is flushed at once (no added latency); under heavy load
    they coalesce into one pipeline per round trip. A Redis error keeps the outcomes and
    retries: a result is never dropped and an entry is acked only after its result is stored.
    Each task type flushes on its own lane: on a cluster a type lives on one shard, and a
    shard failing over (or waiting for a replica it lacks) must not hold up the others.
    """

    def __init__(self, consumer: StreamConsumer) -> None:
        self._consumer = consumer
        self._lanes: dict[TaskType, _Lane] = {}
        self._started = False

    def start(self) -> None:
        self._started = True
        for task_type in self._lanes:
            self._lane(task_type)

    async def submit(self, outcome: Ending) -> bool:
        """Store, ack and announce; True if this call wrote the final state."""
        lane = self._lane(outcome.entry.task_type)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        lane.pending.append((outcome, future))
        lane.wakeup.set()
        return await future

    def _lane(self, task_type: TaskType) -> _Lane:
        lane = self._lanes.get(task_type)
        if lane is None:
            lane = self._lanes[task_type] = _Lane()
        if lane.task is None and self._started:
            lane.task = asyncio.create_task(self._flush_loop(lane), name=f"completer-{task_type}")
        return lane

    async def aclose(self) -> None:
        self._started = False
        for lane in self._lanes.values():
            if lane.task is not None:
                lane.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.task
                lane.task = None

    async def _flush_loop(self, lane: _Lane) -> None:
        backoff = 0.05
        while not cancel_requested():
            await lane.wakeup.wait()
            lane.wakeup.clear()
            batch, lane.pending = lane.pending, []
            if not batch:
                continue
            try:
                written = await self._consumer.finish([outcome for outcome, _ in batch])
            except (RedisError, OSError) as exc:
                log.warning("finish_failed", error=str(exc), batch=len(batch), retry_in=backoff)
                lane.pending = batch + lane.pending
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                lane.wakeup.set()
                continue
            backoff = 0.05
            for (_, future), wrote in zip(batch, written, strict=True):
                if not future.done():
                    future.set_result(wrote)
