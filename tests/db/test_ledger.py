"""Charges and refunds: idempotent per charge id, atomic with the ledger, never below zero."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from db.models import Currency, LedgerEntry, LedgerKind
from db.repositories import RefundOutcome, balance, charge, refund
from shared.errors import InsufficientBalanceError
from tests.support.fixtures_db import Backend, Sessions, make_user, new_task_id


async def _charge(
    db: Sessions,
    user_id: int,
    charge_id: str,
    amount: int = 1,
    currency: Currency = Currency.ENERGY,
) -> int:
    async with db.begin() as session:
        return await charge(session, user_id, currency, amount, charge_id=charge_id, reason="test")


async def _refund(db: Sessions, charge_id: str) -> RefundOutcome:
    async with db.begin() as session:
        return await refund(session, charge_id, "task failed")


async def _balance(db: Sessions, user_id: int) -> tuple[int, int]:
    async with db.begin() as session:
        return await balance(session, user_id)


async def _ledger_rows(db: Sessions, charge_id: str) -> list[tuple[str, int]]:
    async with db.begin() as session:
        rows = await session.execute(
            select(LedgerEntry.kind, LedgerEntry.amount)
            .where(LedgerEntry.task_id == charge_id)
            .order_by(LedgerEntry.id)
        )
        return [(row.kind, row.amount) for row in rows]


async def test_charge_debits_and_records_the_ledger(db: Sessions) -> None:
    user_id = await make_user(db, energy=5, diamonds=3)
    energy_charge, diamond_charge = new_task_id(), new_task_id()

    assert await _charge(db, user_id, energy_charge, 2) == 3
    assert await _charge(db, user_id, diamond_charge, 3, Currency.DIAMONDS) == 0

    assert await _balance(db, user_id) == (3, 0)
    assert await _ledger_rows(db, energy_charge) == [(LedgerKind.CHARGE, -2)]
    assert await _ledger_rows(db, diamond_charge) == [(LedgerKind.CHARGE, -3)]


async def test_same_charge_id_charges_once(db: Sessions) -> None:
    user_id = await make_user(db, energy=5)
    charge_id = new_task_id()

    assert await _charge(db, user_id, charge_id, 2) == 3
    assert await _charge(db, user_id, charge_id, 2) == 3

    assert await _balance(db, user_id) == (3, 0)
    assert await _ledger_rows(db, charge_id) == [(LedgerKind.CHARGE, -2)]


async def test_same_charge_id_concurrently_charges_once(db: Sessions) -> None:
    user_id = await make_user(db, energy=5)
    charge_id = new_task_id()

    results = await asyncio.gather(*(_charge(db, user_id, charge_id, 2) for _ in range(4)))

    assert set(results) == {3}
    assert await _balance(db, user_id) == (3, 0)
    assert len(await _ledger_rows(db, charge_id)) == 1


async def test_insufficient_balance_changes_nothing(db: Sessions) -> None:
    user_id = await make_user(db, energy=1)
    charge_id = new_task_id()

    with pytest.raises(InsufficientBalanceError) as caught:
        await _charge(db, user_id, charge_id, 2)

    assert (caught.value.currency, caught.value.balance, caught.value.cost) == ("energy", 1, 2)
    assert await _balance(db, user_id) == (1, 0)
    assert await _ledger_rows(db, charge_id) == []


async def test_insufficient_balance_caught_inside_the_transaction_leaves_nothing(
    db: Sessions,
) -> None:
    user_id = await make_user(db, energy=1)
    charge_id = new_task_id()

    async with db.begin() as session:
        with pytest.raises(InsufficientBalanceError):
            await charge(session, user_id, Currency.ENERGY, 5, charge_id=charge_id, reason="x")
        # The savepoint rolled back the ledger row; the outer transaction commits cleanly.
        assert await balance(session, user_id) == (1, 0)

    assert await _ledger_rows(db, charge_id) == []
    assert await _refund(db, charge_id) is RefundOutcome.NOT_CHARGED


async def test_negative_amount_is_refused(db: Sessions) -> None:
    user_id = await make_user(db, energy=1)
    with pytest.raises(ValueError, match="negative"):
        await _charge(db, user_id, new_task_id(), -1)


async def test_exact_balance_can_be_charged_by_one_of_two_concurrent_charges(
    db: Sessions,
) -> None:
    user_id = await make_user(db, energy=1)

    results = await asyncio.gather(
        _charge(db, user_id, new_task_id()),
        _charge(db, user_id, new_task_id()),
        return_exceptions=True,
    )

    assert sorted(type(result).__name__ for result in results) == [
        "InsufficientBalanceError",
        "int",
    ]
    assert 0 in results
    assert await _balance(db, user_id) == (0, 0)


async def test_many_concurrent_charges_never_go_below_zero(db: Sessions) -> None:
    user_id = await make_user(db, diamonds=3)
    charge_ids = [new_task_id() for _ in range(10)]

    results = await asyncio.gather(
        *(_charge(db, user_id, cid, 1, Currency.DIAMONDS) for cid in charge_ids),
        return_exceptions=True,
    )

    succeeded = [result for result in results if isinstance(result, int)]
    failed = [result for result in results if isinstance(result, InsufficientBalanceError)]
    assert sorted(succeeded) == [0, 1, 2]
    assert len(failed) == 7
    assert await _balance(db, user_id) == (0, 0)
    async with db.begin() as session:
        charged = await session.scalar(
            select(func.count()).where(LedgerEntry.task_id.in_(charge_ids))
        )
    assert charged == 3


async def test_interleaved_charges_on_postgresql(db: Sessions, backend: Backend) -> None:
    """Both transactions see balance 1 before either debits; only one debit may win."""
    if backend.name != "postgresql":
        pytest.skip("SQLite's BEGIN IMMEDIATE serializes whole transactions: no interleaving")
    user_id = await make_user(db, energy=1)
    both_read = asyncio.Barrier(2)

    async def read_then_charge() -> int:
        async with db.begin() as session:
            assert await balance(session, user_id) == (1, 0)
            await both_read.wait()
            return await charge(
                session, user_id, Currency.ENERGY, 1, charge_id=new_task_id(), reason="x"
            )

    results = await asyncio.gather(read_then_charge(), read_then_charge(), return_exceptions=True)

    assert sum(isinstance(result, InsufficientBalanceError) for result in results) == 1
    assert await _balance(db, user_id) == (0, 0)


async def test_refund_returns_the_charge_once(db: Sessions) -> None:
    user_id = await make_user(db, energy=5)
    charge_id = new_task_id()
    await _charge(db, user_id, charge_id, 2)

    assert await _refund(db, charge_id) is RefundOutcome.REFUNDED
    assert await _refund(db, charge_id) is RefundOutcome.ALREADY_REFUNDED

    assert await _balance(db, user_id) == (5, 0)
    assert await _ledger_rows(db, charge_id) == [
        (LedgerKind.CHARGE, -2),
        (LedgerKind.REFUND, 2),
    ]


async def test_concurrent_refunds_refund_once(db: Sessions) -> None:
    user_id = await make_user(db, diamonds=4)
    charge_id = new_task_id()
    await _charge(db, user_id, charge_id, 3, Currency.DIAMONDS)

    outcomes = await asyncio.gather(*(_refund(db, charge_id) for _ in range(4)))

    assert sorted(outcomes) == sorted(
        [RefundOutcome.REFUNDED] + [RefundOutcome.ALREADY_REFUNDED] * 3
    )
    assert await _balance(db, user_id) == (0, 4)


async def test_refund_of_a_never_charged_id_is_refused(db: Sessions) -> None:
    user_id = await make_user(db, energy=2)
    charge_id = new_task_id()

    assert await _refund(db, charge_id) is RefundOutcome.NOT_CHARGED

    assert await _balance(db, user_id) == (2, 0)
    assert await _ledger_rows(db, charge_id) == []


async def test_charge_after_refund_with_the_same_id_stays_refunded(db: Sessions) -> None:
    user_id = await make_user(db, energy=3)
    charge_id = new_task_id()
    await _charge(db, user_id, charge_id, 1)
    await _refund(db, charge_id)

    # A redelivered charge of an already refunded task must not debit again.
    assert await _charge(db, user_id, charge_id, 1) == 3
    assert await _balance(db, user_id) == (3, 0)
