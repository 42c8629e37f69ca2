"""Per-chat turns: a chat's updates are handled one at a time, in update_id order, even when
several bot processes (webhook replicas) serve one bot.

In a process, a chat's updates wait in line (lowest update_id first) without touching Redis.
The head of that line then takes the chat's turn in Redis: a sorted set of waiting update ids
plus a lease per update, renewed while it is handled. Only the lowest id present may run; a
head whose lease ran out (its process died) is dropped, so a dead process holds a chat for at
most one lease. Redis being away never blocks a chat: the update runs in process order only.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import structlog
from redis.exceptions import RedisError

from producer.bot_steps import TurnEnter, TurnLeave, TurnRenew
from shared.closing import pause
from shared.queue.keys import BotKeys
from shared.queue.scripts import Scripts
from shared.redact import redact

log = structlog.get_logger(__name__)

LEASE_SECONDS = 5.0
# Polling happens only while another process holds the chat, so it may be brisk.
POLL_SECONDS = 0.015
# Past this, an update stops waiting for another process's turn and runs anyway: a turn that
# is renewed this long belongs to a handler that hangs, and the chat must not hang with it.
MAX_WAIT_SECONDS = 60.0


@dataclass(slots=True)
class _Line:
    """The updates of one chat waiting in this process, lowest update_id first."""

    waiting: list[tuple[int, int, asyncio.Future[None]]] = field(default_factory=list)


class ChatTurns:
    """Hands out per-chat turns; one instance per process."""

    def __init__(
        self,
        scripts: Scripts,
        keys: BotKeys,
        *,
        lease_seconds: float = LEASE_SECONDS,
        poll_seconds: float = POLL_SECONDS,
        max_wait_seconds: float = MAX_WAIT_SECONDS,
    ) -> None:
        self._scripts = scripts
        self._keys = keys
        self._lease_ms = max(1, int(lease_seconds * 1000))
        self._poll = poll_seconds
        self._max_wait = max_wait_seconds
        # Tells this process's leases from other processes' (and from itself after a restart).
        self._holder = uuid.uuid4().hex
        self._lines: dict[int, _Line] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def turn(self, chat_id: int, update_id: int) -> AsyncIterator[None]:
        """Hold `chat_id`'s turn for `update_id` while the block runs."""
        await self._line_up(chat_id, update_id)
        try:
            if not await self._take(chat_id, update_id):
                yield
                return
            stop = asyncio.Event()  # as well as the cancel (see shared.closing)
            renewer = asyncio.create_task(
                self._keep(chat_id, update_id, stop), name=f"turn-{chat_id}"
            )
            try:
                yield
            finally:
                stop.set()
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
                await self._give_back(chat_id, update_id)
        finally:
            self._next_in_line(chat_id)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no update of any chat is being handled; False if some still are after
        `timeout`. On shutdown, updates already taken are finished before the backends close.
        """
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    # In process: a line per chat, no Redis.

    async def _line_up(self, chat_id: int, update_id: int) -> None:
        line = self._lines.get(chat_id)
        if line is None:  # nobody here holds the chat: go at once
            self._lines[chat_id] = _Line()
            self._idle.clear()
            return
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(line.waiting, (update_id, next(self._order), ticket))
        try:
            await ticket
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():
                self._next_in_line(chat_id)  # handed the turn, but cancelled: pass it on
            raise

    def _next_in_line(self, chat_id: int) -> None:
        line = self._lines[chat_id]
        while line.waiting:
            *_, ticket = heapq.heappop(line.waiting)
            if not ticket.done():  # a cancelled waiter is skipped
                ticket.set_result(None)
                return
        del self._lines[chat_id]
        if not self._lines:
            self._idle.set()

    # Across processes: the chat's turn in Redis.

    async def _take(self, chat_id: int, update_id: int) -> bool:
        """Wait for the Redis turn; False if it could not be taken (Redis away, or another
        process held the chat for too long), and the update runs in process order only."""
        turns, leases = self._keys.turns(chat_id), self._keys.turn_leases(chat_id)
        enter = TurnEnter(turns, leases, update_id, self._holder, self._lease_ms)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait
        try:
            while not await self._scripts.run(enter):
                if loop.time() > deadline:
                    log.warning("chat_turn_wait_expired", update_id=update_id)
                    await self._give_back(chat_id, update_id)
                    return False
                await asyncio.sleep(self._poll)
        except (RedisError, OSError) as exc:
            log.warning("chat_turn_unavailable", error=redact(str(exc)))
            # The step may have run with its reply lost: take our update out of the line, or
            # its lease runs out by itself.
            await self._give_back(chat_id, update_id)
            return False
        except asyncio.CancelledError:  # shutting down: do not make the others wait a lease
            await self._give_back(chat_id, update_id)
            raise
        return True

    async def _keep(self, chat_id: int, update_id: int, stop: asyncio.Event) -> None:
        turns, leases = self._keys.turns(chat_id), self._keys.turn_leases(chat_id)
        renew = TurnRenew(turns, leases, update_id, self._holder, self._lease_ms)
        while not stop.is_set():
            await pause(stop, self._lease_ms / 3000)
            if stop.is_set():
                return
            try:
                if not await self._scripts.run(renew):
                    log.warning("chat_turn_lost", update_id=update_id)
                    return
            except (RedisError, OSError) as exc:
                log.warning("chat_turn_renew_failed", error=redact(str(exc)))

    async def _give_back(self, chat_id: int, update_id: int) -> None:
        turns, leases = self._keys.turns(chat_id), self._keys.turn_leases(chat_id)
        try:
            await self._scripts.run(TurnLeave(turns, leases, update_id, self._holder))
        except (RedisError, OSError) as exc:  # the lease runs out by itself
            log.warning("chat_turn_leave_failed", error=redact(str(exc)))
