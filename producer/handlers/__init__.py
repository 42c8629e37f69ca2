"""Telegram handlers, one Router per module; producer/app.py includes them in a fixed order."""

from __future__ import annotations

from aiogram.types import CallbackQuery, Message, User

from producer.conversation import Incoming, Profile


def profile_of(user: User | None) -> Profile:
    # Updates from users always carry `from`; only channel posts lack it, and those have no
    # handlers here, so a missing user is a bug worth the errors router's log line.
    if user is None:
        raise LookupError("update without a sender")
    return Profile(user.id, user.full_name, user.language_code)


def incoming(message: Message, text: str) -> Incoming:
    return Incoming(message.chat.id, message.message_id, text, profile_of(message.from_user))


def chat_of(callback: CallbackQuery) -> int:
    """The chat the button was pressed in (the user's private chat if the message is gone)."""
    if callback.message is not None:
        return callback.message.chat.id
    return callback.from_user.id
