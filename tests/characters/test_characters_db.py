"""The characters' queries on SQLite and PostgreSQL: the paged list as each user may see it,
the 18+ answer, the greeting stored once per dialog, {{user}} filled per user, a card
imported again updating its row.

Each backend is a database of this module's own: adult characters in the shared test
schema would change every other bot test's /start."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest
from sqlalchemy import select

from db import characters as cast
from db import repositories as repo
from db.engine import create_engine, create_sessionmaker
from db.migrate import upgrade
from db.models import ChatMessage
from producer.dialogs import Dialogs
from shared.errors import InvalidCardError
from tests.characters.card_files import v2, v2_png
from tests.support.fixtures_db import (
    BACKENDS,
    PG_URL,
    Backend,
    Sessions,
    drop_pg_schema,
    in_thread,
    make_user,
    new_schema_name,
)

PER_PAGE = 3


@pytest.fixture(scope="module", params=BACKENDS)
def own_backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('cards') / 'cards.db'}"
        in_thread(upgrade, url)
        yield Backend(url)
        return
    schema = new_schema_name()
    in_thread(upgrade, PG_URL, schema)
    yield Backend(PG_URL, schema)
    drop_pg_schema(schema)


@pytest.fixture
async def db(own_backend: Backend) -> AsyncIterator[Sessions]:
    engine = create_engine(own_backend.url, schema=own_backend.schema)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


async def add(db: Sessions, name: str, **fields: object) -> int:
    card = orjson.dumps(v2(name=name, creator=f"db-{uuid.uuid4().hex[:6]}", **fields))
    async with db.begin() as session:
        return (await cast.import_card(session, card)).character_id


async def everything(db: Sessions, user_id: int) -> tuple[list[list[int]], bool]:
    """Every page a user sees, walked with has_next; whether adult ones were hidden."""
    pages: list[list[int]] = []
    hidden = False
    while True:
        async with db() as session:
            page = await cast.list_page(session, user_id, len(pages), PER_PAGE)
        pages.append([c.id for c in page.characters])
        hidden = page.adult_hidden
        assert page.page == len(pages) - 1
        if not page.has_next:
            return pages, hidden


async def test_adult_characters_are_listed_and_chosen_only_after_a_yes(db: Sessions) -> None:
    plain = [await add(db, f"Plain {uuid.uuid4().hex[:6]}") for _ in range(4)]
    adult = await add(db, f"Adult {uuid.uuid4().hex[:6]}", tags=["NSFW"])
    user = await make_user(db)

    pages, hidden = await everything(db, user)
    seen = [i for page in pages for i in page]
    assert set(plain) <= set(seen)
    assert adult not in seen
    assert hidden
    assert all(len(page) == PER_PAGE for page in pages[:-1])
    assert seen == sorted(seen)

    async with db.begin() as session:
        character = await repo.get_character(session, adult)
        assert character is not None
        assert await cast.may_choose(session, character, user) is False
        await cast.answer_adult(session, user, False)
    async with db.begin() as session:
        assert await cast.is_adult(session, user) is False
        assert await cast.may_choose(session, character, user) is False
        await cast.answer_adult(session, user, True)
    async with db.begin() as session:
        assert await cast.may_choose(session, character, user) is True

    pages, hidden = await everything(db, user)
    assert adult in [i for page in pages for i in page]
    assert not hidden


async def test_an_adult_dialog_resumes_only_while_the_user_says_they_are_adult(
    db: Sessions,
) -> None:
    """/dialogs cannot reopen an adult character's dialog after a later "no" to /adult."""
    adult = await add(db, f"Adult {uuid.uuid4().hex[:6]}", tags=["NSFW"])
    plain = await add(db, f"Plain {uuid.uuid4().hex[:6]}")
    user = await make_user(db)
    async with db.begin() as session:
        await cast.answer_adult(session, user, True)
        adult_dialog = (await repo.start_dialog(session, user, adult)).id
        await repo.start_dialog(session, user, plain)
    resumer = Dialogs(db)
    assert await resumer.resume(user, adult_dialog) is not None
    async with db.begin() as session:
        await repo.start_dialog(session, user, plain)
        await cast.answer_adult(session, user, False)

    assert await resumer.resume(user, adult_dialog) is None
    async with db() as session:
        active = await repo.active_dialog(session, user)
    assert active is not None and active.character_id == plain


async def test_a_page_past_the_end_is_the_last_page(db: Sessions) -> None:
    await add(db, f"Paged {uuid.uuid4().hex[:6]}")
    user = await make_user(db)
    pages, _ = await everything(db, user)

    async with db() as session:
        past = await cast.list_page(session, user, 9999, PER_PAGE)

    assert past.page == len(pages) - 1
    assert [c.id for c in past.characters] == pages[-1]
    assert not past.has_next


async def test_the_greeting_is_stored_once_per_dialog_and_filled_for_the_user(
    db: Sessions,
) -> None:
    luna = await add(
        db, f"Luna {uuid.uuid4().hex[:6]}", first_mes="Hi {{user}}!", scenario="{{user}} waits."
    )
    user = await make_user(db)

    async with db.begin() as session:
        character = await repo.get_character(session, luna)
        assert character is not None
        dialog = await repo.start_dialog(session, user, luna)
        first = await cast.open_with_greeting(session, dialog.id, character, "Анна")
        again = await cast.open_with_greeting(session, dialog.id, character, "Анна")
        prompt = await cast.persona_prompt(session, character, user)
    async with db() as session:
        stored = list(
            await session.execute(
                select(ChatMessage.role, ChatMessage.content, ChatMessage.task_id).where(
                    ChatMessage.dialog_id == dialog.id
                )
            )
        )

    assert (first, again) == ("Hi Анна!", None)
    assert [tuple(row) for row in stored] == [
        ("assistant", "Hi Анна!", cast.greeting_key(dialog.id))
    ]
    assert "Тест waits." in prompt  # make_user's name


async def test_a_card_imported_again_updates_its_row_and_may_not_take_a_name(
    db: Sessions,
) -> None:
    name = f"Twin {uuid.uuid4().hex[:6]}"
    first = orjson.dumps(v2(name=name, creator="one", description="First."))
    second = v2_png(v2(name=name, creator="ONE", description="Second."))
    async with db.begin() as session:
        created = await cast.import_card(session, first)
    async with db.begin() as session:
        updated = await cast.import_card(session, second)
        character = await repo.get_character(session, updated.character_id)
        assert character is not None
        assert "Second." in character.system_prompt
        assert await cast.avatar_of(session, character.id) is not None

    assert (created.stored, updated.stored) == (cast.Stored.CREATED, cast.Stored.UPDATED)
    assert created.character_id == updated.character_id
    with pytest.raises(InvalidCardError, match="exists already"):
        async with db.begin() as session:
            await cast.import_card(session, orjson.dumps(v2(name=name, creator="two")))
