"""Presses no other handler took: a button of an older version of the bot, or callback data
a client forged or garbled (malformed fields are refused as they are unpacked, see
producer/keyboards). Each press is answered, since Telegram shows a spinner on the button
until it is, and nothing else happens."""

from __future__ import annotations

import structlog
from aiogram import Router
from aiogram.types import CallbackQuery

from producer import texts

log = structlog.get_logger(__name__)

# Enough of the data to tell which button it was meant to be; real data has at most 64 bytes.
_LOGGED_CHARS = 64


async def unknown_button(callback: CallbackQuery) -> None:
    data = callback.data or ""
    log.info("button_unknown", data=data[:_LOGGED_CHARS], size=len(data))
    await callback.answer(texts.BUTTON_OUTDATED)


def create_router() -> Router:
    """A new Router per Dispatcher (a Router can belong to only one); included after every
    router with buttons."""
    router = Router(name=__name__)
    router.callback_query.register(unknown_button)
    return router
