"""Maintenance primitives: dead-letter past the limit with one refund, gone consumers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from db import repositories as repo
from db.engine import create_engine, create_sessionmaker
from db.models import Currency
from scripts.reclaim_stuck import reclaim_pass
from shared.queue import QueueService
from shared.queue.keys import GROUP
from shared.queue.maintenance import Result, gone_consumers, remove_gone_consumers
from shared.queue.recovery_steps import DeleteConsumer
from shared.tasks import TaskStatus, TaskType
from tests.support.consumer_helpers import ledger, make_world
from tests.support.fixtures_db import Backend, Sessions
from tests.support.ops_helpers import reclaim_options, strand

REPLY = TaskType.GENERATE_REPLY
PROMPT = {"girl_name": "a", "girl_description": "b"}


@pytest.fixture
async def db(sqlite_backend: Backend) -> AsyncIterator[Sessions]:
    engine = create_engine(sqlite_backend.url)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def test_past_the_limit_fails_once_and_never_touches_money(
    queue: QueueService, db: Sessions, redis_client: aioredis.Redis
) -> None:
    world = await make_world(db, diamonds=5)
    async with db.begin() as session:
        await repo.charge(
            session, world.user_id, Currency.DIAMONDS, 1, charge_id="c-stuck", reason="t"
        )
    task_id = await queue.enqueue_task(
        TaskType.GENERATE_IMAGE_PROMPT, world.user_id, PROMPT, charge_id="c-stuck"
    )
    await strand(queue, TaskType.GENERATE_IMAGE_PROMPT, 1)
    waiter = asyncio.create_task(
        queue.wait_for_task_result(task_id, 10, TaskType.GENERATE_IMAGE_PROMPT)
    )
    await asyncio.sleep(0.3)
    report = await reclaim_pass(queue, reclaim_options(max_deliveries=1))
    assert [(w.task_id, w.result) for w in report.works] == [(task_id, Result.DEAD_LETTERED)]
    task = await waiter
    assert task.status is TaskStatus.FAILED and task.charge_id == "c-stuck"
    assert "after 1 attempts, limit 1" in (task.error or "")
    assert (await reclaim_pass(queue, reclaim_options(max_deliveries=1))).works == []
    # Reclaim only changes Redis; the bot refunds when it applies the announced failure.
    assert await ledger(db, world.user_id) == [("charge", -1, "c-stuck")]
    dead: Any = await redis_client.xrange(queue.keys.dead(TaskType.GENERATE_IMAGE_PROMPT))
    assert len(dead) == 1 and b"limit 1" in dead[0][1][b"reason"]
    stream = queue.keys.stream(TaskType.GENERATE_IMAGE_PROMPT)
    names = [c["name"] for c in await redis_client.xinfo_consumers(stream, GROUP)]
    assert names == [b"dead"]  # the pass's own consumer is gone again


async def test_malformed_and_deleted_entries_are_dead_lettered(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    stream = queue.keys.stream(REPLY)
    await redis_client.xadd(stream, {"task": b"{broken json"})
    payload = {"system_prompt": "s", "history": [], "dialog_id": 7, "user_message": "m"}
    await queue.enqueue_task(REPLY, 1, payload)
    entries = await queue.consumer("dead").read(REPLY, 2, 100)
    await redis_client.xdel(stream, entries[1].entry_id)
    await asyncio.sleep(0.3)
    report = await reclaim_pass(queue, reclaim_options())
    assert [w.result for w in report.works] == [Result.DEAD_LETTERED, Result.ACKED]
    assert report.works[0].reason.startswith("malformed entry")
    assert report.works[1].reason == "entry deleted while pending"
    assert (await queue.get_queue_depth(REPLY)).in_flight == 0
    # The deleted entry has nothing left to keep: it is only acked.
    dead: Any = await redis_client.xrange(queue.keys.dead(REPLY))
    assert [f[b"entry_id"].decode() for _, f in dead] == [entries[0].entry_id]


async def test_gone_consumers_are_removed_only_when_idle_and_owning_nothing(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    stream = queue.keys.stream(REPLY)
    await queue.enqueue_task(REPLY, 1, {"system_prompt": "s", "dialog_id": 1, "user_message": "m"})
    await redis_client.xgroup_createconsumer(stream, GROUP, "idle-empty")
    await redis_client.xgroup_createconsumer(stream, GROUP, "late-reader")
    [busy] = await strand(queue, REPLY, 1, "idle-busy")
    await asyncio.sleep(0.3)
    await redis_client.xgroup_createconsumer(stream, GROUP, "fresh")
    candidates = await gone_consumers(queue.redis, queue.keys, REPLY, 200)
    assert sorted(c.name for c in candidates) == ["idle-empty", "late-reader"]
    # A consumer that reads between the listing and the deletion is kept: the Lua step
    # re-checks idle time and pending entries itself.
    await queue.enqueue_task(REPLY, 1, {"system_prompt": "s", "dialog_id": 1, "user_message": "n"})
    await strand(queue, REPLY, 1, "late-reader")
    for idle_ms in (200, 0):  # too recent; and even when old enough, it owns an entry
        step = DeleteConsumer(stream, queue.keys.alive(REPLY), GROUP, "late-reader", idle_ms)
        assert await queue.scripts.run(step) == 0
    removed = await remove_gone_consumers(queue.redis, queue.scripts, queue.keys, REPLY, 200)
    assert [c.name for c in removed] == ["idle-empty"]
    left = {
        c["name"].decode(): c["pending"] for c in await redis_client.xinfo_consumers(stream, GROUP)
    }
    assert left == {"idle-busy": 1, "late-reader": 1, "fresh": 0}
    pending = await redis_client.xpending_range(stream, GROUP, "-", "+", 10, "idle-busy")
    assert [p["message_id"] for p in pending] == [busy.entry_id.encode()]
