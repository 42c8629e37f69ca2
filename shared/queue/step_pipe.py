"""Steps written on one held connection without waiting for the answers of those before them.

Redis runs the commands of one connection in the order they arrive, so a step written behind
another runs after it; the answers come back in the same order and are read by one reader.
The runner writes a batch's start step here before its handlers run and, behind it, the
finishes of handlers that ended before the start answered (see docs/guarantees.md).

Nothing here retries: a dropped connection fails every step still waiting for its answer
(each may or may not have run), and the caller falls back to `Scripts.run`, whose steps are
safe to repeat. An error answer (NOSCRIPT, MOVED during a failover) is returned in place of
its step's answer, and the caller falls back the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis.asyncio import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from shared.queue.connection import RedisClient
from shared.queue.scripts import Scripts
from shared.queue.steps import Step

Answer = asyncio.Future[list[Any]]


class StepPipe:
    """One connection (to the node owning `slot_key` on a cluster) for pipelined steps."""

    def __init__(self, redis: RedisClient, scripts: Scripts, slot_key: str) -> None:
        self._redis = redis
        self._scripts = scripts
        self._slot_key = slot_key
        self._conn: AbstractConnection | None = None
        self._release: Any = None
        self._waiting: deque[tuple[int, Answer]] = deque()
        self._reader: asyncio.Task[None] | None = None
        self._reader_conn: AbstractConnection | None = None
        self._lock = asyncio.Lock()

    async def send(self, steps: Sequence[Step]) -> Answer:
        """Write the steps at once; the future gets their answers (an error in place of a
        step's answer). Raises RedisError or OSError when the write itself failed."""
        packed = [
            ("EVALSHA", self._scripts.sha(s), len(keys), *keys, *s.args())
            for s in steps
            for keys in (s.keys(),)
        ]
        answer: Answer = asyncio.get_running_loop().create_future()
        async with self._lock:
            conn = await self._connection()
            self._waiting.append((len(packed), answer))
            try:
                await conn.send_packed_command(conn.pack_commands(packed), check_health=False)
            except BaseException as exc:
                await self._broken(exc)
                raise
            # A reader still giving up a broken connection must not be taken for this one's.
            if self._reader is None or self._reader.done() or self._reader_conn is not conn:
                self._reader_conn = conn
                self._reader = asyncio.create_task(self._read(conn), name="step-pipe-reader")
        return answer

    async def _connection(self) -> AbstractConnection:
        if self._conn is not None:
            return self._conn
        if isinstance(self._redis, RedisCluster):
            await self._redis.initialize()
            node = self._redis.get_node_from_key(self._slot_key)
            if node is None:
                raise RedisConnectionError(f"no node serves {self._slot_key}")
            conn: AbstractConnection = node.acquire_connection()
            self._release = node.release
        else:
            pool = self._redis.connection_pool
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
            self._release = pool.release
        self._conn = conn  # it connects on its first write
        return conn

    async def _read(self, conn: AbstractConnection) -> None:
        try:
            while self._waiting and self._conn is conn:
                count, answer = self._waiting[0]
                replies: list[Any] = []
                for _ in range(count):
                    try:
                        replies.append(await conn.read_response())
                    except ResponseError as exc:
                        replies.append(exc)
                self._waiting.popleft()
                if not answer.done():
                    answer.set_result(replies)
        except BaseException as exc:
            if self._conn is conn:  # not already given up by a failed send
                await self._broken(exc)
            if not isinstance(exc, RedisError | OSError):
                raise

    async def _broken(self, exc: BaseException) -> None:
        """Fail every step still waiting and give the connection up (the next send opens
        another): their answers, if any come, can no longer be matched to them. The state is
        reset before the first await, so a send meanwhile starts afresh on a new connection."""
        error = exc if isinstance(exc, RedisError | OSError) else RedisConnectionError(str(exc))
        while self._waiting:
            _, answer = self._waiting.popleft()
            if not answer.done():
                answer.set_exception(error)
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(RedisError, OSError):
                await conn.disconnect()
            result = self._release(conn)
            if asyncio.iscoroutine(result):
                await result

    async def aclose(self) -> None:
        """Stop reading and give the connection back (steps still waiting fail)."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        await self._broken(RedisConnectionError("step pipe closed"))
