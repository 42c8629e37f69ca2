"""Import SillyTavern/TavernAI character cards (PNG or JSON) into the database.

Each file is imported in its own transaction: a bad card is reported and the others are still
imported. Importing the same card again (same creator and name) updates its character.
Exit status: 0 all imported, 1 some files failed, 2 the database could not be used.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import structlog
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.characters import Imported, import_card
from db.engine import create_engine, create_sessionmaker
from shared.cards.card import MAX_CARD_BYTES
from shared.config import Settings, load_settings
from shared.errors import InvalidCardError
from shared.logging import configure_logging

log = structlog.get_logger(__name__)

CARD_SUFFIXES = (".png", ".json")
EXIT_SOME_FAILED = 1
EXIT_NO_DATABASE = 2


class DatabaseUnusableError(Exception):
    """The database refused the import for a reason no card can fix (no schema, no server)."""


def card_files(paths: list[Path]) -> list[Path]:
    """The files named, and the cards (*.png, *.json) inside the directories named."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in CARD_SUFFIXES)
        else:
            found.append(path)
    return found


def read_card_file(path: Path) -> bytes:
    """The file's bytes; InvalidCardError if it cannot be read or is too large."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CARD_BYTES + 1)
    except OSError as exc:
        raise InvalidCardError(f"cannot read the file: {exc.strerror or exc}") from None
    if len(data) > MAX_CARD_BYTES:
        raise InvalidCardError(f"file is larger than {MAX_CARD_BYTES // (1024 * 1024)} MB")
    return data


async def import_file(sessionmaker: async_sessionmaker[AsyncSession], path: Path) -> Imported:
    """One card file in one transaction; InvalidCardError names what is wrong with it."""
    data = read_card_file(path)
    try:
        async with sessionmaker.begin() as session:
            return await import_card(session, data)
    except IntegrityError:
        # Another import took the name between our check and our insert.
        raise InvalidCardError("a character with this name exists already") from None
    except DBAPIError as exc:
        raise DatabaseUnusableError(type(exc.orig).__name__) from None


def _report(path: Path, imported: Imported) -> None:
    adult = ", 18+" if imported.nsfw else ""
    avatar = ", with avatar" if imported.has_avatar else ""
    what = f"id {imported.character_id}{adult}{avatar}"
    print(f"{imported.stored.value}: {path} -> {imported.name} ({what})")
    log.info(
        "card_imported",
        path=str(path),
        character_id=imported.character_id,
        stored=imported.stored.value,
    )


async def run(settings: Settings, paths: list[Path]) -> int:
    engine = create_engine(settings.database_url)
    sessionmaker = create_sessionmaker(engine)
    failed = 0
    try:
        for path in card_files(paths):
            try:
                _report(path, await import_file(sessionmaker, path))
            except InvalidCardError as exc:
                failed += 1
                print(f"error: {path}: {exc}", file=sys.stderr)
                log.warning("card_import_failed", path=str(path), error=str(exc))
    except DatabaseUnusableError as exc:
        print(
            f"cannot import characters: {exc}; is the schema there? "
            "run `python -m db.migrate` first",
            file=sys.stderr,
        )
        return EXIT_NO_DATABASE
    finally:
        await engine.dispose()
    return EXIT_SOME_FAILED if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.import_characters",
        description="Import character cards (PNG with a `chara`/`ccv3` chunk, or JSON) into "
        "DATABASE_URL; a card imported again is updated. Directories: their *.png and *.json.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_json)
    return asyncio.run(run(settings, args.paths))


if __name__ == "__main__":
    sys.exit(main())
