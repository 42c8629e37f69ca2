"""Helpers for consumer tests: a world in the database, slow fakes, consumer subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from sqlalchemy import func, select

from db import repositories as repo
from db.models import ChatMessage, LedgerEntry
from shared.config import Settings
from tests.support.fakes.venice import FakeVenice
from tests.support.fixtures_db import Sessions, make_character, make_user

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class World:
    user_id: int
    character_id: int
    dialog_id: int


async def make_world(db: Sessions, energy: int = 100, diamonds: int = 100) -> World:
    user_id = await make_user(db, energy=energy, diamonds=diamonds)
    character_id = await make_character(db)
    async with db.begin() as session:
        dialog = await repo.start_dialog(session, user_id, character_id)
    return World(user_id, character_id, dialog.id)


async def count_replies(db: Sessions, dialog_id: int) -> tuple[int, int]:
    """(assistant messages, distinct task ids) of a dialog."""
    async with db() as session:
        rows = (
            await session.execute(
                select(func.count(), func.count(func.distinct(ChatMessage.task_id))).where(
                    ChatMessage.dialog_id == dialog_id, ChatMessage.role == "assistant"
                )
            )
        ).one()
    return int(rows[0]), int(rows[1])


async def ledger(db: Sessions, user_id: int) -> list[tuple[str, int, str]]:
    async with db() as session:
        rows = await session.execute(
            select(LedgerEntry.kind, LedgerEntry.amount, LedgerEntry.task_id)
            .where(LedgerEntry.user_id == user_id)
            .order_by(LedgerEntry.id)
        )
    return [(str(k), int(a), str(t)) for k, a, t in rows]


class SlowVenice(FakeVenice):
    """FakeVenice whose chat answers take `delay` seconds; tracks peak concurrency."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.active = 0
        self.peak = 0

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v1/chat/completions", self._slow_chat)

    async def _slow_chat(self, request: web.Request) -> web.StreamResponse:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await self.pause(self.delay)
            return await self._chat(request)
        finally:
            self.active -= 1


def consumer_env(settings: Settings, database_url: str, **extra: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "VENICE_"))}
    env.update(
        REDIS_URL=settings.redis_url,
        REDIS_CLUSTER=str(settings.redis_cluster).lower(),
        REDIS_SENTINELS=",".join(settings.redis_sentinels),
        REDIS_SENTINEL_MASTER=settings.redis_sentinel_master,
        REDIS_WAIT_REPLICAS=str(settings.redis_wait_replicas),
        REDIS_WAIT_TIMEOUT_MS=str(settings.redis_wait_timeout_ms),
        REDIS_QUEUE_PREFIX=settings.redis_queue_prefix,
        REDIS_RESULT_PREFIX=settings.redis_result_prefix,
        DATABASE_URL=database_url,
        LLM_PROVIDER="offline",
        IMAGE_PROVIDER="offline",
        LOG_JSON="true",
        LOG_LEVEL="INFO",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def venice_env(settings: Settings, database_url: str, venice: FakeVenice) -> dict[str, str]:
    """A consumer environment whose LLM is the given fake Venice server."""
    return consumer_env(
        settings,
        database_url,
        LLM_PROVIDER="venice",
        VENICE_API_KEY=venice.api_key,
        VENICE_BASE_URL=venice.url,
    )


def start_consumer(
    env: dict[str, str], name: str, log_path: Path, *args: str
) -> subprocess.Popen[bytes]:
    """A real `python -m consumers` process; its JSON log goes to `log_path` (a pipe could
    fill up and stall it)."""
    command = [sys.executable, "-m", "consumers", "--name", name, *args]
    with log_path.open("ab") as log:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)


def log_events(log_path: Path) -> list[dict[str, Any]]:
    lines = log_path.read_bytes().splitlines()
    return [orjson.loads(line) for line in lines if line.startswith(b"{")]


async def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    for _ in range(300):
        if proc.poll() is not None:
            break
        await asyncio.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
    return proc.wait()
