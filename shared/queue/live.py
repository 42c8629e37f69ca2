"""Live output of streamed tasks: consumers append text deltas to a per-task Redis stream,
the bot follows every task it shows with one blocking XREAD per hash tag on one connection.

Live output is a preview: the final text always comes with the task's result.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.exceptions import RedisClusterException, RedisError

from shared.closing import stop_loops
from shared.config import Settings
from shared.queue.connection import BLOCK_MS, RedisClient, single_connection_client
from shared.queue.keys import BotKeys, Keys
from shared.tasks import TaskType

log = structlog.get_logger(__name__)

# Live stream entry fields: a text delta, the end marker, and "what was shown is void, this
# attempt starts over" (a task re-run after its consumer died).
DELTA = b"d"
END = b"end"
RESET = b"reset"
END_DONE = "done"
END_STOPPED = "stopped"
END_CUT = "cut"
ENDS = frozenset({END_DONE, END_STOPPED, END_CUT})
# A reply is bounded, so this cap only guards against a runaway writer.
LIVE_MAXLEN = 4096
_REDIS_ERRORS = (RedisError, RedisClusterException, OSError)


class LiveWriter:
    """Appends one running task's deltas to its live stream, batched.

    The first delta is written at once (time to first text); later ones are coalesced into
    one XADD per `flush_ms` or per `flush_chars` characters, whichever comes first. A write
    that fails is kept and tried again with the next one: live output never fails the task.
    """

    def __init__(
        self,
        redis: RedisClient,
        key: str,
        *,
        flush_ms: float = 50.0,
        flush_chars: int = 200,
        ttl: int = 900,
        reset: bool = False,
    ) -> None:
        self.key = key
        self._redis = redis
        self._interval = flush_ms / 1000
        self._chars = flush_chars
        self._ttl = ttl
        self._reset = reset
        self._buffer: list[str] = []
        self._size = 0
        self._last_flush: float | None = None
        self._timer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.text = ""  # everything added so far
        self.closed = False

    @classmethod
    def for_task(
        cls,
        redis: RedisClient,
        settings: Settings,
        task_type: TaskType,
        task_id: str,
        attempt: int,
        *,
        keys: Keys | None = None,
    ) -> LiveWriter:
        """A writer per the settings; a later attempt first voids what an earlier one showed."""
        return cls(
            redis,
            (keys or Keys.from_settings(settings)).live(task_type, task_id),
            flush_ms=settings.live_flush_ms,
            flush_chars=settings.live_flush_chars,
            ttl=settings.live_ttl_seconds,
            reset=attempt > 1,
        )

    async def add(self, delta: str) -> None:
        if not delta or self.closed:
            return
        self.text += delta
        self._buffer.append(delta)
        self._size += len(delta)
        due = self._last_flush is None or time.monotonic() - self._last_flush >= self._interval
        if due or self._size >= self._chars:
            await self._flush()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._flush_later())

    async def close(self, end: str) -> None:
        """Flush what is buffered and write the end marker (`done`, `stopped` or `cut`)."""
        if end not in ENDS:
            raise ValueError(f"unknown live end {end!r}")
        if self.closed:
            return
        self.closed = True
        self._cancel_timer()
        await self._flush(end)

    async def abandon(self) -> None:
        """Stop without an end marker (the task goes back to the queue and runs again)."""
        self.closed = True
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
        self._timer = None

    async def _flush_later(self) -> None:
        assert self._last_flush is not None  # noqa: S101 - only scheduled after a flush
        await asyncio.sleep(max(0.0, self._last_flush + self._interval - time.monotonic()))
        self._timer = None
        await self._flush()

    async def _flush(self, end: str | None = None) -> None:
        async with self._lock:
            self._last_flush = time.monotonic()
            if not self._buffer and end is None:
                return
            # Taken out before the write: deltas added while it is in flight wait for the next.
            batch, reset = self._buffer, self._reset
            self._buffer, self._size, self._reset = [], 0, False
            text = "".join(batch)
            pipe = self._redis.pipeline(transaction=False)
            rows: list[dict[Any, Any]] = [{DELTA: text.encode()}] if text else []
            if end is not None:  # its own last entry: no delta ever follows it
                rows.append({END: end.encode()})
            if reset and rows:
                rows[0][RESET] = b"1"
            for row in rows:
                pipe.xadd(self.key, row, maxlen=LIVE_MAXLEN, approximate=True)
            pipe.expire(self.key, self._ttl)
            try:
                await pipe.execute()
            except _REDIS_ERRORS as exc:
                log.warning("live_write_failed", key=self.key, error=str(exc))
                # Kept for the next flush (an end marker is not retried: the result is final).
                self._buffer = batch + self._buffer
                self._size += len(text)
                self._reset = reset


@dataclass(frozen=True, slots=True)
class LiveChunk:
    """New output of one followed task; several entries read at once are merged.

    `reset`: everything shown before is void and `text` starts the output over (the task
    is being run again). `end` is set on the last chunk.
    """

    task_id: str
    text: str
    last_id: str
    end: str | None = None
    reset: bool = False


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(slots=True)
class _Follower:
    task_id: str
    last_id: str
    chunks: asyncio.Queue[LiveChunk] = field(default_factory=asyncio.Queue)


def merge_entries(task_id: str, entries: list[tuple[str, dict[bytes, bytes]]]) -> LiveChunk:
    """One chunk from consecutive live entries (text after the last reset, the end if any)."""
    parts: list[str] = []
    reset = False
    end: str | None = None
    for _, fields in entries:
        if RESET in fields:
            parts, reset = [], True
        if DELTA in fields:
            parts.append(fields[DELTA].decode(errors="replace"))
        if END in fields:
            end = fields[END].decode(errors="replace")
            break
    return LiveChunk(task_id, "".join(parts), entries[-1][0], end, reset)


class LiveReader:
    """Follows the live streams of every task this process shows, on one connection.

    One blocking XREAD per task type (hash tag) covers all followed tasks of the type, plus
    the reader's own wake stream: `follow` adds an entry there, so a new task is included at
    once instead of after the block timeout. The wake entry goes over a second, tiny
    connection because the first is blocked. After a reconnect each task resumes from its
    last id.
    """

    def __init__(self, settings: Settings, client_name: str = "live") -> None:
        self._keys = Keys.from_settings(settings)
        self._bot_keys = BotKeys.from_settings(settings)  # the wake stream is the bot's own
        self._ttl = settings.live_ttl_seconds
        self._reader_id = uuid.uuid4().hex[:12]
        self._redis = single_connection_client(settings, client_name)
        self._waker = single_connection_client(settings, f"{client_name}:wake")
        self._follows: dict[TaskType, dict[str, list[_Follower]]] = {}
        self._wake_ids: dict[TaskType, str] = {}
        self._changed = asyncio.Event()
        self._blocked: set[TaskType] = set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        if self._task is None and not self._closing:
            self._task = asyncio.create_task(self._supervised(), name="live-reader")

    async def aclose(self) -> None:
        # The flag and the wakeup, not only the cancel (see shared.closing).
        self._closing = True
        self._changed.set()
        if self._task is not None:
            await stop_loops([self._task], "live-reader")
            self._task = None
        await self._redis.aclose()
        await self._waker.aclose()

    async def follow(
        self, task_type: TaskType, task_id: str, after: str = "0-0"
    ) -> AsyncIterator[LiveChunk]:
        """Yield the task's new output after `after` until its end marker, or until the
        caller stops iterating. A task without a live stream yields nothing meanwhile.

        Iterate it inside `contextlib.aclosing(...)` to unfollow the moment you stop (a
        dropped generator is only closed when it is collected).
        """
        await self.start()
        follower = _Follower(task_id, after)
        self._follows.setdefault(task_type, {}).setdefault(task_id, []).append(follower)
        await self._wake(task_type)
        try:
            while True:
                chunk = await follower.chunks.get()
                yield chunk
                if chunk.end is not None:
                    return
        finally:
            self._unfollow(task_type, follower)

    def following(self) -> int:
        return sum(len(tasks) for tasks in self._follows.values())

    def _unfollow(self, task_type: TaskType, follower: _Follower) -> None:
        tasks = self._follows.get(task_type, {})
        followers = tasks.get(follower.task_id, [])
        if follower in followers:
            followers.remove(follower)
        if not followers:
            tasks.pop(follower.task_id, None)
        if not tasks:
            self._follows.pop(task_type, None)

    async def _wake(self, task_type: TaskType) -> None:
        self._changed.set()
        if task_type not in self._blocked:
            return  # the loop re-reads the set of followed tasks before its next XREAD
        key = self._bot_keys.live_wake(task_type, self._reader_id)
        try:
            pipe = self._waker.pipeline(transaction=False)
            pipe.xadd(key, {b"w": b"1"}, maxlen=1, approximate=False)
            pipe.expire(key, self._ttl)
            await pipe.execute()
        except _REDIS_ERRORS as exc:  # the block times out anyway; only latency is lost
            log.warning("live_wake_failed", error=str(exc))

    async def _supervised(self) -> None:
        backoff = 0.05
        while not self._closing:
            try:
                await self._read_loop()
            except _REDIS_ERRORS as exc:
                self._blocked.clear()
                log.warning("live_reader_lost", error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:
                self._blocked.clear()
                log.exception("live_reader_crashed")
                await asyncio.sleep(0.2)
            else:
                backoff = 0.05

    async def _read_loop(self) -> None:
        while not self._closing:
            self._changed.clear()
            types = list(self._follows)
            if not types:
                await self._changed.wait()
                continue
            # Several hash tags cannot share one XREAD (a cluster refuses it); with more than
            # one type followed, each read blocks briefly so none waits on another.
            block = BLOCK_MS if len(types) == 1 else 20
            for task_type in types:
                await self._read_type(task_type, block)

    async def _read_type(self, task_type: TaskType, block: int) -> None:
        tasks = self._follows.get(task_type)
        if not tasks:
            return
        wake = self._bot_keys.live_wake(task_type, self._reader_id)
        streams: dict[Any, Any] = {wake: self._wake_ids.get(task_type, "0-0")}
        task_ids: dict[str, str] = {}
        for task_id, followers in tasks.items():
            key = self._keys.live(task_type, task_id)
            task_ids[key] = task_id
            streams[key] = min((f.last_id for f in followers), key=_id_key)
        self._blocked.add(task_type)
        try:
            reply: Any = await self._redis.xread(streams, block=block)
        finally:
            self._blocked.discard(task_type)
        for key, entries in reply or []:
            name = key.decode()
            if name == wake:
                self._wake_ids[task_type] = entries[-1][0].decode()
                continue
            task_id = task_ids[name]
            decoded = [(eid.decode(), fields) for eid, fields in entries]
            self._deliver(tasks.get(task_id, []), task_id, decoded)

    @staticmethod
    def _deliver(
        followers: list[_Follower], task_id: str, entries: list[tuple[str, dict[bytes, bytes]]]
    ) -> None:
        for follower in followers:
            after = _id_key(follower.last_id)
            new = [e for e in entries if _id_key(e[0]) > after]
            if new:
                chunk = merge_entries(task_id, new)
                follower.last_id = chunk.last_id
                follower.chunks.put_nowait(chunk)
