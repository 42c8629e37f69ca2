"""Helpers for the dashboard tests: a queue with something to show, and the app on loopback."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from dashboard.app import build_app
from dashboard.auth import Auth
from shared.config import Settings
from shared.queue import QueueService
from shared.tasks import TaskType
from tests.support.ops_helpers import strand

REPLY = TaskType.GENERATE_REPLY
PRIVATE_TEXT = "my very private message"
# The per-minute counts the chart should draw, most recent minute last.
COMPLETIONS = {0: 4, 1: 7, 5: 2}


def reply_data(text: str = PRIVATE_TEXT) -> dict[str, object]:
    return {"system_prompt": "Ты Мира.", "history": [], "dialog_id": 1, "user_message": text}


@dataclass
class Seeded:
    """What `seed` put in Redis, to look for on the pages."""

    dead_task: str
    running_task: str
    waiting: list[str] = field(default_factory=list)


async def seed(queue: QueueService, redis: aioredis.Redis) -> Seeded:
    """One dead reply, one running on a live consumer, two waiting, a dead consumer, a chart."""
    dead_task = await queue.enqueue_task(REPLY, 7, reply_data())
    await queue.clear_queue(REPLY, "provider refused the request")
    running = await queue.enqueue_task(REPLY, 7, reply_data())
    await strand(queue, REPLY, 1, "worker-alive")
    waiting = [await queue.enqueue_task(REPLY, 7, reply_data(f"m{i}")) for i in range(2)]
    now = time.time()
    await redis.hset(
        queue.keys.alive(REPLY),
        mapping={"worker-alive": int(now * 1000), "worker-gone": int((now - 600) * 1000)},
    )
    minute = int(now // 60)
    for ago, count in COMPLETIONS.items():
        await redis.hincrby(queue.keys.completions(REPLY), str(minute - ago), count)
    return Seeded(dead_task, running, waiting)


@dataclass(frozen=True)
class Board:
    url: str
    token: str
    queue: QueueService


@contextlib.asynccontextmanager
async def served(queue: QueueService) -> AsyncIterator[Board]:
    """The dashboard app served on a free loopback port, refreshing pages every second."""
    token = f"test-token-{uuid.uuid4().hex}"
    runner = web.AppRunner(build_app(queue, Auth(token), refresh=1.0), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = int(runner.addresses[0][1])
    try:
        yield Board(f"http://127.0.0.1:{port}", token, queue)
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def served_with(settings: Settings, **changes: Any) -> AsyncIterator[Board]:
    """The dashboard on its own queue service, with `changes` to the settings."""
    queue = QueueService(settings.replace(**changes), client_name="dashboard-test")
    await queue.connect()
    try:
        async with served(queue) as board:
            yield board
    finally:
        await queue.close()


@pytest.fixture
async def board(queue: QueueService) -> AsyncIterator[Board]:
    async with served(queue) as running:
        yield running
