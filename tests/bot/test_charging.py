"""A burst of messages is charged a few at a time (CHARGES_AT_ONCE).

A charge is CPU work on the bot's one event loop; fifty of them at once held every streamed
reply's next draft back until the whole burst was charged (`bench.streaming`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Connection

from db.engine import create_engine, create_sessionmaker
from shared.config import Settings
from shared.queue import QueueService, TaskType
from shared.tasks import ReplyResult
from tests.support.bot_feed import fed_bot, open_deliveries, user_messages
from tests.support.bot_harness import ManualConsumer, bot_settings, texts_to, wait_text
from tests.support.consumer_helpers import ledger
from tests.support.fakes.telegram import FakeTelegram
from tests.support.fixtures_db import Backend, Sessions, new_user_id

pytestmark = pytest.mark.timeout(90)

BURST = 8


class OpenTransactions:
    """How many transactions the engine had open at once, at most, since `reset`."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    def reset(self) -> None:
        self.most = self.now

    def begin(self, _conn: Connection) -> None:
        self.now += 1
        self.most = max(self.most, self.now)

    def end(self, _conn: Connection) -> None:
        self.now -= 1


@contextlib.asynccontextmanager
async def counted_sessions(backend: Backend) -> AsyncIterator[tuple[Sessions, OpenTransactions]]:
    """Sessions on the test schema, and a count of their engine's open transactions."""
    engine = create_engine(backend.url, schema=backend.schema)
    opened = OpenTransactions()
    event.listen(engine.sync_engine, "begin", opened.begin)
    event.listen(engine.sync_engine, "commit", opened.end)
    event.listen(engine.sync_engine, "rollback", opened.end)
    try:
        yield create_sessionmaker(engine), opened
    finally:
        await engine.dispose()


@pytest.mark.parametrize("at_once", [1, 3])
async def test_a_burst_of_messages_is_charged_a_few_at_a_time(
    postgresql_backend: Backend, settings: Settings, queue: QueueService, at_once: int
) -> None:
    users = [new_user_id() for _ in range(BURST)]
    asked = {user: f"Сообщение из пачки ({user})" for user in users}
    async with FakeTelegram() as tg, counted_sessions(postgresql_backend) as (db, opened):
        config = bot_settings(settings, postgresql_backend.url, tg.base_url)
        async with fed_bot(config.replace(charges_at_once=at_once), db, tg) as bot:
            for user in users:
                await bot.choose_character(user)
            updates = [tg.user_message(user, text) for user, text in asked.items()]
            opened.reset()
            await asyncio.wait_for(asyncio.gather(*(bot.feed(u) for u in updates)), 30)
            assert opened.most == at_once

            # Every message was charged and queued, and is answered once.
            consumer = ManualConsumer(queue)
            for _ in users:
                task = await consumer.take(TaskType.GENERATE_REPLY)
                answer = f"Ответ на: {task.task.data['user_message']}"
                dialog_id = task.task.data["dialog_id"]
                await consumer.complete(task, ReplyResult(reply=answer, dialog_id=dialog_id))
            for user, text in asked.items():
                await wait_text(tg, user, f"Ответ на: {text}")
            assert await bot.services.deliveries.wait_idle(10)

        for user, text in asked.items():
            assert [kind for kind, _, _ in await ledger(db, user)] == ["charge"]
            assert texts_to(tg, user).count(f"Ответ на: {text}") == 1
        assert sorted(await user_messages(db, list(asked.values()))) == sorted(asked.values())
        assert await open_deliveries(db, *users) == []
