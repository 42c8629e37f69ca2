"""Helpers for the shop's bot tests: in-process bots on SQLite or PostgreSQL, a buyer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiogram import Dispatcher
from aiogram.methods import SendMessage

from db.engine import create_engine, create_sessionmaker
from producer.app import build_bot, build_dispatcher
from producer.services import build_services
from producer.telegram_sender import telegram_sender
from shared.config import Settings
from shared.queue import QueueService
from tests.support.bot_harness import InProcessBot, bot_settings, wait_text
from tests.support.fakes.telegram import FakeTelegram, Request
from tests.support.fakes.telegram_payments import PaymentAttempt
from tests.support.fixtures_db import Backend

PACKS = "d10:diamonds:10:50,d50:diamonds:50:200,e100:energy:100:25"
ADMIN = 9_000_001


def shop_settings(base: Settings, backend: Backend, tg: FakeTelegram, **extra: object) -> Settings:
    values: dict[str, object] = {"shop_packs": PACKS, "admin_ids": [ADMIN], **extra}
    return bot_settings(base, backend.url, tg.base_url, **values)


@contextlib.asynccontextmanager
async def shop_bot(
    settings: Settings, backend: Backend, tg: FakeTelegram, name: str = "shop-bot"
) -> AsyncIterator[InProcessBot]:
    """The real bot polling `tg`, with its own engine, queue and Bot, as a process has."""
    async with contextlib.AsyncExitStack() as stack:
        engine = create_engine(backend.url, schema=backend.schema)
        stack.push_async_callback(engine.dispose)
        db = create_sessionmaker(engine)
        queue = QueueService(settings, client_name=name)
        stack.push_async_callback(queue.close)
        await queue.connect()
        bot = build_bot(settings)
        stack.push_async_callback(bot.session.close)
        services = build_services(
            settings, db, queue, telegram_sender(bot, settings, queue.scripts)
        )
        dispatcher = build_dispatcher(services)
        polling = asyncio.create_task(
            dispatcher.start_polling(bot, handle_signals=False, close_bot_session=False)
        )
        stack.push_async_callback(_stop, dispatcher, polling)
        await tg.wait_for("getUpdates")
        yield InProcessBot(tg, settings, db, queue, bot, services, dispatcher)


async def _stop(dispatcher: Dispatcher, polling: asyncio.Task[None]) -> None:
    with contextlib.suppress(RuntimeError):  # polling may have ended on its own
        await dispatcher.stop_polling()
    await polling


async def open_shop_and_buy(tg: FakeTelegram, user_id: int, button: int = 0) -> Request:
    """/shop, then press the pack button number `button`; the invoice request."""
    tg.user_message(user_id, "/shop")
    shop = await wait_text(tg, user_id, "Магазин")
    pressed = shop.params["reply_markup"]["inline_keyboard"][button][0]["callback_data"]
    sent = len(tg.sent("sendInvoice", user_id))
    tg.callback(user_id, pressed)
    invoices = await tg.wait_for(
        "sendInvoice", lambda r: r.ok and r.chat_id == user_id, count=sent + 1
    )
    return invoices[-1]


async def buy(tg: FakeTelegram, user_id: int, button: int = 0) -> PaymentAttempt:
    """A whole purchase as the user makes it: shop, button, invoice, Pay."""
    await open_shop_and_buy(tg, user_id, button)
    return await tg.payments.pay(user_id)


def messages_with(tg: FakeTelegram, chat_id: int, needle: str) -> list[str]:
    return [
        str(r.params["text"])
        for r in tg.sent(SendMessage.__api_method__, chat_id)
        if r.ok and needle in str(r.params["text"])
    ]
