"""Waiting for results: one pub/sub connection and one reader per process, shared by all waiters.

Order per waiter: subscribed (once, confirmed) -> register -> read the stored record, so a
completion is either announced to a registered waiter or already visible in the record.
After the pub/sub connection drops, every pending record is read again. Nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.config import Settings
from shared.errors import TaskTimeoutError
from shared.queue.connection import single_connection_client
from shared.queue.keys import Keys
from shared.queue.records import task_from_message, task_from_record
from shared.tasks import FINAL_STATUSES, QueueTask, TaskType, loads

log = structlog.get_logger(__name__)

_REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
_FINAL = frozenset(status.value.encode() for status in FINAL_STATUSES)
# Tasks remembered as enqueued-while-subscribed; the oldest are forgotten past this.
FRESH_LIMIT = 100_000


class ResultWaiter:
    """Routes completion announcements to in-process futures."""

    def __init__(self, settings: Settings, client_name: str = "waiter") -> None:
        self._keys = Keys.from_settings(settings)
        self._channels = self._keys.channels()
        self._sub_client = single_connection_client(settings, f"{client_name}:sub")
        self._reader = single_connection_client(settings, f"{client_name}:read")
        self._futures: dict[str, list[asyncio.Future[QueueTask]]] = {}
        self._types: dict[str, TaskType | None] = {}
        self._to_read: dict[str, TaskType | None] = {}
        self._read_wakeup = asyncio.Event()
        self._ready = asyncio.Event()
        # Tasks enqueued while the subscription was up: their completion cannot be missed, so
        # waiting for them needs no record read. False until announced, then the final task
        # (or True when the announcement was too big to carry it).
        self._fresh: dict[str, QueueTask | bool] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._supervised(self._listen), name="waiter-listen"),
                asyncio.create_task(self._supervised(self._read_loop), name="waiter-read"),
            ]

    async def _supervised(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Restart a background loop that died of anything: without it, every waiter of this
        process would fall back to its timeout."""
        while True:
            try:
                await loop()
            except Exception:
                self._ready.clear()
                log.exception("waiter_loop_crashed", loop=loop.__name__)
                await asyncio.sleep(0.2)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._sub_client.aclose()
        await self._reader.aclose()

    def expect(self, task_id: str) -> None:
        """Call just before enqueuing `task_id`: if the subscription is up now, its completion
        will reach this process, so `wait` can skip reading the record."""
        if not self._ready.is_set():
            return
        if len(self._fresh) >= FRESH_LIMIT:  # tasks enqueued and never waited for
            del self._fresh[next(iter(self._fresh))]
        self._fresh[task_id] = False

    def unexpect(self, task_id: str) -> None:
        """The enqueue found the task already there (a repeat): waiting must read its record."""
        self._fresh.pop(task_id, None)

    def _unsubscribed(self) -> None:
        # Announcements may be lost from now on: every wait reads its record again.
        self._ready.clear()
        self._fresh.clear()

    async def wait(
        self, task_id: str, timeout: float, task_type: TaskType | None = None
    ) -> QueueTask:
        """Return the task once it is completed or failed; TaskTimeoutError after `timeout`."""
        await self.start()
        seen = self._fresh.pop(task_id, None)
        if isinstance(seen, QueueTask):
            return seen
        loop = asyncio.get_running_loop()
        future: asyncio.Future[QueueTask] = loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
                self._futures.setdefault(task_id, []).append(future)
                self._types[task_id] = task_type
                if seen is not False:  # not known to be announced to us later: read it
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

    async def _listen(self) -> None:
        backoff = 0.05
        while True:
            pubsub = self._sub_client.pubsub()
            try:
                await pubsub.subscribe(*self._channels)
                confirmed = 0
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        confirmed += 1
                        if confirmed == len(self._channels):
                            self._on_subscribed()
                            backoff = 0.05
                    elif message["type"] == "message":
                        self._on_message(message)
            except _REDIS_ERRORS as exc:
                self._unsubscribed()
                log.warning("waiter_pubsub_lost", error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(*_REDIS_ERRORS):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _on_subscribed(self) -> None:
        # Announcements sent while we were not subscribed are gone: re-read every pending record.
        for task_id, task_type in self._types.items():
            self._request_read(task_id, task_type)
        self._ready.set()

    def _on_message(self, message: dict[str, Any]) -> None:
        """Route one announcement; a foreign or malformed message is logged and skipped."""
        try:
            data = loads(message["data"])
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
            self._request_read(task_id, self._channels.get(message["channel"].decode()))

    async def _read_loop(self) -> None:
        while True:
            await self._read_wakeup.wait()
            self._read_wakeup.clear()
            batch, self._to_read = self._to_read, {}
            batch = {tid: t for tid, t in batch.items() if tid in self._futures}
            if not batch:
                continue
            try:
                await self._read_records(batch)
            except _REDIS_ERRORS as exc:
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
