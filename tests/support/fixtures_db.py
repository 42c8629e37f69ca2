"""Database fixtures: each test runs on SQLite and on PostgreSQL, both migrated by Alembic.

Each pytest(-xdist) process migrates one SQLite file and one PostgreSQL schema named
`test_<uuid>` and drops it at the end. Tests share them, so they never rely on global state:
every test makes its own users (random ids), characters (unique names) and task ids.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.schema import DropSchema

from db.engine import create_engine, create_sessionmaker
from db.migrate import upgrade
from db.repositories import get_or_create_user, upsert_character

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]

T = TypeVar("T")
Sessions = async_sessionmaker[AsyncSession]


@dataclass(frozen=True)
class Backend:
    url: str
    schema: str | None = None

    @property
    def name(self) -> str:
        return make_url(self.url).get_backend_name()


def in_thread(func: Callable[..., T], *args: object) -> T:
    """Run sync code that starts its own event loop (Alembic's env.py) off pytest's loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(func, *args).result()


def new_schema_name() -> str:
    return f"test_{uuid.uuid4().hex[:16]}"


async def _drop_schema(schema: str) -> None:
    engine = create_engine(PG_URL)
    try:
        async with engine.begin() as connection:
            await connection.execute(DropSchema(schema, cascade=True, if_exists=True))
    finally:
        await engine.dispose()


def drop_pg_schema(schema: str) -> None:
    in_thread(lambda: asyncio.run(_drop_schema(schema)))


async def table_names(backend: Backend) -> set[str]:
    def names(connection: Connection) -> set[str]:
        return set(inspect(connection).get_table_names())

    engine = create_engine(backend.url, schema=backend.schema)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(names)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def postgresql_backend() -> Iterator[Backend]:
    schema = new_schema_name()
    in_thread(upgrade, PG_URL, schema)
    yield Backend(PG_URL, schema)
    drop_pg_schema(schema)


@pytest.fixture(scope="session")
def sqlite_backend(tmp_path_factory: pytest.TempPathFactory) -> Backend:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    in_thread(upgrade, url)
    return Backend(url)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    """A migrated database shared by the whole session (one per xdist worker)."""
    migrated: Backend = request.getfixturevalue(f"{request.param}_backend")
    return migrated


@pytest.fixture(params=BACKENDS)
def empty_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A database nobody has migrated yet, for migration tests; removed afterwards."""
    if request.param == "sqlite":
        yield Backend(f"sqlite+aiosqlite:///{tmp_path}/empty.db")
        return
    schema = new_schema_name()
    yield Backend(PG_URL, schema)
    drop_pg_schema(schema)


@pytest.fixture
async def db(backend: Backend) -> AsyncIterator[Sessions]:
    engine = create_engine(backend.url, schema=backend.schema)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


def new_user_id() -> int:
    # Telegram ids fit in 52 bits; random ones keep tests apart in the shared schema.
    return random.randint(10**9, 2**52)


def new_task_id() -> str:
    return uuid.uuid4().hex


async def make_user(db: Sessions, *, energy: int = 0, diamonds: int = 0) -> int:
    user_id = new_user_id()
    async with db.begin() as session:
        await get_or_create_user(
            session, user_id, "Тест", "ru", start_energy=energy, start_diamonds=diamonds
        )
    return user_id


async def make_character(db: Sessions) -> int:
    async with db.begin() as session:
        return await upsert_character(
            session,
            name=f"Персонаж {uuid.uuid4().hex[:8]}",
            description="Описание",
            system_prompt="Ты — тестовый персонаж.",
            appearance="young woman, test portrait, anime style",
        )
