"""One send budget per chat, shared by every path that sends or edits there and by every bot
process: per chat, in Redis, the next free slot and the time before which no call may start,
each moved in one Lua step.

Calls that must happen (replies, photos, final edits) `take` a slot: the step books the next
free slot and says how long to wait for it, so callers queue up in the order they asked and
no two processes book the same slot; at its slot a call also waits for the call before to be
answered plus the interval, so a call that left late (a busy loop, a slow network) never
reaches Telegram right behind the next one. Calls that may be skipped (draft updates,
streaming edits, chat actions) `try_take`: they go only if the chat is free now, otherwise they
learn how long until it is free and come back with their newest text; so they never push a
final message back by more than one slot. A 429 keeps the whole chat quiet for `retry_after`,
whichever process or path caused it.

Redis being away must not stop the bot talking: the same rule is then kept in process.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import structlog
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from shared.queue.connection import RedisClient
from shared.redact import redact

log = structlog.get_logger(__name__)

# Every script: KEYS[1] = the chat's budget, a hash: `free` (the next slot not yet booked),
# `quiet` (no call may start before it: the last answer plus the interval, or a 429's
# retry_after) and, while a call is in flight, `lease` (its deadline) and `owner`. Server ms.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local free = tonumber(redis.call('HGET', KEYS[1], 'free') or '0')
local quiet = tonumber(redis.call('HGET', KEYS[1], 'quiet') or '0')
local lease = tonumber(redis.call('HGET', KEYS[1], 'lease') or '0')
local function start(lease_ms, owner)
  redis.call('HSET', KEYS[1], 'lease', now + tonumber(lease_ms), 'owner', owner)
end
local function keep(ms)
  redis.call('PEXPIRE', KEYS[1], math.max(free - now, quiet - now, 0) + ms + 60000)
end
"""

# ARGV: interval ms, mode, lease ms, owner. Mode 1 books the next slot and returns the ms to
# wait for it (0: the call starts now). Mode 0 starts the call only if the chat is free now
# (0), else books nothing and returns the ms until it is free.
_TAKE = (
    _NOW
    + """
local slot = math.max(now, free, quiet)
if ARGV[2] == '0' then
  if lease > now then return math.max(slot - now, 50) end
  if slot > now then return slot - now end
end
redis.call('HSET', KEYS[1], 'free', slot + tonumber(ARGV[1]))
keep(tonumber(ARGV[1]) + tonumber(ARGV[3]))
if slot > now then return slot - now end
if lease > now then return 1 end  -- due, but the call before is in flight: start waits
start(ARGV[3], ARGV[4])
return 0
"""
)

# ARGV: lease ms, owner. A booked call starts (0); or the ms it must still wait, negative
# while the call before is in flight (its answer time is not known yet).
_START = (
    _NOW
    + """
if lease > now then return now - lease end
if quiet > now then return quiet - now end
start(ARGV[1], ARGV[2])
keep(tonumber(ARGV[1]))
return 0
"""
)

# ARGV: ms the chat stays quiet from now (the interval, or a 429's retry_after if longer).
_ANSWERED = (
    _NOW
    + """
redis.call('HDEL', KEYS[1], 'lease', 'owner')
redis.call('HSET', KEYS[1], 'quiet', math.max(quiet, now + tonumber(ARGV[1])))
keep(tonumber(ARGV[1]))
return 1
"""
)

# ARGV: owner. A call that never left (cancelled as it started) frees the chat at once.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'lease', 'owner')
end
return 1
"""

# A call in flight keeps its chat quiet at most this long (its process may have died).
LEASE_SECONDS = 5.0
# While the call before is in flight, a booked call looks again this often.
START_POLL_SECONDS = 0.05

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
        self._free: dict[int | str, float] = {}
        self._quiet: dict[int | str, float] = {}
        self._busy: set[int | str] = set()

    def take(self, chat_id: int | str, interval: float, wait: bool) -> float:
        now = time.monotonic()
        busy = chat_id in self._busy
        slot = max(now, self._free.get(chat_id, 0.0))
        if not busy:
            slot = max(slot, self._quiet.get(chat_id, 0.0))
        if not wait and (busy or slot > now):
            return max(slot - now, 0.05)
        self._free[chat_id] = slot + interval
        if slot > now or busy:
            return max(slot - now, 0.001)
        self._busy.add(chat_id)
        return 0.0

    def start(self, chat_id: int | str) -> float:
        now = time.monotonic()
        quiet = self._quiet.get(chat_id, 0.0)
        if chat_id in self._busy:
            return -START_POLL_SECONDS
        if quiet > now:
            return quiet - now
        self._busy.add(chat_id)
        return 0.0

    def answered(self, chat_id: int | str, quiet: float) -> None:
        self._busy.discard(chat_id)
        self._quiet[chat_id] = time.monotonic() + quiet


class SendBudget:
    """Per-chat pacing of Bot API calls; one instance per process, state in Redis."""

    def __init__(
        self, redis: RedisClient, queue_prefix: str, *, chat_interval: float, group_interval: float
    ) -> None:
        self._keys = BudgetKeys(queue_prefix)
        self._chat_interval = chat_interval
        self._group_interval = group_interval
        self._take = redis.register_script(_TAKE)
        self._start = redis.register_script(_START)
        self._answered = redis.register_script(_ANSWERED)
        self._release = redis.register_script(_RELEASE)
        self._local = _LocalBudget()

    def interval(self, chat_id: int | str) -> float:
        """Groups (negative ids, or @channel names) get the slower pace Telegram asks there."""
        private = isinstance(chat_id, int) and chat_id > 0
        return self._chat_interval if private else self._group_interval

    async def take(self, chat_id: int | str) -> None:
        """Book the chat's next slot, wait for it, then for the call before to be answered
        (a call counts from its answer too: one that left late must not reach Telegram right
        behind the next)."""
        wait = await self._step(chat_id, wait=True)
        if wait == 0:
            return  # started at once
        await asyncio.sleep(wait)
        # The state is in Redis, shared with other processes: there is no event to wait on.
        while (wait := await self._begin(chat_id)) != 0:  # noqa: ASYNC110
            # Negative: the call before is still in flight, its answer time unknown.
            await asyncio.sleep(wait if wait > 0 else min(-wait, START_POLL_SECONDS))

    async def try_take(self, chat_id: int | str) -> float:
        """If the chat is free now, book it and start the call: 0.0. Otherwise book nothing
        and return the seconds until it is free."""
        return await self._step(chat_id, wait=False)

    async def answered(self, chat_id: int | str, retry_after: float = 0.0) -> None:
        """The call is answered: the chat stays quiet for the interval, or `retry_after` (a
        429: the whole chat waits) if longer."""
        quiet = max(self.interval(chat_id), retry_after)
        self._local.answered(chat_id, quiet)
        try:
            await self._answered(keys=[self._keys.budget(chat_id)], args=[int(quiet * 1000)])
        except (RedisError, OSError) as exc:
            log.warning("send_budget_unavailable", error=redact(str(exc)))

    async def _step(self, chat_id: int | str, *, wait: bool) -> float:
        interval = self.interval(chat_id)
        lease = int(LEASE_SECONDS * 1000)
        owner = uuid.uuid4().hex  # this call's, so a release frees nobody else's
        args = [int(interval * 1000), 1 if wait else 0, lease, owner]
        try:
            waited = await self._run(self._take, chat_id, args, owner)
        except (RedisError, OSError) as exc:
            log.warning("send_budget_unavailable", error=redact(str(exc)))
            return self._local.take(chat_id, interval, wait)
        return int(waited) / 1000

    async def _begin(self, chat_id: int | str) -> float:
        try:
            owner = uuid.uuid4().hex
            args = [int(LEASE_SECONDS * 1000), owner]
            waited = await self._run(self._start, chat_id, args, owner)
        except (RedisError, OSError) as exc:
            log.warning("send_budget_unavailable", error=redact(str(exc)))
            return self._local.start(chat_id)
        return int(waited) / 1000

    async def _run(
        self, script: AsyncScript, chat_id: int | str, args: list[Any], owner: str
    ) -> Any:
        """Run a step that may start a call; cancelled meanwhile (its reply lost, the call
        never made), the chat is freed at once instead of after the lease."""
        key = self._keys.budget(chat_id)
        try:
            return await script(keys=[key], args=args)
        except asyncio.CancelledError:
            with contextlib.suppress(RedisError, OSError):
                await asyncio.shield(self._release(keys=[key], args=[owner]))
            raise
