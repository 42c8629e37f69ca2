"""Reconciliation against the fake Bot API's Star transactions, on a fresh database each."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

from producer.conversation import Profile
from producer.shop import Shop
from scripts.stars_reconcile import fetch_transactions, reconcile, render, report_json
from shared.config import Settings
from shared.db.engine import create_engine, create_sessionmaker
from shared.db.migrate import upgrade
from shared.db.payments import STARS, Receipt
from tests.fakes.telegram import FakeTelegram
from tests.fixtures_db import Backend, Sessions, in_thread, new_user_id

TOKEN = "123456:TEST"  # noqa: S105 - a fake token in the shape aiogram validates


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def bot(tg: FakeTelegram) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(tg.base_url))
    async with Bot(TOKEN, session=session) as client:
        yield client


@pytest.fixture
async def fresh_db(empty_backend: Backend) -> AsyncIterator[Sessions]:
    """A database of this test alone: reconciliation compares every payment it holds."""
    in_thread(upgrade, empty_backend.url, empty_backend.schema)
    engine = create_engine(empty_backend.url, schema=empty_backend.schema)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def shop(settings: Settings, fresh_db: Sessions) -> Shop:
    return Shop(settings, fresh_db)


async def _paid_both_sides(tg: FakeTelegram, shop: Shop, user_id: int) -> Receipt:
    """A purchase as it should be: Telegram took the Stars and our ledger credited them."""
    profile = Profile(user_id, "Анна", "ru")
    opened = await shop.open_order(profile, "d10", uuid.uuid4().hex)
    assert opened is not None
    order = opened.order
    charge_id = tg.payments.take(user_id, order.price, order.id)
    receipt = Receipt(charge_id, user_id, order.id, STARS, order.price, datetime.now(UTC))
    assert (await shop.apply_payment(profile, receipt)).applied
    return receipt


async def test_everything_matches(
    tg: FakeTelegram, bot: Bot, shop: Shop, fresh_db: Sessions
) -> None:
    user_id = new_user_id()
    first = await _paid_both_sides(tg, shop, user_id)
    for _ in range(3):
        await _paid_both_sides(tg, shop, user_id)
    await shop.apply_refund(first.charge_id, "admin 1")
    tg.payments.refund(first.charge_id, deliver=False)

    transactions = await fetch_transactions(bot, page_size=2)  # three pages
    report = await reconcile(transactions, fresh_db)

    assert len(transactions) == 5
    assert report.ok
    assert (report.telegram_payments, report.our_payments) == (4, 4)
    assert "everything matches" in render(report)


async def test_each_kind_of_mismatch_is_found(
    tg: FakeTelegram, bot: Bot, shop: Shop, fresh_db: Sessions
) -> None:
    user_id = new_user_id()
    profile = Profile(user_id, "Анна", "ru")
    await _paid_both_sides(tg, shop, user_id)
    # Telegram took Stars whose successful_payment never reached us.
    lost = tg.payments.take(user_id, 50, "f" * 32)
    # We recorded a payment Telegram does not list.
    opened = await shop.open_order(profile, "d10", uuid.uuid4().hex)
    assert opened is not None
    order = opened.order
    phantom = Receipt("stx-phantom", user_id, order.id, STARS, 50, datetime.now(UTC))
    await shop.apply_payment(profile, phantom)
    # Refunded on one side only, each way.
    refunded_there = await _paid_both_sides(tg, shop, user_id)
    tg.payments.refund(refunded_there.charge_id, deliver=False)
    refunded_here = await _paid_both_sides(tg, shop, user_id)
    await shop.apply_refund(refunded_here.charge_id, "admin 1")
    # Different amounts.
    opened = await shop.open_order(profile, "d10", uuid.uuid4().hex)
    assert opened is not None
    order = opened.order
    cheap = tg.payments.take(user_id, 1, order.id)
    await shop.apply_payment(
        profile, Receipt(cheap, user_id, order.id, STARS, 50, datetime.now(UTC))
    )

    report = await reconcile(await fetch_transactions(bot), fresh_db)

    found = report_json(report)
    assert found["ok"] is False
    assert [e.charge_id for e in report.missing_here] == [lost]
    assert report.missing_here[0].detail == "no payment row"
    assert [e.charge_id for e in report.unknown_to_telegram] == ["stx-phantom"]
    assert [e.charge_id for e in report.refunded_in_telegram_only] == [refunded_there.charge_id]
    assert [e.charge_id for e in report.refunded_here_only] == [refunded_here.charge_id]
    assert [e.charge_id for e in report.amount_differs] == [cheap]
    assert "MISMATCH" in render(report)


async def test_since_limits_both_sides(
    tg: FakeTelegram, bot: Bot, shop: Shop, fresh_db: Sessions
) -> None:
    user_id = new_user_id()
    tg.payments.take(user_id, 50, "f" * 32)  # would be missing here
    old = await _paid_both_sides(tg, shop, user_id)
    profile = Profile(user_id, "Анна", "ru")
    opened = await shop.open_order(profile, "d10", uuid.uuid4().hex)
    assert opened is not None
    order = opened.order
    # A payment recorded long ago that Telegram does not list (beyond its history, say).
    ancient = replace(old, charge_id="stx-ancient", paid_at=datetime(2020, 1, 1, tzinfo=UTC))
    await shop.apply_payment(profile, replace(ancient, payload=order.id))
    transactions = await fetch_transactions(bot)

    tomorrow = datetime.now(UTC) + timedelta(days=1)
    assert (await reconcile(transactions, fresh_db, since=tomorrow)).ok
    recent = await reconcile(transactions, fresh_db, since=datetime(2025, 1, 1, tzinfo=UTC))
    assert [e.detail for e in recent.missing_here] == ["no payment row"]
    assert recent.unknown_to_telegram == []
    everything = await reconcile(transactions, fresh_db)
    assert [e.charge_id for e in everything.unknown_to_telegram] == ["stx-ancient"]
