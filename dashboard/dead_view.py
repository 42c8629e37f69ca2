"""The dead-letter page of a type: its newest entries, with replay and purge forms."""

from __future__ import annotations

import time

from dashboard.data import DeadPage
from dashboard.views import csrf_field, esc, task_link
from scripts.tables import duration
from shared.queue.dead_letters import DeadEntry
from shared.tasks import TaskType

REASON_CHARS = 160


def tabs(counts: dict[TaskType, int], active: TaskType) -> str:
    links = "".join(
        f"<a href='/dead/{t}'{' class=active' if t is active else ''}>{esc(t)} "
        f"<span class='count'>{n}</span></a>"
        for t, n in counts.items()
    )
    return f"<nav class='tabs'>{links}</nav>"


def _row(entry: DeadEntry, now: float) -> str:
    age = duration(now - entry.failed_at) if entry.failed_at else None
    reason = entry.reason
    if len(reason) > REASON_CHARS:
        reason = reason[:REASON_CHARS] + "…"
    pick = (
        f"<input type='checkbox' name='id' value='{esc(entry.dead_id)}' form='replay' "
        f"aria-label='select {esc(entry.dead_id)}'>"
        if entry.replayable
        else ""
    )
    return (
        f"<tr data-dead-id='{esc(entry.dead_id)}'><td>{pick}</td>"
        f"<td class='mono'>{esc(entry.dead_id)}</td><td>{task_link(entry.task_id)}</td>"
        f"<td class='num'>{esc(age)}</td><td class='mono'>{esc(entry.consumer)}</td>"
        f"<td class='reason' title='{esc(entry.reason)}'>{esc(reason)}</td></tr>"
    )


def _actions(page: DeadPage, csrf: str) -> str:
    base = f"/dead/{page.task_type}"
    replay_selected = (
        f"<form id='replay' method='post' action='{base}/replay'>{csrf_field(csrf)}"
        "<button name='scope' value='selected'>Replay selected</button></form>"
    )
    replay_all = (
        f"<form method='post' action='{base}/replay'>{csrf_field(csrf)}"
        f"<button name='scope' value='all'>Replay all {page.total}</button></form>"
    )
    question = f"Delete all {page.total} dead {page.task_type} entries? This cannot be undone."
    purge = (
        f"<form method='post' action='{base}/purge' data-confirm='{esc(question)}'>"
        f"{csrf_field(csrf)}<button class='danger'>Purge all</button></form>"
    )
    return f"<div class='actions'>{replay_selected}{replay_all}{purge}</div>"


def dead_live(page: DeadPage, counts: dict[TaskType, int], csrf: str) -> str:
    head = tabs(counts, page.task_type)
    if not page.total:
        return f"{head}<p class='empty'>No dead letters for {esc(page.task_type)}.</p>"
    now = time.time()
    rows = "".join(_row(entry, now) for entry in page.entries)
    shown = len(page.entries)
    more = ""
    if shown < page.total:
        more = f"<p class='muted'>Newest {shown} of {page.total} shown.</p>"
    table = (
        "<table class='dead'><thead><tr><th></th><th>dead id</th><th>task</th><th>age</th>"
        f"<th>consumer</th><th>reason</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    return f"{head}{_actions(page, csrf)}{table}{more}"
