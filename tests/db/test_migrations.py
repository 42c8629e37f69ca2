"""Alembic migrations: upgrade from empty, a stairway down and up, and models == migrations."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from db.engine import create_engine
from db.migrate import alembic_config, downgrade, upgrade
from db.models import Base
from tests.support.fixtures_db import Backend, table_names

TABLES = {
    "users",
    "characters",
    "dialogs",
    "chat_messages",
    "photo_events",
    "ledger",
    "deliveries",
    "orders",
    "star_payments",
}


async def _upgrade(backend: Backend, revision: str = "head") -> None:
    await asyncio.to_thread(upgrade, backend.url, backend.schema, revision)


async def _downgrade(backend: Backend, revision: str) -> None:
    await asyncio.to_thread(downgrade, backend.url, backend.schema, revision)


async def test_upgrade_from_empty_creates_every_table(empty_backend: Backend) -> None:
    assert await table_names(empty_backend) == set()

    await _upgrade(empty_backend)

    assert await table_names(empty_backend) == TABLES | {"alembic_version"}


async def test_upgrade_twice_is_a_no_op(empty_backend: Backend) -> None:
    await _upgrade(empty_backend)
    await _upgrade(empty_backend)

    assert await table_names(empty_backend) == TABLES | {"alembic_version"}


async def test_stairway_each_revision_goes_down_and_up(empty_backend: Backend) -> None:
    script = ScriptDirectory.from_config(alembic_config(empty_backend.url))
    revisions = list(reversed(list(script.walk_revisions())))
    assert revisions, "no migrations found"

    for revision in revisions:
        await _upgrade(empty_backend, revision.revision)
        await _downgrade(empty_backend, "-1")
        await _upgrade(empty_backend, revision.revision)

    await _downgrade(empty_backend, "base")
    assert await table_names(empty_backend) == {"alembic_version"}
    await _upgrade(empty_backend)
    assert await table_names(empty_backend) == TABLES | {"alembic_version"}


async def test_models_match_migrations(empty_backend: Backend) -> None:
    await _upgrade(empty_backend)

    def diff(connection: Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))

    engine = create_engine(empty_backend.url, schema=empty_backend.schema)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(diff) == []
    finally:
        await engine.dispose()
