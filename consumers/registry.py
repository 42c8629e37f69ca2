"""The TaskHandler protocol and the handler table: each task type's handler, built from the
provider clients the consumer was started with."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from consumers.handlers.image import ImageHandler
from consumers.handlers.image_prompt import ImagePromptHandler
from consumers.handlers.reply import ReplyHandler
from consumers.handlers.summary import SummaryHandler
from consumers.handlers.voice import SpeechHandler, TranscribeHandler
from consumers.providers.audio import SpeechToTextClient, TextToSpeechClient
from consumers.providers.base import ImageClient, LLMClient
from consumers.task_run import TaskRun
from shared.errors import ConfigError
from shared.queue.audio import AudioStore
from shared.tasks import TASK_SPECS, ProviderKind, QueueTask, TaskResult, TaskType


class TaskHandler(Protocol):
    async def __call__(self, task: QueueTask, run: TaskRun) -> TaskResult: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Providers:
    """The provider clients of one consumer process: only the kinds its types call."""

    llm: LLMClient | None = None
    images: ImageClient | None = None
    stt: SpeechToTextClient | None = None
    tts: TextToSpeechClient | None = None
    # Where transcribe_voice reads its audio (built with the STT client).
    audio: AudioStore | None = None

    def need_llm(self) -> LLMClient:
        return _need(self.llm, ProviderKind.LLM)

    def need_images(self) -> ImageClient:
        return _need(self.images, ProviderKind.IMAGE)

    def need_stt(self) -> tuple[SpeechToTextClient, AudioStore]:
        return _need(self.stt, ProviderKind.STT), _need(self.audio, ProviderKind.STT)

    def need_tts(self) -> TextToSpeechClient:
        return _need(self.tts, ProviderKind.TTS)


C = TypeVar("C")


def _need(client: C | None, kind: ProviderKind) -> C:
    if client is None:
        raise ConfigError(f"no {kind} provider was built for this consumer")
    return client


# One row per task type (its contract is registered in shared.tasks.TASK_SPECS).
HANDLERS: dict[TaskType, Callable[[Providers], TaskHandler]] = {
    TaskType.GENERATE_REPLY: lambda p: ReplyHandler(p.need_llm()),
    TaskType.GENERATE_IMAGE_PROMPT: lambda p: ImagePromptHandler(p.need_llm()),
    TaskType.GENERATE_IMAGE: lambda p: ImageHandler(p.need_images()),
    TaskType.SUMMARIZE_DIALOG: lambda p: SummaryHandler(p.need_llm()),
    TaskType.TRANSCRIBE_VOICE: lambda p: TranscribeHandler(*p.need_stt()),
    TaskType.SYNTHESIZE_VOICE: lambda p: SpeechHandler(p.need_tts()),
}


def build_handlers(
    served: Iterable[TaskType], providers: Providers
) -> dict[TaskType, TaskHandler]:
    """Construct the handlers for the served types explicitly (no import-time registry)."""
    served = list(served)
    missing = [t.value for t in served if t not in HANDLERS]
    if missing:
        raise ConfigError(f"no handler for task types: {', '.join(missing)}")
    return {t: HANDLERS[t](providers) for t in served}


def provider_kinds(served: Iterable[TaskType]) -> list[ProviderKind]:
    """The provider kinds the served types call, each once, in a stable order."""
    kinds = {TASK_SPECS[t].provider for t in served}
    return [kind for kind in ProviderKind if kind in kinds]
