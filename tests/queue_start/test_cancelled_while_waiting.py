"""A task cancelled while it waited: its handler starts before the start step answers (the
answer is held back by a proxy), yet no provider call is made and no result is stored; the
cancel stands."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from consumers.runner import ConsumerRunner
from shared.queue import QueueService
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

LATE = 0.3  # seconds the start's answer is held back


async def test_a_cancelled_task_s_handler_never_reaches_its_provider(
    queue: QueueService, proxied: QueueService, proxy: FaultProxy, redis_client: aioredis.Redis
) -> None:
    async with venice_handler() as (venice, handler):
        task_id = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
        assert await queue.cancel(PROMPT, task_id) == "cancelled"
        proxy.delay_reply_after(start_sha(), LATE)
        await ConsumerRunner(proxied.consumer("c1"), {PROMPT: handler}, options()).run()
        # The handler did start before the start's answer: the gate, not the order, held.
        assert handler.before_answer == [True]
        assert venice.chat_requests == []
    assert (await record(redis_client, queue, task_id))["status"] == "cancelled"
    assert await redis_client.xlen(queue.keys.stream(PROMPT)) == 0


async def test_a_cancelled_task_s_instant_result_is_not_stored_by_the_early_finish(
    queue: QueueService, proxied: QueueService, proxy: FaultProxy, redis_client: aioredis.Redis
) -> None:
    task_id = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
    assert await queue.cancel(PROMPT, task_id) == "cancelled"
    proxy.delay_reply_after(start_sha(), LATE)
    handler = Instant()
    await ConsumerRunner(proxied.consumer("c1"), {PROMPT: handler}, options()).run()
    assert handler.before_answer == [True]  # it ended before the answer: sent early
    stored = await record(redis_client, queue, task_id)
    assert stored["status"] == "cancelled"
    assert "result" not in stored
    assert await redis_client.xlen(queue.keys.stream(PROMPT)) == 0


async def test_a_fresh_task_s_instant_result_goes_behind_its_start(
    queue: QueueService, proxied: QueueService, proxy: FaultProxy, redis_client: aioredis.Redis
) -> None:
    """The control case: the same race for a task nobody cancelled completes it once."""
    task_id = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
    proxy.delay_reply_after(start_sha(), LATE)
    handler = Instant()
    await ConsumerRunner(proxied.consumer("c1"), {PROMPT: handler}, options()).run()
    assert handler.before_answer == [True]
    stored = await record(redis_client, queue, task_id)
    assert (stored["status"], stored["attempts"]) == ("completed", "1")
    assert await redis_client.xlen(queue.keys.stream(PROMPT)) == 0


async def test_a_redelivered_task_whose_stop_was_asked_is_cancelled_without_running(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    """Started by a consumer that died, then stopped by its user: the next delivery (a
    claim, so it waits for the start's answer) finishes it as cancelled."""
    async with venice_handler() as (venice, handler):
        task_id = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
        dead = queue.consumer("dead")
        entries = await dead.read(PROMPT, 1, 100)
        assert await dead.start(entries, 0.0) == [1]  # type: ignore[arg-type]
        assert await queue.cancel(PROMPT, task_id) == "processing"  # flagged, it was running
        await asyncio.sleep(0.1)  # idle past the claim threshold
        opts = options(claim_idle_ms=50)
        await ConsumerRunner(queue.consumer("c2"), {PROMPT: handler}, opts).run()
        assert handler.before_answer == []  # it never ran
        assert venice.chat_requests == []
    assert (await record(redis_client, queue, task_id))["status"] == "cancelled"
