"""Redis and the database, opened and checked at start; the console mode, which needs nothing
more (so it loads no aiogram)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.engine import create_sessionmaker, engine_for
from producer.console import run_console
from producer.startup import StartupError
from shared.config import Settings
from shared.queue import QueueService
from shared.queue.live import LiveReader
from shared.redact import error_line, redact

Step = Callable[[str], None]


@contextlib.asynccontextmanager
async def backends(
    settings: Settings, client_name: str, step: Step
) -> AsyncIterator[tuple[async_sessionmaker[AsyncSession], QueueService, LiveReader]]:
    """The database, the queue and the live output reader, each checked once so a dead one is
    named at start."""
    engine = engine_for(settings)
    queue = QueueService(settings, client_name=client_name)
    live = LiveReader(settings, client_name=f"{client_name}:live")
    try:
        step(f"connecting to Redis at {redact(settings.redis_url)}")
        try:
            await queue.connect()
        except (RedisError, OSError) as exc:
            url = redact(settings.redis_url)
            raise StartupError(f"cannot reach Redis at {url}: {error_line(exc)}") from None
        step(f"opening the database {redact(settings.database_url)}")
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as exc:
            url = redact(settings.database_url)
            raise StartupError(f"cannot open the database {url}: {error_line(exc)}") from None
        await live.start()
        yield create_sessionmaker(engine), queue, live
    finally:
        await live.aclose()
        await queue.close()
        await engine.dispose()


async def run_console_mode(settings: Settings, photo_dir: Path, user_id: int, step: Step) -> None:
    async with backends(settings, "console", step) as (db, queue, live):
        await run_console(
            settings, db, queue, live, photo_dir=photo_dir, user_id=user_id, catch_ctrl_c=True
        )
