"""A reply lost after a Lua step ran: the client retries, and the step must answer the same.

Every test runs the queue through a proxy that lets Redis run one command and then drops its
reply and the connection, so redis-py's retry sends the very same command again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis

from shared.queue import Ending, QueueService, TaskEntry
from shared.queue.keys import GROUP
from shared.queue.lua import SCRIPTS
from shared.queue.scripts import script_sha
from shared.tasks import TaskStatus, TaskType, dumps
from tests.support.fakes.fault_proxy import FaultProxy

PROMPT = TaskType.GENERATE_IMAGE_PROMPT
PAYLOAD = {"girl_name": "Мира", "girl_description": "бариста"}


def sha(name: str) -> bytes:
    return script_sha(SCRIPTS[name]).encode()


async def announcements(
    redis_client: aioredis.Redis, queue: QueueService, action: Any
) -> list[dict[str, Any]]:
    """The completion messages published while `action` runs."""
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(queue.keys.channel(PROMPT))
    await pubsub.get_message(timeout=1)
    await action()
    seen = []
    while (message := await pubsub.get_message(timeout=0.3)) is not None:
        if message["type"] == "message":
            seen.append(message)
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    return seen


async def started_delivery(proxied: QueueService) -> TaskEntry:
    await proxied.enqueue_task(PROMPT, 1, PAYLOAD, task_id="t-1")
    [entry] = await proxied.consumer("c1").read(PROMPT, 1, 100)
    assert isinstance(entry, TaskEntry)
    return entry


async def test_enqueue_repeated_after_a_lost_reply_adds_one_entry(
    proxied: QueueService, proxy: FaultProxy, redis_client: aioredis.Redis
) -> None:
    proxy.cut_reply_after(sha("enqueue"))
    assert await proxied.enqueue_task(PROMPT, 1, PAYLOAD, task_id="t-1") == "t-1"
    assert proxy.cuts == 1
    assert await redis_client.xlen(proxied.keys.stream(PROMPT)) == 1


async def test_start_repeated_after_a_lost_reply_counts_one_attempt(
    proxied: QueueService, proxy: FaultProxy, redis_client: aioredis.Redis
) -> None:
    entry = await started_delivery(proxied)
    proxy.cut_reply_after(sha("start"))
    assert await proxied.consumer("c1").start([entry], time.time()) == [1]
    assert proxy.cuts == 1
    record = proxied.keys.record(PROMPT, "t-1")
    assert await redis_client.hget(record, "attempts") == b"1"


async def test_finish_repeated_after_a_lost_reply_says_it_wrote_and_announces_once(
    proxied: QueueService, proxy: FaultProxy, redis_client: aioredis.Redis
) -> None:
    entry = await started_delivery(proxied)
    consumer = proxied.consumer("c1")
    [attempt] = await consumer.start([entry], time.time())
    outcome = Ending(entry, TaskStatus.COMPLETED, attempt, result_json=dumps({"prompt": "p"}))
    wrote: list[bool] = []

    async def finish() -> None:
        proxy.cut_reply_after(sha("finish"))
        wrote.extend(await consumer.finish([outcome]))

    seen = await announcements(redis_client, proxied, finish)
    assert proxy.cuts == 1
    assert wrote == [True] and len(seen) == 1
    task = await proxied.get_task("t-1", PROMPT)
    assert task is not None and task.status is TaskStatus.COMPLETED
    # A duplicate run of the same entry by another consumer still writes nothing.
    late = Ending(entry, TaskStatus.COMPLETED, 2, result_json=dumps({"prompt": "late"}))
    assert await proxied.consumer("c2").finish([late]) == [False]


async def test_fail_repeated_after_a_lost_reply_dead_letters_once(
    proxied: QueueService, proxy: FaultProxy, redis_client: aioredis.Redis
) -> None:
    entry = await started_delivery(proxied)
    wrote: list[bool] = []

    async def fail() -> None:
        proxy.cut_reply_after(sha("fail"))
        wrote.extend(await proxied.consumer("c1").fail([entry], "provider refused"))

    seen = await announcements(redis_client, proxied, fail)
    assert proxy.cuts == 1 and wrote == [True] and len(seen) == 1
    assert await redis_client.xlen(proxied.keys.dead(PROMPT)) == 1
    assert await redis_client.xlen(proxied.keys.stream(PROMPT)) == 0


async def test_hand_back_repeated_after_a_lost_reply_answers_with_the_same_entry(
    proxied: QueueService, proxy: FaultProxy, redis_client: aioredis.Redis
) -> None:
    entry = await started_delivery(proxied)
    consumer = proxied.consumer("c1")
    await consumer.start([entry], time.time())
    proxy.cut_reply_after(sha("requeue"))
    assert await consumer.requeue([entry]) == 1
    assert proxy.cuts == 1
    stream = proxied.keys.stream(PROMPT)
    entries: Any = await redis_client.xrange(stream)
    assert len(entries) == 1 and entries[0][0].decode() != entry.entry_id
    pending = await redis_client.xpending(stream, GROUP)
    assert pending["pending"] == 0


async def test_a_burst_of_cut_replies_loses_and_repeats_nothing(
    proxied: QueueService, proxy: FaultProxy, redis_client: aioredis.Redis
) -> None:
    """Many tasks; the enqueue, start and finish replies of some are lost on the way."""
    # The concurrent enqueues travel together, in one call of the batch script; so do the
    # finishes.
    for name in ("enqueue_batch", "start", "finish_batch"):
        proxy.cut_reply_after(sha(name))
    ids = [f"b-{i}" for i in range(20)]
    await asyncio.gather(*(proxied.enqueue_task(PROMPT, 1, PAYLOAD, task_id=i) for i in ids))
    consumer = proxied.consumer("c1")
    entries = [e for e in await consumer.read(PROMPT, 50, 100) if isinstance(e, TaskEntry)]
    attempts = await consumer.start(entries, time.time())
    outcomes = [
        Ending(e, TaskStatus.COMPLETED, n, result_json=dumps({"prompt": e.task.task_id}))
        for e, n in zip(entries, attempts, strict=True)
    ]
    assert await consumer.finish(outcomes) == [True] * 20
    assert proxy.cuts == 3 and attempts == [1] * 20
    for task_id in ids:
        task = await proxied.get_task(task_id, PROMPT)
        assert task is not None and task.status is TaskStatus.COMPLETED
        assert task.result == {"prompt": task_id} and task.attempts == 1
    assert await redis_client.xlen(proxied.keys.stream(PROMPT)) == 0


async def test_cancel_repeated_after_a_lost_reply_cancels_and_announces_once(
    proxied: QueueService, proxy: FaultProxy, redis_client: aioredis.Redis
) -> None:
    await proxied.enqueue_task(PROMPT, 1, PAYLOAD, task_id="t-1")
    statuses: list[TaskStatus | None] = []

    async def cancel() -> None:
        proxy.cut_reply_after(sha("cancel"))
        statuses.append(await proxied.cancel(PROMPT, "t-1"))

    seen = await announcements(redis_client, proxied, cancel)
    assert proxy.cuts == 1
    assert statuses == [TaskStatus.CANCELLED] and len(seen) == 1
    task = await proxied.get_task("t-1", PROMPT)
    assert task is not None and task.status is TaskStatus.CANCELLED and task.result is None
    # The waiting entry is never run: the start step finds the task final.
    entry = await proxied.consumer("c1").read(PROMPT, 1, 100)
    assert await proxied.consumer("c1").start(entry, time.time()) == [-1]  # type: ignore[arg-type]


async def test_cancel_of_a_running_task_repeated_after_a_lost_reply_flags_it(
    proxied: QueueService, proxy: FaultProxy, redis_client: aioredis.Redis
) -> None:
    entry = await started_delivery(proxied)
    consumer = proxied.consumer("c1")
    await consumer.start([entry], time.time())
    proxy.cut_reply_after(sha("cancel"))
    assert await proxied.cancel(PROMPT, "t-1") is TaskStatus.PROCESSING
    assert proxy.cuts == 1
    assert await consumer.cancel_requested(PROMPT, ["t-1", "other"]) == ["t-1"]
    # Whoever starts the entry next (a peer that claimed it) finishes it as cancelled unrun.
    assert await proxied.consumer("c2").start([entry], time.time()) == [-2]


async def test_enqueue_batch_repeated_after_a_lost_reply_adds_each_task_once(
    proxied: QueueService, proxy: FaultProxy, redis_client: aioredis.Redis
) -> None:
    proxy.cut_reply_after(sha("enqueue_batch"))
    ids = await proxied.enqueue_many(PROMPT, [(i, PAYLOAD) for i in range(5)])
    assert proxy.cuts == 1 and len(set(ids)) == 5
    assert await redis_client.xlen(proxied.keys.stream(PROMPT)) == 5
    for task_id in ids:
        task = await proxied.get_task(task_id, PROMPT)
        assert task is not None and task.status is TaskStatus.PENDING


async def test_finish_batch_repeated_after_a_lost_reply_writes_and_announces_each_once(
    proxied: QueueService, proxy: FaultProxy, redis_client: aioredis.Redis
) -> None:
    ids = await proxied.enqueue_many(PROMPT, [(i, PAYLOAD) for i in range(4)])
    consumer = proxied.consumer("c1")
    entries = [e for e in await consumer.read(PROMPT, 4, 100) if isinstance(e, TaskEntry)]
    attempts = await consumer.start(entries, time.time())
    outcomes = [
        Ending(e, TaskStatus.COMPLETED, n, result_json=dumps({"prompt": e.task.task_id}))
        for e, n in zip(entries, attempts, strict=True)
    ]
    wrote: list[bool] = []

    async def finish() -> None:
        proxy.cut_reply_after(sha("finish_batch"))
        wrote.extend(await consumer.finish(outcomes))

    seen = await announcements(redis_client, proxied, finish)
    assert proxy.cuts == 1
    assert wrote == [True] * 4 and len(seen) == 4
    assert await redis_client.xlen(proxied.keys.stream(PROMPT)) == 0
    for task_id in ids:
        task = await proxied.get_task(task_id, PROMPT)
        assert task is not None and task.status is TaskStatus.COMPLETED
        assert task.result == {"prompt": task_id}
