"""A hung database statement does not hold the bot: PostgreSQL's lock and statement timeouts
end a charge stuck on a lock, its slot goes to the next message, and the stuck one is retried.

Another connection holds a user's row lock (an operator's forgotten transaction, a stuck
migration): that user's charge waits on it. With one charge slot and no timeout, every other
user's message waited behind it for as long as the lock was held.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from db.engine import create_engine, create_sessionmaker, engine_for
from db.models import User
from db.retry import is_transient
from shared.config import Settings
from shared.queue import QueueService, TaskType
from shared.tasks import ReplyResult
from tests.support.bot_feed import fed_bot, open_deliveries
from tests.support.bot_harness import ManualConsumer, bot_settings, wait_text
from tests.support.consumer_helpers import ledger
from tests.support.fakes.telegram import FakeTelegram
from tests.support.fixtures_db import Backend, Sessions, make_user, new_user_id

pytestmark = pytest.mark.timeout(90)


@contextlib.asynccontextmanager
async def row_locked(backend: Backend, user_id: int) -> AsyncIterator[AsyncConnection]:
    """Hold the user's row lock from another connection until the block ends."""
    engine = create_engine(backend.url, schema=backend.schema)
    try:
        async with engine.connect() as holder:
            await holder.begin()
            await holder.execute(select(User.id).where(User.id == user_id).with_for_update())
            yield holder
            await holder.rollback()
    finally:
        await engine.dispose()


async def _answer(consumer: ManualConsumer, tg: FakeTelegram, user_id: int, reply: str) -> None:
    task = await consumer.take(TaskType.GENERATE_REPLY)
    result = ReplyResult(reply=reply, dialog_id=task.task.data["dialog_id"])
    await consumer.complete(task, result)
    await wait_text(tg, user_id, reply)


@pytest.mark.parametrize(
    "timeouts",
    [
        pytest.param({"db_lock_timeout_seconds": 0.5}, id="lock-timeout"),
        pytest.param(
            {"db_lock_timeout_seconds": 0, "db_statement_timeout_seconds": 0.5},
            id="statement-timeout",
        ),
    ],
)
async def test_a_charge_stuck_on_a_lock_gives_its_slot_up_and_is_retried(
    postgresql_backend: Backend,
    settings: Settings,
    queue: QueueService,
    timeouts: dict[str, float],
) -> None:
    stuck, other = new_user_id(), new_user_id()
    async with FakeTelegram() as tg:
        config = bot_settings(
            settings,
            postgresql_backend.url,
            tg.base_url,
            charges_at_once=1,
            db_retry_seconds=30,
            **timeouts,
        )
        engine = engine_for(config, schema=postgresql_backend.schema)
        db: Sessions = create_sessionmaker(engine)
        try:
            async with fed_bot(config, db, tg) as bot:
                await bot.choose_character(stuck)
                await bot.choose_character(other)
                consumer = ManualConsumer(queue)
                async with row_locked(postgresql_backend, stuck):
                    waiting = asyncio.create_task(bot.feed(tg.user_message(stuck, "Ты где?")))
                    await asyncio.sleep(0.3)  # its charge now waits for the row, in the slot
                    # The only slot is not held by the stuck charge: the next message goes on.
                    await asyncio.wait_for(bot.feed(tg.user_message(other, "Привет")), 10)
                    await _answer(consumer, tg, other, "Привет-привет")
                    assert not waiting.done()  # still retrying: the lock is still held
                await asyncio.wait_for(waiting, 20)  # the lock is gone: the retry charges
                await _answer(consumer, tg, stuck, "Я тут")
                assert await bot.services.deliveries.wait_idle(10)
            assert [kind for kind, _, _ in await ledger(db, stuck)] == ["charge"]
            assert [kind for kind, _, _ in await ledger(db, other)] == ["charge"]
            assert await open_deliveries(db, stuck, other) == []
        finally:
            await engine.dispose()


async def test_lock_and_statement_timeouts_are_transient(postgresql_backend: Backend) -> None:
    """Each timeout fails the statement with its SQLSTATE, which the retry takes as passing."""
    engine = create_engine(postgresql_backend.url, schema=postgresql_backend.schema)
    try:
        user_id = await make_user(create_sessionmaker(engine))
    finally:
        await engine.dispose()
    async with row_locked(postgresql_backend, user_id):
        for timeouts in ({"lock_timeout": 0.2}, {"statement_timeout": 0.2}):
            engine = create_engine(
                postgresql_backend.url, schema=postgresql_backend.schema, **timeouts
            )
            try:
                async with engine.connect() as connection:
                    with pytest.raises(DBAPIError) as caught:
                        await connection.execute(
                            select(User.id).where(User.id == user_id).with_for_update()
                        )
            finally:
                await engine.dispose()
            assert is_transient(caught.value), repr(caught.value)
