"""The TaskHandler protocol and the explicit handler table a consumer serves."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from consumers.handlers.image import ImageHandler
from consumers.handlers.image_prompt import ImagePromptHandler
from consumers.handlers.reply import ReplyHandler
from consumers.providers.base import ImageClient, LLMClient
from consumers.task_run import TaskRun
from shared.errors import ConfigError
from shared.tasks import QueueTask, TaskResult, TaskType


class TaskHandler(Protocol):
    async def __call__(self, task: QueueTask, run: TaskRun) -> TaskResult: ...


def check_handlers(
    handlers: Mapping[TaskType, TaskHandler], served: Iterable[TaskType]
) -> dict[TaskType, TaskHandler]:
    """Fail at start unless every served type has exactly one handler."""
    served = list(served)
    missing = [t.value for t in served if t not in handlers]
    if missing:
        raise ConfigError(f"no handler for task types: {', '.join(missing)}")
    return {t: handlers[t] for t in served}


def build_handlers(
    served: Iterable[TaskType],
    llm: LLMClient | None,
    images: ImageClient | None,
) -> dict[TaskType, TaskHandler]:
    """Construct the handlers for the served types explicitly (no import-time registry)."""
    handlers: dict[TaskType, TaskHandler] = {}
    if llm is not None:
        handlers[TaskType.GENERATE_REPLY] = ReplyHandler(llm)
        handlers[TaskType.GENERATE_IMAGE_PROMPT] = ImagePromptHandler(llm)
    if images is not None:
        handlers[TaskType.GENERATE_IMAGE] = ImageHandler(images)
    return check_handlers(handlers, served)
