"""The producer's side of a chaos run: paid tasks in, announcements counted, outcomes applied."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.exceptions import RedisError

from bench.chaos.world import Paid, World
from db.models import Currency
from shared.config import Settings
from shared.queue import QueueService
from shared.queue.keys import GROUP
from shared.queue.records import entry_json, task_from_message, task_from_record
from shared.tasks import FINAL_STATUSES, QueueTask, TaskType, now

CHUNK = 500
# Entries an attacker or a buggy producer could write; none may hold up a good task.
CORPUS: list[dict[bytes, bytes]] = [
    {b"nothing": b"here"},
    {b"task": b""},
    {b"task": b"{broken json"},
    {b"task": b"[]"},
    {b"task": b"\xff\xfe\xfd"},
    {b"task": b'{"task_id": "x", "type": "generate_video"}'},
    {b"task": b'{"task_id": null, "type": "generate_reply", "created_at": 1e400}'},
    {b"task": b'{"task_id": "' + b"a" * 300 + b'", "type": "generate_reply"}'},
    {b"task": b"x" * 200_000},
    {b"task": b'{"type": "generate_image", "data": {"prompt": {"nested": [[[[]]]]}}}'},
    # Shaped like ours to the read step (it counts for user 42 while it runs): its failure
    # must release him.
    {b"task": b'{"task_id":"hostile-1","type":"generate_image","user_id":42,"data":7}'},
]


@dataclass(slots=True)
class Kill:
    """One signal sent to a consumer, and the tasks it held at that moment."""

    name: str
    signal: int
    at: float
    tasks: list[tuple[TaskType, str]] = field(default_factory=list)


def percentile(values: Sequence[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, math.ceil(pct / 100 * len(ordered)) - 1)
    return round(ordered[rank], 2)


def _payload(task_type: TaskType, dialog_id: int, i: int) -> dict[str, Any]:
    if task_type is TaskType.GENERATE_REPLY:
        return {"system_prompt": "Ты Мира.", "dialog_id": dialog_id, "user_message": f"m{i}"}
    if task_type is TaskType.GENERATE_IMAGE:
        return {"prompt": f"portrait {i}", "dialog_id": dialog_id}
    return {"girl_name": "Мира", "girl_description": f"d{i}"}


class Traffic:
    def __init__(self, settings: Settings, world: World, rng: random.Random) -> None:
        self.queue = QueueService(settings, client_name="chaos")
        self._world = world
        self._rng = rng
        self.paid: dict[str, Paid] = {}
        self.corrupted: set[str] = set()
        self.announced: Counter[str] = Counter()
        self.hostile = 0
        self.redis_kills = 0
        self._done_share = 0.0
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.queue.connect()
        self._listener = asyncio.create_task(self._listen())

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self.queue.close()

    async def enqueue(self, count: int, corrupt_share: float) -> None:
        """Charge and enqueue `count` tasks; a share of them get an unusable entry."""
        kinds = [TaskType.GENERATE_REPLY] * 3 + [TaskType.GENERATE_IMAGE_PROMPT]
        kinds += [TaskType.GENERATE_IMAGE]
        paid = []
        for _ in range(count):
            task_type = self._rng.choice(kinds)
            energy = task_type is TaskType.GENERATE_REPLY
            paid.append(
                Paid(uuid.uuid4().hex, task_type, Currency.ENERGY if energy else Currency.DIAMONDS)
            )
        await self._world.charge(paid)
        self.paid = {p.task_id: p for p in paid}
        bad = set(self._rng.sample(sorted(self.paid), int(count * corrupt_share)))
        for start in range(0, count, CHUNK):
            chunk = paid[start : start + CHUNK]
            await asyncio.gather(
                *(self._enqueue_one(p, i, p.task_id in bad) for i, p in enumerate(chunk))
            )
        self.corrupted = bad

    async def _enqueue_one(self, paid: Paid, i: int, corrupt: bool) -> None:
        data = _payload(paid.task_type, self._world.dialog_id, i)
        uid = self._world.user_id
        if not corrupt:
            await self.queue.enqueue_task(
                paid.task_type, uid, data, task_id=paid.task_id, charge_id=paid.task_id
            )
            return
        # The record is right; the entry carries a timestamp no clock can hold.
        task = QueueTask(
            task_id=paid.task_id,
            type=paid.task_type,
            user_id=uid,
            data=data,
            created_at=now(),
            charge_id=paid.task_id,
        )
        raw = entry_json(task)
        keys, redis = self.queue.keys, self.queue.redis
        record = keys.record(paid.task_type, paid.task_id)
        # As the enqueue step writes it: state, who it is for and what it cost.
        state = {"status": "pending", "attempts": 0, "user": uid, "charge": paid.task_id}
        await redis.hset(record, mapping=state)  # type: ignore[arg-type]
        await redis.expire(record, 86400)
        broken = orjson.loads(raw)
        broken["created_at"] = "__HUGE__"
        text = orjson.dumps(broken).replace(b'"__HUGE__"', b"1e300")
        await redis.xadd(keys.stream(paid.task_type), {"task": text})

    async def add_hostile(self, generated: int) -> None:
        entries = list(CORPUS)
        for _ in range(generated):
            size = self._rng.randint(0, 64)
            entries.append({b"task": self._rng.randbytes(size)})
        for fields in entries:
            stream = self.queue.keys.stream(self._rng.choice(list(TaskType)))
            hostile: Any = fields
            await self.queue.redis.xadd(stream, hostile)
        self.hostile = len(entries)

    async def _listen(self) -> None:
        """Count every announcement and apply it, as the bot's waiter would; reconnects."""
        channels = list(self.queue.keys.channels())
        while True:
            pubsub = self.queue.redis.pubsub()
            try:
                await pubsub.subscribe(*channels)
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        await self._on_message(message["data"])
            except (RedisError, OSError):
                await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _on_message(self, raw: bytes) -> None:
        data = orjson.loads(raw)
        task_id = data.get("task_id")
        if task_id not in self.paid:
            return
        self.announced[task_id] += 1
        task = task_from_message(data) or await self.queue.get_task(
            task_id, self.paid[task_id].task_type
        )
        if task is not None and task.is_final:
            await self._world.apply(task)

    async def _records(self) -> dict[str, QueueTask]:
        found: dict[str, QueueTask] = {}
        ids = list(self.paid)
        for start in range(0, len(ids), CHUNK):
            pipe = self.queue.redis.pipeline(transaction=False)
            for task_id in ids[start : start + CHUNK]:
                pipe.hgetall(self.queue.keys.record(self.paid[task_id].task_type, task_id))
            for fields in await pipe.execute():
                task = task_from_record(fields) if fields else None
                if task is not None:
                    found[task.task_id] = task
        return found

    async def done_share(self) -> float:
        """Share of paid tasks in a final state (the last known share while Redis is away)."""
        with contextlib.suppress(RedisError, OSError):
            statuses = []
            ids = list(self.paid)
            for start in range(0, len(ids), CHUNK * 4):
                pipe = self.queue.redis.pipeline(transaction=False)
                for task_id in ids[start : start + CHUNK * 4]:
                    pipe.hget(
                        self.queue.keys.record(self.paid[task_id].task_type, task_id), "status"
                    )
                statuses += await pipe.execute()
            final = {s.value.encode() for s in FINAL_STATUSES}
            self._done_share = sum(1 for s in statuses if s in final) / max(1, len(ids))
        return self._done_share

    async def settle(self) -> dict[str, QueueTask]:
        """The bot's resume: apply every stored final outcome (repeats change nothing)."""
        final = {i: t for i, t in (await self._records()).items() if t.is_final}
        for task in final.values():
            await self._world.apply(task)
        return final

    async def in_flight_of(self, name: str) -> list[tuple[TaskType, str]]:
        """The tasks a consumer holds right now (its pending entries, read back)."""
        held: list[tuple[TaskType, str]] = []
        redis = self.queue.redis
        for task_type in TaskType:
            stream = self.queue.keys.stream(task_type)
            rows = await redis.xpending_range(stream, GROUP, "-", "+", 10_000, name)
            pipe = redis.pipeline(transaction=False)
            for row in rows:
                pipe.xrange(stream, min=row["message_id"], max=row["message_id"])
            for found in await pipe.execute() if rows else []:
                with contextlib.suppress(Exception):
                    task_id = orjson.loads(found[0][1][b"task"])["task_id"]
                    if task_id in self.paid and task_id not in self.corrupted:
                        held.append((task_type, task_id))
        return held

    async def recovery_seconds(self, kills: Sequence[Kill]) -> list[float]:
        """Per task held by a SIGKILLed consumer: seconds until it completed elsewhere."""
        records = await self._records()
        seconds = []
        for kill in kills:
            for _, task_id in kill.tasks:
                task = records.get(task_id)
                if task is not None and task.finished_at is not None:
                    seconds.append(max(0.0, task.finished_at.timestamp() - kill.at))
        return seconds

    async def left_in_streams(self) -> int:
        left = 0
        for task_type in TaskType:
            left += await self.queue.redis.xlen(self.queue.keys.stream(task_type))
        return left

    async def left_in_scheduling(self, provider: str, wait: float) -> dict[str, int]:
        """What the fairness and lease state still counts once every task is final and the
        consumers are gone: users' running and parked tasks, and the provider's leases (a
        killed holder's expire within `wait` seconds, so they are given that long)."""
        redis, keys = self.queue.redis, self.queue.keys
        deadline = time.monotonic() + wait
        while True:
            sec, usec = await redis.time()
            server_ms = sec * 1000 + usec // 1000
            leases = await redis.zcount(keys.leases(provider), server_ms, "+inf")
            if not leases or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        counts = {"running": 0, "parked": 0}
        for task_type in TaskType:
            for name, key in (
                ("running", keys.users_running(task_type)),
                ("parked", keys.users_parked(task_type)),
            ):
                rows: Any = await redis.zrange(key, 0, -1, withscores=True)
                counts[name] += int(sum(score for _, score in rows))
        return {**counts, "leases": int(leases)}
