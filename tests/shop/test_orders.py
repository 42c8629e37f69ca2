"""The shop's use cases on both databases: the pre-checkout decision, payments applied once,
refunds taken back once, grants, and SHOP_PACKS validation."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import pytest
from sqlalchemy import ColumnElement, Select, func, select

from db.models import Currency, LedgerEntry, LedgerKind, Order, OrderState, StarPayment
from db.payments import STARS, Receipt
from db.repositories import balance, charge
from producer.conversation import Profile
from producer.shop import PaymentOutcome, Refusal, Shop
from producer.shop_refunds import RefundStatus
from shared.config import Settings, load_settings
from shared.errors import ConfigError
from tests.support.fixtures_db import Sessions, make_user, new_user_id

PACKS = "d10:diamonds:10:50,e100:energy:100:25"


@pytest.fixture
def shop(settings: Settings, db: Sessions) -> Shop:
    config = settings.replace(shop_packs=PACKS)
    return Shop(config, db)


def _profile(user_id: int) -> Profile:
    return Profile(user_id, "Анна", "ru")


def _receipt(order: Order) -> Receipt:
    return Receipt(
        charge_id=f"stx{uuid.uuid4().hex}",
        user_id=order.user_id,
        payload=order.id,
        currency=STARS,
        total_amount=order.price,
        paid_at=order.created_at,
    )


async def _order(shop: Shop, user_id: int, pack_id: str = "d10") -> Order:
    opened = await shop.open_order(_profile(user_id), pack_id, uuid.uuid4().hex)
    assert opened is not None
    return opened.order


async def _balance(db: Sessions, user_id: int) -> tuple[int, int]:
    async with db() as session:
        return await balance(session, user_id)


async def _count(db: Sessions, query: Select[int]) -> int:
    async with db() as session:
        return (await session.execute(query)).scalar_one()


def _payments_of(order: Order, *where: ColumnElement[bool]) -> Select[int]:
    return (
        select(func.count())
        .select_from(StarPayment)
        .where(StarPayment.order_id == order.id, *where)
    )


def test_bad_shop_packs_fail_naming_the_variable() -> None:
    for bad in (
        "d10:diamonds:10",
        "d10:gold:10:50",
        "d10:diamonds:0:50",
        "a:energy:1:1,a:energy:2:2",
    ):
        with pytest.raises(ConfigError, match="SHOP_PACKS"):
            load_settings(_env_file=None, shop_packs=bad)
    assert load_settings(_env_file=None, shop_packs="").shop_packs == ()


async def test_open_order_copies_the_pack_and_is_reused_until_paid(
    shop: Shop, db: Sessions
) -> None:
    user_id = new_user_id()
    first = await shop.open_order(_profile(user_id), "d10", "press-1")
    again = await shop.open_order(_profile(user_id), "d10", "press-1")
    other = await shop.open_order(_profile(user_id), "d10", "press-2")
    energy = await shop.open_order(_profile(user_id), "e100", "press-3")

    assert first is not None and again is not None and other is not None and energy is not None
    # One open order per pack: a repeated press, or another press, reuses it...
    assert first.order.id == again.order.id == other.order.id != energy.order.id
    # ...and only the first press within INVOICE_REPEAT sends an invoice.
    assert (first.send_invoice, again.send_invoice, other.send_invoice) == (True, False, False)
    assert energy.send_invoice
    order = first.order
    assert (order.currency, order.amount, order.price, order.state) == (
        "diamonds",
        10,
        50,
        "created",
    )
    assert await shop.open_order(_profile(user_id), "gone", "press-4") is None

    await shop.apply_payment(_profile(user_id), _receipt(order))
    after = await shop.open_order(_profile(user_id), "d10", "press-5")
    assert after is not None
    assert after.order.id != order.id  # paid: the next purchase is a new order
    assert after.send_invoice


async def test_pre_checkout_says_yes_only_to_the_owner_of_an_unpaid_order_at_its_price(
    shop: Shop, db: Sessions
) -> None:
    owner, stranger = new_user_id(), new_user_id()
    order = await _order(shop, owner)

    assert await shop.check(owner, order.id, STARS, 50) is None
    assert await shop.check(stranger, order.id, STARS, 50) is Refusal.FOREIGN_ORDER
    assert await shop.check(owner, order.id, STARS, 49) is Refusal.PRICE_MISMATCH
    assert await shop.check(owner, order.id, "USD", 50) is Refusal.PRICE_MISMATCH
    assert await shop.check(owner, "f" * 32, STARS, 50) is Refusal.UNKNOWN_ORDER
    assert await shop.check(owner, "x" * 200, STARS, 50) is Refusal.UNKNOWN_ORDER

    await shop.apply_payment(_profile(owner), _receipt(order))
    assert await shop.check(owner, order.id, STARS, 50) is Refusal.ALREADY_PAID


async def test_payment_credits_once_however_often_it_arrives(shop: Shop, db: Sessions) -> None:
    user_id = await make_user(db, diamonds=2)
    order = await _order(shop, user_id)
    receipt = _receipt(order)

    outcomes = await asyncio.gather(
        *(shop.apply_payment(_profile(user_id), receipt) for _ in range(6))
    )

    applied = [o for o in outcomes if o.applied]
    assert len(applied) == 1
    assert applied[0].credit is not None
    assert (applied[0].credit.currency, applied[0].credit.amount) == (Currency.DIAMONDS, 10)
    assert applied[0].credit.balance == 12
    assert await _balance(db, user_id) == (0, 12)
    assert await _count(db, _payments_of(order)) == 1
    async with db() as session:
        stored = await session.get(Order, order.id, populate_existing=True)
        assert stored is not None
        assert stored.state == OrderState.PAID
        line = await session.scalar(
            select(LedgerEntry).where(LedgerEntry.task_id == receipt.charge_id)
        )
        assert line is not None
        assert (line.kind, line.amount, line.currency) == ("purchase", 10, "diamonds")


async def test_payment_for_an_unknown_order_is_kept_and_credits_nothing(
    shop: Shop, db: Sessions
) -> None:
    user_id = await make_user(db)
    order = await _order(shop, user_id)
    receipt = replace(_receipt(order), payload="f" * 32)

    assert await shop.apply_payment(_profile(user_id), receipt) == PaymentOutcome(applied=True)
    assert await _balance(db, user_id) == (0, 0)
    payment = await shop.payment(receipt.charge_id)
    assert payment is not None
    assert payment.order_id is None


async def test_refund_takes_back_once_and_records_the_message(shop: Shop, db: Sessions) -> None:
    user_id = await make_user(db, diamonds=1)
    order = await _order(shop, user_id)
    receipt = _receipt(order)
    await shop.apply_payment(_profile(user_id), receipt)

    first = await shop.apply_refund(receipt.charge_id, "admin 1")
    second = await shop.apply_refund(receipt.charge_id, "refunded_payment", from_message=True)
    third = await shop.apply_refund(receipt.charge_id, "refunded_payment", from_message=True)

    assert (first.status, first.taken, first.shortfall, first.balance) == (
        RefundStatus.REFUNDED,
        10,
        0,
        1,
    )
    assert (second.status, second.taken, second.first_message) == (
        RefundStatus.ALREADY_REFUNDED,
        10,
        True,
    )
    assert (third.status, third.first_message) == (RefundStatus.ALREADY_REFUNDED, False)
    assert await _balance(db, user_id) == (0, 1)
    lines = select(func.count()).where(LedgerEntry.task_id == receipt.charge_id)
    assert await _count(db, lines) == 2
    async with db() as session:
        stored = await session.get(Order, order.id, populate_existing=True)
        assert stored is not None
        assert stored.state == OrderState.REFUNDED


async def test_refund_of_spent_goods_zeroes_the_balance_and_records_the_shortfall(
    shop: Shop, db: Sessions
) -> None:
    user_id = await make_user(db)
    order = await _order(shop, user_id)
    receipt = _receipt(order)
    await shop.apply_payment(_profile(user_id), receipt)
    async with db.begin() as session:  # 7 of the 10 diamonds are spent on photos
        await charge(
            session, user_id, Currency.DIAMONDS, 7, charge_id=uuid.uuid4().hex, reason="photo"
        )

    outcomes = await asyncio.gather(
        *(shop.apply_refund(receipt.charge_id, "admin 1") for _ in range(4))
    )

    assert sorted(o.status for o in outcomes).count(RefundStatus.REFUNDED) == 1
    refunded = next(o for o in outcomes if o.status is RefundStatus.REFUNDED)
    assert (refunded.taken, refunded.shortfall, refunded.balance) == (3, 7, 0)
    assert await _balance(db, user_id) == (0, 0)
    payment = await shop.payment(receipt.charge_id)
    assert payment is not None
    assert payment.refund_shortfall == 7
    assert payment.refunded_at is not None


async def test_refund_of_an_unknown_payment_changes_nothing(shop: Shop) -> None:
    outcome = await shop.apply_refund("stx-unknown", "admin 1")
    assert outcome.status is RefundStatus.UNKNOWN_PAYMENT


async def test_grant_once_per_admin_message(shop: Shop, db: Sessions) -> None:
    user_id = await make_user(db, energy=1)

    first = await shop.grant(42, "42:7", user_id, 5, Currency.ENERGY)
    again = await shop.grant(42, "42:7", user_id, 5, Currency.ENERGY)
    other = await shop.grant(42, "42:8", user_id, 5, Currency.ENERGY)

    assert first is not None and again is not None and other is not None
    assert (first.balance, first.repeated) == (6, False)
    assert (again.balance, again.repeated) == (6, True)
    assert other.balance == 11
    assert await shop.grant(42, "42:9", new_user_id(), 5, Currency.ENERGY) is None
    async with db() as session:
        reasons = await session.scalars(
            select(LedgerEntry.reason).where(
                LedgerEntry.user_id == user_id, LedgerEntry.kind == LedgerKind.GRANT
            )
        )
        assert list(reasons) == ["grant by admin 42", "grant by admin 42"]


async def test_simulated_payment_is_a_marked_test(shop: Shop, db: Sessions) -> None:
    user_id = await make_user(db)
    order = await _order(shop, user_id, "e100")

    outcome = await shop.simulate_payment(_profile(user_id), order)
    again = await shop.simulate_payment(_profile(user_id), order)

    assert outcome.credit is not None
    assert outcome.credit.balance == 100
    assert again == PaymentOutcome(applied=False)  # the order is paid: refused like in Telegram
    assert await _count(db, _payments_of(order, StarPayment.is_test.is_(True))) == 1
    assert await shop.recent_payments(user_id) == []  # tests are not real payments


async def test_an_order_paid_twice_is_credited_twice(shop: Shop, db: Sessions) -> None:
    # Two invoices of one order, both through pre-checkout before either payment arrived:
    # the user paid twice, so both payments are credited (and can be refunded one by one).
    user_id = await make_user(db)
    order = await _order(shop, user_id)

    first = await shop.apply_payment(_profile(user_id), _receipt(order))
    second = await shop.apply_payment(_profile(user_id), _receipt(order))

    assert first.applied and second.applied
    assert second.credit is not None
    assert second.credit.balance == 20
    assert await _count(db, _payments_of(order)) == 2
