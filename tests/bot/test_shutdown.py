"""A claimed delivery is sent, not dropped: when the bot stops, and when it died mid-send."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import delete, update

from db import delivery_rows
from db import repositories as repo
from db.models import Delivery as DeliveryRow
from producer import texts
from producer.channel import ChatAction, ReplyButtons
from producer.delivery import Deliveries
from producer.jobs import DeliveryKind, Job, encode_kind
from producer.throttle import PhotoLock
from shared.config import Settings
from shared.queue import Ending, QueueService, TaskEntry
from shared.queue.keys import BotKeys
from shared.queue.scripts import Scripts
from shared.tasks import ReplyResult, TaskStatus, TaskType, dumps, to_json
from tests.support.consumer_helpers import World, make_world
from tests.support.fixtures_db import Sessions


class SlowTransport:
    """Stands in for Telegram: each message takes `delay` seconds to go out."""

    def __init__(self, delay: float = 0.5) -> None:
        self.delay = delay
        self.sending = asyncio.Event()
        self.texts: list[str] = []

    async def send_text(
        self, chat_id: int, text: str, buttons: ReplyButtons | None = None
    ) -> None:
        self.sending.set()
        await asyncio.sleep(self.delay)
        self.texts.append(text)

    async def send_photo(self, chat_id: int, data: bytes, caption: str | None = None) -> None:
        raise AssertionError("no photo in this test")

    async def send_voice(self, chat_id: int, data: bytes) -> None:
        raise AssertionError("no voice in this test")

    async def chat_action(self, chat_id: int, kind: ChatAction) -> None:
        return None


async def completed_reply(queue: QueueService, db: Sessions, world: World, text: str) -> str:
    """A finished generate_reply task with an open delivery row, as the bot leaves them."""
    payload = {
        "system_prompt": "x",
        "history": [],
        "dialog_id": world.dialog_id,
        "user_message": "Привет",
    }
    task_id = await queue.enqueue_task(TaskType.GENERATE_REPLY, world.user_id, payload)
    async with db.begin() as session:
        await delivery_rows.expect(
            session, task_id, world.user_id, encode_kind(DeliveryKind.REPLY)
        )
    consumer = queue.consumer("c1")
    [delivery] = await consumer.read(TaskType.GENERATE_REPLY, 1, 500)
    assert isinstance(delivery, TaskEntry)
    [attempt] = await consumer.start([delivery], time.time())
    result = to_json(ReplyResult(reply=text, dialog_id=world.dialog_id))
    await consumer.finish(
        [Ending(delivery, TaskStatus.COMPLETED, attempt, time.time(), dumps(result))]
    )
    return task_id


def deliveries_for(
    settings: Settings, db: Sessions, queue: QueueService, redis: aioredis.Redis, sender: Any
) -> Deliveries:
    lock = PhotoLock(Scripts(redis), BotKeys.from_settings(settings), ttl_seconds=30)
    return Deliveries(settings, db, queue, sender, lock)


async def test_stopping_bot_finishes_a_claimed_delivery(
    queue: QueueService, db: Sessions, settings: Settings, redis_client: aioredis.Redis
) -> None:
    world = await make_world(db)
    task_id = await completed_reply(queue, db, world, "Уже бегу!")
    transport = SlowTransport()
    deliveries = deliveries_for(settings, db, queue, redis_client, transport)
    deliveries.watch(Job(task_id, DeliveryKind.REPLY, world.user_id))
    await asyncio.wait_for(transport.sending.wait(), 10)
    await deliveries.close()  # the bot stops while the claimed reply is on its way
    assert transport.texts == ["Уже бегу!"]
    async with db.begin() as session:
        row = await session.get(DeliveryRow, task_id)
    assert row is not None and row.applied_at is not None and row.sent_at is not None


async def test_a_claim_whose_sender_died_is_sent_again_on_start(
    queue: QueueService, db: Sessions, settings: Settings, redis_client: aioredis.Redis
) -> None:
    world = await make_world(db)
    orphan = await completed_reply(queue, db, world, "Я тут!")
    in_progress = await completed_reply(queue, db, world, "Сейчас отправлю")
    async with db.begin() as session:
        # One process claimed both and died before sending; the second claim is recent,
        # as if a live process were sending it right now.
        assert await delivery_rows.mark_applied(session, orphan, "dead-process")
        assert await delivery_rows.mark_applied(session, in_progress, "dead-process")
        await session.execute(
            update(DeliveryRow)
            .where(DeliveryRow.task_id == orphan)
            .values(applied_at=datetime.now(UTC) - timedelta(minutes=3))
        )
    transport = SlowTransport(delay=0)
    deliveries = deliveries_for(settings, db, queue, redis_client, transport)
    assert await deliveries.resume() == 1
    assert await deliveries.wait_idle(10)
    await deliveries.close()
    assert transport.texts == ["Я тут!"]
    async with db.begin() as session:
        assert await delivery_rows.applied_unsent(session, datetime.now(UTC)) == [
            await session.get(DeliveryRow, in_progress)
        ]
        # Leave no open delivery: other tests on this database resume every one they find.
        await session.execute(delete(DeliveryRow).where(DeliveryRow.task_id == in_progress))


async def test_closing_while_a_late_task_is_rechecked_keeps_its_row_for_the_next_start(
    queue: QueueService, db: Sessions, settings: Settings, redis_client: aioredis.Redis
) -> None:
    world = await make_world(db)
    payload = {"system_prompt": "x", "history": [], "dialog_id": world.dialog_id}
    payload["user_message"] = "Ты тут?"
    task_id = await queue.enqueue_task(TaskType.GENERATE_REPLY, world.user_id, payload)
    async with db.begin() as session:
        await delivery_rows.expect(
            session, task_id, world.user_id, encode_kind(DeliveryKind.REPLY)
        )
    late = settings.replace(reply_wait_seconds=0.2, delivery_recheck_seconds=0.3)
    transport = SlowTransport(delay=0)
    deliveries = deliveries_for(late, db, queue, redis_client, transport)
    deliveries.watch(Job(task_id, DeliveryKind.REPLY, world.user_id))
    await asyncio.wait_for(transport.sending.wait(), 10)  # "it takes longer": now rechecking
    await asyncio.sleep(0.7)  # a recheck or two: the record is there, nothing is lost

    started = time.monotonic()
    await deliveries.close()

    assert time.monotonic() - started < 5
    assert transport.texts == [texts.TAKES_LONGER]
    async with db.begin() as session:
        row = await session.get(DeliveryRow, task_id)
        assert row is not None and row.applied_at is None  # neither claimed nor refunded
        assert await repo.balance(session, world.user_id) == (100, 100)

    # The next start finds the row and delivers the reply once it is written.
    consumer = queue.consumer("c1")
    [delivery] = await consumer.read(TaskType.GENERATE_REPLY, 1, 500)
    assert isinstance(delivery, TaskEntry)
    [attempt] = await consumer.start([delivery], time.time())
    result = to_json(ReplyResult(reply="Тут!", dialog_id=world.dialog_id))
    await consumer.finish(
        [Ending(delivery, TaskStatus.COMPLETED, attempt, time.time(), dumps(result))]
    )
    restarted = deliveries_for(settings, db, queue, redis_client, transport)
    assert await restarted.resume() >= 1
    assert await restarted.wait_idle(10)
    await restarted.close()
    assert transport.texts == [texts.TAKES_LONGER, "Тут!"]
