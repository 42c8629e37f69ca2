"""Telegram handlers, one Router per module; producer/app.py includes them in a fixed order."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, Message, User

from producer import texts
from producer.conversation import Incoming, Profile

if TYPE_CHECKING:
    from producer.characters import Choice
    from producer.services import Services

log = structlog.get_logger(__name__)

# Telegram's limit for a photo's caption, in UTF-16 code units.
CAPTION_LIMIT = 1024


def profile_of(user: User | None) -> Profile:
    # Updates from users always carry `from`; only channel posts lack it, and those have no
    # handlers here, so a missing user is a bug worth the errors router's log line.
    if user is None:
        raise LookupError("update without a sender")
    # The first name: what a character calls the user ({{user}} in a card) and /start greets.
    return Profile(user.id, user.first_name, user.language_code)


def incoming(message: Message, text: str) -> Incoming:
    return Incoming(message.chat.id, message.message_id, text, profile_of(message.from_user))


def chat_of(callback: CallbackQuery) -> int:
    """The chat the button was pressed in (the user's private chat if the message is gone)."""
    if callback.message is not None:
        return callback.message.chat.id
    return callback.from_user.id


async def refused_for_dialog(
    callback: CallbackQuery, dialog_id: int, services: Services, event: str
) -> bool:
    """Refuse (with an answer, logged as `event`) a press of a button naming someone else's
    dialog, or a deleted one: in a group everyone sees a reply's buttons, a forwarded list
    keeps them, and callback data can be forged. The owner is read from the database."""
    owner = await services.conversation.dialog_owner(dialog_id)
    if owner == callback.from_user.id:
        return False
    log.info(event, dialog_id=dialog_id, owner_id=owner)
    await callback.answer(texts.BUTTON_OUTDATED if owner is None else texts.NOT_YOUR_BUTTON)
    return True


async def send_greeting(services: Services, chat_id: int, choice: Choice) -> None:
    """The character's first message of a new dialog, if it has one: under its avatar where
    there is one (as the caption if it fits), else as text."""
    greeting = choice.greeting
    if greeting is None:
        return
    if choice.avatar is not None:
        fits = len(greeting.encode("utf-16-le")) // 2 <= CAPTION_LIMIT
        try:
            await services.sender.send_photo(chat_id, choice.avatar, greeting if fits else None)
        except TelegramBadRequest as exc:  # a picture Telegram will not take as a photo
            log.warning("avatar_refused", error=exc.message)
        else:
            if fits:
                return
    await services.sender.send_text(chat_id, greeting)
