"""One send budget per chat, shared by every path that sends or edits there and by every bot
process: a per-chat "next call allowed at" time in Redis, moved in one Lua step.

Calls that must happen (replies, photos, final edits) `take` a slot: the step books the next
free slot and says how long to wait for it, so callers queue up in the order they asked and
no two processes book the same slot. Calls that may be skipped (draft updates, streaming
edits, chat actions) `try_take`: they get a slot only if the chat is free now, otherwise they
learn how long until it is free and come back with their newest text; so they never push a
final message back by more than one slot. A 429 moves the chat's next slot to `retry_after`
from now: the whole chat waits, whichever process or path caused it.

Redis being away must not stop the bot talking: the same rule is then kept in process.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Iterator
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.redact import redact

log = structlog.get_logger(__name__)

# KEYS: the chat's budget key. ARGV: interval ms, mode (1 = wait for a slot, 0 = only if free
# now). Returns the ms to wait: for mode 1 until the booked slot, for mode 0 a refusal if > 0.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local free_at = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(now, free_at)
if ARGV[2] == '0' and slot > now then return slot - now end
redis.call('SET', KEYS[1], slot + tonumber(ARGV[1]), 'PX', slot - now + 60000)
if ARGV[2] == '0' then return 0 end
return slot - now
"""

# KEYS as for _TAKE. ARGV: ms the chat must stay silent from now. Never shortens a wait.
_HOLD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now + tonumber(ARGV[1])
local free_at = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ms > free_at then
  redis.call('SET', KEYS[1], until_ms, 'PX', tonumber(ARGV[1]) + 60000)
end
return 1
"""

# Set while a call runs on a slot its caller already took, so the session does not take
# another one for it.
_slot_taken: contextvars.ContextVar[bool] = contextvars.ContextVar("slot_taken", default=False)


@contextlib.contextmanager
def on_taken_slot() -> Iterator[None]:
    """Run the block's Bot API call on a slot taken with `try_take`."""
    token = _slot_taken.set(True)
    try:
        yield
    finally:
        _slot_taken.reset(token)


def slot_already_taken() -> bool:
    return _slot_taken.get()


@dataclass(frozen=True, slots=True)
class BudgetKeys:
    """The chat id is the hash tag, as for the chat's turns."""

    prefix: str

    def budget(self, chat_id: int | str) -> str:
        return f"{self.prefix}bot:chat:{{{chat_id}}}:budget"


class _LocalBudget:
    """The same rule in process, for while Redis is away."""

    def __init__(self) -> None:
        self._free_at: dict[int | str, float] = {}

    def take(self, chat_id: int | str, interval: float, wait: bool) -> float:
        now = time.monotonic()
        slot = max(now, self._free_at.get(chat_id, 0.0))
        if not wait and slot > now:
            return slot - now
        self._free_at[chat_id] = slot + interval
        return slot - now if wait else 0.0

    def hold(self, chat_id: int | str, seconds: float) -> None:
        until = time.monotonic() + seconds
        self._free_at[chat_id] = max(self._free_at.get(chat_id, 0.0), until)


class SendBudget:
    """Per-chat pacing of Bot API calls; one instance per process, state in Redis."""

    def __init__(
        self, redis: Redis, queue_prefix: str, *, chat_interval: float, group_interval: float
    ) -> None:
        self._redis = redis
        self._keys = BudgetKeys(queue_prefix)
        self._chat_interval = chat_interval
        self._group_interval = group_interval
        self._take = redis.register_script(_TAKE)
        self._hold = redis.register_script(_HOLD)
        self._local = _LocalBudget()

    def interval(self, chat_id: int | str) -> float:
        """Groups (negative ids, or @channel names) get the slower pace Telegram asks there."""
        private = isinstance(chat_id, int) and chat_id > 0
        return self._chat_interval if private else self._group_interval

    async def take(self, chat_id: int | str) -> None:
        """Wait for the chat's next slot and book it."""
        wait = await self._step(chat_id, wait=True)
        if wait > 0:
            await asyncio.sleep(wait)

    async def try_take(self, chat_id: int | str) -> float:
        """Book the chat's slot if it is free now: 0.0. Otherwise book nothing and return the
        seconds until it is free."""
        return await self._step(chat_id, wait=False)

    async def hold(self, chat_id: int | str, seconds: float) -> None:
        """Keep the whole chat silent for `seconds` from now (a 429's retry_after)."""
        self._local.hold(chat_id, seconds)
        try:
            await self._hold(keys=[self._keys.budget(chat_id)], args=[int(seconds * 1000)])
        except (RedisError, OSError) as exc:
            log.warning("send_budget_unavailable", error=redact(str(exc)))

    async def _step(self, chat_id: int | str, *, wait: bool) -> float:
        interval = self.interval(chat_id)
        try:
            waited = await self._take(
                keys=[self._keys.budget(chat_id)],
                args=[int(interval * 1000), 1 if wait else 0],
            )
        except (RedisError, OSError) as exc:
            log.warning("send_budget_unavailable", error=redact(str(exc)))
            return self._local.take(chat_id, interval, wait)
        return int(waited) / 1000
