"""Engine and sessionmaker factories; built once per process by its composition root.

Keep transactions short and never await network I/O inside one: on SQLite every transaction
holds the database write lock, on PostgreSQL the row locks taken by charges and dialog switches.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from shared.config import Settings

SQLITE_BUSY_TIMEOUT_MS = 10_000


def create_engine(
    url: str,
    *,
    schema: str | None = None,
    statement_timeout: float = 0.0,
    lock_timeout: float = 0.0,
) -> AsyncEngine:
    """Build the async engine; a PostgreSQL `schema` becomes every connection's search_path.

    `statement_timeout` and `lock_timeout` (seconds, 0 = none) are PostgreSQL's own, set on
    every connection: a statement or lock wait that never ends then fails (and its step is
    retried) instead of holding its caller forever. SQLite waits `SQLITE_BUSY_TIMEOUT_MS`.
    """
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        if schema is not None:
            raise ValueError("SQLite has no schemas; pass schema=None")
        engine = _create_async_engine(url)
        _configure_sqlite(engine)
        return engine
    server_settings = {
        "statement_timeout": str(_milliseconds(statement_timeout)),
        "lock_timeout": str(_milliseconds(lock_timeout)),
    }
    if schema is not None:
        server_settings["search_path"] = schema
    connect_args: dict[str, Any] = {"server_settings": server_settings}
    return _create_async_engine(
        url,
        connect_args=connect_args,
        # Kept open across a burst of updates: a connection opened and closed per burst
        # costs the bot's loop more than the burst's queries.
        pool_size=20,
        max_overflow=10,
        # No ping per checkout: it doubled the round trips of a short transaction, and held
        # up streamed replies during a burst. A connection lost to a database restart fails
        # its first use instead (SQLAlchemy then drops the whole pool), and every step that
        # charges or delivers retries it (db.retry).
        pool_pre_ping=False,
        pool_recycle=1800,
    )


def engine_for(settings: Settings, *, schema: str | None = None) -> AsyncEngine:
    """The engine of DATABASE_URL with the DB_*_TIMEOUT_SECONDS of `settings`."""
    return create_engine(
        settings.database_url,
        schema=schema,
        statement_timeout=settings.db_statement_timeout_seconds,
        lock_timeout=settings.db_lock_timeout_seconds,
    )


def _milliseconds(seconds: float) -> int:
    # PostgreSQL reads 0 as "no timeout"; a positive fraction of a millisecond is not 0.
    return max(1, round(seconds * 1000)) if seconds > 0 else 0


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions keep loaded attributes after commit, so results can be used outside the block."""
    return async_sessionmaker(engine, expire_on_commit=False)


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take BEGIN away from the sqlite3 driver, which defers it and breaks savepoints.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # IMMEDIATE takes the write lock up front: a read-then-write transaction can then never
        # fail with SQLITE_BUSY on lock upgrade, and concurrent writers queue on busy_timeout.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
