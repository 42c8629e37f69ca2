"""`python -m scripts.import_characters` as an operator runs it, against PostgreSQL: good
cards imported, bad ones reported one by one, the exit status says so, and a second run
updates the same characters instead of adding new ones."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import undefer

from db.engine import create_engine, create_sessionmaker
from db.models import Character
from tests.characters.card_files import v1, v2, v2_png, v3, write
from tests.characters.run_module import run_module
from tests.support.fixtures_db import PG_URL
from tests.support.private_database import private_database

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    """A migrated database of its own: the command takes nothing but DATABASE_URL."""
    server = make_url(PG_URL).set(database="postgres").render_as_string(hide_password=False)
    async with private_database(server) as url:
        yield url


async def run_import(database_url: str, *paths: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "LOG_"))}
    env.update(DATABASE_URL=database_url, LOG_JSON="true")
    return await run_module("scripts.import_characters", [str(path) for path in paths], env)


async def characters(database_url: str) -> dict[str, Character]:
    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            query = select(Character).options(undefer(Character.avatar)).order_by(Character.id)
            rows = await session.scalars(query)
            return {row.name: row for row in rows}
    finally:
        await engine.dispose()


async def test_cards_are_imported_once_and_updated_on_a_second_run(
    database_url: str, tmp_path: Path
) -> None:
    cards = tmp_path / "cards"
    cards.mkdir()
    png = write(cards, "luna.png", v2_png(v2(creator="a", first_mes="Hi {{user}}", tags=["NSFW"])))
    write(cards, "sol.json", orjson.dumps(v3(name="Sol", creator="b")))
    flat = write(tmp_path, "flat.json", orjson.dumps(v1(name="Flat")))
    broken = write(tmp_path, "broken.png", png.read_bytes()[:-20])

    code, out, err = await run_import(database_url, cards, broken, flat)

    assert code == 1, err
    assert out.splitlines() == [
        f"created: {cards / 'luna.png'} -> Луна (id 1, 18+, with avatar)",
        f"created: {cards / 'sol.json'} -> Sol (id 2)",
        f"created: {flat} -> Flat (id 3)",
    ]
    assert f"error: {broken}: PNG" in err
    first = await characters(database_url)
    assert sorted(first) == ["Flat", "Sol", "Луна"]
    luna = first["Луна"]
    assert (luna.nsfw, luna.greeting, luna.card_key) == (True, "Hi {{user}}", "a/луна")
    assert luna.avatar is not None
    assert luna.avatar.startswith(b"\x89PNG\r\n\x1a\n")

    write(cards, "luna.png", v2_png(v2(creator="a", description="Changed {{char}}.")))
    code, out, err = await run_import(database_url, cards / "luna.png")

    assert (code, err.count("error")) == (0, 0)
    assert out.splitlines() == [f"updated: {cards / 'luna.png'} -> Луна (id 1, with avatar)"]
    second = await characters(database_url)
    assert sorted(second) == ["Flat", "Sol", "Луна"]
    assert second["Луна"].id == luna.id
    assert "Changed Луна." in second["Луна"].system_prompt
    assert (second["Луна"].nsfw, second["Луна"].greeting) == (False, None)


async def test_a_card_may_not_take_another_characters_name(
    database_url: str, tmp_path: Path
) -> None:
    first = write(tmp_path, "one.json", orjson.dumps(v2(name="Twin", creator="one")))
    other = write(tmp_path, "two.json", orjson.dumps(v2(name="Twin", creator="two")))

    code, out, err = await run_import(database_url, first, other)

    assert code == 1
    assert out.count("created") == 1
    assert f"error: {other}: a character named 'Twin' exists already" in err
    assert [c.card_key for c in (await characters(database_url)).values()] == ["one/twin"]


async def test_a_database_without_the_schema_is_exit_2(tmp_path: Path) -> None:
    card = write(tmp_path, "one.json", orjson.dumps(v2()))
    empty = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"

    code, _, err = await run_import(empty, card)

    assert code == 2
    assert "run `python -m db.migrate` first" in err
