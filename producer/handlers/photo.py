"""The "📷 Получить фото" button under a reply."""

from __future__ import annotations

from aiogram import Router
from aiogram.types import CallbackQuery

from producer.handlers import chat_of, profile_of
from producer.keyboards import PhotoCallback
from producer.services import Services


async def photo(callback: CallbackQuery, services: Services) -> None:
    # Answer first: Telegram shows a spinner on the button until the query is answered.
    await callback.answer()
    # The query id is unique per press and repeated with a redelivered update.
    await services.conversation.photo(
        chat_of(callback), profile_of(callback.from_user), callback.id
    )


def create_router() -> Router:
    """A new Router per Dispatcher (a Router can belong to only one)."""
    router = Router(name=__name__)
    router.callback_query.register(photo, PhotoCallback.filter())
    return router
