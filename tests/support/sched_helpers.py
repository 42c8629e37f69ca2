"""Helpers for the scheduling tests: a fake Venice that counts concurrent calls, payloads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from shared.queue import QueueService
from shared.tasks import TaskType
from tests.support.fakes.venice import CHAT_PATH, IMAGE_PATH, FakeVenice

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PAYLOADS: dict[TaskType, dict[str, Any]] = {
    TaskType.GENERATE_REPLY: {
        "system_prompt": "Ты Мира.",
        "history": [],
        "dialog_id": 1,
        "user_message": "привет",
    },
    TaskType.GENERATE_IMAGE_PROMPT: {"girl_name": "Мира", "girl_description": "бариста"},
    TaskType.GENERATE_IMAGE: {"prompt": "portrait", "dialog_id": 1, "girl_id": 1},
    TaskType.SUMMARIZE_DIALOG: {
        "dialog_id": 1,
        "upto": 1,
        "turns": [{"role": "user", "content": "меня зовут Вася"}],
    },
}


class CountingVenice(FakeVenice):
    """FakeVenice whose chat and image calls take `delay` seconds; it counts the calls that
    run at once (`peak`) and when each started (`starts`, monotonic seconds)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.active = 0
        self.peak = 0
        self.starts: list[float] = []

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(CHAT_PATH, self._counted(self._chat))
        app.router.add_post(IMAGE_PATH, self._counted(self._image))
        app.router.add_get("/api/v1/models", self._models)
        app.router.add_get("/api/v1/api_keys/rate_limits", self._rate_limits)

    def _counted(self, handler: Handler) -> Handler:
        async def counted(request: web.Request) -> web.StreamResponse:
            self.starts.append(time.monotonic())
            self.active += 1
            self.peak = max(self.peak, self.active)
            try:
                await self.pause(self.delay)
                return await handler(request)
            finally:
                self.active -= 1

        return counted


async def wait_alive(queue: QueueService, task_type: TaskType, *names: str) -> None:
    """Until every named consumer has sent its first heartbeat (it is serving)."""
    for _ in range(600):
        beats = await queue.redis.hgetall(queue.keys.alive(task_type))
        if all(name.encode() in beats for name in names):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"consumers {names} did not start")
