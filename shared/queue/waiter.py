"""Waiting for results: one pub/sub subscription and one reader per process, shared by all
waiters.

Order per waiter: subscribed (confirmed) -> register -> read the stored record, so a
completion is either announced to a registered waiter or already visible in the record.
Every (re)confirmed subscription re-reads every pending record: after a dropped connection, a
silent reconnect by redis-py or a slot move on a cluster, announcements may have been missed.
Nothing polls.

On one server (or behind Sentinel) one connection subscribes to the three types' channels. On
a cluster completions are sharded (SPUBLISH), so each type's channel is subscribed (SSUBSCRIBE)
on the shard that owns it, one connection per shard, each ready on its own: a failover of one
shard does not hold up waiters of the other types.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from shared.closing import stop_loops
from shared.config import Settings
from shared.errors import TaskTimeoutError
from shared.queue.connection import create_redis
from shared.queue.keys import Keys
from shared.queue.records import task_from_message, task_from_record
from shared.queue.subscription import (
    ANNOUNCED,
    CONFIRMED,
    REDIS_ERRORS,
    channel_groups,
    next_messages,
    open_pubsub,
    subscribe,
    text,
)
from shared.tasks import FINAL_STATUSES, QueueTask, TaskType, loads

log = structlog.get_logger(__name__)

_FINAL = frozenset(status.value.encode() for status in FINAL_STATUSES)
# Tasks remembered as enqueued-while-subscribed; the oldest are forgotten past this.
FRESH_LIMIT = 100_000


@dataclass(slots=True)
class _Subscription:
    """Channels subscribed on one connection; ready once each is confirmed."""

    channels: list[str]
    types: list[TaskType]
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class ResultWaiter:
    """Routes completion announcements to in-process futures."""

    def __init__(self, settings: Settings, client_name: str = "waiter") -> None:
        self._keys = Keys.from_settings(settings)
        self._channels = self._keys.channels()
        sharded = settings.redis_cluster
        groups = channel_groups(self._channels, sharded)
        self._subs = [_Subscription(channels, types) for channels, types in groups]
        # No retries on these clients: a dropped connection must surface here, where the
        # pending records are read again, not be papered over by a silent reconnect.
        per_node = len(self._subs) + 1 if sharded else 1
        self._sub_client = create_redis(settings, f"{client_name}:sub", per_node, retries=0)
        self._reader = create_redis(settings, f"{client_name}:read", per_node, retries=0)
        self._futures: dict[str, list[asyncio.Future[QueueTask]]] = {}
        self._types: dict[str, TaskType | None] = {}
        self._to_read: dict[str, TaskType | None] = {}
        self._read_wakeup = asyncio.Event()
        # Tasks enqueued while their subscription was up: their completion cannot be missed,
        # so waiting for them needs no record read. False until announced, then the final
        # task (or True when the announcement was too big to carry it).
        self._fresh: dict[str, QueueTask | bool] = {}
        self._forgotten = 0  # bumped whenever _fresh is dropped
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    async def start(self) -> None:
        if not self._tasks and not self._closing:
            self._tasks = [
                asyncio.create_task(self._supervised(self._read_loop), name="waiter-read")
            ]
            for sub in self._subs:
                listen = self._listener(sub)
                task = asyncio.create_task(self._supervised(listen), name="waiter-listen")
                self._tasks.append(task)

    def _listener(self, sub: _Subscription) -> Callable[[], Awaitable[None]]:
        async def listen() -> None:
            await self._listen(sub)

        return listen

    async def _supervised(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Restart a background loop that died of anything: without it, every waiter of this
        process would fall back to its timeout."""
        while not self._closing:
            try:
                await loop()
            except Exception:
                for sub in self._subs:
                    self._unsubscribed(sub)
                log.exception("waiter_loop_crashed", loop=loop.__qualname__)
                await asyncio.sleep(0.2)

    async def aclose(self) -> None:
        # The flag and the wakeup, not only the cancel (see shared.closing).
        self._closing = True
        self._read_wakeup.set()
        await stop_loops(self._tasks, "waiter")
        self._tasks = []
        await self._sub_client.aclose()
        await self._reader.aclose()

    def expect(self, task_id: str, task_type: TaskType) -> None:
        """Call just before enqueuing `task_id`: if its type's subscription is up now, its
        completion will reach this process, so `wait` can skip reading the record."""
        if not self._sub_of(task_type).ready.is_set():
            return
        if len(self._fresh) >= FRESH_LIMIT:  # tasks enqueued and never waited for
            del self._fresh[next(iter(self._fresh))]
        self._fresh[task_id] = False

    def unexpect(self, task_id: str) -> None:
        """The enqueue found the task already there (a repeat): waiting must read its record."""
        self._fresh.pop(task_id, None)

    def _sub_of(self, task_type: TaskType) -> _Subscription:
        return next(sub for sub in self._subs if task_type in sub.types)

    def _unsubscribed(self, sub: _Subscription) -> None:
        # Announcements may be lost from now on: every wait reads its record again.
        sub.ready.clear()
        self._forget_fresh()

    def _forget_fresh(self) -> None:
        self._fresh.clear()
        self._forgotten += 1

    async def wait(
        self, task_id: str, timeout: float, task_type: TaskType | None = None
    ) -> QueueTask:
        """Return the task once it is completed or failed; TaskTimeoutError after `timeout`."""
        await self.start()
        seen = self._fresh.pop(task_id, None)
        if isinstance(seen, QueueTask):
            return seen
        forgotten = self._forgotten
        loop = asyncio.get_running_loop()
        future: asyncio.Future[QueueTask] = loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                for sub in self._subs:
                    if task_type is None or task_type in sub.types:
                        await sub.ready.wait()
                self._futures.setdefault(task_id, []).append(future)
                self._types[task_id] = task_type
                # Read the record unless the announcement is sure to come: known fresh, and no
                # subscription dropped while this wait got ready.
                if seen is not False or self._forgotten != forgotten:
                    self._request_read(task_id, task_type)
                return await future
        except TimeoutError:
            raise TaskTimeoutError(
                f"no result for task {task_id} after {timeout}s", task_id
            ) from None
        finally:
            self._forget(task_id, future)

    def _forget(self, task_id: str, future: asyncio.Future[QueueTask]) -> None:
        waiting = self._futures.get(task_id)
        if waiting and future in waiting:
            waiting.remove(future)
        if not waiting:
            self._futures.pop(task_id, None)
            self._types.pop(task_id, None)

    def _resolve(self, task: QueueTask) -> None:
        for future in self._futures.get(task.task_id, []):
            if not future.done():
                future.set_result(task)

    def _request_read(self, task_id: str, task_type: TaskType | None) -> None:
        self._to_read[task_id] = task_type
        self._read_wakeup.set()

    async def _listen(self, sub: _Subscription) -> None:
        backoff = 0.05
        while not self._closing:
            pubsub = open_pubsub(self._sub_client)
            try:
                await subscribe(self._sub_client, pubsub, self._keys, sub.channels, sub.types[0])
                confirmed: set[str] = set()
                while not self._closing:
                    for kind, channel, data in await next_messages(pubsub, sub.channels, 5.0):
                        if kind in ANNOUNCED:
                            self._on_message(channel, data)
                        elif kind in CONFIRMED:
                            confirmed.add(text(channel))
                            # Each confirmation once all are in is a re-subscription: read
                            # again.
                            if confirmed.issuperset(sub.channels):
                                self._on_subscribed(sub)
                                backoff = 0.05
            except REDIS_ERRORS as exc:
                self._unsubscribed(sub)
                log.warning("waiter_pubsub_lost", error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            finally:
                with contextlib.suppress(*REDIS_ERRORS):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _on_subscribed(self, sub: _Subscription) -> None:
        # Announcements sent while we were not subscribed are gone: re-read every pending
        # record of these types (and those waited for without a type). A confirmation can
        # also follow a reconnect nobody saw fail, so no enqueued task counts as fresh.
        self._forget_fresh()
        for task_id, task_type in self._types.items():
            if task_type is None or task_type in sub.types:
                self._request_read(task_id, task_type)
        sub.ready.set()

    def _on_message(self, channel: bytes, raw: Any) -> None:
        """Route one announcement; a foreign or malformed message is logged and skipped."""
        try:
            data = loads(raw)
            task_id = data.get("task_id") if isinstance(data, dict) else None
            if not isinstance(task_id, str):
                return
            if task_id not in self._futures:
                if task_id in self._fresh and data.get("status") in FINAL_STATUSES:
                    self._fresh[task_id] = task_from_message(data) or True
                return
            task = task_from_message(data)
        except Exception as exc:  # noqa: BLE001 - anyone may publish on the channel
            log.warning("waiter_bad_message", error=f"{type(exc).__name__}: {exc}"[:300])
            return
        if task is not None:
            self._resolve(task)
        elif data.get("status") in FINAL_STATUSES:
            self._request_read(task_id, self._channels.get(text(channel)))

    async def _read_loop(self) -> None:
        while not self._closing:
            await self._read_wakeup.wait()
            self._read_wakeup.clear()
            batch, self._to_read = self._to_read, {}
            batch = {tid: t for tid, t in batch.items() if tid in self._futures}
            if not batch:
                continue
            try:
                await self._read_records(batch)
            except REDIS_ERRORS as exc:
                log.warning("waiter_read_failed", error=str(exc), pending=len(batch))
                await asyncio.sleep(0.2)
                for task_id, task_type in batch.items():
                    self._to_read.setdefault(task_id, task_type)
                self._read_wakeup.set()

    async def _read_records(self, batch: dict[str, TaskType | None]) -> None:
        """Read many records' status in one round trip (a type hint saves looking in every
        stream), then whole records only for the final ones: a waiter registered early
        costs one small read, not a parse of its payload."""
        pipe = self._reader.pipeline(transaction=False)
        keys: list[tuple[str, str]] = []
        for task_id, task_type in batch.items():
            for candidate in [task_type] if task_type else list(TaskType):
                key = self._keys.record(candidate, task_id)
                pipe.hget(key, "status")
                keys.append((task_id, key))
        statuses = await pipe.execute()
        final = [(tid, key) for (tid, key), st in zip(keys, statuses, strict=True) if st in _FINAL]
        if not final:
            return
        pipe = self._reader.pipeline(transaction=False)
        for _, key in final:
            pipe.hgetall(key)
        for (task_id, _), fields in zip(final, await pipe.execute(), strict=True):
            try:
                task = task_from_record(fields) if fields else None
            except Exception as exc:  # noqa: BLE001 - a damaged record must not stop the reader
                log.error(
                    "waiter_bad_record", task_id=task_id, error=f"{type(exc).__name__}: {exc}"
                )
                continue
            if task is not None and task.is_final:
                self._resolve(task)
