"""The runner under provider leases, in process: adoption, and every lease given back."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import redis.asyncio as aioredis

from consumers.gates import ProviderGate
from consumers.runner import ConsumerRunner, RunnerOptions
from shared.limits import parse_rate
from shared.queue import Delivery, QueueService
from shared.queue.leases import ProviderLeases, ProviderLimit
from shared.tasks import ImagePromptResult, QueueTask, TaskResult, TaskStatus, TaskType
from tests.sched_helpers import PAYLOADS

PROMPT = TaskType.GENERATE_IMAGE_PROMPT
LIMIT = ProviderLimit("offline", 2, parse_rate("1000/s:5"))


class Counting:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def __call__(self, task: QueueTask) -> TaskResult:
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
    orphans = [e for e in await earlier.read(PROMPT, 4, 100) if isinstance(e, Delivery)]
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
