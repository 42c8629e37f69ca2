"""`python -m producer [--webhook | --console]`: the Telegram bot (or its console twin)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from producer.startup import Progress, StartupError
from shared.config import Settings, load_settings
from shared.errors import ConfigError
from shared.logging import configure_logging
from shared.redact import redact

log = structlog.get_logger("producer")

EXIT_UNAVAILABLE = 1  # Telegram, Redis or the database did not answer at start
EXIT_CONFIG = 2  # a setting is missing or wrong; the message names it


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


async def run(args: argparse.Namespace, settings: Settings, progress: Progress) -> None:
    if args.console:
        # The console needs no aiogram: it starts in a fraction of the bot's time.
        progress("loading SQLAlchemy and the conversation")
        from producer.backends import run_console_mode  # noqa: PLC0415

        await run_console_mode(settings, args.photo_dir, args.user_id, progress)
        return
    progress("loading aiogram, SQLAlchemy and the bot's modules")
    # Imported here, after the line above: these imports alone take seconds.
    from producer import launch  # noqa: PLC0415

    if args.webhook:
        await launch.run_webhook(settings, progress)
    else:
        await launch.run_polling(settings, progress)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_json)
        asyncio.run(run(args, settings, Progress(args.console)))
    except ConfigError as exc:
        print(f"bot cannot start: {redact(str(exc))}", file=sys.stderr)  # noqa: T201
        return EXIT_CONFIG
    except StartupError as exc:
        print(f"bot cannot start: {redact(str(exc))}", file=sys.stderr)  # noqa: T201
        return EXIT_UNAVAILABLE
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
