"""What operators see of scheduling: `queuectl stats` (text and JSON) and the metrics."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from shared.config import Settings
from shared.limits import parse_rate
from shared.queue import QueueService
from shared.queue.leases import ProviderLeases, ProviderLimit
from shared.tasks import TaskType
from tests.support.consumer_helpers import consumer_env, start_consumer, stop_process
from tests.support.ops_helpers import run_cli
from tests.support.private_redis import free_port
from tests.support.sched_helpers import PAYLOADS

IMAGE = TaskType.GENERATE_IMAGE
REPLY = TaskType.GENERATE_REPLY
NO_DB = "sqlite+aiosqlite:///:memory:"


def leases(queue: QueueService, limit: ProviderLimit) -> ProviderLeases:
    return ProviderLeases(
        redis=queue.redis,
        scripts=queue.scripts,
        keys=queue.keys,
        limit=limit,
        holder="test",
        ttl_ms=60_000,
    )


async def test_stats_show_leases_pauses_waiting_on_a_cap_and_the_busiest_users(
    queue: QueueService, settings: Settings
) -> None:
    await leases(queue, ProviderLimit("local", 2, None)).admit(2)
    await leases(queue, ProviderLimit("venice", 0, parse_rate("60/m"))).pause(30)
    for user, count in ((1, 3), (2, 1)):
        for _ in range(count):
            await queue.enqueue_task(IMAGE, user, PAYLOADS[IMAGE])
    await queue.consumer("c1").take(IMAGE, 10)  # user 1: one running, two parked
    await queue.enqueue_task(IMAGE, 4, PAYLOADS[IMAGE])  # waits for a `local` lease
    await queue.enqueue_many(REPLY, [(5, PAYLOADS[REPLY])] * 2)  # wait for venice's pause
    env = consumer_env(
        settings,
        NO_DB,
        PROVIDER_LIMITS="local=2",
        PROVIDER_RATES="venice=60/m",
        IMAGE_PROVIDER="local",
        LLM_PROVIDER="venice",
    )
    result = await run_cli(env, "scripts.queuectl", "stats", "--json")
    assert result.returncode == 0, result.stderr
    body = result.json()
    providers = {p["provider"]: p for p in body["providers"]}
    local, venice = providers["local"], providers["venice"]
    assert (local["limit"], local["leases"], local["blocked"]) == (2, 2, True)
    assert local["task_types"] == ["generate_image"] and local["waiting_on_cap"] == 1
    assert 25 < venice["paused_seconds"] <= 30 and venice["paused_until"] > time.time() + 25
    assert venice["tokens"] == 60 and venice["waiting_on_cap"] == 2
    users = {(u["task_type"], u["user_id"]): (u["running"], u["parked"]) for u in body["users"]}
    assert users == {("generate_image", "1"): (1, 2), ("generate_image", "2"): (1, 0)}
    image = next(t for t in body["types"] if t["task_type"] == "generate_image")
    assert (image["waiting"], image["parked"], image["in_flight"]) == (3, 2, 2)
    text = await run_cli(env, "scripts.queuectl", "stats")
    rows = [line.split() for line in text.stdout.splitlines()]
    assert ["local", "2", "2", "-", "-", "-", "1"] in rows
    venice_row = next(r for r in rows if r[:1] == ["venice"])
    assert "UTC" in venice_row and venice_row[-1] == "2"
    assert ["generate_image", "1", "1", "2"] in rows


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def paused_until(body: str) -> float:
    match = re.search(r'^provider_paused_until\{provider="offline"\} (\S+)$', body, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def scrape_until(
    port: int, wanted: list[str], timeout: float = 15, also: Callable[[str], bool] = bool
) -> str:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            try:
                body = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            except httpx.ConnectError:  # not serving yet
                body = ""
            done = all(line in body for line in wanted) and also(body)
            if done or time.monotonic() > deadline:
                return body
            await asyncio.sleep(0.2)


async def test_metrics_show_leases_pauses_and_the_busiest_users(
    queue: QueueService, settings: Settings, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    env = consumer_env(settings, NO_DB, OFFLINE_DELAY_SECONDS="20", PROVIDER_LIMITS="offline=5")
    args = ["--types", "generate_image", "--image-concurrency", "2", "--grace", "0.5"]
    args += ["--metrics-port", str(port)]
    proc = start_consumer(env, "metered", tmp_path / "c.log", *args)
    procs.append(proc)
    for _ in range(3):
        await queue.enqueue_task(IMAGE, 7, PAYLOADS[IMAGE])
    wanted = [
        'provider_leases{provider="offline"} 1.0',
        'provider_lease_limit{provider="offline"} 5.0',
        'user_tasks_in_flight{task_type="generate_image",user_id="7"} 1.0',
        'user_tasks_parked{task_type="generate_image",user_id="7"} 2.0',
        'stream_parked{task_type="generate_image"} 2.0',
    ]
    body = await scrape_until(port, wanted)
    assert [line for line in wanted if line not in body] == []
    await leases(queue, ProviderLimit("offline", 5, None)).pause(60)
    await queue.enqueue_task(IMAGE, 8, PAYLOADS[IMAGE])  # a free slot asks: paused
    wanted = ['provider_paused{provider="offline"} 1.0']
    body = await scrape_until(port, wanted, also=lambda b: paused_until(b) > 0)
    assert wanted[0] in body
    assert time.time() + 50 < paused_until(body) <= time.time() + 60
    await stop_process(proc)
