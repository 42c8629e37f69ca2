"""Consumer-side stream primitives: read, start, finish, claim, renew, hand back, dead-letter."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.config import Settings
from shared.queue.keys import GROUP, Keys
from shared.queue.records import Delivery, Malformed, completion_message, parse_entry
from shared.queue.scripts import Scripts
from shared.tasks import TaskStatus, TaskType

log = structlog.get_logger(__name__)

# Completion messages above this size carry only the task id; the waiter reads the record.
MESSAGE_LIMIT = 16 * 1024
DEAD_LETTER_MAXLEN = 100_000

Entry = Delivery | Malformed


@dataclass(slots=True)
class Outcome:
    """How one delivery ended: a result, a retryable failure, or a final failure."""

    delivery: Delivery
    status: TaskStatus
    attempts: int
    started_at: float
    result_json: bytes | None = None
    error: str | None = None
    dead: bool = False
    finished_at: float = field(default_factory=time.time)


async def ensure_group(redis: Redis, keys: Keys, task_type: TaskType) -> None:
    """Create the type's stream and group if missing (idempotent)."""
    try:
        await redis.xgroup_create(keys.stream(task_type), GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class StreamConsumer:
    """The stream operations of one named consumer; one instance per consumer process."""

    def __init__(self, redis: Redis, scripts: Scripts, settings: Settings, name: str) -> None:
        self.redis = redis
        self.name = name
        self._scripts = scripts
        self._keys = Keys.from_settings(settings)
        self._settings = settings
        # XAUTOCLAIM cursors survive between calls so stale entries behind many healthy
        # in-flight ones are still reached.
        self._cursors: dict[TaskType, str] = dict.fromkeys(TaskType, "0-0")

    def _parse(self, task_type: TaskType, entries: Sequence[Any]) -> list[Entry]:
        limit = self._settings.max_payload_bytes
        return [parse_entry(task_type, eid, fields, limit) for eid, fields in entries if fields]

    async def _recover_group(self, task_type: TaskType, exc: ResponseError) -> None:
        if "NOGROUP" not in str(exc):
            raise exc
        log.error("consumer_group_missing", task_type=task_type, action="recreated")
        await ensure_group(self.redis, self._keys, task_type)

    async def read(self, task_type: TaskType, count: int, block_ms: int) -> list[Entry]:
        """XREADGROUP at most `count` new entries (the caller's free slots)."""
        if count <= 0:
            return []
        stream = self._keys.stream(task_type)
        try:
            reply: Any = await self.redis.xreadgroup(
                GROUP, self.name, {stream: ">"}, count=count, block=block_ms or None
            )
        except ResponseError as exc:
            await self._recover_group(task_type, exc)
            return []
        if not reply:
            return []
        return self._parse(task_type, reply[0][1])

    async def claim_idle(self, task_type: TaskType, count: int, min_idle_ms: int) -> list[Entry]:
        """Take over entries idle longer than `min_idle_ms` in any consumer's pending list."""
        if count <= 0:
            return []
        stream = self._keys.stream(task_type)
        args: list[Any] = [GROUP, self.name, min_idle_ms, self._cursors[task_type], count]
        try:
            cursor, entries = await self._scripts.run("claim", [stream], args)
        except ResponseError as exc:
            await self._recover_group(task_type, exc)
            return []
        self._cursors[task_type] = cursor.decode()
        # Lua hands back entry fields as flat lists.
        pairs = [(eid, dict(zip(f[::2], f[1::2], strict=True))) for eid, f in entries if f]
        return self._parse(task_type, pairs)

    async def start(self, deliveries: Sequence[Delivery], started_at: float) -> list[int]:
        """Mark tasks processing and count the attempt; -1 marks one that already finished."""
        if not deliveries:
            return []
        task_type = deliveries[0].task_type
        keys = [self._keys.record(task_type, d.task.task_id) for d in deliveries]
        args: list[Any] = [self.name, repr(started_at), self._settings.redis_task_ttl]
        args += [d.raw for d in deliveries]
        return [int(n) for n in await self._scripts.run("start", keys, args)]

    async def finish(self, outcomes: Sequence[Outcome], announce: bool = True) -> list[bool]:
        """Store results, ack, delete and announce, one Lua step per task, one round trip.

        Returns per outcome whether it wrote the final state (False: a duplicate whose task
        had already finished, so nothing was overwritten or announced again). With
        `announce=False` dead letters are not announced; the caller calls `announce` later.
        """
        if not outcomes:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for outcome in outcomes:
            self._queue_finish(pipe, outcome, announce)
        return [bool(n) for n in await self._scripts.execute(pipe)]

    async def announce(self, outcomes: Sequence[Outcome]) -> None:
        """Publish the completion of outcomes finished with `announce=False`."""
        pipe = self.redis.pipeline(transaction=False)
        for o in outcomes:
            pipe.publish(self._keys.channel(o.delivery.task_type), self._message(o))
        if outcomes:
            await pipe.execute()

    def _message(self, o: Outcome) -> bytes:
        state = {
            "status": o.status,
            "attempts": o.attempts,
            "consumer": self.name,
            "started_at": o.started_at,
            "finished_at": o.finished_at,
            "error": o.error,
        }
        return completion_message(o.delivery, state, o.result_json, MESSAGE_LIMIT)

    def _queue_finish(self, pipe: Any, o: Outcome, announce: bool) -> None:
        d, keys, ttl = o.delivery, self._keys, self._settings.redis_result_ttl
        message = self._message(o)
        channel = keys.channel(d.task_type) if announce else ""
        record = keys.record(d.task_type, d.task.task_id)
        stream = keys.stream(d.task_type)
        if o.dead:
            args: list[Any] = [GROUP, d.entry_id, o.error or "failed", repr(o.finished_at), ttl]
            args += [channel, message, d.raw, self.name, DEAD_LETTER_MAXLEN]
            self._scripts.queue(
                pipe, "dead_letter", [stream, record, keys.dead(d.task_type)], args
            )
            return
        args = [GROUP, d.entry_id, o.status, repr(o.finished_at), o.result_json or b""]
        args += [o.error or "", ttl, channel, message, d.raw]
        self._scripts.queue(pipe, "finish", [stream, record], args)

    async def dead_letter_malformed(self, bad: Malformed) -> None:
        """Move an entry that cannot be parsed to the dead-letter stream and ack it."""
        stream, dead = self._keys.stream(bad.task_type), self._keys.dead(bad.task_type)
        args: list[Any] = [GROUP, bad.entry_id, bad.reason, repr(time.time()), self.name]
        args.append(DEAD_LETTER_MAXLEN)
        for name, value in bad.fields.items():
            args += [b"orig_" + name, value]
        await self._scripts.run("dead_letter_raw", [stream, dead], args)

    async def renew(self, task_type: TaskType, entry_ids: Sequence[str]) -> list[str]:
        """Reset the idle time of entries still ours; return the ids another consumer took."""
        if not entry_ids:
            return []
        args = [GROUP, self.name, *entry_ids]
        try:
            lost = await self._scripts.run("renew", [self._keys.stream(task_type)], args)
        except ResponseError as exc:
            await self._recover_group(task_type, exc)
            return list(entry_ids)
        return [i.decode() for i in lost]

    async def hand_back(self, deliveries: Sequence[Delivery]) -> int:
        """Give unfinished entries back to the group at once (shutdown); returns how many."""
        pipe = self.redis.pipeline(transaction=False)
        for d in deliveries:
            keys = [self._keys.stream(d.task_type), self._keys.record(d.task_type, d.task.task_id)]
            self._scripts.queue(pipe, "requeue", keys, [GROUP, d.entry_id, self.name, 0, d.raw])
        results = await self._scripts.execute(pipe) if deliveries else []
        return sum(1 for r in results if r)
