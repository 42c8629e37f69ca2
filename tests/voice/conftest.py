"""Fixtures of the voice tests: the bot's PostgreSQL sessions, consumer processes."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest

from db.engine import create_engine, create_sessionmaker
from tests.support.fixtures_db import Backend, Sessions


@pytest.fixture
async def pg(postgresql_backend: Backend) -> AsyncIterator[Sessions]:
    engine = create_engine(postgresql_backend.url, schema=postgresql_backend.schema)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Consumer processes a test starts; any still running at its end is killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
