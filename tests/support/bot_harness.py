"""Helpers for the bot tests: an in-process bot on the fake Telegram, a hand-driven consumer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiogram import Bot, Dispatcher

from db import repositories as repo
from db.engine import create_engine, create_sessionmaker
from db.migrate import upgrade
from producer.app import build_bot, build_dispatcher
from producer.keyboards import CharacterCallback
from producer.services import Services, build_services
from producer.telegram_sender import telegram_sender
from scripts.seed_characters import seed_characters
from shared.config import Settings
from shared.queue import Ending, QueueService, TaskEntry, TaskStatus, TaskType
from shared.queue.connection import BLOCK_MS
from shared.queue.live import LiveReader
from shared.tasks import TaskResult, dumps, to_json
from tests.support.fakes.telegram import FakeTelegram, Request
from tests.support.fixtures_db import Sessions, in_thread

TOKEN = "123456:TEST"  # noqa: S105 - a fake token in the shape aiogram validates


def migrated_sqlite(directory: Path) -> str:
    url = f"sqlite+aiosqlite:///{directory / 'bot.db'}"
    in_thread(upgrade, url)
    return url


def bot_settings(base: Settings, database_url: str, telegram_url: str, **extra: Any) -> Settings:
    """The test's settings (unique Redis prefix) plus the bot's own."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "bot_token": TOKEN,
        "telegram_api_url": telegram_url,
        "start_energy": 5,
        "start_diamonds": 2,
        # Tests of the send budget set their own pace; the others need not wait for it.
        "chat_send_interval_seconds": 0.05,
        "group_send_interval_seconds": 0.05,
    }
    values.update(extra)
    return base.replace(**values)


async def balances(db: Sessions, user_id: int) -> tuple[int, int]:
    async with db() as session:
        return await repo.balance(session, user_id)


def texts_to(tg: FakeTelegram, chat_id: int) -> list[str]:
    return [str(r.params["text"]) for r in tg.sent("sendMessage", chat_id) if r.ok]


async def wait_text(tg: FakeTelegram, chat_id: int, needle: str, timeout: float = 10.0) -> Request:
    found = await tg.wait_for(
        "sendMessage",
        lambda r: r.ok and r.chat_id == chat_id and needle in str(r.params.get("text")),
        timeout=timeout,
    )
    return found[0]


async def choose_first_character(tg: FakeTelegram, user_id: int) -> None:
    tg.user_message(user_id, "/start")
    greeting = await wait_text(tg, user_id, "Привет")
    first = greeting.params["reply_markup"]["inline_keyboard"][0][0]
    assert CharacterCallback.unpack(first["callback_data"]).character_id > 0
    tg.callback(user_id, first["callback_data"])
    await wait_text(tg, user_id, "Твой собеседник")


class ManualConsumer:
    """Plays the consumer's part by hand: take one task, then complete or fail it."""

    def __init__(self, queue: QueueService, name: str = "manual") -> None:
        self._consumer = queue.consumer(name)

    async def take(self, task_type: TaskType, timeout: float = 10.0) -> TaskEntry:
        async with asyncio.timeout(timeout):
            while True:
                for entry in await self._consumer.read(task_type, 1, BLOCK_MS // 4):
                    if isinstance(entry, TaskEntry):
                        await self._consumer.start([entry], 0.0)
                        return entry

    async def complete(self, delivery: TaskEntry, result: TaskResult) -> None:
        outcome = Ending(
            delivery, TaskStatus.COMPLETED, 1, 0.0, result_json=dumps(to_json(result))
        )
        await self._consumer.finish([outcome])

    async def stop(self, delivery: TaskEntry, partial: TaskResult | None) -> None:
        """Finish as a consumer does once a cancel reached it: cancelled, with what was
        written (None: nothing)."""
        result_json = None if partial is None else dumps(to_json(partial))
        outcome = Ending(delivery, TaskStatus.CANCELLED, 1, 0.0, result_json=result_json)
        await self._consumer.finish([outcome])

    async def fail(
        self,
        delivery: TaskEntry,
        status: TaskStatus = TaskStatus.FAILED,
        error: str = "provider refused",
    ) -> None:
        # Like the real consumer: fail and announce; the bot refunds when it applies it.
        outcome = Ending(delivery, status, 1, 0.0, error=error)
        await self._consumer.finish([outcome])


@dataclass
class InProcessBot:
    tg: FakeTelegram
    settings: Settings
    db: Sessions
    queue: QueueService
    bot: Bot
    services: Services
    dispatcher: Dispatcher


@contextlib.asynccontextmanager
async def in_process_bot(settings: Settings, tg: FakeTelegram) -> AsyncIterator[InProcessBot]:
    """The real bot (Dispatcher, handlers, deliveries) polling the fake Telegram."""
    async with contextlib.AsyncExitStack() as stack:
        engine = create_engine(settings.database_url)
        stack.push_async_callback(engine.dispose)
        db = create_sessionmaker(engine)
        await seed_characters(db)
        queue = QueueService(settings, client_name="test-bot")
        stack.push_async_callback(queue.close)
        await queue.connect()
        live = LiveReader(settings, client_name=f"{settings.redis_queue_prefix}live")
        stack.push_async_callback(live.aclose)
        await live.start()
        bot = build_bot(settings)
        stack.push_async_callback(bot.session.close)
        sender = telegram_sender(bot, settings, queue.scripts)
        services = build_services(settings, db, queue, sender, live)
        dispatcher = build_dispatcher(services)
        polling = asyncio.create_task(
            dispatcher.start_polling(bot, handle_signals=False, close_bot_session=False)
        )
        # Runs after polling stops and before the backends close: a handler still at work
        # (a slow send) would otherwise reach Redis through a pool that was already closed.
        stack.push_async_callback(services.turns.wait_idle, 30.0)
        stack.push_async_callback(_stop_polling, dispatcher, polling)
        await tg.wait_for("getUpdates")
        yield InProcessBot(tg, settings, db, queue, bot, services, dispatcher)


async def _stop_polling(dispatcher: Dispatcher, polling: asyncio.Task[None]) -> None:
    with contextlib.suppress(RuntimeError):  # polling may have ended on its own
        await dispatcher.stop_polling()
    await polling


# Subprocesses for the end-to-end tests.

ROOT = Path(__file__).resolve().parents[2]
_OWN_ENV = ("BOT_", "TELEGRAM_", "REDIS_", "DATABASE_", "WEBHOOK_", "VENICE_", "ADMIN_", "LOG_")


def process_env(settings: Settings, **extra: Any) -> dict[str, str]:
    """The environment of a producer or consumer process of this test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_ENV)}
    env.update(
        REDIS_URL=settings.redis_url,
        REDIS_QUEUE_PREFIX=settings.redis_queue_prefix,
        REDIS_RESULT_PREFIX=settings.redis_result_prefix,
        REDIS_BOT_PREFIX=settings.redis_bot_prefix,
        DATABASE_URL=settings.database_url,
        LLM_PROVIDER="offline",
        IMAGE_PROVIDER="offline",
        START_ENERGY=str(settings.start_energy),
        START_DIAMONDS=str(settings.start_diamonds),
        CHAT_SEND_INTERVAL_SECONDS=str(settings.chat_send_interval_seconds),
        GROUP_SEND_INTERVAL_SECONDS=str(settings.group_send_interval_seconds),
        LOG_JSON="true",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
        PAYMENT_SPOOL_DIR=settings.payment_spool_dir,
    )
    if settings.bot_token is not None:
        env["BOT_TOKEN"] = settings.bot_token.get_secret_value()
    if settings.telegram_api_url:
        env["TELEGRAM_API_URL"] = settings.telegram_api_url
    env.update({key: str(value) for key, value in extra.items()})
    return env


class Processes:
    """Starts `python -m ...` processes with logs in files; stops every one at the end."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._running: list[subprocess.Popen[bytes]] = []
        self.logs: dict[str, Path] = {}

    def start(
        self,
        name: str,
        module: str,
        args: list[str],
        env: dict[str, str],
        stdin: int | None = None,
        split_stderr: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Start `python -m module`; its output goes to the log `name` (with `split_stderr`,
        stderr to the log `name.err` instead, so a console's screen is not cut by log lines)."""
        log_path = self._log_dir / f"{name}.log"
        self.logs[name] = log_path
        err_path = self._log_dir / f"{name}.err.log" if split_stderr else log_path
        self.logs[f"{name}.err"] = err_path
        with log_path.open("ab") as log, err_path.open("ab") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=ROOT,
                env=env,
                stdin=stdin,
                stdout=log,
                stderr=err,
            )
        self._running.append(proc)
        return proc

    def producer(self, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
        return self.start("producer", "producer", list(args), env)

    def consumer(self, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
        return self.start("consumer", "consumers", ["--name", "c1", *args], env)

    async def stop(
        self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15.0
    ) -> int:
        if proc.poll() is None:
            proc.send_signal(sig)
        return await wait_exit(proc, timeout)

    async def close(self) -> None:
        for proc in self._running:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._running:
            try:
                await wait_exit(proc, 10.0)
            except TimeoutError:
                proc.kill()
                proc.wait()

    def log_text(self, name: str) -> str:
        path = self.logs.get(name)
        return path.read_text(errors="replace") if path and path.exists() else ""


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return await asyncio.to_thread(proc.wait, timeout)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"process {proc.pid} still running after {timeout}s") from None


def log_events(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
