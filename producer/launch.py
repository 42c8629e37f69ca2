"""How each mode of the bot starts: long polling, the webhook server, the console chat.

Imported by `producer/__main__.py` only after it has said what it is loading: aiogram and
SQLAlchemy take seconds to import, and a silent terminal looks like a hang.
"""

from __future__ import annotations

import asyncio
import re
import signal
from urllib.parse import urlsplit

import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramNetworkError, TelegramUnauthorizedError
from aiogram.methods import GetMe
from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
from aiohttp import web

from producer.app import build_bot, build_dispatcher
from producer.backends import Step, backends
from producer.services import build_services
from producer.startup import StartupError
from producer.telegram_sender import telegram_sender
from shared.config import Settings
from shared.errors import ConfigError
from shared.redact import redact

log = structlog.get_logger("producer")

_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
# A check at start answers fast or not at all; the retries of a running bot are not needed.
TELEGRAM_CHECK_SECONDS = 15


async def check_telegram(bot: Bot, settings: Settings, step: Step) -> None:
    """getMe once, without the running bot's retries: a wrong token or no network is said at
    once, in one line, instead of after a minute of retried tracebacks."""
    api = settings.telegram_api_url or "https://api.telegram.org"
    step(f"checking BOT_TOKEN with Telegram at {redact(api)}")
    try:
        await bot.session.make_request(bot, GetMe(), timeout=TELEGRAM_CHECK_SECONDS)
    except TelegramUnauthorizedError:
        raise ConfigError("BOT_TOKEN was refused by Telegram (401 Unauthorized)") from None
    except TelegramNetworkError as exc:
        token = settings.bot_token.get_secret_value() if settings.bot_token else ""
        reason = exc.message.replace(token, "***") if token else exc.message
        raise StartupError(f"Telegram is unreachable at {redact(api)}: {reason}") from None


async def run_polling(settings: Settings, step: Step) -> None:
    bot = build_bot(settings)
    # The Bot's HTTP session is closed on every way out, a failed start included.
    async with bot:
        await check_telegram(bot, settings, step)
        async with backends(settings, "bot", step) as (db, queue, live):
            sender = telegram_sender(bot, settings, queue.scripts)
            services = build_services(settings, db, queue, sender, live)
            dispatcher = build_dispatcher(services)
            # getUpdates is refused while a webhook is set (e.g. by an earlier --webhook run).
            await bot.delete_webhook()
            step("resuming unfinished deliveries, then polling Telegram (Ctrl-C stops)")
            # aiogram stops polling on SIGTERM/SIGINT and then runs the shutdown hooks.
            await dispatcher.start_polling(bot, handle_signals=True)


def webhook_config(settings: Settings) -> tuple[str, str]:
    if not settings.webhook_url:
        raise ConfigError("WEBHOOK_URL is not set (needed by --webhook)")
    if settings.webhook_secret is None:
        raise ConfigError("WEBHOOK_SECRET is not set (needed by --webhook)")
    secret = settings.webhook_secret.get_secret_value()
    if not _SECRET_TOKEN.fullmatch(secret):
        raise ConfigError("WEBHOOK_SECRET must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
    return settings.webhook_url, secret


async def run_webhook(settings: Settings, step: Step) -> None:
    url, secret = webhook_config(settings)
    bot = build_bot(settings)
    async with bot:
        await check_telegram(bot, settings, step)
        async with backends(settings, "bot-webhook", step) as (db, queue, live):
            sender = telegram_sender(bot, settings, queue.scripts)
            services = build_services(settings, db, queue, sender, live)
            dispatcher = build_dispatcher(services)
            app = web.Application()
            # Telegram sends the secret in a header on every request; others get 401.
            handler = SimpleRequestHandler(dispatcher, bot, secret_token=secret)
            handler.register(app, path=urlsplit(url).path or "/")
            setup_application(app, dispatcher, bot=bot)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            try:
                site = web.TCPSite(runner, settings.webhook_host, settings.webhook_port)
                await site.start()
                step(f"serving the webhook on {settings.webhook_host}:{settings.webhook_port}")
                await _set_webhook(bot, dispatcher.resolve_used_update_types(), url, secret)
                await _until_signalled()
            finally:
                await runner.cleanup()


async def _set_webhook(bot: Bot, updates: list[str], url: str, secret: str) -> None:
    await bot.set_webhook(url, secret_token=secret, allowed_updates=updates)
    log.info("webhook_set", path=urlsplit(url).path)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
