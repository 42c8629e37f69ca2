"""Voice notes on the fake Telegram: `sendVoice` (multipart upload or a file_id, as aiogram
sends it) and voice messages, audio files and video notes from users, downloadable through
`getFile` and `/file/bot<token>/<file_path>` like every stored file."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.support.fakes.telegram import FakeTelegram, JsonDict, MethodHandler, Request

OGG_MAGIC = b"OggS"
# Opus at about 32 kbit/s: what the fake says a sent voice note lasts.
_BYTES_PER_SECOND = 4000


class VoiceNotes:
    def __init__(self, fake: FakeTelegram) -> None:
        self._fake = fake

    def methods(self) -> dict[str, tuple[str, MethodHandler]]:
        return {"sendvoice": ("sendVoice", self._send_voice)}

    def user_voice(
        self,
        user_id: int,
        data: bytes,
        *,
        duration: int,
        kind: str = "voice",
        file_size: int | None = -1,
        chat_id: int | None = None,
        first_name: str = "Анна",
    ) -> int:
        """Queue a `voice` (or `audio`, or `video_note`) message holding `data`; returns its
        update_id. `file_size` -1 means the data's size; None leaves the field out (it is
        optional in the Bot API)."""
        user = self._fake._remember_user(user_id, first_name, "ru", None)
        extension = {"voice": "oga", "audio": "mp3", "video_note": "mp4"}[kind]
        stored = self._fake._store_file(data, f"{kind}.{extension}", kind)
        media: dict[str, Any] = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "duration": duration,
        }
        if kind == "video_note":
            media["length"] = 240
        else:
            media["mime_type"] = "audio/ogg" if kind == "voice" else "audio/mpeg"
        if file_size is not None:
            media["file_size"] = len(data) if file_size == -1 else file_size
        chat = user_id if chat_id is None else chat_id
        message = self._fake._store_message(chat, user, {kind: media})
        return self._fake.push_update({"message": message})

    def sent(self, chat_id: int) -> list[Request]:
        """The voice notes the bot sent to `chat_id` and the server accepted."""
        return [r for r in self._fake.sent("sendVoice", chat_id) if r.ok]

    def audio_of(self, request: Request) -> bytes:
        """The file a sendVoice call uploaded (or named)."""
        voice: JsonDict = request.result["voice"]
        return self._fake.files[voice["file_id"]].data

    async def _send_voice(self, request: Request) -> Any:
        stored = self._fake._input_file(request, "voice", "voice")
        voice = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "duration": max(1, len(stored.data) // _BYTES_PER_SECOND),
            "mime_type": "audio/ogg" if stored.data.startswith(OGG_MAGIC) else "audio/mpeg",
            "file_size": len(stored.data),
        }
        return self._fake._media_message(request, {"voice": voice})
