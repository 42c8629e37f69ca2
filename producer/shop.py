"""The shop's use cases: packs, orders, the pre-checkout decision, payments, refunds, grants.

Transport-agnostic like Conversation: the Telegram handlers (and the console's simulated
payment) do the I/O. Each use case is one transaction, and every balance change is a ledger
line keyed by something Telegram repeats verbatim (the charge id), so a re-delivered update
or a second bot process cannot credit or debit twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from enum import StrEnum

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from producer.conversation import Profile
from shared.config import Settings, ShopPack
from shared.db import payments
from shared.db import repositories as repo
from shared.db.models import Currency, LedgerKind, Order, OrderState, StarPayment, User, utcnow
from shared.db.payments import STARS, Receipt

log = structlog.get_logger(__name__)

# A fixed namespace: the same button press (callback id) always names the same order.
_ORDER_NAMESPACE = uuid.UUID("6f1c2a4e-8b1d-4c55-9a51-3d0f7e2b9c10")
SUPPORT_PAYMENTS = 5


class Refusal(StrEnum):
    """Why a pre-checkout query is answered no."""

    UNKNOWN_ORDER = "unknown_order"
    FOREIGN_ORDER = "foreign_order"
    ALREADY_PAID = "already_paid"
    PRICE_MISMATCH = "price_mismatch"
    UNAVAILABLE = "unavailable"


class RefundStatus(StrEnum):
    REFUNDED = "refunded"
    ALREADY_REFUNDED = "already_refunded"
    UNKNOWN_PAYMENT = "unknown_payment"
    NOTHING_CREDITED = "nothing_credited"


@dataclass(frozen=True, slots=True)
class Credit:
    currency: Currency
    amount: int
    balance: int


@dataclass(frozen=True, slots=True)
class PaymentOutcome:
    """`applied` is False for a payment applied before (a repeated update): say nothing."""

    applied: bool
    credit: Credit | None = None


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


@dataclass(frozen=True, slots=True)
class GrantOutcome:
    balance: int
    repeated: bool


def order_id_for(user_id: int, request_id: str) -> str:
    return uuid.uuid5(_ORDER_NAMESPACE, f"{user_id}:{request_id}").hex


class Shop:
    def __init__(self, settings: Settings, db: async_sessionmaker[AsyncSession]) -> None:
        self._settings = settings
        self._db = db

    def packs(self, currency: str = "") -> list[ShopPack]:
        """The packs of `currency`, or all of them if none sells it (or none is asked)."""
        packs = list(self._settings.shop_packs)
        matching = [pack for pack in packs if pack.currency == currency]
        return matching or packs

    def pack(self, pack_id: str) -> ShopPack | None:
        return next((p for p in self._settings.shop_packs if p.id == pack_id), None)

    async def _user(self, session: AsyncSession, profile: Profile) -> User:
        return await repo.get_or_create_user(
            session,
            profile.user_id,
            profile.name,
            profile.language,
            start_energy=self._settings.start_energy,
            start_diamonds=self._settings.start_diamonds,
        )

    async def open_order(self, profile: Profile, pack_id: str, request_id: str) -> Order | None:
        """The order for this press of a buy button (the same on a repeat); None if the pack
        is no longer sold."""
        pack = self.pack(pack_id)
        if pack is None:
            return None
        order_id = order_id_for(profile.user_id, request_id)
        async with self._db.begin() as session:
            await self._user(session, profile)
            order = await payments.create_order(
                session,
                order_id,
                profile.user_id,
                pack_id=pack.id,
                currency=pack.currency,
                amount=pack.amount,
                price=pack.price,
            )
        log.info("order_opened", order_id=order.id, pack_id=pack.id, price=pack.price)
        return order

    async def check(
        self, user_id: int, payload: str, currency: str, total_amount: int
    ) -> Refusal | None:
        """The pre-checkout decision: None (yes) only for this user's unpaid order at its price.

        Reads only: nothing is reserved or credited before the payment itself.
        """
        async with self._db() as session:
            order = await payments.get_order(session, payload)
        if order is None:
            return Refusal.UNKNOWN_ORDER
        if order.user_id != user_id:
            return Refusal.FOREIGN_ORDER
        if order.state != OrderState.CREATED:
            return Refusal.ALREADY_PAID
        if currency != STARS or total_amount != order.price:
            return Refusal.PRICE_MISMATCH
        return None

    async def apply_payment(self, profile: Profile, receipt: Receipt) -> PaymentOutcome:
        """In one transaction: the payment row (unique by charge id), the order marked paid
        and the credit keyed by the charge id. A repeat finds the row and changes nothing."""
        async with self._db.begin() as session:
            await self._user(session, profile)
            order = await payments.get_order(session, receipt.payload)
            order_id = None if order is None else order.id
            if not await payments.record_payment(session, receipt, order_id):
                log.info("payment_already_applied", charge_id=receipt.charge_id)
                return PaymentOutcome(applied=False)
            if order is None:
                # Paid, but for nothing we know: kept for support and reconciliation.
                log.error("payment_without_order", charge_id=receipt.charge_id)
                return PaymentOutcome(applied=True)
            credit = await self._credit_order(session, order, receipt)
        log.info(
            "payment_applied",
            charge_id=receipt.charge_id,
            order_id=order.id,
            stars=receipt.total_amount,
            test=receipt.is_test,
        )
        return PaymentOutcome(applied=True, credit=credit)

    async def _credit_order(self, session: AsyncSession, order: Order, receipt: Receipt) -> Credit:
        if order.state == OrderState.CREATED:
            await payments.set_order_state(
                session, order.id, OrderState.PAID, paid_at=receipt.paid_at
            )
        else:
            # Two invoices of one order both paid: the user paid twice, so both are credited.
            log.warning("order_paid_again", order_id=order.id, charge_id=receipt.charge_id)
        currency = Currency(order.currency)
        new_balance = await payments.credit(
            session,
            receipt.user_id,
            currency,
            order.amount,
            key=receipt.charge_id,
            kind=LedgerKind.PURCHASE,
            reason=f"stars purchase {order.pack_id} (order {order.id})",
        )
        if new_balance is None:  # unreachable: the payment row was new in this transaction
            raise LookupError(f"purchase {receipt.charge_id} credited without its payment")
        return Credit(currency, order.amount, new_balance)

    async def simulate_payment(self, profile: Profile, order: Order) -> PaymentOutcome:
        """The console demo's payment: a test receipt, through the same checks and credit."""
        refusal = await self.check(profile.user_id, order.id, STARS, order.price)
        if refusal is not None:
            log.info("test_payment_refused", order_id=order.id, reason=str(refusal))
            return PaymentOutcome(applied=False)
        receipt = Receipt(
            charge_id=f"test-{uuid.uuid4().hex}",
            user_id=profile.user_id,
            payload=order.id,
            currency=STARS,
            total_amount=order.price,
            paid_at=utcnow(),
            is_test=True,
        )
        return await self.apply_payment(profile, receipt)

    async def payment(self, charge_id: str) -> StarPayment | None:
        async with self._db() as session:
            return await payments.get_payment(session, charge_id)

    async def recent_payments(self, user_id: int) -> list[StarPayment]:
        async with self._db() as session:
            return await payments.recent_payments(session, user_id, SUPPORT_PAYMENTS)

    async def apply_refund(
        self, charge_id: str, source: str, *, from_message: bool = False
    ) -> RefundOutcome:
        """Take back what the payment credited, once per charge id, never below zero (the
        rest is recorded as the shortfall). `from_message`: a `refunded_payment` message
        arrived; it is recorded in the same transaction."""
        async with self._db.begin() as session:
            payment = await payments.get_payment(session, charge_id, lock=True)
            if payment is None:
                log.warning("refund_of_unknown_payment", charge_id=charge_id, source=source)
                return RefundOutcome(RefundStatus.UNKNOWN_PAYMENT)
            first = from_message and await payments.record_refund_message(session, charge_id)
            outcome = await self._take_back(session, payment, source)
        log.info(
            "refund_applied",
            charge_id=charge_id,
            source=source,
            status=str(outcome.status),
            taken=outcome.taken,
            shortfall=outcome.shortfall,
        )
        return replace(outcome, first_message=first)

    async def _take_back(
        self, session: AsyncSession, payment: StarPayment, source: str
    ) -> RefundOutcome:
        charge_id = payment.telegram_payment_charge_id
        purchase = await payments.ledger_line(session, charge_id, LedgerKind.PURCHASE)
        if purchase is None:
            if payment.refunded_at is None:
                await payments.mark_refunded(session, payment, 0)
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
            status = RefundStatus.ALREADY_REFUNDED
            done = await payments.ledger_line(session, charge_id, LedgerKind.STARS_REFUND)
            taken, shortfall = -done.amount if done else 0, payment.refund_shortfall or 0
        else:
            status, taken, shortfall = RefundStatus.REFUNDED, debit.taken, debit.shortfall
            await payments.mark_refunded(session, payment, shortfall)
        energy, diamonds = await repo.balance(session, purchase.user_id)
        new_balance = energy if currency is Currency.ENERGY else diamonds
        return RefundOutcome(status, purchase.user_id, currency, taken, shortfall, new_balance)

    async def grant(
        self, admin_id: int, request_id: str, user_id: int, amount: int, currency: Currency
    ) -> GrantOutcome | None:
        """An admin's gift, once per admin message; None if the user is unknown."""
        async with self._db.begin() as session:
            if await repo.get_user(session, user_id) is None:
                return None
            new_balance = await payments.credit(
                session,
                user_id,
                currency,
                amount,
                key=f"grant:{admin_id}:{request_id}",
                kind=LedgerKind.GRANT,
                reason=f"grant by admin {admin_id}",
            )
            repeated = new_balance is None
            if new_balance is None:
                energy, diamonds = await repo.balance(session, user_id)
                new_balance = energy if currency is Currency.ENERGY else diamonds
        log.info(
            "admin_grant",
            admin_id=admin_id,
            target_user_id=user_id,
            amount=amount,
            currency=str(currency),
            repeated=repeated,
        )
        return GrantOutcome(new_balance, repeated)
