"""A read batch's start step off the latency path: written before its handlers run, answered
while they run, and the finishes of handlers that end first sent right behind it.

Why this is safe is argued in docs/guarantees.md ("The start step off the latency path").
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import structlog
from redis.exceptions import RedisError

from consumers.task_run import LOST
from shared.queue import Ending, StreamConsumer, TaskEntry
from shared.queue.step_pipe import Answer

log = structlog.get_logger(__name__)

# What an early finish answers when it was not applied (the start did not admit the run as
# the first attempt, or the finish could not be sent): the entry is finished the usual way.
NOT_APPLIED = -1
# The attempt an early finish expects: a fresh task's first run.
EARLY_ATTEMPT = 1


class StartCall:
    """The start step of one batch of entries (one task type), and its answers.

    `answers[i]` gets what the start answered for `entries[i]`: the attempt number, -1
    (already final), -2 (cancel requested) or LOST (the answer could not be learned).
    """

    def __init__(
        self, consumer: StreamConsumer, entries: Sequence[TaskEntry], started_at: float
    ) -> None:
        self._consumer = consumer
        self.entries = list(entries)
        self.started_at = started_at
        self.start_id = uuid.uuid4().hex[:12]
        loop = asyncio.get_running_loop()
        self.answers: list[asyncio.Future[int]] = [loop.create_future() for _ in entries]
        self._watch: asyncio.Task[None] | None = None
        self._early: list[tuple[Ending, asyncio.Future[int]]] = []
        self._flush: asyncio.Task[None] | None = None  # the one collecting finishes now
        self._flushes: set[asyncio.Task[None]] = set()

    async def send(self) -> None:
        """Returns once the start is written to Redis's connection (its answer comes later),
        or, when it could not be written, once it answered through the ordinary call (so no
        handler runs before its start reached Redis). Raises when that failed too."""
        try:
            answer = await self._consumer.send_start(self.entries, self.started_at, self.start_id)
        except (RedisError, OSError) as exc:
            log.warning("start_not_pipelined", error=f"{type(exc).__name__}: {exc}")
            self._answer(await self._consumer.start(self.entries, self.started_at, self.start_id))
            return
        self._watch = asyncio.create_task(self._wait(answer), name="start-answer")

    async def _wait(self, answer: Answer) -> None:
        try:
            reply = (await answer)[0]
            if isinstance(reply, Exception):
                raise reply
            self._answer([int(n) for n in reply])
        except (RedisError, OSError) as exc:
            # It may or may not have run: the same start id makes asking again count nothing twice.
            log.warning("start_answer_lost", error=f"{type(exc).__name__}: {exc}")
            await self._ask_again()

    async def _ask_again(self) -> None:
        try:
            attempts = await self._consumer.start(self.entries, self.started_at, self.start_id)
        except (RedisError, OSError) as exc:
            log.error(
                "start_failed", error=f"{type(exc).__name__}: {exc}", count=len(self.answers)
            )
            attempts = [LOST] * len(self.answers)
        self._answer(attempts)

    def _answer(self, attempts: Sequence[int]) -> None:
        for future, attempt in zip(self.answers, attempts, strict=True):
            if not future.done():
                future.set_result(attempt)

    def answered(self) -> bool:
        return all(future.done() for future in self.answers)

    async def finish_early(self, outcome: Ending) -> int:
        """Send a completion behind the start, as its first attempt, before the start answered;
        1 wrote, 0 already final, NOT_APPLIED: finish it the usual way once the start answered.
        Completions ending in the same turn of the event loop go in one call."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._early.append((outcome, future))
        if self._flush is None:
            self._flush = asyncio.create_task(self._send_early(), name="early-finish")
            self._flushes.add(self._flush)
            self._flush.add_done_callback(self._flushes.discard)
        return await future  # its own: a cancelled wait loses nothing the flush needs

    async def _send_early(self) -> None:
        batch, self._early, self._flush = self._early, [], None
        outcomes = [outcome for outcome, _ in batch]
        try:
            results = await self._consumer.finish_early(outcomes, self.start_id, EARLY_ATTEMPT)
        except (RedisError, OSError) as exc:
            log.info("early_finish_not_applied", error=f"{type(exc).__name__}: {exc}")
            results = [NOT_APPLIED] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def aclose(self) -> None:
        """Wait for the answer (a run still waiting for it must get one)."""
        tasks = [task for task in (self._watch, *self._flushes) if task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
