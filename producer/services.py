"""The bot's dependencies in one frozen object, injected into handlers by the name `services`."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from producer.channel import Sender
from producer.characters import Characters
from producer.chat_turns import ChatTurns
from producer.conversation import Conversation
from producer.delivery import Deliveries
from producer.stop import Stopper
from producer.stream_records import StreamRecords
from producer.streaming import LiveFeed
from producer.throttle import PhotoLock, RateLimiter
from producer.voice import Voice
from shared.config import Settings
from shared.queue import QueueService
from shared.queue.keys import BotKeys

# The photo lock outlives a normal wait, and expires by itself if a bot dies holding it.
_PHOTO_LOCK_MARGIN_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    db: async_sessionmaker[AsyncSession]
    queue: QueueService
    sender: Sender
    deliveries: Deliveries
    conversation: Conversation
    turns: ChatTurns
    stopper: Stopper
    characters: Characters
    voice: Voice


def build_services(
    settings: Settings,
    db: async_sessionmaker[AsyncSession],
    queue: QueueService,
    sender: Sender,
    live: LiveFeed | None = None,
) -> Services:
    """Wire the use cases on a connected queue and a sender (Telegram or console); with a
    live feed (and STREAM_REPLIES) replies are shown while they are written."""
    keys = BotKeys.from_settings(settings)
    lock_ttl = int(settings.image_wait_seconds) + _PHOTO_LOCK_MARGIN_SECONDS
    photo_lock = PhotoLock(queue.scripts, keys, lock_ttl)
    limiter = RateLimiter(queue.redis, keys, settings.user_messages_per_minute)
    live = live if settings.stream_replies else None
    deliveries = Deliveries(settings, db, queue, sender, photo_lock, live=live)
    conversation = Conversation(
        settings=settings,
        db=db,
        queue=queue,
        sender=sender,
        deliveries=deliveries,
        limiter=limiter,
        photo_lock=photo_lock,
    )
    turns = ChatTurns(queue.scripts, keys)
    stopper = Stopper(queue, StreamRecords(queue.redis, keys))
    characters = Characters(settings=settings, db=db, user_of=conversation.user_of)
    voice = Voice(conversation, settings, db, queue, deliveries, limiter=limiter)
    return Services(
        settings, db, queue, sender, deliveries, conversation, turns, stopper, characters, voice
    )
