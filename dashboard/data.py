"""What the dashboard shows, read from Redis: per-type depth, completions, consumers, dead letters.

Read-only views built on shared.queue (inspect, dead_letters, records); nothing here writes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.exceptions import ResponseError

from scripts.liveness import depth_with_liveness
from shared.queue import QueueDepth, QueueService
from shared.queue.connection import RedisClient
from shared.queue.dead_letters import DeadEntry, list_dead
from shared.queue.inspect import ConsumerInfo
from shared.queue.keys import GROUP, Keys, Priority
from shared.tasks import TaskType

MINUTES = 60
CURRENT_TASKS = 5
DEAD_PAGE = 100


@dataclass(slots=True)
class TypeOverview:
    """One task type: its depth (with consumers) and tasks finished per minute, oldest first."""

    depth: QueueDepth
    per_minute: list[int]

    @property
    def alive(self) -> int:
        return sum(1 for c in self.depth.consumers if c.alive)

    @property
    def last_hour(self) -> int:
        return sum(self.per_minute)


@dataclass(slots=True)
class PendingTask:
    entry_id: str
    task_id: str | None
    idle_seconds: float
    deliveries: int


@dataclass(slots=True)
class ConsumerRow:
    task_type: TaskType
    info: ConsumerInfo
    current: list[PendingTask] = field(default_factory=list)


@dataclass(slots=True)
class DeadPage:
    task_type: TaskType
    total: int
    entries: list[DeadEntry]  # newest first, at most DEAD_PAGE


async def completions_per_minute(
    redis: RedisClient, keys: Keys, task_type: TaskType, now: float, minutes: int = MINUTES
) -> list[int]:
    """Tasks finished in each of the last `minutes` minutes (the current one last); 0 if none."""
    current = int(now // 60)
    wanted = [str(minute) for minute in range(current - minutes + 1, current + 1)]
    counts: list[Any] = await redis.hmget(keys.completions(task_type), wanted)
    return [int(count) if count is not None else 0 for count in counts]


async def overview(queue: QueueService) -> list[TypeOverview]:
    now = time.time()
    return [
        TypeOverview(
            await depth_with_liveness(queue, task_type),
            await completions_per_minute(queue.redis, queue.keys, task_type, now),
        )
        for task_type in TaskType
    ]


def _task_id(fields: dict[bytes, bytes]) -> str | None:
    try:
        task = orjson.loads(fields[b"task"])
        return str(task["task_id"])
    except (KeyError, TypeError, orjson.JSONDecodeError):
        return None


async def current_tasks(
    redis: RedisClient, keys: Keys, task_type: TaskType, consumer: str, limit: int = CURRENT_TASKS
) -> list[PendingTask]:
    """The first entries in a consumer's pending lists (high priority first), with the task
    id each one carries."""
    tasks: list[PendingTask] = []
    for priority in (Priority.HIGH, Priority.NORMAL):
        if len(tasks) < limit:
            stream = keys.stream(task_type, priority)
            tasks += await _pending_in(redis, stream, consumer, limit - len(tasks))
    return tasks


async def _pending_in(
    redis: RedisClient, stream: str, consumer: str, limit: int
) -> list[PendingTask]:
    try:
        pending: Any = await redis.xpending_range(
            stream, GROUP, min="-", max="+", count=limit, consumername=consumer
        )
    except ResponseError:  # a stream or group not made yet: nothing pending there
        return []
    if not pending:
        return []
    pipe = redis.pipeline(transaction=False)
    for item in pending:
        pipe.xrange(stream, min=item["message_id"], max=item["message_id"])
    tasks: list[PendingTask] = []
    for item, found in zip(pending, await pipe.execute(), strict=True):
        entry_id = item["message_id"].decode()
        task_id = _task_id(found[0][1]) if found else None
        idle = int(item["time_since_delivered"]) / 1000
        tasks.append(PendingTask(entry_id, task_id, idle, int(item["times_delivered"])))
    return tasks


async def consumers(queue: QueueService) -> list[ConsumerRow]:
    rows: list[ConsumerRow] = []
    for task_type in TaskType:
        depth = await depth_with_liveness(queue, task_type)
        for info in depth.consumers:
            row = ConsumerRow(task_type, info)
            if info.pending:
                row.current = await current_tasks(queue.redis, queue.keys, task_type, info.name)
            rows.append(row)
    return rows


async def dead_page(queue: QueueService, task_type: TaskType, limit: int = DEAD_PAGE) -> DeadPage:
    """The newest dead entries of a type, parsed by shared.queue.dead_letters."""
    dead = queue.keys.dead(task_type)
    total = int(await queue.redis.xlen(dead))
    newest: Any = await queue.redis.xrevrange(dead, count=limit)
    ids = [entry_id.decode() for entry_id, _ in newest]
    entries = await list_dead(queue.redis, queue.keys, task_type, ids) if ids else []
    return DeadPage(task_type, total, entries)


async def dead_counts(queue: QueueService) -> dict[TaskType, int]:
    pipe = queue.redis.pipeline(transaction=False)
    for task_type in TaskType:
        pipe.xlen(queue.keys.dead(task_type))
    return dict(zip(TaskType, (int(n) for n in await pipe.execute()), strict=True))
