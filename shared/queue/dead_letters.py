"""The dead-letter stream of a task type: list its entries, replay them, purge it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.queue.connection import RedisClient
from shared.queue.keys import Keys
from shared.queue.recovery_steps import ReplayDead
from shared.queue.scripts import Scripts
from shared.tasks import TaskType, loads

PAGE = 500


@dataclass(slots=True)
class DeadEntry:
    """One dead-lettered entry: why, where from, and the task when it carried a valid one."""

    dead_id: str
    reason: str
    consumer: str | None
    entry_id: str | None
    failed_at: float | None
    task: dict[str, Any] | None = None
    # The fields of an entry that could not be parsed (`orig_*`), decoded for display.
    original: dict[str, str] = field(default_factory=dict)

    @property
    def task_id(self) -> str | None:
        return str(self.task["task_id"]) if self.task and "task_id" in self.task else None

    @property
    def replayable(self) -> bool:
        return self.task_id is not None


@dataclass(slots=True)
class Replayed:
    """What replaying one dead entry did: its new stream entry, or why it stayed."""

    dead_id: str
    task_id: str | None
    new_entry_id: str | None = None
    skipped: str | None = None


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode(errors="replace")


def _task(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        task = loads(raw)
    except orjson.JSONDecodeError:
        return None
    return task if isinstance(task, dict) else None


def _dead_entry(dead_id: bytes, fields: dict[bytes, bytes]) -> DeadEntry:
    failed_at = fields.get(b"failed_at")
    return DeadEntry(
        dead_id=dead_id.decode(),
        reason=_text(fields.get(b"reason")) or "",
        consumer=_text(fields.get(b"consumer")),
        entry_id=_text(fields.get(b"entry_id")),
        failed_at=float(failed_at) if failed_at else None,
        task=_task(fields.get(b"task")),
        original={
            k.decode()[len("orig_") :]: v.decode(errors="replace")
            for k, v in fields.items()
            if k.startswith(b"orig_")
        },
    )


async def list_dead(
    redis: RedisClient, keys: Keys, task_type: TaskType, ids: Sequence[str] | None = None
) -> list[DeadEntry]:
    """Every dead entry of the type, oldest first, or only those with the given ids."""
    dead = keys.dead(task_type)
    if ids is not None:
        pipe = redis.pipeline(transaction=False)
        for dead_id in ids:
            pipe.xrange(dead, min=dead_id, max=dead_id)
        rows = [row for found in await pipe.execute() for row in found]
        return [_dead_entry(eid, fields) for eid, fields in rows]
    entries: list[DeadEntry] = []
    start = "-"
    while True:
        page: Any = await redis.xrange(dead, min=start, count=PAGE)
        if not page:
            return entries
        entries += [_dead_entry(eid, fields) for eid, fields in page]
        start = f"({entries[-1].dead_id}"


async def replay_dead(
    redis: RedisClient,
    scripts: Scripts,
    keys: Keys,
    task_type: TaskType,
    *,
    task_ttl: int,
    ids: Sequence[str] | None = None,
) -> list[Replayed]:
    """Put dead tasks (all, or the given dead ids) back on the stream as fresh pending tasks.

    Each replay is one Lua step (add to the stream, reset the record, delete the dead entry),
    so a task is never both dead and queued; an entry without a valid task stays where it is.
    The task keeps its charge id: its charge was refunded when it died, and refunds are
    idempotent by charge id, so failing again cannot refund twice.
    """
    entries = await list_dead(redis, keys, task_type, ids)
    found = {e.dead_id for e in entries}
    results = [Replayed(i, None, skipped="not in the dead-letter stream") for i in ids or ()]
    results = [r for r in results if r.dead_id not in found]
    todo: list[tuple[DeadEntry, str]] = []
    for entry in entries:
        if entry.task_id is None:
            results.append(Replayed(entry.dead_id, None, skipped="no valid task in the entry"))
        else:
            todo.append((entry, entry.task_id))
    if not todo:
        return results
    steps = [
        ReplayDead(
            stream=keys.stream(task_type),
            dead=keys.dead(task_type),
            record=keys.record(task_type, task_id),
            dead_id=entry.dead_id,
            task_ttl=task_ttl,
        )
        for entry, task_id in todo
    ]
    for (entry, task_id), (ok, value) in zip(todo, await scripts.run_all(steps), strict=True):
        outcome = Replayed(entry.dead_id, task_id)
        if ok:
            outcome.new_entry_id = value.decode()
        else:
            outcome.skipped = value.decode()
        results.append(outcome)
    return results


async def purge_dead(redis: RedisClient, keys: Keys, task_type: TaskType) -> int:
    """Delete the type's dead-letter stream; returns how many entries it held."""
    pipe = redis.pipeline(transaction=True)
    pipe.xlen(keys.dead(task_type))
    pipe.delete(keys.dead(task_type))
    length, _ = await pipe.execute()
    return int(length)
