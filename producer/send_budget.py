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
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import structlog
from redis.exceptions import RedisError

from producer.bot_steps import BudgetAnswered, BudgetRelease, BudgetStart, BudgetTake
from shared.queue.keys import BotKeys
from shared.queue.scripts import Scripts
from shared.queue.steps import Step
from shared.redact import redact

log = structlog.get_logger(__name__)

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


# Past this many chats in memory, every idle one is forgotten at once (then again at twice
# as many as are left): the least recently used ones alone may be held by a long quiet.
SWEEP_AT_LEAST = 1024


@dataclass(slots=True)
class _ChatState:
    """A chat's pacing in process (monotonic seconds)."""

    free: float = 0.0  # the next slot not yet booked
    quiet: float = 0.0  # no call may start before this
    lease: float = 0.0  # a call is in flight until it is answered, at most until this

    def idle(self, now: float) -> bool:
        """Nothing here holds a call back any more: the chat is as good as unknown."""
        return max(self.free, self.quiet, self.lease) <= now


class _LocalBudget:
    """The same rule in process, for while Redis is away.

    Only chats whose state still holds a call back are kept: a long-running bot remembers
    the chats of the last moments, not one entry per chat it ever saw.
    """

    def __init__(self) -> None:
        self._chats: OrderedDict[int | str, _ChatState] = OrderedDict()
        self._sweep_at = SWEEP_AT_LEAST

    def __len__(self) -> int:
        return len(self._chats)

    def take(self, chat_id: int | str, interval: float, wait: bool) -> float:
        now = time.monotonic()
        state = self._state(chat_id, now)
        busy = state.lease > now
        slot = max(now, state.free)
        if not busy:
            slot = max(slot, state.quiet)
        if not wait and (busy or slot > now):
            return max(slot - now, 0.05)
        state.free = slot + interval
        if slot > now or busy:
            return max(slot - now, 0.001)
        state.lease = now + LEASE_SECONDS
        return 0.0

    def start(self, chat_id: int | str) -> float:
        now = time.monotonic()
        state = self._state(chat_id, now)
        if state.lease > now:
            return -START_POLL_SECONDS
        if state.quiet > now:
            return state.quiet - now
        state.lease = now + LEASE_SECONDS
        return 0.0

    def answered(self, chat_id: int | str, quiet: float) -> None:
        now = time.monotonic()
        state = self._state(chat_id, now)
        state.lease = 0.0
        state.quiet = max(state.quiet, now + quiet)

    def _state(self, chat_id: int | str, now: float) -> _ChatState:
        self._forget_idle(now)
        state = self._chats.get(chat_id)
        if state is None:
            state = self._chats[chat_id] = _ChatState()
        else:
            self._chats.move_to_end(chat_id)  # least recently used first
        return state

    def _forget_idle(self, now: float) -> None:
        chats = self._chats
        while chats and next(iter(chats.values())).idle(now):
            chats.popitem(last=False)
        if len(chats) > self._sweep_at:
            for chat_id in [chat for chat, state in chats.items() if state.idle(now)]:
                del chats[chat_id]
            self._sweep_at = max(SWEEP_AT_LEAST, 2 * len(chats))


class SendBudget:
    """Per-chat pacing of Bot API calls; one instance per process, state in Redis."""

    def __init__(
        self, scripts: Scripts, keys: BotKeys, *, chat_interval: float, group_interval: float
    ) -> None:
        self._scripts = scripts
        self._keys = keys
        self._chat_interval = chat_interval
        self._group_interval = group_interval
        self._local = _LocalBudget()

    def interval(self, chat_id: int | str) -> float:
        """Groups (negative ids, or @channel names) get the slower pace Telegram asks there."""
        private = isinstance(chat_id, int) and chat_id > 0
        return self._chat_interval if private else self._group_interval

    def chats_in_memory(self) -> int:
        """How many chats' pacing this process holds for while Redis is away (idle chats are
        forgotten, so this stays near the number of chats active in the last moments)."""
        return len(self._local)

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
            await self._scripts.run(BudgetAnswered(self._keys.budget(chat_id), int(quiet * 1000)))
        except (RedisError, OSError) as exc:
            log.warning("send_budget_unavailable", error=redact(str(exc)))

    async def _step(self, chat_id: int | str, *, wait: bool) -> float:
        interval = self.interval(chat_id)
        owner = uuid.uuid4().hex  # this call's, so a release frees nobody else's
        budget = self._keys.budget(chat_id)
        step = BudgetTake(budget, int(interval * 1000), wait, int(LEASE_SECONDS * 1000), owner)
        try:
            waited = await self._run(step, budget, owner)
        except (RedisError, OSError) as exc:
            log.warning("send_budget_unavailable", error=redact(str(exc)))
            return self._local.take(chat_id, interval, wait)
        return int(waited) / 1000

    async def _begin(self, chat_id: int | str) -> float:
        owner = uuid.uuid4().hex
        budget = self._keys.budget(chat_id)
        try:
            step = BudgetStart(budget, int(LEASE_SECONDS * 1000), owner)
            waited = await self._run(step, budget, owner)
        except (RedisError, OSError) as exc:
            log.warning("send_budget_unavailable", error=redact(str(exc)))
            return self._local.start(chat_id)
        return int(waited) / 1000

    async def _run(self, step: Step, budget: str, owner: str) -> Any:
        """Run a step that may start a call; cancelled meanwhile (its reply lost, the call
        never made), the chat is freed at once instead of after the lease."""
        try:
            return await self._scripts.run(step)
        except asyncio.CancelledError:
            with contextlib.suppress(RedisError, OSError):
                await asyncio.shield(self._scripts.run(BudgetRelease(budget, owner)))
            raise
