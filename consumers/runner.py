"""The consumer runtime: per-type slots, reads sized to free slots, claims, renewals, shutdown.

A type whose provider has global limits (PROVIDER_LIMITS, PROVIDER_RATES) starts a task only
under a lease of that provider (`gates.py`, `intake.py`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import structlog
from redis.exceptions import RedisError

from consumers.completer import Completer
from consumers.gates import ProviderGate
from consumers.intake import Intake, IntakeOptions, Ref
from consumers.metrics import Metrics
from consumers.registry import TaskHandler
from shared.config import Settings
from shared.errors import is_retryable
from shared.queue import Delivery, Malformed, Outcome, Priority, StreamConsumer
from shared.queue.connection import cancel_requested
from shared.queue.fairness import user_cap
from shared.tasks import TaskResult, TaskStatus, TaskType, dumps

log = structlog.get_logger(__name__)


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
    normal_share: float = 0.2  # slots where normal priority goes before high
    user_caps: Mapping[TaskType, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Running:
    delivery: Delivery
    lease: str | None  # the provider lease the handler runs under (gated types)
    task: asyncio.Task[None] = field(init=False)


@dataclass(slots=True)
class _TypeState:
    limit: int
    intake: Intake
    running: dict[Ref, _Running] = field(default_factory=dict)
    slot_freed: asyncio.Event = field(default_factory=asyncio.Event)

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
        gates: Mapping[TaskType, ProviderGate] | None = None,
    ) -> None:
        self.consumer = consumer
        self.name = consumer.name
        self._handlers = handlers
        self._opts = options
        self._metrics = metrics or Metrics.disabled()
        self._gates = dict(gates or {})
        self._states = {
            t: _TypeState(options.limits[t], self._intake(t, self._gates.get(t))) for t in handlers
        }
        self._completer = Completer(consumer)
        self._stopping = asyncio.Event()
        self._stopped_at: float | None = None

    def _intake(self, task_type: TaskType, gate: ProviderGate | None) -> Intake:
        options = IntakeOptions(
            claim_idle_ms=self._opts.claim_idle_ms,
            claim_interval=self._opts.claim_interval,
            normal_share=self._opts.normal_share,
            fair=bool(self._opts.user_caps.get(task_type)),
            burst=self._opts.burst,
        )
        return Intake(self.consumer, task_type, options, gate)

    @classmethod
    def options_from(cls, settings: Settings, limits: Mapping[TaskType, int]) -> RunnerOptions:
        return RunnerOptions(
            limits=limits,
            claim_idle_ms=int(settings.claim_idle_seconds * 1000),
            grace_seconds=settings.shutdown_grace_seconds,
            max_deliveries=settings.max_deliveries,
            heartbeat_interval=settings.consumer_dead_seconds / 6,
            normal_share=settings.priority_normal_share,
            user_caps={t: user_cap(settings, t) for t in TaskType},
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
        limits = {str(t): s.limit for t, s in self._states.items()}
        await self._beat()
        providers = {
            g.provider: {"concurrency": g.limit.concurrency or None, "rate": str(g.limit.rate)}
            for g in set(self._gates.values())
        }
        log.info("consumer_started", consumer=self.name, limits=limits, providers=providers)
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
                for gate in set(self._gates.values()):
                    await gate.aclose()
                await self._retire()

    async def _type_loop(self, task_type: TaskType) -> None:
        state = self._states[task_type]
        while not self._stopping.is_set():
            state.slot_freed.clear()
            if state.free <= 0:
                await state.slot_freed.wait()
                continue
            try:
                taken = await state.intake.take(state.free, state.running, self._stopping)
                entries = taken.entries
                if self._stopping.is_set():
                    await self._release_unstarted(state, taken.leases, entries)
                    break
                await self._dispatch(task_type, entries, taken.leases)
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

    async def _release_unstarted(
        self, state: _TypeState, leases: Mapping[Ref, str], entries: list[Delivery | Malformed]
    ) -> None:
        if state.intake.gate is not None:
            for lease in leases.values():
                state.intake.gate.release(lease, used=False)
        handed = await self.consumer.hand_back([e for e in entries if isinstance(e, Delivery)])
        if handed:
            log.info("entries_handed_back", count=handed, reason="shutdown")

    async def _dispatch(
        self,
        task_type: TaskType,
        entries: list[Delivery | Malformed],
        leases: Mapping[Ref, str],
    ) -> None:
        """Fail the malformed entries and start the others, each under its lease; if that
        fails, the leases go back (the entries stay pending and are claimed later)."""
        state = self._states[task_type]
        try:
            started, attempts = await self._start(task_type, entries)
        except BaseException:
            self._return_leases(state, leases.values())
            raise
        deliveries = [e for e in entries if isinstance(e, Delivery)]
        for delivery, attempt in zip(deliveries, attempts, strict=True):
            running = _Running(delivery, leases.get(delivery.ref))
            running.task = asyncio.create_task(self._run_one(running, attempt, started))
            state.running[delivery.ref] = running
        self._metrics.set_in_flight(task_type, len(state.running))

    async def _start(
        self, task_type: TaskType, entries: list[Delivery | Malformed]
    ) -> tuple[float, list[int]]:
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
        started = time.time()
        if not deliveries:
            return started, []
        return started, await self.consumer.start(deliveries, started)

    def _return_leases(
        self, state: _TypeState, leases: Iterable[str | None], used: bool = False
    ) -> None:
        if state.intake.gate is not None:
            for lease in leases:
                if lease is not None:
                    state.intake.gate.release(lease, used=used)

    async def _run_one(self, running: _Running, attempt: int, started: float) -> None:
        delivery = running.delivery
        task = delivery.task
        structlog.contextvars.bind_contextvars(
            task_id=task.task_id, task_type=str(task.type), consumer=self.name
        )
        state = self._states[task.type]
        try:
            outcome = await self._outcome(running, attempt, started)
            if outcome is not None:
                await self._completer.submit(outcome)
        finally:
            # A lease still here was never used: the handler did not run.
            self._return_leases(state, [running.lease])
            state.running.pop(delivery.ref, None)
            state.slot_freed.set()
            self._metrics.set_in_flight(task.type, len(state.running))

    async def _call(self, running: _Running) -> TaskResult:
        """Run the handler; its provider lease goes back the moment the call ends."""
        task = running.delivery.task
        try:
            return await self._handlers[task.type](task)
        finally:
            lease, running.lease = running.lease, None
            self._return_leases(self._states[task.type], [lease], used=True)

    async def _outcome(self, running: _Running, attempt: int, started: float) -> Outcome | None:
        delivery = running.delivery
        task = delivery.task
        if attempt < 0:  # finished by someone else already: only ack and delete the entry
            log.info("task_duplicate_skipped")
            return Outcome(delivery, TaskStatus.COMPLETED, 0, started)
        if attempt > self._opts.max_deliveries:
            reason = f"delivered {attempt} times, limit {self._opts.max_deliveries}"
            return self._final_failure(delivery, attempt, started, reason)
        log.info("task_processing", attempt=attempt)
        t0 = time.perf_counter()
        try:
            result = await self._call(running)
        except Exception as exc:  # noqa: BLE001 - every failure must end acked, retried or dead
            return await self._failed(delivery, attempt, started, exc)
        elapsed = time.perf_counter() - t0
        self._metrics.processed(task.type, elapsed)
        log.info("task_completed", duration_ms=round(elapsed * 1000, 2))
        result_json = dumps(result.model_dump())
        return Outcome(delivery, TaskStatus.COMPLETED, attempt, started, result_json=result_json)

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
        while not cancel_requested():
            await asyncio.sleep(interval)
            try:
                await step()
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning(
                    "keeper_failed", step=step.__name__, error=f"{type(exc).__name__}: {exc}"
                )

    async def _beat(self) -> None:
        """Say we are alive, and so keep our provider leases (same interval, same reason)."""
        gates = set(self._gates.values())
        await asyncio.gather(
            self.consumer.heartbeat(list(self._states)), *(gate.renew() for gate in gates)
        )

    async def _renew_once(self) -> None:
        """Keep running entries' idle time low so only a dead consumer's work looks idle;
        then repair the fairness state of the busiest users (see fairness.sweep)."""
        for task_type, state in self._states.items():
            for priority in Priority:
                ids = [entry_id for p, entry_id in state.running if p is priority]
                for entry_id in await self.consumer.renew(task_type, ids, priority):
                    log.warning("task_ownership_lost", task_type=task_type, entry_id=entry_id)
            await self.consumer.sweep(task_type, self._opts.user_caps.get(task_type, 0))

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
