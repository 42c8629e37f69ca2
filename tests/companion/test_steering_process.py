"""Regenerate and continue whose consumer process is killed mid-call (SIGKILL): the task runs
again in another consumer, and the user is charged once and gets the new text once. The bot
on PostgreSQL, real consumer processes, the fake Venice holding the steered call."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import select

from db.models import ChatMessage, Dialog
from producer import texts
from shared.config import Settings
from tests.support.bot_feed import FedBot, fed_bot, open_deliveries, press
from tests.support.bot_harness import balances, bot_settings, texts_to, wait_text
from tests.support.bot_world import eventually
from tests.support.consumer_helpers import ledger, start_consumer, stop_process, venice_env
from tests.support.fakes.telegram import FakeTelegram, Request
from tests.support.fakes.venice import CHAT_PATH, IMAGE_PATH, FakeVenice, StreamPlan
from tests.support.fixtures_db import Backend, Sessions, new_user_id

pytestmark = pytest.mark.timeout(120)


class HoldingVenice(FakeVenice):
    """Answers the n-th chat call with `версия n`, and holds call number `hold` until the
    server closes: its consumer is killed while it waits."""

    def __init__(self, hold: int) -> None:
        super().__init__(reply=lambda _: f"версия {self.calls}")
        self.calls = 0
        self._hold = hold
        self.held = asyncio.Event()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(CHAT_PATH, self._holding_chat)
        app.router.add_post(IMAGE_PATH, self._image)
        app.router.add_get("/api/v1/models", self._models)
        app.router.add_get("/api/v1/api_keys/rate_limits", self._rate_limits)

    async def _holding_chat(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        if self.calls == self._hold:
            self.held.set()
            await self.pause(120)
        return await self._chat(request)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def steer_through_a_kill(
    bot: FedBot,
    venice: HoldingVenice,
    procs: list[subprocess.Popen[bytes]],
    start: Callable[[str], subprocess.Popen[bytes]],
    pressed: tuple[int, str, Request],
) -> None:
    """Press the button; once the provider holds its call, SIGKILL the consumer and start
    another."""
    user, data, message = pressed
    await bot.feed(press(bot.tg, user, data, chat_id=message.chat_id))
    await asyncio.wait_for(venice.held.wait(), 30)
    procs[0].kill()
    procs[0].wait()
    procs.append(start("rescuer"))


def button(message: Request, text: str) -> str:
    rows = message.params["reply_markup"]["inline_keyboard"]
    data: str = next(b["callback_data"] for row in rows for b in row if b["text"] == text)
    return data


async def contents(db: Sessions, user: int) -> list[str]:
    async with db() as session:
        rows = await session.scalars(
            select(ChatMessage.content)
            .join(Dialog, Dialog.id == ChatMessage.dialog_id)
            .where(Dialog.user_id == user)
            .order_by(ChatMessage.id)
        )
    return list(rows)


async def run_steered(
    settings: Settings,
    pg: Sessions,
    postgresql_backend: Backend,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
    venice: HoldingVenice,
    steer: Callable[[FedBot, int, Request], tuple[int, str, Request]],
    first_text: str = "версия 1",
) -> tuple[FedBot, int]:
    user = new_user_id()
    env = venice_env(settings, "", venice)

    def start(name: str) -> subprocess.Popen[bytes]:
        return start_consumer(env, name, tmp_path / f"{name}.log", "--types", "generate_reply")

    procs.append(start("victim"))
    async with FakeTelegram() as tg:
        config = bot_settings(settings, postgresql_backend.url, tg.base_url)
        async with fed_bot(config, pg, tg) as bot:
            await bot.choose_character(user)
            await bot.feed(tg.user_message(user, "привет"))
            first = await wait_text(tg, user, first_text, timeout=30)
            await steer_through_a_kill(bot, venice, procs, start, steer(bot, user, first))
            await eventually(lambda: _finished(bot), timeout=40)
            assert await bot.services.deliveries.wait_idle(20)
        assert await stop_process(procs[1]) == 0
    return bot, user


async def _finished(bot: FedBot) -> bool:
    return any("версия 3" in str(r.params.get("text")) for r in bot.tg.requests if r.ok)


async def test_a_regeneration_killed_mid_call_is_charged_and_delivered_once(
    settings: Settings,
    pg: Sessions,
    postgresql_backend: Backend,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    async with HoldingVenice(hold=2) as venice:
        bot, user = await run_steered(
            settings,
            pg,
            postgresql_backend,
            tmp_path,
            procs,
            venice,
            lambda bot, user, first: (user, button(first, texts.REGENERATE_BUTTON), first),
        )
    finals = [r for r in bot.tg.sent("editMessageText", user) if r.params["text"] == "версия 3"]
    assert len(finals) == 1
    first = next(r for r in bot.tg.sent("sendMessage", user) if r.params["text"] == "версия 1")
    assert finals[0].params["message_id"] == first.result["message_id"]
    assert venice.calls == 3  # the original, the killed call, its rerun
    assert await contents(pg, user) == ["привет", "версия 3"]
    assert [kind for kind, _, _ in await ledger(pg, user)] == ["charge", "charge"]
    assert await balances(pg, user) == (3, 2)
    assert await open_deliveries(pg, user) == []


async def test_a_continuation_killed_mid_call_is_charged_and_delivered_once(
    settings: Settings,
    pg: Sessions,
    postgresql_backend: Backend,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    async with HoldingVenice(hold=2) as venice:
        # The first reply's stream breaks after its first word: it is cut, and continued.
        venice.plan_streams(StreamPlan(cut_after=1))
        bot, user = await run_steered(
            settings,
            pg,
            postgresql_backend,
            tmp_path,
            procs,
            venice,
            lambda bot, user, first: (user, button(first, texts.CONTINUE_BUTTON), first),
            first_text=texts.CUT_MARK,
        )
    assert texts_to(bot.tg, user).count("версия 3") == 1
    assert venice.calls == 3
    continued = venice.requests_to(CHAT_PATH)[-1].json["messages"]
    assert continued[-2:] == [
        {"role": "user", "content": "привет"},
        {"role": "assistant", "content": "версия"},
    ]
    assert await contents(pg, user) == ["привет", "версия версия 3"]
    assert [kind for kind, _, _ in await ledger(pg, user)] == ["charge", "charge"]
    assert await balances(pg, user) == (3, 2)
    assert await open_deliveries(pg, user) == []
