"""Per-user limits kept in Redis, so every bot process sees the same counters and locks."""

from __future__ import annotations

import structlog
from redis.exceptions import RedisError

from producer.bot_steps import PhotoLockRelease, PhotoLockTake
from shared.queue.connection import RedisClient
from shared.queue.keys import BotKeys
from shared.queue.scripts import Scripts
from shared.redact import redact

log = structlog.get_logger(__name__)

RATE_WINDOW_SECONDS = 60


class RateLimiter:
    """At most `per_minute` messages per user in a fixed one-minute window."""

    def __init__(self, redis: RedisClient, keys: BotKeys, per_minute: int) -> None:
        self._redis = redis
        self._keys = keys
        self._per_minute = per_minute

    async def allow(self, user_id: int) -> bool:
        """True if the user is within the limit, or if Redis cannot tell (a blip must not
        turn paid messages away: the enqueue after it rides the blip out)."""
        key = self._keys.rate(user_id)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                # NX: only the first message of a window starts its clock.
                pipe.expire(key, RATE_WINDOW_SECONDS, nx=True)
                count, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("rate_limit_unavailable", error=redact(str(exc)))
            return True
        return int(count) <= self._per_minute


class PhotoLock:
    """One photo in progress per user; the holder is identified by the photo's charge id."""

    def __init__(self, scripts: Scripts, keys: BotKeys, ttl_seconds: int) -> None:
        self._scripts = scripts
        self._keys = keys
        self._ttl = ttl_seconds

    async def acquire(self, user_id: int, holder: str) -> bool:
        """True if taken now or already held by `holder` (a repeated update of the same press)."""
        lock = self._keys.photo_lock(user_id)
        return bool(await self._scripts.run(PhotoLockTake(lock, holder, self._ttl)))

    async def release(self, user_id: int, holder: str) -> None:
        """Release only our own lock: a late release must not free someone else's newer one."""
        await self._scripts.run(PhotoLockRelease(self._keys.photo_lock(user_id), holder))
