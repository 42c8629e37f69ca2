"""Helpers for bot tests that feed updates by hand: bot processes without polling (one or
several on the same Redis and database), a consumer with no side effects, a Redis proxy."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.types import Update
from sqlalchemy import select

from db.models import ChatMessage
from db.models import Delivery as DeliveryRow
from producer.app import build_bot, build_dispatcher
from producer.services import Services, build_services
from producer.telegram_sender import telegram_sender
from scripts.seed_characters import seed_characters
from shared.config import Settings
from shared.queue import QueueService, QueueTask
from tests.support.bot_harness import bot_settings, wait_text
from tests.support.fakes.telegram import FakeTelegram
from tests.support.fixtures_db import Backend, Sessions


@dataclass
class FedBot:
    """One bot process whose updates the test feeds to its Dispatcher (as a webhook does)."""

    tg: FakeTelegram
    settings: Settings
    db: Sessions
    queue: QueueService
    bot: Bot
    services: Services
    dispatcher: Dispatcher

    async def feed(self, update_id: int) -> None:
        """Handle the update the fake Telegram queued under `update_id`."""
        raw = update(self.tg, update_id)
        await self.dispatcher.feed_update(
            self.bot, Update.model_validate(raw, context={"bot": self.bot})
        )

    async def choose_character(self, user_id: int) -> None:
        await self.feed(self.tg.user_message(user_id, "/start"))
        greeting = await wait_text(self.tg, user_id, "Привет")
        button = greeting.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        await self.feed(press(self.tg, user_id, button))
        await wait_text(self.tg, user_id, "Твой собеседник")


def update(tg: FakeTelegram, update_id: int) -> dict[str, Any]:
    return next(u for u in tg.pending_updates if u["update_id"] == update_id)


def press(tg: FakeTelegram, user_id: int, data: str, chat_id: int | None = None) -> int:
    """Queue a button press; return its update id."""
    callback_id = tg.callback(user_id, data, chat_id=chat_id)
    presses = [u for u in tg.pending_updates if "callback_query" in u]
    return next(int(u["update_id"]) for u in presses if u["callback_query"]["id"] == callback_id)


@contextlib.asynccontextmanager
async def fed_bot(
    settings: Settings, db: Sessions, tg: FakeTelegram, name: str = "bot"
) -> AsyncIterator[FedBot]:
    """A bot process of its own (queue, turns, deliveries) on the given database."""
    async with contextlib.AsyncExitStack() as stack:
        await seed_characters(db)
        queue = QueueService(settings, client_name=f"{settings.redis_queue_prefix}{name}")
        stack.push_async_callback(queue.close)
        await queue.connect()
        bot = build_bot(settings)
        stack.push_async_callback(bot.session.close)
        services = build_services(
            settings, db, queue, telegram_sender(bot, settings, queue.scripts)
        )
        stack.push_async_callback(services.deliveries.close)
        stack.push_async_callback(services.turns.wait_idle, 10.0)
        yield FedBot(tg, settings, db, queue, bot, services, build_dispatcher(services))


async def user_messages(db: Sessions, dialog_user_texts: list[str]) -> list[str]:
    """The given user texts in the order their rows were stored (insertion = handling order)."""
    async with db() as session:
        rows = await session.scalars(
            select(ChatMessage.content)
            .where(ChatMessage.content.in_(dialog_user_texts), ChatMessage.role == "user")
            .order_by(ChatMessage.id)
        )
    return list(rows)


def history_of(task: QueueTask) -> list[str]:
    """The user turns a reply task's LLM request carries, oldest first."""
    return [turn["content"] for turn in task.data["history"] if turn["role"] == "user"]


async def open_deliveries(db: Sessions, *chat_ids: int) -> list[str]:
    """Deliveries of these chats not yet sent. Tests leave none: the database is shared by
    the tests of a worker, and the bot resumes every open delivery it finds."""
    async with db() as session:
        rows = await session.scalars(
            select(DeliveryRow.task_id).where(
                DeliveryRow.chat_id.in_(chat_ids), DeliveryRow.sent_at.is_(None)
            )
        )
    return list(rows)


@contextlib.asynccontextmanager
async def chatting(
    settings: Settings,
    pg: Sessions,
    backend: Backend,
    *users: int,
    idle_seconds: float = 10,
    **extra: Any,
) -> AsyncIterator[FedBot]:
    """A bot on the fake Telegram whose `users` chose a character (10 energy each unless
    `extra` says otherwise); at the end every delivery is done and none is left open."""
    async with FakeTelegram() as tg:
        config = bot_settings(settings, backend.url, tg.base_url, **({"start_energy": 10} | extra))
        async with fed_bot(config, pg, tg) as bot:
            for user in users:
                await bot.choose_character(user)
            yield bot
            assert await bot.services.deliveries.wait_idle(idle_seconds)
        assert await open_deliveries(pg, *users) == []
