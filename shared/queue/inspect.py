"""Read-only views of the queue: depth (waiting vs in flight), consumers, dead letters."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from shared.queue.connection import RedisClient
from shared.queue.keys import GROUP, Keys
from shared.tasks import TaskType


@dataclass(slots=True)
class ConsumerInfo:
    name: str
    pending: int
    idle_seconds: float
    # Seconds since the consumer's last heartbeat; None when it never sent one.
    heartbeat_age: float | None = None
    alive: bool | None = None


@dataclass(slots=True)
class QueueDepth:
    """Per type: `waiting` not yet delivered, `in_flight` delivered and not acked."""

    task_type: TaskType
    waiting: int
    in_flight: int
    dead: int
    stream_length: int
    oldest_waiting_seconds: float | None
    oldest_in_flight_seconds: float | None
    consumers: list[ConsumerInfo] = field(default_factory=list)

    @property
    def unfinished(self) -> int:
        return self.waiting + self.in_flight


def _id_age(entry_id: bytes | str, now: float) -> float:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return max(0.0, now - int(raw.split("-")[0]) / 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def queue_depth(
    redis: RedisClient,
    keys: Keys,
    task_type: TaskType,
    with_consumers: bool = False,
    dead_after: float = 3.0,
) -> QueueDepth:
    """Waiting (not yet delivered) and in flight (delivered, not acked) counts of one type."""
    stream = keys.stream(task_type)
    pipe = redis.pipeline(transaction=False)
    pipe.xlen(stream)
    pipe.xlen(keys.dead(task_type))
    pipe.xinfo_groups(stream)
    pipe.xpending_range(stream, GROUP, min="-", max="+", count=1)
    try:
        length, dead, groups, oldest_pending = await pipe.execute()
    except ResponseError:  # no stream or no group yet: nothing queued
        return QueueDepth(task_type, 0, 0, await redis.xlen(keys.dead(task_type)), 0, None, None)
    group = next((g for g in groups if _text(g["name"]) == GROUP), None)
    in_flight = int(group["pending"]) if group else 0
    # Every acked entry is deleted, so the stream holds exactly the waiting and in-flight ones.
    # The group's lag would say the same, but Redis cannot keep it after undelivered deletions.
    waiting = max(0, length - in_flight)
    now = time.time()
    oldest_waiting = None
    if group and waiting:
        after = f"({_text(group['last-delivered-id'])}"
        first: Any = await redis.xrange(stream, min=after, count=1)
        oldest_waiting = _id_age(first[0][0], now) if first else None
    oldest_in_flight = None
    if oldest_pending:
        oldest_in_flight = _id_age(oldest_pending[0]["message_id"], now)
    depth = QueueDepth(
        task_type, waiting, in_flight, dead, length, oldest_waiting, oldest_in_flight
    )
    if with_consumers and group:
        beats = await heartbeats(redis, keys, task_type)
        depth.consumers = []
        for c in await redis.xinfo_consumers(stream, GROUP):
            name = _text(c["name"])
            age = beats.get(name)
            info = ConsumerInfo(name, int(c["pending"]), int(c["idle"]) / 1000, age)
            info.alive = age is not None and age < dead_after
            depth.consumers.append(info)
    return depth


async def heartbeats(redis: RedisClient, keys: Keys, task_type: TaskType) -> dict[str, float]:
    """Seconds since each consumer of the type last sent its heartbeat."""
    raw: dict[Any, Any] = await redis.hgetall(keys.alive(task_type))
    now_ms = time.time() * 1000
    return {_text(k): max(0.0, (now_ms - float(v)) / 1000) for k, v in raw.items()}
