"""Handlers and helpers of the start-step attack tests (see docs/guarantees.md, "The start
step off the latency path")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from consumers.handlers.image_prompt import ImagePromptHandler
from consumers.providers.base import RetryPolicy
from consumers.providers.venice import VeniceClient
from consumers.runner import RunnerOptions
from consumers.task_run import TaskRun
from shared.config_values import Secret
from shared.queue import QueueService
from shared.queue.lua import SCRIPTS
from shared.queue.scripts import script_sha
from shared.tasks import ImagePromptResult, QueueTask, TaskResult, TaskType
from tests.support.fakes.venice import FakeVenice

PROMPT = TaskType.GENERATE_IMAGE_PROMPT
PAYLOAD = {"girl_name": "Мира", "girl_description": "бариста"}


def options(**kw: Any) -> RunnerOptions:
    return RunnerOptions(limits=dict.fromkeys(TaskType, 10), burst=True, **kw)


@dataclass
class Instant:
    """Returns at once and touches nothing outside: the case the early finish is for. Notes
    whether the start had answered when it ran (so a test knows it ran before the answer)."""

    runs: int = 0
    before_answer: list[bool] = field(default_factory=list)

    async def __call__(self, task: QueueTask, run: TaskRun) -> TaskResult:
        self.runs += 1
        self.before_answer.append(not run.answer.done())
        return ImagePromptResult(prompt="instant")


class Watched:
    """A real handler (the image prompt, whose provider is a fake Venice on loopback), noting
    whether its run had been answered by its start when it began."""

    def __init__(self, inner: ImagePromptHandler) -> None:
        self._inner = inner
        self.before_answer: list[bool] = []

    async def __call__(self, task: QueueTask, run: TaskRun) -> TaskResult:
        self.before_answer.append(not run.answer.done())
        return await self._inner(task, run)


@asynccontextmanager
async def venice_handler() -> AsyncIterator[tuple[FakeVenice, Watched]]:
    async with FakeVenice() as venice:
        client = VeniceClient(
            Secret(venice.api_key),
            base_url=venice.url,
            timeout=5.0,
            retry=RetryPolicy(budget_seconds=0),
        )
        try:
            yield venice, Watched(ImagePromptHandler(client))
        finally:
            await client.aclose()


async def record(
    redis_client: aioredis.Redis, queue: QueueService, task_id: str
) -> dict[str, str]:
    raw: dict[Any, Any] = await redis_client.hgetall(queue.keys.record(PROMPT, task_id))
    return {k.decode(): v.decode() for k, v in raw.items()}


def start_sha() -> bytes:
    """What a start step's command carries (a proxy arms its faults on it)."""
    return script_sha(SCRIPTS["start"]).encode()
