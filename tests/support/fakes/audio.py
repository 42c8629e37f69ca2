"""A loopback fake of the OpenAI-compatible audio endpoints Venice serves:
`POST /api/v1/audio/transcriptions` (multipart `file` and `model`, answer `{"text": ...}`) and
`POST /api/v1/audio/speech` (JSON `model`, `input`, `voice`, `response_format`; answer the
audio bytes). Wrong or missing Bearer key: 401; malformed requests: 400 as the real server
says. Failures, slow answers and hangs are scripted with `script(...)` (tests.support.fakes.http);
`hold_next` keeps the next call waiting until `release` (or the server closes)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from aiohttp import web

from consumers.providers.offline_audio import silent_ogg_opus
from tests.support.fakes.http import FakeServer, RecordedRequest, json_response, read_json

TRANSCRIPTIONS_PATH = "/api/v1/audio/transcriptions"
SPEECH_PATH = "/api/v1/audio/speech"
DEFAULT_KEY = "audio-test-key-0123456789"
FORMATS = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "wav": "audio/wav"}


@dataclass(frozen=True)
class Part:
    """One part of a multipart body."""

    name: str
    filename: str | None
    content_type: str
    data: bytes


def parse_multipart(content_type: str, body: bytes) -> dict[str, Part]:
    """The parts of a `multipart/form-data` body by name (ValueError if it is not one)."""
    if not content_type.startswith("multipart/form-data") or "boundary=" not in content_type:
        raise ValueError("not multipart/form-data")
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ValueError("no parts")
    parts: dict[str, Part] = {}
    for part in message.iter_parts():
        assert isinstance(part, Message)
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise ValueError("a part without a name")
        data = part.get_payload(decode=True)
        parts[name] = Part(
            name=name,
            filename=part.get_filename(),
            content_type=part.get_content_type(),
            data=data if isinstance(data, bytes) else b"",
        )
    return parts


class FakeAudio(FakeServer):
    """Speaks the audio contract; `transcript` is the text every transcription returns,
    `speech` the audio every synthesis returns (a real OGG/Opus file by default)."""

    base_path = "/api/v1"

    def __init__(
        self,
        api_key: str = DEFAULT_KEY,
        transcript: str = "Расскажи мне сказку",
        speech: bytes | None = None,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.transcript = transcript
        self.speech = silent_ogg_opus(1.0) if speech is None else speech
        self.uploads: list[dict[str, Part]] = []
        self.held = asyncio.Event()
        self._hold = False
        self._release = asyncio.Event()

    def hold_next(self) -> None:
        """The next transcription or synthesis waits (`held` set) until `release`."""
        self._hold = True
        self.held.clear()
        self._release.clear()

    def release(self) -> None:
        self._release.set()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(TRANSCRIPTIONS_PATH, self._transcribe)
        app.router.add_post(SPEECH_PATH, self._speech)
        app.router.add_get("/api/v1/models", self._models)

    @property
    def transcriptions(self) -> list[RecordedRequest]:
        return self.requests_to(TRANSCRIPTIONS_PATH)

    @property
    def syntheses(self) -> list[RecordedRequest]:
        return self.requests_to(SPEECH_PATH)

    def _refused(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return json_response({"error": "Authentication failed"}, 401)
        return None

    async def _held(self) -> None:
        if self._hold:
            self._hold = False
            self.held.set()
            await asyncio.wait(
                [
                    asyncio.ensure_future(self._release.wait()),
                    asyncio.ensure_future(self.pause(120)),
                ],
                return_when=asyncio.FIRST_COMPLETED,
            )

    async def _transcribe(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        try:
            parts = parse_multipart(request.headers.get("Content-Type", ""), await request.read())
        except ValueError as exc:
            return json_response({"error": f"Invalid request: {exc}"}, 400)
        missing = [name for name in ("file", "model") if name not in parts]
        if missing or not parts["file"].data:
            issues = [{"path": [name], "message": "Required"} for name in missing or ["file"]]
            return json_response({"error": "Invalid request", "issues": issues}, 400)
        self.uploads.append(parts)
        await self._held()
        return json_response({"text": self.transcript})

    async def _speech(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        data: Any = await read_json(request)
        if not isinstance(data, dict):
            return json_response({"error": "Invalid request: body must be JSON"}, 400)
        missing = [key for key in ("model", "input", "voice") if not data.get(key)]
        if missing:
            issues = [{"path": [key], "message": "Required"} for key in missing]
            return json_response({"error": "Invalid request", "issues": issues}, 400)
        kind = FORMATS.get(str(data.get("response_format", "mp3")))
        if kind is None:
            return json_response({"error": "Invalid request: unknown response_format"}, 400)
        await self._held()
        return web.Response(body=self.speech, content_type=kind)

    async def _models(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        return json_response({"object": "list", "data": [{"id": "tts-kokoro"}]})
