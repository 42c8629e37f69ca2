"""A summary task whose consumer process is killed mid-call (SIGKILL) runs again in another
consumer, and the dialog gets its summary once: the bot on PostgreSQL, real consumer processes,
the fake Venice holding the first summary call."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from sqlalchemy import select

from db.models import ChatMessage, Dialog
from db.models import Delivery as DeliveryRow
from shared.config import Settings
from shared.queue import QueueService, TaskStatus, TaskType
from tests.support.bot_feed import fed_bot, open_deliveries
from tests.support.bot_harness import bot_settings, wait_text
from tests.support.bot_world import eventually
from tests.support.consumer_helpers import ledger, start_consumer, stop_process, venice_env
from tests.support.fakes.telegram import FakeTelegram
from tests.support.fakes.venice import CHAT_PATH, IMAGE_PATH, FakeVenice, echo_reply
from tests.support.fixtures_db import Backend, Sessions, new_user_id

pytestmark = pytest.mark.timeout(120)

MEMORY = "- зовут Вася, любит горы"


def is_summary(messages: list[dict[str, Any]]) -> bool:
    return bool(messages) and "long-term memory" in str(messages[0].get("content"))


class HoldingVenice(FakeVenice):
    """Answers summary requests with MEMORY, but holds the first one (until the server closes):
    its consumer is killed while it waits."""

    def __init__(self) -> None:
        super().__init__(reply=lambda m: MEMORY if is_summary(m) else echo_reply(m))
        self.held = asyncio.Event()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(CHAT_PATH, self._holding_chat)
        app.router.add_post(IMAGE_PATH, self._image)
        app.router.add_get("/api/v1/models", self._models)
        app.router.add_get("/api/v1/api_keys/rate_limits", self._rate_limits)

    async def _holding_chat(self, request: web.Request) -> web.StreamResponse:
        messages = self.requests[-1].json["messages"]
        if is_summary(messages) and not self.held.is_set():
            self.held.set()
            await self.pause(120)
        return await self._chat(request)

    def summary_calls(self) -> list[list[dict[str, Any]]]:
        bodies = [r.json["messages"] for r in self.chat_requests]
        return [messages for messages in bodies if is_summary(messages)]


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def dialog_row(db: Sessions, user_id: int) -> Dialog:
    async with db() as session:
        found = await session.scalar(select(Dialog).where(Dialog.user_id == user_id))
    assert found is not None
    return found


async def test_a_summary_killed_mid_call_is_run_again_and_stored_once(
    settings: Settings,
    pg: Sessions,
    postgresql_backend: Backend,
    queue: QueueService,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    user = new_user_id()
    types = ("--types", "generate_reply,summarize_dialog")
    async with HoldingVenice() as venice, FakeTelegram() as tg:
        env = venice_env(settings, "", venice)
        procs.append(start_consumer(env, "victim", tmp_path / "victim.log", *types))
        config = bot_settings(settings, postgresql_backend.url, tg.base_url, history_messages=2)
        with structlog.testing.capture_logs() as logs:
            async with fed_bot(config, pg, tg) as bot:
                await bot.choose_character(user)
                for number in (1, 2, 3):
                    await bot.feed(tg.user_message(user, f"сообщение {number}"))
                    await wait_text(tg, user, f"Ответ на: сообщение {number}", timeout=30)
                # The third message's turns pushed the first exchange out of the window.
                await asyncio.wait_for(venice.held.wait(), 30)
                procs[0].kill()
                procs[0].wait()
                procs.append(start_consumer(env, "rescuer", tmp_path / "rescuer.log", *types))

                async def remembered() -> bool:
                    return (await dialog_row(pg, user)).summary == MEMORY

                await eventually(remembered, timeout=40)
                folded = await dialog_row(pg, user)
                await bot.feed(tg.user_message(user, "сообщение 4"))
                await wait_text(tg, user, "Ответ на: сообщение 4", timeout=30)
                assert await bot.services.deliveries.wait_idle(20)
            assert await stop_process(procs[1]) == 0

    # The killed call and its rerun asked the same fold; the bot stored it once.
    killed, rerun, following = venice.summary_calls()
    assert killed == rerun
    applied = [(e["upto"], e["stored"]) for e in logs if e["event"] == "summary_applied"]
    async with pg() as session:
        first_reply = await session.scalar(
            select(ChatMessage.id).where(
                ChatMessage.dialog_id == folded.id,
                ChatMessage.content == "Ответ на: сообщение 1",
            )
        )
    assert folded.summary_upto == first_reply
    # One apply per fold, each storing: the rerun's outcome was applied once.
    assert applied == [(first_reply, True), ((await dialog_row(pg, user)).summary_upto, True)]
    async with pg() as session:
        rows = await session.scalars(
            select(DeliveryRow.task_id).where(DeliveryRow.kind == f"summary:{folded.id}")
        )
        tasks = [await queue.get_task(task_id, TaskType.SUMMARIZE_DIALOG) for task_id in rows]
    rerun_task = next(t for t in tasks if t is not None and t.attempts == 2)
    assert (rerun_task.status, rerun_task.consumer) == (TaskStatus.COMPLETED, "rescuer")
    assert await open_deliveries(pg, user) == []
    # The memory goes on once: in the next fold's request, and in the next reply's request,
    # right after the character's prompt.
    assert str(following[-1]["content"]).count(MEMORY) == 1
    reply = next(
        r.json["messages"]
        for r in venice.chat_requests
        if r.json["messages"][-1]["content"] == "сообщение 4"
    )
    memories = [m for m in reply if m["role"] == "system" and MEMORY in m["content"]]
    assert len(memories) == 1
    assert reply.index(memories[0]) == 1
    assert [kind for kind, _, _ in await ledger(pg, user)] == ["charge"] * 4
