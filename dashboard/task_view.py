"""The task page: status, attempts, consumer, timings, error, and a payload whose user texts
stay hidden until an operator asks for them."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from urllib.parse import quote

import orjson

from dashboard.views import esc
from scripts.queuectl_tasks import summarize
from scripts.tables import duration, timestamp
from shared.tasks import QueueTask, TaskStatus

# Keys whose string values are structure, not something a user wrote or was sent.
STRUCTURAL_KEYS = frozenset({"role"})
_STATUS_CLASS = {
    TaskStatus.COMPLETED: "ok",
    TaskStatus.FAILED: "bad",
    TaskStatus.PROCESSING: "busy",
    TaskStatus.PENDING: "",
    TaskStatus.CANCELLED: "",
}


def hide_texts(value: Any, key: str = "") -> Any:
    """A copy with every text replaced by its length: messages, prompts, replies, images."""
    if isinstance(value, dict):
        return {k: hide_texts(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [hide_texts(v, key) for v in value]
    if isinstance(value, str) and key not in STRUCTURAL_KEYS:
        return f"‹hidden, {len(value)} characters›"
    return value


def shown_texts(value: Any, key: str = "") -> Any:
    """A copy with texts in full; only base64 images become their size."""
    if isinstance(value, dict):
        return {k: shown_texts(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [shown_texts(v, key) for v in value]
    if isinstance(value, str) and key.endswith("base64"):
        return summarize(value, key)
    return value


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def _when(moment: datetime | None, now: float) -> str:
    if moment is None:
        return "-"
    return f"{timestamp(moment)} ({duration(now - moment.timestamp())} ago)"


def _between(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    return duration(max(0.0, (end - start).total_seconds()))


def _facts(task: QueueTask) -> list[tuple[str, str]]:
    now = time.time()
    badge = f"<span class='badge {_STATUS_CLASS[task.status]}'>{esc(task.status)}</span>"
    return [
        ("status", badge),
        ("type", esc(task.type)),
        ("attempts", esc(task.attempts)),
        ("consumer", f"<span class='mono'>{esc(task.consumer)}</span>"),
        ("user", esc(task.user_id)),
        ("charge", f"<span class='mono'>{esc(task.charge_id)}</span>"),
        ("created", esc(_when(task.created_at, now))),
        ("started", esc(_when(task.started_at, now))),
        ("finished", esc(_when(task.finished_at, now))),
        ("waited", esc(_between(task.created_at, task.started_at))),
        ("ran", esc(_between(task.started_at, task.finished_at))),
        ("error", _error(task)),
    ]


def _error(task: QueueTask) -> str:
    if task.error is None:
        return "-"
    # A task that failed for good sits in its type's dead-letter stream, replayable there.
    dead = (
        f" <a href='/dead/{task.type}'>dead letters</a>"
        if task.status is TaskStatus.FAILED
        else ""
    )
    return f"<span class='error'>{esc(task.error)}</span>{dead}"


def task_live(task: QueueTask, show_texts: bool) -> str:
    facts = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in _facts(task))
    shape = shown_texts if show_texts else hide_texts
    path = f"/tasks/{quote(task.task_id, safe='')}"
    toggle = (
        f"<a class='toggle' href='{path}'>Hide user texts</a>"
        if show_texts
        else f"<a class='toggle' href='{path}?texts=1'>Show user texts</a>"
    )
    result = "-" if task.result is None else _json(shape(task.result))
    return (
        f"<dl class='facts'>{facts}</dl>"
        f"<h2>Payload {toggle}</h2><pre class='payload'>{esc(_json(shape(task.data)))}</pre>"
        f"<h2>Result</h2><pre class='payload'>{esc(result)}</pre>"
    )
