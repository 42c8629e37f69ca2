"""The console chat in-process: a prompt on a terminal, and numbers answer the character list."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from db.engine import create_engine, create_sessionmaker
from producer import texts
from producer.console import run_console
from shared.config import Settings
from shared.queue import QueueService
from shared.tasks import TaskType
from tests.support.fixtures_db import Backend, Sessions, make_character, new_user_id


class Terminal(io.StringIO):
    """Typed input that says it comes from a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
async def sqlite_db(sqlite_backend: Backend) -> AsyncIterator[Sessions]:
    engine = create_engine(sqlite_backend.url)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def chat(
    settings: Settings, db: Sessions, queue: QueueService, tmp_path: Path, stdin: io.StringIO
) -> str:
    out = io.StringIO()
    await run_console(
        settings, db, queue, photo_dir=tmp_path, user_id=new_user_id(), stdin=stdin, out=out
    )
    return out.getvalue()


async def test_minus_one_at_the_character_choice_is_not_a_paid_message(
    settings: Settings, sqlite_db: Sessions, queue: QueueService, tmp_path: Path
) -> None:
    await make_character(sqlite_db)
    typed = Terminal("/start\n-1\n+0\n/balance\n/quit\n")

    output = await chat(settings, sqlite_db, queue, tmp_path, typed)

    assert output.count(texts.UNKNOWN_CHARACTER) == 2
    assert texts.balance(settings.start_energy, settings.start_diamonds) in output
    assert (await queue.get_queue_depth(TaskType.GENERATE_REPLY)).unfinished == 0
    # One prompt before each of the five lines, and one after the last before /quit ends it.
    assert output.count(texts.CONSOLE_PROMPT) == 5


async def test_piped_input_gets_no_prompt(
    settings: Settings, sqlite_db: Sessions, queue: QueueService, tmp_path: Path
) -> None:
    output = await chat(settings, sqlite_db, queue, tmp_path, io.StringIO("/help\n"))
    assert texts.CONSOLE_PROMPT not in output
