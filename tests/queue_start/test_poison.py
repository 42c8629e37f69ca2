"""A poison task (its handler kills the consumer process) at the delivery cap: real consumer
processes, killed by the task itself, before and after its start step reached Redis. The
cap must still bind: the handler runs at most MAX_DELIVERIES times past its gate, and the
task ends failed and dead-lettered."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis

from shared.config import Settings
from shared.queue import QueueService
from tests.queue_start.support import PAYLOAD, PROMPT, record, start_sha
from tests.support.consumer_helpers import ROOT, consumer_env
from tests.support.fakes.fault_proxy import FaultProxy

CAP = 2


def spawn(env: dict[str, str], name: str, runs: Path, at: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tests.queue_start.poison_consumer"]
    command += ["--name", name, "--runs", str(runs), "--at", at]
    return subprocess.Popen(command, cwd=ROOT, env=env)


def poison_env(settings: Settings, redis_url: str | None = None) -> dict[str, str]:
    env = consumer_env(
        settings,
        "sqlite+aiosqlite:///:memory:",
        MAX_DELIVERIES=CAP,
        CONSUMER_DEAD_SECONDS=0.6,
        CLAIM_IDLE_SECONDS=0.6,
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


async def final_status(
    redis_client: aioredis.Redis, queue: QueueService, task_id: str, proc: subprocess.Popen[bytes]
) -> str | None:
    """Wait until the process died or the task is final; the final status, if any."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = (await record(redis_client, queue, task_id)).get("status")
        if status in ("failed", "completed", "cancelled"):
            return status
        if proc.poll() is not None:
            return None
        await asyncio.sleep(0.05)
    raise AssertionError("neither the consumer died nor the task ended")


async def until_dead_lettered(
    env: dict[str, str],
    queue: QueueService,
    redis_client: aioredis.Redis,
    task_id: str,
    runs: Path,
) -> None:
    """Consumers one after the other, each killed by the task, until it is final."""
    for n in range(1, CAP + 3):
        proc = spawn(env, f"next-{n}", runs, "admitted")
        status = await final_status(redis_client, queue, task_id, proc)
        if status is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            stored = await record(redis_client, queue, task_id)
            assert (stored["status"], stored["error"]) == (
                "failed",
                f"delivered {CAP + 1} times, limit {CAP}",
            )
            dead = await redis_client.xlen(queue.keys.dead(PROMPT))
            assert dead == 1
            return
        assert proc.returncode == -signal.SIGKILL
    raise AssertionError("the cap never bound")


async def test_killed_at_once_after_its_start_was_written(
    queue: QueueService, settings: Settings, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """The handler kills its process the moment it runs, before the start's answer is read:
    the start was written first, so Redis still counts that attempt."""
    runs = tmp_path / "runs"
    task_id = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
    env = poison_env(settings)
    first = spawn(env, "first", runs, "once")
    assert await final_status(redis_client, queue, task_id, first) is None
    assert first.returncode == -signal.SIGKILL
    assert (await record(redis_client, queue, task_id))["attempts"] == "1"
    await until_dead_lettered(env, queue, redis_client, task_id, runs)
    # Once at first delivery, then once per claim until the cap refused the next.
    assert runs.read_text().split() == ["ran"] + ["ran", "admitted"] * (CAP - 1)


async def test_killed_before_its_start_reached_redis(
    queue: QueueService,
    settings: Settings,
    redis_client: aioredis.Redis,
    proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    """The start is held on its way (a proxy), the handler already runs and waits at its
    gate, and the process dies: no effect, no attempt counted; later deliveries count, and
    the cap binds after CAP admitted runs."""
    runs = tmp_path / "runs"
    task_id = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
    proxy.hold_requests_from(start_sha())
    first = spawn(poison_env(settings, proxy.url), "first", runs, "admitted")
    deadline = time.monotonic() + 20
    while not (runs.exists() and runs.read_text()):
        assert time.monotonic() < deadline and first.poll() is None
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # it stays at the gate: its start never answers
    assert runs.read_text().split() == ["ran"]
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    assert proxy.held == 1
    assert (await record(redis_client, queue, task_id))["attempts"] == "0"
    await until_dead_lettered(poison_env(settings), queue, redis_client, task_id, runs)
    assert runs.read_text().split() == ["ran"] + ["ran", "admitted"] * CAP
