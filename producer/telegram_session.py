"""The bot's HTTP session: a custom Bot API server, per-chat pacing and flood-wait retries."""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING

import structlog
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter, TelegramServerError
from aiogram.methods import Response, SendChatAction, TelegramMethod
from aiogram.methods.base import TelegramType

from shared.config import Settings

if TYPE_CHECKING:
    from aiogram import Bot

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 5
JITTER_SECONDS = 0.5


class ChatPacer:
    """A token bucket per chat: short bursts pass, then about one message a second.

    Telegram asks for no more than ~1 message per second per chat; pacing before sending
    avoids most 429s instead of only reacting to them. In-process only.
    """

    def __init__(self, rate: float = 1.0, burst: int = 3) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[int | str, tuple[float, float]] = {}
        self._locks: dict[int | str, asyncio.Lock] = {}

    async def wait(self, chat_id: int | str) -> None:
        lock = self._locks.setdefault(chat_id, asyncio.Lock())
        async with lock:
            tokens, stamp = self._buckets.get(chat_id, (self._burst, time.monotonic()))
            current = time.monotonic()
            tokens = min(self._burst, tokens + (current - stamp) * self._rate)
            if tokens < 1:
                await asyncio.sleep((1 - tokens) / self._rate)
                current = time.monotonic()
                tokens = 1.0
            self._buckets[chat_id] = (tokens - 1, current)


class FloodControlMiddleware(BaseRequestMiddleware):
    """Paces sends per chat; on 429 waits `retry_after` (plus jitter), on a network error or a
    5xx backs off, and sends again, a bounded number of times."""

    def __init__(self, pacer: ChatPacer | None = None, max_attempts: int = MAX_ATTEMPTS) -> None:
        self._pacer = pacer or ChatPacer()
        self._max_attempts = max_attempts

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        chat_id = _paced_chat(method)
        for attempt in range(1, self._max_attempts + 1):
            if chat_id is not None:
                await self._pacer.wait(chat_id)
            try:
                return await make_request(bot, method)
            except (TelegramRetryAfter, TelegramNetworkError, TelegramServerError) as exc:
                if attempt == self._max_attempts:
                    raise
                delay = _retry_delay(exc, attempt)
                log.warning(
                    "telegram_retry",
                    method=method.__api_method__,
                    error=type(exc).__name__,
                    attempt=attempt,
                    retry_in=round(delay, 2),
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")


def _retry_delay(exc: Exception, attempt: int) -> float:
    """Flood control says how long to wait; a network error or a 5xx backs off exponentially.

    A paid reply or photo whose delivery is already claimed must not be dropped on one
    transient failure; a repeat after a lost response is the lesser harm.
    """
    jitter = random.uniform(0, JITTER_SECONDS)
    if isinstance(exc, TelegramRetryAfter):
        return float(exc.retry_after) + jitter
    backoff: float = 0.5 * 2.0 ** (attempt - 1)
    return min(8.0, backoff) + jitter


def _paced_chat(method: TelegramMethod[TelegramType]) -> int | str | None:
    # Chat actions are hints renewed every few seconds; pacing them would delay real messages.
    if isinstance(method, SendChatAction):
        return None
    chat_id = getattr(method, "chat_id", None)
    return chat_id if isinstance(chat_id, int | str) else None


def create_session(settings: Settings) -> AiohttpSession:
    """An aiohttp session, pointed at TELEGRAM_API_URL when set (a local Bot API server)."""
    session = (
        AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
        if settings.telegram_api_url
        else AiohttpSession()
    )
    session.middleware(FloodControlMiddleware())
    return session
