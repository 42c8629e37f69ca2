"""The Sender on an aiogram Bot (the console has its own; only this one needs aiogram)."""

from __future__ import annotations

import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BufferedInputFile

from producer.channel import ChatAction, ReplyButtons, image_extension
from producer.keyboards import reply_keyboard
from producer.send_budget import SendBudget, on_taken_slot
from producer.stream_records import StreamRecords, ViewMode, ViewState
from producer.streaming import ReplyView
from producer.telegram_session import pace_sends
from producer.telegram_views import TelegramReplyView
from shared.config import Settings
from shared.queue.keys import BotKeys
from shared.queue.scripts import Scripts

log = structlog.get_logger(__name__)


class TelegramSender:
    """Sender on an aiogram Bot; pacing and flood waits are the session middleware's."""

    def __init__(self, bot: Bot, budget: SendBudget) -> None:
        self._bot = bot
        self._budget = budget

    async def send_text(
        self, chat_id: int, text: str, buttons: ReplyButtons | None = None
    ) -> None:
        markup = None if buttons is None else reply_keyboard(buttons)
        await self._bot.send_message(chat_id=chat_id, text=text, reply_markup=markup)

    async def send_photo(self, chat_id: int, data: bytes, caption: str | None = None) -> None:
        photo = BufferedInputFile(data, filename=f"photo{image_extension(data)}")
        await self._bot.send_photo(chat_id=chat_id, photo=photo, caption=caption)

    async def send_voice(self, chat_id: int, data: bytes) -> None:
        await self._bot.send_voice(chat_id=chat_id, voice=BufferedInputFile(data, "voice.ogg"))

    async def chat_action(self, chat_id: int, kind: ChatAction) -> None:
        # Only a hint: skipped when the chat has no free slot, never holding a message back.
        if await self._budget.try_take(chat_id) > 0:
            return
        try:
            with on_taken_slot():
                await self._bot.send_chat_action(chat_id=chat_id, action=kind.value)
        except TelegramAPIError as exc:
            log.debug("chat_action_failed", chat_id=chat_id, error=str(exc))

    def view_mode(self, chat_id: int) -> ViewMode:
        """Drafts exist only in private chats (positive ids)."""
        return ViewMode.DRAFT if chat_id > 0 else ViewMode.EDIT

    def reply_view(self, state: ViewState, records: StreamRecords) -> ReplyView:
        return TelegramReplyView(self._bot, self, self._budget, records, state)


def telegram_sender(bot: Bot, settings: Settings, scripts: Scripts) -> TelegramSender:
    """The bot's sender; from now on every call `bot` makes to a chat is paced by the chat's
    send budget in Redis (call once per Bot)."""
    budget = SendBudget(
        scripts,
        BotKeys.from_settings(settings),
        chat_interval=settings.chat_send_interval_seconds,
        group_interval=settings.group_send_interval_seconds,
    )
    pace_sends(bot, budget)
    return TelegramSender(bot, budget)
