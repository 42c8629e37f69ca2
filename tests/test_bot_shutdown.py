"""Bot shutdown: a delivery already claimed is sent, not dropped, when the bot stops."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from producer.channel import ChatAction
from producer.delivery import Deliveries
from producer.jobs import DeliveryKind, Job, encode_kind
from producer.throttle import PhotoLock
from shared.config import Settings
from shared.db import repositories as repo
from shared.queue import Delivery, Outcome, QueueService
from shared.queue.keys import Keys
from shared.tasks import ReplyResult, TaskStatus, TaskType, dumps
from tests.consumer_helpers import make_world
from tests.fixtures_db import Sessions


class SlowTransport:
    """Stands in for Telegram: each message takes a while to go out."""

    def __init__(self) -> None:
        self.sending = asyncio.Event()
        self.texts: list[str] = []

    async def send_text(self, chat_id: int, text: str, photo_button: bool = False) -> None:
        self.sending.set()
        await asyncio.sleep(0.5)
        self.texts.append(text)

    async def send_photo(self, chat_id: int, data: bytes, caption: str | None = None) -> None:
        raise AssertionError("no photo in this test")

    async def chat_action(self, chat_id: int, kind: ChatAction) -> None:
        return None


async def test_stopping_bot_finishes_a_claimed_delivery(
    queue: QueueService, db: Sessions, settings: Settings, redis_client: aioredis.Redis
) -> None:
    world = await make_world(db)
    payload = {
        "system_prompt": "x",
        "history": [],
        "dialog_id": world.dialog_id,
        "user_message": "Привет",
    }
    task_id = await queue.enqueue_task(TaskType.GENERATE_REPLY, world.user_id, payload)
    async with db.begin() as session:
        await repo.record_pending_delivery(
            session, task_id, world.user_id, encode_kind(DeliveryKind.REPLY)
        )
    consumer = queue.consumer("c1")
    [delivery] = await consumer.read(TaskType.GENERATE_REPLY, 1, 500)
    assert isinstance(delivery, Delivery)
    [attempt] = await consumer.start([delivery], time.time())
    result = ReplyResult(reply="Уже бегу!", dialog_id=world.dialog_id).model_dump()
    await consumer.finish(
        [Outcome(delivery, TaskStatus.COMPLETED, attempt, time.time(), dumps(result))]
    )
    transport = SlowTransport()
    lock = PhotoLock(redis_client, Keys.from_settings(settings), ttl_seconds=30)
    deliveries = Deliveries(settings, db, queue, transport, lock)
    deliveries.watch(Job(task_id, DeliveryKind.REPLY, world.user_id))
    await asyncio.wait_for(transport.sending.wait(), 10)
    await deliveries.close()  # the bot stops while the claimed reply is on its way
    assert transport.texts == ["Уже бегу!"]
    async with db.begin() as session:
        open_rows = {row.task_id for row in await repo.undelivered(session)}
    assert task_id not in open_rows  # claimed, and its message went out
