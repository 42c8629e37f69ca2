"""Showing a reply while it is written: the newest text, as often as the chat's budget allows.

The live output of a task arrives as chunks (from `LiveReader.follow`); a `ReplyView` shows
it (a Telegram draft, a message edited in place, the terminal). Showing is coalesced: while
the chat has no free slot, chunks only grow the text, and the next show carries the newest
text. The final text never comes from here: the delivery sends it from the task's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Protocol

import structlog

from producer import texts
from producer.channel import ReplyButtons, Sender, split_text
from shared.tasks import TaskType

log = structlog.get_logger(__name__)

# A Telegram draft lives 30 s; re-sent this long after its last update if nothing changed.
DRAFT_REFRESH_SECONDS = 20.0


class Chunk(Protocol):
    """New output of a task (shared.queue.live.LiveChunk)."""

    @property
    def text(self) -> str: ...

    @property
    def end(self) -> str | None: ...

    @property
    def reset(self) -> bool: ...


class LiveFeed(Protocol):
    """The live output of tasks (shared.queue.live.LiveReader)."""

    def follow(
        self, task_type: TaskType, task_id: str, after: str = "0-0"
    ) -> AsyncIterator[Chunk]: ...


class ReplyView(Protocol):
    """Where one reply is shown while it is written, and where its final text goes."""

    @property
    def refresh_seconds(self) -> float | None:
        """Re-show unchanged text this often (a draft expires); None: never."""

    async def show(self, text: str) -> float:
        """Show the text so far: 0.0 if shown, else the seconds until the chat has a free
        slot (nothing was shown; the caller comes back then, with newer text if any)."""

    async def deliver(self, text: str, buttons: ReplyButtons | None) -> None:
        """Send the reply's final text (or its failure notice); called once, by its applier.
        With `buttons`, the last message carries them (📷 of the reply's dialog, 🔄, ▶️)."""


class PlainReplyView:
    """A reply shown only once it is done: its final text as messages, the last with the
    reply's buttons."""

    refresh_seconds = None

    def __init__(self, sender: Sender, chat_id: int) -> None:
        self._sender = sender
        self._chat_id = chat_id

    async def show(self, text: str) -> float:
        return 0.0

    async def deliver(self, text: str, buttons: ReplyButtons | None) -> None:
        await send_parts(self._sender, self._chat_id, final_parts(text), buttons)


def final_parts(text: str) -> list[str]:
    """The messages a final text takes."""
    return split_text(text) or [texts.EMPTY_REPLY]


async def send_parts(
    sender: Sender, chat_id: int, parts: list[str], buttons: ReplyButtons | None
) -> None:
    """Send `parts` in order; the last one carries the buttons, if any."""
    for number, part in enumerate(parts, start=1):
        await sender.send_text(chat_id, part, buttons if number == len(parts) else None)


def visible_part(text: str) -> str:
    """What fits one message: the part the final reply's last message will hold."""
    parts = split_text(text)
    return parts[-1] if parts else ""


class LiveText:
    """The text so far of one task's live output, and a signal when it changes."""

    def __init__(self) -> None:
        self.text = ""
        self.ended = False
        self._changed = asyncio.Event()

    async def fill(self, chunks: AsyncIterator[Chunk]) -> None:
        async for chunk in chunks:
            # A reset: the task is run again, and what was shown so far is void.
            self.text = chunk.text if chunk.reset else self.text + chunk.text
            self._changed.set()
            if chunk.end is not None:
                break
        self.ended = True
        self._changed.set()

    def wake(self) -> None:
        self._changed.set()

    async def changed(self, timeout: float | None) -> None:
        """Wait for a change (or `timeout`), then clear the signal."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
        # that lands as the event is set, and the presenter would outlive its reply.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()
        self._changed.clear()


class Presenter:
    """Shows one task's live output on a view until cancelled (the result has arrived)."""

    def __init__(self, view: ReplyView) -> None:
        self._view = view
        self.live = LiveText()
        self.shown = ""
        self._first_text = asyncio.Event()
        self._stopped = False

    @property
    def showed_text(self) -> bool:
        return bool(self.shown)

    def stop(self) -> None:
        """Show nothing more. Cancelling alone is not enough: on Python 3.11 a cancellation
        that meets a timeout firing inside a library call can be swallowed, and the loop
        would go on showing (and hold its delivery) until its next long wait ends."""
        self._stopped = True
        self.live.wake()

    async def first_text(self) -> None:
        """Return once some text arrived (or the live output ended without any)."""
        await self._first_text.wait()

    async def run(self, chunks: AsyncIterator[Chunk]) -> None:
        """Show until cancelled; a view that fails stops showing, never the delivery."""
        try:
            await self._run(chunks)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a preview only: the final text is still sent
            log.warning("stream_view_failed", error=type(exc).__name__, detail=str(exc)[:200])

    async def _run(self, chunks: AsyncIterator[Chunk]) -> None:
        reader = asyncio.create_task(self._read(chunks), name="live-text")
        try:
            await self._show_loop()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, chunks: AsyncIterator[Chunk]) -> None:
        try:
            await self.live.fill(chunks)
        finally:
            self._first_text.set()

    async def _show_loop(self) -> None:
        last_shown = time.monotonic()
        while not self._stopped:
            text = visible_part(self.live.text)
            refresh = self._view.refresh_seconds
            due = refresh is not None and self.shown and time.monotonic() - last_shown >= refresh
            if text and (text != self.shown or due):
                self._first_text.set()
                wait = await self._view.show(text)
                if wait > 0 and not self._stopped:
                    await asyncio.sleep(wait)
                    continue
                self.shown, last_shown = text, time.monotonic()
                continue
            timeout = (
                None if refresh is None else max(0.0, last_shown + refresh - time.monotonic())
            )
            await self.live.changed(timeout)
