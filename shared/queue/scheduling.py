"""Read-only views of scheduling: each gated provider's leases, tokens and pause, the tasks
waiting on it, and the users with the most running and parked tasks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.config import Settings
from shared.queue.connection import RedisClient
from shared.queue.fairness import UserLoad, top_users
from shared.queue.inspect import QueueDepth
from shared.queue.keys import Keys
from shared.queue.leases import ProviderLimit, ProviderState, provider_state
from shared.tasks import TaskType


@dataclass(frozen=True, slots=True)
class ProviderView:
    """A provider's limits in use, and the waiting tasks of its types while it admits none."""

    state: ProviderState
    task_types: list[TaskType]
    waiting_on_cap: int

    @property
    def blocked(self) -> bool:
        """No new call may start now: at the cap, paused, or out of tokens."""
        s = self.state
        at_cap = 0 < s.limit <= s.leases
        out_of_tokens = s.tokens is not None and s.tokens < 1
        return at_cap or s.paused_seconds > 0 or out_of_tokens


async def provider_views(
    redis: RedisClient,
    keys: Keys,
    settings: Settings,
    types_of: Mapping[str, Sequence[TaskType]],
    depths: Mapping[TaskType, QueueDepth],
) -> list[ProviderView]:
    """One view per gated provider; `types_of` names the types that call each provider."""
    views = []
    for provider in sorted(settings.gated_providers):
        limit = ProviderLimit.from_settings(settings, provider)
        if limit is None:
            continue
        state = await provider_state(redis, keys, limit)
        task_types = list(types_of.get(provider, ()))
        view = ProviderView(state, task_types, 0)
        if view.blocked:
            waiting = sum(depths[t].waiting - depths[t].parked for t in task_types if t in depths)
            view = ProviderView(state, task_types, waiting)
        views.append(view)
    return views


async def busiest_users(
    redis: RedisClient, keys: Keys, task_types: Sequence[TaskType], count: int = 5
) -> list[UserLoad]:
    """Per type, the users with the most running tasks, then those with parked ones."""
    return [row for t in task_types for row in await top_users(redis, keys, t, count)]
