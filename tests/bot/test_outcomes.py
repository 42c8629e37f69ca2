"""The bot applies every outcome once: saves the reply, counts the photo, refunds a failure.

The consumer's part writes only Redis state (as consumers will), so every effect checked here
is the bot's own; a second watcher of the same delivery (another process, a restart) is added
each time and must change nothing.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select

from db.models import Dialog, PhotoEvent
from producer import texts
from producer.jobs import DeliveryKind, Job
from producer.keyboards import PhotoCallback
from shared.config import Settings
from shared.queue import QueueService, TaskStatus, TaskType
from shared.queue.keys import Keys
from shared.tasks import ImagePromptResult, ImageResult, ReplyResult
from tests.support.bot_feed import fed_bot, open_deliveries, press
from tests.support.bot_harness import ManualConsumer, balances, bot_settings, texts_to, wait_text
from tests.support.consumer_helpers import count_replies, ledger
from tests.support.fakes.http import make_png
from tests.support.fakes.telegram import FakeTelegram
from tests.support.fixtures_db import Sessions, new_user_id

pytestmark = pytest.mark.timeout(60)

PNG = base64.b64encode(make_png(8, 8)).decode()


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def config(settings: Settings, tg: FakeTelegram, redis_client: aioredis.Redis) -> Settings:
    return bot_settings(settings, "sqlite+aiosqlite://", tg.base_url)


async def photo_count(db: Sessions, dialog_id: int) -> tuple[int, int]:
    """(the dialog's counter, its photo events)."""
    async with db() as session:
        dialog = await session.get(Dialog, dialog_id, populate_existing=True)
        events = await session.scalar(
            select(func.count()).where(PhotoEvent.dialog_id == dialog_id)
        )
    assert dialog is not None
    return dialog.photo_count, int(events or 0)


async def test_the_bot_saves_the_reply_and_counts_the_photo_once(
    config: Settings, db: Sessions, tg: FakeTelegram, queue: QueueService
) -> None:
    user = new_user_id()
    consumer = ManualConsumer(queue)
    async with fed_bot(config, db, tg) as bot:
        await bot.choose_character(user)
        await bot.feed(tg.user_message(user, "Привет!"))
        reply = await consumer.take(TaskType.GENERATE_REPLY)
        dialog_id = reply.task.data["dialog_id"]
        second = Job(reply.task.task_id, DeliveryKind.REPLY, user, notified=True)
        bot.services.deliveries.watch(second)
        await consumer.complete(reply, ReplyResult(reply="Привет-привет!", dialog_id=dialog_id))
        await wait_text(tg, user, "Привет-привет!")

        await bot.feed(press(tg, user, PhotoCallback().pack()))
        prompt = await consumer.take(TaskType.GENERATE_IMAGE_PROMPT)
        await consumer.complete(prompt, ImagePromptResult(prompt="1girl, cafe"))
        image = await consumer.take(TaskType.GENERATE_IMAGE)
        assert image.task.data["dialog_id"] == dialog_id
        bot.services.deliveries.watch(Job(image.task.task_id, DeliveryKind.IMAGE, user))
        await consumer.complete(
            image, ImageResult(image_base64=PNG, image_size=40, dialog_id=dialog_id)
        )
        await tg.wait_for("sendPhoto")
        await asyncio.sleep(0.3)

    assert await count_replies(db, dialog_id) == (1, 1)
    assert await photo_count(db, dialog_id) == (1, 1)
    assert texts_to(tg, user).count("Привет-привет!") == 1
    assert len(tg.sent("sendPhoto", user)) == 1
    assert await balances(db, user) == (4, 1)
    assert await open_deliveries(db, user) == []


@pytest.mark.parametrize("status", [TaskStatus.FAILED, TaskStatus.CANCELLED])
async def test_a_failed_or_cancelled_task_is_refunded_once_told_once_and_settled(
    config: Settings,
    db: Sessions,
    tg: FakeTelegram,
    queue: QueueService,
    redis_client: aioredis.Redis,
    status: TaskStatus,
) -> None:
    user = new_user_id()
    consumer = ManualConsumer(queue)
    async with fed_bot(config, db, tg) as bot:
        await bot.choose_character(user)
        await bot.feed(tg.user_message(user, "/generate в шляпе"))
        image = await consumer.take(TaskType.GENERATE_IMAGE)
        assert await balances(db, user) == (5, 1)
        bot.services.deliveries.watch(Job(image.task.task_id, DeliveryKind.IMAGE, user))
        await consumer.fail(image, status)
        await wait_text(tg, user, texts.IMAGE_FAILED)
        await asyncio.sleep(0.3)

    assert texts_to(tg, user).count(texts.IMAGE_FAILED) == 1
    assert [kind for kind, _, _ in await ledger(db, user)] == ["charge", "refund"]
    assert await balances(db, user) == (5, 2)
    assert await open_deliveries(db, user) == []
    keys = Keys.from_settings(config)
    record = keys.record(TaskType.GENERATE_IMAGE, image.task.task_id)
    assert await redis_client.hget(record, "settled") == b"1"
    # Settling a record that is gone does not bring it back as a stub.
    await queue.mark_settled(TaskType.GENERATE_IMAGE, "gone")
    assert not await redis_client.exists(keys.record(TaskType.GENERATE_IMAGE, "gone"))


async def test_a_lost_photo_in_a_group_frees_the_users_photo_lock(
    settings: Settings,
    db: Sessions,
    tg: FakeTelegram,
    queue: QueueService,
    redis_client: aioredis.Redis,
) -> None:
    config = bot_settings(
        settings,
        "sqlite+aiosqlite://",
        tg.base_url,
        image_wait_seconds=0.5,
        delivery_recheck_seconds=0.3,
        lost_grace_seconds=0.5,
    )
    user, group = new_user_id(), -(10**12) - new_user_id()
    consumer = ManualConsumer(queue)
    async with fed_bot(config, db, tg) as bot:
        await bot.choose_character(user)
        await bot.feed(press(tg, user, PhotoCallback().pack(), chat_id=group))
        prompt = await consumer.take(TaskType.GENERATE_IMAGE_PROMPT)
        # The record expires (the bot was down for longer than its TTL): the photo is lost.
        keys = Keys.from_settings(config)
        await redis_client.delete(keys.record(TaskType.GENERATE_IMAGE_PROMPT, prompt.task.task_id))
        await wait_text(tg, group, texts.IMAGE_FAILED)
        assert await balances(db, user) == (5, 2)

        # The lock belonged to the user, not to the group: the next press works.
        await bot.feed(press(tg, user, PhotoCallback().pack(), chat_id=group))
        again = await consumer.take(TaskType.GENERATE_IMAGE_PROMPT)
        assert again.task.task_id != prompt.task.task_id
        assert await balances(db, user) == (5, 1)
        await consumer.fail(again)
        await tg.wait_for("sendMessage", lambda r: r.params["text"] == texts.IMAGE_FAILED, count=2)

    assert texts.PHOTO_IN_PROGRESS not in texts_to(tg, group)
    assert await balances(db, user) == (5, 2)
    assert await open_deliveries(db, user, group) == []


async def test_a_payload_refused_at_enqueue_is_refunded_at_once(
    settings: Settings, db: Sessions, tg: FakeTelegram, queue: QueueService
) -> None:
    config = bot_settings(settings, "sqlite+aiosqlite://", tg.base_url, max_payload_bytes=1000)
    user = new_user_id()
    async with fed_bot(config, db, tg) as bot:
        await bot.choose_character(user)
        await bot.feed(tg.user_message(user, "я" * 600))
        await wait_text(tg, user, texts.ENQUEUE_FAILED)
        await asyncio.sleep(0.3)

    assert texts_to(tg, user).count(texts.ENQUEUE_FAILED) == 1
    assert [kind for kind, _, _ in await ledger(db, user)] == ["charge", "refund"]
    assert await balances(db, user) == (5, 2)
    assert (await queue.get_queue_depth(TaskType.GENERATE_REPLY)).unfinished == 0
    assert await open_deliveries(db, user) == []
