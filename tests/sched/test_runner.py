"""The runner under provider leases, in process: adoption, and every lease given back."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from consumers.gates import ProviderGate
from consumers.runner import ConsumerRunner, RunnerOptions
from consumers.task_run import TaskRun
from shared.limits import parse_rate
from shared.queue import QueueService, TaskEntry
from shared.queue.leases import ProviderLeases, ProviderLimit
from shared.tasks import (
    ImagePromptResult,
    ImageResult,
    QueueTask,
    TaskResult,
    TaskStatus,
    TaskType,
)
from tests.support.sched_helpers import PAYLOADS

PROMPT = TaskType.GENERATE_IMAGE_PROMPT
LIMIT = ProviderLimit("offline", 2, parse_rate("1000/s:5"))


class Counting:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def __call__(self, task: QueueTask, run: TaskRun) -> TaskResult:
        self.calls[task.task_id] += 1
        await asyncio.sleep(0.02)
        return ImagePromptResult(prompt="p")


def gated(queue: QueueService, name: str) -> ProviderGate:
    gate = ProviderGate(LIMIT)
    gate.attach(
        ProviderLeases(
            redis=queue.redis,
            scripts=queue.scripts,
            keys=queue.keys,
            limit=LIMIT,
            holder=name,
            ttl_ms=3000,
        )
    )
    return gate


async def test_a_gated_runner_adopts_each_orphan_once_and_returns_every_lease(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    ids = await queue.enqueue_many(PROMPT, [(i, PAYLOADS[PROMPT]) for i in range(6)])
    # An earlier process named c1 read and started four of them, then died.
    earlier = queue.consumer("c1")
    orphans = [e for e in await earlier.read(PROMPT, 4, 100) if isinstance(e, TaskEntry)]
    await earlier.start(orphans, time.time())
    handler = Counting()
    options = RunnerOptions(limits={PROMPT: 8}, burst=True)
    gate = gated(queue, "c1")
    runner = ConsumerRunner(queue.consumer("c1"), {PROMPT: handler}, options, gates={PROMPT: gate})
    await runner.run()
    # Leases are asked for one at a time at first: adoption must not take back a running one.
    assert handler.calls == Counter(dict.fromkeys(ids, 1))
    tasks = [await queue.get_task(i) for i in ids]
    attempts = sorted(
        t.attempts for t in tasks if t is not None and t.status is TaskStatus.COMPLETED
    )
    assert attempts == [1, 1, 2, 2, 2, 2]
    assert await redis_client.zcard(queue.keys.leases("offline")) == 0


IMAGE = TaskType.GENERATE_IMAGE


class Stalling:
    """Holds "a1" until it is stopped; every other task ends at once."""

    def __init__(self) -> None:
        self.started: list[str] = []

    async def __call__(self, task: QueueTask, run: TaskRun) -> TaskResult:
        self.started.append(task.task_id)
        if task.task_id == "a1":
            await asyncio.sleep(30)
        return ImageResult(image_base64="", image_size=0)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.mark.topologies("single", "cluster")
async def test_cancelled_tasks_hold_no_lease_and_no_place_of_their_user(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    """a1 runs under a lease and is stopped; a2 (parked) and h1 (parked, high priority) are
    cancelled while they wait and never run; a3, parked behind them all, runs next."""
    handler = Stalling()
    options = RunnerOptions(limits={IMAGE: 4}, user_caps={IMAGE: 1}, claim_idle_ms=3000)
    gate = gated(queue, "c1")
    runner = ConsumerRunner(queue.consumer("c1"), {IMAGE: handler}, options, gates={IMAGE: gate})
    job = asyncio.create_task(runner.run())
    try:
        await queue.enqueue_task(IMAGE, 7, PAYLOADS[IMAGE], task_id="a1")
        leases = queue.keys.leases("offline")
        await until(lambda: _held(redis_client, leases, handler))
        for task_id in ("a2", "h1", "a3"):
            high = "high" if task_id == "h1" else "normal"
            await queue.enqueue_task(IMAGE, 7, PAYLOADS[IMAGE], task_id=task_id, priority=high)
        await until(lambda: _parked(queue, 3))
        assert await queue.cancel(IMAGE, "a2") is TaskStatus.CANCELLED
        assert await queue.cancel(IMAGE, "h1") is TaskStatus.CANCELLED
        assert await queue.cancel(IMAGE, "a1") is TaskStatus.PROCESSING
        stopped = await queue.wait_for_task_result("a1", 5, IMAGE)
        assert stopped.status is TaskStatus.CANCELLED
        done = await queue.wait_for_task_result("a3", 5, IMAGE)
        assert done.status is TaskStatus.COMPLETED
    finally:
        runner.stop()
        await asyncio.wait_for(job, 10)
    assert handler.started == ["a1", "a3"]
    assert await redis_client.zcard(leases) == 0
    assert await redis_client.scard(queue.keys.user_running(IMAGE, 7)) == 0
    assert await redis_client.llen(queue.keys.user_parked(IMAGE, 7)) == 0
    depth = await queue.get_queue_depth(IMAGE)
    assert (depth.stream_length, depth.parked, depth.in_flight) == (0, 0, 0)


async def _held(redis: aioredis.Redis, leases: str, handler: Stalling) -> bool:
    return handler.started == ["a1"] and await redis.zcard(leases) == 1


async def _parked(queue: QueueService, count: int) -> bool:
    return (await queue.get_queue_depth(IMAGE)).parked == count
