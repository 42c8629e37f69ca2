"""A provider's global limits in Redis: call leases, a token bucket and a shared pause.

Every consumer of a gated provider asks here before it reads entries, so the cap and the rate
hold across processes and machines. A lease expires unless its holder renews it, so a killed
holder's leases come back within the lease ttl (CONSUMER_DEAD_SECONDS).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.config import Settings
from shared.limits import Rate
from shared.queue.connection import RedisClient
from shared.queue.keys import Keys
from shared.queue.lease_steps import Admit, Pause, Release, RenewLeases
from shared.queue.scripts import Scripts

# A Retry-After longer than this is not trusted for a pause of every consumer.
MAX_PAUSE_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class ProviderLimit:
    """What PROVIDER_LIMITS and PROVIDER_RATES say about one provider."""

    provider: str
    concurrency: int  # 0: no cap
    rate: Rate | None

    @classmethod
    def from_settings(cls, settings: Settings, provider: str) -> ProviderLimit | None:
        """None when the provider is neither capped nor rate-limited (no admission at all)."""
        if provider not in settings.gated_providers:
            return None
        concurrency = settings.provider_limits.get(provider, 0)
        return cls(provider, concurrency, settings.provider_rates.get(provider))


@dataclass(frozen=True, slots=True)
class Admission:
    """What one admission call gave: leases, or why none and for how long."""

    granted: list[str]
    token_wait: float  # seconds until the bucket has a token again
    paused: float  # seconds the shared pause still lasts
    at_cap: bool  # every lease is held: wait for a release


@dataclass(frozen=True, slots=True)
class ProviderState:
    """A provider's limits as an operator sees them (queuectl stats, metrics)."""

    provider: str
    limit: int
    rate: str | None
    leases: int
    tokens: float | None
    paused_seconds: float
    paused_until: float | None  # unix seconds


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ProviderLeases:
    """The admission calls of one consumer for one provider; lease ids name the holder."""

    def __init__(
        self,
        *,
        redis: RedisClient,
        scripts: Scripts,
        keys: Keys,
        limit: ProviderLimit,
        holder: str,
        ttl_ms: int,
    ) -> None:
        self.limit = limit
        self.ttl_ms = ttl_ms
        self._redis = redis
        self._scripts = scripts
        self._keys = keys
        self._holder = holder
        self._rate = limit.rate

    def new_ids(self, count: int) -> list[str]:
        return [f"{self._holder}:{uuid.uuid4().hex[:12]}" for _ in range(count)]

    async def admit(self, want: int) -> Admission:
        """Ask for `want` leases (new ids); a repeat of the same ids takes nothing twice."""
        p = self.limit.provider
        step = Admit(
            leases=self._keys.leases(p),
            bucket=self._keys.bucket(p),
            paused=self._keys.paused(p),
            freed=self._keys.freed(p),
            limit=self.limit.concurrency,
            per_ms=self._rate.per_ms if self._rate else 0.0,
            burst=self._rate.burst if self._rate else 0,
            ttl_ms=self.ttl_ms,
            lease_ids=self.new_ids(want),
        )
        granted, wait_ms, paused_ms, at_cap = await self._scripts.run(step)
        return Admission(
            [_text(g) for g in granted], int(wait_ms) / 1000, int(paused_ms) / 1000, bool(at_cap)
        )

    async def release(self, used: Sequence[str], unused: Sequence[str]) -> None:
        """Free leases; those never used give their token back."""
        p = self.limit.provider
        step = Release(
            leases=self._keys.leases(p),
            bucket=self._keys.bucket(p),
            freed=self._keys.freed(p),
            per_ms=self._rate.per_ms if self._rate else 0.0,
            burst=self._rate.burst if self._rate else 0,
            used=used,
            unused=unused,
        )
        await self._scripts.run(step)

    async def renew(self, lease_ids: Sequence[str], *, restore: bool = False) -> list[str]:
        """Extend running calls' leases; returns those no longer held (expired), which
        `restore` adds back."""
        if not lease_ids:
            return []
        leases = self._keys.leases(self.limit.provider)
        step = RenewLeases(leases, self.ttl_ms, lease_ids, restore)
        return [_text(lost) for lost in await self._scripts.run(step)]

    async def pause(self, seconds: float) -> float:
        """Pause every consumer of the provider for `seconds` (unless already longer)."""
        seconds = min(seconds, MAX_PAUSE_SECONDS)
        step = Pause(self._keys.paused(self.limit.provider), int(seconds * 1000), uuid.uuid4().hex)
        return int(await self._scripts.run(step)) / 1000

    async def inherited(self) -> list[str]:
        """Leases still held under this holder's name: a predecessor with the same name died
        holding them. Its entries come back to us (adopt), and its leases with them."""
        key = self._keys.leases(self.limit.provider)
        sec, usec = await self._redis.time()
        now_ms = sec * 1000 + usec // 1000
        pattern = re.sub(r"([\\*?\[\]])", r"\\\1", self._holder) + ":*"
        found: list[str] = []
        async for member, expiry in self._redis.zscan_iter(key, match=pattern):
            if expiry >= now_ms:
                found.append(_text(member))
        return found

    async def wait_for_release(self, timeout: float) -> None:
        """Block until some consumer releases a lease of the provider, or `timeout`."""
        await self._redis.blpop([self._keys.freed(self.limit.provider)], timeout=timeout)


async def provider_state(redis: RedisClient, keys: Keys, limit: ProviderLimit) -> ProviderState:
    """Leases held, tokens left and the pause, judged by the server's clock; reads only."""
    p = limit.provider
    pipe = redis.pipeline(transaction=False)
    pipe.time()
    pipe.zrange(keys.leases(p), 0, -1, withscores=True)
    pipe.hmget(keys.bucket(p), ["tokens", "at"])
    pipe.pttl(keys.paused(p))
    (sec, usec), leases, (tokens, at), paused_ms = await pipe.execute()
    now_ms = sec * 1000 + usec // 1000
    held = sum(1 for _, expiry in leases if expiry >= now_ms)
    level = None
    if limit.rate is not None:
        rate = limit.rate
        level = float(rate.burst)
        if tokens is not None and at is not None:
            level = min(rate.burst, float(tokens) + max(0, now_ms - float(at)) * rate.per_ms)
    paused = max(0, int(paused_ms)) / 1000
    return ProviderState(
        provider=p,
        limit=limit.concurrency,
        rate=str(limit.rate) if limit.rate else None,
        leases=held,
        tokens=level,
        paused_seconds=paused,
        paused_until=time.time() + paused if paused else None,
    )
