"""The end-to-end world: the real bot and consumer processes on the fake Telegram, with the
test's own Redis prefix, SQLite database and inspector; a pytest plugin (see conftest)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from db.engine import create_engine, create_sessionmaker
from scripts.seed_characters import seed_characters
from shared.config import Settings
from shared.queue import QueueService, TaskType
from tests.support.bot_harness import TOKEN, Processes, bot_settings, migrated_sqlite, process_env
from tests.support.fakes.telegram import FakeTelegram
from tests.support.fixtures_db import Sessions


@dataclass
class World:
    settings: Settings
    db: Sessions
    queue: QueueService
    procs: Processes


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def world(
    settings: Settings, tmp_path: Path, tg: FakeTelegram, redis_client: object
) -> AsyncIterator[World]:
    config = bot_settings(settings, migrated_sqlite(tmp_path), tg.base_url)
    engine = create_engine(config.database_url)
    queue = QueueService(config, client_name="test-inspector")
    procs = Processes(tmp_path)
    try:
        db = create_sessionmaker(engine)
        await seed_characters(db)
        await queue.connect()
        yield World(config, db, queue, procs)
    finally:
        await procs.close()
        await queue.close()
        await engine.dispose()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.1)


async def idle(queue: QueueService, *types: TaskType) -> bool:
    depths = [await queue.get_queue_depth(task_type) for task_type in types]
    return all(depth.unfinished == 0 for depth in depths)


async def start_bot(world: World, tg: FakeTelegram, **env: Any) -> subprocess.Popen[bytes]:
    since = time.time()
    bot = world.procs.producer(process_env(world.settings, **env))
    await tg.wait_for("getUpdates", lambda r: r.timestamp >= since, timeout=30)
    return bot
