"""Reading a type's entries for one named consumer: new ones (high priority first, users at
their cap parked), idle or dead consumers' ones taken over, and a dead namesake's adopted.

Each task type has two streams, normal and high priority, under one group name; every entry
read names its own stream (`TaskEntry.priority`).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from redis.exceptions import ResponseError

from shared.config import Settings
from shared.queue.connection import RedisClient
from shared.queue.endings import Entry
from shared.queue.fairness import user_cap
from shared.queue.keys import GROUP, Keys, Priority
from shared.queue.records import Malformed, TaskEntry, parse_entry
from shared.queue.recovery_steps import Claim, Requeue
from shared.queue.scripts import Scripts
from shared.queue.steps import Read
from shared.tasks import TaskType

log = structlog.get_logger(__name__)

# A read repeated after a lost reply finds its first answer this long.
READ_MEMO_MS = 60_000
# Entries one read may look at beyond its count, parking those of users at their cap.
READ_EXAMINE = 200


@dataclass(slots=True)
class ReadBatch:
    """New entries, and when there were none, each stream's last delivered id (to wait on)."""

    entries: list[Entry]
    last_ids: dict[str, Any] | None = None
    recovered: bool = False  # the group was missing and is made again: nothing to wait for


async def ensure_group(redis: RedisClient, keys: Keys, task_type: TaskType) -> None:
    """Create the type's two streams and their group if missing (idempotent)."""
    for stream in keys.streams(task_type).values():
        try:
            await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def _lost_group(exc: ResponseError) -> bool:
    return "NOGROUP" in str(exc) or "no such key" in str(exc)


class EntryReads:
    """The reads of one named consumer (its other steps: `consume.StreamConsumer`)."""

    def __init__(
        self, redis: RedisClient, scripts: Scripts, settings: Settings, name: str
    ) -> None:
        self.redis = redis
        self.name = name
        self._scripts = scripts
        self._keys = Keys.from_settings(settings)
        self._settings = settings
        # XAUTOCLAIM cursors survive between calls so stale entries behind many healthy
        # in-flight ones are still reached.
        self._cursors: dict[tuple[TaskType, Priority], str] = {
            (t, p): "0-0" for t in TaskType for p in Priority
        }

    def _parse(
        self,
        task_type: TaskType,
        entries: Sequence[Any],
        priority: Priority = Priority.NORMAL,
        *,
        new: bool = False,
    ) -> list[Entry]:
        """Parse entries; `new`: read with '>' (never delivered before), not claimed."""
        limit = self._settings.max_payload_bytes
        return [
            parse_entry(task_type, eid, fields, limit, priority, new=new)
            for eid, fields in entries
            if fields
        ]

    def _other(self, task_type: TaskType, priority: Priority) -> str:
        other = Priority.NORMAL if priority is Priority.HIGH else Priority.HIGH
        return self._keys.stream(task_type, other)

    async def _recover_group(self, task_type: TaskType, exc: ResponseError) -> None:
        if not _lost_group(exc):
            raise exc
        log.error("consumer_group_missing", task_type=task_type, action="recreated")
        await ensure_group(self.redis, self._keys, task_type)

    async def take(
        self, task_type: TaskType, count: int, normal_first: int = 0, *, waits: bool = True
    ) -> ReadBatch:
        """Read at most `count` new entries without blocking, high priority first except for
        the first `normal_first` slots; entries of users at their cap are parked meanwhile.
        With `waits`, an empty batch carries the last delivered ids to `wait_for_new` on.

        Safe to repeat: a repeat after a lost reply answers with the same entries.
        """
        if count <= 0:
            return ReadBatch([])
        streams = self._keys.streams(task_type)
        step = Read(
            normal=streams[Priority.NORMAL],
            high=streams[Priority.HIGH],
            memo=self._keys.read_memo(task_type, self.name),
            users_running=self._keys.users_running(task_type),
            users_parked=self._keys.users_parked(task_type),
            group=GROUP,
            consumer=self.name,
            count=count,
            normal_first=normal_first,
            read_id=uuid.uuid4().hex[:12],
            memo_ttl_ms=READ_MEMO_MS,
            user_cap=user_cap(self._settings, task_type),
            records=self._keys.record_prefix(task_type),
            users=self._keys.user_prefix(task_type),
            examine=READ_EXAMINE + count,
            want_last_ids=waits,
        )
        try:
            reply = await self._scripts.run(step)
        except ResponseError as exc:
            await self._recover_group(task_type, exc)
            return ReadBatch([], recovered=True)
        entries: list[Entry] = []
        for flag, eid, flat in reply[0]:
            priority = Priority.HIGH if flag == b"h" else Priority.NORMAL
            fields = dict(zip(flat[::2], flat[1::2], strict=False))
            entries += self._parse(task_type, [(eid, fields)], priority, new=True)
        if len(reply) < 3:
            return ReadBatch(entries)
        last = {streams[Priority.NORMAL]: reply[1], streams[Priority.HIGH]: reply[2]}
        return ReadBatch(entries, last)

    async def read(
        self, task_type: TaskType, count: int, block_ms: int, normal_first: int = 0
    ) -> list[Entry]:
        """At most `count` new entries (the caller's free slots), waiting up to `block_ms`."""
        if count <= 0:
            return []
        fair = bool(user_cap(self._settings, task_type))
        batch = await self.take(task_type, count, normal_first, waits=fair)
        if batch.entries or not block_ms or batch.recovered:
            return batch.entries
        if batch.last_ids is not None:
            # A blocking XREADGROUP would skip the parking of users at their cap: wait for
            # new entries without taking them, then read through the read step.
            await self.wait_for_new(batch.last_ids, block_ms)
            return (await self.take(task_type, count, normal_first)).entries
        return await self.read_blocking(task_type, count, block_ms)

    async def wait_for_new(self, last_ids: dict[str, Any], block_ms: int) -> None:
        """Block until either stream has an entry past its last delivered id; takes nothing."""
        streams: Any = last_ids
        await self.redis.xread(streams, count=1, block=block_ms)

    async def read_blocking(
        self, task_type: TaskType, count: int, block_ms: int, limit: int | None = None
    ) -> list[Entry]:
        """XREADGROUP both streams, waiting up to `block_ms`: up to `count` entries from each,
        at most `limit` (default `count`) kept; a surplus goes back at once."""
        limit = count if limit is None else limit
        streams = self._keys.streams(task_type)
        try:
            reply: Any = await self.redis.xreadgroup(
                GROUP,
                self.name,
                {streams[Priority.HIGH]: ">", streams[Priority.NORMAL]: ">"},
                count=count,
                block=block_ms,
            )
        except ResponseError as exc:
            await self._recover_group(task_type, exc)
            return []
        high = _text(streams[Priority.HIGH])
        entries = [
            e
            for stream, rows in reply or []
            for e in self._parse(
                task_type,
                rows,
                Priority.HIGH if _text(stream) == high else Priority.NORMAL,
                new=True,
            )
        ]
        # COUNT applies per stream: when both got entries during the wait, the surplus goes
        # back at once rather than waiting here for a slot.
        surplus = [e for e in entries[limit:] if isinstance(e, TaskEntry)]
        if surplus:
            await self.requeue(surplus)
        return entries[:limit] + [e for e in entries[limit:] if isinstance(e, Malformed)]

    async def claim(self, task_type: TaskType, count: int, min_idle_ms: int) -> list[Entry]:
        """Take over the entries of dead consumers at once, else entries idle `min_idle_ms`,
        high priority first.

        A consumer is dead when its heartbeat is older than CONSUMER_DEAD_SECONDS; a dead
        consumer that owns nothing is deleted in the same step.
        """
        entries: list[Entry] = []
        for priority in (Priority.HIGH, Priority.NORMAL):
            if count - len(entries) > 0:
                entries += await self._claim(
                    task_type, priority, count - len(entries), min_idle_ms
                )
        return entries

    async def _claim(
        self, task_type: TaskType, priority: Priority, count: int, min_idle_ms: int
    ) -> list[Entry]:
        step = Claim(
            stream=self._keys.stream(task_type, priority),
            alive=self._keys.alive(task_type),
            group=GROUP,
            consumer=self.name,
            min_idle_ms=min_idle_ms,
            cursor=self._cursors[task_type, priority],
            count=count,
            dead_ms=int(self._settings.consumer_dead_seconds * 1000),
            other=self._other(task_type, priority),
        )
        try:
            cursor, entries, forgotten = await self._scripts.run(step)
        except ResponseError as exc:
            await self._recover_group(task_type, exc)
            return []
        self._cursors[task_type, priority] = cursor.decode()
        for name in forgotten:
            log.info("dead_consumer_removed", task_type=task_type, name=name.decode())
        # Lua hands back entry fields as flat lists.
        pairs = [(eid, dict(zip(f[::2], f[1::2], strict=False))) for eid, f in entries if f]
        return self._parse(task_type, pairs, priority)

    async def adopt(
        self,
        task_type: TaskType,
        count: int,
        running: Collection[tuple[Priority, str]] = (),
    ) -> list[Entry]:
        """At start: take back entries still pending under this consumer's own name.

        They belong to an earlier process with the same name that died; its heartbeat now
        looks alive again (it is ours), so no peer would ever take them by liveness. Entries
        in `running` are this process's own work, never taken twice.
        """
        entries: list[Entry] = []
        for priority, stream in self._keys.streams(task_type).items():
            want = count - len(entries)
            if want <= 0:
                break
            try:
                rows = await self.redis.xpending_range(
                    stream, GROUP, "-", "+", want + len(running), self.name
                )
            except ResponseError as exc:
                await self._recover_group(task_type, exc)
                return entries
            ids: list[Any] = [
                row["message_id"]
                for row in rows
                if (priority, _text(row["message_id"])) not in running
            ][:want]
            if ids:
                claimed: Any = await self.redis.xclaim(stream, GROUP, self.name, 0, ids)
                pairs = [(eid, fields) for eid, fields in claimed if fields]
                entries += self._parse(task_type, pairs, priority)
        return entries

    async def requeue(self, entries: Sequence[TaskEntry]) -> int:
        """Give unfinished entries back to the group at once (shutdown); returns how many.

        A task of a type with a user cap keeps its place in its user's count: it is the next
        of that user's tasks to run, and none of the user's newer ones may pass it.
        """
        steps = [
            Requeue(
                stream=self._keys.stream(d.task_type, d.priority),
                record=self._keys.record(d.task_type, d.task.task_id),
                group=GROUP,
                entry_id=d.entry_id,
                owner=self.name,
                min_idle_ms=0,
                entry=d.raw,
            )
            for d in entries
        ]
        return sum(bool(n) for n in await self._scripts.run_all(steps))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
