"""Alike enqueues, and alike finishes, share one call of a batch script, with the single
step's effect.

Runs on one server and on a 3-master Redis Cluster (see conftest).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shared.queue import Ending, QueueService, TaskEntry
from shared.queue.connection import RedisClient
from shared.queue.endings import ending_step
from shared.queue.keys import GROUP, Priority
from shared.queue.step_batches import BATCH_LIMIT, EnqueueBatch, FinishBatch, calls_for
from shared.queue.steps import Enqueue, Finish, Start, Step, UserSlot
from shared.tasks import TaskStatus, TaskType, dumps, loads

pytestmark = pytest.mark.topologies("single", "cluster")

PROMPT = TaskType.GENERATE_IMAGE_PROMPT
PAYLOAD = {"girl_name": "Мира", "girl_description": "бариста"}


def _enqueue(stream: str, n: int, *, ttl: int = 60, high: bool = False) -> Enqueue:
    return Enqueue(stream, f"rec:{n}", b"{}", ttl, 1, None, high)


def _finish(stream: str, n: int, *, fair: bool = False) -> Finish:
    user = UserSlot("s", "h", "ur", "up", "r", "p", "1", 2, "rec:", f"t{n}") if fair else None
    return Finish(
        stream,
        f"rec:{n}",
        "g",
        f"{n}-0",
        "completed",
        0.0,
        b"",
        "",
        60,
        "ch",
        b"",
        b"{}",
        f"{n}-0:1",
        user,
    )


def test_alike_finishes_are_grouped_and_fair_ones_go_alone() -> None:
    steps: list[Step] = [_finish("a", 0), _finish("b", 1), _finish("a", 2, fair=True)]
    steps += [_finish("a", 3), _enqueue("a", 4), _enqueue("a", 5)]
    shapes = [(type(step).__name__, at) for step, at in calls_for(steps)]
    assert shapes == [
        ("Finish", [2]),
        ("FinishBatch", [0, 3]),
        ("Finish", [1]),
        ("EnqueueBatch", [4, 5]),
    ]


def test_alike_enqueues_are_grouped_in_order_and_split_at_the_limit() -> None:
    other = Start(["rec:x"], [b"{}"], "c", 0.0, 60, "token")
    steps: list[Step] = [_enqueue("a", i) for i in range(BATCH_LIMIT + 1)]
    steps += [_enqueue("b", 0), other, _enqueue("a", 99, high=True), _enqueue("a", 98, ttl=5)]
    calls = calls_for([*steps[:2], other, *steps[2:]])
    shapes = [
        (type(step).__name__, len(step.steps) if isinstance(step, EnqueueBatch) else 1, at)
        for step, at in calls
    ]
    limit = BATCH_LIMIT
    assert shapes == [
        ("Start", 1, [2]),
        ("Start", 1, [limit + 3]),
        ("EnqueueBatch", limit, [0, 1, *range(3, limit + 1)]),
        ("Enqueue", 1, [limit + 1]),
        ("Enqueue", 1, [limit + 2]),
        ("Enqueue", 1, [limit + 4]),
        ("Enqueue", 1, [limit + 5]),
    ]


async def _records(redis: RedisClient, queue: QueueService, ids: list[str]) -> list[Any]:
    pipe = redis.pipeline(transaction=False)
    for task_id in ids:
        pipe.hgetall(queue.keys.record(PROMPT, task_id))
    return list(await pipe.execute())


async def test_enqueue_many_past_the_limit_stores_every_task_with_its_own_entry(
    queue: QueueService, redis_client: RedisClient
) -> None:
    count = 2 * BATCH_LIMIT + 7
    ids = await queue.enqueue_many(PROMPT, [(i, PAYLOAD) for i in range(count)])
    entries: Any = await redis_client.xrange(queue.keys.stream(PROMPT))
    entry_of = {loads(fields[b"task"])["task_id"]: eid for eid, fields in entries}
    assert list(entry_of) == ids  # stream order is enqueue order
    for i, (task_id, record) in enumerate(
        zip(ids, await _records(redis_client, queue, ids), strict=True)
    ):
        assert record == {
            b"status": b"pending",
            b"attempts": b"0",
            b"entry": entry_of[task_id],
            b"user": str(i).encode(),
        }
        ttl = await redis_client.ttl(queue.keys.record(PROMPT, task_id))
        assert 0 < ttl <= queue.settings.redis_task_ttl


async def test_a_burst_batched_in_one_call_matches_single_enqueues(
    queue: QueueService, redis_client: RedisClient
) -> None:
    """Charge, priority and the repeat of an existing id come out as from one call each."""
    solo = await queue.enqueue_task(
        PROMPT, 7, PAYLOAD, task_id="solo", charge_id="c-solo", priority="high"
    )
    burst = await asyncio.gather(
        *(
            queue.enqueue_task(
                PROMPT, 7, PAYLOAD, task_id=task_id, charge_id=f"c-{task_id}", priority="high"
            )
            for task_id in ("b-1", "solo", "b-2")
        )
    )
    assert [solo, *burst] == ["solo", "b-1", "solo", "b-2"]
    high = queue.keys.stream(PROMPT, Priority.HIGH)
    assert await redis_client.xlen(high) == 3
    assert await redis_client.xlen(queue.keys.stream(PROMPT)) == 0
    records = await _records(redis_client, queue, ["solo", "b-1", "b-2"])
    for task_id, record in zip(["solo", "b-1", "b-2"], records, strict=True):
        assert record.pop(b"entry")
        assert record == {
            b"status": b"pending",
            b"attempts": b"0",
            b"user": b"7",
            b"charge": f"c-{task_id}".encode(),
            b"priority": b"high",
        }


async def test_a_finish_batch_matches_single_finishes(
    queue: QueueService, redis_client: RedisClient
) -> None:
    """Each finish in the batch writes its own result, and a task already final elsewhere
    keeps its result (the late copy is only acked); the stream is left empty."""
    ids = await queue.enqueue_many(PROMPT, [(i, PAYLOAD) for i in range(3)])
    consumer = queue.consumer("c1")
    entries = [e for e in await consumer.read(PROMPT, 3, 100) if isinstance(e, TaskEntry)]
    attempts = await consumer.start(entries, 1.0)
    first, second, third = (
        Ending(e, TaskStatus.COMPLETED, n, result_json=dumps({"prompt": e.task.task_id}))
        for e, n in zip(entries, attempts, strict=True)
    )
    assert await consumer.finish([first]) == [True]
    late = Ending(first.entry, TaskStatus.COMPLETED, 2, result_json=dumps({"prompt": "late"}))
    stopped = Ending(
        third.entry, TaskStatus.CANCELLED, third.attempts, result_json=dumps({"prompt": "so"})
    )
    outcomes = [late, second, stopped]
    assert isinstance(
        calls_for([ending_step(queue.keys, queue.settings, "c1", o) for o in outcomes])[0][0],
        FinishBatch,
    )
    assert await consumer.finish(outcomes) == [False, True, True]

    tasks = [await queue.get_task(task_id, PROMPT) for task_id in ids]
    assert [(t.status, t.result) for t in tasks if t is not None] == [
        (TaskStatus.COMPLETED, {"prompt": ids[0]}),
        (TaskStatus.COMPLETED, {"prompt": ids[1]}),
        (TaskStatus.CANCELLED, {"prompt": "so"}),
    ]
    assert await redis_client.xlen(queue.keys.stream(PROMPT)) == 0
    pending: Any = await redis_client.xpending(queue.keys.stream(PROMPT), GROUP)
    assert pending["pending"] == 0
