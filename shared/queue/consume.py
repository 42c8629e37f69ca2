"""Consumer-side stream primitives: read, claim, start, finish or fail, renew, hand back."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.config import Settings
from shared.queue.keys import GROUP, Keys
from shared.queue.live import LiveWriter
from shared.queue.records import (
    Delivery,
    Malformed,
    completion_message,
    dead_fields,
    parse_entry,
)
from shared.queue.scripts import Scripts
from shared.queue.steps import (
    Claim,
    DeleteConsumer,
    Fail,
    Finish,
    Heartbeat,
    Renew,
    Requeue,
    Start,
    Step,
)
from shared.tasks import TaskStatus, TaskType, dumps

log = structlog.get_logger(__name__)

# Completion messages above this size carry only the task id; the waiter reads the record.
MESSAGE_LIMIT = 16 * 1024
DEAD_LETTER_MAXLEN = 100_000
# The per-minute completion chart keeps two hours.
COMPLETIONS_TTL = 7200

Entry = Delivery | Malformed


@dataclass(slots=True)
class Outcome:
    """How one entry ended: completed (a result), or failed for good (dead-lettered).

    An entry whose task finished elsewhere ends as COMPLETED without a result: the finish
    step then only acks and deletes it.
    """

    entry: Entry
    status: TaskStatus
    attempts: int = 0
    started_at: float | None = None
    result_json: bytes | None = None
    error: str | None = None
    finished_at: float = field(default_factory=time.time)

    @property
    def task_id(self) -> str | None:
        return self.entry.task.task_id if isinstance(self.entry, Delivery) else self.entry.task_id


async def ensure_group(redis: Redis, keys: Keys, task_type: TaskType) -> None:
    """Create the type's stream and group if missing (idempotent)."""
    try:
        await redis.xgroup_create(keys.stream(task_type), GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def stub_task(bad: Malformed, failed_at: float) -> bytes:
    """What a failed record keeps of a task whose entry was unusable: its id and type; its
    user and charge stay in the record's own fields."""
    stub: dict[str, Any] = {"task_id": bad.task_id, "type": bad.task_type, "user_id": 0}
    return dumps(stub | {"data": {}, "created_at": failed_at, "charge_id": None})


def _lost_group(exc: ResponseError) -> bool:
    return "NOGROUP" in str(exc) or "no such key" in str(exc)


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
        if not _lost_group(exc):
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

    async def claim(self, task_type: TaskType, count: int, min_idle_ms: int) -> list[Entry]:
        """Take over the entries of dead consumers at once, else entries idle `min_idle_ms`.

        A consumer is dead when its heartbeat is older than CONSUMER_DEAD_SECONDS; a dead
        consumer that owns nothing is deleted in the same step.
        """
        if count <= 0:
            return []
        step = Claim(
            stream=self._keys.stream(task_type),
            alive=self._keys.alive(task_type),
            group=GROUP,
            consumer=self.name,
            min_idle_ms=min_idle_ms,
            cursor=self._cursors[task_type],
            count=count,
            dead_ms=int(self._settings.consumer_dead_seconds * 1000),
        )
        try:
            cursor, entries, forgotten = await self._scripts.run(step)
        except ResponseError as exc:
            await self._recover_group(task_type, exc)
            return []
        self._cursors[task_type] = cursor.decode()
        for name in forgotten:
            log.info("dead_consumer_removed", task_type=task_type, name=name.decode())
        # Lua hands back entry fields as flat lists.
        pairs = [(eid, dict(zip(f[::2], f[1::2], strict=False))) for eid, f in entries if f]
        return self._parse(task_type, pairs)

    async def adopt(self, task_type: TaskType, count: int) -> list[Entry]:
        """At start: take back entries still pending under this consumer's own name.

        They belong to an earlier process with the same name that died; its heartbeat now
        looks alive again (it is ours), so no peer would ever take them by liveness.
        """
        stream = self._keys.stream(task_type)
        try:
            rows = await self.redis.xpending_range(stream, GROUP, "-", "+", count, self.name)
        except ResponseError as exc:
            await self._recover_group(task_type, exc)
            return []
        ids: list[Any] = [row["message_id"] for row in rows]
        if not ids:
            return []
        claimed: Any = await self.redis.xclaim(stream, GROUP, self.name, 0, ids)
        return self._parse(task_type, [(eid, fields) for eid, fields in claimed if fields])

    async def heartbeat(self, task_types: Sequence[TaskType]) -> None:
        """Say this consumer is alive, for each type it serves (one round trip)."""
        await self._run_all([Heartbeat(self._keys.alive(t), self.name) for t in task_types])

    async def retire(self, task_types: Sequence[TaskType]) -> None:
        """On a clean exit: delete this consumer's name where it owns nothing any more."""
        await self._run_all(
            [
                DeleteConsumer(self._keys.stream(t), self._keys.alive(t), GROUP, self.name, 0)
                for t in task_types
            ]
        )

    async def start(self, deliveries: Sequence[Delivery], started_at: float) -> list[int]:
        """Mark tasks processing and count the attempt; -1 marks one that already finished.

        Safe to repeat: the batch's token makes a retried call count no second attempt.
        """
        if not deliveries:
            return []
        task_type = deliveries[0].task_type
        step = Start(
            records=[self._keys.record(task_type, d.task.task_id) for d in deliveries],
            entries=[d.raw for d in deliveries],
            consumer=self.name,
            started_at=started_at,
            task_ttl=self._settings.redis_task_ttl,
            token=uuid.uuid4().hex[:12],
        )
        return [int(n) for n in await self._scripts.run(step)]

    async def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Store each result or failure, ack, delete and announce; one round trip for all.

        Returns per outcome whether it wrote the final state (False: its task had already
        finished, so nothing was overwritten or announced again). Safe to repeat. The batch
        is also counted in the per-minute chart (one command per type, not per task).
        """
        if not outcomes:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for outcome in outcomes:
            self._scripts.queue(pipe, self._step(outcome))
        minute = int(time.time() // 60)
        for task_type, count in Counter(o.entry.task_type for o in outcomes).items():
            chart = self._keys.completions(task_type)
            pipe.hincrby(chart, str(minute), count)
            # Minutes past the two hours go, so a busy type's hash stays small.
            pipe.hdel(chart, *(str(minute - 120 - i) for i in range(5)))
            pipe.expire(chart, COMPLETIONS_TTL)
        results = await self._scripts.execute(pipe)
        return [bool(n) for n in results[: len(outcomes)]]

    async def fail(self, entries: Sequence[Entry], reason: str) -> list[bool]:
        """The one way to fail tasks: dead-letter each entry, fail its task, announce it.

        Only Redis changes; whoever owns the money (the bot) acts on the announcement.
        """
        return await self.finish([Outcome(e, TaskStatus.FAILED, error=reason) for e in entries])

    async def _run_all(self, steps: Sequence[Step]) -> list[bool]:
        if not steps:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for step in steps:
            self._scripts.queue(pipe, step)
        return [bool(n) for n in await self._scripts.execute(pipe)]

    def _message(self, o: Outcome) -> bytes:
        if not isinstance(o.entry, Delivery):
            return dumps({"task_id": o.task_id, "status": o.status, "error": o.error})
        state = {
            "status": o.status,
            "attempts": o.attempts,
            "consumer": self.name,
            "started_at": o.started_at,
            "finished_at": o.finished_at,
            "error": o.error,
        }
        return completion_message(o.entry, state, o.result_json, MESSAGE_LIMIT)

    def _step(self, o: Outcome) -> Step:
        keys, entry, task_type = self._keys, o.entry, o.entry.task_type
        # Attempt numbers are unique per start of an entry: entry id and attempt name one run.
        token = f"{entry.entry_id}:{o.attempts}"
        record = keys.record(task_type, o.task_id or "")
        channel = keys.channel(task_type) if o.task_id else ""
        if o.status is TaskStatus.FAILED:
            if isinstance(entry, Delivery):
                raw, kept = entry.raw, [(b"task", entry.raw)]
            else:
                raw, kept = stub_task(entry, o.finished_at), dead_fields(entry.fields)
            return Fail(
                stream=keys.stream(task_type),
                dead=keys.dead(task_type),
                record=record,
                group=GROUP,
                entry_id=entry.entry_id,
                reason=o.error or "failed",
                failed_at=o.finished_at,
                result_ttl=self._settings.redis_result_ttl,
                channel=channel,
                message=self._message(o),
                consumer=self.name,
                dead_maxlen=DEAD_LETTER_MAXLEN,
                token=token,
                entry=raw,
                create=isinstance(entry, Delivery),
                dead_fields=kept,
            )
        if not isinstance(entry, Delivery):
            raise TypeError("only a parsed entry can complete")
        return Finish(
            stream=keys.stream(task_type),
            record=record,
            group=GROUP,
            entry_id=entry.entry_id,
            status=o.status,
            finished_at=o.finished_at,
            result=o.result_json or b"",
            error=o.error or "",
            result_ttl=self._settings.redis_result_ttl,
            channel=channel,
            message=self._message(o),
            entry=entry.raw,
            token=token,
        )

    @property
    def settings(self) -> Settings:
        return self._settings

    def live_writer(self, task_type: TaskType, task_id: str, attempt: int) -> LiveWriter:
        """The writer of one run's live output (it writes nothing until text arrives)."""
        return LiveWriter.for_task(self.redis, self._settings, task_type, task_id, attempt)

    async def cancel_requested(self, task_type: TaskType, task_ids: Sequence[str]) -> list[str]:
        """Those of `task_ids` whose records carry a cancel flag (one round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hexists(self._keys.record(task_type, task_id), "cancel")
        flags = await pipe.execute()
        return [task_id for task_id, flag in zip(task_ids, flags, strict=True) if flag]

    async def renew(self, task_type: TaskType, entry_ids: Sequence[str]) -> list[str]:
        """Reset the idle time of entries still ours; return the ids another consumer took."""
        if not entry_ids:
            return []
        step = Renew(self._keys.stream(task_type), GROUP, self.name, entry_ids)
        try:
            lost = await self._scripts.run(step)
        except ResponseError as exc:
            await self._recover_group(task_type, exc)
            return list(entry_ids)
        return [i.decode() for i in lost]

    async def hand_back(self, deliveries: Sequence[Delivery]) -> int:
        """Give unfinished entries back to the group at once (shutdown); returns how many."""
        steps = [
            Requeue(
                stream=self._keys.stream(d.task_type),
                record=self._keys.record(d.task_type, d.task.task_id),
                group=GROUP,
                entry_id=d.entry_id,
                owner=self.name,
                min_idle_ms=0,
                entry=d.raw,
            )
            for d in deliveries
        ]
        return sum(await self._run_all(steps))
