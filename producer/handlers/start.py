"""/start and choosing a character."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandStart
from aiogram.types import CallbackQuery, Message

from producer import texts
from producer.handlers import chat_of, profile_of
from producer.keyboards import CharacterCallback, characters_keyboard
from producer.services import Services


async def start(message: Message, services: Services) -> None:
    profile = profile_of(message.from_user)
    user, characters = await services.conversation.start(profile)
    if not characters:
        await message.answer(texts.NO_CHARACTERS)
        return
    greeting = texts.greeting(profile.name, user.energy, user.diamonds)
    await message.answer(greeting, reply_markup=characters_keyboard(characters))


async def characters(message: Message, services: Services) -> None:
    found = await services.conversation.characters()
    if not found:
        await message.answer(texts.NO_CHARACTERS)
        return
    await message.answer(texts.CHOOSE_CHARACTER, reply_markup=characters_keyboard(found))


async def choose(
    callback: CallbackQuery, callback_data: CharacterCallback, services: Services
) -> None:
    character = await services.conversation.choose_character(
        profile_of(callback.from_user), callback_data.character_id
    )
    # Answered once the choice is stored: a message sent right after the spinner stops must
    # find the dialog.
    await callback.answer()
    if character is None:
        text = texts.UNKNOWN_CHARACTER
    else:
        text = texts.character_chosen(character.name, character.description)
    await services.sender.send_text(chat_of(callback), text)


def create_router() -> Router:
    """A new Router per Dispatcher (a Router can belong to only one)."""
    router = Router(name=__name__)
    router.message.register(start, CommandStart())
    router.message.register(characters, Command("characters"))
    router.callback_query.register(choose, CharacterCallback.filter())
    return router
