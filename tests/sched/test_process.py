"""Scheduling with real consumer processes: global caps, killed lease holders, a shared
Retry-After, per-user fairness, priority, and a consumer killed with parked work."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.fairness import Scenario, run_scenario
from shared.config import Settings
from shared.queue import QueueService
from shared.tasks import TaskStatus, TaskType
from tests.support.consumer_helpers import (
    ROOT,
    consumer_env,
    log_events,
    start_consumer,
    stop_process,
)
from tests.support.fakes.http import Reply
from tests.support.fakes.venice import CHAT_PATH
from tests.support.sched_helpers import PAYLOADS, CountingVenice, wait_alive

pytestmark = pytest.mark.timeout(120)

REPLY = TaskType.GENERATE_REPLY
PROMPT = TaskType.GENERATE_IMAGE_PROMPT
IMAGE = TaskType.GENERATE_IMAGE
NO_DB = "sqlite+aiosqlite:///:memory:"


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def venice_env(settings: Settings, venice: CountingVenice, **extra: str) -> dict[str, str]:
    return consumer_env(
        settings,
        NO_DB,
        LLM_PROVIDER="venice",
        IMAGE_PROVIDER="venice",
        VENICE_API_KEY=venice.api_key,
        VENICE_BASE_URL=venice.url,
        **extra,
    )


async def enqueue(
    queue: QueueService, task_type: TaskType, n: int, first_user: int = 0
) -> list[str]:
    items = [(first_user + i, PAYLOADS[task_type]) for i in range(n)]
    return await queue.enqueue_many(task_type, items)


async def test_the_global_cap_holds_across_three_consumers_on_different_types(
    queue: QueueService,
    settings: Settings,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    async with CountingVenice(delay=0.3) as venice:
        env = venice_env(settings, venice, PROVIDER_LIMITS="venice=3")
        for task_type, flag in (
            (REPLY, "--reply-concurrency"),
            (PROMPT, "--prompt-concurrency"),
            (IMAGE, "--image-concurrency"),
        ):
            name = f"c-{task_type}"
            procs.append(
                start_consumer(
                    env, name, tmp_path / f"{name}.log", "--types", task_type, flag, "5"
                )
            )
        ids = [i for t in (REPLY, PROMPT, IMAGE) for i in await enqueue(queue, t, 8)]
        results = await asyncio.gather(*(queue.wait_for_task_result(i, 60) for i in ids))
        for proc in procs:
            assert await stop_process(proc) == 0
    assert all(r.status is TaskStatus.COMPLETED for r in results)
    assert len(venice.starts) == 24
    # Fifteen local slots, three leases: never more than three calls at once, and three used.
    assert venice.peak == 3


async def test_a_killed_holders_leases_return_within_the_recovery_time(
    queue: QueueService,
    settings: Settings,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    async with CountingVenice(delay=30) as venice:
        env = venice_env(settings, venice, PROVIDER_LIMITS="venice=2")
        holder = start_consumer(env, "holder", tmp_path / "holder.log", "--types", REPLY)
        procs.append(holder)
        await wait_alive(queue, REPLY, "holder")
        await enqueue(queue, REPLY, 6)
        await until(lambda: len(venice.starts) >= 2, 30)
        waiter = start_consumer(env, "waiter", tmp_path / "waiter.log", "--types", REPLY)
        procs.append(waiter)
        await wait_alive(queue, REPLY, "waiter")
        await asyncio.sleep(0.5)
        # The waiter has free slots but no lease: it takes nothing it cannot start.
        depth = await queue.get_queue_depth(REPLY)
        assert (depth.in_flight, depth.waiting, len(venice.starts)) == (2, 4, 2)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        killed_at = time.monotonic()
        await until(lambda: len(venice.starts) >= 4, 15)
        back_after = venice.starts[2] - killed_at
        await asyncio.sleep(0.5)
        # Two leases: the waiter runs two calls, the other two entries stay in the stream.
        assert len(venice.starts) == 4
        await stop_process(waiter, signal.SIGKILL)
    # Not before the holder's leases expired (CONSUMER_DEAD_SECONDS after its last renewal),
    # and soon after.
    assert 2.0 < back_after < 5.0, back_after


async def test_a_killed_holders_lease_and_its_users_place_return_in_the_recovery_time(
    queue: QueueService,
    settings: Settings,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    """The holder of the only lease dies running the first of a user's three images: the
    lease expires, a peer claims the task (it keeps the user's place, so the user's other
    images stay parked) and runs it, and the parked ones follow in the user's order."""
    async with CountingVenice(delay=1.0) as venice:
        env = venice_env(settings, venice, PROVIDER_LIMITS="venice=1")
        names = ("k-1", "k-2")
        procs += [start_consumer(env, n, tmp_path / f"{n}.log", "--types", IMAGE) for n in names]
        await wait_alive(queue, IMAGE, *names)
        ids = [await queue.enqueue_task(IMAGE, 7, PAYLOADS[IMAGE]) for _ in range(3)]
        await until(lambda: len(venice.starts) == 1, 30)
        first = await queue.get_task(ids[0])
        assert first is not None and first.consumer in names
        victim = procs[names.index(first.consumer)]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_at = time.monotonic()
        done = await asyncio.gather(*(queue.wait_for_task_result(i, 60) for i in ids))
        [rescuer] = [p for p in procs if p is not victim]
        assert await stop_process(rescuer) == 0
    back_after = venice.starts[1] - killed_at
    # Not before the lease and the heartbeat expired (CONSUMER_DEAD_SECONDS=3 after the last
    # renewal), and soon after (a claim interval, a wait for the lease; 3.0 s measured).
    assert 2.0 < back_after < 5.0, back_after
    assert [t.attempts for t in done] == [2, 1, 1] and venice.peak == 1
    starts = [t.started_at for t in done]
    assert starts == sorted(starts)  # type: ignore[type-var]
    depth = await queue.get_queue_depth(IMAGE)
    assert (depth.waiting, depth.in_flight, depth.parked) == (0, 0, 0)
    assert await queue.redis.zcard(queue.keys.leases("venice")) == 0
    assert await queue.redis.scard(queue.keys.user_running(IMAGE, 7)) == 0


async def test_a_restart_under_the_same_name_takes_its_leases_back_with_its_entries(
    queue: QueueService,
    settings: Settings,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    """Its orphans wait for it alone (its heartbeat is back): they start under the leases
    the dead process held, before those would have expired, and the cap still holds."""
    async with CountingVenice(delay=3.0) as venice:
        env = venice_env(settings, venice, PROVIDER_LIMITS="venice=2")
        procs.append(start_consumer(env, "same", tmp_path / "a.log", "--types", REPLY))
        await enqueue(queue, REPLY, 2)
        await until(lambda: len(venice.starts) == 2, 30)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        sec, usec = await queue.redis.time()
        held: Any = await queue.redis.zrange(queue.keys.leases("venice"), 0, -1, withscores=True)
        expiry = time.monotonic() + (min(s for _, s in held) - sec * 1000 - usec / 1000) / 1000
        procs.append(start_consumer(env, "same", tmp_path / "b.log", "--types", REPLY))
        await until(lambda: len(venice.starts) == 4, 30)
        assert await stop_process(procs[1], signal.SIGKILL) != 0
    assert len(held) == 2 and venice.starts[3] < expiry
    assert "leases_taken_back" in events(tmp_path / "b.log")


async def test_a_retry_after_pauses_every_consumer_of_the_provider(
    queue: QueueService,
    settings: Settings,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    async with CountingVenice(delay=0.05) as venice:
        env = venice_env(settings, venice, PROVIDER_LIMITS="venice=10")
        names = ["p-1", "p-2", "p-3"]
        procs += [start_consumer(env, n, tmp_path / f"{n}.log", "--types", REPLY) for n in names]
        await wait_alive(queue, REPLY, *names)
        venice.script(
            Reply(429, {"error": "Rate limit exceeded"}, headers={"Retry-After": "2"}),
            path=CHAT_PATH,
        )
        ids = await enqueue(queue, REPLY, 30)
        results = await asyncio.gather(*(queue.wait_for_task_result(i, 60) for i in ids))
        for proc in procs:
            assert await stop_process(proc) == 0
    assert all(r.status is TaskStatus.COMPLETED for r in results)
    calls = [r.at for r in venice.chat_requests]
    throttled_at = calls[0]
    # Calls already admitted may land just after the 429; then nobody calls until it ends.
    during = [t for t in calls if throttled_at + 0.3 < t < throttled_at + 1.9]
    assert during == []
    assert len(calls) == 31 and calls[-1] > throttled_at + 1.9
    paused = [n for n in names if "provider_paused" in events(tmp_path / f"{n}.log")]
    assert len(paused) >= 2  # the others learned it from Redis, not from their own 429
    assert sum("provider_pause_set" in events(tmp_path / f"{n}.log") for n in names) == 1


async def until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def events(log_path: Path) -> list[str]:
    return [e["event"] for e in log_events(log_path)]


async def test_ten_users_are_served_past_one_users_hundred_images(
    settings: Settings, tmp_path: Path
) -> None:
    duration = 0.2
    report = await run_scenario(settings, Scenario(duration=duration), tmp_path)
    # Two slots for ten images: five rounds at best; the busy user's first image was
    # already running. In first-in-first-out order they would start after fifty rounds.
    assert report["first_start"]["durations"] < 1
    assert report["median_start"]["durations"] < 4
    assert report["last_start"]["durations"] < 7.5


async def test_high_priority_goes_first_and_normal_is_not_starved(
    queue: QueueService,
    settings: Settings,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    normal = await enqueue(queue, PROMPT, 10)
    high = [
        await queue.enqueue_task(PROMPT, 100 + i, PAYLOADS[PROMPT], priority="high")
        for i in range(10)
    ]
    env = consumer_env(settings, NO_DB, OFFLINE_DELAY_SECONDS="0.05")
    proc = start_consumer(
        env, "prio", tmp_path / "c.log", "--types", PROMPT, "--prompt-concurrency", "1"
    )
    procs.append(proc)
    done = await asyncio.gather(*(queue.wait_for_task_result(i, 60) for i in normal + high))
    assert await stop_process(proc) == 0
    order = [t.task_id for t in sorted(done, key=lambda t: t.started_at or t.created_at)]
    assert order[:4] == high[:4]
    # One slot in five (PRIORITY_NORMAL_SHARE=0.2) is normal's while high ones wait.
    assert sum(task_id in normal for task_id in order[:10]) == 2


async def test_a_consumer_killed_with_parked_work_loses_nothing(
    queue: QueueService,
    settings: Settings,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    ids = [await queue.enqueue_task(IMAGE, 7, PAYLOADS[IMAGE]) for _ in range(5)]
    env = consumer_env(settings, NO_DB, OFFLINE_DELAY_SECONDS="0.5")
    victim = start_consumer(
        env, "victim", tmp_path / "v.log", "--types", IMAGE, "--image-concurrency", "2"
    )
    procs.append(victim)
    for _ in range(600):
        depth = await queue.get_queue_depth(IMAGE)
        if (depth.in_flight, depth.parked) == (1, 4):
            break
        await asyncio.sleep(0.02)
    assert (depth.in_flight, depth.parked) == (1, 4)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    rescuer = start_consumer(env, "rescuer", tmp_path / "r.log", "--types", IMAGE)
    procs.append(rescuer)
    done = await asyncio.gather(*(queue.wait_for_task_result(i, 60) for i in ids))
    assert await stop_process(rescuer) == 0
    assert all(t.status is TaskStatus.COMPLETED for t in done)
    # One at a time, in the user's order.
    starts = [t.started_at for t in done]
    assert starts == sorted(starts)  # type: ignore[type-var]
    depth = await queue.get_queue_depth(IMAGE)
    assert (depth.waiting, depth.in_flight, depth.parked) == (0, 0, 0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PROVIDER_LIMITS": "local=two"}, "PROVIDER_LIMITS"),
        ({"PROVIDER_LIMITS": "sd=2"}, "PROVIDER_LIMITS"),
        ({"PROVIDER_RATES": "venice=60 per minute"}, "PROVIDER_RATES"),
        ({"USER_MAX_IN_FLIGHT": "photos=1"}, "USER_MAX_IN_FLIGHT"),
        ({"PRIORITY_NORMAL_SHARE": "1.5"}, "PRIORITY_NORMAL_SHARE"),
    ],
)
def test_a_bad_scheduling_setting_stops_the_consumer_naming_it(
    settings: Settings, env: dict[str, str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "consumers", "--name", "x"],
        cwd=ROOT,
        env=consumer_env(settings, NO_DB, **env),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert message in done.stderr.decode()
