"""Payload and result models of the two voice task types (speech to text, text to speech)."""

from __future__ import annotations

from dataclasses import dataclass

from shared import checks
from shared.errors import InvalidDataError


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscribePayload:
    """A voice message to turn into text. The audio itself is not in the entry: the bot
    stores it under the task's audio key (`Keys.audio`) before enqueueing, `size` bytes
    with this SHA-256, and the consumer reads it from there. `message_id` (the voice
    message's) is echoed in the result: the transcript is answered as that message."""

    message_id: int
    size: int
    sha256: str
    filename: str = "voice.ogg"
    mime_type: str = "audio/ogg"

    @classmethod
    def from_json(cls, data: object) -> TranscribePayload:
        d = checks.as_object(data)
        size = checks.required(d, "size", int)
        if size < 1:
            raise InvalidDataError("size", "must be at least 1")
        return cls(
            message_id=checks.required(d, "message_id", int),
            size=size,
            sha256=checks.text(d, "sha256", min_length=64),
            filename=checks.optional(d, "filename", str, "voice.ogg"),
            mime_type=checks.optional(d, "mime_type", str, "audio/ogg"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscriptResult:
    text: str
    message_id: int

    @classmethod
    def from_json(cls, data: object) -> TranscriptResult:
        d = checks.as_object(data)
        return cls(
            text=checks.text(d, "text", min_length=1),
            message_id=checks.required(d, "message_id", int),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SpeechPayload:
    """A reply to read aloud with `voice` (the bot fills it from TTS_VOICE)."""

    text: str
    voice: str

    @classmethod
    def from_json(cls, data: object) -> SpeechPayload:
        d = checks.as_object(data)
        return cls(text=checks.text(d, "text", min_length=1), voice=checks.text(d, "voice"))


@dataclass(frozen=True, slots=True, kw_only=True)
class SpeechResult:
    """OGG/Opus audio (what Telegram's sendVoice takes), base64 as images are."""

    audio_base64: str
    audio_size: int

    @classmethod
    def from_json(cls, data: object) -> SpeechResult:
        d = checks.as_object(data)
        return cls(
            audio_base64=checks.text(d, "audio_base64", min_length=1),
            audio_size=checks.required(d, "audio_size", int),
        )
