"""Run the Alembic migrations programmatically; `python -m db.migrate` upgrades to head."""

from __future__ import annotations

import argparse
from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config

from shared.config import load_settings
from shared.logging import configure_logging

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

log = structlog.get_logger(__name__)


def alembic_config(url: str, schema: str | None = None) -> Config:
    """An Alembic config for `url`, independent of the working directory and pyproject."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # env.py reads these before falling back to `-x` arguments and the settings.
    config.attributes["url"] = url
    config.attributes["schema"] = schema
    return config


def upgrade(url: str, schema: str | None = None, revision: str = "head") -> None:
    """Migrate to `revision`, creating the PostgreSQL `schema` first if it is missing.

    Runs its own event loop, so call it where no loop is running (or via asyncio.to_thread).
    """
    command.upgrade(alembic_config(url, schema), revision)


def downgrade(url: str, schema: str | None = None, revision: str = "base") -> None:
    """Migrate down to `revision`; same loop rule as `upgrade`."""
    command.downgrade(alembic_config(url, schema), revision)


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(
        prog="python -m db.migrate",
        description="Create or upgrade the schema in DATABASE_URL (alembic upgrade head).",
    ).parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_json)
    upgrade(settings.database_url)
    log.info("migrations_applied", backend=settings.database_url.split(":", 1)[0])


if __name__ == "__main__":
    main()
