"""/dialogs: the user's dialogs, and the buttons that resume one."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from producer import texts
from producer.handlers import chat_of, profile_of, refused_for_dialog
from producer.keyboards import DialogCallback, dialogs_keyboard
from producer.services import Services


async def list_dialogs(message: Message, services: Services) -> None:
    lines = await services.conversation.dialogs.listed(profile_of(message.from_user).user_id)
    if not lines:
        await message.answer(texts.DIALOGS_EMPTY)
        return
    shown = [
        texts.dialog_line(
            number,
            line.character,
            line.last_at.strftime("%d.%m.%Y"),
            first_words=line.first_words,
            photos=line.photo_count,
            active=line.active,
        )
        for number, line in enumerate(lines, start=1)
    ]
    buttons = [
        (texts.dialog_button(number, line.character), line.dialog_id)
        for number, line in enumerate(lines, start=1)
    ]
    text = "\n".join([texts.DIALOGS_TITLE, *shown])
    await message.answer(text, reply_markup=dialogs_keyboard(buttons))


async def resume(
    callback: CallbackQuery, callback_data: DialogCallback, services: Services
) -> None:
    # Only the dialog's owner: in a group anyone can press, and data can be forged.
    dialog_id = callback_data.dialog_id
    if await refused_for_dialog(callback, dialog_id, services, "dialog_button_refused"):
        return
    # Checked again as it is switched to: None, the dialog was deleted since (/delete_me).
    name = await services.conversation.dialogs.resume(callback.from_user.id, dialog_id)
    if name is None:
        await callback.answer(texts.BUTTON_OUTDATED)
        return
    # Answered once the switch is stored: a message right after must find the dialog.
    await callback.answer()
    await services.sender.send_text(chat_of(callback), texts.dialog_resumed(name))


def create_router() -> Router:
    """A new Router per Dispatcher (a Router can belong to only one)."""
    router = Router(name=__name__)
    router.message.register(list_dialogs, Command("dialogs"))
    router.callback_query.register(resume, DialogCallback.filter())
    return router
