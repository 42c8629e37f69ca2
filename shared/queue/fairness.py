"""Per-user fairness: the cap per type, the keys a task's end updates, the sweep, the view.

A user holds at most USER_MAX_IN_FLIGHT running tasks of a type. The read step parks the
entries of a user at the cap in that user's list (and reads on), and the finish and fail
steps of the user's tasks move the oldest parked one back onto its stream; see `lua_fair.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shared.config import Settings
from shared.queue.connection import RedisClient
from shared.queue.keys import Keys, Priority
from shared.queue.records import Malformed, TaskEntry
from shared.queue.scripts import Scripts
from shared.queue.steps import Sweep, UserSlot
from shared.tasks import TaskType

# Users looked at by one sweep: those with the most parked tasks, and the busiest.
SWEEP_USERS = 20
# lua_fair.fair_who: Lua's %w and %d are ASCII in Redis.
_TASK_ID = re.compile(rb'\{"task_id":"([A-Za-z0-9_.:-]+)"')
_USER_ID = re.compile(rb'"user_id":(-?[0-9]+)')


@dataclass(frozen=True, slots=True)
class UserLoad:
    """One user's running and parked tasks of a type."""

    task_type: TaskType
    user_id: str
    running: int
    parked: int


def user_cap(settings: Settings, task_type: TaskType) -> int:
    """Running tasks one user may hold of the type; 0 means no cap."""
    return settings.user_max_in_flight.get(task_type.value, 0)


def attributed(raw: bytes | None) -> tuple[str, str] | None:
    """The task id and user an entry's text counts for, read exactly as the read step reads
    them (`fair_who` in lua_fair.py): a task's end must release what its read counted, also
    for an entry that does not parse."""
    if raw is None:
        return None
    task_id, user = _TASK_ID.match(raw), _USER_ID.search(raw)
    if task_id is None or user is None:
        return None
    return task_id[1].decode(), user[1].decode()


def user_slot(keys: Keys, settings: Settings, entry: TaskEntry | Malformed) -> UserSlot | None:
    """What the finish or fail step of this entry updates; None when its type has no cap or
    the entry counts for nobody."""
    task_type = entry.task_type
    cap = user_cap(settings, task_type)
    if not cap:
        return None
    raw = entry.raw if isinstance(entry, TaskEntry) else entry.fields.get(b"task")
    who = attributed(raw)
    if who is None:
        return None
    task_id, user_id = who
    return UserSlot(
        normal=keys.stream(task_type),
        high=keys.stream(task_type, Priority.HIGH),
        users_running=keys.users_running(task_type),
        users_parked=keys.users_parked(task_type),
        running=keys.user_running(task_type, user_id),
        parked=keys.user_parked(task_type, user_id),
        user_id=user_id,
        cap=cap,
        records=keys.record_prefix(task_type),
        task_id=task_id,
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def sweep(
    redis: RedisClient, scripts: Scripts, keys: Keys, task_type: TaskType, cap: int
) -> int:
    """Repair the users with parked tasks and the busiest ones; returns tasks moved back.

    Running ids whose task ended without a release are dropped and parked tasks move back
    while there is room, so nothing stays parked for good, also after USER_MAX_IN_FLIGHT
    changed or was removed (`cap` 0 moves every parked task back).
    """
    pipe = redis.pipeline(transaction=False)
    pipe.zrevrange(keys.users_parked(task_type), 0, SWEEP_USERS - 1)
    pipe.zrevrange(keys.users_running(task_type), 0, SWEEP_USERS - 1)
    parked, busy = await pipe.execute()
    users = list(dict.fromkeys(_text(u) for u in [*parked, *busy]))
    if not users:
        return 0
    step = Sweep(
        normal=keys.stream(task_type),
        high=keys.stream(task_type, Priority.HIGH),
        users_running=keys.users_running(task_type),
        users_parked=keys.users_parked(task_type),
        users=[
            (u, keys.user_running(task_type, u), keys.user_parked(task_type, u)) for u in users
        ],
        cap=cap,
        records=keys.record_prefix(task_type),
    )
    return int(await scripts.run(step))


async def parked_count(redis: RedisClient, keys: Keys, task_type: TaskType) -> int:
    """Tasks of the type parked while their users are at the cap."""
    rows: list[Any] = await redis.zrange(keys.users_parked(task_type), 0, -1, withscores=True)
    return int(sum(score for _, score in rows))


async def top_users(
    redis: RedisClient, keys: Keys, task_type: TaskType, count: int = 5
) -> list[UserLoad]:
    """The users with the most running tasks of the type, then those with parked ones."""
    pipe = redis.pipeline(transaction=False)
    pipe.zrevrange(keys.users_running(task_type), 0, count - 1, withscores=True)
    pipe.zrevrange(keys.users_parked(task_type), 0, count - 1, withscores=True)
    running, parked = await pipe.execute()
    loads: dict[str, list[int]] = {}
    for user, n in running:
        loads.setdefault(_text(user), [0, 0])[0] = int(n)
    for user, n in parked:
        loads.setdefault(_text(user), [0, 0])[1] = int(n)
    rows = [UserLoad(task_type, u, r, p) for u, (r, p) in loads.items()]
    rows.sort(key=lambda row: (-row.running, -row.parked, row.user_id))
    return rows[:count]
