"""How the bot talks to a user: the Sender protocol, its Telegram side, text splitting."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from shared.closing import pause

if TYPE_CHECKING:
    from producer.stream_records import StreamRecords, ViewMode, ViewState
    from producer.streaming import ReplyView

# Telegram counts message length in UTF-16 code units.
TELEGRAM_TEXT_LIMIT = 4096
# A chat action shows for up to 5 s; renewing a little earlier keeps it from flickering.
CHAT_ACTION_INTERVAL = 4.5

_BOUNDARIES = (
    re.compile(r"\n\s*\n"),
    re.compile(r"\n"),
    re.compile(r"(?<=[.!?…])\s+"),
    re.compile(r"\s+"),
)


@dataclass(frozen=True, slots=True)
class ReplyButtons:
    """The buttons under a delivered reply: a photo of its dialog (📷), the reply asked
    again (🔄) and, under a cut or stopped reply, continued (▶️)."""

    dialog_id: int
    task_id: str
    can_continue: bool = False


class ChatAction(StrEnum):
    TYPING = "typing"
    UPLOAD_PHOTO = "upload_photo"
    RECORD_VOICE = "record_voice"


class Sender(Protocol):
    """Everything the conversation needs from a transport (Telegram, the console)."""

    async def send_text(
        self, chat_id: int, text: str, buttons: ReplyButtons | None = None
    ) -> None: ...

    async def send_photo(self, chat_id: int, data: bytes, caption: str | None = None) -> None: ...

    async def send_voice(self, chat_id: int, data: bytes) -> None:
        """An OGG/Opus voice note."""

    async def chat_action(self, chat_id: int, kind: ChatAction) -> None: ...

    def view_mode(self, chat_id: int) -> ViewMode:
        """How a reply is shown while it is written in this chat."""

    def reply_view(self, state: ViewState, records: StreamRecords) -> ReplyView:
        """The view of one reply being written (its state may come from an earlier run)."""


@contextlib.asynccontextmanager
async def chat_action_kept(
    sender: Sender,
    chat_id: int,
    kind: ChatAction,
    interval: float = CHAT_ACTION_INTERVAL,
    delay: float = 0.0,
) -> AsyncIterator[None]:
    """Show `kind` in the chat for as long as the block runs (from `delay` seconds on)."""
    # A flag as well as the cancel: a cancel lost inside a call (see shared.closing) must
    # not leave the loop renewing, and the block's exit waiting on it, forever.
    stop = asyncio.Event()

    async def renew() -> None:
        await pause(stop, delay)
        while not stop.is_set():
            await sender.chat_action(chat_id, kind)
            await pause(stop, interval)

    task = asyncio.create_task(renew(), name=f"chat-action-{chat_id}")
    try:
        yield
    finally:
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def image_extension(data: bytes) -> str:
    if data.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ".png"


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _prefix_within(text: str, limit: int) -> int:
    """Length (in characters) of the longest prefix that fits in `limit` UTF-16 units."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if _units(text[:middle]) <= limit:
            low = middle
        else:
            high = middle - 1
    return low


def _cut(text: str, limit: int) -> tuple[str, str]:
    """Split off a head that fits, preferring a paragraph, a line, a sentence, then a word."""
    fits = _prefix_within(text, limit)
    # One character more: whitespace right after the limit is a boundary, and it is dropped.
    window = text[: fits + 1]
    for boundary in _BOUNDARIES:
        ends = [m for m in boundary.finditer(window) if 0 < m.start() <= fits]
        if ends:
            last = ends[-1]
            return text[: last.start()], text[last.end() :]
    return text[:fits], text[fits:]


def split_text(text: str, limit: int = TELEGRAM_TEXT_LIMIT) -> list[str]:
    """Split a text into messages of at most `limit` units, at the most natural boundary."""
    parts: list[str] = []
    rest = text.strip()
    while _units(rest) > limit:
        head, rest = _cut(rest, limit)
        if head.strip():
            parts.append(head.rstrip())
        rest = rest.lstrip()
    if rest:
        parts.append(rest)
    return parts
