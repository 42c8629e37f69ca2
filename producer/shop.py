"""The shop's use cases: packs, orders, the pre-checkout decision, payments, refunds, grants.

Transport-agnostic like Conversation: the Telegram handlers (and the console's simulated
payment) do the I/O. Each use case is one transaction, and every balance change is a ledger
line keyed by something Telegram repeats verbatim (the charge id), so a re-delivered update
or a second bot process cannot credit or debit twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import payments
from db import repositories as repo
from db.models import Currency, LedgerKind, Order, OrderState, StarPayment, User, utcnow
from db.payments import STARS, Receipt
from db.retry import retry_transient
from producer import shop_refunds as refunds
from producer.conversation import Profile
from producer.shop_refunds import RawPayment, RefundOutcome, RefundStatus
from shared.config import Settings
from shared.shop_packs import ShopPack

log = structlog.get_logger(__name__)

T = TypeVar("T")

# A fixed namespace: the same button press (callback id) always names the same order.
_ORDER_NAMESPACE = uuid.UUID("6f1c2a4e-8b1d-4c55-9a51-3d0f7e2b9c10")
SUPPORT_PAYMENTS = 5
# A buy button pressed again within this while gets no second invoice for its open order.
INVOICE_REPEAT = timedelta(seconds=30)


class Refusal(StrEnum):
    """Why a pre-checkout query is answered no."""

    UNKNOWN_ORDER = "unknown_order"
    FOREIGN_ORDER = "foreign_order"
    ALREADY_PAID = "already_paid"
    PRICE_MISMATCH = "price_mismatch"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class Credit:
    currency: Currency
    amount: int
    balance: int


@dataclass(frozen=True, slots=True)
class OpenedOrder:
    order: Order
    # False when an invoice of this order went out within INVOICE_REPEAT: none is sent now.
    send_invoice: bool


@dataclass(frozen=True, slots=True)
class PaymentOutcome:
    """`applied` is False for a payment applied before (a repeated update): say nothing."""

    applied: bool
    credit: Credit | None = None


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

    async def _in_transaction(
        self,
        what: str,
        body: Callable[[AsyncSession], Awaitable[T]],
        budget: float | None = None,
    ) -> T:
        """Run `body` in one transaction, again through a database restart, a cut connection
        or a lock, for DB_RETRY_SECONDS (or `budget`). Every write of the shop is keyed (charge
        id, order id, grant key) and stamped, so an attempt after a commit whose reply was
        lost repeats nothing, and recognises what its predecessor wrote by the stamp."""

        async def attempt() -> T:
            async with self._db.begin() as session:
                return await body(session)

        seconds = self._settings.db_retry_seconds if budget is None else budget
        return await retry_transient(attempt, what, seconds)

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

    async def open_order(
        self, profile: Profile, pack_id: str, request_id: str, *, budget: float | None = None
    ) -> OpenedOrder | None:
        """The user's open order of this pack (a new one only if there is none), and whether
        an invoice may go out for it now; None if the pack is no longer sold. Under the user's
        row lock, so presses racing in two processes still find one order."""
        pack = self.pack(pack_id)
        if pack is None:
            return None
        now = utcnow()

        async def body(session: AsyncSession) -> OpenedOrder:
            await self._user(session, profile)
            await payments.lock_user(session, profile.user_id)
            order = await payments.open_order_for(
                session,
                profile.user_id,
                pack_id=pack.id,
                currency=pack.currency,
                amount=pack.amount,
                price=pack.price,
            )
            if order is None:
                order = await payments.create_order(
                    session,
                    order_id_for(profile.user_id, request_id),
                    profile.user_id,
                    pack_id=pack.id,
                    currency=pack.currency,
                    amount=pack.amount,
                    price=pack.price,
                )
            send = await payments.claim_invoice(session, order.id, now, INVOICE_REPEAT)
            return OpenedOrder(order, send)

        opened = await self._in_transaction("open_order", body, budget)
        log.info(
            "order_opened",
            order_id=opened.order.id,
            pack_id=pack.id,
            price=pack.price,
            invoice=opened.send_invoice,
        )
        return opened

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
        and the credit keyed by the charge id. A repeat finds the row and changes nothing;
        retried through a database outage (DB_RETRY_SECONDS), then the error is raised."""
        stamp = utcnow()
        outcome = await self._in_transaction(
            "apply_payment", lambda session: self._apply_payment(session, profile, receipt, stamp)
        )
        if not outcome.applied:
            log.info("payment_already_applied", charge_id=receipt.charge_id)
            return outcome
        log.info(
            "payment_applied",
            charge_id=receipt.charge_id,
            payload=receipt.payload[:64],
            stars=receipt.total_amount,
            credited=outcome.credit is not None,
            test=receipt.is_test,
        )
        return outcome

    async def _apply_payment(
        self, session: AsyncSession, profile: Profile, receipt: Receipt, stamp: datetime
    ) -> PaymentOutcome:
        await self._user(session, profile)
        order = await payments.get_order(session, receipt.payload)
        order_id = None if order is None else order.id
        if not await payments.record_payment(session, receipt, order_id, at=stamp):
            row = await payments.get_payment(session, receipt.charge_id)
            if row is None or row.created_at != stamp:
                return PaymentOutcome(applied=False)
            # This call's own earlier attempt committed, and its reply was lost.
            return PaymentOutcome(True, await self._credited(session, receipt.charge_id))
        if order is None:
            # Paid, but for nothing we know: kept for support and reconciliation.
            log.error("payment_without_order", charge_id=receipt.charge_id)
            return PaymentOutcome(applied=True)
        return PaymentOutcome(True, await self._credit_order(session, order, receipt, stamp))

    async def _credited(self, session: AsyncSession, charge_id: str) -> Credit | None:
        purchase = await payments.ledger_line(session, charge_id, LedgerKind.PURCHASE)
        if purchase is None:
            return None
        currency = Currency(purchase.currency)
        energy, diamonds = await repo.balance(session, purchase.user_id)
        balance = energy if currency is Currency.ENERGY else diamonds
        return Credit(currency, purchase.amount, balance)

    async def _credit_order(
        self, session: AsyncSession, order: Order, receipt: Receipt, stamp: datetime
    ) -> Credit:
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
            at=stamp,
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

    async def order(self, order_id: str) -> Order | None:
        async with self._db() as session:
            return await payments.get_order(session, order_id)

    async def payment(self, charge_id: str) -> StarPayment | None:
        async def read(session: AsyncSession) -> StarPayment | None:
            return await payments.get_payment(session, charge_id)

        return await self._in_transaction("read_payment", read)

    async def recent_payments(self, user_id: int) -> list[StarPayment]:
        async with self._db() as session:
            return await payments.recent_payments(session, user_id, SUPPORT_PAYMENTS)

    async def apply_refund(
        self,
        charge_id: str,
        source: str,
        *,
        from_message: bool = False,
        unrecorded: RawPayment | None = None,
    ) -> RefundOutcome:
        """Take back what the payment credited, once per charge id, never below zero (the
        rest is recorded as the shortfall). `from_message`: a `refunded_payment` message
        arrived; it is recorded in the same transaction. A payment we never recorded is
        UNKNOWN_PAYMENT, unless `unrecorded` describes it: it is then recorded as paid and
        refunded with nothing credited (the user got the Stars back and never the goods, so
        the balance is right as it is). Retried like apply_payment."""
        stamp = utcnow()

        async def body(session: AsyncSession) -> RefundOutcome:
            payment = await payments.get_payment(session, charge_id, lock=True)
            if payment is None and unrecorded is not None:
                await self._user(session, unrecorded.profile)
                payment = await refunds.record_unrecorded(session, unrecorded, stamp)
            if payment is None:
                return RefundOutcome(RefundStatus.UNKNOWN_PAYMENT)
            first = from_message and await refunds.first_message(session, payment, stamp)
            outcome = await refunds.take_back(session, payment, source, stamp)
            return replace(outcome, first_message=first)

        outcome = await self._in_transaction("apply_refund", body)
        if outcome.status is RefundStatus.UNKNOWN_PAYMENT:
            log.warning("refund_of_unknown_payment", charge_id=charge_id, source=source)
            return outcome
        log.info(
            "refund_applied",
            charge_id=charge_id,
            source=source,
            status=str(outcome.status),
            taken=outcome.taken,
            shortfall=outcome.shortfall,
        )
        return outcome

    async def grant(
        self, admin_id: int, request_id: str, user_id: int, amount: int, currency: Currency
    ) -> GrantOutcome | None:
        """An admin's gift, once per admin message; None if the user is unknown. Retried like
        apply_payment; a retry after a lost commit reply knows the line as its own."""
        key = f"grant:{admin_id}:{request_id}"
        stamp = utcnow()

        async def body(session: AsyncSession) -> GrantOutcome | None:
            if await repo.get_user(session, user_id) is None:
                return None
            new_balance = await payments.credit(
                session,
                user_id,
                currency,
                amount,
                key=key,
                kind=LedgerKind.GRANT,
                reason=f"grant by admin {admin_id}",
                at=stamp,
            )
            if new_balance is not None:
                return GrantOutcome(new_balance, repeated=False)
            line = await payments.ledger_line(session, key, LedgerKind.GRANT)
            energy, diamonds = await repo.balance(session, user_id)
            balance = energy if currency is Currency.ENERGY else diamonds
            return GrantOutcome(balance, repeated=line is None or line.created_at != stamp)

        outcome = await self._in_transaction("grant", body)
        if outcome is not None:
            log.info(
                "admin_grant",
                admin_id=admin_id,
                target_user_id=user_id,
                amount=amount,
                currency=str(currency),
                repeated=outcome.repeated,
            )
        return outcome
