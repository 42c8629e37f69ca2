"""reclaim_stuck end to end: a dead consumer's work is requeued and runs once; dry runs."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from consumers.providers.offline import OfflineLLMClient
from consumers.registry import Providers, build_handlers
from consumers.runner import ConsumerRunner, RunnerOptions
from db.engine import create_engine, create_sessionmaker
from scripts.reclaim_stuck import reclaim_pass
from shared.config import Settings
from shared.queue import QueueService, QueueTask
from shared.queue.keys import GROUP
from shared.queue.maintenance import (
    Result,
    plan_stuck,
    requeue_stuck,
    stuck_entries,
)
from shared.tasks import TaskStatus, TaskType
from tests.support.consumer_helpers import (
    ROOT,
    SlowVenice,
    consumer_env,
    make_world,
    start_consumer,
    venice_env,
)
from tests.support.fixtures_db import Backend, Sessions
from tests.support.ops_helpers import reclaim_options, reply_payload, run_cli, snapshot, strand

REPLY = TaskType.GENERATE_REPLY


@pytest.fixture
async def db(sqlite_backend: Backend) -> AsyncIterator[Sessions]:
    engine = create_engine(sqlite_backend.url)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def finish_with_live_consumer(queue: QueueService, db: Sessions) -> None:
    handlers = build_handlers([REPLY], Providers(llm=OfflineLLMClient()))
    opts = RunnerOptions(limits={REPLY: 10}, burst=True)
    await ConsumerRunner(queue.consumer("live"), handlers, opts).run()


async def records(queue: QueueService, ids: list[str]) -> list[QueueTask]:
    tasks = [await queue.get_task(i, REPLY) for i in ids]
    assert all(t is not None for t in tasks)
    return [t for t in tasks if t is not None]


@pytest.mark.topologies("single", "cluster")
async def test_cli_requeues_a_dead_consumers_entries_and_each_runs_once(
    queue: QueueService, db: Sessions, sqlite_backend: Backend, settings: Settings
) -> None:
    world = await make_world(db)
    ids = [
        await queue.enqueue_task(REPLY, world.user_id, reply_payload(world, f"m{i}"))
        for i in range(4)
    ]
    stranded = await strand(queue, REPLY, 4)
    await asyncio.sleep(0.3)
    env = consumer_env(settings, sqlite_backend.url)
    result = await run_cli(
        env, "scripts.reclaim_stuck", "--type", "generate_reply", "--min-idle", "0.2", "--json"
    )
    assert result.returncode == 0, result.stderr
    report = result.json()
    assert [(e["entry_id"], e["consumer"], e["result"]) for e in report["entries"]] == [
        (d.entry_id, "dead", "requeued") for d in stranded
    ]
    assert {e["task_id"] for e in report["entries"]} == set(ids)
    depth = await queue.get_queue_depth(REPLY)
    assert (depth.waiting, depth.in_flight) == (4, 0)
    await finish_with_live_consumer(queue, db)
    for task in await records(queue, ids):
        assert (task.status, task.consumer, task.attempts) == (TaskStatus.COMPLETED, "live", 2)


async def test_cli_recovers_the_work_of_a_sigkilled_consumer_process(
    queue: QueueService,
    db: Sessions,
    sqlite_backend: Backend,
    settings: Settings,
    tmp_path: Path,
) -> None:
    world = await make_world(db)
    ids = [
        await queue.enqueue_task(REPLY, world.user_id, reply_payload(world, f"m{i}"))
        for i in range(3)
    ]
    async with SlowVenice(delay=30.0) as venice:
        env = venice_env(settings, sqlite_backend.url, venice)
        victim = start_consumer(
            env, "victim", tmp_path / "victim.log", "--types", "generate_reply"
        )
        try:
            await until(lambda: venice.active >= 3, 30)
        finally:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
    await asyncio.sleep(0.3)
    result = await run_cli(
        env, "scripts.reclaim_stuck", "--min-idle", "0.2", "--consumer-idle", "0.1", "--json"
    )
    assert result.returncode == 0, result.stderr
    report = result.json()
    assert sorted((e["task_id"], e["consumer"], e["result"]) for e in report["entries"]) == sorted(
        (i, "victim", "requeued") for i in ids
    )
    assert [c["consumer"] for c in report["gone_consumers"]] == ["victim"]
    await finish_with_live_consumer(queue, db)
    for task in await records(queue, ids):
        assert (task.status, task.consumer, task.attempts) == (TaskStatus.COMPLETED, "live", 2)


async def test_function_requeues_but_a_consumer_that_renewed_keeps_its_entry(
    queue: QueueService, db: Sessions
) -> None:
    world = await make_world(db)
    ids = [
        await queue.enqueue_task(REPLY, world.user_id, reply_payload(world, f"m{i}"))
        for i in range(4)
    ]
    await strand(queue, REPLY, 3, "dead")
    [alive] = await strand(queue, REPLY, 1, "alive")
    await asyncio.sleep(0.3)
    # Listed as stuck, then renewed before the requeue step runs: the step must skip it.
    stuck = await stuck_entries(queue.redis, queue.keys, REPLY, 200)
    works = await plan_stuck(
        queue.redis, queue.keys, REPLY, stuck, max_deliveries=5, max_payload_bytes=65536
    )
    assert await queue.consumer("alive").renew(REPLY, [alive.entry_id]) == []
    await requeue_stuck(queue.redis, queue.scripts, queue.keys, works, 200)
    results = {w.entry.consumer: w.result for w in works}
    assert results == {"dead": Result.REQUEUED, "alive": Result.SKIPPED}
    pending = await queue.redis.xpending_range(queue.keys.stream(REPLY), GROUP, "-", "+", 10)
    assert [(p["message_id"], p["consumer"]) for p in pending] == [
        (alive.entry_id.encode(), b"alive")
    ]
    # A second pass through the whole function finds nothing more to do.
    report = await reclaim_pass(queue, reclaim_options())
    assert report.works == []
    await finish_with_live_consumer(queue, db)
    done = [t for t in await records(queue, ids) if t.status is TaskStatus.COMPLETED]
    assert len(done) == 3


async def test_dry_run_changes_nothing(
    queue: QueueService,
    db: Sessions,
    sqlite_backend: Backend,
    settings: Settings,
    redis_client: aioredis.Redis,
) -> None:
    world = await make_world(db)
    for i in range(3):
        await queue.enqueue_task(REPLY, world.user_id, reply_payload(world, f"m{i}"))
    await strand(queue, REPLY, 2)
    await redis_client.xgroup_createconsumer(queue.keys.stream(REPLY), GROUP, "gone")
    await asyncio.sleep(0.3)
    before = await snapshot(redis_client, queue, REPLY)
    report = await reclaim_pass(
        queue, reclaim_options(dry_run=True, max_deliveries=1, consumer_idle_ms=100)
    )
    assert [(w.action, w.result) for w in report.works] == [("dead_letter", "planned")] * 2
    assert [c.name for _, c in report.gone] == ["gone"]
    env = consumer_env(settings, sqlite_backend.url)
    args = ["--dry-run", "--json", "--min-idle", "0.2", "--max-deliveries", "1"]
    result = await run_cli(env, "scripts.reclaim_stuck", *args, "--consumer-idle", "0.1")
    assert result.returncode == 0, result.stderr
    cli = result.json()
    assert cli["dry_run"] is True and len(cli["entries"]) == 2
    assert cli["summary"] == {"planned": 2, "consumers_to_remove": 1}
    text = await run_cli(env, "scripts.reclaim_stuck", "--dry-run", "--min-idle", "0.2")
    assert "DRY RUN" in text.stdout and "requeue" in text.stdout
    assert await snapshot(redis_client, queue, REPLY) == before


async def test_loop_mode_keeps_reclaiming_until_sigterm(
    queue: QueueService, sqlite_backend: Backend, settings: Settings
) -> None:
    env = consumer_env(settings, sqlite_backend.url)
    args = ["--loop", "0.1", "--json", "--min-idle", "0.2", "--type", "generate_reply"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scripts.reclaim_stuck",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        payload = {"system_prompt": "s", "dialog_id": 1, "user_message": "m"}
        for _ in range(2):
            await queue.enqueue_task(REPLY, 1, payload)
        await strand(queue, REPLY, 2)
        deadline = time.monotonic() + 20
        while (await queue.get_queue_depth(REPLY)).waiting < 2:
            assert time.monotonic() < deadline, "the loop did not requeue the entries"
            await asyncio.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    passes = [orjson.loads(line) for line in out.splitlines()]
    requeued = [e for p in passes for e in p["entries"] if e["result"] == "requeued"]
    assert len(requeued) == 2 and {e["consumer"] for e in requeued} == {"dead"}


async def test_reclaim_acks_a_cancelled_task_and_a_flagged_one_comes_back_only_to_end(
    queue: QueueService, db: Sessions, redis_client: aioredis.Redis
) -> None:
    """Cancelled stays final: reclaim only acks its leftover entry; a running task with a
    cancel flag is requeued, and the next start finishes it cancelled without running it."""
    world = await make_world(db)
    ids = [
        await queue.enqueue_task(REPLY, world.user_id, reply_payload(world, f"m{i}"))
        for i in range(2)
    ]
    stranded = queue.consumer("dead")
    [waiting] = await stranded.read(REPLY, 1, 100)  # read, not started: still "pending"
    await strand(queue, REPLY, 1)
    assert await queue.cancel(REPLY, ids[0]) is TaskStatus.CANCELLED
    assert await queue.cancel(REPLY, ids[1]) is TaskStatus.PROCESSING
    await asyncio.sleep(0.3)

    report = await reclaim_pass(queue, reclaim_options())

    results = {w.entry.entry_id: w.result for w in report.works}
    assert results[waiting.entry_id] == Result.ACKED
    assert sorted(results.values()) == sorted([Result.ACKED, Result.REQUEUED])
    await finish_with_live_consumer(queue, db)
    for task in await records(queue, ids):
        assert (task.status, task.result) == (TaskStatus.CANCELLED, None)
    assert await redis_client.xlen(queue.keys.stream(REPLY)) == 0
