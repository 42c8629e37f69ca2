"""The "📷 Получить фото" button under a reply."""

from __future__ import annotations

import structlog
from aiogram import F, Router
from aiogram.types import CallbackQuery

from producer import texts
from producer.handlers import chat_of, profile_of
from producer.keyboards import LEGACY_PHOTO_DATA, PhotoCallback
from producer.services import Services

log = structlog.get_logger(__name__)


async def photo(callback: CallbackQuery, callback_data: PhotoCallback, services: Services) -> None:
    dialog_id = callback_data.dialog_id
    if dialog_id is not None and await _refused(callback, dialog_id, services):
        return
    await _make_photo(callback, services, dialog_id)


async def legacy_photo(callback: CallbackQuery, services: Services) -> None:
    await _make_photo(callback, services, None)


async def _refused(callback: CallbackQuery, dialog_id: int, services: Services) -> bool:
    """Refuse (with an answer) a press on someone else's dialog, or on a deleted one: in a
    group everyone sees the button, and the presser would pay for another's photo."""
    owner = await services.conversation.dialog_owner(dialog_id)
    if owner == callback.from_user.id:
        return False
    log.info("photo_button_refused", dialog_id=dialog_id, owner_id=owner)
    await callback.answer(texts.BUTTON_OUTDATED if owner is None else texts.NOT_YOUR_BUTTON)
    return True


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
