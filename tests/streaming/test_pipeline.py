"""Replies stream through the pipeline and stop on request: consumer runner, live stream, cancel.

The consumer runs in-process here (one event loop, real Redis, the fake Venice on loopback);
tests/streaming/test_process.py covers a cancel reaching a consumer in another process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from consumers.providers.base import RetryPolicy
from consumers.providers.venice import VeniceClient
from consumers.registry import Providers, build_handlers
from consumers.runner import ConsumerRunner, RunnerOptions
from consumers.task_run import StopRequested, TaskRun
from shared.config import Settings
from shared.config_values import Secret
from shared.queue import QueueService, TaskEntry
from shared.queue.keys import GROUP
from shared.queue.live import LiveChunk, LiveReader
from shared.tasks import QueueTask, ReplyResult, TaskStatus, TaskType, to_json
from tests.support.fakes.venice import FakeVenice, StreamPlan

REPLY = TaskType.GENERATE_REPLY
WORDS = " ".join(f"слово{i}" for i in range(40))
FAST = RetryPolicy(budget_seconds=2.0, max_attempts=2, initial_wait=0.01, max_wait=0.02)

pytestmark = pytest.mark.timeout(60)


def payload(text: str = "Привет") -> dict[str, object]:
    return {"system_prompt": "Ты Мира.", "history": [], "dialog_id": 5, "user_message": text}


@pytest.fixture
async def venice() -> AsyncIterator[FakeVenice]:
    async with FakeVenice(reply=WORDS) as fake:
        yield fake


@pytest.fixture
async def llm(venice: FakeVenice) -> AsyncIterator[VeniceClient]:
    client = VeniceClient(Secret(venice.api_key), base_url=venice.url, timeout=5, retry=FAST)
    yield client
    await client.aclose()


@pytest.fixture
async def reader(settings: Settings) -> AsyncIterator[LiveReader]:
    live = LiveReader(settings, client_name=f"{settings.redis_queue_prefix}live")
    yield live
    await live.aclose()


def runner(
    queue: QueueService, llm: VeniceClient, *, burst: bool, name: str = "c1", idle_ms: int = 6000
) -> ConsumerRunner:
    options = RunnerOptions(limits={REPLY: 4}, burst=burst, claim_idle_ms=idle_ms)
    return ConsumerRunner(
        queue.consumer(name), build_handlers([REPLY], Providers(llm=llm)), options
    )


async def serving(
    queue: QueueService, llm: VeniceClient, **kw: Any
) -> tuple[ConsumerRunner, asyncio.Task[None]]:
    consumer = runner(queue, llm, burst=False, **kw)
    job = asyncio.create_task(consumer.run())
    await asyncio.sleep(0.1)  # subscribed to cancels, blocked in its first read
    return consumer, job


async def stop(consumer: ConsumerRunner, job: asyncio.Task[None]) -> None:
    consumer.stop()
    await asyncio.wait_for(job, 10)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def live_entries(redis: aioredis.Redis, queue: QueueService, task_id: str) -> list[Any]:
    rows: Any = await redis.xrange(queue.keys.live(REPLY, task_id))
    return [fields for _, fields in rows]


@pytest.mark.topologies("single", "cluster")
async def test_a_reply_streams_live_and_finishes_with_the_full_text(
    queue: QueueService,
    llm: VeniceClient,
    venice: FakeVenice,
    reader: LiveReader,
    redis_client: aioredis.Redis,
) -> None:
    venice.stream_plan = StreamPlan(delay=0.01)
    task_id = await queue.enqueue_task(REPLY, 1, payload())
    chunks: list[LiveChunk] = []

    async def follow() -> None:
        async for chunk in reader.follow(REPLY, task_id):
            chunks.append(chunk)  # noqa: PERF401 - collected while the reply streams

    following = asyncio.create_task(follow())
    await runner(queue, llm, burst=True).run()
    await asyncio.wait_for(following, 5)
    task = await queue.wait_for_task_result(task_id, 5, REPLY)

    assert task.status is TaskStatus.COMPLETED
    assert task.result == to_json(ReplyResult(reply=WORDS, dialog_id=5))
    assert "".join(c.text for c in chunks) == WORDS
    assert chunks[-1].end == "done"
    rows = await live_entries(redis_client, queue, task_id)
    # 40 words 10 ms apart, flushed every 50 ms: far fewer writes than words.
    assert 3 <= len(rows) < 20
    assert rows[-1] == {b"end": b"done"}
    assert 0 < await redis_client.ttl(queue.keys.live(REPLY, task_id)) <= 900


async def test_a_cut_stream_finishes_with_what_arrived(
    queue: QueueService,
    llm: VeniceClient,
    venice: FakeVenice,
    redis_client: aioredis.Redis,
) -> None:
    venice.plan_streams(StreamPlan(cut_after=3))
    task_id = await queue.enqueue_task(REPLY, 1, payload())
    await runner(queue, llm, burst=True).run()
    task = await queue.wait_for_task_result(task_id, 5, REPLY)

    assert task.status is TaskStatus.COMPLETED
    assert task.result == {
        "reply": "слово0 слово1 слово2",
        "dialog_id": 5,
        "stopped": False,
        "cut": True,
    }
    assert len(venice.streams) == 1
    assert (await live_entries(redis_client, queue, task_id))[-1] == {b"end": b"cut"}


async def test_a_reply_from_a_server_that_does_not_stream_completes_on_the_first_attempt(
    queue: QueueService, llm: VeniceClient, venice: FakeVenice, redis_client: aioredis.Redis
) -> None:
    venice.stream_plan = StreamPlan(ignore_stream=True)
    task_id = await queue.enqueue_task(REPLY, 1, payload())
    await runner(queue, llm, burst=True).run()
    task = await queue.wait_for_task_result(task_id, 5, REPLY)

    assert (task.status, task.attempts) == (TaskStatus.COMPLETED, 1)
    assert task.result == to_json(ReplyResult(reply=WORDS, dialog_id=5))
    assert len(venice.chat_requests) == 1
    assert (await live_entries(redis_client, queue, task_id))[-1] == {b"end": b"done"}


@pytest.mark.topologies("single", "cluster")
async def test_a_waiting_task_cancelled_is_final_at_once_and_never_run(
    queue: QueueService, llm: VeniceClient, venice: FakeVenice, redis_client: aioredis.Redis
) -> None:
    task_id = await queue.enqueue_task(REPLY, 1, payload())
    assert await queue.cancel(REPLY, task_id) is TaskStatus.CANCELLED
    assert await queue.cancel(REPLY, task_id) is TaskStatus.CANCELLED  # idempotent
    task = await queue.wait_for_task_result(task_id, 2, REPLY)
    assert task.status is TaskStatus.CANCELLED and task.result is None
    assert task.data["user_message"] == "Привет"  # the record keeps the task itself

    await runner(queue, llm, burst=True).run()

    assert venice.chat_requests == []
    stream = queue.keys.stream(REPLY)
    assert await redis_client.xlen(stream) == 0  # read, acked and deleted without running
    assert (await redis_client.xpending(stream, GROUP))["pending"] == 0
    after = await queue.get_task(task_id, REPLY)
    assert after is not None and after.status is TaskStatus.CANCELLED


async def test_cancelling_a_finished_task_leaves_it(
    queue: QueueService, llm: VeniceClient
) -> None:
    task_id = await queue.enqueue_task(REPLY, 1, payload())
    await runner(queue, llm, burst=True).run()
    assert await queue.cancel(REPLY, task_id) is TaskStatus.COMPLETED
    task = await queue.get_task(task_id, REPLY)
    assert task is not None and task.status is TaskStatus.COMPLETED
    assert task.result is not None and task.result["reply"] == WORDS
    assert await queue.cancel(REPLY, "no-such-task") is None


@pytest.mark.topologies("single", "cluster")
async def test_a_running_reply_stops_keeping_its_partial_text(
    queue: QueueService,
    llm: VeniceClient,
    venice: FakeVenice,
    reader: LiveReader,
    redis_client: aioredis.Redis,
) -> None:
    venice.stream_plan = StreamPlan(delay=0.05)
    consumer, job = await serving(queue, llm)
    try:
        task_id = await queue.enqueue_task(REPLY, 1, payload())
        shown = ""
        async for chunk in reader.follow(REPLY, task_id):
            shown += chunk.text
            if len(shown.split()) >= 3:
                break
        cancelled_at = time.monotonic()
        assert await queue.cancel(REPLY, task_id) is TaskStatus.PROCESSING
        task = await queue.wait_for_task_result(task_id, 5, REPLY)
    finally:
        await stop(consumer, job)

    assert await venice.stream_closed_at(0) - cancelled_at < 0.3
    assert task.status is TaskStatus.CANCELLED
    assert task.result is not None and task.result["stopped"] is True
    partial = task.result["reply"]
    assert partial.startswith(shown.strip()) and WORDS.startswith(partial)
    assert len(partial) < len(WORDS)
    assert (await live_entries(redis_client, queue, task_id))[-1] == {b"end": b"stopped"}


async def test_a_stop_before_the_first_delta_cancels_without_a_result(
    queue: QueueService, llm: VeniceClient, venice: FakeVenice
) -> None:
    venice.stream_plan = StreamPlan(first_delay=2.0)
    consumer, job = await serving(queue, llm)
    try:
        task_id = await queue.enqueue_task(REPLY, 1, payload())
        await until(lambda: _true(len(venice.streams) == 1))
        assert await queue.cancel(REPLY, task_id) is TaskStatus.PROCESSING
        task = await queue.wait_for_task_result(task_id, 5, REPLY)
    finally:
        await stop(consumer, job)
    assert task.status is TaskStatus.CANCELLED and task.result is None
    await venice.stream_closed_at(0)
    assert venice.streams[0].chunks_sent == 0


async def _true(value: bool) -> bool:
    return value


async def test_a_lost_cancel_message_is_caught_on_renewal(
    queue: QueueService, llm: VeniceClient, venice: FakeVenice, redis_client: aioredis.Redis
) -> None:
    venice.stream_plan = StreamPlan(delay=0.05)
    consumer, job = await serving(queue, llm, idle_ms=600)  # renews every 0.2 s
    try:
        task_id = await queue.enqueue_task(REPLY, 1, payload())
        await until(lambda: _true(bool(venice.streams) and venice.streams[0].chunks_sent > 0))
        # What the cancel step does, minus its message: as if the message never arrived.
        await redis_client.hset(queue.keys.record(REPLY, task_id), "cancel", "1")
        flagged_at = time.monotonic()
        task = await queue.wait_for_task_result(task_id, 5, REPLY)
    finally:
        await stop(consumer, job)
    assert task.status is TaskStatus.CANCELLED
    assert await venice.stream_closed_at(0) - flagged_at < 0.6


@pytest.mark.parametrize("taker", ["c1", "c2"], ids=["adopted", "claimed"])
async def test_a_task_cancelled_while_its_consumer_was_dead_is_never_run(
    queue: QueueService, llm: VeniceClient, venice: FakeVenice, taker: str
) -> None:
    task_id = await queue.enqueue_task(REPLY, 1, payload())
    dead = queue.consumer("c1")
    [entry] = await dead.read(REPLY, 1, 100)
    assert isinstance(entry, TaskEntry)
    assert await dead.start([entry], time.time()) == [1]
    assert await queue.cancel(REPLY, task_id) is TaskStatus.PROCESSING  # nobody hears it
    await asyncio.sleep(0.15)

    # "c1" restarting adopts its own entry; "c2" claims the idle entry of a silent peer.
    await runner(queue, llm, burst=True, name=taker, idle_ms=100).run()

    task = await queue.wait_for_task_result(task_id, 5, REPLY)
    assert task.status is TaskStatus.CANCELLED and task.result is None
    assert venice.chat_requests == []


async def test_a_rerun_after_a_crash_voids_the_shown_text(
    queue: QueueService,
    llm: VeniceClient,
    reader: LiveReader,
) -> None:
    task_id = await queue.enqueue_task(REPLY, 1, payload())
    dead = queue.consumer("c1")
    [entry] = await dead.read(REPLY, 1, 100)
    assert isinstance(entry, TaskEntry)
    await dead.start([entry], time.time())
    writer = dead.live_writer(REPLY, task_id, 1)
    await writer.add("начало, которое умерло вместе с консюмером")
    await asyncio.sleep(0.15)

    await runner(queue, llm, burst=True, name="c2", idle_ms=100).run()

    chunks = [c async for c in reader.follow(REPLY, task_id)]
    shown = ""
    for chunk in chunks:
        shown = chunk.text if chunk.reset else shown + chunk.text
    assert shown.strip() == WORDS
    task = await queue.get_task(task_id, REPLY)
    assert isinstance(task, QueueTask) and task.attempts == 2


async def test_clearing_the_queue_leaves_a_cancelled_task_cancelled(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    cancelled = await queue.enqueue_task(REPLY, 1, payload("a"))
    waiting = await queue.enqueue_task(REPLY, 1, payload("b"))
    await queue.cancel(REPLY, cancelled)

    assert await queue.drain(REPLY, "cleared by operator") == [waiting]

    task = await queue.get_task(cancelled, REPLY)
    assert task is not None and task.status is TaskStatus.CANCELLED and task.error is None
    assert await redis_client.xlen(queue.keys.dead(REPLY)) == 1  # only the waiting one


async def test_a_stop_whose_cancel_is_lost_still_ends_the_reply_at_the_next_delta(
    queue: QueueService, llm: VeniceClient, venice: FakeVenice, redis_client: aioredis.Redis
) -> None:
    """Python 3.11 can lose a cancellation inside a library call: the handler then stops by
    the run's flag alone. Here it is never cancelled at all."""
    venice.stream_plan = StreamPlan(delay=0.05)
    task_id = await queue.enqueue_task(REPLY, 1, payload())
    consumer = queue.consumer("c1")
    [delivery] = [e for e in await consumer.read(REPLY, 1, 1000) if isinstance(e, TaskEntry)]
    run = TaskRun.admitted_as(1, lambda attempt: consumer.live_writer(REPLY, task_id, attempt))
    handler = build_handlers([REPLY], Providers(llm=llm))[REPLY]
    running = asyncio.create_task(handler(delivery.task, run))
    await until(lambda: _true(bool(venice.streams) and venice.streams[0].chunks_sent >= 3))
    run.stop_requested = True
    flagged_at = time.monotonic()
    with pytest.raises(StopRequested):
        await asyncio.wait_for(running, 5)
    assert await venice.stream_closed_at(0) - flagged_at < 0.5
    assert isinstance(run.partial, ReplyResult) and run.partial.stopped
    assert WORDS.startswith(run.partial.reply) and len(run.partial.reply) < len(WORDS)
    assert (await live_entries(redis_client, queue, task_id))[-1] == {b"end": b"stopped"}
