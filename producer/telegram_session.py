"""The bot's HTTP session: a custom Bot API server, per-chat pacing and flood-wait retries."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

import structlog
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter, TelegramServerError
from aiogram.methods import Response, TelegramMethod
from aiogram.methods.base import TelegramType

from producer.send_budget import SendBudget, slot_already_taken
from shared.config import Settings

if TYPE_CHECKING:
    from aiogram import Bot

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 5
JITTER_SECONDS = 0.5


class FloodControlMiddleware(BaseRequestMiddleware):
    """Paces every call to a chat through the chat's send budget; on 429 keeps the whole chat
    silent for `retry_after` and sends again, on a network error or a 5xx backs off and sends
    again, a bounded number of times.

    A call made on a slot its caller already took (a draft, a streaming edit, a chat action:
    see `send_budget.on_taken_slot`) is not paced again and not repeated after a 429: its
    caller comes back later with newer content.
    """

    def __init__(self, budget: SendBudget, max_attempts: int = MAX_ATTEMPTS) -> None:
        self._budget = budget
        self._max_attempts = max_attempts

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        chat_id = _paced_chat(method)
        skippable = slot_already_taken()
        for attempt in range(1, self._max_attempts + 1):
            if chat_id is not None and not (skippable and attempt == 1):
                await self._budget.take(chat_id)
            retry_after = 0.0
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                retry_after = float(exc.retry_after)
                if skippable or attempt == self._max_attempts:
                    raise
                self._log_retry(method, exc, attempt, retry_after)
                if chat_id is None:
                    await asyncio.sleep(_retry_delay(exc, attempt))
            except (TelegramNetworkError, TelegramServerError) as exc:
                if attempt == self._max_attempts:
                    raise
                delay = _retry_delay(exc, attempt)
                self._log_retry(method, exc, attempt, delay)
                await asyncio.sleep(delay)
            finally:
                if chat_id is not None:
                    await self._budget.answered(chat_id, retry_after)
        raise AssertionError("unreachable: the last attempt returns or raises")

    @staticmethod
    def _log_retry(
        method: TelegramMethod[TelegramType], exc: Exception, attempt: int, delay: float
    ) -> None:
        log.warning(
            "telegram_retry",
            method=method.__api_method__,
            error=type(exc).__name__,
            attempt=attempt,
            retry_in=round(delay, 2),
        )


def _retry_delay(exc: Exception, attempt: int) -> float:
    """Flood control says how long to wait; a network error or a 5xx backs off exponentially.

    A paid reply or photo whose delivery is already applied must not be dropped on one
    transient failure; a repeat after a lost response is the lesser harm.
    """
    jitter = random.uniform(0, JITTER_SECONDS)
    if isinstance(exc, TelegramRetryAfter):
        return float(exc.retry_after) + jitter
    backoff: float = 0.5 * 2.0 ** (attempt - 1)
    return min(8.0, backoff) + jitter


def _paced_chat(method: TelegramMethod[TelegramType]) -> int | str | None:
    chat_id = getattr(method, "chat_id", None)
    return chat_id if isinstance(chat_id, int | str) else None


def create_session(settings: Settings) -> AiohttpSession:
    """An aiohttp session, pointed at TELEGRAM_API_URL when set (a local Bot API server)."""
    if settings.telegram_api_url:
        return AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
    return AiohttpSession()


def pace_sends(bot: Bot, budget: SendBudget) -> None:
    """Put every later call of `bot` under the per-chat send budget (once Redis is up)."""
    bot.session.middleware(FloodControlMiddleware(budget))
