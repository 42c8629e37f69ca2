"""Running many enqueue steps: those onto one stream share one call of the batch script."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from shared.queue.scripts import Scripts
from shared.queue.steps import Arg, Enqueue, Step

# At most this many tasks per call: a script holds the server while it runs, so one huge
# enqueue_many must not stall every other client for long.
BATCH_LIMIT = 100


@dataclass(slots=True)
class EnqueueBatch(Step):
    """Enqueues sharing stream, TTL and priority, in one call of `enqueue_batch`."""

    script: ClassVar[str] = "enqueue_batch"
    steps: list[Enqueue]

    def keys(self) -> list[str]:
        return [self.steps[0].stream, *(step.record for step in self.steps)]

    def args(self) -> list[Arg]:
        first = self.steps[0]
        args: list[Arg] = [first.task_ttl, "high" if first.high else ""]
        for step in self.steps:
            args += (step.entry, step.user_id, step.charge_id or "")
        return args


def calls_for(steps: Sequence[Step]) -> list[tuple[Step, list[int]]]:
    """The calls that run `steps`, each with the indexes of the steps it stands for: enqueues
    alike go together (up to BATCH_LIMIT), a lone one and any other step go as they are."""
    groups: dict[tuple[str, int, bool], list[tuple[int, Enqueue]]] = {}
    calls: list[tuple[Step, list[int]]] = []
    for i, step in enumerate(steps):
        if isinstance(step, Enqueue):
            groups.setdefault((step.stream, step.task_ttl, step.high), []).append((i, step))
        else:
            calls.append((step, [i]))
    for group in groups.values():
        for first in range(0, len(group), BATCH_LIMIT):
            chunk = group[first : first + BATCH_LIMIT]
            indexes = [i for i, _ in chunk]
            if len(chunk) == 1:
                calls.append((chunk[0][1], indexes))
            else:
                calls.append((EnqueueBatch([step for _, step in chunk]), indexes))
    return calls


async def run_steps(
    scripts: Scripts, steps: Sequence[Step], *, raise_on_error: bool = True
) -> list[Any]:
    """Results in the order of `steps`, as `Scripts.run_all(durable=True)` gives them; an
    error of a batch call stands for each of its steps."""
    calls = calls_for(steps)
    replies = await scripts.run_all(
        [call for call, _ in calls], durable=True, raise_on_error=raise_on_error
    )
    results: list[Any] = [None] * len(steps)
    for (call, indexes), reply in zip(calls, replies, strict=True):
        if isinstance(call, EnqueueBatch) and not isinstance(reply, Exception):
            for i, result in zip(indexes, reply, strict=True):
                results[i] = result
        else:
            for i in indexes:
                results[i] = reply
    return results
