"""Users, characters, the seed script and the bot's delivery records."""

from __future__ import annotations

import asyncio
from datetime import UTC

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db import delivery_rows
from db.models import Character, Delivery
from db.repositories import (
    balance,
    get_character,
    get_or_create_user,
    get_user,
    list_characters,
)
from scripts.seed_characters import CHARACTERS, seed_characters
from tests.support.fixtures_db import Sessions, new_task_id, new_user_id


async def _get_or_create(db: Sessions, user_id: int, name: str = "Аня") -> tuple[int, int]:
    async with db.begin() as session:
        user = await get_or_create_user(
            session, user_id, name, "ru", start_energy=100, start_diamonds=10
        )
        return user.energy, user.diamonds


async def _character_ids(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(Character.name, Character.id))
    return {row.name: row.id for row in rows}


async def _apply(db: Sessions, task_id: str, apply_id: str) -> bool:
    async with db.begin() as session:
        return await delivery_rows.mark_applied(session, task_id, apply_id)


async def test_user_is_created_once_with_start_balances(db: Sessions) -> None:
    user_id = new_user_id()

    assert await _get_or_create(db, user_id) == (100, 10)
    async with db.begin() as session:
        assert await balance(session, user_id) == (100, 10)
        user = await get_user(session, user_id)
    assert await _get_or_create(db, user_id, "Другое имя") == (100, 10)

    assert user is not None
    assert user.name == "Аня"
    assert user.created_at.tzinfo is UTC


async def test_concurrent_first_messages_create_one_user(db: Sessions) -> None:
    user_id = new_user_id()

    results = await asyncio.gather(*(_get_or_create(db, user_id) for _ in range(4)))

    assert set(results) == {(100, 10)}


async def test_unknown_user_has_no_row(db: Sessions) -> None:
    async with db.begin() as session:
        assert await get_user(session, new_user_id()) is None


async def test_seed_characters_is_idempotent(db: Sessions) -> None:
    names = [seed.name for seed in CHARACTERS]

    assert await seed_characters(db) == len(CHARACTERS)
    async with db.begin() as session:
        first_ids = await _character_ids(session)
    assert await seed_characters(db) == len(CHARACTERS)

    async with db.begin() as session:
        count = await session.scalar(select(func.count()).where(Character.name.in_(names)))
        ids = await _character_ids(session)
        listed = {character.name for character in await list_characters(session)}
        alice = await get_character(session, ids[names[0]])
    assert count == len(CHARACTERS)
    assert {name: ids[name] for name in names} == {name: first_ids[name] for name in names}
    assert set(names) <= listed
    assert alice is not None
    assert alice.appearance.endswith("anime style")


async def test_delivery_is_recorded_once_and_applied_once(db: Sessions) -> None:
    task_id, other = new_task_id(), new_task_id()
    async with db.begin() as session:
        await delivery_rows.expect(session, task_id, 12345, "reply")
        await delivery_rows.expect(session, task_id, 12345, "reply")
        await delivery_rows.expect(session, other, 12345, "image")
        pending = {delivery.task_id for delivery in await delivery_rows.waiting(session)}
    assert {task_id, other} <= pending

    apply_ids = [f"applier-{n}" for n in range(4)]
    applied = await asyncio.gather(*(_apply(db, task_id, a) for a in apply_ids))

    assert sorted(applied) == [False, False, False, True]
    async with db.begin() as session:
        pending = {delivery.task_id for delivery in await delivery_rows.waiting(session)}
        assert not await delivery_rows.mark_applied(session, new_task_id(), "anyone")
    assert task_id not in pending
    assert other in pending
    # The winner may apply again (its commit reply was lost); the others still may not.
    winner = apply_ids[applied.index(True)]
    assert await _apply(db, task_id, winner)
    assert [await _apply(db, task_id, a) for a in apply_ids if a != winner] == [
        False,
        False,
        False,
    ]
    # Leave no open delivery: bot tests on this database resume every one they find.
    async with db.begin() as session:
        await session.execute(delete(Delivery).where(Delivery.task_id.in_([task_id, other])))
