"""/memory: what the character remembers of the dialog, and the button that clears it."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from producer import texts
from producer.handlers import chat_of, profile_of, refused_for_dialog
from producer.keyboards import MemoryCallback, memory_keyboard
from producer.services import Services


async def show_memory(message: Message, services: Services) -> None:
    profile = profile_of(message.from_user)
    view = await services.conversation.memory.show(profile.user_id)
    if view is None:
        await message.answer(texts.NO_DIALOG)
    elif view.summary is None:
        window = services.settings.history_messages
        await message.answer(texts.memory_empty(view.character, window))
    else:
        text = texts.memory_text(view.character, view.summary)
        await message.answer(text, reply_markup=memory_keyboard(view.dialog_id))


async def clear_memory(
    callback: CallbackQuery, callback_data: MemoryCallback, services: Services
) -> None:
    # The dialog id comes from the button: only its owner may clear it.
    dialog_id = callback_data.dialog_id
    if await refused_for_dialog(callback, dialog_id, services, "memory_button_refused"):
        return
    # Checked again as it is cleared: not cleared, the dialog was deleted since (/delete_me).
    cleared = await services.conversation.memory.clear(callback.from_user.id, dialog_id)
    await callback.answer(texts.MEMORY_CLEARED if cleared else texts.BUTTON_OUTDATED)
    if cleared:
        await services.sender.send_text(chat_of(callback), texts.MEMORY_CLEARED)


def create_router() -> Router:
    """A new Router per Dispatcher (a Router can belong to only one)."""
    router = Router(name=__name__)
    router.message.register(show_memory, Command("memory"))
    router.callback_query.register(clear_memory, MemoryCallback.filter())
    return router
