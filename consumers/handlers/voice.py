"""transcribe_voice and synthesize_voice: a voice message to text, a reply to OGG/Opus."""

from __future__ import annotations

import base64

from consumers.providers.audio import SpeechToTextClient, TextToSpeechClient
from consumers.task_run import TaskRun
from shared.errors import InvalidPayloadError
from shared.queue.audio import AudioStore, sha256_of
from shared.tasks import QueueTask, TaskType
from shared.voice_tasks import SpeechPayload, SpeechResult, TranscribePayload, TranscriptResult


class TranscribeHandler:
    def __init__(self, stt: SpeechToTextClient, audio: AudioStore) -> None:
        self._stt = stt
        self._audio = audio

    async def __call__(self, task: QueueTask, run: TaskRun) -> TranscriptResult:
        payload = task.payload_as(TranscribePayload)
        data = await self._audio.get(TaskType.TRANSCRIBE_VOICE, task.task_id)
        # Gone (expired, or the bot already settled the task) or not what the bot stored:
        # no attempt can succeed, so the task fails at once and is refunded.
        if data is None:
            raise InvalidPayloadError("the voice message's audio is gone", task.task_id)
        if len(data) != payload.size or sha256_of(data) != payload.sha256:
            raise InvalidPayloadError("the voice message's audio does not match", task.task_id)
        text = await self._stt.transcribe(data, payload.filename, payload.mime_type)
        return TranscriptResult(text=text, message_id=payload.message_id)


class SpeechHandler:
    def __init__(self, tts: TextToSpeechClient) -> None:
        self._tts = tts

    async def __call__(self, task: QueueTask, run: TaskRun) -> SpeechResult:
        payload = task.payload_as(SpeechPayload)
        audio = await self._tts.synthesize(payload.text, payload.voice)
        return SpeechResult(audio_base64=base64.b64encode(audio).decode(), audio_size=len(audio))
