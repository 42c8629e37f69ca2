"""queuectl says alive or dead for each consumer; the CLIs' help names what they accept."""

from __future__ import annotations

import subprocess
import sys
import time

import redis.asyncio as aioredis

from shared.config import Settings
from shared.queue import QueueService
from shared.tasks import TaskType
from tests.support.consumer_helpers import ROOT, consumer_env
from tests.support.dashboard_helpers import REPLY, seed
from tests.support.ops_helpers import run_cli


async def test_stats_shows_alive_dead_and_heartbeat_age(
    queue: QueueService, redis_client: aioredis.Redis, settings: Settings
) -> None:
    await seed(queue, redis_client)
    # A consumer that beats but has not read yet is listed too.
    await redis_client.hset(queue.keys.alive(REPLY), "worker-new", int(time.time() * 1000))
    # Judged dead only past a minute, so slow CLI starts cannot turn worker-alive dead.
    env = consumer_env(settings, "sqlite+aiosqlite:///:memory:", CONSUMER_DEAD_SECONDS=60)

    text = await run_cli(env, "scripts.queuectl", "stats")
    as_json = await run_cli(env, "scripts.queuectl", "stats", "--json")

    assert text.returncode == 0, text.stderr
    lines = {
        line.split()[1]: line.split() for line in text.stdout.splitlines() if "worker-" in line
    }
    assert lines["worker-alive"][2] == "ALIVE"
    assert lines["worker-gone"][2] == "DEAD"
    assert lines["worker-gone"][3].startswith("10m")
    assert lines["worker-new"][2] == "ALIVE"
    reply = next(t for t in as_json.json()["types"] if t["task_type"] == REPLY)
    consumers = {c["name"]: c for c in reply["consumers"]}
    assert consumers["worker-alive"]["alive"] is True
    assert consumers["worker-alive"]["pending"] == 1
    assert consumers["worker-gone"]["alive"] is False
    assert 590 < consumers["worker-gone"]["heartbeat_age_seconds"] < 700


def _help(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return " ".join(done.stdout.split())


def test_help_explains_arguments_and_names_the_task_types() -> None:
    task_help = _help("scripts.queuectl", "task")
    assert "task_id the task id" in task_help
    assert "--json print the record as one JSON object" in task_help
    consumers_help = _help("consumers")
    for task_type in TaskType:
        assert task_type.value in consumers_help
