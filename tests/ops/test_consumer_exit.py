"""A consumer that leaves is not listed as dead forever: a clean stop forgets its own name, and
a killed one is shown DEAD until reclaim_stuck has put its work back, then forgotten."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from dashboard.data import overview
from shared.config import Settings
from shared.queue import QueueService
from shared.queue.maintenance import (
    forget_dead_consumers,
    plan_stuck,
    requeue_stuck,
    stuck_entries,
)
from shared.tasks import TaskStatus, TaskType
from tests.support.consumer_helpers import (
    SlowVenice,
    consumer_env,
    start_consumer,
    stop_process,
    venice_env,
)
from tests.support.fixtures_db import Backend
from tests.support.ops_helpers import run_cli, strand

pytestmark = pytest.mark.timeout(120)

REPLY = TaskType.GENERATE_REPLY
PROMPT = TaskType.GENERATE_IMAGE_PROMPT


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def payload(text: str) -> dict[str, object]:
    return {"system_prompt": "Ты Мира.", "history": [], "dialog_id": 1, "user_message": text}


async def listed(queue: QueueService, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per type, the consumers `queuectl stats --json` lists (name -> row)."""
    stats = await run_cli(env, "scripts.queuectl", "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    return {t["task_type"]: {c["name"]: c for c in t["consumers"]} for t in stats.json()["types"]}


async def beating(redis: aioredis.Redis, queue: QueueService, name: str) -> list[TaskType]:
    return [t for t in TaskType if await redis.hexists(queue.keys.alive(t), name)]


async def test_a_consumer_stopped_by_sigterm_is_no_longer_listed(
    queue: QueueService,
    redis_client: aioredis.Redis,
    settings: Settings,
    sqlite_backend: Backend,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    env = consumer_env(settings, sqlite_backend.url)
    proc = start_consumer(env, "leaving", tmp_path / "c.log")
    procs.append(proc)
    # It serves every type; it reads (and so joins the group) only where there is work.
    task_id = await queue.enqueue_task(REPLY, 1, payload("Привет"))
    assert (await queue.wait_for_task_result(task_id, 30, REPLY)).status is TaskStatus.COMPLETED
    await until(lambda: _all_beating(redis_client, queue, "leaving"), 30, "heartbeats")
    assert {n for c in (await listed(queue, env)).values() for n in c} == {"leaving"}

    assert await stop_process(proc, signal.SIGTERM) == 0

    assert await beating(redis_client, queue, "leaving") == []
    assert await listed(queue, env) == {t.value: {} for t in TaskType}
    # The dashboard counts only consumers that should be alive: none is left to call dead.
    assert [len(item.depth.consumers) for item in await overview(queue)] == [0] * len(TaskType)


async def _all_beating(redis: aioredis.Redis, queue: QueueService, name: str) -> bool:
    return len(await beating(redis, queue, name)) == len(TaskType)


async def test_a_sigkilled_consumer_is_dead_until_reclaim_puts_its_work_back(
    queue: QueueService,
    redis_client: aioredis.Redis,
    settings: Settings,
    sqlite_backend: Backend,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    ids = [await queue.enqueue_task(REPLY, 1, payload(f"m{i}")) for i in range(2)]
    async with SlowVenice(delay=30.0) as venice:
        env = venice_env(settings, sqlite_backend.url, venice) | {"CONSUMER_DEAD_SECONDS": "1"}
        # Replies: it holds two when killed. Prompts: it never read one, only beat.
        victim = start_consumer(
            env, "victim", tmp_path / "c.log", "--types", "generate_reply,generate_image_prompt"
        )
        procs.append(victim)
        await until(lambda: _in_flight(venice, 2), 30, "two replies in flight")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    await asyncio.sleep(1.2)  # past CONSUMER_DEAD_SECONDS

    before = await listed(queue, env)
    assert (before[REPLY]["victim"]["alive"], before[REPLY]["victim"]["pending"]) == (False, 2)
    assert before[PROMPT]["victim"]["alive"] is False

    reclaim = await run_cli(env, "scripts.reclaim_stuck", "--min-idle", "0.5", "--json")

    assert reclaim.returncode == 0, reclaim.stderr
    report = reclaim.json()
    assert sorted(e["task_id"] for e in report["entries"]) == sorted(ids)
    assert {e["result"] for e in report["entries"]} == {"requeued"}
    gone = sorted((c["task_type"], c["consumer"]) for c in report["gone_consumers"])
    assert gone == sorted([(REPLY.value, "victim"), (PROMPT.value, "victim")])
    assert await beating(redis_client, queue, "victim") == []
    assert await listed(queue, env) == {t.value: {} for t in TaskType}


async def _in_flight(venice: SlowVenice, count: int) -> bool:
    return venice.active == count


async def test_a_dead_consumer_is_forgotten_only_past_the_bound_and_owning_nothing(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    for i in range(2):
        await queue.enqueue_task(REPLY, 1, payload(f"m{i}"))
    await strand(queue, REPLY, 2, "dead")
    now_ms = int(time.time() * 1000)
    await redis_client.hset(
        queue.keys.alive(REPLY),
        mapping={"dead": now_ms - 60_000, "idle-but-alive": now_ms, "gone": now_ms - 60_000},
    )
    first = await forget_dead_consumers(queue.scripts, queue.keys, REPLY, 30_000)

    # "dead" still owns its entries: it keeps its heartbeat, so peers see it dead and take
    # them; "idle-but-alive" beat just now.
    assert [c.name for c in first] == ["gone"]
    stuck = await stuck_entries(queue.redis, queue.keys, REPLY, 0)
    works = await plan_stuck(
        queue.redis, queue.keys, REPLY, stuck, max_deliveries=5, max_payload_bytes=65536
    )
    await requeue_stuck(queue.redis, queue.scripts, queue.keys, works, 0)

    forgotten = await forget_dead_consumers(queue.scripts, queue.keys, REPLY, 30_000)

    assert [(c.name, c.alive) for c in forgotten] == [("dead", False)]
    assert 59 < (forgotten[0].heartbeat_age or 0) < 70
    assert await redis_client.hkeys(queue.keys.alive(REPLY)) == [b"idle-but-alive"]
    consumers = await redis_client.xinfo_consumers(queue.keys.stream(REPLY), "workers")
    assert [c["name"] for c in consumers] == []
