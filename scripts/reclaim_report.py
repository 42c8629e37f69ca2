"""What a reclaim pass found and did: the options it ran with, its report as a table or JSON."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scripts.tables import duration, table
from shared.queue.inspect import ConsumerInfo
from shared.queue.maintenance import Result, StuckWork
from shared.tasks import TaskType


@dataclass(frozen=True, slots=True)
class ReclaimOptions:
    types: Sequence[TaskType]
    min_idle_ms: int
    max_deliveries: int
    consumer_idle_ms: int
    dry_run: bool = False
    batch: int = 100


@dataclass(slots=True)
class ReclaimReport:
    """What one pass found and did (or, in a dry run, would do)."""

    options: ReclaimOptions
    works: list[StuckWork] = field(default_factory=list)
    gone: list[tuple[TaskType, ConsumerInfo]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(w.result is Result.ERROR for w in self.works)

    def summary(self) -> dict[str, int]:
        counts = Counter(str(w.result) for w in self.works)
        key = "consumers_to_remove" if self.options.dry_run else "consumers_removed"
        return {**counts, key: len(self.gone)}

    def to_json(self) -> dict[str, Any]:
        o = self.options
        return {
            "dry_run": o.dry_run,
            "min_idle_seconds": o.min_idle_ms / 1000,
            "max_deliveries": o.max_deliveries,
            "consumer_idle_seconds": o.consumer_idle_ms / 1000,
            "entries": [_work_json(w) for w in self.works],
            "gone_consumers": [
                {"task_type": t, "consumer": c.name, "idle_seconds": c.idle_seconds}
                for t, c in self.gone
            ],
            "summary": self.summary(),
        }


def _work_json(w: StuckWork) -> dict[str, Any]:
    return {
        "task_type": w.task_type,
        "entry_id": w.entry.entry_id,
        "consumer": w.entry.consumer,
        "idle_ms": w.entry.idle_ms,
        "deliveries": w.entry.deliveries,
        "task_id": w.task_id,
        "status": w.status,
        "attempts": w.attempts,
        "action": w.action,
        "reason": w.reason,
        "result": w.result,
        "detail": w.detail,
    }


def _work_row(w: StuckWork) -> list[object]:
    entry = w.entry
    seen = [w.task_type, entry.entry_id, entry.consumer, duration(entry.idle_ms / 1000)]
    return [*seen, entry.deliveries, w.attempts, w.task_id, w.action, w.result, w.reason, w.detail]


def render(report: ReclaimReport) -> str:
    o = report.options
    lines = ["DRY RUN: nothing was changed."] if o.dry_run else []
    lines.append(f"Entries idle at least {duration(o.min_idle_ms / 1000)}: {len(report.works)}")
    if report.works:
        headers = ["TYPE", "ENTRY", "CONSUMER", "IDLE", "DELIVERIES", "ATTEMPTS", "TASK"]
        headers += ["ACTION", "RESULT", "REASON", "DETAIL"]
        lines.append(table(headers, [_work_row(w) for w in report.works]))
    idle = duration(o.consumer_idle_ms / 1000)
    verb = "to remove" if o.dry_run else "removed"
    lines.append(
        f"Consumers owning nothing, idle at least {idle} or dead past the idle time above,"
        f" {verb}: {len(report.gone)}"
    )
    if report.gone:
        rows = [[t, c.name, duration(c.idle_seconds)] for t, c in report.gone]
        lines.append(table(["TYPE", "CONSUMER", "IDLE"], rows))
    return "\n".join(lines)
