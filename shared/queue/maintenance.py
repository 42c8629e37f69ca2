"""Recovery of stuck work: entries idle in a consumer's pending list, and consumers long gone."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.exceptions import ResponseError

from shared.queue.connection import RedisClient
from shared.queue.consume import StreamConsumer, forget_step
from shared.queue.inspect import ConsumerInfo, heartbeats
from shared.queue.keys import GROUP, Keys, Priority
from shared.queue.records import Malformed, TaskEntry, parse_entry
from shared.queue.recovery_steps import DeleteConsumer, Requeue
from shared.queue.scripts import Scripts
from shared.tasks import FINAL_STATUSES, TaskType

GONE_REASON = "entry deleted while pending"


@dataclass(frozen=True, slots=True)
class StuckEntry:
    """A pending entry as XPENDING reports it: owner, idle time, delivery count."""

    entry_id: str
    consumer: str
    idle_ms: int
    deliveries: int
    priority: Priority = Priority.NORMAL


class Action(StrEnum):
    REQUEUE = "requeue"
    DEAD_LETTER = "dead_letter"


class Result(StrEnum):
    PLANNED = "planned"  # decided, not applied (a dry run)
    REQUEUED = "requeued"
    DEAD_LETTERED = "dead_lettered"
    ACKED = "acked"  # its task had finished already: only the leftover entry was removed
    SKIPPED = "skipped"  # renewed or taken over meanwhile: its consumer is alive after all
    ERROR = "error"


@dataclass(slots=True)
class StuckWork:
    """One stuck entry, what reclaim decided for it and what came of it."""

    task_type: TaskType
    entry: StuckEntry
    parsed: TaskEntry | Malformed
    status: str | None
    attempts: int
    action: Action
    reason: str
    result: Result = Result.PLANNED
    detail: str = ""

    @property
    def task_id(self) -> str | None:
        return self.parsed.task.task_id if isinstance(self.parsed, TaskEntry) else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def stuck_entries(
    redis: RedisClient,
    keys: Keys,
    task_type: TaskType,
    min_idle_ms: int,
    *,
    count: int = 100,
    after: str | None = None,
    priority: Priority = Priority.NORMAL,
) -> list[StuckEntry]:
    """Pending entries of one of the type's streams idle at least `min_idle_ms`, lowest id
    first (XPENDING ... IDLE).

    `after` continues a listing past that entry id. No stream or group means nothing stuck.
    """
    start = f"({after}" if after else "-"
    try:
        rows = await redis.xpending_range(
            keys.stream(task_type, priority), GROUP, start, "+", count, idle=min_idle_ms
        )
    except ResponseError as exc:
        if "NOGROUP" in str(exc):
            return []
        raise
    return [
        StuckEntry(
            _text(r["message_id"]),
            _text(r["consumer"]),
            int(r["time_since_delivered"]),
            int(r["times_delivered"]),
            priority,
        )
        for r in rows
    ]


def _count(raw: Any) -> int:
    """A record's attempt counter; a damaged one counts as zero rather than stopping reclaim."""
    try:
        return max(0, int(raw or 0))
    except (TypeError, ValueError):
        return 0


def _decide(
    task_type: TaskType,
    stuck: StuckEntry,
    parsed: TaskEntry | Malformed,
    state: Sequence[Any],
    max_deliveries: int,
) -> StuckWork:
    status = _text(state[0]) if state and state[0] is not None else None
    attempts = _count(state[1]) if state else 0
    work = StuckWork(task_type, stuck, parsed, status, attempts, Action.REQUEUE, "")
    if isinstance(parsed, Malformed):
        work.action, work.reason = Action.DEAD_LETTER, parsed.reason
    elif status in FINAL_STATUSES:
        # The requeue step only acks an entry whose task finished: nothing to refund or fail.
        work.reason = f"task already {status}, leftover entry"
    elif attempts >= max_deliveries:
        work.action = Action.DEAD_LETTER
        work.reason = (
            f"abandoned by consumer {stuck.consumer} after {attempts} attempts, "
            f"limit {max_deliveries}"
        )
    else:
        work.reason = f"idle {stuck.idle_ms / 1000:.1f}s in consumer {stuck.consumer}"
    return work


async def plan_stuck(
    redis: RedisClient,
    keys: Keys,
    task_type: TaskType,
    stuck: Sequence[StuckEntry],
    *,
    max_deliveries: int,
    max_payload_bytes: int,
) -> list[StuckWork]:
    """Read each stuck entry (XRANGE id id) and its record, and decide what to do; reads only.

    A task already started `max_deliveries` times, and an entry that is gone or cannot be
    parsed, is to be dead-lettered; any other is to be requeued.
    """
    if not stuck:
        return []
    pipe = redis.pipeline(transaction=False)
    for s in stuck:
        pipe.xrange(keys.stream(task_type, s.priority), min=s.entry_id, max=s.entry_id)
    parsed: list[TaskEntry | Malformed] = []
    for s, rows in zip(stuck, await pipe.execute(), strict=True):
        if not rows:
            parsed.append(Malformed(s.entry_id, task_type, {}, GONE_REASON, None, s.priority))
        else:
            row_id, fields = rows[0]
            parsed.append(parse_entry(task_type, row_id, fields, max_payload_bytes, s.priority))
    pipe = redis.pipeline(transaction=False)
    for p in parsed:
        if isinstance(p, TaskEntry):
            pipe.hmget(keys.record(task_type, p.task.task_id), ["status", "attempts"])
    states = iter(await pipe.execute())
    return [
        _decide(task_type, s, p, next(states) if isinstance(p, TaskEntry) else (), max_deliveries)
        for s, p in zip(stuck, parsed, strict=True)
    ]


def _planned(works: Sequence[StuckWork], action: Action) -> Iterator[StuckWork]:
    return (w for w in works if w.action is action and w.result is Result.PLANNED)


async def requeue_stuck(
    redis: RedisClient, scripts: Scripts, keys: Keys, works: Sequence[StuckWork], min_idle_ms: int
) -> None:
    """Hand each entry planned for requeue back to the group as a fresh entry, in one round trip.

    Each move (ack, delete, add) is one Lua step that runs only while the entry is still
    pending for the same consumer and still idle `min_idle_ms`: a consumer that renewed
    meanwhile keeps its entry, and the task is never in neither place nor in both.
    """
    todo = [
        (w, w.parsed) for w in _planned(works, Action.REQUEUE) if isinstance(w.parsed, TaskEntry)
    ]
    if not todo:
        return
    steps = [
        Requeue(
            stream=keys.stream(w.task_type, w.entry.priority),
            record=keys.record(w.task_type, d.task.task_id),
            group=GROUP,
            entry_id=w.entry.entry_id,
            owner=w.entry.consumer,
            min_idle_ms=min_idle_ms,
            entry=d.raw,
        )
        for w, d in todo
    ]
    for (w, _), new_id in zip(todo, await scripts.run_all(steps), strict=True):
        if new_id:
            w.result, w.detail = Result.REQUEUED, _text(new_id)
        elif w.status in FINAL_STATUSES:
            w.result = Result.ACKED
        else:
            w.result, w.detail = Result.SKIPPED, "renewed or taken over meanwhile"


async def dead_letter_stuck(
    consumer: StreamConsumer, keys: Keys, works: Sequence[StuckWork], min_idle_ms: int
) -> None:
    """Dead-letter the entries planned for it, through the consumers' own fail step.

    Each entry is first taken over by `consumer` with XCLAIM, which succeeds only while it is
    still idle `min_idle_ms` (a live consumer keeps it). Money is not touched here: the bot
    refunds when it applies the announced failure.
    """
    for work in _planned(works, Action.DEAD_LETTER):
        parsed = work.parsed
        # A deleted entry cannot be claimed (Redis 7 drops it from the pending list on XCLAIM):
        # the fail step only acks it; nobody can run it any more.
        gone = isinstance(parsed, Malformed) and not parsed.fields
        if not gone and not await _claim_stuck(consumer, keys, work, min_idle_ms):
            work.result, work.detail = Result.SKIPPED, "renewed or taken over meanwhile"
            continue
        [wrote] = await consumer.fail([parsed], work.reason)
        work.result = Result.DEAD_LETTERED if wrote else Result.ACKED


async def _claim_stuck(consumer: StreamConsumer, keys: Keys, work: StuckWork, idle: int) -> bool:
    stream = keys.stream(work.task_type, work.entry.priority)
    claimed = await consumer.redis.xclaim(
        stream, GROUP, consumer.name, idle, [work.entry.entry_id], justid=True
    )
    return bool(claimed)


def _delete_steps(
    keys: Keys, task_type: TaskType, name: str, idle_ms: int
) -> list[DeleteConsumer]:
    streams = keys.streams(task_type)
    return [
        DeleteConsumer(stream, keys.alive(task_type), GROUP, name, idle_ms, other)
        for stream, other in (
            (streams[Priority.NORMAL], streams[Priority.HIGH]),
            (streams[Priority.HIGH], streams[Priority.NORMAL]),
        )
    ]


async def forget_consumer(scripts: Scripts, keys: Keys, task_type: TaskType, name: str) -> bool:
    """Delete a consumer at once if it owns nothing (the reclaimer's own name after a pass)."""
    deleted = [await scripts.run(step) for step in _delete_steps(keys, task_type, name, 0)]
    return any(deleted)


async def gone_consumers(
    redis: RedisClient, keys: Keys, task_type: TaskType, idle_ms: int
) -> list[ConsumerInfo]:
    """Consumers idle at least `idle_ms` that own no pending entry in either stream
    (XINFO CONSUMERS)."""
    seen: dict[str, ConsumerInfo] = {}
    busy: set[str] = set()
    for stream in keys.streams(task_type).values():
        try:
            rows = await redis.xinfo_consumers(stream, GROUP)
        except ResponseError as exc:
            if "NOGROUP" in str(exc) or "no such key" in str(exc):
                continue
            raise
        for c in rows:
            name, idle = _text(c["name"]), int(c["idle"])
            if int(c["pending"]) or idle < idle_ms:
                busy.add(name)
            elif name not in seen or idle / 1000 < seen[name].idle_seconds:
                seen[name] = ConsumerInfo(name, 0, idle / 1000)
    return [info for name, info in seen.items() if name not in busy]


async def remove_gone_consumers(
    redis: RedisClient, scripts: Scripts, keys: Keys, task_type: TaskType, idle_ms: int
) -> list[ConsumerInfo]:
    """Delete consumers idle at least `idle_ms` with nothing pending; return those deleted.

    The candidates come from XINFO CONSUMERS, and each deletion re-checks both conditions
    inside one Lua step, so a consumer that read an entry in between is kept.
    """
    candidates = await gone_consumers(redis, keys, task_type, idle_ms)
    if not candidates:
        return []
    steps = [step for c in candidates for step in _delete_steps(keys, task_type, c.name, idle_ms)]
    deleted = await scripts.run_all(steps)
    # One answer per stream: a name listed in only one of them is deleted there only.
    return [c for i, c in enumerate(candidates) if deleted[2 * i] or deleted[2 * i + 1]]


async def forget_dead_consumers(
    scripts: Scripts, keys: Keys, task_type: TaskType, min_age_ms: int
) -> list[ConsumerInfo]:
    """Forget every consumer whose heartbeat is at least `min_age_ms` old and that owns
    nothing (its work was reclaimed): it is gone, not a consumer that should be alive.

    Checked and done in one Lua step, so a consumer that beats or reads in between is kept.
    """
    raw = await scripts.run(forget_step(keys, task_type, min_age_ms))
    pairs = zip(raw[::2], raw[1::2], strict=True)
    return [_forgotten(_text(name), int(age)) for name, age in pairs]


def _forgotten(name: str, age_ms: int) -> ConsumerInfo:
    age = age_ms / 1000 if age_ms >= 0 else None
    return ConsumerInfo(name, 0, age or 0.0, age, alive=False)


async def dead_consumers(
    redis: RedisClient, keys: Keys, task_type: TaskType, min_age_ms: int
) -> list[ConsumerInfo]:
    """Read-only: consumers whose heartbeat is at least `min_age_ms` old and that own no
    entry now (what `forget_dead_consumers` would forget)."""
    beats = await heartbeats(redis, keys, task_type)
    old = {name: age for name, age in beats.items() if age * 1000 >= min_age_ms}
    owners: set[str] = set()
    for stream in keys.streams(task_type).values() if old else ():
        try:
            summary: Any = await redis.xpending(stream, GROUP)
        except ResponseError:  # no stream or group: nobody owns anything there
            continue
        owners |= {_text(c["name"]) for c in summary.get("consumers") or ()}
    return [_forgotten(n, int(age * 1000)) for n, age in old.items() if n not in owners]
