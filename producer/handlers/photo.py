"""The "📷 Получить фото" button under a reply."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import CallbackQuery

from producer.handlers import chat_of, profile_of, refused_for_dialog
from producer.keyboards import LEGACY_PHOTO_DATA, PhotoCallback
from producer.services import Services


async def photo(callback: CallbackQuery, callback_data: PhotoCallback, services: Services) -> None:
    # The presser would pay for a photo of another's dialog.
    dialog_id = callback_data.dialog_id
    if dialog_id is not None and await refused_for_dialog(
        callback, dialog_id, services, "photo_button_refused"
    ):
        return
    await _make_photo(callback, services, dialog_id)


async def legacy_photo(callback: CallbackQuery, services: Services) -> None:
    await _make_photo(callback, services, None)


async def _make_photo(callback: CallbackQuery, services: Services, dialog_id: int | None) -> None:
    # Answer first: Telegram shows a spinner on the button until the query is answered.
    await callback.answer()
    # The query id is unique per press and repeated with a redelivered update.
    await services.conversation.photo(
        chat_of(callback), profile_of(callback.from_user), callback.id, dialog_id
    )


def create_router() -> Router:
    """A new Router per Dispatcher (a Router can belong to only one)."""
    router = Router(name=__name__)
    router.callback_query.register(photo, PhotoCallback.filter())
    router.callback_query.register(legacy_photo, F.data == LEGACY_PHOTO_DATA)
    return router
