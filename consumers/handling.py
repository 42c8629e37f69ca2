"""One entry's handler run and how it ends: skipped by its start's answer,
completed (early, behind the start, or the usual way), stopped, retried or failed for good."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

from consumers.metrics import Metrics
from consumers.registry import TaskHandler
from consumers.starts import EARLY_ATTEMPT, NOT_APPLIED, StartCall
from consumers.task_run import LOST, TaskRun, leave_run, run_as
from shared.errors import is_retryable
from shared.queue import Ending, StreamConsumer, TaskEntry
from shared.tasks import TaskResult, TaskStatus, TaskType, dumps, to_json

log = structlog.get_logger(__name__)

# What the start step answers for a task whose record is already final, and for a task
# whose cancel was requested before it started.
ALREADY_FINAL = -1
CANCELLED_BEFORE_START = -2


@dataclass(slots=True)
class Running:
    """An entry being run: its start call, provider lease and handler's stop scope."""

    entry: TaskEntry
    lease: str | None  # the provider lease the handler runs under (gated types)
    run: TaskRun
    start: StartCall
    task: asyncio.Task[None] = field(init=False)
    # The scope the handler runs in while it runs: a stop expires it, cancelling the handler
    # alone (an asyncio task per handler did the same at a task's cost per run).
    scope: asyncio.Timeout | None = None


@dataclass(slots=True)
class HandlingOptions:
    max_deliveries: int
    retry_base_seconds: float
    # Completions may go behind the start before it answered (no user cap, no replica wait).
    early_finish: Callable[[TaskType], bool]


class Handling:
    """Runs handlers and decides outcomes; the runner owns slots, leases and the completer."""

    def __init__(
        self,
        consumer: StreamConsumer,
        handlers: Mapping[TaskType, TaskHandler],
        options: HandlingOptions,
        metrics: Metrics,
        *,
        stopping: asyncio.Event,
        return_lease: Callable[[TaskType, str | None], None],
    ) -> None:
        self._consumer = consumer
        self._handlers = handlers
        self._opts = options
        self._metrics = metrics
        self._stopping = stopping
        self._return_lease = return_lease

    async def outcome(self, running: Running) -> Ending | None:
        """How the entry ends (None: nothing to store: handed back, finished early, or its
        start's answer lost). The handler may run before the start answered; its external
        effects wait for it (TaskRun.admitted)."""
        entry, run = running.entry, running.run
        started = running.start.started_at
        if not entry.first and not run.answer.done():
            # Claimed, adopted or handed back: it may have used up its deliveries (a poison
            # task that kills its consumer), so it runs only once its start admitted it.
            await asyncio.shield(run.answer)
        t0 = time.perf_counter()
        result: TaskResult | None = None
        error: Exception | None = None
        if not run.answer.done() or run.admits:  # a refused run's handler never starts
            try:
                result = await self._call(running)
            except Exception as exc:  # noqa: BLE001 - every failure ends acked, retried or dead
                error = exc
            if result is not None and await self._finished_early(running, result, t0):
                return None
        attempt = run.attempt if run.answer.done() else await asyncio.shield(run.answer)
        if attempt == LOST:  # its entry stays pending: a later entry runs it
            return None
        if (skipped := self._not_to_run(entry, attempt, started)) is not None:
            return skipped
        return await self._settle(running, attempt, result, error, t0)

    async def _settle(
        self,
        running: Running,
        attempt: int,
        result: TaskResult | None,
        error: Exception | None,
        t0: float,
    ) -> Ending | None:
        """The outcome of an admitted run that ended with `result` or `error`."""
        entry, run, started = running.entry, running.run, running.start.started_at
        if error is not None:
            if run.stop_requested:  # it failed while being stopped: the stop wins
                return self._stopped(entry, run, started)
            return await self._failed(entry, attempt, started, error)
        if result is None:
            return self._stopped(entry, run, started)
        self._count_completed(entry, attempt, t0)
        return _completion(entry, attempt, started, result)

    def _count_completed(self, entry: TaskEntry, attempt: int, t0: float) -> None:
        elapsed = time.perf_counter() - t0
        self._metrics.processed(entry.task_type, elapsed)
        log.info("task_completed", attempt=attempt, duration_ms=round(elapsed * 1000, 2))

    async def _finished_early(self, running: Running, result: TaskResult, t0: float) -> bool:
        """Complete a new entry right behind its start on the start's connection, as its
        first attempt, whether or not the start has answered yet (one path: the finish's
        own check decides); False when that does not apply (then it ends the usual way)."""
        entry, start = running.entry, running.start
        if not entry.first:
            return False
        if start.answered() and running.run.attempt != EARLY_ATTEMPT:
            return False  # answered otherwise: it ends the usual way
        if not self._opts.early_finish(entry.task_type):
            return False
        outcome = _completion(entry, EARLY_ATTEMPT, start.started_at, result)
        if await start.finish_early(outcome) == NOT_APPLIED:
            return False
        self._count_completed(entry, EARLY_ATTEMPT, t0)
        return True

    async def _call(self, running: Running) -> TaskResult | None:
        """Run the handler; its provider lease goes back the moment the call ends."""
        log.info("task_processing")
        try:
            return await self._handle(running)
        finally:
            lease, running.lease = running.lease, None
            self._return_lease(running.entry.task_type, lease)

    def _not_to_run(self, entry: TaskEntry, attempt: int, started: float) -> Ending | None:
        """The outcome of an entry the start step says must not run, else None."""
        if attempt == CANCELLED_BEFORE_START:
            log.info("task_cancelled_before_start")
            return Ending(entry, TaskStatus.CANCELLED, 0, started)
        if attempt == ALREADY_FINAL:  # finished, or cancelled while waiting: ack and delete
            log.info("task_already_final_skipped")
            return Ending(entry, TaskStatus.COMPLETED, 0, started)
        if attempt > self._opts.max_deliveries:
            reason = f"delivered {attempt} times, limit {self._opts.max_deliveries}"
            return self.final_failure(entry, attempt, started, reason)
        return None

    async def _handle(self, running: Running) -> TaskResult | None:
        """The handler's result, or None when a user's stop cancelled it.

        The handler runs in a scope of its own so a stop cancels it alone (the scope turns
        its own cancellation into TimeoutError); the runner's own cancellation (shutdown)
        still reaches it and is re-raised. Its provider calls see its run as the current one.
        """
        entry, run = running.entry, running.run
        if run.stop_requested:  # the stop came between the read and now: it never starts
            return None
        scope = asyncio.timeout(None)
        previous = run_as(run)
        try:
            async with scope:
                running.scope = scope
                return await self._handlers[entry.task_type](entry.task, run)
        except TimeoutError:
            if scope.expired():  # only a stop expires it
                return None
            raise
        finally:
            running.scope = None
            leave_run(previous)

    def _stopped(self, entry: TaskEntry, run: TaskRun, started: float) -> Ending:
        partial = run.partial
        log.info("task_stopped", kept_partial=partial is not None)
        result_json = dumps(to_json(partial)) if partial is not None else None
        return Ending(entry, TaskStatus.CANCELLED, run.attempt, started, result_json)

    async def _failed(
        self, entry: TaskEntry, attempt: int, started: float, exc: Exception
    ) -> Ending | None:
        error = f"{type(exc).__name__}: {exc}"
        if is_retryable(exc) and attempt < self._opts.max_deliveries:
            delay = min(self._opts.retry_base_seconds * 2 ** (attempt - 1), 30.0)
            log.warning("task_retry", error=error, attempt=attempt, retry_in=delay)
            self._metrics.retried(entry.task_type)
            if not self._stopping.is_set():
                await asyncio.sleep(delay)
            await self._consumer.requeue([entry])
            return None
        log.error("task_failed", error=error, attempt=attempt)
        return self.final_failure(entry, attempt, started, error)

    def final_failure(self, entry: TaskEntry, attempt: int, started: float, reason: str) -> Ending:
        """Fail and dead-letter; the bot refunds when it applies the announced failure."""
        self._metrics.failed(entry.task_type)
        self._metrics.dead_lettered(entry.task_type)
        return Ending(entry, TaskStatus.FAILED, attempt, started, error=reason)


def _completion(entry: TaskEntry, attempt: int, started: float, result: TaskResult) -> Ending:
    result_json = dumps(to_json(result))
    return Ending(entry, TaskStatus.COMPLETED, attempt, started, result_json=result_json)
