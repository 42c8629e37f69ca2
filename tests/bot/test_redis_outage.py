"""Redis going away while the bot enqueues: a blip is ridden out, a long outage refunds once.

The bot reaches Redis through a loopback proxy the test breaks and mends; the consumer's part
is played on a direct connection and writes nothing but Redis state.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from db.engine import create_engine, create_sessionmaker
from producer import texts
from producer.jobs import DeliveryKind, Job, task_id_for
from shared.config import Settings
from shared.queue import QueueService, TaskType
from shared.tasks import ReplyResult
from tests.support.bot_feed import FedBot, fed_bot, open_deliveries, update
from tests.support.bot_harness import ManualConsumer, balances, bot_settings, texts_to, wait_text
from tests.support.consumer_helpers import ledger
from tests.support.fakes.fault_proxy import Fault, FaultProxy
from tests.support.fakes.telegram import FakeTelegram
from tests.support.fixtures_db import Backend, Sessions, new_user_id

pytestmark = pytest.mark.timeout(60)

REDIS_PORT = 6379


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def sqlite_db(sqlite_backend: Backend) -> AsyncIterator[Sessions]:
    engine = create_engine(sqlite_backend.url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def proxy(redis_client: aioredis.Redis) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(REDIS_PORT) as running:
        yield running


def through(proxy: FaultProxy, settings: Settings, tg: FakeTelegram, **extra: Any) -> Settings:
    """The bot's settings: its Redis is the proxy (same key prefix as the test's own queue)."""
    url = f"redis://127.0.0.1:{proxy.port}/0"
    return bot_settings(settings, "sqlite+aiosqlite://", tg.base_url, redis_url=url, **extra)


async def say(bot: FedBot, user: int, text: str) -> tuple[asyncio.Task[None], int]:
    """Feed a message in the background; return the handling task and its message id."""
    update_id = bot.tg.user_message(user, text)
    message_id = int(update(bot.tg, update_id)["message"]["message_id"])
    return asyncio.create_task(bot.feed(update_id)), message_id


@pytest.mark.parametrize("fault", [Fault.REFUSE, Fault.LOSE_REPLIES])
async def test_a_redis_blip_while_enqueuing_delays_the_reply_and_refunds_nothing(
    settings: Settings,
    sqlite_db: Sessions,
    tg: FakeTelegram,
    queue: QueueService,
    proxy: FaultProxy,
    fault: Fault,
) -> None:
    user = new_user_id()
    async with fed_bot(through(proxy, settings, tg), sqlite_db, tg) as bot:
        await bot.choose_character(user)
        await proxy.break_(fault)
        handling, _ = await say(bot, user, "Ты тут?")
        # Still retrying (with LOSE_REPLIES the task is in fact queued already), and the user
        # sees "typing" meanwhile: once the send budget's own Redis call has timed out and it
        # paces the chat in process.
        actions = await tg.wait_for("sendChatAction", lambda r: r.chat_id == user, timeout=6)
        assert not handling.done()
        assert [r.params["action"] for r in actions][:1] == ["typing"]
        await proxy.mend()
        await asyncio.wait_for(handling, 15)

        consumer = ManualConsumer(queue)
        task = await consumer.take(TaskType.GENERATE_REPLY)
        dialog_id = task.task.data["dialog_id"]
        await consumer.complete(task, ReplyResult(reply="Тут!", dialog_id=dialog_id))
        await wait_text(tg, user, "Тут!")
        await asyncio.sleep(0.3)

    # Queued once (the retries added nothing), charged once, refunded never.
    assert (await queue.get_queue_depth(TaskType.GENERATE_REPLY)).unfinished == 0
    assert [kind for kind, _, _ in await ledger(sqlite_db, user)] == ["charge"]
    assert await balances(sqlite_db, user) == (4, 2)
    sent = texts_to(tg, user)
    assert texts.ENQUEUE_FAILED not in sent
    assert texts.REPLY_FAILED not in sent
    assert await open_deliveries(sqlite_db, user) == []


async def test_redis_away_past_the_retry_window_refunds_once_and_tells_once(
    settings: Settings,
    sqlite_db: Sessions,
    tg: FakeTelegram,
    queue: QueueService,
    proxy: FaultProxy,
) -> None:
    config = through(
        proxy,
        settings,
        tg,
        enqueue_retry_seconds=1.0,
        reply_wait_seconds=1.0,
        delivery_recheck_seconds=0.3,
        lost_grace_seconds=2.0,
    )
    user = new_user_id()
    async with fed_bot(config, sqlite_db, tg) as bot:
        await bot.choose_character(user)
        await proxy.break_(Fault.REFUSE)
        handling, message_id = await say(bot, user, "Алло?")
        await asyncio.wait_for(handling, 10)  # gave up enqueuing after about a second
        # A second watcher of the same delivery, as another process or a restart would be.
        task_id = task_id_for("reply", user, message_id)
        bot.services.deliveries.watch(Job(task_id, DeliveryKind.REPLY, user, notified=True))
        await asyncio.sleep(3.0)
        # Redis is still away, so nobody can know whether the task exists: nothing decided.
        assert await balances(sqlite_db, user) == (4, 2)
        assert texts.REPLY_FAILED not in texts_to(tg, user)

        await proxy.mend()
        await wait_text(tg, user, texts.REPLY_FAILED)
        await asyncio.sleep(1.0)

    sent = texts_to(tg, user)
    assert sent.count(texts.REPLY_FAILED) == 1
    assert texts.ENQUEUE_FAILED not in sent
    assert [kind for kind, _, _ in await ledger(sqlite_db, user)] == ["charge", "refund"]
    assert await balances(sqlite_db, user) == (5, 2)
    assert (await queue.get_queue_depth(TaskType.GENERATE_REPLY)).waiting == 0
    assert await open_deliveries(sqlite_db, user) == []
