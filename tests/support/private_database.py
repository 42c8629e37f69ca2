"""A private PostgreSQL database for one benchmark run: created fresh, migrated, dropped.

A database of its own rather than a schema: the bot process takes nothing but DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from db.migrate import upgrade

# The machine's own PostgreSQL, as scripts/setup.sh leaves it (trust auth on loopback).
LOCAL_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


@contextlib.asynccontextmanager
async def private_database(server_url: str = LOCAL_POSTGRES) -> AsyncIterator[str]:
    """The URL of a new, migrated database on `server_url`'s server; dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
            await asyncio.to_thread(upgrade, url)
            yield url
        finally:
            async with admin.connect() as connection:
                # FORCE: a killed bot process may still hold a connection.
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()
