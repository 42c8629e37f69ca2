"""OpenAI-compatible speech to text (`POST /audio/transcriptions`, multipart) and text to
speech (`POST /audio/speech`, JSON in, audio bytes out); Venice serves both."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

import httpx

from consumers.providers.base import ProviderHttp, RetryPolicy, call_with_retries
from shared.config_values import Secret
from shared.errors import ProviderRejectedError

TRANSCRIPTIONS_PATH = "/audio/transcriptions"
SPEECH_PATH = "/audio/speech"
# What Telegram's sendVoice shows as a voice note: OGG pages carrying Opus.
OGG_MAGIC = b"OggS"
# A reply read aloud is seconds to minutes of Opus: far below this. A bigger answer is not
# audio we asked for, and would bloat the task's record in Redis.
MAX_SPEECH_BYTES = 8 * 1024 * 1024


class SpeechToTextClient(Protocol):
    name: str

    async def transcribe(self, audio: bytes, filename: str, mime_type: str) -> str: ...

    async def aclose(self) -> None: ...


class TextToSpeechClient(Protocol):
    name: str

    async def synthesize(self, text: str, voice: str) -> bytes:
        """OGG/Opus audio of `text` read with `voice`."""
        ...

    async def aclose(self) -> None: ...


class _OpenAIAudio:
    """One OpenAI-compatible audio endpoint's client: its model, key and httpx client."""

    def __init__(
        self,
        api_key: Secret | None,
        *,
        base_url: str,
        model: str,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        name: str = "venice",
    ) -> None:
        self.name = name
        self.model = model
        self._http = ProviderHttp(
            name, base_url, timeout=timeout, retry=retry or RetryPolicy(), secret=api_key
        )

    async def aclose(self) -> None:
        await self._http.aclose()


class OpenAITranscriber(_OpenAIAudio):
    """SpeechToTextClient: multipart `file` and `model`, answer `{"text": ...}`."""

    async def transcribe(self, audio: bytes, filename: str, mime_type: str) -> str:
        """The transcript; an answer without text (or not JSON) is a ProviderRejectedError."""

        def attempt() -> Awaitable[httpx.Response]:
            # Built anew per attempt: a multipart body is a stream read once.
            request = self._http.client.build_request(
                "POST",
                TRANSCRIPTIONS_PATH,
                files={"file": (filename, audio, mime_type)},
                data={"model": self.model, "response_format": "json"},
            )
            return self._http.send(request)

        response = await call_with_retries(self.name, self._http.retry, attempt)
        body = self._http.json_object(response)
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            message = f"{self.name} {TRANSCRIPTIONS_PATH} returned no text"
            raise ProviderRejectedError(message, self.name, response.status_code)
        return text.strip()


class OpenAISpeaker(_OpenAIAudio):
    """TextToSpeechClient asking for `response_format: opus` (OGG/Opus)."""

    async def synthesize(self, text: str, voice: str) -> bytes:
        """OGG/Opus bytes; anything else (JSON, MP3, empty, oversized) is refused for good."""
        body = {"model": self.model, "input": text, "voice": voice, "response_format": "opus"}
        response = await self._http.request("POST", SPEECH_PATH, json=body)
        audio = response.content
        where = f"{self.name} {SPEECH_PATH}"
        if len(audio) > MAX_SPEECH_BYTES:
            message = f"{where} returned {len(audio)} bytes (over {MAX_SPEECH_BYTES})"
            raise ProviderRejectedError(message, self.name, response.status_code)
        if not audio.startswith(OGG_MAGIC):
            kind = response.headers.get("content-type", "no content type")
            message = f"{where} returned no OGG/Opus audio ({kind}, {len(audio)} bytes)"
            raise ProviderRejectedError(message, self.name, response.status_code)
        return audio
