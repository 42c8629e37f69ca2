"""Shop queries: orders, Stars payments and the ledger lines that credit or debit balances.

Like repositories.py, plain async functions whose caller owns the transaction. Every line that
moves a balance is keyed (a Telegram charge id, `daily:<user>:<day>`, `grant:<admin>:<msg>`),
so a repeated update or a second bot process changes nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from db.models import (
    Currency,
    LedgerEntry,
    LedgerKind,
    Order,
    OrderState,
    StarPayment,
    User,
    utcnow,
)
from db.repositories import balance, insert_new

STARS = "XTR"
# Order ids are uuid hex strings (the orders.id column's size).
ORDER_ID_CHARS = 32


@dataclass(frozen=True, slots=True)
class Receipt:
    """A `successful_payment` as the shop needs it."""

    charge_id: str
    user_id: int
    payload: str
    currency: str
    total_amount: int
    paid_at: datetime
    is_test: bool = False


@dataclass(frozen=True, slots=True)
class Debit:
    """What a refund took back, and what it could not because it was already spent."""

    taken: int
    shortfall: int


def _column(currency: Currency) -> InstrumentedAttribute[int]:
    return User.energy if currency is Currency.ENERGY else User.diamonds


async def lock_user(session: AsyncSession, user_id: int) -> None:
    """Serializes balance reads and writes (and order choices) of one user on PostgreSQL
    (SQLite's BEGIN IMMEDIATE already serializes every writer)."""
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())


# Ledger lines.


async def credit(
    session: AsyncSession,
    user_id: int,
    currency: Currency,
    amount: int,
    *,
    key: str,
    kind: LedgerKind,
    reason: str,
    at: datetime | None = None,
) -> int | None:
    """Add `amount` once per (`key`, `kind`); the new balance, or None if already credited.

    `at` stamps the line: a caller whose commit reply was lost recognises its own line by it.
    """
    if amount < 0:
        raise ValueError("a credit cannot be negative")
    if not await insert_new(
        session,
        LedgerEntry,
        ["task_id", "kind"],
        user_id=user_id,
        currency=currency,
        amount=amount,
        kind=kind,
        reason=reason,
        task_id=key,
        created_at=at or utcnow(),
    ):
        return None
    column = _column(currency)
    new_balance: int = (
        await session.execute(
            update(User)
            .where(User.id == user_id)
            .values({column: column + amount})
            .returning(column)
        )
    ).scalar_one()
    return new_balance


async def debit_up_to(
    session: AsyncSession,
    user_id: int,
    currency: Currency,
    amount: int,
    *,
    key: str,
    kind: LedgerKind,
    reason: str,
) -> Debit | None:
    """Take back `amount` once per (`key`, `kind`), but never below zero; None if done before.

    The ledger line records what was actually taken; the rest is the shortfall.
    """
    await lock_user(session, user_id)
    energy, diamonds = await balance(session, user_id)
    available = energy if currency is Currency.ENERGY else diamonds
    taken = min(amount, available)
    if not await insert_new(
        session,
        LedgerEntry,
        ["task_id", "kind"],
        user_id=user_id,
        currency=currency,
        amount=-taken,
        kind=kind,
        reason=f"{reason}; shortfall {amount - taken}" if taken < amount else reason,
        task_id=key,
    ):
        return None
    column = _column(currency)
    await session.execute(update(User).where(User.id == user_id).values({column: column - taken}))
    return Debit(taken, amount - taken)


async def ledger_line(session: AsyncSession, key: str, kind: LedgerKind) -> LedgerEntry | None:
    return await session.scalar(
        select(LedgerEntry).where(LedgerEntry.task_id == key, LedgerEntry.kind == kind)
    )


async def top_up_daily(
    session: AsyncSession, user: User, level: int, today: date | None = None
) -> int:
    """Raise the user's energy to `level`, at most once per UTC day; return what was added.

    A user who still has `level` or more gets nothing and keeps the day's top-up for later.
    Under a lock on the user row, so concurrent calls (two updates, two bots) top up once;
    `user` is refreshed with the new energy.
    """
    if level <= 0 or user.energy >= level:
        return 0
    await lock_user(session, user.id)
    energy, _ = await balance(session, user.id)
    day = today or utcnow().date()
    added = 0
    if energy < level:
        credited = await credit(
            session,
            user.id,
            Currency.ENERGY,
            level - energy,
            key=f"daily:{user.id}:{day.isoformat()}",
            kind=LedgerKind.DAILY,
            reason=f"daily top-up to {level}",
        )
        added = 0 if credited is None else level - energy
    await session.refresh(user, ["energy"])
    return added


# Orders.


async def create_order(
    session: AsyncSession,
    order_id: str,
    user_id: int,
    *,
    pack_id: str,
    currency: str,
    amount: int,
    price: int,
) -> Order:
    """The order with this id, created on first call (a repeated button press finds it)."""
    await insert_new(
        session,
        Order,
        ["id"],
        id=order_id,
        user_id=user_id,
        pack_id=pack_id,
        currency=currency,
        amount=amount,
        price=price,
        state=OrderState.CREATED,
    )
    order = await session.get(Order, order_id, populate_existing=True)
    if order is None:  # only if deleted by someone else in between
        raise LookupError(f"order {order_id} vanished")
    return order


async def open_order_for(
    session: AsyncSession, user_id: int, *, pack_id: str, currency: str, amount: int, price: int
) -> Order | None:
    """The user's newest unpaid order of this pack as it is sold now, if any."""
    return await session.scalar(
        select(Order)
        .where(
            Order.user_id == user_id,
            Order.pack_id == pack_id,
            Order.currency == currency,
            Order.amount == amount,
            Order.price == price,
            Order.state == OrderState.CREATED,
        )
        .order_by(Order.created_at.desc())
        .limit(1)
        .execution_options(populate_existing=True)
    )


async def claim_invoice(
    session: AsyncSession, order_id: str, now: datetime, interval: timedelta
) -> bool:
    """Note that an invoice of the order goes out now; False if one went out within
    `interval` (the press is answered without another invoice)."""
    claimed = await session.scalar(
        update(Order)
        .where(
            Order.id == order_id,
            (Order.invoiced_at.is_(None)) | (Order.invoiced_at <= now - interval),
        )
        .values(invoiced_at=now)
        .returning(Order.id)
    )
    return claimed is not None


async def get_order(session: AsyncSession, order_id: str) -> Order | None:
    # Payloads come from Telegram: anything longer cannot be one of our ids.
    if not order_id or len(order_id) > ORDER_ID_CHARS:
        return None
    return await session.get(Order, order_id, populate_existing=True)


async def set_order_state(
    session: AsyncSession, order_id: str, state: OrderState, *, paid_at: datetime | None = None
) -> None:
    values: dict[str, object] = {"state": state}
    if paid_at is not None:
        values["paid_at"] = paid_at
    await session.execute(update(Order).where(Order.id == order_id).values(values))


# Payments.


async def record_payment(
    session: AsyncSession, receipt: Receipt, order_id: str | None, *, at: datetime
) -> bool:
    """Store the payment stamped `at` (its created_at); False if this charge id is already
    stored (a repeated update, or this caller's own attempt whose commit reply was lost:
    the stamp tells them apart)."""
    return await insert_new(
        session,
        StarPayment,
        ["telegram_payment_charge_id"],
        telegram_payment_charge_id=receipt.charge_id,
        order_id=order_id,
        user_id=receipt.user_id,
        currency=receipt.currency,
        total_amount=receipt.total_amount,
        invoice_payload=receipt.payload,
        is_test=receipt.is_test,
        paid_at=receipt.paid_at,
        created_at=at,
    )


async def get_payment(
    session: AsyncSession, charge_id: str, *, lock: bool = False
) -> StarPayment | None:
    query = select(StarPayment).where(StarPayment.telegram_payment_charge_id == charge_id)
    if lock:
        query = query.with_for_update()
    return await session.scalar(query.execution_options(populate_existing=True))


async def mark_refunded(
    session: AsyncSession, payment: StarPayment, shortfall: int, *, at: datetime | None = None
) -> None:
    payment.refunded_at = at or utcnow()
    payment.refund_shortfall = shortfall
    if payment.order_id is not None:
        await set_order_state(session, payment.order_id, OrderState.REFUNDED)
    await session.flush()


async def record_refund_message(
    session: AsyncSession, charge_id: str, *, at: datetime | None = None
) -> bool:
    """Note the `refunded_payment` service message; True only the first time."""
    stamped = await session.scalar(
        update(StarPayment)
        .where(
            StarPayment.telegram_payment_charge_id == charge_id,
            StarPayment.refund_message_at.is_(None),
        )
        .values(refund_message_at=at or utcnow())
        .returning(StarPayment.telegram_payment_charge_id)
    )
    return stamped is not None


async def recent_payments(session: AsyncSession, user_id: int, limit: int) -> list[StarPayment]:
    return list(
        await session.scalars(
            select(StarPayment)
            .where(StarPayment.user_id == user_id, StarPayment.is_test.is_(False))
            .order_by(StarPayment.paid_at.desc())
            .limit(limit)
        )
    )


async def payments_since(session: AsyncSession, since: datetime | None) -> list[StarPayment]:
    """Real (not test) payments paid at or after `since` (all if None), oldest first."""
    query = select(StarPayment).where(StarPayment.is_test.is_(False))
    if since is not None:
        query = query.where(StarPayment.paid_at >= since)
    return list(await session.scalars(query.order_by(StarPayment.paid_at)))


async def lines_of(session: AsyncSession, keys: list[str], kind: LedgerKind) -> set[str]:
    """Which of `keys` have a ledger line of `kind`."""
    found: set[str] = set()
    # Chunked: SQLite allows a limited number of bound parameters per statement.
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        found.update(
            await session.scalars(
                select(LedgerEntry.task_id).where(
                    LedgerEntry.task_id.in_(chunk), LedgerEntry.kind == kind
                )
            )
        )
    return found
