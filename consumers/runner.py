"""The consumer runtime: per-type slots, reads sized to free slots, claims, renewals, shutdown.

A type whose provider has global limits (PROVIDER_LIMITS, PROVIDER_RATES) starts a task only
under a lease of that provider (`gates.py`, `intake.py`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import structlog
from redis.exceptions import RedisError

from consumers.cancels import CancelListener
from consumers.completer import Completer
from consumers.gates import ProviderGate
from consumers.handling import Handling, HandlingOptions, Running
from consumers.intake import Intake, IntakeOptions, Ref
from consumers.metrics import Metrics
from consumers.registry import TaskHandler
from consumers.starts import StartCall
from consumers.task_run import TaskRun
from shared.config import Settings
from shared.queue import Malformed, Priority, StreamConsumer, TaskEntry
from shared.queue.connection import cancel_requested
from shared.queue.fairness import user_cap
from shared.tasks import TaskType

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
class _TypeState:
    limit: int
    intake: Intake
    running: dict[Ref, Running] = field(default_factory=dict)
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
        self._cancels = CancelListener(
            consumer.settings,
            f"{consumer.name}:cancels",
            list(handlers),
            self.request_stop,
            self._check_cancels,
        )
        self._stopping = asyncio.Event()
        self._stopped_at: float | None = None
        handling = HandlingOptions(
            options.max_deliveries, options.retry_base_seconds, self._early_finish
        )
        self._handling = Handling(
            consumer,
            handlers,
            handling,
            self._metrics,
            stopping=self._stopping,
            return_lease=self._return_lease,
        )

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
        self._cancels.start()
        limits = {str(t): s.limit for t, s in self._states.items()}
        # Redis lost past the retries just after connecting must not end the process.
        await self._step_once(self._beat)
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
                await self._cancels.aclose()
                await self.consumer.close_pipes()
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
                if entries:
                    # The handlers take their first step (an instant one ends and its finish
                    # goes behind the start) before this loop spends the turn on the next read.
                    await asyncio.sleep(0)
            except Exception as exc:  # noqa: BLE001 - one bad step must not end the type loop
                # Entries read but not started stay in our pending list; the claim pass
                # (ours or another consumer's) picks them up once they are idle.
                log.warning(
                    "read_failed", task_type=task_type, error=f"{type(exc).__name__}: {exc}"
                )
                await asyncio.sleep(0.5)
                continue
            if self._opts.burst and not entries and not state.running and not taken.gated:
                break

    async def _release_unstarted(
        self, state: _TypeState, leases: Mapping[Ref, str], entries: list[TaskEntry | Malformed]
    ) -> None:
        if state.intake.gate is not None:
            for lease in leases.values():
                state.intake.gate.release(lease, used=False)
        handed = await self.consumer.requeue([e for e in entries if isinstance(e, TaskEntry)])
        if handed:
            log.info("entries_handed_back", count=handed, reason="shutdown")

    async def _dispatch(
        self,
        task_type: TaskType,
        entries: list[TaskEntry | Malformed],
        leases: Mapping[Ref, str],
    ) -> None:
        """Fail the malformed entries and start the others, each under its lease; if the
        start could not be sent, the leases go back (the entries stay pending and are
        claimed later). Handlers run once the start is written, not answered."""
        state = self._states[task_type]
        try:
            start = await self._start(task_type, entries)
        except BaseException:
            self._return_leases(state, leases.values())
            raise
        if start is None:
            return
        writer = self.consumer.live_writer
        cap = self._opts.max_deliveries
        for entry, answer in zip(start.entries, start.answers, strict=True):
            live = functools.partial(writer, task_type, entry.task.task_id)
            run = TaskRun(answer, live, max_attempts=cap)
            running = Running(entry, leases.get(entry.ref), run, start)
            running.task = asyncio.create_task(self._run_one(running))
            state.running[entry.ref] = running
        self._metrics.set_in_flight(task_type, len(state.running))

    async def _start(
        self, task_type: TaskType, entries: list[TaskEntry | Malformed]
    ) -> StartCall | None:
        deliveries = [e for e in entries if isinstance(e, TaskEntry)]
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
            return None
        start = StartCall(self.consumer, deliveries, time.time())
        await start.send()
        return start

    def _early_finish(self, task_type: TaskType) -> bool:
        """Whether a completion may go behind its start before the start answered: not
        under a user cap (its finish updates the user's count) nor a replica wait."""
        return self._opts.max_deliveries >= 1 and self.consumer.may_finish_early(task_type)

    def _return_lease(self, task_type: TaskType, lease: str | None) -> None:
        self._return_leases(self._states[task_type], [lease], used=True)

    def _return_leases(
        self, state: _TypeState, leases: Iterable[str | None], used: bool = False
    ) -> None:
        if state.intake.gate is not None:
            for lease in leases:
                if lease is not None:
                    state.intake.gate.release(lease, used=used)

    async def _run_one(self, running: Running) -> None:
        entry = running.entry
        task = entry.task
        structlog.contextvars.bind_contextvars(
            task_id=task.task_id, task_type=str(task.type), consumer=self.name
        )
        state = self._states[task.type]
        try:
            outcome = await self._handling.outcome(running)
            if outcome is not None:
                await self._completer.submit(outcome)
        finally:
            # A lease still here was never used: the handler did not run.
            self._return_leases(state, [running.lease])
            state.running.pop(entry.ref, None)
            state.slot_freed.set()
            self._metrics.set_in_flight(task.type, len(state.running))

    def request_stop(self, task_type: TaskType, task_id: str) -> None:
        """Stop the task if it runs here (a user cancelled it); unknown ids are ignored."""
        state = self._states.get(task_type)
        running = next(
            (
                r
                for r in (state.running.values() if state else ())
                if r.entry.task.task_id == task_id
            ),
            None,
        )
        if running is None or running.run.stop_requested:
            return
        running.run.stop_requested = True
        log.info("task_stop_requested", task_id=task_id, task_type=task_type)
        if running.scope is not None:
            running.scope.reschedule(0)  # expired: cancels the handler at once

    async def _check_cancels(self) -> None:
        """Stop running tasks whose cancel flag is set (a cancel message may have been lost)."""
        for task_type, state in self._states.items():
            ids = [r.entry.task.task_id for r in state.running.values()]
            if ids:
                for task_id in await self.consumer.cancel_requested(task_type, ids):
                    self.request_stop(task_type, task_id)

    async def _keep(self, step: Callable[[], Awaitable[None]], interval: float) -> None:
        """Run `step` every `interval` seconds until cancelled, whatever it raises."""
        while not cancel_requested():
            await asyncio.sleep(interval)
            await self._step_once(step)

    @staticmethod
    async def _step_once(step: Callable[[], Awaitable[None]]) -> None:
        """Run a keeper's step once; a failure is logged, and the next round tries again."""
        try:
            await step()
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log.warning("keeper_failed", step=step.__name__, error=f"{type(exc).__name__}: {exc}")

    async def _beat(self) -> None:
        """Say we are alive, and so keep our provider leases (same interval, same reason)."""
        gates = set(self._gates.values())
        await asyncio.gather(
            self.consumer.heartbeat(list(self._states)), *(gate.renew() for gate in gates)
        )

    async def _renew_once(self) -> None:
        """Keep running entries' idle time low so only a dead consumer's work looks idle,
        then repair the fairness state of the busiest users (see fairness.sweep) and catch
        cancel flags whose message was lost.

        Each type on its own: on a cluster a type whose shard fails over must not stop the
        renewals of the others (their entries would look idle to peers meanwhile).
        """
        results = await asyncio.gather(
            *(self._renew_type(t, s) for t, s in self._states.items()), return_exceptions=True
        )
        for task_type, error in zip(self._states, results, strict=True):
            if isinstance(error, BaseException):
                reason = f"{type(error).__name__}: {error}"
                log.warning("keeper_failed", step="renew", task_type=task_type, error=reason)
        await self._check_cancels()

    async def _renew_type(self, task_type: TaskType, state: _TypeState) -> None:
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
            handed = await self.consumer.requeue([r.entry for r in unfinished])
            if handed:
                log.warning("entries_handed_back", count=handed, reason="grace period over")
        await self._completer.aclose()
        log.info("consumer_stopped", consumer=self.name)
