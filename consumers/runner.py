"""The consumer runtime: per-type slots, reads sized to free slots, claims, renewals, shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import structlog
from redis.exceptions import RedisError

from consumers.cancels import CancelListener
from consumers.completer import Completer
from consumers.metrics import Metrics
from consumers.registry import TaskHandler
from consumers.task_run import TaskRun
from shared.config import Settings
from shared.errors import is_retryable
from shared.queue import Delivery, Malformed, Outcome, StreamConsumer
from shared.queue.connection import BLOCK_MS
from shared.tasks import TaskResult, TaskStatus, TaskType, dumps

log = structlog.get_logger(__name__)

# What the start step answers for a task whose record is already final, and for a task
# whose cancel was requested before it started.
ALREADY_FINAL = -1
CANCELLED_BEFORE_START = -2


@dataclass(slots=True)
class RunnerOptions:
    limits: Mapping[TaskType, int]
    claim_idle_ms: int = 6_000
    claim_interval: float = 0.5
    heartbeat_interval: float = 0.5
    grace_seconds: float = 20.0
    max_deliveries: int = 5
    retry_base_seconds: float = 0.5
    burst: bool = False  # stop once nothing is waiting or running (tests, scripts)


@dataclass(slots=True)
class _Running:
    delivery: Delivery
    task: asyncio.Task[None]
    run: TaskRun
    handler: asyncio.Task[TaskResult] | None = None  # the handler's own task, stopped alone


@dataclass(slots=True)
class _TypeState:
    limit: int
    running: dict[str, _Running] = field(default_factory=dict)
    slot_freed: asyncio.Event = field(default_factory=asyncio.Event)
    last_claim: float = 0.0
    # Entries left under our own name by an earlier process are taken back first.
    adopting: bool = True

    @property
    def free(self) -> int:
        return self.limit - len(self.running)


class ConsumerRunner:
    """Runs handlers for the served task types until stopped."""

    def __init__(
        self,
        consumer: StreamConsumer,
        handlers: Mapping[TaskType, TaskHandler],
        options: RunnerOptions,
        metrics: Metrics | None = None,
    ) -> None:
        self.consumer = consumer
        self.name = consumer.name
        self._handlers = handlers
        self._opts = options
        self._metrics = metrics or Metrics.disabled()
        self._states = {t: _TypeState(options.limits[t]) for t in handlers}
        self._completer = Completer(consumer)
        self._cancels = CancelListener(
            consumer.settings,
            f"{consumer.name}:cancels",
            list(handlers),
            self.request_stop,
            self._check_cancels,
        )
        self._stopping = asyncio.Event()
        self._stopped_at: float | None = None

    @classmethod
    def options_from(cls, settings: Settings, limits: Mapping[TaskType, int]) -> RunnerOptions:
        return RunnerOptions(
            limits=limits,
            claim_idle_ms=int(settings.claim_idle_seconds * 1000),
            grace_seconds=settings.shutdown_grace_seconds,
            max_deliveries=settings.max_deliveries,
            heartbeat_interval=settings.consumer_dead_seconds / 6,
        )

    def stop(self) -> None:
        if not self._stopping.is_set():
            self._stopped_at = time.monotonic()
            self._stopping.set()

    def in_flight(self) -> int:
        return sum(len(s.running) for s in self._states.values())

    async def run(self) -> None:
        """Serve until stop() (or, in burst mode, until idle), then shut down gracefully.

        Heartbeats and renewals go on until the last running entry is finished or handed
        back: a claim dropped while draining would let a peer run the same task again.
        """
        self._completer.start()
        self._cancels.start()
        limits = {str(t): s.limit for t, s in self._states.items()}
        await self._beat()
        log.info("consumer_started", consumer=self.name, limits=limits)
        keepers = [
            asyncio.create_task(self._keep(self._renew_once, self._opts.claim_idle_ms / 3000)),
            asyncio.create_task(self._keep(self._beat, self._opts.heartbeat_interval)),
        ]
        loops = [asyncio.create_task(self._type_loop(t)) for t in self._states]
        try:
            await asyncio.gather(*loops)
        finally:
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            try:
                await self._shutdown()
            finally:
                for keeper in keepers:
                    keeper.cancel()
                await asyncio.gather(*keepers, return_exceptions=True)
                await self._cancels.aclose()
                await self._retire()

    async def _type_loop(self, task_type: TaskType) -> None:
        state = self._states[task_type]
        while not self._stopping.is_set():
            state.slot_freed.clear()
            if state.free <= 0:
                await state.slot_freed.wait()
                continue
            try:
                entries = await self._fetch(task_type, state)
                if self._stopping.is_set():
                    await self._release_unstarted(entries)
                    break
                await self._dispatch(task_type, entries)
            except Exception as exc:  # noqa: BLE001 - one bad step must not end the type loop
                # Entries read but not started stay in our pending list; the claim pass
                # (ours or another consumer's) picks them up once they are idle.
                log.warning(
                    "read_failed", task_type=task_type, error=f"{type(exc).__name__}: {exc}"
                )
                await asyncio.sleep(0.5)
                continue
            if self._opts.burst and not entries and not state.running:
                break

    async def _fetch(self, task_type: TaskType, state: _TypeState) -> list[Delivery | Malformed]:
        """Idle entries of dead consumers first, then new ones; never more than free slots."""
        entries: list[Delivery | Malformed] = []
        if state.adopting:
            entries = await self.consumer.adopt(task_type, state.free)
            state.adopting = len(entries) >= state.free
            if entries:
                log.warning("orphans_adopted", task_type=task_type, count=len(entries))
                return entries
        now = time.monotonic()
        if now - state.last_claim >= self._opts.claim_interval:
            state.last_claim = now
            claimed = await self.consumer.claim(task_type, state.free, self._opts.claim_idle_ms)
            # Our own entries come back when our event loop stalled past the idle time: they
            # are already running here, so they must not start twice.
            entries = [e for e in claimed if e.entry_id not in state.running]
        if not entries:
            block = 100 if self._opts.burst else min(BLOCK_MS, 1000)
            entries = await self.consumer.read(task_type, state.free, block)
        return entries

    async def _release_unstarted(self, entries: list[Delivery | Malformed]) -> None:
        handed = await self.consumer.hand_back([e for e in entries if isinstance(e, Delivery)])
        if handed:
            log.info("entries_handed_back", count=handed, reason="shutdown")

    async def _dispatch(self, task_type: TaskType, entries: list[Delivery | Malformed]) -> None:
        deliveries = [e for e in entries if isinstance(e, Delivery)]
        malformed = [e for e in entries if isinstance(e, Malformed)]
        for bad in malformed:
            log.error(
                "malformed_entry",
                task_type=task_type,
                entry_id=bad.entry_id,
                task_id=bad.task_id,
                reason=bad.reason,
                consumer=self.name,
            )
            # Its task (when the entry still names one) fails at once, with the reason.
            await self.consumer.fail([bad], bad.reason)
            self._metrics.dead_lettered(task_type)
        if not deliveries:
            return
        started = time.time()
        attempts = await self.consumer.start(deliveries, started)
        state = self._states[task_type]
        for delivery, attempt in zip(deliveries, attempts, strict=True):
            live = self.consumer.live_writer(task_type, delivery.task.task_id, attempt)
            run = TaskRun(attempt, live)
            job = asyncio.create_task(self._run_one(delivery, run, started))
            state.running[delivery.entry_id] = _Running(delivery, job, run)
        self._metrics.set_in_flight(task_type, len(state.running))

    async def _run_one(self, delivery: Delivery, run: TaskRun, started: float) -> None:
        task = delivery.task
        structlog.contextvars.bind_contextvars(
            task_id=task.task_id, task_type=str(task.type), consumer=self.name
        )
        try:
            outcome = await self._outcome(delivery, run, started)
            if outcome is not None:
                await self._completer.submit(outcome)
        finally:
            state = self._states[task.type]
            state.running.pop(delivery.entry_id, None)
            state.slot_freed.set()
            self._metrics.set_in_flight(task.type, len(state.running))

    def _not_to_run(self, delivery: Delivery, attempt: int, started: float) -> Outcome | None:
        """The outcome of an entry the start step says must not run, else None."""
        if attempt == CANCELLED_BEFORE_START:
            log.info("task_cancelled_before_start")
            return Outcome(delivery, TaskStatus.CANCELLED, 0, started)
        if attempt == ALREADY_FINAL:  # finished, or cancelled while waiting: ack and delete
            log.info("task_already_final_skipped")
            return Outcome(delivery, TaskStatus.COMPLETED, 0, started)
        if attempt > self._opts.max_deliveries:
            reason = f"delivered {attempt} times, limit {self._opts.max_deliveries}"
            return self._final_failure(delivery, attempt, started, reason)
        return None

    async def _outcome(self, delivery: Delivery, run: TaskRun, started: float) -> Outcome | None:
        task, attempt = delivery.task, run.attempt
        if (skipped := self._not_to_run(delivery, attempt, started)) is not None:
            return skipped
        log.info("task_processing", attempt=attempt)
        t0 = time.perf_counter()
        try:
            result = await self._handle(delivery, run)
        except Exception as exc:  # noqa: BLE001 - every failure must end acked, retried or dead
            if run.stop_requested:  # it failed while being stopped: the stop wins
                return self._stopped(delivery, run, started)
            return await self._failed(delivery, attempt, started, exc)
        if result is None:
            return self._stopped(delivery, run, started)
        elapsed = time.perf_counter() - t0
        self._metrics.processed(task.type, elapsed)
        log.info("task_completed", duration_ms=round(elapsed * 1000, 2))
        result_json = dumps(result.model_dump())
        return Outcome(delivery, TaskStatus.COMPLETED, attempt, started, result_json=result_json)

    async def _handle(self, delivery: Delivery, run: TaskRun) -> TaskResult | None:
        """The handler's result, or None when a user's stop cancelled it.

        The handler runs as a task of its own so a stop cancels it alone; the runner's own
        cancellation (shutdown) still reaches it and is re-raised.
        """
        handler = asyncio.create_task(self._handlers[delivery.task_type](delivery.task, run))
        running = self._states[delivery.task_type].running.get(delivery.entry_id)
        if running is not None:
            running.handler = handler
        if run.stop_requested:  # the stop came between the read and now: it never starts
            handler.cancel()
        try:
            return await handler
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if run.stop_requested and current is not None and not current.cancelling():
                return None
            raise

    def _stopped(self, delivery: Delivery, run: TaskRun, started: float) -> Outcome:
        partial = run.partial
        log.info("task_stopped", kept_partial=partial is not None)
        result_json = dumps(partial.model_dump()) if partial is not None else None
        return Outcome(delivery, TaskStatus.CANCELLED, run.attempt, started, result_json)

    def request_stop(self, task_type: TaskType, task_id: str) -> None:
        """Stop the task if it runs here (a user cancelled it); unknown ids are ignored."""
        state = self._states.get(task_type)
        running = next(
            (
                r
                for r in (state.running.values() if state else ())
                if r.delivery.task.task_id == task_id
            ),
            None,
        )
        if running is None or running.run.stop_requested:
            return
        running.run.stop_requested = True
        log.info("task_stop_requested", task_id=task_id, task_type=task_type)
        if running.handler is not None:
            running.handler.cancel()

    async def _check_cancels(self) -> None:
        """Stop running tasks whose cancel flag is set (a cancel message may have been lost)."""
        for task_type, state in self._states.items():
            ids = [r.delivery.task.task_id for r in state.running.values()]
            if ids:
                for task_id in await self.consumer.cancel_requested(task_type, ids):
                    self.request_stop(task_type, task_id)

    async def _failed(
        self, delivery: Delivery, attempt: int, started: float, exc: Exception
    ) -> Outcome | None:
        error = f"{type(exc).__name__}: {exc}"
        if is_retryable(exc) and attempt < self._opts.max_deliveries:
            delay = min(self._opts.retry_base_seconds * 2 ** (attempt - 1), 30.0)
            log.warning("task_retry", error=error, attempt=attempt, retry_in=delay)
            self._metrics.retried(delivery.task_type)
            if not self._stopping.is_set():
                await asyncio.sleep(delay)
            await self.consumer.hand_back([delivery])
            return None
        log.error("task_failed", error=error, attempt=attempt)
        return self._final_failure(delivery, attempt, started, error)

    def _final_failure(
        self, delivery: Delivery, attempt: int, started: float, reason: str
    ) -> Outcome:
        """Fail and dead-letter; the bot refunds when it applies the announced failure."""
        self._metrics.failed(delivery.task_type)
        self._metrics.dead_lettered(delivery.task_type)
        return Outcome(delivery, TaskStatus.FAILED, attempt, started, error=reason)

    async def _keep(self, step: Callable[[], Awaitable[None]], interval: float) -> None:
        """Run `step` every `interval` seconds until cancelled, whatever it raises."""
        while True:
            await asyncio.sleep(interval)
            try:
                await step()
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning(
                    "keeper_failed", step=step.__name__, error=f"{type(exc).__name__}: {exc}"
                )

    async def _beat(self) -> None:
        await self.consumer.heartbeat(list(self._states))

    async def _renew_once(self) -> None:
        """Keep running entries' idle time low so only a dead consumer's work looks idle."""
        for task_type, state in self._states.items():
            if not state.running:
                continue
            lost = await self.consumer.renew(task_type, list(state.running))
            for entry_id in lost:
                log.warning("task_ownership_lost", task_type=task_type, entry_id=entry_id)
        await self._check_cancels()

    async def _retire(self) -> None:
        try:
            await self.consumer.retire(list(self._states))
        except (RedisError, OSError) as exc:
            log.warning("retire_failed", error=str(exc))

    async def _shutdown(self) -> None:
        """Finish in-flight work within the grace period, then hand the rest back at once."""
        running = [r for s in self._states.values() for r in s.running.values()]
        if running:
            # The grace period counts from the stop signal, not from when the reads returned.
            since_stop = time.monotonic() - (self._stopped_at or time.monotonic())
            grace = max(0.0, self._opts.grace_seconds - since_stop)
            log.info("consumer_draining", in_flight=len(running), grace=round(grace, 2))
            _, late = await asyncio.wait([r.task for r in running], timeout=grace)
            unfinished = [r for r in running if r.task in late]
            for r in unfinished:
                r.task.cancel()
            await asyncio.gather(*(r.task for r in unfinished), return_exceptions=True)
            handed = await self.consumer.hand_back([r.delivery for r in unfinished])
            if handed:
                log.warning("entries_handed_back", count=handed, reason="grace period over")
        await self._completer.aclose()
        log.info("consumer_stopped", consumer=self.name)
