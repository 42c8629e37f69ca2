"""Cancel requests reach the consumer running a task: one pub/sub connection per process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import structlog

from shared.closing import stop_loops
from shared.config import Settings
from shared.queue.connection import create_redis
from shared.queue.keys import Keys
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
from shared.tasks import TaskType

log = structlog.get_logger(__name__)

OnCancel = Callable[[TaskType, str], None]


class CancelListener:
    """Calls `on_cancel(type, task_id)` for every cancel request of the served types.

    Messages sent while a connection was down are lost, so after each (re)subscription
    `on_ready` runs: the runner then reads the cancel flags of its running tasks. On a
    cluster each type's channel is listened to on its own shard (see `subscription`).
    """

    def __init__(
        self,
        settings: Settings,
        client_name: str,
        types: Sequence[TaskType],
        on_cancel: OnCancel,
        on_ready: Callable[[], Awaitable[None]],
    ) -> None:
        self._keys = Keys.from_settings(settings)
        self._channels = {self._keys.cancels(t): t for t in types}
        self._groups = channel_groups(self._channels, settings.redis_cluster)
        per_node = len(self._groups) + 1 if settings.redis_cluster else 1
        self._client = create_redis(settings, client_name, per_node, retries=0)
        self._on_cancel = on_cancel
        self._on_ready = on_ready
        self._up: set[int] = set()  # groups whose subscription is confirmed
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    def start(self) -> None:
        if not self._tasks and not self._closing:
            self._tasks = [
                asyncio.create_task(self._supervised(i), name="cancel-listener")
                for i in range(len(self._groups))
            ]

    async def aclose(self) -> None:
        # The flag, not only the cancel (see shared.closing).
        self._closing = True
        await stop_loops(self._tasks, "cancel-listener")
        self._tasks = []
        await self._client.aclose()

    async def _supervised(self, group: int) -> None:
        backoff = 0.05
        while not self._closing:
            try:
                await self._listen(group)
            except REDIS_ERRORS as exc:
                log.warning("cancel_listener_lost", error=str(exc), retry_in=backoff)
            except Exception:
                log.exception("cancel_listener_crashed")
            if group in self._up:  # it had been up: a fresh outage starts a fresh backoff
                backoff = 0.05
            self._up.discard(group)
            self.ready.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _listen(self, group: int) -> None:
        channels, types = self._groups[group]
        pubsub = open_pubsub(self._client)
        try:
            await subscribe(self._client, pubsub, self._keys, channels, types[0])
            confirmed: set[str] = set()
            while not self._closing:
                for kind, channel, data in await next_messages(pubsub, channels, 5.0):
                    if kind in CONFIRMED:
                        confirmed.add(text(channel))
                        if confirmed.issuperset(channels):
                            self._up.add(group)
                            if len(self._up) == len(self._groups):
                                self.ready.set()
                            await self._on_ready()
                    elif kind in ANNOUNCED:
                        self._dispatch(channel, data)
        finally:
            with contextlib.suppress(*REDIS_ERRORS):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        task_type = self._channels.get(text(channel))
        task_id = data.decode(errors="replace")
        if task_type is not None and 0 < len(task_id) <= 128:  # anyone may publish here
            self._on_cancel(task_type, task_id)
