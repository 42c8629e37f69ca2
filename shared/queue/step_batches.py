"""Running many steps: alike enqueues (one stream, TTL, priority) share one call of the
enqueue batch script, alike finishes (one stream, no fairness) one of the finish batch script.
One call instead of one per task saves most of the per-call cost, in Redis and in the client.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline

from shared.queue.scripts import Scripts
from shared.queue.steps import Arg, Enqueue, Finish, Step, names

# At most this many tasks per call: a script holds the server while it runs, so one huge
# batch must not stall every other client for long.
BATCH_LIMIT = 100


@dataclass(slots=True)
class EnqueueBatch(Step):
    """Enqueues sharing stream, TTL and priority, in one call of `enqueue_batch`."""

    script: ClassVar[str] = "enqueue_batch"
    key_names = names("stream records...")
    arg_names = names("task_ttl high per_task...")
    steps: list[Enqueue]

    def keys(self) -> list[str]:
        return [self.steps[0].stream, *(step.record for step in self.steps)]

    def args(self) -> list[Arg]:
        first = self.steps[0]
        args: list[Arg] = [first.task_ttl, "high" if first.high else ""]
        for step in self.steps:
            args += (step.entry, step.user_id, step.charge_id or "")
        return args


@dataclass(slots=True)
class FinishBatch(Step):
    """Finishes without fairness sharing stream, group, result TTL and channel, in one call
    of `finish_batch`."""

    script: ClassVar[str] = "finish_batch"
    key_names = names("stream records...")
    arg_names = names("group result_ttl channel per_task...")
    steps: list[Finish]

    def keys(self) -> list[str]:
        return [self.steps[0].stream, *(step.record for step in self.steps)]

    def args(self) -> list[Arg]:
        first = self.steps[0]
        args: list[Arg] = [first.group, first.result_ttl, first.channel]
        for step in self.steps:
            args += _per_task(step)
        return args


@dataclass(slots=True)
class FinishEarly(Step):
    """Finishes without fairness sharing stream, group, result TTL and channel, sent behind
    their start step before it answered: each applies only if that start (`start_id`)
    admitted its run as attempt `attempt` (see lua_runs.FINISH_EARLY)."""

    script: ClassVar[str] = "finish_early"
    key_names = names("stream records...")
    arg_names = names("group result_ttl channel start_id per_task...")
    steps: list[Finish]
    start_id: str
    attempt: int

    def keys(self) -> list[str]:
        return [self.steps[0].stream, *(step.record for step in self.steps)]

    def args(self) -> list[Arg]:
        first = self.steps[0]
        args: list[Arg] = [first.group, first.result_ttl, first.channel, self.start_id]
        for step in self.steps:
            args += (*_per_task(step), self.attempt)
        return args


def _per_task(step: Finish) -> tuple[Arg, ...]:
    """What a batch of finishes passes per task, in the order the batch scripts read it."""
    return (
        step.entry_id,
        step.status,
        repr(step.finished_at),
        step.result,
        step.error,
        step.message,
        step.entry,
        step.final_id,
    )


Batch = EnqueueBatch | FinishBatch


def _alike(step: Step) -> tuple[Hashable, ...] | None:
    """What steps must share to go in one batch call (the step's kind first); None: the
    step goes as it is."""
    if isinstance(step, Enqueue):
        return (Enqueue, step.stream, step.task_ttl, step.high)
    if isinstance(step, Finish) and step.user is None:
        return (Finish, step.stream, step.group, step.result_ttl, step.channel)
    return None


def _batch(steps: list[Any]) -> Batch:
    """The batch call of alike steps (all of one kind, see `_alike`)."""
    return EnqueueBatch(steps) if isinstance(steps[0], Enqueue) else FinishBatch(steps)


def calls_for(steps: Sequence[Step]) -> list[tuple[Step, list[int]]]:
    """The calls that run `steps`, each with the indexes of the steps it stands for: alike
    steps go together (up to BATCH_LIMIT), a lone one and any other step go as they are."""
    groups: dict[tuple[Hashable, ...], list[tuple[int, Step]]] = {}
    calls: list[tuple[Step, list[int]]] = []
    for i, step in enumerate(steps):
        key = _alike(step)
        if key is None:
            calls.append((step, [i]))
        else:
            groups.setdefault(key, []).append((i, step))
    for group in groups.values():
        for first in range(0, len(group), BATCH_LIMIT):
            chunk = group[first : first + BATCH_LIMIT]
            indexes = [i for i, _ in chunk]
            if len(chunk) == 1:
                calls.append((chunk[0][1], indexes))
            else:
                calls.append((_batch([step for _, step in chunk]), indexes))
    return calls


async def run_steps(
    scripts: Scripts,
    steps: Sequence[Step],
    *,
    raise_on_error: bool = True,
    then: Callable[[Pipeline | ClusterPipeline], None] | None = None,
) -> list[Any]:
    """Results in the order of `steps`, as `Scripts.run_all(durable=True)` gives them; an
    error of a batch call stands for each of its steps. `then` as for `run_all`."""
    calls = calls_for(steps)
    replies = await scripts.run_all(
        [call for call, _ in calls], durable=True, raise_on_error=raise_on_error, then=then
    )
    results: list[Any] = [None] * len(steps)
    for (call, indexes), reply in zip(calls, replies, strict=True):
        if isinstance(call, Batch) and not isinstance(reply, Exception):
            for i, result in zip(indexes, reply, strict=True):
                results[i] = result
        else:
            for i in indexes:
                results[i] = reply
    return results
