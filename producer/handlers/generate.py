"""/generate <text>: a photo of the current character from the user's description."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from producer.handlers import incoming
from producer.services import Services


async def generate(message: Message, command: CommandObject, services: Services) -> None:
    await services.conversation.generate(incoming(message, command.args or ""))


def create_router() -> Router:
    """A new Router per Dispatcher (a Router can belong to only one)."""
    router = Router(name=__name__)
    router.message.register(generate, Command("generate"))
    return router
