"""Cancel requests reach the consumer running a task: one pub/sub connection per process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import structlog
from redis.exceptions import RedisError

from shared.config import Settings
from shared.queue.connection import single_connection_client
from shared.queue.keys import Keys
from shared.tasks import TaskType

log = structlog.get_logger(__name__)

OnCancel = Callable[[TaskType, str], None]


class CancelListener:
    """Calls `on_cancel(type, task_id)` for every cancel request of the served types.

    Messages sent while the connection was down are lost, so after each (re)subscription
    `on_ready` runs: the runner then reads the cancel flags of its running tasks.
    """

    def __init__(
        self,
        settings: Settings,
        client_name: str,
        types: Sequence[TaskType],
        on_cancel: OnCancel,
        on_ready: Callable[[], Awaitable[None]],
    ) -> None:
        keys = Keys.from_settings(settings)
        self._channels = {keys.cancels(t): t for t in types}
        self._client = single_connection_client(settings, client_name)
        self._on_cancel = on_cancel
        self._on_ready = on_ready
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._supervised(), name="cancel-listener")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._client.aclose()

    async def _supervised(self) -> None:
        backoff = 0.05
        while True:
            try:
                await self._listen()
            except (RedisError, OSError) as exc:
                log.warning("cancel_listener_lost", error=str(exc), retry_in=backoff)
            except Exception:
                log.exception("cancel_listener_crashed")
            if self.ready.is_set():  # it had been up: a fresh outage starts a fresh backoff
                backoff = 0.05
            self.ready.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _listen(self) -> None:
        pubsub = self._client.pubsub()
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
                        self.ready.set()
                        await self._on_ready()
                elif message["type"] == "message":
                    self._dispatch(message["channel"], message["data"])
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        task_type = self._channels.get(channel.decode())
        task_id = data.decode(errors="replace")
        if task_type is not None and 0 < len(task_id) <= 128:  # anyone may publish here
            self._on_cancel(task_type, task_id)
