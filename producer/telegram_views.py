"""A reply shown in Telegram while it is written: a message draft in private chats, one
message edited in place in groups (or wherever drafts are refused).

Draft updates and streaming edits are skippable: each takes the chat's slot only if it is
free now. The final text goes through the session's must-send path. In edit mode it replaces
the streamed message's text (an edit repeated after a crash changes nothing, so the final
text is shown once); in draft mode it is a normal message, which also ends the draft.
"""

from __future__ import annotations

import asyncio

import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramRetryAfter

from producer.channel import ReplyButtons, Sender
from producer.keyboards import reply_keyboard, stop_keyboard
from producer.send_budget import SendBudget, on_taken_slot
from producer.stream_records import StreamRecords, ViewMode, ViewState
from producer.streaming import DRAFT_REFRESH_SECONDS, final_parts, send_parts

log = structlog.get_logger(__name__)


def _not_modified(exc: TelegramBadRequest) -> bool:
    return "message is not modified" in exc.message


class TelegramReplyView:
    """One reply's draft or edited message; its state is kept in Redis for a restart."""

    def __init__(
        self,
        bot: Bot,
        sender: Sender,
        budget: SendBudget,
        records: StreamRecords,
        state: ViewState,
    ) -> None:
        self._bot = bot
        self._sender = sender
        self._budget = budget
        self._records = records
        self._state = state
        self._delivered = False

    @property
    def refresh_seconds(self) -> float | None:
        return DRAFT_REFRESH_SECONDS if self._state.mode is ViewMode.DRAFT else None

    async def show(self, text: str) -> float:
        if self._delivered:  # a draft after the final message would show it again
            return 0.0
        wait = await self._budget.try_take(self._state.chat_id)
        if wait > 0:
            return wait
        try:
            with on_taken_slot():
                await self._show(text)
        except TelegramRetryAfter as exc:  # the session has already held the whole chat
            return float(exc.retry_after)
        except TelegramBadRequest as exc:
            if self._state.mode is ViewMode.DRAFT:
                # A group, an old client, a bot without drafts: one edited message instead.
                log.info("drafts_refused", chat_id=self._state.chat_id, error=exc.message)
                self._state.mode = ViewMode.EDIT
                await self._records.save(self._state)
                return self._budget.interval(self._state.chat_id)
            if not _not_modified(exc):
                raise
        return 0.0

    async def _show(self, text: str) -> None:
        state = self._state
        if state.mode is ViewMode.DRAFT:
            await self._bot.send_message_draft(
                chat_id=state.chat_id, draft_id=state.draft_id, text=text, can_stop=True
            )
        elif state.message_id is None:
            # Shielded: once sent, the message's id must be kept even if the preview is being
            # stopped, or the final text would go to a new message and this one stay behind.
            await asyncio.shield(self._open_message(text))
        else:
            await self._bot.edit_message_text(
                chat_id=state.chat_id,
                message_id=state.message_id,
                text=text,
                reply_markup=stop_keyboard(state.task_id),
            )

    async def _open_message(self, text: str) -> None:
        state = self._state
        sent = await self._bot.send_message(
            chat_id=state.chat_id, text=text, reply_markup=stop_keyboard(state.task_id)
        )
        state.message_id = sent.message_id
        # Kept before the next edit, so a restarted bot edits this message, not a new one.
        await self._records.save(state)

    async def deliver(self, text: str, buttons: ReplyButtons | None) -> None:
        self._delivered = True
        parts = final_parts(text)
        message_id = self._state.message_id
        edited = (
            self._state.mode is ViewMode.EDIT
            and message_id is not None
            and await self._edit_final(message_id, parts[0], buttons if len(parts) == 1 else None)
        )
        if edited:
            parts = parts[1:]
        await send_parts(self._sender, self._state.chat_id, parts, buttons)

    async def _edit_final(self, message_id: int, text: str, buttons: ReplyButtons | None) -> bool:
        """Put the final text into the streamed message; False if it cannot be edited (the
        user deleted it): the final text is then sent as a new message."""
        try:
            await self._bot.edit_message_text(
                chat_id=self._state.chat_id,
                message_id=message_id,
                text=text,
                reply_markup=None if buttons is None else reply_keyboard(buttons),
            )
        except TelegramBadRequest as exc:
            if _not_modified(exc):  # a repeat after a crash: the text is already there
                return True
            log.warning("final_edit_refused", chat_id=self._state.chat_id, error=exc.message)
            return False
        return True
