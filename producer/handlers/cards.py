"""Character cards an admin sends to the bot as a document (PNG or JSON)."""

from __future__ import annotations

import io

import structlog
from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.types import Message

from producer import texts
from producer.handlers import profile_of
from producer.services import Services
from shared.cards.card import MAX_CARD_BYTES
from shared.errors import InvalidCardError

log = structlog.get_logger(__name__)


async def card_document(message: Message, services: Services, bot: Bot) -> None:
    """Import the card; anyone not in ADMIN_IDS gets the answer any document gets."""
    admin_id = profile_of(message.from_user).user_id
    # The router's filter lets only documents through; this narrows the type.
    document = message.document
    if document is None:
        return
    if admin_id not in services.settings.admin_ids:
        log.info("card_upload_refused", file_name=(document.file_name or "")[:64])
        await message.answer(texts.NOT_TEXT)
        return
    if (document.file_size or 0) > MAX_CARD_BYTES:
        await message.answer(texts.CARD_TOO_BIG)
        return
    buffer = io.BytesIO()
    try:
        await bot.download(document, destination=buffer)
    except TelegramAPIError as exc:
        log.warning("card_download_failed", error=exc.message)
        await message.answer(texts.card_refused(exc.message))
        return
    try:
        imported = await services.characters.import_card(admin_id, buffer.getvalue())
    except InvalidCardError as exc:
        log.info("card_refused", admin_id=admin_id, reason=str(exc))
        await message.answer(texts.card_refused(str(exc)))
        return
    created = imported.stored.value == "created"
    await message.answer(
        texts.card_imported(imported.name, created, imported.nsfw, imported.has_avatar)
    )


def create_router() -> Router:
    """A new Router per Dispatcher (a Router can belong to only one)."""
    router = Router(name=__name__)
    router.message.register(card_document, F.document)
    return router
