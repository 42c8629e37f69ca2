"""/start, the character list and its pages, choosing a character, the 18+ question."""

from __future__ import annotations

import structlog
from aiogram import Bot, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandStart
from aiogram.types import CallbackQuery, InaccessibleMessage, InlineKeyboardMarkup, Message

from producer import texts
from producer.characters import ChoiceOutcome, Listing
from producer.handlers import chat_of, profile_of, send_greeting
from producer.keyboards import (
    AdultCallback,
    CharacterCallback,
    CharacterPageCallback,
    adult_keyboard,
    characters_keyboard,
)
from producer.services import Services

log = structlog.get_logger(__name__)

_REFUSALS = {ChoiceOutcome.ADULT_ONLY: texts.ADULT_ONLY}


def _markup(listing: Listing) -> InlineKeyboardMarkup:
    page = listing.page
    return characters_keyboard(page.characters, page.page, page.has_next)


async def start(message: Message, services: Services) -> None:
    profile = profile_of(message.from_user)
    user, listing = await services.characters.start(profile)
    greeting = texts.greeting(profile.name, user.energy, user.diamonds)
    await _answer_list(message, greeting, listing)


async def characters(message: Message, services: Services) -> None:
    listing = await services.characters.listing(profile_of(message.from_user))
    await _answer_list(message, texts.CHOOSE_CHARACTER, listing)


async def _answer_list(message: Message, text: str, listing: Listing) -> None:
    user_id = profile_of(message.from_user).user_id
    if listing.empty:
        await message.answer(texts.NO_CHARACTERS)
    else:
        await message.answer(text, reply_markup=_markup(listing))
    if listing.ask_adult:
        await message.answer(texts.ADULT_QUESTION, reply_markup=adult_keyboard(user_id))


async def turn_page(
    callback: CallbackQuery, callback_data: CharacterPageCallback, services: Services, bot: Bot
) -> None:
    """← or →: the list's message shows the other page (a new message if it is gone)."""
    listing = await services.characters.listing(profile_of(callback.from_user), callback_data.page)
    await callback.answer()
    markup = _markup(listing)
    shown = callback.message
    if shown is not None and not isinstance(shown, InaccessibleMessage):
        try:
            await shown.edit_reply_markup(reply_markup=markup)
        except TelegramBadRequest as exc:  # the same page again: "message is not modified"
            log.info("character_page_not_edited", error=exc.message)
        return
    await bot.send_message(chat_of(callback), texts.CHOOSE_CHARACTER, reply_markup=markup)


async def choose(
    callback: CallbackQuery, callback_data: CharacterCallback, services: Services
) -> None:
    choice = await services.characters.choose(
        profile_of(callback.from_user), callback_data.character_id
    )
    # Answered once the choice is stored: a message sent right after the spinner stops must
    # find the dialog.
    await callback.answer()
    chat_id = chat_of(callback)
    if choice.character is None:
        refused = _REFUSALS.get(choice.outcome, texts.UNKNOWN_CHARACTER)
        await services.sender.send_text(chat_id, refused)
        return
    text = texts.character_chosen(choice.character.name, choice.description)
    await services.sender.send_text(chat_id, text)
    await send_greeting(services, chat_id, choice)


async def ask_adult(message: Message, services: Services) -> None:
    """/adult: the 18+ question again, for a user who answered no (or wants to see it)."""
    user_id = profile_of(message.from_user).user_id
    await message.answer(texts.ADULT_QUESTION, reply_markup=adult_keyboard(user_id))


async def adult_answered(
    callback: CallbackQuery, callback_data: AdultCallback, services: Services, bot: Bot
) -> None:
    # In a group everyone sees the question; only the one asked may answer it.
    if callback_data.user_id != callback.from_user.id:
        log.info("adult_button_refused", owner_id=callback_data.user_id)
        await callback.answer(texts.NOT_YOUR_BUTTON)
        return
    profile = profile_of(callback.from_user)
    await services.characters.answer_adult(profile, callback_data.confirmed)
    await callback.answer()
    chat_id = chat_of(callback)
    if not callback_data.confirmed:
        await services.sender.send_text(chat_id, texts.ADULT_DECLINED)
        return
    await services.sender.send_text(chat_id, texts.ADULT_CONFIRMED)
    listing = await services.characters.listing(profile)
    if not listing.empty:
        await bot.send_message(chat_id, texts.CHOOSE_CHARACTER, reply_markup=_markup(listing))


def create_router() -> Router:
    """A new Router per Dispatcher (a Router can belong to only one)."""
    router = Router(name=__name__)
    router.message.register(start, CommandStart())
    router.message.register(characters, Command("characters"))
    router.message.register(ask_adult, Command("adult"))
    router.callback_query.register(choose, CharacterCallback.filter())
    router.callback_query.register(turn_page, CharacterPageCallback.filter())
    router.callback_query.register(adult_answered, AdultCallback.filter())
    return router
