"""The fake Bot API's streaming side: drafts with their limits, the stop button's update, the
per-chat flood limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramBadRequest, TelegramRetryAfter
from aiogram.types import MessageGenerationStopped

from tests.support.fakes.telegram import FakeTelegram
from tests.support.fakes.telegram_streaming import DRAFT_LIFE_SECONDS

TOKEN = "42:FAKE"  # noqa: S105 - a fake token
USER = 777
GROUP = -100123


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def bot(tg: FakeTelegram) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(tg.base_url))
    async with Bot(TOKEN, session=session) as client:
        yield client


async def test_draft_is_shown_updated_and_ended_by_a_message(bot: Bot, tg: FakeTelegram) -> None:
    assert await bot.send_message_draft(chat_id=USER, draft_id=7, text="", can_stop=True)
    await bot.send_message_draft(chat_id=USER, draft_id=7, text="При", can_stop=True)
    draft = tg.streaming.draft(USER)
    assert draft is not None
    assert (draft.draft_id, draft.text, draft.can_stop) == (7, "При", True)
    assert draft.expires_at == pytest.approx(time.time() + DRAFT_LIFE_SECONDS, abs=1)
    assert len(tg.streaming.draft_calls(USER)) == 2

    await bot.send_message(chat_id=USER, text="Привет!")
    assert tg.streaming.draft(USER) is None


async def test_draft_limits(bot: Bot, tg: FakeTelegram) -> None:
    with pytest.raises(TelegramBadRequest, match="TEXTDRAFT_PEER_INVALID"):
        await bot.send_message_draft(chat_id=GROUP, draft_id=1, text="x")
    with pytest.raises(TelegramBadRequest, match="non-zero"):
        await bot.send_message_draft(chat_id=USER, draft_id=0, text="x")
    with pytest.raises(TelegramBadRequest, match="too long"):
        await bot.send_message_draft(chat_id=USER, draft_id=1, text="я" * 4097)
    assert await bot.send_message_draft(chat_id=USER, draft_id=1, text="я" * 4096)
    assert tg.streaming.draft_calls() == tg.sent("sendMessageDraft")[-1:]


async def test_stop_button_sends_the_update_only_for_a_stoppable_draft(
    bot: Bot, tg: FakeTelegram
) -> None:
    await bot.send_message_draft(chat_id=USER, draft_id=5, text="Думаю")
    with pytest.raises(ValueError, match="no draft with a stop button"):
        tg.streaming.stop_generation(USER)
    await bot.send_message_draft(chat_id=USER, draft_id=5, text="Думаю…", can_stop=True)
    update_id = tg.streaming.stop_generation(USER)
    assert tg.streaming.draft(USER) is None  # the client stops showing it

    stopped: list[MessageGenerationStopped] = []
    dp = Dispatcher()

    @dp.stopped_message_generation()
    async def on_stop(event: MessageGenerationStopped) -> None:
        stopped.append(event)

    polling = asyncio.create_task(
        dp.start_polling(bot, polling_timeout=1, handle_signals=False, close_bot_session=False)
    )
    await tg.wait_confirmed(update_id)
    await dp.stop_polling()
    await polling
    assert [(e.chat.id, e.draft_id) for e in stopped] == [(USER, 5)]
    assert "stopped_message_generation" in (tg.allowed_updates or [])
    assert update_id in tg.handed_out


async def test_per_chat_limit_answers_429_and_counts(bot: Bot, tg: FakeTelegram) -> None:
    tg.streaming.limit_per_chat(0.3)
    await bot.send_message(chat_id=USER, text="раз")
    await bot.send_message(chat_id=USER + 1, text="другой чат")  # other chats are not held
    with pytest.raises(TelegramRetryAfter) as refused:
        await bot.send_message_draft(chat_id=USER, draft_id=1, text="два")
    assert refused.value.retry_after == 1
    assert tg.streaming.limited == [(USER, "sendMessageDraft")]
    await asyncio.sleep(0.3)
    await bot.send_chat_action(chat_id=USER, action="typing")
    assert len(tg.streaming.limited) == 1
