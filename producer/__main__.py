"""`python -m producer [--webhook | --console]`: the Telegram bot (or its console twin)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import structlog
from aiogram import Bot
from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from producer.app import build_bot, build_dispatcher
from producer.channel import TelegramSender
from producer.console import run_console
from producer.services import build_services
from shared.config import Settings, load_settings
from shared.db.engine import create_engine, create_sessionmaker
from shared.errors import ConfigError
from shared.logging import configure_logging
from shared.queue import QueueService
from shared.redact import redact

log = structlog.get_logger("producer")

_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m producer",
        description="Run the Telegram bot: long polling by default, a webhook server with "
        "--webhook, or a console chat without Telegram with --console.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--webhook",
        action="store_true",
        help="serve WEBHOOK_URL on WEBHOOK_HOST:WEBHOOK_PORT (needs WEBHOOK_SECRET)",
    )
    mode.add_argument(
        "--console", action="store_true", help="chat on stdin/stdout as one user, no Telegram"
    )
    parser.add_argument(
        "--photo-dir",
        type=Path,
        default=Path("demo-output"),
        help="console mode: where photos are written (default ./demo-output)",
    )
    parser.add_argument(
        "--user-id", type=int, default=1, help="console mode: the user id to chat as"
    )
    return parser.parse_args(argv)


@contextlib.asynccontextmanager
async def backends(
    settings: Settings, client_name: str
) -> AsyncIterator[tuple[async_sessionmaker[AsyncSession], QueueService]]:
    engine = create_engine(settings.database_url)
    queue = QueueService(settings, client_name=client_name)
    try:
        await queue.connect()
        yield create_sessionmaker(engine), queue
    finally:
        await queue.close()
        await engine.dispose()


async def run_polling(settings: Settings) -> None:
    bot = build_bot(settings)
    async with backends(settings, "bot") as (db, queue):
        services = build_services(settings, db, queue, TelegramSender(bot))
        dispatcher = build_dispatcher(services)
        # getUpdates is refused while a webhook is set (e.g. by an earlier --webhook run).
        await bot.delete_webhook()
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


async def run_webhook(settings: Settings) -> None:
    url, secret = webhook_config(settings)
    bot = build_bot(settings)
    async with backends(settings, "bot-webhook") as (db, queue):
        services = build_services(settings, db, queue, TelegramSender(bot))
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


async def run_console_mode(settings: Settings, photo_dir: Path, user_id: int) -> None:
    async with backends(settings, "console") as (db, queue):
        await run_console(settings, db, queue, photo_dir=photo_dir, user_id=user_id)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_json)
        if args.console:
            asyncio.run(run_console_mode(settings, args.photo_dir, args.user_id))
        elif args.webhook:
            asyncio.run(run_webhook(settings))
        else:
            asyncio.run(run_polling(settings))
    except ConfigError as exc:
        print(f"bot cannot start: {redact(str(exc))}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:  # Ctrl-C: asyncio.run has already cancelled and cleaned up
        return 0
    except Exception:
        # Through structlog, whose processors redact URL credentials, unlike Python's own
        # traceback printer (a connection error at start can quote REDIS_URL or DATABASE_URL).
        log.exception("bot_failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
