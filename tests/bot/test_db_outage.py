"""PostgreSQL failing under a delivery: the message still goes out once, and is marked sent.

The deliveries reach PostgreSQL through a loopback proxy that the test breaks: it refuses
connections for a while (a restart), or lets a statement run and loses its reply (the commit
went through and the bot cannot know it). Without retries the row would wait for the next
start, and a sent message would be sent again by it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from db.engine import create_engine, create_sessionmaker
from db.models import Delivery as DeliveryRow
from producer.jobs import DeliveryKind, Job
from shared.config import Settings
from shared.queue import QueueService, TaskType
from shared.tasks import ReplyResult
from tests.bot.test_shutdown import SlowTransport, completed_reply, deliveries_for
from tests.support.bot_feed import fed_bot, history_of, open_deliveries, user_messages
from tests.support.bot_harness import ManualConsumer, bot_settings, texts_to, wait_text
from tests.support.consumer_helpers import count_replies, ledger, make_world
from tests.support.fakes.fault_proxy import Fault, FaultProxy
from tests.support.fakes.telegram import FakeTelegram
from tests.support.fixtures_db import Backend, Sessions, new_user_id

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def sessions_at(backend: Backend, port: int | None = None) -> AsyncIterator[Sessions]:
    """Sessions on the test schema, through a proxy listening on `port` if given."""
    url = make_url(backend.url)
    if port is not None:
        url = url.set(host="127.0.0.1", port=port)
    engine = create_engine(url.render_as_string(hide_password=False), schema=backend.schema)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def cutting_db(postgresql_backend: Backend) -> AsyncIterator[tuple[FaultProxy, Sessions]]:
    """Sessions whose statements pass a proxy that can lose the reply to one of them."""
    upstream = make_url(postgresql_backend.url)
    async with (
        FaultProxy(upstream.port or 5432, upstream.host or "127.0.0.1") as proxy,
        sessions_at(postgresql_backend, proxy.port) as sessions,
    ):
        yield proxy, sessions


@pytest.fixture
async def direct_db(postgresql_backend: Backend) -> AsyncIterator[Sessions]:
    async with sessions_at(postgresql_backend) as sessions:
        yield sessions


async def mend_after(proxy: FaultProxy, seconds: float) -> None:
    await asyncio.sleep(seconds)
    await proxy.mend()


def quick_retries(settings: Settings) -> Settings:
    return settings.replace(db_retry_seconds=20.0)


async def _row(db: Sessions, task_id: str) -> DeliveryRow:
    async with db() as session:
        row = await session.get(DeliveryRow, task_id)
    assert row is not None
    return row


@pytest.mark.parametrize(
    "marker",
    [
        pytest.param(b"COMMIT", id="apply-commit"),
        pytest.param(b"sent_at", id="confirm-sent"),
    ],
)
async def test_a_lost_database_reply_still_sends_once_and_marks_sent(
    cutting_db: tuple[FaultProxy, Sessions],
    direct_db: Sessions,
    queue: QueueService,
    settings: Settings,
    redis_client: aioredis.Redis,
    marker: bytes,
) -> None:
    proxy, db = cutting_db
    world = await make_world(direct_db)
    task_id = await completed_reply(queue, direct_db, world, "Дошло один раз")
    transport = SlowTransport(delay=0)
    deliveries = deliveries_for(quick_retries(settings), db, queue, redis_client, transport)
    # The first COMMIT through the proxy is the claim-and-save transaction; the first
    # statement naming sent_at is the confirmation after the message went out.
    proxy.cut_reply_after(marker)
    deliveries.watch(Job(task_id, DeliveryKind.REPLY, world.user_id))
    try:
        assert await deliveries.wait_idle(30)
    finally:
        await deliveries.close()

    assert proxy.cuts == 1
    assert transport.texts == ["Дошло один раз"]
    row = await _row(direct_db, task_id)
    assert row.applied_at is not None and row.sent_at is not None
    assert await count_replies(direct_db, world.dialog_id) == (1, 1)


async def test_a_database_restart_during_a_delivery_is_ridden_out(
    postgresql_backend: Backend,
    direct_db: Sessions,
    queue: QueueService,
    settings: Settings,
    redis_client: aioredis.Redis,
) -> None:
    world = await make_world(direct_db)
    task_id = await completed_reply(queue, direct_db, world, "После перезапуска")
    upstream = make_url(postgresql_backend.url)
    async with (
        FaultProxy(upstream.port or 5432, upstream.host or "127.0.0.1") as proxy,
        sessions_at(postgresql_backend, proxy.port) as db,
    ):
        transport = SlowTransport(delay=0)
        deliveries = deliveries_for(quick_retries(settings), db, queue, redis_client, transport)
        await proxy.break_(Fault.REFUSE)  # the database is down when the result arrives
        deliveries.watch(Job(task_id, DeliveryKind.REPLY, world.user_id))
        try:
            assert not await deliveries.wait_idle(1.5)
            assert transport.texts == []
            await proxy.mend()
            assert await deliveries.wait_idle(30)
        finally:
            await deliveries.close()

    assert transport.texts == ["После перезапуска"]
    row = await _row(direct_db, task_id)
    assert row.sent_at is not None


@pytest.mark.parametrize("fault", ["lost-commit", "refused"])
async def test_a_database_failure_while_charging_a_message_charges_once_and_replies(
    postgresql_backend: Backend,
    direct_db: Sessions,
    settings: Settings,
    queue: QueueService,
    fault: str,
) -> None:
    upstream = make_url(postgresql_backend.url)
    user = new_user_id()
    asked = f"Ты тут? ({user})"
    async with (
        FakeTelegram() as tg,
        FaultProxy(upstream.port or 5432, upstream.host or "127.0.0.1") as cutter,
        FaultProxy(cutter.port) as gate,
        sessions_at(postgresql_backend, gate.port) as db,
    ):
        config = bot_settings(settings, postgresql_backend.url, tg.base_url, db_retry_seconds=20)
        async with fed_bot(config, db, tg) as bot:
            await bot.choose_character(user)
            mending = None
            if fault == "lost-commit":
                # The message's one transaction (charge, message, delivery row) commits, and
                # the bot never hears of it.
                cutter.cut_reply_after(b"COMMIT")
            else:
                await gate.break_(Fault.REFUSE)  # the database restarts as the message comes
                mending = asyncio.create_task(mend_after(gate, 1.5))
            await asyncio.wait_for(bot.feed(tg.user_message(user, asked)), 30)
            if mending is not None:
                assert mending.done()  # the message waited for the database, not failed

            consumer = ManualConsumer(queue)
            task = await consumer.take(TaskType.GENERATE_REPLY)
            # The retry read the history again: the message is asked about, not repeated in it.
            assert task.task.data["user_message"] == asked
            assert asked not in history_of(task.task)
            dialog_id = task.task.data["dialog_id"]
            await consumer.complete(task, ReplyResult(reply="Тут!", dialog_id=dialog_id))
            await wait_text(tg, user, "Тут!")
            assert await bot.services.deliveries.wait_idle(10)

    if fault == "lost-commit":
        assert cutter.cuts == 1
    assert [kind for kind, _, _ in await ledger(direct_db, user)] == ["charge"]
    assert await user_messages(direct_db, [asked]) == [asked]
    assert texts_to(tg, user).count("Тут!") == 1
    assert await open_deliveries(direct_db, user) == []
