"""Read-only views of the queue: depth (waiting vs in flight), consumers, dead letters."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from shared.queue.connection import RedisClient
from shared.queue.keys import GROUP, Keys, Priority
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
    """Per type, over both streams: `waiting` not yet delivered (with the tasks parked while
    their users are at the cap), `in_flight` delivered and not acked."""

    task_type: TaskType
    waiting: int
    in_flight: int
    dead: int
    stream_length: int
    oldest_waiting_seconds: float | None
    oldest_in_flight_seconds: float | None
    consumers: list[ConsumerInfo] = field(default_factory=list)
    # Of `waiting`: in the high-priority stream, and parked in their users' lists.
    waiting_high: int = 0
    parked: int = 0

    @property
    def unfinished(self) -> int:
        return self.waiting + self.in_flight


def _id_age(entry_id: bytes | str, now: float) -> float:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return max(0.0, now - int(raw.split("-")[0]) / 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(slots=True)
class _StreamDepth:
    length: int = 0
    waiting: int = 0
    in_flight: int = 0
    oldest_waiting: float | None = None
    oldest_in_flight: float | None = None
    group: bool = False


def _oldest(*ages: float | None) -> float | None:
    known = [age for age in ages if age is not None]
    return max(known) if known else None


async def _stream_depth(redis: RedisClient, stream: str, now: float) -> _StreamDepth:
    pipe = redis.pipeline(transaction=False)
    pipe.xlen(stream)
    pipe.xinfo_groups(stream)
    pipe.xpending_range(stream, GROUP, min="-", max="+", count=1)
    try:
        length, groups, oldest_pending = await pipe.execute()
    except ResponseError:  # no stream or no group yet: nothing queued
        return _StreamDepth()
    group = next((g for g in groups if _text(g["name"]) == GROUP), None)
    in_flight = int(group["pending"]) if group else 0
    # Every acked entry is deleted, so the stream holds exactly the waiting and in-flight ones.
    # The group's lag would say the same, but Redis cannot keep it after undelivered deletions.
    depth = _StreamDepth(length, max(0, length - in_flight), in_flight, group=group is not None)
    if group and depth.waiting:
        after = f"({_text(group['last-delivered-id'])}"
        first: Any = await redis.xrange(stream, min=after, count=1)
        depth.oldest_waiting = _id_age(first[0][0], now) if first else None
    if oldest_pending:
        depth.oldest_in_flight = _id_age(oldest_pending[0]["message_id"], now)
    return depth


async def queue_depth(
    redis: RedisClient,
    keys: Keys,
    task_type: TaskType,
    with_consumers: bool = False,
    dead_after: float = 3.0,
) -> QueueDepth:
    """Waiting (not yet delivered, or parked) and in flight (delivered, not acked) counts of
    one type, over its normal and high-priority streams."""
    now = time.time()
    normal = await _stream_depth(redis, keys.stream(task_type), now)
    high = await _stream_depth(redis, keys.stream(task_type, Priority.HIGH), now)
    pipe = redis.pipeline(transaction=False)
    pipe.xlen(keys.dead(task_type))
    pipe.zrange(keys.users_parked(task_type), 0, -1, withscores=True)
    dead, parked_rows = await pipe.execute()
    parked = int(sum(score for _, score in parked_rows))
    depth = QueueDepth(
        task_type,
        normal.waiting + high.waiting + parked,
        normal.in_flight + high.in_flight,
        dead,
        normal.length + high.length,
        _oldest(normal.oldest_waiting, high.oldest_waiting),
        _oldest(normal.oldest_in_flight, high.oldest_in_flight),
        waiting_high=high.waiting,
        parked=parked,
    )
    if with_consumers and (normal.group or high.group):
        depth.consumers = await _consumers(redis, keys, task_type, dead_after)
    return depth


async def _consumers(
    redis: RedisClient, keys: Keys, task_type: TaskType, dead_after: float
) -> list[ConsumerInfo]:
    """Each consumer once, its pending entries summed over both streams."""
    beats = await heartbeats(redis, keys, task_type)
    found: dict[str, ConsumerInfo] = {}
    for stream in keys.streams(task_type).values():
        try:
            rows = await redis.xinfo_consumers(stream, GROUP)
        except ResponseError:
            continue
        for c in rows:
            name = _text(c["name"])
            idle = int(c["idle"]) / 1000
            if name in found:
                found[name].pending += int(c["pending"])
                found[name].idle_seconds = min(found[name].idle_seconds, idle)
                continue
            age = beats.get(name)
            found[name] = ConsumerInfo(name, int(c["pending"]), idle, age)
            found[name].alive = age is not None and age < dead_after
    return list(found.values())


async def heartbeats(redis: RedisClient, keys: Keys, task_type: TaskType) -> dict[str, float]:
    """Seconds since each consumer of the type last sent its heartbeat."""
    raw: dict[Any, Any] = await redis.hgetall(keys.alive(task_type))
    now_ms = time.time() * 1000
    return {_text(k): max(0.0, (now_ms - float(v)) / 1000) for k, v in raw.items()}
