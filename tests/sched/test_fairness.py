"""Per-user fairness in the queue steps, on real Redis: parking, release in order, repairs.

USER_MAX_IN_FLIGHT is 1 for images by default: a user's second image waits until the first
ends, and the entries of others are read past it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis

from shared.queue import Ending, QueueService, StreamConsumer, TaskEntry
from shared.queue.dead_letters import replay_dead
from shared.queue.fairness import top_users
from shared.queue.keys import Priority
from shared.queue.lua import SCRIPTS
from shared.queue.scripts import script_sha
from shared.tasks import TaskStatus, TaskType, dumps
from tests.support.fakes.fault_proxy import FaultProxy

IMAGE = TaskType.GENERATE_IMAGE
PAYLOAD = {"prompt": "кот в шляпе", "dialog_id": 1, "girl_id": 2}
RESULT = dumps({"image_base64": "", "image_size": 0, "dialog_id": 1, "girl_id": 2})


def sha(name: str) -> bytes:
    return script_sha(SCRIPTS[name]).encode()


async def enqueue(queue: QueueService, *tasks: tuple[int, str]) -> None:
    for user, task_id in tasks:
        await queue.enqueue_task(IMAGE, user, PAYLOAD, task_id=task_id)


async def take(consumer: StreamConsumer, count: int = 10) -> list[TaskEntry]:
    batch = await consumer.take(IMAGE, count)
    assert all(isinstance(e, TaskEntry) for e in batch.entries)
    return [e for e in batch.entries if isinstance(e, TaskEntry)]


async def finish(consumer: StreamConsumer, deliveries: Sequence[TaskEntry]) -> None:
    attempts = await consumer.start(deliveries, time.time())
    outcomes = [
        Ending(d, TaskStatus.COMPLETED, n, result_json=RESULT)
        for d, n in zip(deliveries, attempts, strict=True)
    ]
    assert await consumer.finish(outcomes) == [True] * len(outcomes)


def ids(deliveries: Sequence[TaskEntry]) -> list[str]:
    return [d.task.task_id for d in deliveries]


@pytest.mark.topologies("single", "cluster")
async def test_a_user_at_the_cap_is_read_past_and_released_in_order(queue: QueueService) -> None:
    await enqueue(queue, (1, "a1"), (1, "a2"), (1, "a3"), (2, "b1"), (3, "c1"))
    consumer = queue.consumer("c1")
    first = await take(consumer, 3)
    assert ids(first) == ["a1", "b1", "c1"]
    depth = await queue.get_queue_depth(IMAGE)
    assert (depth.waiting, depth.parked, depth.in_flight) == (2, 2, 3)
    parked = await queue.get_task("a2")
    assert parked is not None and parked.status is TaskStatus.PENDING
    await finish(consumer, first[1:])
    assert await take(consumer) == []  # user 1 still runs a1
    await finish(consumer, first[:1])
    second = await take(consumer)
    assert ids(second) == ["a2"]
    await finish(consumer, second)
    assert ids(await take(consumer)) == ["a3"]


async def test_a_newer_task_of_a_user_never_starts_before_a_parked_one(
    queue: QueueService,
) -> None:
    """The released task counts for its user at once: a newer one read first is parked."""
    await enqueue(queue, (1, "a1"), (1, "a2"))
    consumer = queue.consumer("c1")
    [a1] = await take(consumer)
    await enqueue(queue, (1, "a3"))  # in the stream before a2 comes back behind it
    await finish(consumer, [a1])
    assert ids(await take(consumer)) == ["a2"]
    depth = await queue.get_queue_depth(IMAGE)
    assert depth.parked == 1  # a3, parked behind a2


async def test_top_users_and_the_counters_follow_the_sets(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    await enqueue(queue, (1, "a1"), (1, "a2"), (1, "a3"), (2, "b1"))
    consumer = queue.consumer("c1")
    got = await take(consumer)
    rows = [
        (r.user_id, r.running, r.parked) for r in await top_users(queue.redis, queue.keys, IMAGE)
    ]
    assert rows == [("1", 1, 2), ("2", 1, 0)]
    await finish(consumer, got)
    await finish(consumer, await take(consumer))
    await finish(consumer, await take(consumer))
    assert await top_users(queue.redis, queue.keys, IMAGE) == []
    # Nothing of the fairness state is left once everything finished.
    left = [k async for k in redis_client.scan_iter(match=f"{queue.keys.user_prefix(IMAGE)}*")]
    assert left == []


async def test_a_failed_task_releases_its_user(queue: QueueService) -> None:
    await enqueue(queue, (1, "a1"), (1, "a2"))
    consumer = queue.consumer("c1")
    [a1] = await take(consumer)
    await consumer.start([a1], time.time())
    assert await consumer.fail([a1], "provider refused") == [True]
    assert ids(await take(consumer)) == ["a2"]


async def test_a_task_handed_back_keeps_its_place_before_the_users_newer_ones(
    queue: QueueService,
) -> None:
    await enqueue(queue, (1, "a1"), (1, "a2"))
    leaving = queue.consumer("leaving")
    [a1] = await take(leaving)
    await leaving.start([a1], time.time())
    assert await leaving.requeue([a1]) == 1
    assert ids(await take(queue.consumer("next"))) == ["a1"]


async def test_garbage_at_the_head_of_a_parked_list_is_dead_lettered_and_holds_nobody(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    await enqueue(queue, (1, "a1"), (1, "a2"))
    consumer = queue.consumer("c1")
    [a1] = await take(consumer)
    parked = queue.keys.user_parked(IMAGE, 1)
    # Before the real parked task: an entry of user 1 that does not parse (it counts for him
    # while it runs), one naming a task with a body that is not JSON, and an item that is no
    # entry at all (these two count for nobody).
    bad_head = b'{"task_id":"x1","type":"bogus","user_id":1}'
    await redis_client.lpush(
        parked, b"\x00garbage", b"n|ghost|\xff\xfe not json", b"n|x1|" + bad_head
    )
    await finish(consumer, [a1])
    [head] = (await consumer.take(IMAGE, 10)).entries
    assert not isinstance(head, TaskEntry) and head.task_id == "x1"
    # Its failure releases user 1 at once (no sweep): the rest of the list comes back.
    assert await consumer.fail([head], head.reason) == [True]
    entries = (await consumer.take(IMAGE, 10)).entries
    bad = [e for e in entries if not isinstance(e, TaskEntry)]
    assert len(bad) == 2
    assert ids([e for e in entries if isinstance(e, TaskEntry)]) == ["a2"]
    assert await consumer.fail(bad, "malformed") == [True, True]
    assert await redis_client.smembers(queue.keys.user_running(IMAGE, 1)) == {b"a2"}
    assert await redis_client.xlen(queue.keys.dead(IMAGE)) == 3
    [load] = await top_users(queue.redis, queue.keys, IMAGE)
    assert (load.user_id, load.running, load.parked) == ("1", 1, 0)


async def test_a_corrupt_entry_parked_under_a_real_task_never_reaches_its_record(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    """The parked text is not trusted: the record only ever holds a parsed task."""
    await enqueue(queue, (1, "a1"))
    consumer = queue.consumer("c1")
    [a1] = await take(consumer)
    await enqueue(queue, (1, "a2"))
    stream = queue.keys.stream(IMAGE)
    entries: Any = await redis_client.xrange(stream)
    await redis_client.xdel(stream, entries[-1][0])  # a2's entry, replaced by a corrupt one
    corrupt = b'{"task_id":"a2","type":"generate_image","user_id":1,"created_at":1e300}'
    await redis_client.xadd(stream, {"task": corrupt})
    assert (await consumer.take(IMAGE, 10)).entries == []  # parked: user 1 runs a1
    waiting = await queue.get_task("a2")
    assert waiting is not None and (waiting.status, waiting.data) == (TaskStatus.PENDING, {})
    await finish(consumer, [a1])
    [bad] = (await consumer.take(IMAGE, 10)).entries
    assert not isinstance(bad, TaskEntry) and bad.task_id == "a2"
    assert await consumer.fail([bad], bad.reason) == [True]
    failed = await queue.get_task("a2")
    assert failed is not None and failed.status is TaskStatus.FAILED
    assert "malformed entry" in (failed.error or "")


async def test_a_running_id_whose_task_ended_unseen_is_dropped_at_the_cap(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    """A release that never came (an entry deleted by hand) cannot block the user."""
    await redis_client.sadd(queue.keys.user_running(IMAGE, 1), "vanished")
    await enqueue(queue, (1, "a1"))
    assert ids(await take(queue.consumer("c1"))) == ["a1"]


async def test_a_replayed_task_waits_its_turn_and_is_found_while_parked(
    queue: QueueService,
) -> None:
    await enqueue(queue, (1, "a1"), (1, "a2"))
    consumer = queue.consumer("c1")
    [a1] = await take(consumer)
    assert await consumer.fail([a1], "boom") == [True]
    [a2] = await take(consumer)
    [replayed] = await replay_dead(queue.redis, queue.scripts, queue.keys, IMAGE, task_ttl=60)
    assert replayed.new_entry_id is not None
    assert await take(consumer) == []  # parked behind a2: user 1 is at the cap
    waiting = await queue.get_task("a1")
    assert waiting is not None and (waiting.status, waiting.user_id) == (TaskStatus.PENDING, 1)
    await finish(consumer, [a2])
    assert ids(await take(consumer)) == ["a1"]


async def test_a_user_with_parked_tasks_is_healed_at_his_next_entry(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    """a1 vanishes while it runs (record and entry deleted by hand): user 1's next entry
    drops it from his running set, so his parked a2 goes on without waiting for a sweep."""
    await enqueue(queue, (1, "a1"), (1, "a2"))
    consumer = queue.consumer("c1")
    [a1] = await take(consumer)
    await redis_client.delete(queue.keys.record(IMAGE, "a1"))
    await redis_client.xdel(queue.keys.stream(IMAGE), a1.entry_id)
    await enqueue(queue, (1, "a3"))
    assert ids(await take(consumer)) == ["a2"]
    assert (await queue.get_queue_depth(IMAGE)).parked == 1


async def test_clear_queue_fails_parked_tasks_too(queue: QueueService) -> None:
    await enqueue(queue, (1, "a1"), (1, "a2"), (1, "a3"))
    await take(queue.consumer("c1"))
    assert (await queue.get_queue_depth(IMAGE)).parked == 2
    assert sorted(await queue.drain(IMAGE, "cleared")) == ["a1", "a2", "a3"]
    depth = await queue.get_queue_depth(IMAGE)
    assert (depth.waiting, depth.in_flight, depth.parked, depth.dead) == (0, 0, 0, 3)


async def test_without_a_cap_the_sweep_sends_every_parked_task_back(
    queue: QueueService,
) -> None:
    await enqueue(queue, (1, "a1"), (1, "a2"), (1, "a3"))
    await take(queue.consumer("c1"))
    assert await queue.consumer("c2").sweep(IMAGE, 0) == 2
    depth = await queue.get_queue_depth(IMAGE)
    assert (depth.parked, depth.waiting) == (0, 2)


@pytest.mark.topologies("single", "cluster")
async def test_high_priority_parked_tasks_go_back_to_the_high_stream(
    queue: QueueService,
) -> None:
    await queue.enqueue_task(IMAGE, 1, PAYLOAD, task_id="a1")
    consumer = queue.consumer("c1")
    [a1] = await take(consumer)
    await queue.enqueue_task(IMAGE, 1, PAYLOAD, task_id="a2", priority="high")
    assert await take(consumer) == []  # parked: user 1 runs a1
    await finish(consumer, [a1])
    [a2] = await take(consumer)
    assert (a2.task.task_id, a2.priority) == ("a2", Priority.HIGH)
    await finish(consumer, [a2])  # finished through its own stream
    depth = await queue.get_queue_depth(IMAGE)
    assert (depth.waiting, depth.in_flight, depth.stream_length) == (0, 0, 0)


async def test_a_read_repeated_after_a_lost_reply_answers_the_same_entries(
    proxied: QueueService, proxy: FaultProxy
) -> None:
    await enqueue(proxied, (1, "a1"), (1, "a2"), (2, "b1"), (3, "c1"))
    consumer = proxied.consumer("c1")
    proxy.cut_reply_after(sha("read"))
    first = await take(consumer, 2)
    assert proxy.cuts == 1 and ids(first) == ["a1", "b1"]
    depth = await proxied.get_queue_depth(IMAGE)
    # Nothing was read twice nor parked twice; c1 is still waiting for its turn.
    assert (depth.in_flight, depth.parked, depth.waiting) == (2, 1, 2)
    assert ids(await take(consumer, 2)) == ["c1"]


@pytest.mark.parametrize("step", ["finish", "fail"])
async def test_an_end_repeated_after_a_lost_reply_releases_one_task(
    proxied: QueueService, proxy: FaultProxy, step: str
) -> None:
    await enqueue(proxied, (1, "a1"), (1, "a2"), (1, "a3"))
    consumer = proxied.consumer("c1")
    [a1] = await take(consumer)
    proxy.cut_reply_after(sha(f"{step}_fair"))
    if step == "finish":
        await finish(consumer, [a1])
    else:
        assert await consumer.fail([a1], "boom") == [True]
    assert proxy.cuts == 1
    depth = await proxied.get_queue_depth(IMAGE)
    assert depth.parked == 1  # a2 went back, a3 still waits
    assert ids(await take(consumer)) == ["a2"]
    [load] = await top_users(proxied.redis, proxied.keys, IMAGE)
    assert (load.running, load.parked) == (1, 1)


async def running_ids(queue: QueueService, user: int) -> set[bytes]:
    members: Any = await queue.redis.smembers(queue.keys.user_running(IMAGE, user))
    return set(members)


@pytest.mark.topologies("single", "cluster")
async def test_a_parked_task_cancelled_never_runs_and_leaves_its_users_list(
    queue: QueueService,
) -> None:
    await enqueue(queue, (1, "a1"), (1, "a2"), (1, "a3"))
    consumer = queue.consumer("c1")
    [a1] = await take(consumer)
    assert await queue.cancel(IMAGE, "a2") is TaskStatus.CANCELLED
    assert await queue.cancel(IMAGE, "a2") is TaskStatus.CANCELLED  # a repeat changes nothing
    cancelled = await queue.get_task("a2")
    assert cancelled is not None and cancelled.status is TaskStatus.CANCELLED
    assert cancelled.data["prompt"] == PAYLOAD["prompt"]  # taken from the user's list
    depth = await queue.get_queue_depth(IMAGE)
    assert (depth.parked, depth.waiting) == (1, 1)  # a3 alone
    await finish(consumer, [a1])
    assert ids(await take(consumer)) == ["a3"]
    assert await running_ids(queue, 1) == {b"a3"}
    [load] = await top_users(queue.redis, queue.keys, IMAGE)
    assert (load.running, load.parked) == (1, 0)


@pytest.mark.topologies("single", "cluster")
async def test_a_task_cancelled_after_it_left_the_list_frees_its_place_at_once(
    queue: QueueService,
) -> None:
    """a2 counts for its user from the moment it goes back onto the stream: its cancel gives
    the place to a3 at once, and a2's entry is read, counted for nobody, and only acked."""
    await enqueue(queue, (1, "a1"), (1, "a2"), (1, "a3"))
    consumer = queue.consumer("c1")
    [a1] = await take(consumer)
    await finish(consumer, [a1])  # a2 goes back and counts; a3 stays parked
    assert await running_ids(queue, 1) == {b"a2"}
    assert await queue.cancel(IMAGE, "a2") is TaskStatus.CANCELLED
    assert await running_ids(queue, 1) == {b"a3"}
    read = await take(consumer)
    assert ids(read) == ["a2", "a3"]
    assert await consumer.start(read, time.time()) == [-1, 1]  # a2 is never run
    await finish(consumer, read[1:])
    outcome = Ending(read[0], TaskStatus.COMPLETED, 0)  # what the runner does with it
    assert await consumer.finish([outcome]) == [False]
    assert await running_ids(queue, 1) == set()
    assert await top_users(queue.redis, queue.keys, IMAGE) == []
    depth = await queue.get_queue_depth(IMAGE)
    assert (depth.stream_length, depth.parked, depth.in_flight) == (0, 0, 0)
    task = await queue.get_task("a2")
    assert task is not None and task.status is TaskStatus.CANCELLED


async def test_a_high_priority_task_cancelled_while_waiting_is_found_and_holds_nobody(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    await queue.enqueue_task(IMAGE, 1, PAYLOAD, task_id="h1", priority="high")
    assert await queue.cancel(IMAGE, "h1") is TaskStatus.CANCELLED
    task = await queue.get_task("h1")
    assert task is not None and task.data["prompt"] == PAYLOAD["prompt"]  # from the high stream
    consumer = queue.consumer("c1")
    [h1] = await take(consumer)
    assert h1.priority is Priority.HIGH
    assert await running_ids(queue, 1) == set()  # read, but counted for nobody
    await queue.enqueue_task(IMAGE, 1, PAYLOAD, task_id="a1")
    assert ids(await take(consumer)) == ["a1"]  # the user's place was free
    assert await consumer.start([h1], time.time()) == [-1]
    assert await consumer.finish([Ending(h1, TaskStatus.COMPLETED, 0)]) == [False]
    assert await redis_client.xlen(queue.keys.stream(IMAGE, Priority.HIGH)) == 0


async def test_a_parked_high_priority_task_cancelled_never_goes_back(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    await enqueue(queue, (1, "a1"))
    consumer = queue.consumer("c1")
    [a1] = await take(consumer)
    await queue.enqueue_task(IMAGE, 1, PAYLOAD, task_id="h1", priority="high")
    assert await take(consumer) == []  # h1 parked while a1 runs
    assert await queue.cancel(IMAGE, "h1") is TaskStatus.CANCELLED
    await finish(consumer, [a1])
    assert await take(consumer) == []
    assert await redis_client.xlen(queue.keys.stream(IMAGE, Priority.HIGH)) == 0
    assert await redis_client.llen(queue.keys.user_parked(IMAGE, 1)) == 0
    assert await running_ids(queue, 1) == set()
