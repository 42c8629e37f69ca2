"""Queue core against real Redis: round trips, validation, recovery, dead letters, waiters.

Every test runs on one server and on a 3-master Redis Cluster (see conftest)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from shared.errors import InvalidPayloadError, TaskTimeoutError, UnknownTaskTypeError
from shared.queue import Ending, Malformed, QueueService, StreamConsumer, TaskEntry
from shared.queue.connection import RedisClient
from shared.tasks import TaskStatus, TaskType, dumps

pytestmark = pytest.mark.topologies("single", "cluster")

PAYLOADS: dict[TaskType, dict[str, Any]] = {
    TaskType.GENERATE_IMAGE: {"prompt": "girl in a cafe", "dialog_id": 3, "girl_id": 2},
    TaskType.GENERATE_REPLY: {
        "system_prompt": "Ты Мира.",
        "history": [{"role": "user", "content": "Привет"}],
        "dialog_id": 3,
        "user_message": "Как дела?",
    },
    TaskType.GENERATE_IMAGE_PROMPT: {
        "girl_name": "Мира",
        "girl_description": "бариста",
        "recent_dialogue": [{"role": "assistant", "content": "Привет!"}],
    },
    TaskType.SUMMARIZE_DIALOG: {
        "dialog_id": 3,
        "upto": 7,
        "turns": [{"role": "user", "content": "Меня зовут Вася"}],
    },
    TaskType.TRANSCRIBE_VOICE: {"message_id": 9, "size": 3, "sha256": "ab" * 32},
    TaskType.SYNTHESIZE_VOICE: {"text": "Привет!", "voice": "af_sky"},
}
RESULTS: dict[TaskType, dict[str, Any]] = {
    TaskType.GENERATE_IMAGE: {"image_base64": "aGk=", "image_size": 2, "dialog_id": 3},
    TaskType.GENERATE_REPLY: {"reply": "Отлично!", "dialog_id": 3},
    TaskType.GENERATE_IMAGE_PROMPT: {"prompt": "1girl, cafe"},
    TaskType.SUMMARIZE_DIALOG: {"summary": "- зовут Вася", "dialog_id": 3, "upto": 7},
    TaskType.TRANSCRIBE_VOICE: {"text": "Привет", "message_id": 9},
    TaskType.SYNTHESIZE_VOICE: {"audio_base64": "T2dnUw==", "audio_size": 4},
}


async def take(consumer: StreamConsumer, task_type: TaskType, count: int = 10) -> list[TaskEntry]:
    entries = await consumer.read(task_type, count, block_ms=500)
    assert all(isinstance(e, TaskEntry) for e in entries)
    return [e for e in entries if isinstance(e, TaskEntry)]


async def complete(
    consumer: StreamConsumer, deliveries: list[TaskEntry], result: dict[str, Any] | None = None
) -> list[bool]:
    started = time.time()
    attempts = await consumer.start(deliveries, started)
    outcomes = [
        Ending(
            d, TaskStatus.COMPLETED, n, started, result_json=dumps(result or RESULTS[d.task_type])
        )
        for d, n in zip(deliveries, attempts, strict=True)
    ]
    return await consumer.finish(outcomes)


@pytest.mark.parametrize("task_type", list(TaskType))
async def test_round_trip_per_type(
    queue: QueueService, redis_client: RedisClient, task_type: TaskType
) -> None:
    task_id = await queue.enqueue_task(task_type, 42, PAYLOADS[task_type])
    assert (await queue.get_task(task_id)).status is TaskStatus.PENDING  # type: ignore[union-attr]
    assert await queue.get_queue_length(task_type) == 1
    consumer = queue.consumer("c1")
    [delivery] = await take(consumer, task_type)
    assert delivery.task.task_id == task_id
    depth = await queue.get_queue_depth(task_type)
    assert (depth.waiting, depth.in_flight) == (0, 1)
    assert await consumer.start([delivery], time.time()) == [1]
    running = await queue.get_task(task_id)
    assert running is not None and running.status is TaskStatus.PROCESSING
    assert running.consumer == "c1"
    assert await consumer.finish(
        [Ending(delivery, TaskStatus.COMPLETED, 1, time.time(), dumps(RESULTS[task_type]))]
    ) == [True]
    done = await queue.wait_for_task_result(task_id, timeout=10)
    assert done.status is TaskStatus.COMPLETED
    assert done.result == RESULTS[task_type]
    assert done.attempts == 1 and done.started_at and done.finished_at
    stream = queue.keys.stream(task_type)
    assert await redis_client.xlen(stream) == 0
    assert (await redis_client.xpending(stream, "workers"))["pending"] == 0
    ttl = await redis_client.ttl(queue.keys.record(task_type, task_id))
    assert 0 < ttl <= queue.settings.redis_result_ttl
    assert await queue.get_queue_length(task_type) == 0


async def test_invalid_payloads_are_refused(
    queue: QueueService, redis_client: RedisClient
) -> None:
    with pytest.raises(InvalidPayloadError, match="user_message"):
        await queue.enqueue_task(
            TaskType.GENERATE_REPLY, 1, {"system_prompt": "x", "dialog_id": 1}
        )
    with pytest.raises(InvalidPayloadError, match="prompt: Field required"):
        await queue.enqueue_task(TaskType.GENERATE_IMAGE, 1, PAYLOADS[TaskType.GENERATE_REPLY])
    with pytest.raises(UnknownTaskTypeError):
        await queue.enqueue_task("generate_video", 1, {"prompt": "x"})
    with pytest.raises(InvalidPayloadError, match="limit"):
        await queue.enqueue_task(TaskType.GENERATE_IMAGE, 1, {"prompt": "x" * 70_000})
    for task_type in TaskType:
        assert await redis_client.xlen(queue.keys.stream(task_type)) == 0


async def test_enqueue_is_idempotent_by_task_id(queue: QueueService) -> None:
    payload = PAYLOADS[TaskType.GENERATE_IMAGE]
    first = await queue.enqueue_task(TaskType.GENERATE_IMAGE, 1, payload, task_id="fixed-id")
    second = await queue.enqueue_task(TaskType.GENERATE_IMAGE, 1, payload, task_id="fixed-id")
    assert first == second == "fixed-id"
    assert (await queue.get_queue_depth(TaskType.GENERATE_IMAGE)).waiting == 1


async def test_read_never_exceeds_free_slots(queue: QueueService) -> None:
    # Five users: one user's images would be parked behind the first (USER_MAX_IN_FLIGHT).
    image = PAYLOADS[TaskType.GENERATE_IMAGE]
    await queue.enqueue_many(TaskType.GENERATE_IMAGE, [(user, image) for user in range(5)])
    consumer = queue.consumer("c1")
    assert len(await consumer.read(TaskType.GENERATE_IMAGE, 2, block_ms=100)) == 2
    assert await consumer.read(TaskType.GENERATE_IMAGE, 0, block_ms=100) == []
    depth = await queue.get_queue_depth(TaskType.GENERATE_IMAGE)
    assert (depth.waiting, depth.in_flight) == (3, 2)


async def test_dead_consumer_entries_are_claimed_by_another(queue: QueueService) -> None:
    task_type = TaskType.GENERATE_REPLY
    task_id = await queue.enqueue_task(task_type, 7, PAYLOADS[task_type])
    dead = queue.consumer("dead")
    [delivery] = await take(dead, task_type)
    await dead.start([delivery], time.time())
    alive = queue.consumer("alive")
    assert await alive.claim(task_type, 10, min_idle_ms=5_000) == []
    await asyncio.sleep(0.15)
    [claimed] = await alive.claim(task_type, 10, min_idle_ms=100)
    assert isinstance(claimed, TaskEntry) and claimed.task.task_id == task_id
    assert await complete(alive, [claimed]) == [True]
    done = await queue.get_task(task_id)
    assert done is not None and done.status is TaskStatus.COMPLETED and done.attempts == 2
    assert done.consumer == "alive"


async def test_claim_cursor_reaches_stale_entry_behind_fresh_ones(queue: QueueService) -> None:
    task_type = TaskType.GENERATE_IMAGE
    await queue.enqueue_many(task_type, [(1, PAYLOADS[task_type])] * 30)
    holder = queue.consumer("holder")
    held = await take(holder, task_type, 30)
    await asyncio.sleep(0.15)
    # All but the last entry stay fresh; only the last one belongs to a dead consumer.
    assert await holder.renew(task_type, [d.entry_id for d in held[:-1]]) == []
    rescuer = queue.consumer("rescuer")
    found: list[TaskEntry | Malformed] = []
    for _ in range(10):
        found += await rescuer.claim(task_type, 1, min_idle_ms=100)
        if found:
            break
    assert [e.entry_id for e in found] == [held[-1].entry_id]


async def test_renew_keeps_entries_and_reports_lost_ones(queue: QueueService) -> None:
    task_type = TaskType.GENERATE_IMAGE
    await queue.enqueue_many(task_type, [(1, PAYLOADS[task_type]), (2, PAYLOADS[task_type])])
    owner = queue.consumer("owner")
    first, second = await take(owner, task_type)
    await asyncio.sleep(0.15)
    thief = queue.consumer("thief")
    assert await owner.renew(task_type, [first.entry_id]) == []
    stolen = await thief.claim(task_type, 10, min_idle_ms=100)
    assert [e.entry_id for e in stolen] == [second.entry_id]
    assert await owner.renew(task_type, [first.entry_id, second.entry_id]) == [second.entry_id]


async def test_hand_back_makes_entry_readable_at_once(queue: QueueService) -> None:
    task_type = TaskType.GENERATE_IMAGE
    task_id = await queue.enqueue_task(task_type, 1, PAYLOADS[task_type])
    leaving = queue.consumer("leaving")
    deliveries = await take(leaving, task_type)
    await leaving.start(deliveries, time.time())
    assert await leaving.requeue(deliveries) == 1
    task = await queue.get_task(task_id)
    assert task is not None and task.status is TaskStatus.PENDING
    [again] = await take(queue.consumer("next"), task_type)
    assert again.task.task_id == task_id and again.entry_id != deliveries[0].entry_id
    depth = await queue.get_queue_depth(task_type)
    assert (depth.waiting, depth.in_flight, depth.stream_length) == (0, 1, 1)


async def test_dead_letter_fails_task_and_announces(
    queue: QueueService, redis_client: RedisClient
) -> None:
    task_type = TaskType.GENERATE_IMAGE
    task_id = await queue.enqueue_task(task_type, 1, PAYLOADS[task_type], charge_id="charge-1")
    consumer = queue.consumer("c1")
    deliveries = await take(consumer, task_type)
    waiter = asyncio.create_task(queue.wait_for_task_result(task_id, timeout=5))
    await asyncio.sleep(0.05)
    [n] = await consumer.start(deliveries, time.time())
    outcome = Ending(deliveries[0], TaskStatus.FAILED, n, time.time(), error="boom")
    assert await consumer.finish([outcome]) == [True]
    failed = await waiter
    assert failed.status is TaskStatus.FAILED and failed.error == "boom"
    assert failed.charge_id == "charge-1"
    dead: Any = await redis_client.xrange(queue.keys.dead(task_type))
    [(_, fields)] = dead
    assert fields[b"reason"] == b"boom" and fields[b"consumer"] == b"c1"
    assert await redis_client.xlen(queue.keys.stream(task_type)) == 0
    assert (await queue.get_queue_depth(task_type)).dead == 1


async def test_first_final_status_wins(queue: QueueService) -> None:
    task_type = TaskType.GENERATE_REPLY
    task_id = await queue.enqueue_task(task_type, 1, PAYLOADS[task_type])
    consumer = queue.consumer("c1")
    deliveries = await take(consumer, task_type)
    assert await complete(consumer, deliveries) == [True]
    late = Ending(deliveries[0], TaskStatus.FAILED, 2, time.time(), error="late")
    assert await consumer.finish([late]) == [False]
    task = await queue.get_task(task_id)
    assert task is not None and task.status is TaskStatus.COMPLETED and task.error is None
    assert await consumer.start(deliveries, time.time()) == [-1]


async def test_malformed_entries_are_dead_lettered(
    queue: QueueService, redis_client: RedisClient
) -> None:
    task_type = TaskType.GENERATE_REPLY
    stream = queue.keys.stream(task_type)
    await redis_client.xadd(stream, {"task": b"not json"})
    await redis_client.xadd(stream, {"other": b"field"})
    await redis_client.xadd(stream, {"task": dumps({"task_id": "x", "type": "generate_video"})})
    # The reason names the field that is wrong (the first one found).
    data = {"system_prompt": "s", "dialog_id": 1}
    bad_payload = {
        "task_id": "y",
        "type": task_type,
        "user_id": 1,
        "data": data,
        "created_at": 1.0,
    }
    await redis_client.xadd(stream, {"task": dumps(bad_payload)})
    await redis_client.xadd(stream, {"task": b"x" * 70_000})
    good = await queue.enqueue_task(task_type, 1, PAYLOADS[task_type])
    consumer = queue.consumer("c1")
    entries = await consumer.read(task_type, 10, block_ms=100)
    bad = [e for e in entries if isinstance(e, Malformed)]
    assert len(bad) == 5
    reasons = " | ".join(b.reason for b in bad)
    for expected in (
        "malformed entry",
        "no 'task' field",
        "generate_video",
        "user_message",
        "limit",
    ):
        assert expected in reasons
    assert all(await consumer.fail(bad, "malformed"))
    [ok] = [e for e in entries if isinstance(e, TaskEntry)]
    assert ok.task.task_id == good
    assert await redis_client.xlen(queue.keys.dead(task_type)) == 5
    assert (await queue.get_queue_depth(task_type)).in_flight == 1


async def test_waiter_started_after_completion_gets_result(queue: QueueService) -> None:
    task_type = TaskType.GENERATE_IMAGE_PROMPT
    task_id = await queue.enqueue_task(task_type, 1, PAYLOADS[task_type])
    consumer = queue.consumer("c1")
    await complete(consumer, await take(consumer, task_type))
    task = await queue.wait_for_task_result(task_id, timeout=1)
    assert task.result == RESULTS[task_type]


async def test_waiter_times_out_with_clear_error(queue: QueueService) -> None:
    task_id = await queue.enqueue_task(
        TaskType.GENERATE_IMAGE, 1, PAYLOADS[TaskType.GENERATE_IMAGE]
    )
    with pytest.raises(TaskTimeoutError, match=task_id):
        await queue.wait_for_task_result(task_id, timeout=0.3)


async def _clients(
    redis_client: RedisClient, name_prefix: str
) -> list[tuple[Any, dict[str, Any]]]:
    """(node, connection) of each connection named with the prefix, on every node of a cluster
    (the node is None on one server)."""
    rows: list[tuple[Any, dict[str, Any]]] = []
    if isinstance(redis_client, aioredis.RedisCluster):
        await redis_client.initialize()  # learn every node before listing them
        for node in redis_client.get_nodes():
            listed: Any = await redis_client.client_list(target_nodes=node)
            rows += [(node, c) for c in listed]
    else:
        rows = [(None, c) for c in await redis_client.client_list()]
    return [(n, c) for n, c in rows if c.get("name", "").startswith(name_prefix)]


async def _client_count(redis_client: RedisClient, name_prefix: str) -> int:
    return len(await _clients(redis_client, name_prefix))


def _per_shard(queue: QueueService, count: int) -> int:
    """A bound on connections: `count` on one server, `count` per master on the cluster."""
    return count * 3 if queue.settings.redis_cluster else count


def _waiter_bound(queue: QueueService) -> int:
    """The waiter's connections: three on one server; on the cluster one sharded
    subscription per task type's channel, plus five (its reader and the cluster client's
    own across the three masters), however many tasks wait."""
    return len(TaskType) + 5 if queue.settings.redis_cluster else 3


async def test_thousand_concurrent_waiters_share_one_connection(
    queue: QueueService, redis_client: RedisClient
) -> None:
    task_type = TaskType.GENERATE_IMAGE_PROMPT
    ids = await queue.enqueue_many(
        task_type, [(i, {**PAYLOADS[task_type], "girl_name": f"n{i}"}) for i in range(1000)]
    )
    waiters = [asyncio.create_task(queue.wait_for_task_result(i, timeout=30)) for i in ids]
    await asyncio.sleep(0.2)
    waiter_prefix = f"{queue.settings.redis_queue_prefix}producer:waiter"
    assert await _client_count(redis_client, waiter_prefix) <= _waiter_bound(queue)
    consumer = queue.consumer("c1")
    while batch := await take(consumer, task_type, 200):
        started = time.time()
        attempts = await consumer.start(batch, started)
        await consumer.finish(
            [
                Ending(
                    d,
                    TaskStatus.COMPLETED,
                    n,
                    started,
                    dumps({"prompt": d.task.data["girl_name"]}),
                )
                for d, n in zip(batch, attempts, strict=True)
            ]
        )
    results = await asyncio.gather(*waiters)
    assert [r.task_id for r in results] == ids
    assert [r.result for r in results] == [{"prompt": f"n{i}"} for i in range(1000)]
    assert await _client_count(redis_client, waiter_prefix) <= _waiter_bound(queue)


@pytest.mark.single_node  # the size rule does not depend on the topology
async def test_large_result_is_read_from_record_not_pubsub(
    queue: QueueService, redis_client: RedisClient
) -> None:
    task_type = TaskType.GENERATE_IMAGE
    task_id = await queue.enqueue_task(task_type, 1, PAYLOADS[task_type])
    consumer = queue.consumer("c1")
    deliveries = await take(consumer, task_type)
    waiter = asyncio.create_task(queue.wait_for_task_result(task_id, timeout=5))
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(queue.keys.channel(task_type))
    await asyncio.sleep(0.05)
    image = {"image_base64": "A" * 300_000, "image_size": 225_000, "dialog_id": 3}
    await complete(consumer, deliveries, image)
    message = None
    while message is None or message["type"] != "message":
        message = await pubsub.get_message(timeout=2)
    assert len(message["data"]) < 1000
    assert (await waiter).result == image
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_waiter_recovers_after_pubsub_connection_is_killed(
    queue: QueueService, redis_client: RedisClient
) -> None:
    task_type = TaskType.GENERATE_REPLY
    task_id = await queue.enqueue_task(task_type, 1, PAYLOADS[task_type])
    consumer = queue.consumer("c1")
    deliveries = await take(consumer, task_type)
    waiter = asyncio.create_task(queue.wait_for_task_result(task_id, timeout=20))
    await asyncio.sleep(0.1)
    sub_name = f"{queue.settings.redis_queue_prefix}producer:waiter:sub"
    subscribers = await _subscribers(redis_client, sub_name)
    # Kill only this test's subscribers (on a cluster, those on the reply shard, which may
    # hold another type's channel too): other tests share the machine's Redis.
    owner = None
    if isinstance(redis_client, aioredis.RedisCluster):
        owner = redis_client.get_node_from_key(queue.keys.channel(task_type))
    victims = [(n, c) for n, c in subscribers if n == owner]
    assert victims
    for node, victim in victims:
        options = {"target_nodes": node} if node is not None else {}
        assert await redis_client.client_kill_filter(_id=victim["id"], **options) == 1
    # Completed while the waiter is not subscribed: the announcement is lost on purpose.
    await complete(consumer, deliveries)
    started = time.monotonic()
    task = await waiter
    assert task.status is TaskStatus.COMPLETED
    assert time.monotonic() - started < 5
    assert len(await _subscribers(redis_client, sub_name)) == len(subscribers)


async def _subscribers(redis_client: RedisClient, name: str) -> list[tuple[Any, dict[str, Any]]]:
    """The subscribed connections named `name` (one on a server, one per shard on a cluster)."""
    return [
        (node, c)
        for node, c in await _clients(redis_client, name)
        if int(c.get("sub", 0)) + int(c.get("ssub", 0)) > 0
    ]


async def test_finished_task_leaves_only_its_record(
    queue: QueueService, redis_client: RedisClient, prefix: str
) -> None:
    ids = {}
    for task_type in TaskType:
        ids[task_type] = await queue.enqueue_task(task_type, 1, PAYLOADS[task_type])
        consumer = queue.consumer("c1")
        await complete(consumer, await take(consumer, task_type))
    keys = sorted([k.decode() async for k in redis_client.scan_iter(match=f"{prefix}*")])
    records = sorted(queue.keys.record(t, i) for t, i in ids.items())
    streams = sorted(s for t in TaskType for s in queue.keys.streams(t).values())
    counters = sorted(queue.keys.completions(t) for t in TaskType)
    # The last batch each consumer read, kept a minute for a read repeated after a lost reply.
    memos = sorted(queue.keys.read_memo(t, "c1") for t in TaskType)
    assert keys == sorted(records + streams + counters + memos)
    for memo in memos:
        assert 0 < await redis_client.pttl(memo) <= 60_000
    for counter in counters:  # the per-minute chart keeps itself small
        assert 0 < await redis_client.ttl(counter) <= 7200
    for record in records:
        assert await redis_client.ttl(record) > 0
    for stream in streams:
        assert await redis_client.xlen(stream) == 0


async def test_clear_queue_fails_waiting_and_in_flight(queue: QueueService) -> None:
    task_type = TaskType.GENERATE_IMAGE
    ids = await queue.enqueue_many(task_type, [(1, PAYLOADS[task_type])] * 3)
    await take(queue.consumer("c1"), task_type, 1)
    assert await queue.clear_queue(task_type) == 3
    assert await queue.get_queue_length(task_type) == 0
    for task_id in ids:
        task = await queue.get_task(task_id)
        assert task is not None and task.status is TaskStatus.FAILED
    assert (await queue.get_queue_depth(task_type)).dead == 3


async def test_missing_group_is_recreated_not_looped(
    queue: QueueService, redis_client: RedisClient
) -> None:
    task_type = TaskType.GENERATE_REPLY
    await redis_client.delete(queue.keys.stream(task_type))  # what a Redis without data sees
    task_id = await queue.enqueue_task(task_type, 1, PAYLOADS[task_type])
    consumer = queue.consumer("c1")
    assert await consumer.read(task_type, 5, block_ms=100) == []  # NOGROUP handled
    [delivery] = await take(consumer, task_type)
    assert delivery.task.task_id == task_id


async def test_concurrent_enqueues_share_round_trips_and_connections(
    queue: QueueService, redis_client: RedisClient
) -> None:
    task_type = TaskType.GENERATE_IMAGE
    ids = await asyncio.gather(
        *(queue.enqueue_task(task_type, i, PAYLOADS[task_type]) for i in range(500))
    )
    assert len(set(ids)) == 500
    assert (await queue.get_queue_depth(task_type)).waiting == 500
    producer = f"{queue.settings.redis_queue_prefix}producer"
    clients = await _clients(redis_client, producer)
    assert sum(1 for _, c in clients if c.get("name") == producer) <= _per_shard(queue, 2)
