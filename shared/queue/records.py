"""Encoding of stream entries and task records; the only place that knows their fields."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from shared import checks
from shared.errors import InvalidPayloadError
from shared.queue.keys import Priority
from shared.tasks import (
    QueueTask,
    TaskStatus,
    TaskType,
    dumps,
    loads,
    parse_payload,
    parse_task_type,
)


def entry_json(task: QueueTask) -> bytes:
    """The immutable part of a task: what the stream entry carries and the record keeps."""
    created_at = task.created_at.timestamp()
    return new_entry(
        task.task_id,
        task.type,
        task.user_id,
        task.data,
        created_at=created_at,
        charge_id=task.charge_id,
    )


def new_entry(
    task_id: str,
    task_type: TaskType,
    user_id: int,
    data: dict[str, Any],
    *,
    created_at: float,
    charge_id: str | None,
) -> bytes:
    """`entry_json` of a task not built yet (an enqueue needs only the bytes)."""
    return dumps(
        {
            "task_id": task_id,
            "type": task_type,
            "user_id": user_id,
            "data": data,
            "created_at": created_at,
            "charge_id": charge_id,
        }
    )


def _time(raw: bytes | float | None) -> datetime | None:
    return None if raw is None else datetime.fromtimestamp(float(raw), UTC)


def _text(raw: bytes | str | None) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


def build_task(static: dict[str, Any], state: dict[str, Any]) -> QueueTask:
    """Join the immutable part with the mutable state (record fields or a completion message)."""
    status = _text(state.get("status")) or "pending"
    return QueueTask(
        task_id=str(static["task_id"]),
        type=TaskType(static["type"]),
        status=TaskStatus(status),
        user_id=int(static["user_id"] or state.get("user") or 0),
        data=static["data"],
        result=state.get("result"),
        error=_text(state.get("error")),
        created_at=datetime.fromtimestamp(static["created_at"], UTC),
        started_at=_time(state.get("started_at")),
        finished_at=_time(state.get("finished_at")),
        attempts=int(state.get("attempts") or 0),
        consumer=_text(state.get("consumer")),
        # A record written for an unusable entry knows the charge only in its own field.
        charge_id=static.get("charge_id") or _text(state.get("charge")),
    )


def task_from_record(fields: dict[bytes, bytes]) -> QueueTask | None:
    """Build a QueueTask from HGETALL output, or None for a missing record."""
    if b"task" not in fields:
        return None
    state: dict[str, Any] = {k.decode(): v for k, v in fields.items() if k != b"task"}
    if "result" in state:
        state["result"] = loads(state["result"])
    return build_task(loads(fields[b"task"]), state)


def completion_message(
    delivery: TaskEntry, state: dict[str, Any], result_json: bytes | None, limit: int
) -> bytes:
    """The pub/sub announcement: the whole final task when small, else only its id and status.

    Small results (replies, prompts) reach the waiter without a read; an image stays in its
    record and is read once by whoever needs it.
    """
    size = len(delivery.raw) + (len(result_json) if result_json else 0)
    if size > limit:
        return dumps({"task_id": delivery.task.task_id, "status": state["status"]})
    message = dict(state, task=orjson.Fragment(delivery.raw), task_id=delivery.task.task_id)
    if result_json is not None:
        message["result"] = orjson.Fragment(result_json)
    return dumps(message)


def task_from_message(message: dict[str, Any]) -> QueueTask | None:
    """The final task carried by a completion message, or None when it must be read."""
    static = message.get("task")
    return None if static is None else build_task(static, message)


@dataclass(slots=True)
class TaskEntry:
    """One stream entry handed to this consumer, parsed into its task."""

    entry_id: str
    task_type: TaskType
    task: QueueTask
    raw: bytes
    # The stream it came from: every step on the entry names that stream.
    priority: Priority = Priority.NORMAL
    # Read new (not claimed or adopted) and not marked `again` (handed back, or unparked
    # after a start): its task never started, so its handler may run before its start step
    # answers (docs/guarantees.md, "The start step off the latency path").
    first: bool = False

    @property
    def ref(self) -> tuple[Priority, str]:
        """Entry ids are unique per stream only; this is unique per type."""
        return self.priority, self.entry_id


@dataclass(slots=True)
class Malformed:
    """An entry that cannot become a task; it is dead-lettered with the reason.

    `task_id` is set when the entry still names its task, so that task fails at once instead
    of staying pending until its record expires.
    """

    entry_id: str
    task_type: TaskType
    fields: dict[bytes, bytes]
    reason: str
    task_id: str | None = None
    priority: Priority = Priority.NORMAL

    @property
    def ref(self) -> tuple[Priority, str]:
        return self.priority, self.entry_id


# What a dead-letter entry keeps of an entry that could not be parsed: a prefix of each field,
# the size and a hash, so a 10 MB poison entry does not live on in full.
DEAD_PREFIX_BYTES = 1024
_DEAD_FIELDS = 32
_TASK_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def dead_fields(fields: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """Bounded copy of an unparsable entry's fields, with its total size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    for name, value in fields.items():
        digest.update(name)
        digest.update(value)
        size += len(name) + len(value)
    kept = [
        (b"orig_" + name[:64], value[:DEAD_PREFIX_BYTES])
        for name, value in list(fields.items())[:_DEAD_FIELDS]
    ]
    return [
        *kept,
        (b"orig_size", str(size).encode()),
        (b"orig_sha256", digest.hexdigest().encode()),
    ]


def _task_id_of(raw: bytes | None) -> str | None:
    """The task id an unusable entry still names, if it looks like one of ours."""
    try:
        static = loads(raw) if raw is not None else None
    except Exception:  # noqa: BLE001 - an entry that is not even JSON names no task
        return None
    task_id = static.get("task_id") if isinstance(static, dict) else None
    if isinstance(task_id, str) and _TASK_ID.fullmatch(task_id):
        return task_id
    return None


def _build(task_type: TaskType, static: Any) -> QueueTask:
    if not isinstance(static, dict):
        raise InvalidPayloadError("task is not a JSON object")
    if parse_task_type(static.get("type", "")) is not task_type:
        raise InvalidPayloadError(f"task of type {static.get('type')!r} in {task_type} stream")
    task_id = static["task_id"]
    if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id):
        raise InvalidPayloadError("task_id is not a short id string")
    charge_id = static.get("charge_id")
    if charge_id is not None and not isinstance(charge_id, str):
        raise InvalidPayloadError("charge_id is not a string")
    return QueueTask(
        task_id=task_id,
        type=task_type,
        user_id=checks.required(static, "user_id", int),
        data=static["data"],
        created_at=datetime.fromtimestamp(checks.number(static, "created_at"), UTC),
        charge_id=charge_id,
        # Validated once, here, at the trust boundary; the handler gets this model.
        payload=parse_payload(task_type, static["data"], task_id),
    )


def parse_entry(
    task_type: TaskType,
    entry_id: bytes | str,
    fields: dict[bytes, bytes],
    max_bytes: int,
    priority: Priority = Priority.NORMAL,
    *,
    new: bool = False,
) -> TaskEntry | Malformed:
    """Parse one stream entry; anything wrong with it becomes a Malformed with a reason.

    This is a trust boundary: whatever an entry holds (huge or NaN numbers, wrong types,
    bytes that are not UTF-8), no exception leaves this function.
    """
    eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    raw = fields.get(b"task")
    if raw is None:
        return Malformed(eid, task_type, fields, "entry has no 'task' field", None, priority)
    if len(raw) > max_bytes:
        reason = f"entry is {len(raw)} bytes, limit {max_bytes}"
        return Malformed(eid, task_type, fields, reason, _task_id_of(raw), priority)
    try:
        task = _build(task_type, loads(raw))
    except Exception as exc:  # noqa: BLE001 - see the docstring: any failure means a bad entry
        reason = f"malformed entry: {type(exc).__name__}: {exc}"[:500]
        return Malformed(eid, task_type, fields, reason, _task_id_of(raw), priority)
    return TaskEntry(eid, task_type, task, raw, priority, new and b"again" not in fields)
