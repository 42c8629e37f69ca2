"""Alembic environment: the project's async engine, with an optional PostgreSQL schema."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateSchema

# The `alembic` console script puts only its bin dir on sys.path and this project is not
# installed (uv package = false), so make the repository root importable.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from db.engine import create_engine  # noqa: E402
from db.models import Base  # noqa: E402
from shared.config import load_settings  # noqa: E402

config = context.config


def _target() -> tuple[str, str | None]:
    """URL and schema: programmatic attributes first, then `-x schema=...` and the settings."""
    x_args = context.get_x_argument(as_dictionary=True)
    url = config.attributes.get("url") or x_args.get("url") or load_settings().database_url
    schema = config.attributes.get("schema") or x_args.get("schema")
    return url, schema


def _run_migrations(connection: Connection, schema: str | None) -> None:
    if schema is not None:
        connection.execute(CreateSchema(schema, if_not_exists=True))
        connection.commit()
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table_schema=schema,
        # SQLite can ALTER almost nothing; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        # The engine's BEGIN hook makes SQLite DDL transactional too.
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str, schema: str | None) -> None:
    engine = create_engine(url, schema=schema)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_migrations, schema)
    finally:
        await engine.dispose()


def _run_offline(url: str) -> None:
    # `--sql` output targets the connection's default schema; `-x schema` is not applied here.
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


_url, _schema = _target()
if context.is_offline_mode():
    _run_offline(_url)
else:
    asyncio.run(_run_online(_url, _schema))
