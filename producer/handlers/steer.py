"""Steering a conversation: the 🔄 and ▶️ buttons under the latest reply, /undo, and
editing the last message."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from producer import texts
from producer.edits import Edit
from producer.handlers import chat_of, profile_of
from producer.keyboards import ContinueCallback, RegenerateCallback
from producer.services import Services
from producer.steering import SteerAnswer, UndoAnswer

_ANSWERS = {
    SteerAnswer.ALREADY: texts.STEERING_ALREADY,
    SteerAnswer.TOO_LATE: texts.TOO_LATE,
    SteerAnswer.NOT_YOURS: texts.NOT_YOUR_BUTTON,
}


_UNDONE = {
    UndoAnswer.UNDONE: texts.UNDO_DONE,
    UndoAnswer.NOTHING: texts.UNDO_NOTHING,
    UndoAnswer.BUSY: texts.UNDO_BUSY,
    UndoAnswer.NO_DIALOG: texts.NO_DIALOG,
}


async def undo(message: Message, services: Services) -> None:
    user_id = profile_of(message.from_user).user_id
    answer = await services.conversation.steering.undo(message.chat.id, user_id)
    await message.answer(_UNDONE[answer])


async def edited(message: Message, services: Services) -> None:
    """An edited text message: answered again if it is the user's last one."""
    text = message.text or ""
    if text.startswith("/") or len(text) > services.settings.max_message_chars:
        return
    edited_at = message.edit_date or 0
    user_id = profile_of(message.from_user).user_id
    edit = Edit(message.chat.id, message.message_id, user_id, text, edited_at)
    await services.conversation.edits.edit(edit)


async def regenerate(
    callback: CallbackQuery, callback_data: RegenerateCallback, services: Services
) -> None:
    # The pressed message is the one the new reply replaces.
    message_id = callback.message.message_id if callback.message is not None else None
    # The owner is read from the reply's dialog, never from the button. Not enough energy
    # raises: the errors router answers the press and says so in the chat.
    answer = await services.conversation.steering.regenerate(
        chat_of(callback), callback.from_user.id, callback_data.task_id, message_id
    )
    await callback.answer(_ANSWERS.get(answer, texts.REGENERATING))


async def continue_reply(
    callback: CallbackQuery, callback_data: ContinueCallback, services: Services
) -> None:
    answer = await services.conversation.steering.continue_reply(
        chat_of(callback), callback.from_user.id, callback_data.task_id
    )
    await callback.answer(_ANSWERS.get(answer, texts.CONTINUING))


def create_router() -> Router:
    """A new Router per Dispatcher (a Router can belong to only one)."""
    router = Router(name=__name__)
    router.callback_query.register(regenerate, RegenerateCallback.filter())
    router.callback_query.register(continue_reply, ContinueCallback.filter())
    router.message.register(undo, Command("undo"))
    router.edited_message.register(edited, F.text)
    return router
