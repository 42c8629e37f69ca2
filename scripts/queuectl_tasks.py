"""`queuectl task ID`: one task's record, with long values (base64 images) summarized."""

from __future__ import annotations

import sys
import time
from typing import Any

from scripts.runtime import EXIT_FAILED, EXIT_OK
from scripts.tables import duration, fields, print_json, print_text, timestamp
from shared.queue import QueueService, QueueTask
from shared.tasks import dumps

LONG_TEXT = 200
PREVIEW = 80
MAX_ITEMS = 5


def _decoded_size(b64: str) -> int:
    return len(b64) * 3 // 4 - b64[-2:].count("=")


def summarize(value: Any, key: str = "") -> Any:
    """A copy of a JSON value fit for a terminal: a base64 field becomes its decoded size, long
    text a preview with its length, a long list its first items and a count of the rest."""
    if isinstance(value, dict):
        return {k: summarize(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        items = [summarize(v) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"... {len(value) - MAX_ITEMS} more")
        return items
    if isinstance(value, str) and key.endswith("base64"):
        return f"<base64, {_decoded_size(value)} bytes>"
    if isinstance(value, str) and len(value) > LONG_TEXT:
        return f"{value[:PREVIEW]}... ({len(value)} chars)"
    return value


def task_view(task: QueueTask) -> dict[str, Any]:
    """The record as shown to an operator; never a whole image."""
    return {
        "task_id": task.task_id,
        "type": task.type,
        "status": task.status,
        "attempts": task.attempts,
        "consumer": task.consumer,
        "user_id": task.user_id,
        "charge_id": task.charge_id,
        "created_at": task.created_at.timestamp(),
        "started_at": task.started_at.timestamp() if task.started_at else None,
        "finished_at": task.finished_at.timestamp() if task.finished_at else None,
        "error": task.error,
        "data": summarize(task.data),
        "result_bytes": len(dumps(task.result)) if task.result is not None else None,
        "result": summarize(task.result),
    }


def render_task(view: dict[str, Any]) -> str:
    age = duration(time.time() - view["created_at"])
    pairs: list[tuple[str, object]] = [
        (name, view[name])
        for name in ("task_id", "type", "status", "attempts", "consumer", "user_id", "charge_id")
    ]
    pairs += [
        ("created_at", f"{timestamp(view['created_at'])} ({age} ago)"),
        ("started_at", timestamp(view["started_at"])),
        ("finished_at", timestamp(view["finished_at"])),
        ("error", view["error"]),
        ("data", dumps(view["data"]).decode()),
    ]
    if view["result"] is not None:
        size = f"{view['result_bytes']} bytes stored"
        pairs.append(("result", f"{dumps(view['result']).decode()} ({size})"))
    else:
        pairs.append(("result", None))
    return fields(pairs)


async def show_task(queue: QueueService, task_id: str, *, as_json: bool) -> int:
    task = await queue.get_task(task_id)
    if task is None:
        sys.stderr.write(f"error: no task {task_id} (never enqueued, or its record expired)\n")
        return EXIT_FAILED
    view = task_view(task)
    if as_json:
        print_json(view)
    else:
        print_text(render_task(view))
    return EXIT_OK
