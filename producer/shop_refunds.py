"""The shop's refund steps, each run inside the caller's transaction (Shop.apply_refund).

A refund takes back what its payment credited, once per charge id, never below zero. A
payment we never recorded (its update was lost, or spooled and not applied yet) is recorded
as paid and refunded with nothing credited: the user has the Stars back and never got the
goods, so the balance is already right; a payment applied later finds the row and credits
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from db import payments
from db import repositories as repo
from db.models import Currency, LedgerKind, StarPayment
from db.payments import Receipt
from producer.conversation import Profile

log = structlog.get_logger(__name__)


class RefundStatus(StrEnum):
    REFUNDED = "refunded"
    ALREADY_REFUNDED = "already_refunded"
    UNKNOWN_PAYMENT = "unknown_payment"
    NOTHING_CREDITED = "nothing_credited"


@dataclass(frozen=True, slots=True)
class RawPayment:
    """A payment as Telegram reported it, with who paid: enough to apply or record it from
    scratch (a spooled payment, one found only in Telegram's list)."""

    profile: Profile
    receipt: Receipt


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    status: RefundStatus
    user_id: int | None = None
    currency: Currency | None = None
    taken: int = 0
    shortfall: int = 0
    balance: int = 0
    # True for the first `refunded_payment` message of this charge: tell the user then.
    first_message: bool = False


async def record_unrecorded(
    session: AsyncSession, raw: RawPayment, stamp: datetime
) -> StarPayment | None:
    """Store a payment we never recorded, crediting nothing; the user must exist."""
    receipt = raw.receipt
    order = await payments.get_order(session, receipt.payload)
    order_id = order.id if order is not None and order.user_id == receipt.user_id else None
    await payments.record_payment(session, receipt, order_id, at=stamp)
    log.warning("unrecorded_payment_recorded", charge_id=receipt.charge_id)
    return await payments.get_payment(session, receipt.charge_id, lock=True)


async def first_message(session: AsyncSession, payment: StarPayment, stamp: datetime) -> bool:
    """Note the `refunded_payment` message; True the first time (or when the first time was
    this call's own attempt, whose commit reply was lost: the stamp is ours)."""
    if payment.refund_message_at is not None:
        return payment.refund_message_at == stamp
    charge_id = payment.telegram_payment_charge_id
    return await payments.record_refund_message(session, charge_id, at=stamp)


async def take_back(
    session: AsyncSession, payment: StarPayment, source: str, stamp: datetime
) -> RefundOutcome:
    """Debit what the payment credited (up to the balance) and mark it refunded, once."""
    charge_id = payment.telegram_payment_charge_id
    purchase = await payments.ledger_line(session, charge_id, LedgerKind.PURCHASE)
    if purchase is None:
        if payment.refunded_at is None:
            await payments.mark_refunded(session, payment, 0, at=stamp)
        return RefundOutcome(RefundStatus.NOTHING_CREDITED, payment.user_id)
    currency = Currency(purchase.currency)
    debit = await payments.debit_up_to(
        session,
        purchase.user_id,
        currency,
        purchase.amount,
        key=charge_id,
        kind=LedgerKind.STARS_REFUND,
        reason=f"stars refund ({source})",
    )
    if debit is None:
        # Taken back before: by this call's own attempt if the stamp is ours.
        ours = payment.refunded_at == stamp
        status = RefundStatus.REFUNDED if ours else RefundStatus.ALREADY_REFUNDED
        done = await payments.ledger_line(session, charge_id, LedgerKind.STARS_REFUND)
        taken, shortfall = -done.amount if done else 0, payment.refund_shortfall or 0
    else:
        status, taken, shortfall = RefundStatus.REFUNDED, debit.taken, debit.shortfall
        await payments.mark_refunded(session, payment, shortfall, at=stamp)
    energy, diamonds = await repo.balance(session, purchase.user_id)
    new_balance = energy if currency is Currency.ENERGY else diamonds
    return RefundOutcome(status, purchase.user_id, currency, taken, shortfall, new_balance)
