"""Errors of any handler: expected ones are answered in Russian, the rest logged in full."""

from __future__ import annotations

import contextlib

import structlog
from aiogram import Bot, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import ExceptionTypeFilter
from aiogram.types import ErrorEvent, Update

from producer import texts
from producer.services import Services
from producer.shop_keyboards import buy_keyboard
from shared.errors import InsufficientBalanceError, PipelineError

log = structlog.get_logger(__name__)


def _chat_of(update: Update) -> int | None:
    if update.message is not None:
        return update.message.chat.id
    if update.callback_query is not None:
        callback = update.callback_query
        return callback.message.chat.id if callback.message else callback.from_user.id
    return None


async def _release_button(update: Update, bot: Bot) -> None:
    """A failed press is still answered, or its button keeps a spinner until Telegram gives
    up. The handler may have answered already; Telegram refuses a second answer, harmlessly."""
    if update.callback_query is None:
        return
    with contextlib.suppress(TelegramAPIError):
        await bot.answer_callback_query(callback_query_id=update.callback_query.id)


async def _tell(update: Update, services: Services, text: str) -> None:
    chat_id = _chat_of(update)
    if chat_id is not None:
        await services.sender.send_text(chat_id, text)


async def expected(event: ErrorEvent, services: Services, bot: Bot) -> None:
    # The errors middleware runs outside the logging one: name the update here.
    log.info(
        "request_refused",
        update_id=event.update.update_id,
        error=type(event.exception).__name__,
    )
    await _release_button(event.update, bot)
    exc, chat_id = event.exception, _chat_of(event.update)
    if isinstance(exc, InsufficientBalanceError) and chat_id is not None:
        # Where a balance runs out, the shop is one tap away.
        markup = buy_keyboard(exc.currency)
        await bot.send_message(chat_id=chat_id, text=texts.error_text(exc), reply_markup=markup)
        return
    await _tell(event.update, services, texts.error_text(exc))


async def unexpected(event: ErrorEvent, services: Services, bot: Bot) -> None:
    log.error("update_failed", update_id=event.update.update_id, exc_info=event.exception)
    await _release_button(event.update, bot)
    await _tell(event.update, services, texts.UNEXPECTED_ERROR)


def create_router() -> Router:
    """A new Router per Dispatcher (a Router can belong to only one)."""
    router = Router(name=__name__)
    router.error.register(expected, ExceptionTypeFilter(PipelineError))
    router.error.register(unexpected)
    return router
