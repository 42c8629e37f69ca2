"""Real consumer processes: SIGKILL recovery, graceful shutdown, hand-back, Redis restart."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from db import repositories as repo
from db.engine import create_engine, create_sessionmaker
from db.models import Currency
from shared.config import Settings
from shared.queue import QueueService
from shared.tasks import TaskStatus, TaskType
from tests.support.consumer_helpers import (
    ROOT,
    SlowVenice,
    World,
    consumer_env,
    ledger,
    log_events,
    make_world,
    start_consumer,
    stop_process,
    venice_env,
)
from tests.support.fixtures_db import Backend, Sessions
from tests.support.private_redis import PrivateRedis, free_port

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def sqlite_db(sqlite_backend: Backend) -> AsyncIterator[Sessions]:
    engine = create_engine(sqlite_backend.url)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def reply(world: World, i: int) -> dict[str, object]:
    return {
        "system_prompt": "Ты Мира.",
        "history": [],
        "dialog_id": world.dialog_id,
        "user_message": f"сообщение {i}",
    }


async def until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def enqueue_paid_replies(
    queue: QueueService, db: Sessions, world: World, n: int
) -> list[str]:
    ids = []
    for i in range(n):
        task_id = f"reply-{world.user_id}-{i}"
        async with db.begin() as session:
            await repo.charge(
                session, world.user_id, Currency.ENERGY, 1, charge_id=task_id, reason="reply"
            )
        ids.append(
            await queue.enqueue_task(
                TaskType.GENERATE_REPLY,
                world.user_id,
                reply(world, i),
                task_id=task_id,
                charge_id=task_id,
            )
        )
    return ids


@pytest.mark.topologies("single", "cluster")
async def test_sigkill_mid_flight_another_consumer_finishes_everything_once(
    queue: QueueService,
    sqlite_db: Sessions,
    sqlite_backend: Backend,
    settings: Settings,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    world = await make_world(sqlite_db, energy=500)
    async with SlowVenice(delay=3.0) as venice:
        env = venice_env(settings, sqlite_backend.url, venice)
        ids = await enqueue_paid_replies(queue, sqlite_db, world, 200)
        victim = start_consumer(
            env,
            "victim",
            tmp_path / "victim.log",
            "--types",
            "generate_reply",
            "--reply-concurrency",
            "200",
        )
        procs.append(victim)
        await until(lambda: venice.active >= 200, 30, "200 tasks in flight")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_at = time.monotonic()
        depth = await queue.get_queue_depth(TaskType.GENERATE_REPLY)
        assert depth.in_flight == 200
        rescuer = start_consumer(
            env,
            "rescuer",
            tmp_path / "rescuer.log",
            "--types",
            "generate_reply",
            "--reply-concurrency",
            "200",
        )
        procs.append(rescuer)
        results = await asyncio.gather(*(queue.wait_for_task_result(i, 60) for i in ids))
        recovered_in = time.monotonic() - killed_at
        assert await stop_process(rescuer) == 0
    assert all(r.status is TaskStatus.COMPLETED for r in results)
    assert all(r.consumer == "rescuer" and r.attempts == 2 for r in results)
    # Each task ran once in the victim and once more in the rescuer, never a third time.
    assert len(venice.chat_requests) == 400
    assert {kind for kind, _, _ in await ledger(sqlite_db, world.user_id)} == {"charge"}
    # The victim's heartbeat stops: after CONSUMER_DEAD_SECONDS (3 s) its entries are taken
    # at once, whatever the claim idle time; the handler takes 3 s.
    assert recovered_in < 9, recovered_in
    print(f"recovered 200 tasks {recovered_in:.1f} s after SIGKILL")


async def test_sigterm_finishes_in_flight_work_and_exits_zero(
    queue: QueueService,
    sqlite_db: Sessions,
    sqlite_backend: Backend,
    settings: Settings,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    world = await make_world(sqlite_db, energy=50)
    async with SlowVenice(delay=4.0) as venice:
        env = venice_env(settings, sqlite_backend.url, venice)
        ids = await enqueue_paid_replies(queue, sqlite_db, world, 5)
        proc = start_consumer(env, "graceful", tmp_path / "c.log", "--types", "generate_reply")
        procs.append(proc)
        await until(lambda: venice.active == 5, 30, "5 tasks in flight")
        assert await stop_process(proc, signal.SIGTERM) == 0
    for task_id in ids:
        task = await queue.get_task(task_id)
        assert task is not None and task.status is TaskStatus.COMPLETED
    depth = await queue.get_queue_depth(TaskType.GENERATE_REPLY)
    assert (depth.waiting, depth.in_flight) == (0, 0)
    events = [e["event"] for e in log_events(tmp_path / "c.log")]
    assert "consumer_draining" in events and "entries_handed_back" not in events


async def test_grace_period_over_hands_back_at_once(
    queue: QueueService,
    sqlite_db: Sessions,
    sqlite_backend: Backend,
    settings: Settings,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    world = await make_world(sqlite_db, energy=50)
    async with SlowVenice(delay=30.0) as venice:
        env = venice_env(settings, sqlite_backend.url, venice)
        ids = await enqueue_paid_replies(queue, sqlite_db, world, 3)
        proc = start_consumer(
            env, "leaving", tmp_path / "c.log", "--types", "generate_reply", "--grace", "0.5"
        )
        procs.append(proc)
        await until(lambda: venice.active == 3, 30, "3 tasks in flight")
        assert await stop_process(proc, signal.SIGTERM) == 0
    depth = await queue.get_queue_depth(TaskType.GENERATE_REPLY)
    assert (depth.waiting, depth.in_flight) == (3, 0)  # back in the group, not stuck pending
    handed_back_at = time.monotonic()
    offline = start_consumer(
        consumer_env(settings, sqlite_backend.url),
        "next",
        tmp_path / "n.log",
        "--types",
        "generate_reply",
    )
    procs.append(offline)
    results = await asyncio.gather(*(queue.wait_for_task_result(i, 30) for i in ids))
    assert all(r.status is TaskStatus.COMPLETED and r.consumer == "next" for r in results)
    assert time.monotonic() - handed_back_at < 8  # no idle timeout was waited for
    assert await stop_process(offline) == 0


async def test_consumer_survives_redis_restart_and_recreates_group(
    tmp_path: Path,
    sqlite_db: Sessions,
    sqlite_backend: Backend,
    settings: Settings,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    private = PrivateRedis()
    private.start()
    try:
        own = settings.replace(redis_url=private.url)
        world = await make_world(sqlite_db)
        proc = start_consumer(
            consumer_env(own, sqlite_backend.url),
            "survivor",
            tmp_path / "c.log",
            "--types",
            "generate_reply",
        )
        procs.append(proc)
        queue = QueueService(own)
        await queue.connect()
        first = await queue.enqueue_task(TaskType.GENERATE_REPLY, 1, reply(world, 1))
        assert (await queue.wait_for_task_result(first, 20)).status is TaskStatus.COMPLETED
        private.restart()  # no persistence: streams, groups and records are gone
        second = await queue.enqueue_task(TaskType.GENERATE_REPLY, 1, reply(world, 2))
        task = await queue.wait_for_task_result(second, 30)
        assert task.status is TaskStatus.COMPLETED
        await queue.close()
        assert await stop_process(proc) == 0
        events = [e["event"] for e in log_events(tmp_path / "c.log")]
        assert "consumer_group_missing" in events
    finally:
        private.cleanup()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"USE_LIVE3D": "true", "IMAGE_PROVIDER": ""}, "Live3D"),
        ({"LLM_PROVIDER": "venice", "VENICE_API_KEY": ""}, "VENICE_API_KEY"),
        ({"IMAGE_PROVIDER": "replicate", "REPLICATE_API_TOKEN": ""}, "REPLICATE_API_TOKEN"),
        ({"MAX_CONCURRENT_IMAGE_GENERATIONS": "lots"}, "MAX_CONCURRENT_IMAGE_GENERATIONS"),
    ],
)
def test_misconfigured_consumer_stops_at_start_naming_the_problem(
    settings: Settings, env: dict[str, str], message: str
) -> None:
    full = consumer_env(settings, "sqlite+aiosqlite:///:memory:", **env)
    full = {k: v for k, v in full.items() if v != ""}
    done = subprocess.run(
        [sys.executable, "-m", "consumers", "--name", "x"],
        cwd=ROOT,
        env=full,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert message in done.stderr.decode()


async def test_metrics_endpoint_reports_tasks_and_stream_health(
    queue: QueueService,
    sqlite_db: Sessions,
    sqlite_backend: Backend,
    settings: Settings,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    world = await make_world(sqlite_db)
    port = free_port()
    proc = start_consumer(
        consumer_env(settings, sqlite_backend.url),
        "metered",
        tmp_path / "c.log",
        "--types",
        "generate_reply",
        "--metrics-port",
        str(port),
    )
    procs.append(proc)
    task_id = await queue.enqueue_task(TaskType.GENERATE_REPLY, 1, reply(world, 1))
    assert (await queue.wait_for_task_result(task_id, 20)).status is TaskStatus.COMPLETED
    async with httpx.AsyncClient() as client:
        for _ in range(100):  # the stream gauges refresh every few seconds
            body = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            if 'stream_pending{task_type="generate_reply"} 0.0' in body:
                break
            await asyncio.sleep(0.1)
    assert 'tasks_processed_total{task_type="generate_reply"} 1.0' in body
    assert 'task_duration_seconds_count{task_type="generate_reply"} 1.0' in body
    for gauge in (
        "stream_waiting",
        "stream_pending",
        "stream_oldest_pending_seconds",
        "stream_dead_letters",
        "tasks_in_flight",
    ):
        assert f'{gauge}{{task_type="generate_reply"}}' in body
    assert await stop_process(proc) == 0
