"""Small parts of the bot: text splitting, ids, Redis limits, flood control on the fake API."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramRetryAfter
from aiogram.types import BufferedInputFile, User

from producer import texts
from producer.channel import split_text
from producer.handlers import profile_of
from producer.jobs import (
    DeliveryKind,
    Job,
    decode_kind,
    encode_kind,
    image_task_id,
    task_id_for,
)
from producer.memory import fit_history
from producer.send_budget import SendBudget
from producer.telegram_session import FloodControlMiddleware
from producer.throttle import PhotoLock, RateLimiter
from shared.config import Settings
from shared.errors import InsufficientBalanceError
from shared.queue.keys import BotKeys
from shared.queue.scripts import Scripts
from shared.tasks import ChatTurn
from tests.support.bot_harness import TOKEN
from tests.support.fakes.telegram import FakeTelegram


def test_short_text_is_one_message() -> None:
    assert split_text("  Привет!  ") == ["Привет!"]
    assert split_text("") == []


def test_split_prefers_paragraphs_then_sentences_then_words() -> None:
    assert split_text("Абзац один.\n\nАбзац два.", limit=15) == ["Абзац один.", "Абзац два."]
    assert split_text("Раз два. Три четыре. Пять.", limit=20) == ["Раз два. Три четыре.", "Пять."]
    assert split_text("слово " * 5, limit=12) == ["слово слово", "слово слово", "слово"]


def test_split_cuts_a_word_only_when_it_alone_is_too_long() -> None:
    assert split_text("а" * 10, limit=4) == ["аааа", "аааа", "аа"]


def test_split_counts_utf16_units_like_telegram() -> None:
    parts = split_text("😀" * 3000)  # each emoji is two UTF-16 units
    assert [len(p) for p in parts] == [2048, 952]


def test_split_keeps_every_word_of_a_long_reply() -> None:
    text = "\n".join(
        f"Строка номер {n}. Ещё немного текста, чтобы было длиннее." for n in range(400)
    )
    parts = split_text(text)
    assert len(parts) > 1
    assert all(len(part.encode("utf-16-le")) // 2 <= 4096 for part in parts)
    assert " ".join(parts).split() == text.split()


def test_fit_history_keeps_the_newest_turns() -> None:
    turns = [ChatTurn(role="user", content=str(n) * 100) for n in range(5)]
    kept = fit_history(turns, budget=300)
    assert [t.content[0] for t in kept] == ["3", "4"]
    assert fit_history(turns, budget=10**6) == turns


def test_task_ids_are_deterministic_and_the_chain_shares_one_charge() -> None:
    assert task_id_for("reply", 1, 2) == task_id_for("reply", 1, 2) != task_id_for("reply", 1, 3)
    prompt = Job(task_id_for("photo", 1, "cb"), DeliveryKind.PHOTO_PROMPT, 1)
    image = Job(image_task_id(prompt.task_id), DeliveryKind.IMAGE, 1)
    assert prompt.charge_id == image.charge_id == image.task_id


def test_delivery_kind_round_trip() -> None:
    assert decode_kind(encode_kind(DeliveryKind.PHOTO_PROMPT, 12)) == (
        DeliveryKind.PHOTO_PROMPT,
        12,
    )
    assert decode_kind(encode_kind(DeliveryKind.REPLY)) == (DeliveryKind.REPLY, None)
    assert len(encode_kind(DeliveryKind.PHOTO_PROMPT, 2**63 - 1)) <= 32  # the column's size


def test_balance_refusal_names_the_balance() -> None:
    text = texts.error_text(InsufficientBalanceError("energy", 0, 1))
    assert "нужно 1 ⚡, у тебя 0 ⚡" in text


async def test_rate_limit_is_shared_through_redis(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    keys = BotKeys.from_settings(settings)
    first = RateLimiter(redis_client, keys, per_minute=2)
    second = RateLimiter(redis_client, keys, per_minute=2)  # as in another bot process
    assert [await first.allow(1), await second.allow(1), await first.allow(1)] == [
        True,
        True,
        False,
    ]
    assert await first.allow(2)
    assert 0 < await redis_client.ttl(keys.rate(1)) <= 60


async def test_photo_lock_belongs_to_its_holder(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    lock = PhotoLock(Scripts(redis_client), BotKeys.from_settings(settings), ttl_seconds=30)
    assert await lock.acquire(1, "a")
    assert await lock.acquire(1, "a")  # the same press again (a redelivered update)
    assert not await lock.acquire(1, "b")
    await lock.release(1, "b")  # not the holder: nothing happens
    assert not await lock.acquire(1, "b")
    await lock.release(1, "a")
    assert await lock.acquire(1, "b")


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as fake:
        yield fake


def _bot(tg: FakeTelegram, budget: SendBudget, max_attempts: int = 5) -> Bot:
    session = AiohttpSession(api=TelegramAPIServer.from_base(tg.base_url))
    session.middleware(FloodControlMiddleware(budget, max_attempts))
    return Bot(TOKEN, session=session)


@pytest.fixture
def budget(redis_client: aioredis.Redis, settings: Settings) -> SendBudget:
    keys = BotKeys.from_settings(settings)
    return SendBudget(Scripts(redis_client), keys, chat_interval=0.05, group_interval=0.05)


async def test_flood_wait_is_honoured_then_the_message_is_sent(
    tg: FakeTelegram, budget: SendBudget
) -> None:
    tg.fail_next("sendMessage", 429, retry_after=1)
    async with _bot(tg, budget) as bot:
        started = time.monotonic()
        await bot.send_message(chat_id=5, text="Привет")
    assert time.monotonic() - started >= 1.0
    assert [r.status for r in tg.sent("sendMessage")] == [429, 200]


async def test_transient_telegram_errors_are_retried(tg: FakeTelegram, budget: SendBudget) -> None:
    tg.fail_next("sendPhoto", 500, "Internal Server Error: try again", times=2)
    async with _bot(tg, budget) as bot:
        await bot.send_photo(chat_id=5, photo=BufferedInputFile(b"\x89PNG-bytes", "p.png"))
    assert [r.status for r in tg.sent("sendPhoto")] == [500, 500, 200]


async def test_flood_retries_are_bounded(tg: FakeTelegram, budget: SendBudget) -> None:
    tg.fail_next("sendMessage", 429, retry_after=1, times=3)
    async with _bot(tg, budget, max_attempts=2) as bot:
        with pytest.raises(TelegramRetryAfter):
            await bot.send_message(chat_id=5, text="Привет")
    assert len(tg.sent("sendMessage")) == 2


def test_a_user_is_known_by_their_first_name() -> None:
    """{{user}} in a character card is the user's first name, not their full name."""
    user = User(id=7, is_bot=False, first_name="Аня", last_name="Котова", language_code="ru")
    assert profile_of(user).name == "Аня"
