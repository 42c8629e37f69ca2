"""Balance, reset, help, privacy and deleting one's data."""

from __future__ import annotations

import structlog
from aiogram import Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from producer import texts
from producer.handlers import chat_of, profile_of, send_greeting
from producer.keyboards import DeleteCallback, delete_keyboard
from producer.services import Services

log = structlog.get_logger(__name__)


async def balance(message: Message, services: Services) -> None:
    energy, diamonds = await services.conversation.balance(profile_of(message.from_user))
    await message.answer(texts.balance(energy, diamonds))


async def reset(message: Message, services: Services) -> None:
    opened = await services.characters.reset(profile_of(message.from_user).user_id)
    if opened is None or opened.character is None:
        await message.answer(texts.NO_DIALOG)
        return
    await message.answer(texts.reset_done(opened.character.name))
    await send_greeting(services, message.chat.id, opened)


async def help_command(message: Message, services: Services) -> None:
    settings = services.settings
    await message.answer(texts.help_text(settings.reply_energy_cost, settings.image_diamond_cost))


async def privacy(message: Message) -> None:
    await message.answer(texts.PRIVACY)


async def delete_me(message: Message) -> None:
    user_id = profile_of(message.from_user).user_id
    await message.answer(texts.DELETE_QUESTION, reply_markup=delete_keyboard(user_id))


async def delete_confirmed(
    callback: CallbackQuery, callback_data: DeleteCallback, services: Services
) -> None:
    # In a group everyone sees the question; only the one who asked may answer it.
    if callback_data.user_id != callback.from_user.id:
        log.info("delete_button_refused", owner_id=callback_data.user_id)
        await callback.answer(texts.NOT_YOUR_BUTTON)
        return
    await callback.answer()
    text = texts.DELETE_CANCELLED
    if callback_data.confirmed:
        await services.conversation.delete_data(profile_of(callback.from_user).user_id)
        text = texts.DELETE_DONE
    await services.sender.send_text(chat_of(callback), text)


def create_router() -> Router:
    """A new Router per Dispatcher (a Router can belong to only one)."""
    router = Router(name=__name__)
    router.message.register(balance, Command("balance"))
    router.message.register(reset, Command("reset"))
    router.message.register(help_command, Command("help"))
    router.message.register(privacy, Command("privacy"))
    router.message.register(delete_me, Command("delete_me"))
    router.callback_query.register(delete_confirmed, DeleteCallback.filter())
    return router
