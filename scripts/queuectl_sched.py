"""`queuectl stats`, scheduling part: provider leases, tokens and pauses, the busiest users."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from consumers.providers.factory import provider_for
from scripts.tables import duration, table, timestamp
from shared.config import Settings
from shared.queue import QueueDepth, QueueService
from shared.queue.fairness import UserLoad
from shared.queue.scheduling import ProviderView, busiest_users, provider_views
from shared.tasks import TaskType


@dataclass(slots=True)
class Scheduling:
    providers: list[ProviderView]
    users: list[UserLoad]


def types_of(settings: Settings) -> dict[str, list[TaskType]]:
    """Which task types call each provider, as this process's settings say."""
    found: dict[str, list[TaskType]] = {}
    for task_type in TaskType:
        found.setdefault(provider_for(settings, task_type), []).append(task_type)
    return found


async def load_scheduling(queue: QueueService, depths: Sequence[QueueDepth]) -> Scheduling:
    by_type = {d.task_type: d for d in depths}
    settings = queue.settings
    providers = await provider_views(
        queue.redis, queue.keys, settings, types_of(settings), by_type
    )
    return Scheduling(providers, await busiest_users(queue.redis, queue.keys, list(TaskType)))


def scheduling_json(s: Scheduling) -> dict[str, Any]:
    return {
        "providers": [
            {
                "provider": v.state.provider,
                "task_types": [str(t) for t in v.task_types],
                "limit": v.state.limit or None,
                "leases": v.state.leases,
                "rate": v.state.rate,
                "tokens": None if v.state.tokens is None else round(v.state.tokens, 2),
                "paused_seconds": v.state.paused_seconds,
                "paused_until": v.state.paused_until,
                "blocked": v.blocked,
                "waiting_on_cap": v.waiting_on_cap,
            }
            for v in s.providers
        ],
        "users": [
            {
                "task_type": u.task_type,
                "user_id": u.user_id,
                "running": u.running,
                "parked": u.parked,
            }
            for u in s.users
        ],
    }


def _paused(view: ProviderView) -> str:
    if not view.state.paused_seconds:
        return "-"
    return f"{timestamp(view.state.paused_until)} (in {duration(view.state.paused_seconds)})"


def render_scheduling(s: Scheduling) -> str:
    if s.providers:
        rows = [
            [
                v.state.provider,
                v.state.limit or "-",
                v.state.leases,
                v.state.rate or "-",
                "-" if v.state.tokens is None else round(v.state.tokens, 1),
                _paused(v),
                v.waiting_on_cap,
            ]
            for v in s.providers
        ]
        columns = ["PROVIDER", "LIMIT", "LEASES", "RATE", "TOKENS", "PAUSED UNTIL"]
        text = table([*columns, "WAITING ON CAP"], rows)
    else:
        text = "no provider limits (PROVIDER_LIMITS, PROVIDER_RATES)"
    if s.users:
        rows = [[u.task_type, u.user_id, u.running, u.parked] for u in s.users]
        text += "\n\n" + table(["TYPE", "USER", "RUNNING", "PARKED"], rows)
    return text
