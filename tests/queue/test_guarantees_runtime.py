"""The runtime at its edges: claims kept while draining, a waiter that survives garbage."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from consumers.runner import ConsumerRunner, RunnerOptions
from consumers.task_run import TaskRun
from shared.queue import QueueService, TaskEntry
from shared.queue.connection import cancel_requested
from shared.tasks import ImagePromptResult, QueueTask, TaskResult, TaskStatus, TaskType

PROMPT = TaskType.GENERATE_IMAGE_PROMPT
PAYLOAD = {"girl_name": "Мира", "girl_description": "бариста"}


class Slow:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0
        self.started = asyncio.Event()

    async def __call__(self, task: QueueTask, run: TaskRun) -> TaskResult:
        self.calls += 1
        self.started.set()
        await asyncio.sleep(self.seconds)
        return ImagePromptResult(prompt="p")


async def test_a_draining_consumer_keeps_its_claims_until_its_task_is_done(
    queue: QueueService,
) -> None:
    """Stopped with a task that outlives the claim idle time: no peer may take it meanwhile."""
    task_id = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
    slow = Slow(1.5)
    opts = RunnerOptions(limits={PROMPT: 1}, claim_idle_ms=300, grace_seconds=5)
    draining = ConsumerRunner(queue.consumer("draining"), {PROMPT: slow}, opts)
    run = asyncio.create_task(draining.run())
    await slow.started.wait()
    draining.stop()
    peer = queue.consumer("peer")
    deadline = time.monotonic() + 1.3
    while time.monotonic() < deadline:
        assert await peer.claim(PROMPT, 10, min_idle_ms=300) == []
        await asyncio.sleep(0.1)
    await run
    task = await queue.get_task(task_id, PROMPT)
    assert task is not None and task.status is TaskStatus.COMPLETED and task.attempts == 1


async def test_a_dead_consumer_s_entries_are_taken_by_liveness_not_idle_time(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    """A consumer that stops heartbeating loses its entries after CONSUMER_DEAD_SECONDS,
    even though the claim idle time (an hour here) is far away; a live one keeps them."""
    ids = [await queue.enqueue_task(PROMPT, 1, PAYLOAD) for _ in range(2)]
    dead, alive = queue.consumer("dead"), queue.consumer("alive")
    await dead.heartbeat([PROMPT])
    await alive.heartbeat([PROMPT])
    await dead.read(PROMPT, 1, 100)
    await alive.read(PROMPT, 1, 100)
    rescuer = queue.consumer("rescuer")
    await rescuer.heartbeat([PROMPT])
    assert await rescuer.claim(PROMPT, 10, min_idle_ms=3_600_000) == []
    dead_after = queue.settings.consumer_dead_seconds
    await asyncio.sleep(dead_after + 0.2)
    await alive.heartbeat([PROMPT])
    await rescuer.heartbeat([PROMPT])  # a claimer judges others only while alive itself
    taken = await rescuer.claim(PROMPT, 10, min_idle_ms=3_600_000)
    assert len(taken) == 1
    [entry] = taken
    assert isinstance(entry, TaskEntry) and entry.task.task_id == ids[0]
    # Once it owns nothing, the dead consumer's name is removed with its heartbeat.
    await rescuer.claim(PROMPT, 10, min_idle_ms=3_600_000)
    names = {
        c["name"] for c in await redis_client.xinfo_consumers(queue.keys.stream(PROMPT), "workers")
    }
    assert b"dead" not in names and b"alive" in names
    assert await redis_client.hget(queue.keys.alive(PROMPT), "dead") is None


async def test_the_waiter_survives_foreign_and_malformed_messages(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    task_id = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
    waiter = asyncio.create_task(queue.wait_for_task_result(task_id, 5, PROMPT))
    await asyncio.sleep(0.2)
    channel = queue.keys.channel(PROMPT)
    garbage: list[Any] = [
        b"not json",
        b"[1, 2, 3]",
        b'{"task_id": 5}',
        f'{{"task_id": "{task_id}", "task": {{"created_at": 1e300}}, "status": "completed"}}',
        b"\xff\xfe",
    ]
    for message in garbage:
        await redis_client.publish(channel, message)
    await asyncio.sleep(0.2)
    opts = RunnerOptions(limits={PROMPT: 1}, burst=True)
    await ConsumerRunner(queue.consumer("c1"), {PROMPT: Slow(0)}, opts).run()
    task = await asyncio.wait_for(waiter, 3)
    assert task.status is TaskStatus.COMPLETED
    # The listener is still the same healthy loop: a later task is announced by push too.
    second = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
    late = asyncio.create_task(queue.wait_for_task_result(second, 3, PROMPT))
    await asyncio.sleep(0.1)
    await redis_client.publish(channel, b"\x00garbage")
    await ConsumerRunner(queue.consumer("c1"), {PROMPT: Slow(0)}, opts).run()
    assert (await late).status is TaskStatus.COMPLETED


async def test_a_consumer_restarted_under_the_same_name_takes_back_its_entries(
    queue: QueueService,
) -> None:
    """The dead process's heartbeat lives on under the new one: only adoption recovers them."""
    task_id = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
    before = queue.consumer("img-1")
    await before.heartbeat([PROMPT])
    await before.read(PROMPT, 1, 100)  # then the process dies
    opts = RunnerOptions(limits={PROMPT: 2}, burst=True, claim_idle_ms=3_600_000)
    started = time.monotonic()
    await ConsumerRunner(queue.consumer("img-1"), {PROMPT: Slow(0)}, opts).run()
    task = await queue.get_task(task_id, PROMPT)
    assert task is not None and task.status is TaskStatus.COMPLETED
    assert time.monotonic() - started < 2


async def test_waiting_on_a_repeated_enqueue_of_a_finished_task_returns_at_once(
    queue: QueueService,
) -> None:
    """A task enqueued again (a repeated Telegram update) after it finished long ago: the
    waiter must not count on an announcement that already went out."""
    first = await queue.enqueue_task(PROMPT, 1, PAYLOAD, task_id="repeat-1")
    warm = await queue.enqueue_task(PROMPT, 1, PAYLOAD)  # the waiter is subscribed after this
    waiter = asyncio.create_task(queue.wait_for_task_result(warm, 5, PROMPT))
    opts = RunnerOptions(limits={PROMPT: 2}, burst=True)
    await ConsumerRunner(queue.consumer("c1"), {PROMPT: Slow(0)}, opts).run()
    await waiter
    again = await queue.enqueue_task(PROMPT, 1, PAYLOAD, task_id=first)
    task = await asyncio.wait_for(queue.wait_for_task_result(again, 5, PROMPT), 2)
    assert task.status is TaskStatus.COMPLETED


async def test_a_completion_before_the_wait_starts_is_not_missed(queue: QueueService) -> None:
    """Enqueued while subscribed, finished before anyone waits: the announcement is kept."""
    warm = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
    waiter = asyncio.create_task(queue.wait_for_task_result(warm, 5, PROMPT))
    opts = RunnerOptions(limits={PROMPT: 4}, burst=True)
    await ConsumerRunner(queue.consumer("c1"), {PROMPT: Slow(0)}, opts).run()
    await waiter
    ids = [await queue.enqueue_task(PROMPT, 1, PAYLOAD) for _ in range(3)]
    await ConsumerRunner(queue.consumer("c1"), {PROMPT: Slow(0)}, opts).run()
    await asyncio.sleep(0.1)
    tasks = await asyncio.wait_for(
        asyncio.gather(*(queue.wait_for_task_result(i, 5, PROMPT) for i in ids)), 2
    )
    assert all(t.status is TaskStatus.COMPLETED for t in tasks)


async def test_a_cancel_lost_inside_wait_for_is_still_seen() -> None:
    """Python 3.11's wait_for (every redis-py command goes through it) returns normally when
    a cancel lands as its call completes; the runtime's loops also check cancel_requested()."""

    async def step() -> bool:
        call = asyncio.ensure_future(asyncio.sleep(0, result="sent"))
        me = asyncio.current_task()
        assert me is not None
        call.add_done_callback(lambda _: me.cancel())  # before wait_for's own callback
        try:
            assert await asyncio.wait_for(call, 5) == "sent"
        except asyncio.CancelledError:
            pytest.skip("this Python's wait_for does not lose a cancel")
        return cancel_requested()

    assert await asyncio.create_task(step()) is True
