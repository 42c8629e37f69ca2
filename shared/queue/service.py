"""QueueService: the seed's API (enqueue, get, length, clear, wait) rebuilt on Redis Streams."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import structlog

from shared.config import Settings, load_settings
from shared.errors import InvalidPayloadError
from shared.queue.batching import ScriptBatcher
from shared.queue.connection import RedisClient, create_redis
from shared.queue.consume import StreamConsumer
from shared.queue.failover import through_failover
from shared.queue.fairness import sweep, user_cap
from shared.queue.inspect import QueueDepth, queue_depth
from shared.queue.keys import Keys, Priority
from shared.queue.reads import ensure_group
from shared.queue.records import Malformed, TaskEntry, new_entry, parse_entry, task_from_record
from shared.queue.replicas import ReplicaAcks
from shared.queue.scripts import Scripts
from shared.queue.step_batches import run_steps
from shared.queue.steps import Cancel, Enqueue, MarkSettled
from shared.queue.waiter import ResultWaiter
from shared.tasks import (
    Payload,
    QueueTask,
    TaskStatus,
    TaskType,
    dumps,
    parse_task_type,
    validate_payload,
)

log = structlog.get_logger(__name__)


def _task_id(entry: TaskEntry | Malformed) -> str | None:
    return entry.task.task_id if isinstance(entry, TaskEntry) else entry.task_id


def _priority(value: Priority | str) -> Priority:
    try:
        return Priority(value)
    except ValueError:
        raise InvalidPayloadError(f"priority must be normal or high, not {value!r}") from None


class QueueService:
    """Producer-side entry point; also hands out the consumer primitives."""

    def __init__(self, settings: Settings | None = None, client_name: str = "producer") -> None:
        self.settings = settings or load_settings()
        self.keys = Keys.from_settings(self.settings)
        self._client_name = client_name
        self._redis: RedisClient | None = None
        self._scripts: Scripts | None = None
        self._waiter: ResultWaiter | None = None
        self._batcher: ScriptBatcher | None = None

    @property
    def redis(self) -> RedisClient:
        if self._redis is None:
            raise RuntimeError("QueueService.connect() was not called")
        return self._redis

    @property
    def scripts(self) -> Scripts:
        if self._scripts is None:
            raise RuntimeError("QueueService.connect() was not called")
        return self._scripts

    async def connect(self) -> None:
        """Open the pool, load the Lua steps and create the consumer groups (idempotent)."""
        if self._redis is not None:
            return
        self._redis = create_redis(self.settings, self._client_name)
        acks = await ReplicaAcks.detect(self._redis, self.settings)
        self._scripts = Scripts(self._redis, sharded=self.settings.redis_cluster, acks=acks)
        self._batcher = ScriptBatcher(self._scripts)
        await self._scripts.load()
        for task_type in TaskType:
            await ensure_group(self._redis, self.keys, task_type)

    async def close(self) -> None:
        if self._waiter is not None:
            await self._waiter.aclose()
            self._waiter = None
        if self._batcher is not None:
            await self._batcher.aclose()
            self._batcher = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def _new_task(
        self,
        task_type: TaskType,
        user_id: int,
        data: Any,
        priority: Priority,
        *,
        task_id: str | None = None,
        charge_id: str | None = None,
    ) -> tuple[str, Enqueue]:
        """Validate the payload and build the task's enqueue step (no QueueTask on the way:
        an enqueue makes only the objects it sends)."""
        task_id = task_id or str(uuid.uuid4())
        payload = validate_payload(task_type, data, task_id)
        raw = new_entry(
            task_id, task_type, user_id, payload, created_at=time.time(), charge_id=charge_id
        )
        if len(raw) > self.settings.max_payload_bytes:
            limit = self.settings.max_payload_bytes
            raise InvalidPayloadError(f"task is {len(raw)} bytes, limit {limit}", task_id)
        step = Enqueue(
            stream=self.keys.stream(task_type, priority),
            record=self.keys.record(task_type, task_id),
            entry=raw,
            task_ttl=self.settings.redis_task_ttl,
            user_id=user_id,
            charge_id=charge_id,
            high=priority is Priority.HIGH,
        )
        return task_id, step

    async def enqueue_task(
        self,
        task_type: TaskType | str,
        user_id: int,
        data: dict[str, Any] | Payload,
        *,
        task_id: str | None = None,
        charge_id: str | None = None,
        priority: Priority | str = Priority.NORMAL,
    ) -> str:
        """Validate, then write the record and XADD the entry in one atomic step.

        Idempotent by `task_id`: enqueuing the same id again adds nothing, which is what lets
        an enqueue cut by a failover be sent again until the promoted replica takes it. A
        `priority="high"` task waits in the type's high-priority stream, read before the
        normal one except for the normal stream's guaranteed share (PRIORITY_NORMAL_SHARE).
        """
        kind = parse_task_type(task_type)
        task_id, step = self._new_task(
            kind, user_id, data, _priority(priority), task_id=task_id, charge_id=charge_id
        )
        batcher = self._batcher
        if batcher is None:
            raise RuntimeError("QueueService.connect() was not called")
        if self._waiter is not None:
            self._waiter.expect(task_id, kind)
        # Concurrent enqueues (a burst of users) share round trips; one alone goes at once.
        added = await through_failover(lambda: batcher.run(step, kind), "enqueue")
        if not added and self._waiter is not None:
            self._waiter.unexpect(task_id)  # it existed already: it may be long done
        log.debug("task_enqueued", task_id=task_id, task_type=kind)
        return task_id

    async def enqueue_many(
        self,
        task_type: TaskType | str,
        items: Sequence[tuple[int, dict[str, Any]]],
        *,
        priority: Priority | str = Priority.NORMAL,
    ) -> list[str]:
        """Enqueue many tasks of one type in one round trip (each still atomic on its own,
        and sent in calls of up to BATCH_LIMIT tasks)."""
        chosen = _priority(priority)
        kind = parse_task_type(task_type)
        tasks = [self._new_task(kind, user, data, chosen) for user, data in items]
        steps = [step for _, step in tasks]
        if self._waiter is not None:
            for task_id, _ in tasks:
                self._waiter.expect(task_id, kind)
        added = await through_failover(lambda: run_steps(self.scripts, steps), "enqueue")
        for (task_id, _), entry_id in zip(tasks, added, strict=True):
            if not entry_id and self._waiter is not None:
                self._waiter.unexpect(task_id)
        return [task_id for task_id, _ in tasks]

    async def get_task(self, task_id: str, task_type: TaskType | None = None) -> QueueTask | None:
        """The stored task, looked up in every type's records unless the type is given.

        A waiting task's record holds only its state: the task itself is read from its entry
        (or, while parked at its user's cap, from the user's list).
        """
        candidates = [task_type] if task_type else list(TaskType)
        pipe = self.redis.pipeline(transaction=False)
        for candidate in candidates:
            pipe.hgetall(self.keys.record(candidate, task_id))
        for candidate, fields in zip(candidates, await pipe.execute(), strict=True):
            if not fields:
                continue
            if b"task" not in fields:
                raw = await self._waiting_task(candidate, task_id, fields)
                if raw is None:  # it moved or finished meanwhile: read the record again
                    return await self._record_task(task_id, candidate)
                fields[b"task"] = self._trusted(candidate, task_id, raw)
            return task_from_record(fields)
        return None

    def _trusted(self, task_type: TaskType, task_id: str, raw: bytes) -> bytes:
        """An entry's text is not trusted: one that does not parse shows as a task without
        data (it is dead-lettered with the reason when a consumer reads it)."""
        parsed = parse_entry(task_type, "0-0", {b"task": raw}, self.settings.max_payload_bytes)
        if isinstance(parsed, TaskEntry):
            return raw
        stub = {"task_id": task_id, "type": task_type, "user_id": 0, "data": {}}
        return dumps(stub | {"created_at": time.time(), "charge_id": None})

    async def _waiting_task(
        self, task_type: TaskType, task_id: str, fields: dict[bytes, bytes]
    ) -> bytes | None:
        if b"entry" in fields:
            priority = Priority((fields.get(b"priority") or b"normal").decode())
            stream = self.keys.stream(task_type, priority)
            entry: Any = await self.redis.xrange(stream, fields[b"entry"], fields[b"entry"])
            return entry[0][1].get(b"task", b"") if entry else None
        if b"parked" in fields and b"user" in fields:
            parked = self.keys.user_parked(task_type, fields[b"user"].decode())
            marker = f"|{task_id}|".encode()
            items: Any = await self.redis.lrange(parked, 0, -1)
            for item in items:
                if item[1 : len(marker) + 1] == marker:
                    return bytes(item[len(marker) + 1 :])
        return None

    async def _record_task(self, task_id: str, task_type: TaskType) -> QueueTask | None:
        """A second and last look, after the task moved (finished, parked, sent back)."""
        fields: Any = await self.redis.hgetall(self.keys.record(task_type, task_id))
        if fields and b"task" not in fields:
            raw = await self._waiting_task(task_type, task_id, fields)
            if raw is None:
                return None
            fields[b"task"] = self._trusted(task_type, task_id, raw)
        return task_from_record(fields)

    async def get_queue_depth(
        self, task_type: TaskType, with_consumers: bool = False
    ) -> QueueDepth:
        return await queue_depth(self.redis, self.keys, task_type, with_consumers)

    async def get_queue_length(self, task_type: TaskType) -> int:
        """Tasks not finished yet: waiting plus in flight (see get_queue_depth for the split)."""
        return (await self.get_queue_depth(task_type)).unfinished

    async def clear_queue(self, task_type: TaskType, reason: str = "cleared by operator") -> int:
        """Fail every unfinished task of the type into its dead-letter stream; return the count."""
        return len(await self.drain(task_type, reason))

    async def drain(self, task_type: TaskType, reason: str) -> list[str]:
        """Fail every entry (waiting, parked and in flight) through the one fail step.

        Returns the ids of the tasks it failed. Only Redis changes: each failure is announced,
        and the bot refunds what the task cost when it applies the announcement.
        """
        consumer = StreamConsumer(self.redis, self.scripts, self.settings, "operator")
        failed: list[str] = []
        # Parked tasks go back onto their streams first (cap 0: all of them), then fail there.
        while await sweep(self.redis, self.scripts, self.keys, task_type, 0) or any(
            [await self.redis.xlen(s) for s in self.keys.streams(task_type).values()]
        ):
            for priority, stream in self.keys.streams(task_type).items():
                failed += await self._fail_all(consumer, task_type, priority, stream, reason)
        log.warning("queue_drained", task_type=task_type, failed=len(failed), reason=reason)
        return failed

    async def _fail_all(
        self,
        consumer: StreamConsumer,
        task_type: TaskType,
        priority: Priority,
        stream: str,
        reason: str,
    ) -> list[str]:
        failed: list[str] = []
        limit = self.settings.max_payload_bytes
        while entries := await self._range(stream):
            parsed = [
                parse_entry(task_type, eid, fields, limit, priority) for eid, fields in entries
            ]
            wrote = await consumer.fail(parsed, reason)
            failed += [
                task_id
                for p, w in zip(parsed, wrote, strict=True)
                if w and (task_id := _task_id(p)) is not None
            ]
        return failed

    async def _range(self, stream: str) -> Any:
        return await self.redis.xrange(stream, count=500)

    async def wait_for_task_result(
        self, task_id: str, timeout: float = 60.0, task_type: TaskType | None = None
    ) -> QueueTask:
        """Wait for the final task through the process's shared pub/sub waiter."""
        if self._waiter is None:
            self._waiter = ResultWaiter(self.settings, f"{self._client_name}:waiter")
        return await self._waiter.wait(task_id, timeout, task_type)

    async def mark_settled(self, task_type: TaskType, task_id: str) -> None:
        """Mark a failed task's record as settled (its owner refunded it and told the user), so
        an operator cannot replay paid work that nobody would receive. Idempotent; a record
        that is gone stays gone (one step, so an expiring record is never recreated as a stub).
        """
        await self.scripts.run(MarkSettled(self.keys.record(task_type, task_id)))

    async def cancel(self, task_type: TaskType, task_id: str) -> TaskStatus | None:
        """Cancel a task in one atomic step; returns its status after the call (None: no such
        task, e.g. its record expired).

        A waiting task is cancelled at once (final, announced, never run), and what it held
        of its user's count (parked, or moved back from parking) is freed in the same step.
        A running one stays `processing` with a cancel flag: its consumer stops it within a
        moment and finishes it as `cancelled` (with the partial result, if any), which frees
        its lease and place. A final task is left as it is. Idempotent, so safe to repeat
        after a lost reply.
        """
        step = Cancel(
            normal=self.keys.stream(task_type),
            record=self.keys.record(task_type, task_id),
            high=self.keys.stream(task_type, Priority.HIGH),
            users_running=self.keys.users_running(task_type),
            users_parked=self.keys.users_parked(task_type),
            task_id=task_id,
            finished_at=time.time(),
            result_ttl=self.settings.redis_result_ttl,
            channel=self.keys.channel(task_type),
            cancels=self.keys.cancels(task_type),
            users=self.keys.user_prefix(task_type),
            records=self.keys.record_prefix(task_type),
            user_cap=user_cap(self.settings, task_type),
        )
        raw = await self.scripts.run(step)
        status = None if raw is None else TaskStatus(raw.decode())
        log.info("task_cancel_requested", task_id=task_id, task_type=task_type, status=status)
        return status

    def consumer(self, name: str) -> StreamConsumer:
        return StreamConsumer(self.redis, self.scripts, self.settings, name)
