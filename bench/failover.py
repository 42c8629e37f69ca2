"""A failover drill: tasks of all three types flow through real consumer processes while the
Redis master holding one type dies; it reports tasks lost and how long that type stalled.

A task is lost when its enqueue returned (the producer was told it is queued) and it never
completed: with asynchronous replication the master acknowledged it and died before its
replica had it. On loopback a replica is microseconds behind, so a drill can first make it
lag for `lag` seconds before the master's death, as a slow link or a busy replica would: it
is stopped (SIGSTOP) and a large write fills the socket buffers between the two, so what the
master acknowledges next waits in its own memory and dies with it. That is the window
REDIS_WAIT_REPLICAS closes. Used by tests/queue/test_failover.py and `python -m bench.cluster`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from redis.exceptions import RedisError

from shared.config import Settings
from shared.errors import TaskTimeoutError
from shared.queue import QueueService
from shared.queue.keys import Keys
from shared.tasks import TaskStatus, TaskType
from tests.support.private_cluster import PrivateCluster
from tests.support.private_sentinel import PrivateSentinel

log = structlog.get_logger(__name__)

ROOT = Path(__file__).resolve().parent.parent
BALLAST_BYTES = 48 * 1024 * 1024
TASK_SECONDS = 0.5
CONSUMER_SLOTS = 5
# A completion seen this long after the kill was announced by the promoted replica, not by a
# message the dead master had already sent.
IN_FLIGHT_SECONDS = 0.1
# The type whose master is killed; on Sentinel the one master holds every type.
VICTIM = TaskType.GENERATE_REPLY
PAYLOADS: dict[TaskType, dict[str, Any]] = {
    TaskType.GENERATE_REPLY: {"system_prompt": "s", "dialog_id": 1, "user_message": "hi"},
    TaskType.GENERATE_IMAGE_PROMPT: {"girl_name": "a", "girl_description": "b"},
    TaskType.GENERATE_IMAGE: {"prompt": "girl in a cafe"},
    TaskType.SUMMARIZE_DIALOG: {
        "dialog_id": 1,
        "upto": 1,
        "turns": [{"role": "user", "content": "hi"}],
    },
}
# The drills and benchmarks run the types above: the voice types add nothing to a failover
# (and a transcription's audio is written beside the task, outside the enqueue step).


def consumer_env(settings: Settings, **extra: str) -> dict[str, str]:
    """A consumer process's environment: this topology and prefix, offline providers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    env.update(
        REDIS_URL=settings.redis_url,
        REDIS_CLUSTER=str(settings.redis_cluster).lower(),
        REDIS_SENTINELS=",".join(settings.redis_sentinels),
        REDIS_SENTINEL_MASTER=settings.redis_sentinel_master,
        REDIS_WAIT_REPLICAS=str(settings.redis_wait_replicas),
        REDIS_WAIT_TIMEOUT_MS=str(settings.redis_wait_timeout_ms),
        REDIS_QUEUE_PREFIX=settings.redis_queue_prefix,
        REDIS_RESULT_PREFIX=settings.redis_result_prefix,
        LLM_PROVIDER="offline",
        IMAGE_PROVIDER="offline",
        LOG_JSON="true",
        LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


class ConsumerFleet:
    """`python -m consumers` processes, logging to files (a pipe could fill up and stall one)."""

    def __init__(self, env: dict[str, str], log_dir: Path, args: Sequence[str] = ()) -> None:
        self.env, self.log_dir, self.args = env, log_dir, list(args)
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, count: int) -> None:
        for i in range(count):
            name = f"drill-{uuid.uuid4().hex[:6]}-{i}"
            with (self.log_dir / f"{name}.log").open("ab") as log:
                proc = await asyncio.create_subprocess_exec(
                    *(sys.executable, "-m", "consumers", "--name", name, *self.args),
                    cwd=ROOT,
                    env=self.env,
                    stdout=log,
                    stderr=log,
                )
            self.procs.append(proc)

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@dataclass
class DrillReport:
    """What one drill found; `failover_seconds` runs from the kill until a task of the victim
    type completes again, as its waiter sees it (None: none did). Lost: no record; late:
    completed after its waiter gave up; missed: completed in time but its waiter never
    heard (a fault); unfinished: still not final."""

    wait_replicas: int
    replica_lag_seconds: float = 0.0
    acked: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0
    unfinished: int = 0
    late: int = 0
    missed: int = 0
    refused: int = 0
    failover_seconds: float | None = None
    # The longest time without a completion of the other two types after the kill.
    others_stall_seconds: float | None = None
    lost_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "lost_ids"}


@dataclass
class Target:
    """The master to kill and how: `kill` SIGKILLs it, `heal` waits for the promotion and
    restarts it as a replica; `lag` seconds of a stopped replica before the kill."""

    kill: Callable[[], None]
    heal: Callable[[], None]
    replica_pid: int = 0
    lag: float = 0.0
    after: float = 6.0


def _pid(proc: Any) -> int:
    if proc is None:
        raise RuntimeError("the replica is not running")
    return int(proc.pid)


def cluster_target(cluster: PrivateCluster, settings: Settings, lag: float = 0.0) -> Target:
    """The master that owns the victim type's slot; healed by restarting it (it rejoins as a
    replica of the promoted one)."""
    key = Keys.from_settings(settings).stream(VICTIM)
    cluster.wait_healthy()
    victim = cluster.master_of(key)
    replica = cluster.replica_of(victim)

    def heal() -> None:
        cluster.wait_promoted(key, victim)
        cluster.restart(victim)
        cluster.wait_healthy()

    return Target(lambda: cluster.kill(victim), heal, _pid(replica.proc), lag)


def sentinel_target(sentinel: PrivateSentinel, lag: float = 0.0) -> Target:
    """The master the sentinels name; healed by bringing it back as the new master's replica."""
    victim, replica = sentinel.master(), sentinel.replica()

    def heal() -> None:
        sentinel.wait_promoted(victim)
        sentinel.rejoin(victim)

    return Target(lambda: sentinel.kill(victim), heal, _pid(replica.proc), lag)


@dataclass
class _Sent:
    task_id: str
    task_type: TaskType
    acked_at: float
    waiter: asyncio.Task[float] | None = None


class Drill:
    """One run: produce at `rate` tasks/s per type, kill after `before` s, go on `after` s."""

    def __init__(self, settings: Settings, *, rate: float = 30.0, settle: float = 15.0) -> None:
        self.settings = settings
        self.rate = rate
        self.settle = settle
        self.sent: list[_Sent] = []
        self.refused = 0
        self.killed_at = 0.0
        self._pending: set[asyncio.Task[None]] = set()
        # One user per task: the user cap (USER_MAX_IN_FLIGHT) stays on and parks nothing,
        # so the drill measures the failover, not one user's queue.
        self._users = itertools.count(1)

    async def run(self, queue: QueueService, target: Target, before: float = 1.5) -> DrillReport:
        """Produce, make the replica lag, kill the master, produce on for `after` seconds
        while `heal` (in a thread) waits for the promotion and brings the dead server back."""
        stop = asyncio.Event()
        producer = asyncio.create_task(self._produce(queue, stop))
        await asyncio.sleep(before)
        if target.lag:
            os.kill(target.replica_pid, signal.SIGSTOP)
            await self._fill_replication_link(queue)
            await asyncio.sleep(target.lag)
        self.killed_at = time.time()
        target.kill()
        if target.lag:
            os.kill(target.replica_pid, signal.SIGCONT)
        healing = asyncio.create_task(asyncio.to_thread(target.heal))
        await asyncio.sleep(target.after)
        stop.set()
        await producer
        await healing
        return await self._collect(queue, target)

    async def _fill_replication_link(self, queue: QueueService) -> None:
        """More than the kernel buffers between master and stopped replica can hold (up to
        32 MB of receive buffer here), in the victim's slot, expiring by itself."""
        ballast = f"{queue.keys.stream(VICTIM)}:drill-ballast"
        await queue.redis.set(ballast, b"\0" * BALLAST_BYTES, ex=60)

    async def _produce(self, queue: QueueService, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for task_type in PAYLOADS:
                task = asyncio.create_task(self._enqueue(queue, task_type))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
            await asyncio.sleep(1 / self.rate)
        # Enqueues still riding out the failover finish (or give up) before the count.
        await asyncio.gather(*self._pending)

    async def _enqueue(self, queue: QueueService, task_type: TaskType) -> None:
        task_id = uuid.uuid4().hex
        try:
            user = next(self._users)
            await queue.enqueue_task(task_type, user, PAYLOADS[task_type], task_id=task_id)
        except (RedisError, OSError) as exc:
            self.refused += 1  # the producer knows: not lost, refused (the bot refunds)
            log.warning("drill_enqueue_refused", error=f"{type(exc).__name__}: {exc}"[:300])
            return
        sent = _Sent(task_id, task_type, time.time())
        sent.waiter = asyncio.create_task(self._wait(queue, sent))
        self.sent.append(sent)

    def _late(self, sent: _Sent, finished_at: datetime | None) -> bool:
        deadline = sent.acked_at + self.settle
        return finished_at is None or finished_at.timestamp() > deadline - IN_FLIGHT_SECONDS

    async def _wait(self, queue: QueueService, sent: _Sent) -> float:
        """When the task completed as seen by the producer; raises TaskTimeoutError."""
        task = await queue.wait_for_task_result(sent.task_id, self.settle, sent.task_type)
        if task.status is not TaskStatus.COMPLETED:
            raise RuntimeError(f"task {sent.task_id} {task.status}: {task.error}")
        return time.time()

    async def _collect(self, queue: QueueService, target: Target) -> DrillReport:
        report = DrillReport(self.settings.redis_wait_replicas, target.lag, acked=len(self.sent))
        report.refused = self.refused
        done: dict[TaskType, list[float]] = {t: [] for t in TaskType}
        for sent in self.sent:
            if sent.waiter is None:
                continue
            try:
                done[sent.task_type].append(await sent.waiter)
            except TaskTimeoutError:
                await self._classify(queue, sent, report)
                continue
            except RuntimeError:
                report.failed += 1
                continue
            report.completed += 1
        after_kill = [t for t in done[VICTIM] if t > self.killed_at + IN_FLIGHT_SECONDS]
        if after_kill:
            report.failover_seconds = round(min(after_kill) - self.killed_at, 2)
        others = sorted(t for kind, times in done.items() if kind is not VICTIM for t in times)
        report.others_stall_seconds = _longest_gap(
            others, self.killed_at, self.killed_at + target.after
        )
        return report

    async def _classify(self, queue: QueueService, sent: _Sent, report: DrillReport) -> None:
        """Why a task's waiter gave up: lost (no record), late, missed, or unfinished."""
        task = await queue.get_task(sent.task_id, sent.task_type)
        if task is None:
            report.lost += 1
            report.lost_ids.append(sent.task_id)
        elif task.is_final and self._late(sent, task.finished_at):
            report.late += 1  # done after its waiter gave up
        elif task.is_final:
            report.missed += 1  # done in time, but its waiter never heard: a fault
        else:
            report.unfinished += 1


def _longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch of [start, end] without a completion in sorted `times`."""
    inside = [t for t in times if start < t < end]
    edges = [start, *inside, end]
    return round(max(b - a for a, b in itertools.pairwise(edges)), 2)


async def run_drill(
    settings: Settings, target: Target, log_dir: Path, *, consumers: int = 2, rate: float = 30.0
) -> DrillReport:
    """Start the consumers, run one drill through a QueueService, stop everything.

    The consumers are slower than the producers, as under a burst: each task takes
    TASK_SECONDS (a provider call) and each consumer runs CONSUMER_SLOTS per type, so tasks
    wait in the stream. Only those can be lost: a task a consumer already holds is written to
    the promoted replica by that consumer's finish step, record and all.
    """
    env = consumer_env(settings, OFFLINE_DELAY_SECONDS=str(TASK_SECONDS))
    # Every type, the ones added later included, gets the same slots.
    slots = [arg for t in TaskType for arg in ("--concurrency", f"{t}={CONSUMER_SLOTS}")]
    fleet = ConsumerFleet(env, log_dir, slots)
    queue = QueueService(settings, client_name=f"drill:{settings.redis_queue_prefix}")
    await queue.connect()
    await fleet.start(consumers)
    try:
        await asyncio.sleep(1.0)  # the consumers connect and join the groups
        return await Drill(settings, rate=rate).run(queue, target)
    finally:
        with contextlib.suppress(RedisError, OSError):
            await fleet.stop()
        await queue.close()
