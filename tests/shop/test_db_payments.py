"""Shop ledger lines: credits and refund debits once per key, daily top-ups once per day."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from db import payments
from db.models import Currency, LedgerEntry, LedgerKind, User
from db.repositories import balance
from tests.support.fixtures_db import Sessions, make_user, new_task_id

DAY = date(2026, 3, 1)


async def _credit(db: Sessions, user_id: int, key: str, amount: int = 10) -> int | None:
    async with db.begin() as session:
        return await payments.credit(
            session,
            user_id,
            Currency.DIAMONDS,
            amount,
            key=key,
            kind=LedgerKind.PURCHASE,
            reason="t",
        )


async def _debit(db: Sessions, user_id: int, key: str, amount: int) -> payments.Debit | None:
    async with db.begin() as session:
        return await payments.debit_up_to(
            session,
            user_id,
            Currency.DIAMONDS,
            amount,
            key=key,
            kind=LedgerKind.STARS_REFUND,
            reason="t",
        )


async def _top_up(db: Sessions, user_id: int, level: int, day: date = DAY) -> int:
    async with db.begin() as session:
        user = await session.get(User, user_id)
        assert user is not None
        added = await payments.top_up_daily(session, user, level, day)
        assert user.energy == (await balance(session, user_id))[0]  # refreshed in place
        return added


async def _balance(db: Sessions, user_id: int) -> tuple[int, int]:
    async with db() as session:
        return await balance(session, user_id)


async def _lines(db: Sessions, user_id: int) -> list[tuple[str, str, int]]:
    async with db() as session:
        rows = await session.execute(
            select(LedgerEntry.kind, LedgerEntry.task_id, LedgerEntry.amount)
            .where(LedgerEntry.user_id == user_id)
            .order_by(LedgerEntry.id)
        )
        return [(row.kind, row.task_id, row.amount) for row in rows]


def _charge_id() -> str:
    # Telegram charge ids can be longer than the 64 characters of a task id.
    return "stx" + new_task_id() * 3


async def test_credit_once_per_key(db: Sessions) -> None:
    user_id = await make_user(db, diamonds=2)
    key = _charge_id()

    assert await _credit(db, user_id, key) == 12
    assert await _credit(db, user_id, key) is None

    assert await _balance(db, user_id) == (0, 12)
    assert await _lines(db, user_id) == [("purchase", key, 10)]


async def test_concurrent_credits_of_one_key_credit_once(db: Sessions) -> None:
    user_id = await make_user(db)
    key = _charge_id()

    results = await asyncio.gather(*(_credit(db, user_id, key) for _ in range(6)))

    assert sorted(results, key=str) == [10, None, None, None, None, None]
    assert await _balance(db, user_id) == (0, 10)


async def test_refund_debit_takes_what_is_left_and_records_the_shortfall(db: Sessions) -> None:
    user_id = await make_user(db, diamonds=4)
    key = _charge_id()

    assert await _debit(db, user_id, key, 10) == payments.Debit(taken=4, shortfall=6)
    assert await _debit(db, user_id, key, 10) is None

    assert await _balance(db, user_id) == (0, 0)
    [(kind, _, amount)] = await _lines(db, user_id)
    assert (kind, amount) == ("stars_refund", -4)


async def test_credits_cannot_be_negative(db: Sessions) -> None:
    user_id = await make_user(db)
    with pytest.raises(ValueError, match="negative"):
        await _credit(db, user_id, _charge_id(), -1)
    # The database refuses a credit line with the wrong sign too (the migrated constraint).
    with pytest.raises(IntegrityError):
        async with db.begin() as session:
            session.add(
                LedgerEntry(
                    user_id=user_id,
                    currency="energy",
                    amount=-1,
                    kind=LedgerKind.DAILY,
                    reason="t",
                    task_id=new_task_id(),
                )
            )


async def test_daily_top_up_raises_energy_to_the_level_once_a_day(db: Sessions) -> None:
    user_id = await make_user(db, energy=3)

    assert await _top_up(db, user_id, 10) == 7
    async with db.begin() as session:  # spend it all again the same day
        await session.execute(update(User).where(User.id == user_id).values(energy=0))
    assert await _top_up(db, user_id, 10) == 0
    assert await _balance(db, user_id) == (0, 0)

    assert await _top_up(db, user_id, 10, date(2026, 3, 2)) == 10
    assert await _balance(db, user_id) == (10, 0)
    assert [line[1] for line in await _lines(db, user_id)] == [
        f"daily:{user_id}:2026-03-01",
        f"daily:{user_id}:2026-03-02",
    ]


async def test_daily_top_up_waits_while_energy_is_enough(db: Sessions) -> None:
    user_id = await make_user(db, energy=25)

    assert await _top_up(db, user_id, 10) == 0
    assert await _lines(db, user_id) == []
    assert await _top_up(db, user_id, 0) == 0  # DAILY_ENERGY=0: off


async def test_concurrent_daily_top_ups_happen_once(db: Sessions) -> None:
    user_id = await make_user(db, energy=1)

    added = await asyncio.gather(*(_top_up(db, user_id, 10) for _ in range(8)))

    assert sorted(added) == [0] * 7 + [9]
    assert await _balance(db, user_id) == (10, 0)
    assert len(await _lines(db, user_id)) == 1
