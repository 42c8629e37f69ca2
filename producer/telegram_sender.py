"""The Sender on an aiogram Bot (the console has its own; only this one needs aiogram)."""

from __future__ import annotations

import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BufferedInputFile

from producer.channel import ChatAction, image_extension
from producer.keyboards import photo_keyboard

log = structlog.get_logger(__name__)


class TelegramSender:
    """Sender on an aiogram Bot; flood waits are handled by the session middleware."""

    def __init__(self, bot: Bot) -> None:
        self._bot = bot

    async def send_text(self, chat_id: int, text: str, photo_button: bool = False) -> None:
        markup = photo_keyboard() if photo_button else None
        await self._bot.send_message(chat_id=chat_id, text=text, reply_markup=markup)

    async def send_photo(self, chat_id: int, data: bytes, caption: str | None = None) -> None:
        photo = BufferedInputFile(data, filename=f"photo{image_extension(data)}")
        await self._bot.send_photo(chat_id=chat_id, photo=photo, caption=caption)

    async def chat_action(self, chat_id: int, kind: ChatAction) -> None:
        # Only a hint for the user: losing one must never break a delivery.
        try:
            await self._bot.send_chat_action(chat_id=chat_id, action=kind.value)
        except TelegramAPIError as exc:
            log.debug("chat_action_failed", chat_id=chat_id, error=str(exc))
