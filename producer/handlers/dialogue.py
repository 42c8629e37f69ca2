"""Text messages to the chosen character; registered last, it also catches unknown commands."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import Message

from producer import texts
from producer.handlers import incoming
from producer.services import Services


async def unknown_command(message: Message) -> None:
    await message.answer(texts.UNKNOWN_COMMAND)


async def dialogue(message: Message, services: Services) -> None:
    await services.conversation.reply(incoming(message, message.text or ""))


async def not_text(message: Message) -> None:
    await message.answer(texts.NOT_TEXT)


def create_router() -> Router:
    """A new Router per Dispatcher (a Router can belong to only one)."""
    router = Router(name=__name__)
    router.message.register(unknown_command, F.text.startswith("/"))
    router.message.register(dialogue, F.text)
    router.message.register(not_text)
    return router
