"""Builds the Bot and the Dispatcher: routers in a fixed order, the outer middlewares, hooks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiogram import BaseMiddleware, Bot, Dispatcher
from aiogram.types import BotCommand, TelegramObject, Update
from aiogram.utils.token import TokenValidationError, validate_token

from producer import texts
from producer.chat_turns import ChatTurns
from producer.delivery import SEND_GRACE_SECONDS
from producer.handlers import (
    account,
    admin,
    cards,
    dialogs,
    dialogue,
    errors,
    generate,
    memory,
    photo,
    shop,
    shop_admin,
    start,
    steer,
    stop,
    unknown_buttons,
    voice,
)
from producer.payment_replayer import PaymentReplayer
from producer.services import Services
from producer.telegram_session import create_session
from shared.config import Settings
from shared.errors import ConfigError

log = structlog.get_logger(__name__)

# Updates handled at once, outside their chat's line. A pre-checkout query only checks an
# order against the database and changes nothing of the chat, and Telegram waits at most
# 10 s for its answer, while a chat's line can be held longer (a slow handler here, another
# process's lease in Redis). It comes from a user, so it would otherwise wait in the user's
# private chat's line.
OUT_OF_LINE = frozenset({"pre_checkout_query"})


class LogContextMiddleware(BaseMiddleware):
    """Binds update_id and user_id to every log line written while the update is handled."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        if not isinstance(event, Update):
            return await handler(event, data)
        user = data.get("event_from_user")
        user_id = user.id if user is not None else None
        with structlog.contextvars.bound_contextvars(update_id=event.update_id, user_id=user_id):
            return await handler(event, data)


class ChatTurnMiddleware(BaseMiddleware):
    """Handles each chat's updates one at a time, in update_id order (see chat_turns): a
    reply's request then sees every earlier message of its chat, and a choice made with a
    button is stored before the next message is read."""

    def __init__(self, turns: ChatTurns) -> None:
        self._turns = turns

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        chat_id = _chat_key(data)
        if not isinstance(event, Update) or event.event_type in OUT_OF_LINE or chat_id is None:
            return await handler(event, data)
        async with self._turns.turn(chat_id, event.update_id):
            return await handler(event, data)


def _chat_key(data: dict[str, Any]) -> int | None:
    """The chat an update belongs to (the sender's id for chatless ones, e.g. inline queries)."""
    for key in ("event_chat", "event_from_user"):
        if (found := data.get(key)) is not None:
            return int(found.id)
    return None


def build_bot(settings: Settings) -> Bot:
    """The Bot; ConfigError naming BOT_TOKEN if it is missing or malformed (never its value)."""
    if settings.bot_token is None or not settings.bot_token.get_secret_value():
        raise ConfigError("BOT_TOKEN is not set: get one from @BotFather")
    try:
        validate_token(settings.bot_token.get_secret_value())
    except TokenValidationError:
        raise ConfigError("BOT_TOKEN is malformed: expected <digits>:<secret>") from None
    return Bot(settings.bot_token.get_secret_value(), session=create_session(settings))


def build_dispatcher(services: Services) -> Dispatcher:
    dispatcher = Dispatcher(services=services)
    dispatcher.update.outer_middleware(LogContextMiddleware())
    dispatcher.update.outer_middleware(ChatTurnMiddleware(services.turns))
    # Commands first, the free-text dialogue and the presses nobody took last; the errors
    # router sees every failure.
    routers = [start, stop, account, admin, cards, shop, shop_admin, generate, photo, memory]
    routers += [steer, dialogs, voice, dialogue, unknown_buttons, errors]
    for module in routers:
        dispatcher.include_router(module.create_router())
    dispatcher.startup.register(_on_startup)
    dispatcher.shutdown.register(_on_shutdown)
    # Payments the database could not take when they came are applied from the journal.
    replayer = PaymentReplayer(shop.intake_of(services), services.sender)
    dispatcher.startup.register(replayer.start)
    dispatcher.shutdown.register(replayer.stop)
    return dispatcher


async def _on_startup(bot: Bot, services: Services) -> None:
    commands = [
        BotCommand(command=name, description=text) for name, text in texts.COMMANDS.items()
    ]
    await bot.set_my_commands(commands)
    await services.deliveries.resume()
    log.info("bot_started", bot_id=bot.id)


async def _on_shutdown(services: Services) -> None:
    # Polling has stopped; updates taken before that finish (charged ones get enqueued).
    if not await services.turns.wait_idle(SEND_GRACE_SECONDS):
        log.warning("updates_unfinished_at_shutdown")
    await services.deliveries.close()
    log.info("bot_stopped")
