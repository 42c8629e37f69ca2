"""Consumer-side steps on entries read (`reads.py`): start, finish or fail, renew, hand back,
heartbeat; the start and the finishes that may follow it at once go on a held connection
(`step_pipe.py`) so a handler need not wait for the start's answer.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Sequence

import structlog
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline
from redis.exceptions import ResponseError

from shared.config import Settings
from shared.queue.connection import RedisClient
from shared.queue.endings import Ending, Entry, ending_step
from shared.queue.fairness import sweep, user_cap
from shared.queue.keys import GROUP, Keys, Priority
from shared.queue.live import LiveWriter
from shared.queue.reads import EntryReads
from shared.queue.records import TaskEntry
from shared.queue.recovery_steps import ForgetConsumers, Heartbeat, Renew
from shared.queue.scripts import Scripts
from shared.queue.step_batches import BATCH_LIMIT, FinishEarly, run_steps
from shared.queue.step_pipe import Answer, StepPipe
from shared.queue.steps import (
    Finish,
    Start,
    Step,
)
from shared.tasks import TaskStatus, TaskType

log = structlog.get_logger(__name__)

# The per-minute completion chart keeps two hours.
COMPLETIONS_TTL = 7200


class StreamConsumer(EntryReads):
    """The stream operations of one named consumer; one instance per consumer process."""

    async def heartbeat(self, task_types: Sequence[TaskType]) -> None:
        """Say this consumer is alive, for each type it serves (concurrently)."""
        await self._run_each([Heartbeat(self._keys.alive(t), self.name) for t in task_types])

    async def retire(self, task_types: Sequence[TaskType]) -> None:
        """On a clean exit: forget this consumer's name (groups and heartbeat) in every type
        where it owns nothing any more, so it is not listed as a dead consumer."""
        await self._run_each([forget_step(self._keys, t, 0, [self.name]) for t in task_types])

    async def _run_each(self, steps: Sequence[Step]) -> None:
        """Each step on its own, concurrently; the first error is raised once all are done.

        Not one pipeline: on a cluster the types live on different shards, and redis-py
        answers a pipeline that could not reach one node by closing every connection of the
        client, which would cut the other types' reads during a failover.
        """
        results = await asyncio.gather(
            *(self._scripts.run(step) for step in steps), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def __init__(
        self, redis: RedisClient, scripts: Scripts, settings: Settings, name: str
    ) -> None:
        super().__init__(redis, scripts, settings, name)
        self._pipes: dict[TaskType, StepPipe] = {}

    def _start_step(self, entries: Sequence[TaskEntry], started_at: float, start_id: str) -> Start:
        task_type = entries[0].task_type
        return Start(
            records=[self._keys.record(task_type, d.task.task_id) for d in entries],
            entries=[d.raw for d in entries],
            consumer=self.name,
            started_at=started_at,
            task_ttl=self._settings.redis_task_ttl,
            start_id=start_id,
        )

    async def start(
        self, entries: Sequence[TaskEntry], started_at: float, start_id: str | None = None
    ) -> list[int]:
        """Mark tasks processing and count the attempt; -1 marks one that already finished,
        -2 one whose cancel was requested (see lua_runs.START).

        Safe to repeat: the batch's start id makes a retried call count no second attempt (pass
        the start id of a start sent by `send_start` to learn what that one answered).
        """
        if not entries:
            return []
        step = self._start_step(entries, started_at, start_id or uuid.uuid4().hex[:12])
        return [int(n) for n in await self._scripts.run(step)]

    async def send_start(
        self, entries: Sequence[TaskEntry], started_at: float, start_id: str
    ) -> Answer:
        """Write the start step on the type's held connection and return once it is written;
        the future gets its answer ([per task what `start` returns], or an error in place).
        Raises RedisError or OSError when it could not be written."""
        step = self._start_step(entries, started_at, start_id)
        return await self._pipe(entries[0].task_type).send([step])

    async def finish_early(
        self, outcomes: Sequence[Ending], start_id: str, attempt: int
    ) -> list[int]:
        """Send finishes behind their start on its connection, before its answer came; per
        outcome -1 when that start did not admit the run as `attempt` (nothing was done:
        finish it with `finish` once the start answered), else 1 wrote or 0 already final.

        Only completions without a user cap (plain finishes); raises on any error, after
        which the outcomes may or may not have been written (`finish` is safe either way).
        """
        steps = [ending_step(self._keys, self._settings, self.name, o) for o in outcomes]
        by_stream: dict[str, list[tuple[int, Finish]]] = {}
        for i, step in enumerate(steps):
            if not isinstance(step, Finish) or step.user is not None:
                raise ValueError("only plain finishes can be sent early")
            by_stream.setdefault(step.stream, []).append((i, step))
        calls: list[tuple[FinishEarly, list[int]]] = []
        for group in by_stream.values():
            for first in range(0, len(group), BATCH_LIMIT):
                chunk = group[first : first + BATCH_LIMIT]
                call = FinishEarly([s for _, s in chunk], start_id, attempt)
                calls.append((call, [i for i, _ in chunk]))
        pipe = self._pipe(outcomes[0].entry.task_type)
        replies = await (await pipe.send([call for call, _ in calls]))
        results = [-1] * len(outcomes)
        for (_, indexes), reply in zip(calls, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            for i, n in zip(indexes, reply, strict=True):
                results[i] = int(n)
        return results

    def may_finish_early(self, task_type: TaskType) -> bool:
        """Whether `finish_early` serves the type: its finishes are plain (no user cap) and
        need no replica acknowledgement (REDIS_WAIT_REPLICAS), which it does not wait for."""
        return self._scripts.acks is None and not user_cap(self._settings, task_type)

    def _pipe(self, task_type: TaskType) -> StepPipe:
        pipe = self._pipes.get(task_type)
        if pipe is None:
            slot_key = self._keys.stream(task_type, Priority.NORMAL)
            pipe = self._pipes[task_type] = StepPipe(self.redis, self._scripts, slot_key)
        return pipe

    async def close_pipes(self) -> None:
        """Give back the held connections of `send_start` and `finish_early`."""
        pipes, self._pipes = list(self._pipes.values()), {}
        for pipe in pipes:
            await pipe.aclose()

    async def finish(self, outcomes: Sequence[Ending]) -> list[bool]:
        """Store each result or failure, ack, delete and announce; one round trip for all
        (finishes of one stream without fairness share one script call).

        Returns per outcome whether it wrote the final state (False: its task had already
        finished, so nothing was overwritten or announced again). Safe to repeat. The batch
        is also counted in the per-minute chart (one command per type, not per task). With
        REDIS_WAIT_REPLICAS set it returns once the replicas have the results.
        """
        if not outcomes:
            return []
        minute = int(time.time() // 60)
        counts = Counter(o.entry.task_type for o in outcomes)

        def count_in_chart(pipe: Pipeline | ClusterPipeline) -> None:
            for task_type, count in counts.items():
                chart = self._keys.completions(task_type)
                pipe.hincrby(chart, str(minute), count)
                # Minutes past the two hours go, so a busy type's hash stays small.
                pipe.hdel(chart, *(str(minute - 120 - i) for i in range(5)))
                pipe.expire(chart, COMPLETIONS_TTL)

        steps = [ending_step(self._keys, self._settings, self.name, o) for o in outcomes]
        results = await run_steps(self._scripts, steps, then=count_in_chart)
        return [bool(n) for n in results]

    async def fail(self, entries: Sequence[Entry], reason: str) -> list[bool]:
        """The one way to fail tasks: dead-letter each entry, fail its task, announce it.

        Only Redis changes; whoever owns the money (the bot) acts on the announcement.
        """
        return await self.finish([Ending(e, TaskStatus.FAILED, error=reason) for e in entries])

    @property
    def settings(self) -> Settings:
        return self._settings

    def live_writer(self, task_type: TaskType, task_id: str, attempt: int) -> LiveWriter:
        """The writer of one run's live output (it writes nothing until text arrives)."""
        return LiveWriter.for_task(
            self.redis, self._settings, task_type, task_id, attempt, keys=self._keys
        )

    async def cancel_requested(self, task_type: TaskType, task_ids: Sequence[str]) -> list[str]:
        """Those of `task_ids` whose records carry a cancel flag (one round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hexists(self._keys.record(task_type, task_id), "cancel")
        flags = await pipe.execute()
        return [task_id for task_id, flag in zip(task_ids, flags, strict=True) if flag]

    async def renew(
        self, task_type: TaskType, entry_ids: Sequence[str], priority: Priority = Priority.NORMAL
    ) -> list[str]:
        """Reset the idle time of entries still ours; return the ids another consumer took."""
        if not entry_ids:
            return []
        step = Renew(self._keys.stream(task_type, priority), GROUP, self.name, entry_ids)
        try:
            lost = await self._scripts.run(step)
        except ResponseError as exc:
            await self._recover_group(task_type, exc)
            return list(entry_ids)
        return [i.decode() for i in lost]

    async def sweep(self, task_type: TaskType, cap: int) -> int:
        """Repair the fairness state of the type's busiest users (see fairness.sweep)."""
        moved = await sweep(self.redis, self._scripts, self._keys, task_type, cap)
        if moved:
            log.info("parked_tasks_released", task_type=task_type, count=moved)
        return moved


def forget_step(
    keys: Keys, task_type: TaskType, min_age_ms: int, names: Sequence[str] = ()
) -> ForgetConsumers:
    """The step forgetting `names` (none: every consumer with a heartbeat) of a type whose
    heartbeat is at least `min_age_ms` old and who own nothing (see lua.FORGET_CONSUMERS)."""
    streams = keys.streams(task_type)
    return ForgetConsumers(
        streams[Priority.NORMAL],
        streams[Priority.HIGH],
        keys.alive(task_type),
        GROUP,
        min_age_ms,
        names,
    )
