"""Priority: a second stream per type, read first, with a guaranteed share for normal tasks;
every step that names an entry's stream names its own (finish, fail, claim, reclaim, depth)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
import redis.asyncio as aioredis

from consumers.runner import ConsumerRunner, RunnerOptions
from consumers.task_run import TaskRun
from scripts.reclaim_report import ReclaimOptions
from scripts.reclaim_stuck import reclaim_pass
from shared.errors import InvalidPayloadError
from shared.queue import Ending, Priority, QueueService, StreamConsumer, TaskEntry
from shared.queue.keys import GROUP
from shared.queue.recovery_steps import Claim
from shared.tasks import ImagePromptResult, QueueTask, TaskResult, TaskStatus, TaskType, dumps

PROMPT = TaskType.GENERATE_IMAGE_PROMPT
PAYLOAD = {"girl_name": "Мира", "girl_description": "бариста"}


async def enqueue(queue: QueueService, prefix: str, n: int, priority: str = "normal") -> list[str]:
    return [
        await queue.enqueue_task(PROMPT, i, PAYLOAD, task_id=f"{prefix}{i}", priority=priority)
        for i in range(n)
    ]


async def take(consumer: StreamConsumer, count: int, normal_first: int = 0) -> list[TaskEntry]:
    batch = await consumer.take(PROMPT, count, normal_first)
    return [e for e in batch.entries if isinstance(e, TaskEntry)]


async def complete(consumer: StreamConsumer, deliveries: Sequence[TaskEntry]) -> list[bool]:
    attempts = await consumer.start(deliveries, time.time())
    return await consumer.finish(
        [
            Ending(d, TaskStatus.COMPLETED, n, result_json=dumps({"prompt": "p"}))
            for d, n in zip(deliveries, attempts, strict=True)
        ]
    )


@pytest.mark.topologies("single", "cluster")
async def test_high_is_read_first_and_normal_first_slots_go_to_normal(
    queue: QueueService,
) -> None:
    await enqueue(queue, "n", 3)
    await enqueue(queue, "h", 3, "high")
    consumer = queue.consumer("c1")
    got = await take(consumer, 4, normal_first=1)
    assert [d.task.task_id for d in got] == ["n0", "h0", "h1", "h2"]
    assert [d.priority for d in got] == [Priority.NORMAL] + [Priority.HIGH] * 3
    assert await complete(consumer, got) == [True] * 4
    depth = await queue.get_queue_depth(PROMPT)
    assert (depth.waiting, depth.waiting_high, depth.in_flight) == (2, 0, 0)


async def test_depth_and_lookups_count_both_streams(queue: QueueService) -> None:
    await enqueue(queue, "n", 2)
    [high] = await enqueue(queue, "h", 1, "high")
    depth = await queue.get_queue_depth(PROMPT)
    assert (depth.waiting, depth.waiting_high, depth.stream_length) == (3, 1, 3)
    task = await queue.get_task(high)
    assert task is not None and task.status is TaskStatus.PENDING
    assert task.data["girl_name"] == PAYLOAD["girl_name"]
    [entry] = await take(queue.consumer("c1"), 1)
    assert entry.task.task_id == high
    assert (await queue.get_queue_depth(PROMPT)).in_flight == 1


async def test_a_bad_priority_is_refused_at_enqueue(queue: QueueService) -> None:
    with pytest.raises(InvalidPayloadError, match="priority"):
        await queue.enqueue_task(PROMPT, 1, PAYLOAD, priority="urgent")
    ids = await queue.enqueue_many(PROMPT, [(1, PAYLOAD), (2, PAYLOAD)], priority="high")
    assert (await queue.get_queue_depth(PROMPT)).waiting_high == len(ids)


async def test_clear_queue_fails_both_streams(queue: QueueService) -> None:
    ids = await enqueue(queue, "n", 2) + await enqueue(queue, "h", 2, "high")
    await take(queue.consumer("c1"), 1)  # one in flight
    assert sorted(await queue.drain(PROMPT, "cleared")) == sorted(ids)
    depth = await queue.get_queue_depth(PROMPT)
    assert (depth.waiting, depth.in_flight, depth.stream_length, depth.dead) == (0, 0, 0, 4)


async def test_high_entries_fail_into_the_dead_letters_from_their_own_stream(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    await enqueue(queue, "h", 1, "high")
    consumer = queue.consumer("c1")
    [entry] = await take(consumer, 1)
    assert await consumer.fail([entry], "provider refused") == [True]
    assert await redis_client.xlen(queue.keys.stream(PROMPT, Priority.HIGH)) == 0
    assert (await queue.get_queue_depth(PROMPT)).dead == 1


async def test_a_dead_name_is_forgotten_only_once_it_owns_nothing_in_either_stream(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    await enqueue(queue, "h", 2, "high")
    assert len(await take(queue.consumer("dead"), 2)) == 2
    # Its name is in the normal stream's group too, owning nothing there; its beat is old.
    await redis_client.xgroup_createconsumer(queue.keys.stream(PROMPT), GROUP, "dead")
    await redis_client.hset(queue.keys.alive(PROMPT), "dead", 0)
    rescuer = queue.consumer("rescuer")
    await rescuer.heartbeat([PROMPT])  # a claimer whose own beat looks dead judges nobody
    on_normal = Claim(
        stream=queue.keys.stream(PROMPT),
        alive=queue.keys.alive(PROMPT),
        group=GROUP,
        consumer="rescuer",
        min_idle_ms=60_000,
        cursor="0-0",
        count=10,
        dead_ms=3000,
        other=queue.keys.stream(PROMPT, Priority.HIGH),
    )
    await queue.scripts.run(on_normal)
    # Still known as dead (not merely gone): its high entries are taken at once, not after
    # an idle time.
    assert await redis_client.hexists(queue.keys.alive(PROMPT), "dead")
    claimed = await rescuer.claim(PROMPT, 10, 60_000)
    assert sorted((e.task.task_id, e.priority) for e in claimed if isinstance(e, TaskEntry)) == [
        ("h0", Priority.HIGH),
        ("h1", Priority.HIGH),
    ]
    await rescuer.claim(PROMPT, 10, 60_000)
    assert not await redis_client.hexists(queue.keys.alive(PROMPT), "dead")


async def test_reclaim_requeues_stuck_high_entries_into_the_high_stream(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    await enqueue(queue, "h", 1, "high")
    stranded = queue.consumer("gone")
    [entry] = await take(stranded, 1)
    await stranded.start([entry], time.time())
    await asyncio.sleep(0.25)
    options = ReclaimOptions(
        [PROMPT], min_idle_ms=200, max_deliveries=5, consumer_idle_ms=3_600_000
    )
    report = await reclaim_pass(queue, options)
    assert [w.result.value for w in report.works] == ["requeued"]
    [again] = await take(queue.consumer("next"), 1)
    assert (again.task.task_id, again.priority) == ("h0", Priority.HIGH)
    assert again.entry_id != entry.entry_id


class Recorder:
    """A handler that records the order tasks start in."""

    def __init__(self) -> None:
        self.order: list[str] = []

    async def __call__(self, task: QueueTask, run: TaskRun) -> TaskResult:
        self.order.append(task.task_id)
        await asyncio.sleep(0.01)
        return ImagePromptResult(prompt="p")


@pytest.mark.topologies("single", "cluster")
async def test_the_runner_serves_high_first_and_normal_keeps_its_share(
    queue: QueueService,
) -> None:
    await enqueue(queue, "n", 20)
    await enqueue(queue, "h", 20, "high")
    handler = Recorder()
    options = RunnerOptions(limits={PROMPT: 1}, burst=True, normal_share=0.2)
    await ConsumerRunner(queue.consumer("c1"), {PROMPT: handler}, options).run()
    assert len(handler.order) == 40
    first_25 = handler.order[:25]
    # High goes first, and one slot in five is normal's while both wait.
    assert sum(task_id.startswith("n") for task_id in first_25) == 5
    assert handler.order[:4] == ["h0", "h1", "h2", "h3"]
    # Each stream in its own order.
    for prefix in ("n", "h"):
        mine = [t for t in handler.order if t.startswith(prefix)]
        assert mine == [f"{prefix}{i}" for i in range(20)]
