"""Operator commands, only for ADMIN_IDS: /queue shows the depth of every task stream."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, Filter
from aiogram.types import Message

from producer import texts
from producer.services import Services


class IsAdmin(Filter):
    async def __call__(self, message: Message, services: Services) -> bool:
        user = message.from_user
        return user is not None and user.id in services.settings.admin_ids


async def queue(message: Message, services: Services) -> None:
    await message.answer(texts.queue_report(await services.conversation.queue_depths()))


def create_router() -> Router:
    """A new Router per Dispatcher (a Router can belong to only one)."""
    router = Router(name=__name__)
    router.message.filter(IsAdmin())
    router.message.register(queue, Command("queue"))
    return router
