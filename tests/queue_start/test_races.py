"""The early finish against a duplicate delivery racing the first, and against a connection
that drops between the start step and its answer."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

from consumers.runner import ConsumerRunner
from shared.queue import Ending, QueueService, TaskEntry
from shared.tasks import TaskStatus, dumps
from tests.queue_start.support import (
    PAYLOAD,
    PROMPT,
    Instant,
    options,
    record,
    start_sha,
    venice_handler,
)
from tests.support.fakes.fault_proxy import FaultProxy


def completed(delivery: TaskEntry, attempt: int, text: str) -> Ending:
    result = dumps({"prompt": text})
    return Ending(delivery, TaskStatus.COMPLETED, attempt, time.time(), result_json=result)


async def announced(pubsub: Any) -> list[bytes]:
    seen = []
    while (message := await pubsub.get_message(timeout=0.3)) is not None:
        if message["type"] == "message":
            seen.append(message["data"])
    return seen


async def test_a_duplicate_delivery_started_in_between_makes_the_early_finish_stand_down(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    """A starts the entry; B claims it (A looked dead) and starts it again before A's early
    finish runs: that finish does nothing, and of the two ordinary finishes the first wins;
    the result is stored and announced once."""
    task_id = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(queue.keys.channel(PROMPT))
    await pubsub.get_message(timeout=1)
    a, b = queue.consumer("a"), queue.consumer("b")
    [first] = await a.read(PROMPT, 1, 100)
    assert isinstance(first, TaskEntry) and first.first
    answer = await a.send_start([first], time.time(), "token-a")
    assert (await answer)[0] == [1]
    [duplicate] = await b.claim(PROMPT, 1, 0)
    assert isinstance(duplicate, TaskEntry) and not duplicate.first
    assert await b.start([duplicate], time.time()) == [2]
    assert await a.finish_early([completed(first, 1, "a")], "token-a", 1) == [-1]
    assert (await record(redis_client, queue, task_id))["status"] == "processing"
    assert await a.finish([completed(first, 1, "a")]) == [True]
    assert await b.finish([completed(duplicate, 2, "b")]) == [False]
    stored = await record(redis_client, queue, task_id)
    assert (stored["status"], stored["result"]) == ("completed", '{"prompt":"a"}')
    assert len(await announced(pubsub)) == 1
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    await a.close_pipes()


async def test_an_early_finish_behind_its_own_start_applies_once(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    """Written behind the start on the same connection before its answer was read: it
    applies, and the ordinary finish repeated after it (a lost answer) writes nothing new."""
    task_id = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
    a = queue.consumer("a")
    [first] = await a.read(PROMPT, 1, 100)
    assert isinstance(first, TaskEntry)
    answer = await a.send_start([first], time.time(), "token-a")
    assert await a.finish_early([completed(first, 1, "a")], "token-a", 1) == [1]
    assert (await answer)[0] == [1]
    assert await a.finish([completed(first, 1, "a")]) == [True]  # same token: idempotent
    assert (await record(redis_client, queue, task_id))["attempts"] == "1"
    await a.close_pipes()


async def test_a_connection_dropped_between_start_and_answer_counts_one_attempt(
    queue: QueueService, proxied: QueueService, proxy: FaultProxy, redis_client: aioredis.Redis
) -> None:
    """Redis ran the start, its answer is lost with the connection: the runner asks again
    with the same token (no second attempt), the provider is called once, and the task
    completes once."""
    async with venice_handler() as (venice, handler):
        task_id = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
        proxy.cut_reply_after(start_sha())
        await ConsumerRunner(proxied.consumer("c1"), {PROMPT: handler}, options()).run()
        assert proxy.cuts == 1
        assert len(venice.chat_requests) == 1
    stored = await record(redis_client, queue, task_id)
    assert (stored["status"], stored["attempts"]) == ("completed", "1")


async def test_an_instant_task_whose_start_answer_is_lost_completes_once(
    queue: QueueService, proxied: QueueService, proxy: FaultProxy, redis_client: aioredis.Redis
) -> None:
    """The early finish went behind the start on the connection that dropped: whether or not
    it ran, the task ends completed once, announced once, as attempt 1."""
    task_id = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(queue.keys.channel(PROMPT))
    await pubsub.get_message(timeout=1)
    proxy.cut_reply_after(start_sha())
    handler = Instant()
    await ConsumerRunner(proxied.consumer("c1"), {PROMPT: handler}, options()).run()
    assert proxy.cuts == 1
    assert handler.runs == 1
    stored = await record(redis_client, queue, task_id)
    assert (stored["status"], stored["attempts"]) == ("completed", "1")
    assert len(await announced(pubsub)) == 1
    await pubsub.aclose()  # type: ignore[no-untyped-call]
