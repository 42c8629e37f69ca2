"""What the bot sends for the voice task types, once their outcome is applied: a transcript
is shown («🎤 …») and then answered like a typed message; a reply read aloud goes out as a
voice note. A failure was refunded by the outcome; the user is told so."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Protocol

from producer import texts
from producer.channel import Sender
from producer.jobs import DeliveryKind, Job
from producer.outcomes import Verdict
from shared.queue.audio import AudioStore
from shared.tasks import TaskType
from shared.voice_tasks import SpeechResult, TranscriptResult

if TYPE_CHECKING:
    from producer.outcomes import Applied

VOICE_KINDS = frozenset({DeliveryKind.TRANSCRIPT, DeliveryKind.VOICE})


class Answer(Protocol):
    async def __call__(self, job: Job, transcript: TranscriptResult, user_id: int) -> None:
        """Answer the transcript of `job`'s voice message as the user's typed message."""


class VoiceSends:
    """Sends voice outcomes; `answer` is wired by the voice use case (producer.voice)."""

    def __init__(self, sender: Sender, audio: AudioStore) -> None:
        self._sender = sender
        self._audio = audio
        self.answer: Answer | None = None

    async def send(self, job: Job, applied: Applied) -> None:
        """Safe to repeat (a claim resent after a crash): answering is idempotent by the
        reply's task id and charge id; only the messages may show twice."""
        if job.kind is DeliveryKind.VOICE:
            await self._voice_note(job, applied)
            return
        await self._audio.drop(TaskType.TRANSCRIBE_VOICE, job.task_id)
        result = applied.result
        if (
            applied.verdict is Verdict.COMPLETED
            and isinstance(result, TranscriptResult)
            and applied.user_id is not None
        ):
            if self.answer is None:
                raise RuntimeError("voice messages are not wired to the conversation")
            await self._sender.send_text(job.chat_id, texts.heard(result.text))
            await self.answer(job, result, applied.user_id)
            return
        failed = texts.ENQUEUE_FAILED if applied.verdict is Verdict.REFUSED else None
        await self._sender.send_text(job.chat_id, failed or texts.VOICE_FAILED)

    async def _voice_note(self, job: Job, applied: Applied) -> None:
        result = applied.result
        if applied.verdict is Verdict.COMPLETED and isinstance(result, SpeechResult):
            await self._sender.send_voice(job.chat_id, base64.b64decode(result.audio_base64))
            return
        failed = texts.ENQUEUE_FAILED if applied.verdict is Verdict.REFUSED else None
        await self._sender.send_text(job.chat_id, failed or texts.VOICE_OUT_FAILED)
