"""How an entry ends: the Ending, and the finish or fail step (with its announcement) it takes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from shared.config import Settings
from shared.queue.fairness import user_slot
from shared.queue.keys import GROUP, Keys
from shared.queue.records import Malformed, TaskEntry, completion_message, dead_fields
from shared.queue.steps import Fail, Finish, Step, UserSlot
from shared.tasks import TaskStatus, dumps

# Completion messages above this size carry only the task id; the waiter reads the record.
MESSAGE_LIMIT = 16 * 1024
DEAD_LETTER_MAXLEN = 100_000

Entry = TaskEntry | Malformed


@dataclass(slots=True)
class Ending:
    """How one entry ended: completed (a result), or failed for good (dead-lettered).

    An entry whose task finished elsewhere ends as COMPLETED without a result: the finish
    step then only acks and deletes it.
    """

    entry: Entry
    status: TaskStatus
    attempts: int = 0
    started_at: float | None = None
    result_json: bytes | None = None
    error: str | None = None
    finished_at: float = field(default_factory=time.time)

    @property
    def task_id(self) -> str | None:
        return self.entry.task.task_id if isinstance(self.entry, TaskEntry) else self.entry.task_id


def stub_task(bad: Malformed, failed_at: float) -> bytes:
    """What a failed record keeps of a task whose entry was unusable: its id and type; its
    user and charge stay in the record's own fields."""
    stub: dict[str, Any] = {"task_id": bad.task_id, "type": bad.task_type, "user_id": 0}
    return dumps(stub | {"data": {}, "created_at": failed_at, "charge_id": None})


def _message(consumer: str, o: Ending) -> bytes:
    if not isinstance(o.entry, TaskEntry):
        return dumps({"task_id": o.task_id, "status": o.status, "error": o.error})
    state = {
        "status": o.status,
        "attempts": o.attempts,
        "consumer": consumer,
        "started_at": o.started_at,
        "finished_at": o.finished_at,
        "error": o.error,
    }
    return completion_message(o.entry, state, o.result_json, MESSAGE_LIMIT)


@dataclass(slots=True)  # not frozen: built per task (see steps.py)
class _Where:
    final_id: str
    record: str
    channel: str
    stream: str


def _where(keys: Keys, o: Ending) -> _Where:
    task_type = o.entry.task_type
    return _Where(
        # Attempt numbers are unique per start of an entry: entry id and attempt name one run.
        final_id=f"{o.entry.entry_id}:{o.attempts}",
        record=keys.record(task_type, o.task_id or ""),
        channel=keys.channel(task_type) if o.task_id else "",
        stream=keys.stream(task_type, o.entry.priority),
    )


def ending_step(keys: Keys, settings: Settings, consumer: str, o: Ending) -> Step:
    """The one step that ends an entry on its own stream: finish (a result, or only ack a
    duplicate) or fail; either frees the task's place in its user's count."""
    entry, where = o.entry, _where(keys, o)
    user = user_slot(keys, settings, entry)
    if o.status is TaskStatus.FAILED:
        return _fail_step(keys, settings, consumer=consumer, o=o, where=where, user=user)
    if not isinstance(entry, TaskEntry):
        raise TypeError("only a parsed entry can complete")
    return Finish(
        stream=where.stream,
        record=where.record,
        group=GROUP,
        entry_id=entry.entry_id,
        status=o.status,
        finished_at=o.finished_at,
        result=o.result_json or b"",
        error=o.error or "",
        result_ttl=settings.redis_result_ttl,
        channel=where.channel,
        message=_message(consumer, o),
        entry=entry.raw,
        final_id=where.final_id,
        user=user,
    )


def _fail_step(
    keys: Keys,
    settings: Settings,
    *,
    consumer: str,
    o: Ending,
    where: _Where,
    user: UserSlot | None,
) -> Fail:
    entry = o.entry
    if isinstance(entry, TaskEntry):
        raw, kept = entry.raw, [(b"task", entry.raw)]
    else:
        raw, kept = stub_task(entry, o.finished_at), dead_fields(entry.fields)
    return Fail(
        stream=where.stream,
        dead=keys.dead(entry.task_type),
        record=where.record,
        group=GROUP,
        entry_id=entry.entry_id,
        reason=o.error or "failed",
        failed_at=o.finished_at,
        result_ttl=settings.redis_result_ttl,
        channel=where.channel,
        message=_message(consumer, o),
        consumer=consumer,
        dead_maxlen=DEAD_LETTER_MAXLEN,
        final_id=where.final_id,
        entry=raw,
        create=isinstance(entry, TaskEntry),
        dead_fields=kept,
        user=user,
    )
