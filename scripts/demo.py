"""`python -m scripts.demo [--console | --bot]`: the whole pipeline on one machine, one command.

Migrates the database, seeds the characters, starts named consumers in the background (their
logs go to files so the chat stays readable) and runs the producer in the foreground: a console
chat when BOT_TOKEN is not set, the real Telegram bot when it is. The console chat uses the
offline providers unless the user chose others, so it needs no keys and no network.
`bash scripts/demo.sh` installs what this needs (uv, the dependencies, Redis) and runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from sqlalchemy.engine import make_url

from consumers.providers.factory import choose_image_provider
from db.engine import create_engine, create_sessionmaker
from db.migrate import upgrade
from scripts.demo_children import (
    Child,
    DemoError,
    log_tail,
    start_consumer,
    stop_consumers,
    stop_producer,
    wait_ready,
)
from scripts.runtime import OUTAGES, OperationsError, open_queue
from scripts.seed_characters import seed_characters
from shared.config import Settings, load_settings
from shared.errors import ConfigError
from shared.redact import redact

ROOT = Path(__file__).resolve().parent.parent
_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.demo",
        description="Run the pipeline on this machine: migrations, characters, consumers and "
        "the producer (a console chat without BOT_TOKEN, the Telegram bot with it).",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--console", action="store_true", help="console chat even with BOT_TOKEN")
    mode.add_argument("--bot", action="store_true", help="the Telegram bot (needs BOT_TOKEN)")
    parser.add_argument(
        "--photo-dir",
        type=Path,
        default=Path("demo-output"),
        help="console photos go here, consumer logs to its logs/ (default ./demo-output)",
    )
    parser.add_argument(
        "--consumers", type=positive, default=2, help="consumer processes (default 2)"
    )
    parser.add_argument(
        "--reset",
        action="store_true",
        help="delete the demo's SQLite database first: users, balances and dialogs start over",
    )
    return parser.parse_args(argv)


def has_token(settings: Settings) -> bool:
    return settings.bot_token is not None and bool(settings.bot_token.get_secret_value().strip())


def console_mode(args: argparse.Namespace, settings: Settings) -> bool:
    if args.console or args.bot:
        return bool(args.console)
    return not has_token(settings)


def provider_overrides(settings: Settings, console: bool) -> dict[str, str]:
    """Offline providers for the console chat, except where the user made a choice.

    A newcomer without keys should see a reply and a photo at once; someone who set
    LLM_PROVIDER or an image provider in the environment or .env gets what they asked for.
    """
    if not console:
        return {}
    chosen = settings.chosen
    overrides: dict[str, str] = {}
    if "llm_provider" not in chosen:
        overrides["LLM_PROVIDER"] = "offline"
    if "image_provider" not in chosen and not (settings.use_replicate or settings.use_live3d):
        overrides["IMAGE_PROVIDER"] = "offline"
    return overrides


def child_env(overrides: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    # Children run `python -m ...` from the current directory, which need not be the
    # repository (the tests run elsewhere so a developer's .env cannot leak in).
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    # Log files should show a crash's traceback at once, not when a buffer fills.
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def say(text: str) -> None:
    # Flushed before every child starts, so our lines never land after the child's output.
    # A closed terminal (SIGHUP) must not stop the cleanup that follows a message.
    with contextlib.suppress(OSError):
        print(text, flush=True)


def describe_providers(settings: Settings) -> str:
    image = choose_image_provider(settings)
    if image == "local":
        image = f"local Stable Diffusion WebUI at {settings.image_api_url}"
    return f"replies: {settings.llm_provider.value}, images: {image}"


def greet(settings: Settings, console: bool, photo_dir: Path, log_dir: Path) -> None:
    if console:
        say("== ai-girls demo: console chat (no Telegram) ==")
        say("Try: /start, a character's number, any text, /photo; /quit (or Ctrl-C) leaves.")
        say(f"Photos are saved in {photo_dir.resolve()}")
        say("For the real bot put BOT_TOKEN (and VENICE_API_KEY, see .env.example) in .env")
        say("and run the demo again.")
    else:
        say("== ai-girls demo: Telegram bot ==")
        say("Open your bot in Telegram and send /start. Ctrl-C stops everything.")
    say(f"Providers: {describe_providers(settings)}")
    say(f"Database: {redact(settings.database_url)}; consumer logs in {log_dir.resolve()}")


async def check_redis(settings: Settings) -> None:
    # Consumers wait for Redis forever by design; the demo should fail fast instead.
    async with open_queue(settings, "demo"):
        return


async def seed(settings: Settings) -> int:
    engine = create_engine(settings.database_url)
    try:
        return await seed_characters(create_sessionmaker(engine))
    finally:
        await engine.dispose()


def reset_database(url: str) -> None:
    """Delete a SQLite database file (and its journal files); refuse any other database.

    A demo reset must never be able to wipe a real PostgreSQL that DATABASE_URL points at.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise DemoError(
            f"--reset only deletes a SQLite demo database; DATABASE_URL is {redact(url)}", 2
        )
    database = parsed.database
    if not database or database == ":memory:":
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(database + suffix).unlink(missing_ok=True)
    say(f"Deleted the demo database {Path(database).resolve()}.")


def prepare(settings: Settings) -> None:
    """Check Redis, migrate the database and seed the characters (all idempotent)."""
    try:
        asyncio.run(check_redis(settings))
    except OperationsError as exc:
        raise DemoError(f"{exc} (scripts/demo.sh starts a local one)") from None
    try:
        upgrade(settings.database_url)
        count = asyncio.run(seed(settings))
    except OUTAGES as exc:
        url = redact(settings.database_url)
        raise DemoError(f"cannot prepare the database {url}: {exc}") from None
    say(f"Database ready, {count} characters.")


def consumer_names(count: int) -> list[str]:
    host = socket.gethostname()
    return [f"demo-{host}-{number}" for number in range(1, count + 1)]


def start_consumers(
    names: list[str], log_dir: Path, env: dict[str, str], level: str
) -> list[Child]:
    children = [start_consumer(name, log_dir, env, level) for name in names]
    listed = ", ".join(f"{child.name} (pid {child.proc.pid})" for child in children)
    say(f"Starting consumers: {listed}")
    return children


def producer_command(console: bool, photo_dir: Path) -> list[str]:
    command = [sys.executable, "-m", "producer"]
    if console:
        command += ["--console", "--photo-dir", str(photo_dir)]
    return command


def run_producer(console: bool, photo_dir: Path, log_dir: Path, env: dict[str, str]) -> int:
    """The producer in the foreground on our terminal; its exit code, 0 when interrupted."""
    log = log_dir / "producer.log"
    # The console chat owns the terminal, so its log lines go to a file; the bot's log is
    # the only thing it shows, so it stays on the terminal.
    with log.open("wb") as err:
        stderr = err if console else None
        proc = subprocess.Popen(producer_command(console, photo_dir), env=env, stderr=stderr)
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            ignore_signals()
            stop_producer(proc)
            return 0
    if code != 0:
        detail = "\n".join(log_tail(log)) if console else "(see its messages above)"
        raise DemoError(f"the producer stopped with exit code {code}:\n{detail}", code)
    return 0


def interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM and SIGHUP (a closed terminal) stop the demo like Ctrl-C, through the same
    # cleanup, so no consumer outlives it.
    raise KeyboardInterrupt


def ignore_signals() -> None:
    # Cleanup is bounded; a second Ctrl-C must not cut it short and orphan a consumer.
    for sig in _HANDLED_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def load() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise DemoError(str(exc), 2) from None


def consumer_log_level(settings: Settings) -> str:
    # Readiness is read from the consumer's INFO line, so never run them quieter than INFO.
    return "DEBUG" if settings.log_level == "DEBUG" else "INFO"


def run(args: argparse.Namespace) -> int:
    settings = load()
    console = console_mode(args, settings)
    if not console and not has_token(settings):
        raise DemoError("--bot needs BOT_TOKEN (in .env or the environment)", 2)
    overrides = provider_overrides(settings, console)
    effective = load_settings(**{key.lower(): value for key, value in overrides.items()})
    log_dir = args.photo_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    greet(effective, console, args.photo_dir, log_dir)
    if args.reset:
        reset_database(settings.database_url)
    prepare(settings)
    env = child_env(overrides)
    names = consumer_names(args.consumers)
    children = start_consumers(names, log_dir, env, consumer_log_level(settings))
    try:
        wait_ready(children)
        say("Consumers ready.\n")
        return run_producer(console, args.photo_dir, log_dir, env)
    except DemoError as exc:
        # Said before the bounded wait for the consumers, so the reason shows at once.
        return report(exc)
    finally:
        ignore_signals()
        say("Stopping the consumers…")
        stop_consumers(children, settings.shutdown_grace_seconds)
        say("Demo stopped.")


def report(exc: DemoError) -> int:
    with contextlib.suppress(OSError):
        print(f"demo: {exc}", file=sys.stderr, flush=True)
    return exc.code


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    try:
        return run(args)
    except DemoError as exc:
        return report(exc)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
