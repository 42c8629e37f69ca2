"""Audio kept beside a voice task: the bot stores a voice message's bytes under the task's
audio key before it enqueues the task, the consumer reads them, the bot drops them once the
outcome is applied (or they expire with REDIS_TASK_TTL, like an unfinished task's record).

The bytes stay out of the stream entry (entries are capped at MAX_PAYLOAD_BYTES and copied
into dead letters), and out of the consumers' reach is the Bot API file URL, which holds the
bot token: a consumer needs only its Redis user, as for every other task type.
"""

from __future__ import annotations

import hashlib

import structlog
from redis.exceptions import RedisError

from shared.config import Settings
from shared.queue.connection import RedisClient, create_redis
from shared.queue.keys import Keys
from shared.redact import redact
from shared.tasks import TaskType


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class AudioStore:
    """Reads and writes the audio of voice tasks; `owned` clients are closed by `aclose`."""

    def __init__(self, redis: RedisClient, settings: Settings, *, owned: bool = False) -> None:
        self._redis = redis
        self._keys = Keys.from_settings(settings)
        self._ttl = settings.redis_task_ttl
        self._owned = owned

    @classmethod
    def connect(cls, settings: Settings, name: str) -> AudioStore:
        """A store with a small client of its own (a consumer's: 4 connections at most)."""
        return cls(create_redis(settings, f"{name}:audio", 4), settings, owned=True)

    async def put(self, task_type: TaskType, task_id: str, data: bytes) -> None:
        """Store (or store again: the same bytes for the same task) the task's audio."""
        await self._redis.set(self._keys.audio(task_type, task_id), data, ex=self._ttl)

    async def get(self, task_type: TaskType, task_id: str) -> bytes | None:
        data = await self._redis.get(self._keys.audio(task_type, task_id))
        # The client answers bytes (no decode_responses); the str case only satisfies typing.
        return data.encode() if isinstance(data, str) else data

    async def drop(self, task_type: TaskType, task_id: str) -> None:
        """Delete the audio; best effort: with Redis away it expires by itself."""
        try:
            await self._redis.delete(self._keys.audio(task_type, task_id))
        except (RedisError, OSError) as exc:
            structlog.get_logger(__name__).warning("audio_drop_failed", error=redact(str(exc)))

    async def aclose(self) -> None:
        if self._owned:
            await self._redis.aclose()
